"""Packet framing, host side: FLAG-delimited, byte-escaped packets with a CRC-16/CCITT-FALSE.

A packet on the wire is ``FLAG escape(packet + crc16_be(packet)) FLAG``; only FLAG (0x7E) and ESC
(0x7D) are escaped, as ``ESC (byte ^ 0x20)``. Everything here runs at C speed on whole buffers
(``bytes.replace``, ``bytes.split``, ``binascii.crc_hqx``): no per-byte Python loop.
"""

from __future__ import annotations

import binascii
from typing import List

FLAG = b"\x7e"
ESC = b"\x7d"
_ESC_FLAG = b"\x7d\x5e"
_ESC_ESC = b"\x7d\x5d"
CRC_BYTES = 2


def crc16(data: bytes, crc: int = 0xFFFF) -> int:
    """CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF, no reflection, no final xor)."""
    return binascii.crc_hqx(data, crc)


# Above this share of escapes, pair replacement beats the per-escape loop.
_DENSE_ESCAPES = 1 / 32
_UNESCAPED = {0x5D: ESC, 0x5E: FLAG}


def encode(packet: bytes) -> bytes:
    """Frame one packet for the wire."""
    body = bytes(packet) + crc16(packet).to_bytes(CRC_BYTES, "big")
    return FLAG + body.replace(ESC, _ESC_ESC).replace(FLAG, _ESC_FLAG) + FLAG


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
    """

    def __init__(self, max_packet: int):
        self.max_packet = max_packet
        self.bad_frames = 0
        self._partial = bytearray()
        self._overflow = False

    def _limit(self) -> int:
        # Worst case: every byte escaped.
        return 2 * (self.max_packet + CRC_BYTES)

    def _frame(self, frame: bytes, out: List[bytes]) -> None:
        if not frame:
            return
        raw = _unescape(frame)
        if (
            raw is None
            or len(raw) <= CRC_BYTES
            or len(raw) > self.max_packet + CRC_BYTES
            or crc16(raw) != 0  # the CRC of data followed by its own big-endian CRC is 0
        ):
            self.bad_frames += 1
            return
        out.append(raw[:-CRC_BYTES])

    def feed(self, data: bytes) -> List[bytes]:
        """Decode the next slice of the byte stream; returns the packets it completed."""
        out: List[bytes] = []
        if FLAG not in data:
            if not self._overflow:
                self._partial += data
                if len(self._partial) > self._limit():
                    self._partial.clear()
                    self._overflow = True
            return out
        parts = bytes(data).split(FLAG)
        if self._overflow:
            self.bad_frames += 1
            self._overflow = False
        else:
            self._frame(bytes(self._partial) + parts[0], out)
        for frame in parts[1:-1]:
            self._frame(frame, out)
        self._partial = bytearray(parts[-1])
        if len(self._partial) > self._limit():
            self._partial.clear()
            self._overflow = True
        return out
