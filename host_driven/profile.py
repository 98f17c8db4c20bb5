"""Per-kernel device time: each kernel of the plan timed on its own by the device's clock.

Kernels are timed in plan order, starting from the inputs, so each one runs on the real
activations its predecessors produced (their timed calls leave their outputs in the arena).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Dict, List, Optional, Sequence

from .benchmark import BenchmarkResult, timed
from .device import DeviceClient
from .layer_names import layers_label


@dataclasses.dataclass(frozen=True)
class ProfileRow:
    """One kernel: its plan index, its name as in the archive, and its device time."""

    index: int
    name: str
    mean: float  # seconds per call
    median: float
    min: float
    share: float  # of the sum of the kernels' means, 0..1
    layers: List[Dict[str, Any]] = dataclasses.field(default_factory=list)  # source layers it computes

    @property
    def layer_label(self) -> str:
        return layers_label(self.layers)

    def to_json(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class ProfileReport:
    """Rows in plan order; ``total`` is the sum of the kernels' mean times, in seconds.

    ``total_min`` sums the kernels' fastest measurements: compared with a benchmark's ``min``
    it is the least disturbed by other work on the machine.
    """

    rows: List[ProfileRow]
    total: float
    number: int
    repeat: int

    @property
    def total_min(self) -> float:
        return sum(r.min for r in self.rows)

    def to_json(self) -> Dict[str, Any]:
        return {
            "rows": [r.to_json() for r in self.rows],
            "total": self.total,
            "total_min": self.total_min,
            "number": self.number,
            "repeat": self.repeat,
        }

    def table(self) -> str:
        """The rows as an aligned text table, slowest kernels easy to spot by their share."""
        width = max([len(r.name) for r in self.rows] + [6])
        lines = [f"{'#':>4}  {'kernel':<{width}}  {'mean ms':>10}  {'share':>6}  layers"]
        for r in self.rows:
            lines.append(f"{r.index:>4}  {r.name:<{width}}  {r.mean * 1e3:>10.4f}  {r.share * 100:>5.1f}%  "
                         f"{r.layer_label}".rstrip())
        lines.append(f"{'':>4}  {'total':<{width}}  {self.total * 1e3:>10.4f}  {100.0:>5.1f}%")
        return "\n".join(lines)


def profile_kernels(
    device: DeviceClient,
    kernel_names: Sequence[str],
    number: int = 5,
    repeat: int = 5,
    warmup: int = 1,
    on_kernel: Optional[Callable[[int, BenchmarkResult], None]] = None,
    layers: Optional[Sequence[List[Dict[str, Any]]]] = None,
) -> ProfileReport:
    """Time every kernel on its own, in plan order; the model's inputs must be in the arena.

    ``layers[i]``, when given, lists the source model's layers kernel i computes.
    """
    results: List[BenchmarkResult] = []
    for index in range(len(kernel_names)):
        result = timed(device, kernel=index, number=number, repeat=repeat, warmup=warmup)
        results.append(result)
        if on_kernel is not None:
            on_kernel(index, result)
    total = sum(r.mean for r in results)
    rows = [
        ProfileRow(
            index=i,
            name=kernel_names[i],
            mean=r.mean,
            median=r.median,
            min=r.min,
            share=r.mean / total if total else 0.0,
            layers=list(layers[i]) if layers else [],
        )
        for i, r in enumerate(results)
    ]
    return ProfileReport(rows=rows, total=total, number=number, repeat=repeat)
