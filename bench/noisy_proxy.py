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
import os
import selectors
import subprocess
import sys

from utvm.host_driven.fault_injection import NOISE_KINDS, ByteNoise


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.noisy_proxy", description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, required=True, help="errors per byte, each direction")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--kinds", nargs="+", default=list(NOISE_KINDS), choices=NOISE_KINDS)
    parser.add_argument("device", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    device = [a for a in args.device if a != "--"]
    noise = {"to": ByteNoise(args.rate, args.seed, args.kinds),
             "from": ByteNoise(args.rate, args.seed + 1, args.kinds)}
    child = subprocess.Popen(device, stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0)
    routes = {sys.stdin.fileno(): ("to", child.stdin.fileno()),
              child.stdout.fileno(): ("from", sys.stdout.fileno())}
    with selectors.DefaultSelector() as selector:
        for fd in routes:
            selector.register(fd, selectors.EVENT_READ)
        while True:
            for key, _ in selector.select():
                direction, target = routes[key.fd]
                data = os.read(key.fd, 65536)
                if not data:  # either end closed: so do we
                    child.stdin.close()
                    return child.wait()
                view = memoryview(noise[direction](data))
                try:
                    while view:
                        view = view[os.write(target, view):]
                except BrokenPipeError:
                    child.stdin.close()
                    return child.wait()


if __name__ == "__main__":
    sys.exit(main())
