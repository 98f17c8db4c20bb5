"""How a device's timings should be read and shown: cycles on silicon, instructions on an emulator
that counts them, and a warning wherever a figure comes from an emulator.

A device times its work with its own timer and reports seconds. On a physical board that is real
time, also shown as core cycles (seconds x the record's `clock_hz`). Under QEMU it is not: with
`-icount shift=N` the guest clock advances 2^N ns per instruction, so a "time" is an instruction
count and is shown as one (the arithmetic and the note are the floor's: project_api.emulator_clock);
without -icount it follows the host's clock and means nothing for a real board. The board comes from
the project's record, resolved once when the project was generated.

`utvm run` uses this for every figure it prints; nothing here imports TVM or numpy.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, Mapping, Optional

from utvm.project_api.emulator_clock import emulator_clock
from utvm.project_api.record import read_record

CYCLES, INSTRUCTIONS = "cycles", "instructions"
_STATS = ("mean", "median", "std", "min", "max")


@dataclasses.dataclass(frozen=True)
class DeviceClock:
    """What a device second means on one board, for one run (with its options)."""

    board: str
    emulated: bool
    unit: Optional[str]  # CYCLES | INSTRUCTIONS | None (seconds only)
    per_second: Optional[float]  # units per device second
    note: Optional[str]  # said wherever timings are shown; set for every emulated board

    def count(self, seconds: float) -> Optional[int]:
        """The cycles or instructions in `seconds` of device time (None when the unit is seconds)."""
        return None if self.per_second is None else round(seconds * self.per_second)

    def describe(self, seconds: float) -> str:
        """One figure as the user should read it, e.g. '32,334,800 instructions'."""
        if self.unit is None:
            clock = "emulator clock, not board time" if self.emulated else "device timer"
            return f"{seconds * 1e3:.4f} ms ({clock})"
        text = f"{self.count(seconds):,} {self.unit}"
        return text if self.emulated else f"{text} ({seconds * 1e3:.4f} ms)"

    def counts_of(self, result: Any) -> Dict[str, int]:
        """{mean, median, std, min, max} of a benchmark result (seconds) in the unit; {} without one."""
        if self.unit is None:
            return {}
        return {name: self.count(getattr(result, name)) for name in _STATS if hasattr(result, name)}

    def benchmark_summary(self, result: Any) -> str:
        """A benchmark result (seconds per call: mean, median, std, min, max; repeat, number)."""
        if self.unit is None:
            text = result.summary()
            return f"{text} [{self.note}]" if self.note else text
        counts = self.counts_of(result)
        stats = ", ".join(f"{name} {counts[name]:,}" for name in _STATS)
        return f"{self.unit} per run: {stats} ({result.repeat} x {result.number} calls)"

    def profile_table(self, report: Any) -> str:
        """A profile report's rows (index, name, mean seconds, share) as a table in the unit."""
        if self.unit is None:
            return report.table()
        width = max([len(r.name) for r in report.rows] + [6])
        head = f"mean {self.unit}"
        cells = max(len(head), len(f"{self.count(report.total):,}"))
        lines = [f"{'#':>4}  {'kernel':<{width}}  {head:>{cells}}  {'share':>6}"]
        for r in report.rows:
            count = self.count(r.mean)
            lines.append(f"{r.index:>4}  {r.name:<{width}}  {count:>{cells},}  {r.share * 100:>5.1f}%")
        lines.append(f"{'':>4}  {'total':<{width}}  {self.count(report.total):>{cells},}  {100.0:>5.1f}%")
        return "\n".join(lines)

    def to_json(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)


def device_clock(board: Optional[Mapping[str, Any]], options: Optional[Mapping[str, Any]] = None,
                 name: Optional[str] = None) -> DeviceClock:
    """The clock of a board record (as a project records it) under a run's options. Without a
    record (a foreign template's project) the figures are plain device seconds with no note."""
    if not board:
        return DeviceClock(name or "unknown", emulated=False, unit=None, per_second=None, note=None)
    name = str(board.get("name") or name)
    emulated = emulator_clock(board, options)
    if emulated is None:
        hz = board.get("clock_hz") if board.get("kind") == "physical" else None
        return DeviceClock(name, emulated=False, unit=CYCLES if hz else None, per_second=hz, note=None)
    unit = INSTRUCTIONS if emulated.counts_instructions else None
    return DeviceClock(name, emulated=True, unit=unit, per_second=emulated.instructions_per_second,
                       note=emulated.note())


def project_device_clock(project_dir, options: Optional[Mapping[str, Any]] = None,
                         name: Optional[str] = None) -> DeviceClock:
    """device_clock of the board a generated project recorded, under the options it was made with
    overridden by `options` (e.g. `utvm run -o qemu_icount=false`). ``name`` is what the device
    calls itself, for projects without a record."""
    record = read_record(project_dir)
    merged = dict(record.options) if record else {}
    merged.update(options or {})
    return device_clock(record.board if record else None, merged, name)
