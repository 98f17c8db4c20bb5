"""A fault-injecting proxy process: relays stdin/stdout to a device program and spoils bytes.

    python fault_proxy.py [--corrupt DIR:OFFSET ...] [--drop DIR:OFFSET ...] [--drop-frame DIR:INDEX ...]
                          -- device [args...]

DIR is ``to`` (host to device) or ``from`` (device to host); OFFSET counts the bytes of that
stream. A corrupted byte is XORed with 0x01; a dropped byte never arrives. ``--drop-frame``
drops the body of that direction's INDEX-th frame (from 0; a frame is what lies between two
FLAG bytes, empty ones not counted), so a whole request or reply is lost. The host sees a pipe
pair (so its sessions take the C pipe call), and the faults are below it: this is how the pipe
call's own handling of spoilt replies is tested. The relaying is utvm's own
(``utvm.host_driven.fault_injection.relay``).
"""

from __future__ import annotations

import argparse
import sys

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


class FrameDropper:
    """Drops the bodies of chosen frames (by index) from one direction's stream."""

    def __init__(self, indexes):
        self.indexes = set(indexes)
        self.count = 0  # frames seen so far, including the one in progress
        self.inside = False

    def __call__(self, data: bytes) -> bytes:
        if not self.indexes:
            return data
        out = bytearray()
        for byte in data:
            if byte == 0x7E:
                self.inside = False
            elif not self.inside:
                self.inside = True
                self.count += 1
            if byte == 0x7E or self.count - 1 not in self.indexes:
                out.append(byte)
        return bytes(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corrupt", action="append", metavar="DIR:OFFSET")
    parser.add_argument("--drop", action="append", metavar="DIR:OFFSET")
    parser.add_argument("--drop-frame", action="append", metavar="DIR:INDEX")
    parser.add_argument("device", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    device = [a for a in args.device if a != "--"]
    faults = _faults(args.corrupt, "corrupt")
    for direction, table in _faults(args.drop, "drop").items():
        faults[direction].update(table)
    droppers = {d: FrameDropper(int(spec.split(":")[1]) for spec in args.drop_frame or ()
                                if spec.split(":")[0] == d) for d in ("to", "from")}
    seen = {"to": 0, "from": 0}

    def spoil(direction: str, data: bytes) -> bytes:
        spoilt = droppers[direction](_spoil(data, seen[direction], faults[direction]))
        seen[direction] += len(data)
        return spoilt

    return relay(device, spoil)


if __name__ == "__main__":
    sys.exit(main())
