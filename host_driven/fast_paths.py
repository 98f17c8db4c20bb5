"""The session's fast paths: single requests and chunked transfers when nothing goes wrong.

The protocol engine (session.py) owns the rules: sequence numbers, matching, retries, logs,
reboots. Beside it, one interface (:class:`FramePath`) carries the common cases as cheaply as the
link allows, and hands anything else back to the engine as a :class:`Handback`: the bytes that
arrived, and the requests still waiting for their replies. Three paths, chosen when a session
opens (:func:`choose`):

- ``FramePath``: any transport. A single request goes out as one frame, and the first slice
  back is taken when it is exactly the reply. Transfers go through the engine's own loop.
- ``BulkPath``: the framing accelerator is loaded. A transfer moves a batch (the window) at a time:
  one C call frames the batch straight from the source, and the replies are compared with the
  ones expected (WRITE) or decoded straight into the sink (READ).
- ``PipeCallPath``: also a pipe-pair transport. A single request and its reply are one C call
  (pipe_call.py).
"""

from __future__ import annotations

import ctypes
import sys
import time
from typing import NamedTuple, Optional

from . import pipe_call
from . import protocol as P
from .chunks import Chunks
from .framing import CRC_BYTES, encode

# A bulk READ's receive area, kept by the session: a batch of replies is about 130 KiB.
RX_AREA_BYTES = 256 * 1024
_PACK_HEADER = P.HEADER.pack
_REPLY_OK = bytes([P.PKT_REPLY_OK])


class Handback(NamedTuple):
    """What a fast path leaves to the engine: the first ``taken`` requests were answered, the rest
    are in flight. ``data`` holds the bytes received and not taken (None: nothing), ``bad_before``
    the decoder's corrupted-frame count before they were read, and ``silent`` is True when the
    path stopped because nothing more arrived within its wait."""

    taken: int
    data: Optional[bytes]
    bad_before: int
    silent: bool


class FramePath:
    """The fast path over any transport: one frame out, the first slice back."""

    name: Optional[str] = None

    def __init__(self, session):
        self.session = session

    def round_trip(self, packet: bytes, wait: float, timeout: float):
        """The reply payload to the request ``packet`` (bytes), or a Handback for the engine when
        the first bytes back are anything else, or nothing comes within ``wait`` seconds.
        ``timeout`` bounds the write."""
        session = self.session
        bad_before = session._decoder.bad_frames
        session._send(encode(packet), timeout, packet[1])
        return self._first_reply(packet, wait, bad_before)

    def _first_reply(self, packet: bytes, wait: float, bad_before: int):
        session = self.session
        data = session._read_for(time.monotonic() + wait, P.COMMAND_NAMES.get(packet[1], "a command"))
        if data is None:
            return Handback(0, None, bad_before, True)
        reply = session._decoder.sole_packet(data, _REPLY_OK + packet[1:P.HEADER.size])
        if reply is not None and len(reply) <= session.max_packet - P.HEADER.size:
            return reply
        return Handback(0, data, bad_before, False)

    def batches(self, plan: Chunks, sink) -> Optional[Batches]:
        """The batch route for a transfer (``sink`` receives a READ's data), or None: the engine's
        per-request loop then carries it."""
        return None


class BulkPath(FramePath):
    """FramePath, and transfers a batch at a time through the framing accelerator."""

    def __init__(self, session, lib):
        super().__init__(session)
        self.lib = lib
        self._rx_area: Optional[bytearray] = None
        self._rx_address = 0

    def batches(self, plan: Chunks, sink) -> Optional[Batches]:
        session = self.session
        if sys.byteorder != "little" or not session._decoder.idle or session._pending:
            return None
        return Batches(self, plan, sink)

    def receive_area(self, nbytes: int):
        """(bytearray, its address) of at least ``nbytes``, kept for the next transfers: a fresh
        buffer per transfer would cost a mapping and its page faults each time."""
        if self._rx_area is None or len(self._rx_area) < nbytes:
            self._rx_area = bytearray(nbytes)
            self._rx_address = ctypes.addressof(ctypes.c_char.from_buffer(self._rx_area))
        return self._rx_area, self._rx_address


class PipeCallPath(BulkPath):
    """BulkPath, and single requests in one C call over the transport's pipe pair."""

    name = "pipe call"

    def __init__(self, session, lib, call: pipe_call.PipeCall):
        super().__init__(session, lib)
        self.call = call
        self._call = call.call

    def round_trip(self, packet: bytes, wait: float, timeout: float):
        session = self.session
        if session.transport.pipe_fds() is None:  # closed: its descriptors may name other files now
            return FramePath.round_trip(self, packet, wait, timeout)
        outcome = self._call(packet, len(packet), int(wait * 1000) + 1)
        if outcome >= 0:
            return self.call.payload(outcome)
        bad_before = session._decoder.bad_frames
        if outcome == pipe_call.OTHER:
            return Handback(0, self.call.received(), bad_before, False)
        if outcome == pipe_call.TIMEOUT:
            return Handback(0, None, bad_before, True)
        if outcome == pipe_call.INTERRUPTED:  # the signal's handler has run (and did not raise)
            return Handback(0, None, bad_before, False)
        if outcome == pipe_call.TOO_LARGE:  # the session keeps requests to max_packet: a bug if seen
            raise ValueError(f"a {len(packet)}-byte packet does not fit the pipe call's frame buffer")
        # The pipe failed or was full: the transport's own calls go on (and name a failure).
        unwritten = self.call.unwritten()
        if unwritten:
            session._send(unwritten, timeout, packet[1])
        return self._first_reply(packet, wait, bad_before)

    @property
    def replies(self) -> int:
        """Replies the C call took whole (the session counts them as good frames)."""
        return self.call.replies


def choose(session, lib, max_packet: int) -> FramePath:
    """The fastest path the session's transport and this host allow."""
    if lib is None:
        return FramePath(session)
    call = pipe_call.for_transport(session.transport, lib, max_packet)
    return BulkPath(session, lib) if call is None else PipeCallPath(session, lib, call)


# -- the accelerated batches ---------------------------------------------------------------------


def _address(buffer, writable: bool) -> int:
    if type(buffer) is bytes and not writable:
        return ctypes.cast(ctypes.c_char_p(buffer), ctypes.c_void_p).value or 0
    view = memoryview(buffer)
    if view.readonly:
        raise ValueError("a read-only buffer other than bytes")
    return ctypes.addressof(ctypes.c_char.from_buffer(view))


class Batches:
    """A transfer's batches through the accelerator: each batch of requests is framed from the
    source in one call, and its replies are compared with the ones expected (WRITE) or decoded into
    the sink (READ)."""

    def __init__(self, path: BulkPath, plan: Chunks, sink):
        source = plan.source
        if source is not None and type(source) is not bytes and memoryview(source).readonly:
            source = plan.source = bytes(source)
        self.session = session = path.session
        self.lib = path.lib
        self.plan = plan
        self.name = P.COMMAND_NAMES[plan.template[1]]
        window = session.window
        self.source_keep = source
        self.source = _address(source, False) if source is not None else None
        self.sink_keep = sink
        self.sink = _address(sink, True) if sink is not None else None
        packet_room = 2 * (len(plan.template) + plan.chunk + CRC_BYTES) + 2
        self.out = session._encoder.room(packet_room * window)
        self.ends = (ctypes.c_size_t * window)()
        self.reply = _PACK_HEADER(P.PKT_REPLY_OK, plan.template[1], 0, session.session_id)
        self.used = ctypes.c_size_t()
        self.bad = ctypes.c_int()
        self.taken = 0  # replies taken whole, over all batches
        if sink is not None:
            # Room for a batch of replies at once, and never less than two whole escaped frames.
            self.rx, self.rx_address = path.receive_area(max(RX_AREA_BYTES, 2 * packet_room))
            self.rx_view = memoryview(self.rx)

    def run(self, seq: int, first: int, count: int, wait: float, timeout: float) -> Handback:
        """Send requests ``first`` to ``first + count`` of the plan (sequence numbers from ``seq``,
        the write bounded by ``timeout``) and take their replies, in order, until one is not as
        expected or ``wait`` seconds pass with nothing."""
        self.session._send(self._requests(seq, first, count), timeout, self.plan.template[1])
        if self.sink is None:
            handback = self._take_acks(seq, count, wait)
        else:
            handback = self._take_reads(seq, first, count, wait)
        self.taken += handback.taken
        return handback

    def _requests(self, seq: int, first: int, count: int) -> memoryview:
        plan = self.plan
        address, buffer = self.out
        n = self.lib.utvm_accel_encode_chunks(plan.template, len(plan.template), plan.offset_at,
                                              plan.length_at, seq, plan.offset(first), plan.chunk, plan.total,
                                              self.source, count, address, self.ends)
        return memoryview(buffer)[:n]

    def _acks(self, seq: int, count: int):
        """The frames of a WRITE batch's replies, and where each ends."""
        out = ctypes.create_string_buffer(2 * (P.HEADER.size + CRC_BYTES) * count + 2 * count)
        n = self.lib.utvm_accel_encode_chunks(self.reply, len(self.reply), 0, 0, seq, 0, 0, 0, None, count,
                                              out, self.ends)
        return out.raw[:n], self.ends[:count]

    def _take_acks(self, seq: int, count: int, wait: float) -> Handback:
        """A WRITE batch's acknowledgements: the replies are known in advance, so the received
        bytes are compared with their frames."""
        expected, ends = self._acks(seq, count)
        session = self.session
        bad_before = session._decoder.bad_frames
        pos = 0
        deadline = time.monotonic() + wait
        while pos < len(expected):
            data = session._read_for(deadline, self.name)
            if data is not None and expected.startswith(data, pos):
                pos += len(data)
                deadline = time.monotonic() + wait
                continue
            silent = data is None
            data = data or b""
            same = 0
            limit = min(len(data), len(expected) - pos)
            while same < limit and data[same] == expected[pos + same]:
                same += 1
            taken = sum(1 for end in ends if end <= pos + same)
            start = ends[taken - 1] if taken else 0
            return Handback(taken, expected[start:pos] + data[max(0, start - pos):], bad_before, silent)
        return Handback(count, b"", bad_before, False)

    def _take_reads(self, seq: int, first: int, count: int, wait: float) -> Handback:
        """A READ batch's replies, decoded into the sink.

        Slices are read into the receive area, behind the unfinished frame the last one left, and
        the replies decoded from there straight into the sink."""
        session = self.session
        bad_before = session._decoder.bad_frames
        taken = 0
        fill = 0
        silent = False
        view = self.rx_view
        deadline = time.monotonic() + wait
        while taken < count:
            if fill == len(view):
                break  # no frame end in sight: not a reply
            got = session._read_for(deadline, self.name, into=view[fill:])
            if got is None:
                silent = True
                break
            fill += got
            got, used, bad = self._take(fill, seq + taken, first + taken, count - taken)
            if got:
                deadline = time.monotonic() + wait
            taken += got
            if used:
                view[:fill - used] = view[used:fill]
                fill -= used
            if bad:
                break
        return Handback(taken, bytes(view[:fill]), bad_before, silent)

    def _take(self, fill: int, seq: int, first: int, count: int):
        """(replies taken, bytes used, stopped at an unexpected frame) for READ replies in the first
        ``fill`` bytes of the receive area."""
        plan = self.plan
        got = self.lib.utvm_accel_take_chunks(
            self.rx_address, fill, self.reply, seq & 0xFFFF, plan.offset(first), plan.chunk, plan.total,
            count, self.sink, ctypes.byref(self.used), ctypes.byref(self.bad))
        return got, self.used.value, bool(self.bad.value)
