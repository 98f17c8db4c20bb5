"""A spec-only MLPerf Tiny runner for the tests: the host side of the runner's serial protocol,
written from the protocol as issue 17 states it (not from the official runner's code).

- A command is ASCII ending with ``%``; the reply is ``\\r\\n`` lines, the last containing ``m-ready``.
- At boot the device says ``m-timestamp-mode-performance``, ``m-init-done``, ``m-ready``.
- ``name%`` -> ``m-name-dut-[...]``; ``profile%`` -> ``m-profile-[...]`` and ``m-model-[id]``.
- ``db load N%`` -> ``m-[Expecting N bytes]``, then ``db <hex>%`` chunks of up to 31 bytes, the last
  answered with ``m-load-done``.
- ``infer N W%`` -> ``m-warmup-start-W``, ``m-warmup-done``, ``m-infer-start-N``, ``m-lap-us-A``,
  ``m-lap-us-B``, ``m-infer-done``, ``m-results-[f,...]``. Errors are ``e-[...]`` lines.

It talks to anything with ``write(bytes)`` and ``read(n, timeout) -> bytes`` (b"" on timeout):
:func:`serial_link` opens a serial path (a pty from `utvm pty`), :func:`pipe_link` wraps a
PipeChild running a host DUT program.
"""

from __future__ import annotations

import dataclasses
import re
import time
from typing import Callable, List, Optional

CHUNK_BYTES = 31
READY = "m-ready"


class RunnerError(AssertionError):
    """The device broke the protocol, or did not answer in time."""


@dataclasses.dataclass
class Inference:
    lines: List[str]
    warmups: int
    inferences: int
    lap_us: List[int]
    results: List[float]

    @property
    def elapsed_us(self) -> int:
        return self.lap_us[1] - self.lap_us[0]


class Link:
    def __init__(self, write: Callable[[bytes], None], read: Callable[[int, float], bytes],
                 close: Callable[[], None] = lambda: None):
        self.write, self.read, self.close = write, read, close


def serial_link(path: str) -> Link:
    import serial

    port = serial.Serial(path, 115200, timeout=0)

    def read(n: int, timeout: float) -> bytes:
        port.timeout = timeout
        return port.read(1) + (port.read(port.in_waiting) if port.in_waiting else b"")

    return Link(port.write, read, port.close)


def pipe_link(child) -> Link:
    from utvm.project_api.errors import IoTimeoutError

    def read(n: int, timeout: float) -> bytes:
        try:
            return child.read(n, timeout)
        except IoTimeoutError:
            return b""

    return Link(lambda data: child.write(data, 10.0), read, child.close)


class SpecRunner:
    """The runner's side of the protocol over one Link; every wait has a deadline."""

    def __init__(self, link: Link, timeout: float = 30.0):
        self.link = link
        self.timeout = timeout
        self._pending = b""

    def read_lines_until_ready(self, timeout: Optional[float] = None) -> List[str]:
        """Lines up to and including the one with m-ready (each within `timeout` of the last)."""
        lines: List[str] = []
        wait = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + wait
        while True:
            while b"\n" in self._pending:
                raw, self._pending = self._pending.split(b"\n", 1)
                line = raw.decode("ascii").strip("\r\0")
                if line:
                    lines.append(line)
                deadline = time.monotonic() + wait
                if READY in line:
                    return lines
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise RunnerError(f"no {READY} within {wait} s; got {lines} and {self._pending!r}")
            self._pending += self.link.read(4096, min(remaining, 0.5))

    def command(self, text: str, timeout: Optional[float] = None) -> List[str]:
        self.link.write(text.encode("ascii") + b"%")
        return self.read_lines_until_ready(timeout)

    @staticmethod
    def _match(lines: List[str], pattern: str) -> re.Match:
        for line in lines:
            m = re.fullmatch(pattern, line)
            if m:
                return m
        raise RunnerError(f"no line matches {pattern!r} in {lines}")

    def boot(self) -> List[str]:
        lines = self.read_lines_until_ready()
        for want in ("m-timestamp-mode-performance", "m-init-done"):
            if want not in lines:
                raise RunnerError(f"boot lines {lines} lack {want}")
        return lines

    def name(self) -> str:
        return self._match(self.command("name"), r"m-name-dut-\[([^\]]+)\]").group(1)

    def profile(self):
        lines = self.command("profile")
        return (self._match(lines, r"m-profile-\[([^\]]+)\]").group(1),
                self._match(lines, r"m-model-\[([^\]]+)\]").group(1))

    def load(self, data: bytes) -> None:
        self._match(self.command(f"db load {len(data)}"), rf"m-\[Expecting {len(data)} bytes\]")
        for start in range(0, len(data), CHUNK_BYTES):
            lines = self.command("db " + data[start:start + CHUNK_BYTES].hex())
            errors = [line for line in lines if line.startswith("e-")]
            if errors:
                raise RunnerError(f"loading: {errors}")
            done = "m-load-done" in lines
            if done != (start + CHUNK_BYTES >= len(data)):
                raise RunnerError(f"m-load-done {'early' if done else 'missing'} at byte {start}: {lines}")

    def infer(self, inferences: int, warmups: int, timeout: Optional[float] = None) -> Inference:
        lines = self.command(f"infer {inferences} {warmups}", timeout)
        order = [f"m-warmup-start-{warmups}", "m-warmup-done", f"m-infer-start-{inferences}", "m-lap-us-",
                 "m-lap-us-", "m-infer-done", "m-results-[", READY]
        at = 0
        for line in lines:
            if at < len(order) and line.startswith(order[at]):
                at += 1
            elif line.startswith("e-"):
                raise RunnerError(f"infer failed: {line}")
        if at != len(order):
            raise RunnerError(f"infer reply out of order: {lines}")
        laps = [int(self._match([line], r"m-lap-us-(\d+)").group(1)) for line in lines
                if line.startswith("m-lap-us-")]
        return Inference(lines, warmups, inferences, laps, self._results(lines))

    def _results(self, lines: List[str]) -> List[float]:
        body = self._match(lines, r"m-results-\[([^\]]*)\]").group(1)
        return [float(x) for x in body.split(",")]

    def results(self) -> List[float]:
        return self._results(self.command("results"))

    def errors(self, text: str) -> List[str]:
        """The e-[...] texts the device answers `text` with (which must end in m-ready)."""
        return [line for line in self.command(text) if line.startswith("e-")]
