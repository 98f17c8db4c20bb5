"""Device-timed benchmarks: the device's own clock times the calls, so the link's latency and the
host's scheduling never enter the figures.
"""

from __future__ import annotations

import dataclasses
import statistics
from typing import Any, Callable, Dict, List, Optional, Tuple

from .device import DeviceClient

# Extra seconds allowed for a TIME reply on top of the run time estimated from a warm-up call.
TIME_REPLY_MARGIN_SEC = 10.0
# Device time one TIME request is planned to take at most: well inside the runtime's own limit
# (UTVM_TIME_LIMIT_MS, 60 s by default), so a long benchmark goes as several requests.
TIME_REQUEST_SEC = 20.0


@dataclasses.dataclass(frozen=True)
class BenchmarkResult:
    """Seconds per call, from ``repeat`` measurements of ``number`` back-to-back calls each.

    ``raw`` holds each repeat's mean seconds per call; ``ticks`` the device's tick counts.
    """

    mean: float
    median: float
    std: float
    min: float
    max: float
    raw: Tuple[float, ...]
    ticks: Tuple[int, ...]
    number: int
    repeat: int
    warmup: int
    timer_hz: int

    @classmethod
    def from_ticks(cls, ticks: List[int], number: int, warmup: int, timer_hz: int) -> BenchmarkResult:
        per_call = [t / number / timer_hz for t in ticks]
        return cls(
            mean=statistics.fmean(per_call),
            median=statistics.median(per_call),
            std=statistics.pstdev(per_call),
            min=min(per_call),
            max=max(per_call),
            raw=tuple(per_call),
            ticks=tuple(ticks),
            number=number,
            repeat=len(ticks),
            warmup=warmup,
            timer_hz=timer_hz,
        )

    def to_json(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    def summary(self) -> str:
        ms = 1e3
        return (
            f"mean {self.mean * ms:.4f} ms, median {self.median * ms:.4f} ms, std {self.std * ms:.4f} ms, "
            f"min {self.min * ms:.4f} ms, max {self.max * ms:.4f} ms "
            f"({self.repeat} x {self.number} calls, device timer {self.timer_hz} Hz)"
        )


def _check_counts(number: int, repeat: int, warmup: int) -> None:
    if number < 1 or repeat < 1 or warmup < 0:
        raise ValueError(
            f"number and repeat must be at least 1 and warmup at least 0, "
            f"got number={number} repeat={repeat} warmup={warmup}"
        )


def timed(
    device: DeviceClient,
    kernel: Optional[int] = None,
    number: int = 10,
    repeat: int = 5,
    warmup: int = 1,
    timeout: Optional[float] = None,
) -> BenchmarkResult:
    """Time the whole model (``kernel`` None) or one kernel on the device.

    One warm-up call (at least) runs first; it also tells how long the timed batch will take, so
    the reply's deadline fits slow devices without making fast ones wait long on a dead link.
    """
    _check_counts(number, repeat, warmup)
    hz = device.timer_hz
    probe_ticks = device.time(kernel=kernel, number=max(1, warmup), repeat=1, timeout=timeout)[0]
    per_call = probe_ticks / max(1, warmup) / hz
    # Repeats per request: each request's device time stays within TIME_REQUEST_SEC when it can.
    group = max(1, min(repeat, int(TIME_REQUEST_SEC / max(per_call * number, 1e-9))))
    if timeout is None:
        timeout = 2.0 * per_call * number * group + TIME_REPLY_MARGIN_SEC
    ticks: List[int] = []
    while len(ticks) < repeat:
        ticks += device.time(kernel=kernel, number=number, repeat=min(group, repeat - len(ticks)),
                             timeout=timeout)
    return BenchmarkResult.from_ticks(ticks, number, warmup, hz)


def timed_one_by_one(
    device: DeviceClient,
    before_each: Callable[[], None],
    number: int = 10,
    repeat: int = 5,
    warmup: int = 1,
    timeout: Optional[float] = None,
) -> BenchmarkResult:
    """Time the whole model one run at a time, calling ``before_each`` (which writes the inputs
    again) before every run: for plans whose runs overwrite their inputs. Each of ``repeat``
    measurements sums ``number`` single timed runs."""
    _check_counts(number, repeat, warmup)
    for _ in range(warmup):
        before_each()
        device.time(kernel=None, number=1, repeat=1, timeout=timeout)
    ticks = []
    for _ in range(repeat):
        total = 0
        for _ in range(number):
            before_each()
            total += device.time(kernel=None, number=1, repeat=1, timeout=timeout)[0]
        ticks.append(total)
    return BenchmarkResult.from_ticks(ticks, number, warmup, device.timer_hz)
