"""Where the benchmark's processes run: one shared CPU (default), split across two, or anywhere.

- same: the host and every peer process on one CPU. On a small VM, a wake-up across CPUs costs
  tens of microseconds and lands at random; on one CPU the figures are stable.
- split: the host on one CPU, every peer process (device, RPC server, pipe child) on another, as
  a device with its own processor would be: both sides work in parallel, wake-ups cross CPUs.
- none: the OS decides (figures vary from run to run).
Children inherit their parent's CPU set, so a peer is started while the host sits on the peer CPU.
"""

from __future__ import annotations

import contextlib
import os
from typing import Iterator, Optional

MODES = ("same", "split", "none")


class Placement:
    """Pins this process per `mode`; `spawning()` is the context in which to start peers."""

    def __init__(self, mode: str, cpus: Optional[str] = None):
        if mode not in MODES:
            raise ValueError(f"unknown placement {mode!r}; choose one of {', '.join(MODES)}")
        self.mode = mode
        can_pin = hasattr(os, "sched_setaffinity")
        allowed = sorted(os.sched_getaffinity(0)) if can_pin else []
        chosen = [int(c) for c in cpus.split(",")] if cpus else allowed[-2:][::-1]
        if mode != "none" and not can_pin:
            raise RuntimeError("this OS cannot pin processes to CPUs; use --placement none")
        if mode == "split" and len(set(chosen)) < 2:
            raise RuntimeError(f"--placement split needs two CPUs, this process may use {allowed}")
        self.host_cpu = chosen[0] if chosen else None
        self.peer_cpu = chosen[1] if mode == "split" else self.host_cpu
        if mode != "none":
            os.sched_setaffinity(0, {self.host_cpu})

    @contextlib.contextmanager
    def spawning(self) -> Iterator[None]:
        """Processes started inside inherit the peer CPU."""
        if self.mode != "split":
            yield
            return
        os.sched_setaffinity(0, {self.peer_cpu})
        try:
            yield
        finally:
            os.sched_setaffinity(0, {self.host_cpu})

    def describe(self) -> str:
        if self.mode == "same":
            return f"same: host and every peer process pinned to CPU {self.host_cpu}"
        if self.mode == "split":
            return f"split: host on CPU {self.host_cpu}, every peer process on CPU {self.peer_cpu}"
        return "none: the OS places processes"
