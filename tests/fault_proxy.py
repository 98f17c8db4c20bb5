"""A fault-injecting proxy process: relays stdin/stdout to a device program and spoils bytes.

    python fault_proxy.py [--corrupt DIR:OFFSET ...] [--drop DIR:OFFSET ...] [--drop-packet DIR:KIND:CMD]
                          -- device [args...]

DIR is ``to`` (host to device) or ``from`` (device to host); OFFSET counts the bytes of that
stream. A corrupted byte is XORed with 0x01; a dropped byte never arrives. ``--drop-packet``
drops the first frame of that direction whose packet has that kind and command byte (numbers,
e.g. ``to:0x10:0x20`` for a RUN request), so a whole request or reply is lost. The host sees a pipe
pair (so its sessions take the C pipe call), and the faults are below it: this is how the pipe
call's own handling of spoilt replies is tested. The relaying is utvm's own
(``utvm.host_driven.fault_injection.relay``).
"""

from __future__ import annotations

import argparse
import sys
from typing import Optional

from utvm.host_driven.fault_injection import relay


def _faults(specs, kind):
    out = {"to": {}, "from": {}}
    for spec in specs or ():
        direction, offset = spec.split(":")
        out[direction][int(offset)] = kind
    return out


def _spoil(data: bytes, start: int, faults: dict) -> bytes:
    if not faults:
        return data
    out = bytearray()
    for index, byte in enumerate(data):
        kind = faults.get(start + index)
        if kind == "corrupt":
            out.append(byte ^ 0x01)
        elif kind != "drop":
            out.append(byte)
    return bytes(out)


class PacketDropper:
    """Drops the first frame whose packet starts with ``head`` (kind and command bytes) from one
    direction's stream. A frame's bytes are held until its closing FLAG, then passed on or not."""

    def __init__(self, head: Optional[bytes]):
        self.head = head
        self.frame = bytearray()

    def __call__(self, data: bytes) -> bytes:
        if self.head is None:
            return data
        out = bytearray()
        for byte in data:
            if byte != 0x7E:
                self.frame.append(byte)
                continue
            body, self.frame = bytes(self.frame), bytearray()
            if self.head is not None and _unescaped_start(body, len(self.head)) == self.head:
                self.head = None  # dropped: its FLAG goes on alone (an empty frame, ignored)
            else:
                out += body
            out.append(byte)
        if self.head is None:  # done: the rest of the stream passes as it is
            out += self.frame
            self.frame = bytearray()
        return bytes(out)


def _unescaped_start(body: bytes, n: int) -> bytes:
    out = bytearray()
    escaped = False
    for byte in body:
        if len(out) == n:
            break
        if byte == 0x7D:
            escaped = True
            continue
        out.append(byte ^ 0x20 if escaped else byte)
        escaped = False
    return bytes(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corrupt", action="append", metavar="DIR:OFFSET")
    parser.add_argument("--drop", action="append", metavar="DIR:OFFSET")
    parser.add_argument("--drop-packet", metavar="DIR:KIND:CMD")
    parser.add_argument("device", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    device = [a for a in args.device if a != "--"]
    faults = _faults(args.corrupt, "corrupt")
    for direction, table in _faults(args.drop, "drop").items():
        faults[direction].update(table)
    droppers = {"to": PacketDropper(None), "from": PacketDropper(None)}
    if args.drop_packet:
        direction, kind, cmd = args.drop_packet.split(":")
        droppers[direction] = PacketDropper(bytes([int(kind, 0), int(cmd, 0)]))
    seen = {"to": 0, "from": 0}

    def spoil(direction: str, data: bytes) -> bytes:
        spoilt = droppers[direction](_spoil(data, seen[direction], faults[direction]))
        seen[direction] += len(data)
        return spoilt

    return relay(device, spoil)


if __name__ == "__main__":
    sys.exit(main())
