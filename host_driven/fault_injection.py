"""Transport wrappers that inject faults: on a seeded, reproducible schedule, or as random noise.

It sits between the host session and any `Transport` and, in either direction, drops, corrupts
or delays bytes, cuts the link, or runs a hook (e.g. kill the device process) when the byte
stream reaches a given offset. Offsets count the bytes that the wrapped transport carried in
that direction, so the same schedule hits the same bytes on every run; the values written by
`corrupt` come from the seed too. Tests use it to show that the host-driven path survives a
flaky link: every injected fault ends in correct data or a clear error, never wrong data or a
hang. ``NoisyTransport`` (with ``ByteNoise``) spoils bytes at random at a byte-error rate instead,
as a bad serial line does.
"""

from __future__ import annotations

import collections
import dataclasses
import math
import os
import random
import selectors
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Optional, Sequence

from utvm.host_driven.transport import Transport
from utvm.project_api.errors import IoTimeoutError, TransportClosedError

TO_DEVICE = "to_device"
FROM_DEVICE = "from_device"
DIRECTIONS = (TO_DEVICE, FROM_DEVICE)
KINDS = ("drop", "corrupt", "delay", "cut", "hook")


@dataclass(frozen=True)
class Fault:
    """One fault: `kind` hits the byte at offset `at` of the `direction` stream.

    - drop: `length` bytes vanish.
    - corrupt: `length` bytes are XORed with non-zero seeded values, or with `xor` when given
      (then `length` is its length): a chosen bit pattern.
    - delay: the bytes from `at` on arrive `delay_s` seconds later.
    - cut: the link is gone from `at` on; the wrapped transport is closed and every later
      read or write raises TransportClosedError.
    - hook: `action()` runs when the stream reaches `at` (bytes before it are through first).
    """

    kind: str
    direction: str
    at: int
    length: int = 1
    delay_s: float = 0.0
    action: Optional[Callable[[], None]] = field(default=None, compare=False)
    xor: Optional[bytes] = None

    def __post_init__(self):
        if self.xor is not None:
            if self.kind != "corrupt" or not self.xor or 0 in self.xor:
                raise ValueError("xor is for corrupt faults and needs non-zero bytes")
            object.__setattr__(self, "length", len(self.xor))
        if self.kind not in KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; choose one of {', '.join(KINDS)}")
        if self.direction not in DIRECTIONS:
            raise ValueError(f"unknown direction {self.direction!r}; choose {TO_DEVICE} or {FROM_DEVICE}")
        if self.at < 0 or self.length < 1 or self.delay_s < 0:
            raise ValueError(f"bad fault {self}: need at >= 0, length >= 1, delay_s >= 0")
        if self.kind == "hook" and self.action is None:
            raise ValueError("a hook fault needs an action")

    def describe(self) -> str:
        extra = {"drop": f" x{self.length}", "corrupt": f" x{self.length}", "delay": f" {self.delay_s:g}s"}
        return f"{self.kind}{extra.get(self.kind, '')} @{self.direction}[{self.at}]"


def seeded_schedule(
    seed: int,
    *,
    count: int,
    span: int,
    start: int = 0,
    kinds: Sequence[str] = ("drop", "corrupt"),
    directions: Sequence[str] = DIRECTIONS,
    max_length: int = 4,
    max_delay_s: float = 0.2,
) -> list[Fault]:
    """`count` faults at seeded random offsets in [start, start + span) of random directions.

    The same arguments always give the same schedule, so a failing run is reproduced from its
    seed alone.
    """
    rng = random.Random(seed)
    faults = []
    for _ in range(count):
        kind = rng.choice(list(kinds))
        faults.append(
            Fault(
                kind=kind,
                direction=rng.choice(list(directions)),
                at=start + rng.randrange(span),
                length=rng.randint(1, max_length),
                delay_s=round(rng.uniform(0.0, max_delay_s), 3) if kind == "delay" else 0.0,
            )
        )
    return sorted(faults, key=lambda f: (f.direction, f.at))


def _split(fault: Fault, take: int) -> tuple[Fault, Fault]:
    """A drop / corrupt fault cut after `take` bytes: the part that hit, and the rest."""
    if fault.xor:
        return (dataclasses.replace(fault, xor=fault.xor[:take]),
                dataclasses.replace(fault, at=fault.at + take, xor=fault.xor[take:]))
    return (dataclasses.replace(fault, length=take),
            dataclasses.replace(fault, at=fault.at + take, length=fault.length - take))


class FaultInjectingTransport(Transport):
    """Wraps `inner` and applies scheduled faults to the bytes it carries, in both directions.

    `injected` lists, in order, the faults that have taken effect (a fault scheduled at an offset
    the stream never reaches stays in `pending`).
    """

    def __init__(self, inner: Transport, faults: Iterable[Fault] = (), *, seed: int = 0):
        self.inner = inner
        self._rng = random.Random(seed)
        self._pending: dict[str, list[Fault]] = {d: [] for d in DIRECTIONS}
        self._offset = {d: 0 for d in DIRECTIONS}
        # Bytes from the device that have passed the injector: (monotonic release time, bytes).
        self._arrived: collections.deque = collections.deque()
        self._cut_reason: Optional[str] = None
        self.injected: list[Fault] = []
        self.add(faults)

    # -- scheduling -------------------------------------------------------------------------

    def add(self, faults: Iterable[Fault], *, relative: bool = False) -> None:
        """Schedule faults; with `relative`, their offsets count from the bytes carried so far."""
        for fault in faults:
            if relative:
                fault = dataclasses.replace(fault, at=fault.at + self._offset[fault.direction])
            self._pending[fault.direction].append(fault)
            self._pending[fault.direction].sort(key=lambda f: f.at)

    def inject(self, kind: str, direction: str, *, after: int = 0, length: int = 1, delay_s: float = 0.0,
               action: Optional[Callable[[], None]] = None, xor: Optional[bytes] = None) -> Fault:
        """Schedule one fault `after` bytes from now in `direction`; returns it."""
        fault = Fault(kind, direction, self._offset[direction] + after, length, delay_s, action, xor)
        self.add([fault])
        return fault

    def offset(self, direction: str) -> int:
        """Bytes the wrapped transport has carried in `direction` so far."""
        return self._offset[direction]

    @property
    def pending(self) -> list[Fault]:
        return self._pending[TO_DEVICE] + self._pending[FROM_DEVICE]

    def clear(self) -> None:
        """Drop every fault not yet reached (the link becomes clean again)."""
        for faults in self._pending.values():
            faults.clear()

    def describe(self) -> str:
        """The injected and pending faults, for a test's failure message."""
        done = ", ".join(f.describe() for f in self.injected) or "none"
        todo = ", ".join(f.describe() for f in self.pending) or "none"
        return f"injected: {done}; pending: {todo}"

    # -- the fault engine -------------------------------------------------------------------

    def _plan(self, direction: str, data: bytes) -> list[tuple]:
        """Split `data` into steps: ("data", bytes), ("sleep", s), ("call", fn), ("cut",)."""
        start = self._offset[direction]
        end = start + len(data)
        self._offset[direction] = end
        pending = self._pending[direction]
        steps: list[tuple] = []
        kept = bytearray()
        pos = 0  # index into data of the next byte not yet handled
        while pending and pending[0].at < end:
            fault = pending.pop(0)
            here = max(fault.at - start, pos)
            kept += data[pos:here]
            pos = here
            self.injected.append(fault)
            if fault.kind in ("drop", "corrupt"):
                take = min(fault.length, len(data) - pos)
                if fault.kind == "corrupt":
                    kept += self._corrupted(fault, data[pos : pos + take])
                pos += take
                if fault.length > take:  # the rest of the fault hits the next chunk
                    head, rest = _split(fault, take)
                    self.injected[-1] = head
                    pending.insert(0, dataclasses.replace(rest, at=end))
                continue
            if kept:
                steps.append(("data", bytes(kept)))
                kept = bytearray()
            if fault.kind == "delay":
                steps.append(("sleep", fault.delay_s))
            elif fault.kind == "hook":
                steps.append(("call", fault.action))
            else:  # cut: nothing after it gets through
                steps.append(("cut", f"link cut by the fault injector at byte {fault.at} {direction}"))
                return steps
        kept += data[pos:]
        if kept:
            steps.append(("data", bytes(kept)))
        return steps

    def _corrupted(self, fault: Fault, chunk: bytes) -> bytes:
        masks = fault.xor if fault.xor else [self._rng.randrange(1, 256) for _ in chunk]
        return bytes(b ^ m for b, m in zip(chunk, masks))

    def _cut(self, reason: str) -> None:
        self._cut_reason = reason
        self.clear()
        self.inner.close()

    def _check_link(self) -> None:
        if self._cut_reason is not None:
            raise TransportClosedError(self._cut_reason)

    # -- Transport --------------------------------------------------------------------------

    def write(self, data: bytes, timeout: Optional[float]) -> None:
        """Send `data` through the faults scheduled on the to-device stream."""
        self._check_link()
        for step in self._plan(TO_DEVICE, bytes(data)):
            if step[0] == "data":
                self.inner.write(step[1], timeout)
            elif step[0] == "sleep":
                time.sleep(step[1])
            elif step[0] == "call":
                step[1]()
            else:
                self._cut(step[1])
                return

    def read(self, n: int, timeout: Optional[float]) -> bytes:
        """Up to `n` bytes from the device, after the faults on the from-device stream."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if self._arrived:
                release, data = self._arrived[0]
                now = time.monotonic()
                if release <= now:
                    self._arrived.popleft()
                    if len(data) > n:
                        self._arrived.appendleft((release, data[n:]))
                    return data[:n]
                if deadline is not None and release > deadline:
                    time.sleep(max(0.0, deadline - now))
                    raise IoTimeoutError(f"no byte within {timeout} s (delayed by the fault injector)")
                time.sleep(release - now)
                continue
            self._check_link()
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            self._receive(self.inner.read(n, remaining))

    def _receive(self, chunk: bytes) -> None:
        """Pass a chunk from the device through the injector into the arrived queue."""
        release = time.monotonic()
        for step in self._plan(FROM_DEVICE, chunk):
            if step[0] == "data":
                self._arrived.append((release, step[1]))
            elif step[0] == "sleep":
                release += step[1]
            elif step[0] == "call":
                step[1]()
            else:
                self._cut(step[1])

    def close(self) -> None:
        self.inner.close()


# -- random noise at a byte-error rate --------------------------------------------------------

NOISE_KINDS = ("flip", "drop", "duplicate", "swap")


class ByteNoise:
    """Spoils a byte stream at random, at ``rate`` errors per byte, as a bad line does.

    Each spoilt byte gets one of ``kinds``: ``flip`` (one bit inverted), ``drop`` (lost),
    ``duplicate`` (sent twice) or ``swap`` (exchanged with the next byte). The gaps between errors
    are drawn from the seed, so a run is reproduced from its seed and the same slicing. ``errors``
    counts the bytes spoilt so far.
    """

    def __init__(self, rate: float, seed: int = 0, kinds: Sequence[str] = NOISE_KINDS):
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"rate must be in [0, 1), got {rate}")
        unknown = set(kinds) - set(NOISE_KINDS)
        if unknown or not kinds:
            raise ValueError(f"unknown noise kinds {sorted(unknown)}; choose from {', '.join(NOISE_KINDS)}")
        self.rate = rate
        self.kinds = tuple(kinds)
        self.errors = 0
        self._rng = random.Random(seed)
        self._gap = self._next_gap()

    def _next_gap(self) -> int:
        """Clean bytes before the next error (geometric, mean 1 / rate)."""
        if self.rate == 0.0:
            return 1 << 62
        return int(math.log(1.0 - self._rng.random()) / math.log(1.0 - self.rate))

    def __call__(self, data: bytes) -> bytes:
        if self._gap >= len(data):
            self._gap -= len(data)
            return data
        out = bytearray()
        pos = 0
        while self._gap < len(data) - pos:
            at = pos + self._gap
            out += data[pos:at]
            kind = self._rng.choice(self.kinds)
            byte = data[at]
            pos = at + 1
            if kind == "flip":
                out.append(byte ^ (1 << self._rng.randrange(8)))
            elif kind == "duplicate":
                out += bytes((byte, byte))
            elif kind == "swap" and pos < len(data):
                out += bytes((data[pos], byte))
                pos += 1
            elif kind == "swap":
                out.append(byte)  # nothing after it to swap with
            self.errors += 1
            self._gap = self._next_gap()
        self._gap -= len(data) - pos
        out += data[pos:]
        return bytes(out)


class NoisyTransport(Transport):
    """Wraps ``inner`` and spoils the bytes both ways with ByteNoise at ``rate`` (seeded)."""

    def __init__(self, inner: Transport, rate: float, *, seed: int = 0, kinds: Sequence[str] = NOISE_KINDS):
        self.inner = inner
        self.to_device = ByteNoise(rate, seed, kinds)
        self.from_device = ByteNoise(rate, seed + 1, kinds)

    def write(self, data: bytes, timeout: float) -> None:
        spoilt = self.to_device(bytes(data))
        if spoilt:
            self.inner.write(spoilt, timeout)

    def read(self, n: int, timeout: float) -> bytes:
        deadline = time.monotonic() + timeout
        while True:
            data = self.from_device(self.inner.read(n, max(0.0, deadline - time.monotonic())))
            if data:
                return data
            if time.monotonic() >= deadline:
                raise IoTimeoutError(f"no byte within {timeout} s (all dropped by the noise)")

    def close(self) -> None:
        self.inner.close()


def relay(device: Sequence[str], spoil: Callable[[str, bytes], bytes]) -> int:
    """Run ``device`` and relay this process's stdin to it and its stdout back, passing each slice
    through ``spoil(direction, data)`` (direction "to" or "from" the device) on the way: the body
    of a fault-injecting proxy process, whose host still sees a pipe pair. Returns the device's
    exit code once either end closes (the device's input is closed first)."""
    child = subprocess.Popen(list(device), stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0)
    routes = {sys.stdin.fileno(): ("to", child.stdin.fileno()),
              child.stdout.fileno(): ("from", sys.stdout.fileno())}
    with selectors.DefaultSelector() as selector:
        for fd in routes:
            selector.register(fd, selectors.EVENT_READ)
        while True:
            for key, _ in selector.select():
                direction, target = routes[key.fd]
                data = os.read(key.fd, 65536)
                if not data or not _write_all(target, spoil(direction, data)):
                    child.stdin.close()
                    return child.wait()


def _write_all(fd: int, data: bytes) -> bool:
    """Write all of ``data``; False when the reader has gone."""
    view = memoryview(data)
    try:
        while view:
            view = view[os.write(fd, view):]
    except BrokenPipeError:
        return False
    return True
