"""A noisy line between a host and a device process: relays stdin/stdout and spoils bytes both ways.

    python -m bench.noisy_proxy --rate 1e-3 --seed 7 -- DEVICE [ARGS...]

Each byte is spoilt with probability RATE (a bit flipped, the byte dropped, duplicated or swapped
with the next; utvm.host_driven.fault_injection.ByteNoise), independently in each direction. The
host sees a pipe pair, so its sessions take the same paths as over a clean pipe (the C pipe call
included); the noise is below them. The proxy exits, and closes the device's input, when the
host closes its end.
"""

from __future__ import annotations

import argparse
import sys

from utvm.host_driven.fault_injection import NOISE_KINDS, ByteNoise, relay


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.noisy_proxy", description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, required=True, help="errors per byte, each direction")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--kinds", nargs="+", default=list(NOISE_KINDS), choices=NOISE_KINDS)
    parser.add_argument("device", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    noise = {"to": ByteNoise(args.rate, args.seed, args.kinds),
             "from": ByteNoise(args.rate, args.seed + 1, args.kinds)}
    return relay([a for a in args.device if a != "--"], lambda direction, data: noise[direction](data))

if __name__ == "__main__":
    sys.exit(main())
