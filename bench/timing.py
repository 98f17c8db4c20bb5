"""Timing helpers shared by every benchmark: medians of repeated batches, peers interleaved.

Interleaving (one batch of each peer per round) spreads any background load on the machine over
every peer alike, so the ratios stay meaningful even when the absolute figures wobble.
"""

from __future__ import annotations

import statistics
import time
from typing import Callable, Dict

MIB = 1 << 20


def per_call_seconds(fn: Callable[[], object], *, number: int, repeat: int, warmup: int = 3) -> float:
    """Median over `repeat` batches of the mean time of one call in a batch of `number` calls."""
    return interleaved({"only": fn}, number=number, repeat=repeat, warmup=warmup)["only"]


def interleaved(fns: Dict[str, Callable[[], object]], *, number: int, repeat: int,
                warmup: int = 3) -> Dict[str, float]:
    """Per-call seconds of each function: `repeat` rounds, each timing a batch of every function."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    batches: Dict[str, list] = {name: [] for name in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            start = time.perf_counter()
            for _ in range(number):
                fn()
            batches[name].append((time.perf_counter() - start) / number)
    return {name: statistics.median(times) for name, times in batches.items()}


def throughput_mib_s(transfer: Callable[[], object], nbytes: int, *, repeat: int) -> float:
    """Median throughput in MiB/s of `repeat` runs of `transfer`, which moves `nbytes` bytes."""
    return nbytes / MIB / per_call_seconds(transfer, number=1, repeat=repeat, warmup=1)
