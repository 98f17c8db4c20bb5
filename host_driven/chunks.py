"""The plan of a chunked WRITE or READ: which bytes each request carries, and what its reply is for.

Used by both routes of ``ProtocolSession.transfer``: the protocol engine's per-request loop and
the accelerated batches of fast_paths.py.
"""

from __future__ import annotations

import struct

_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")


class Chunks:
    """The requests of a transfer of bytes ``start`` to ``total``: a packet template patched per chunk.

    The template is a whole request packet (header and arguments); each chunk's offset (u32) goes
    at ``offset_at`` and, when ``length_at`` is not 0, its length (u32) there. A WRITE's data comes
    from ``source`` (a contiguous byte buffer of ``total`` bytes) and follows the template.
    """

    def __init__(self, template: bytes, offset_at: int, length_at: int, chunk: int, total: int, source,
                 start: int = 0):
        self.template = template
        self.offset_at = offset_at
        self.length_at = length_at
        self.chunk = chunk
        self.total = total
        self.source = source
        self.start = start
        self.count = max(1, -(-(total - start) // chunk))

    def offset(self, index: int) -> int:
        return self.start + index * self.chunk

    def length(self, index: int) -> int:
        return max(0, min(self.chunk, self.total - self.offset(index)))

    def packet(self, seq: int, index: int) -> bytes:
        """Request ``index`` with sequence number ``seq`` (its header's, patched)."""
        head = bytearray(self.template)
        offset = self.offset(index)
        nbytes = self.length(index)
        _U16.pack_into(head, 2, seq)
        if self.offset_at:
            _U32.pack_into(head, self.offset_at, offset)
        if self.length_at:
            _U32.pack_into(head, self.length_at, nbytes)
        if self.source is None:
            return bytes(head)
        return bytes(head) + bytes(self.source[offset:offset + nbytes])


class ChunkHandler:
    """on_reply for the per-request route: checks and stores a READ's data, counts chunks.

    ``first`` is the plan index of the first request it is handed; ``on_chunk(offset, nbytes)``
    is called for every chunk acknowledged, whose index goes into ``acked``.
    """

    def __init__(self, cmd: int, plan: Chunks, sink, on_chunk, first: int, acked: set):
        self.cmd, self.plan, self.sink, self.on_chunk, self.first = cmd, plan, sink, on_chunk, first
        self.acked = acked

    def __call__(self, index: int, payload: bytes) -> bool:
        """Take one reply; False (nothing taken) when it is not the size it must be: a READ's
        data is the chunk's length, a WRITE's acknowledgement is empty."""
        index += self.first
        nbytes = self.plan.length(index)
        offset = self.plan.offset(index)
        if len(payload) != (nbytes if self.sink is not None else 0):
            return False
        if self.sink is not None:
            self.sink[offset:offset + nbytes] = payload
        self.acked.add(index)
        if self.on_chunk is not None:
            self.on_chunk(offset, nbytes)
        return True
