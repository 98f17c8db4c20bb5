"""Packet framing, host side: FLAG-delimited, byte-escaped packets with a CRC-16/CCITT-FALSE.

A packet on the wire is ``FLAG escape(packet + crc16_be(packet)) FLAG``; only FLAG (0x7E) and ESC
(0x7D) are escaped, as ``ESC (byte ^ 0x20)``. Everything here runs at C speed on whole buffers:
large packets, batches of requests and received slices of many frames go through the optional C
accelerator (``_framing_accel``: a carry-less-multiplication or slicing-by-8 CRC, an SSE2 or
word-at-a-time escape scan), everything else and every host without a C compiler through
``binascii.crc_hqx`` and ``bytes.replace``/``split``. Both paths give the same bytes.
"""

from __future__ import annotations

import binascii
import ctypes
import struct
from typing import List, Optional, Sequence

from . import _framing_accel

FLAG = b"\x7e"
ESC = b"\x7d"
_ESC_FLAG = b"\x7d\x5e"
_ESC_ESC = b"\x7d\x5d"
CRC_BYTES = 2
_CRC_BE = struct.Struct(">H").pack
# From this size on a packet is framed by the accelerator: below it, the ctypes call costs more
# than crc_hqx and bytes.replace take.
ACCEL_MIN_BYTES = 256


def crc16(data: bytes, crc: int = 0xFFFF) -> int:
    """CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF, no reflection, no final xor)."""
    return binascii.crc_hqx(data, crc)


def _encode_python(packet: bytes) -> bytes:
    body = packet + _CRC_BE(binascii.crc_hqx(packet, 0xFFFF))
    # replace() hands back the same object when there is nothing to replace: cheaper than a test.
    return b"\x7e%b\x7e" % body.replace(ESC, _ESC_ESC).replace(FLAG, _ESC_FLAG)


def encode(packet: bytes) -> bytes:
    """Frame one packet for the wire."""
    if type(packet) is not bytes:
        packet = bytes(packet)
    if len(packet) < ACCEL_MIN_BYTES:
        return _encode_python(packet)
    lib = _framing_accel.load()
    if lib is None:
        return _encode_python(packet)
    out = ctypes.create_string_buffer(2 * (len(packet) + CRC_BYTES) + 2)
    n = lib.utvm_accel_encode(packet, len(packet), None, 0, out)
    return out.raw[:n]


class FrameEncoder:
    """Frames many packets into one buffer, so a batch of requests costs one write.

    ``accel=False`` keeps to the pure-Python path (the accelerator is used when it loads).
    """

    def __init__(self, accel: bool = True):
        self._lib = _framing_accel.load() if accel else None
        self._scratch: Optional[bytearray] = None
        self._address = 0

    @property
    def lib(self):
        """The accelerator library, or None on the pure-Python path."""
        return self._lib

    def _room(self, nbytes: int) -> int:
        if self._scratch is None or len(self._scratch) < nbytes:
            # Kept across calls: a fresh large buffer per batch would cost a mapping and page faults.
            self._scratch = bytearray(max(nbytes, 2 * len(self._scratch or b"")))
            self._address = ctypes.addressof(ctypes.c_char.from_buffer(self._scratch))
        return self._address

    def room(self, nbytes: int):
        """(address, buffer) of a scratch buffer of at least ``nbytes``, kept for the next call."""
        return self._room(nbytes), self._scratch

    def encode_many(self, packets: Sequence[bytes]):
        """The frames of ``packets`` back to back."""
        lib = self._lib
        if lib is None or len(packets[0]) < ACCEL_MIN_BYTES:
            return b"".join([_encode_python(bytes(p)) for p in packets])
        count = len(packets)
        lengths = [len(p) for p in packets]
        address = self._room(2 * sum(lengths) + (2 * CRC_BYTES + 2) * count)
        # One call for the batch: the packets are passed by address, not copied.
        at = lib.utvm_accel_encode_many((ctypes.c_char_p * count)(*[p if type(p) is bytes else bytes(p)
                                                                    for p in packets]),
                                        (ctypes.c_size_t * count)(*lengths), count, address)
        return bytes(memoryview(self._scratch)[:at])


# From this slice size on (a batch of small replies, say), the accelerator finds and decodes all of
# a slice's frames (no split), at most _BULK_FRAMES per call.
_BULK_MIN_BYTES = 128
_BULK_FRAMES = 64
# Above this share of escapes, pair replacement beats the per-escape loop.
_DENSE_ESCAPES = 1 / 32
_UNESCAPED = {0x5D: ESC, 0x5E: FLAG}


def _unescape(frame: bytes):
    """The bytes a frame stands for, or None when it holds an escape the sender never makes."""
    parts = frame.split(ESC)
    if len(parts) == 1:
        return frame
    if len(parts) > len(frame) * _DENSE_ESCAPES:
        if len(parts) - 1 != frame.count(_ESC_FLAG) + frame.count(_ESC_ESC):
            return None
        # ESC only ever starts an escape, so each pair can be replaced on its own.
        return frame.replace(_ESC_FLAG, FLAG).replace(_ESC_ESC, ESC)
    out = [parts[0]]
    for part in parts[1:]:
        byte = _UNESCAPED.get(part[0]) if part else None
        if byte is None:
            return None
        out.append(byte)
        out.append(part[1:])
    return b"".join(out)


class FrameDecoder:
    """Incremental decoder: feed it byte slices as they arrive, get back whole, checked packets.

    Frames with a bad CRC or escape, and frames longer than ``max_packet`` (the caller's limit,
    CRC excluded), are dropped and counted in ``bad_frames``; decoding resumes at the next FLAG.
    ``good_frames`` counts the packets handed out.
    ``accel=False`` keeps to the pure-Python path (the accelerator is used when it loads).
    """

    def __init__(self, max_packet: int, accel: bool = True):
        self.max_packet = max_packet
        self.bad_frames = 0
        self.good_frames = 0
        self._partial = bytearray()
        self._overflow = False
        self._lib = _framing_accel.load() if accel else None
        if self._lib is not None:
            self._out = bytearray(max_packet + CRC_BYTES)
            self._out_address = ctypes.addressof(ctypes.c_char.from_buffer(self._out))
            self._bulk = bytearray()
            self._bulk_address = 0
            self._spans = (ctypes.c_long * (2 * _BULK_FRAMES))()
            self._used = ctypes.c_size_t()

    @property
    def idle(self) -> bool:
        """True between frames: no partial frame is held."""
        return not self._partial and not self._overflow

    def _limit(self) -> int:
        # Worst case: every byte escaped.
        return 2 * (self.max_packet + CRC_BYTES)

    def _frame(self, frame: bytes, out: List[bytes]) -> None:
        if self._lib is not None and len(frame) >= ACCEL_MIN_BYTES:
            n = self._lib.utvm_accel_decode(frame, len(frame), self._out_address, len(self._out))
            if n < 0:
                self.bad_frames += 1
            else:
                out.append(bytes(memoryview(self._out)[:n]))
            return
        raw = frame if 0x7D not in frame else _unescape(frame)  # an int: faster than `ESC in`
        if (
            raw is None
            or len(raw) <= CRC_BYTES
            or len(raw) > self.max_packet + CRC_BYTES
            or binascii.crc_hqx(raw, 0xFFFF) != 0  # the CRC of data and its own big-endian CRC is 0
        ):
            self.bad_frames += 1
            return
        out.append(raw[:-CRC_BYTES])

    def _frames_between(self, data: bytes, start: int, stop: int, out: List[bytes]) -> None:
        """Decode the frames of data[start:stop] (just after a FLAG, up to and including the last) in
        a few accelerator calls."""
        room = stop - start + self.max_packet + CRC_BYTES
        if len(self._bulk) < room:
            self._bulk = bytearray(max(room, 2 * len(self._bulk)))
            self._bulk_address = ctypes.addressof(ctypes.c_char.from_buffer(self._bulk))
        base = ctypes.cast(ctypes.c_char_p(data), ctypes.c_void_p).value
        bulk = memoryview(self._bulk)
        spans = self._spans
        while start < stop:
            count = self._lib.utvm_accel_decode_all(
                base + start, stop - start, self._bulk_address, len(self._bulk), self.max_packet + CRC_BYTES,
                spans, _BULK_FRAMES, ctypes.byref(self._used))
            start += self._used.value
            for at in range(0, 2 * count, 2):
                offset = spans[at]
                if offset < 0:
                    self.bad_frames += 1
                else:
                    out.append(bytes(bulk[offset:offset + spans[at + 1]]))

    def _sole_frame(self, data: bytes) -> Optional[bytes]:
        """The packet of ``data`` when it is exactly one whole frame, free of escapes, whose CRC
        checks, and no frame is in progress; else None (and nothing is consumed)."""
        end = len(data) - 1
        if (CRC_BYTES + 1 < end <= self.max_packet + CRC_BYTES + 1 and data[0] == 0x7E
                and data[end] == 0x7E and not self._partial and not self._overflow and 0x7D not in data
                and data.find(0x7E, 1) == end and binascii.crc_hqx(data[1:end], 0xFFFF) == 0):
            return data[1:end - CRC_BYTES]
        return None

    def sole_packet(self, data: bytes, head: bytes) -> Optional[bytes]:
        """What follows ``head`` in ``data`` when ``data`` is exactly one whole good frame (as
        ``feed`` would take it) whose packet starts with ``head``; else None and nothing is
        consumed (``feed`` then takes ``data``). The usual reply to a single request."""
        packet = self._sole_frame(data)
        if packet is not None and packet.startswith(head):
            self.good_frames += 1
            return packet[len(head):]
        return None

    def feed(self, data: bytes) -> List[bytes]:
        """Decode the next slice of the byte stream; returns the packets it completed."""
        if type(data) is not bytes:
            data = bytes(data)
        out: List[bytes] = []
        if 0x7E not in data:  # an int: faster than `FLAG in`
            if not self._overflow:
                self._partial += data
                if len(self._partial) > self._limit():
                    self._partial.clear()
                    self._overflow = True
            return out
        if self._lib is not None and len(data) >= _BULK_MIN_BYTES:
            out = self._feed_bulk(data, out)
            self.good_frames += len(out)
            return out
        packet = self._sole_frame(data)  # one whole small frame, the usual reply to a request
        if packet is not None:
            self.good_frames += 1
            return [packet]
        parts = data.split(FLAG)
        self._head(parts[0], out)
        frame = self._frame
        for part in parts[1:-1]:
            if part:  # two FLAGs in a row: an empty frame, ignored
                frame(part, out)
        self._tail(parts[-1])
        self.good_frames += len(out)
        return out

    def _feed_bulk(self, data: bytes, out: List[bytes]) -> List[bytes]:
        first = data.index(0x7E)
        last = data.rindex(0x7E)
        self._head(data[:first], out)
        self._frames_between(data, first + 1, last + 1, out)
        self._tail(data[last + 1:])
        return out

    def _head(self, head: bytes, out: List[bytes]) -> None:
        """The bytes before a slice's first FLAG end the frame left over from the last slice."""
        if self._overflow:
            self.bad_frames += 1
            self._overflow = False
        elif self._partial:
            self._frame(bytes(self._partial) + head, out)
        elif head:
            self._frame(head, out)

    def _tail(self, tail: bytes) -> None:
        """The bytes after a slice's last FLAG start a frame the next slice ends."""
        if not tail:
            if self._partial:
                self._partial = bytearray()
        elif len(tail) > self._limit():
            self._partial = bytearray()
            self._overflow = True
        else:
            self._partial = bytearray(tail)
