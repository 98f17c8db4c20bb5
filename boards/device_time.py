"""How a device's timings should be read and shown: cycles on silicon, instructions on an emulator
that counts them, and a warning wherever a figure comes from an emulator.

A device times its work with its own timer and reports seconds. On a physical board that is real
time, also shown as core cycles (seconds x the record's `clock_hz`). Under QEMU it is not: with
`-icount shift=N` (the record's `emulator.icount_shift`, on unless the project option `qemu_icount`
is false) the guest clock advances 2^N ns per instruction, so a "time" is an instruction count and
is shown as one; without -icount it follows the host's clock and means nothing for a real board.

`utvm run` uses this for every figure it prints; nothing here imports TVM or numpy.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, Mapping, Optional

from utvm.project_api.errors import UserError

from .database import Board, get_board

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


def _icount_shift(board: Board, options: Mapping[str, Any]) -> Optional[int]:
    from utvm.project_api.options import coerce_value
    from utvm.project_api.server import ProjectOption

    shift = (board.emulator or {}).get("icount_shift")
    # `utvm run -o qemu_icount=false` hands the option over as text.
    enabled = coerce_value(ProjectOption("qemu_icount", type="bool"), options.get("qemu_icount", True))
    return None if shift is None or not enabled else int(shift)


def device_clock(board: str, options: Optional[Mapping[str, Any]] = None) -> DeviceClock:
    """The clock of `board` (a name from the database) under a project's options. A board the
    database does not know (a custom template's) gets plain device seconds and no note."""
    options = options or {}
    try:
        record = get_board(board)
    except UserError:
        return DeviceClock(board, emulated=False, unit=None, per_second=None, note=None)
    if not record.is_emulated:
        hz = record.clock_hz if record.kind == "physical" else None
        return DeviceClock(board, emulated=False, unit=CYCLES if hz else None, per_second=hz, note=None)
    system = (record.emulator or {}).get("system", "an emulator")
    shift = _icount_shift(record, options)
    if shift is None:
        note = (f"{board} runs under {system}: timings follow the host's clock; "
                "they are not real-board timings")
        return DeviceClock(board, emulated=True, unit=None, per_second=None, note=note)
    note = (f"{board} runs under {system} -icount shift={shift}: figures are instruction counts, "
            "not cycles or times of a real board")
    return DeviceClock(board, emulated=True, unit=INSTRUCTIONS, per_second=1e9 / (1 << shift), note=note)


def project_device_clock(project_dir, board: str, options: Optional[Mapping[str, Any]] = None) -> DeviceClock:
    """device_clock with the options a generated project was made with, overridden by `options`
    (e.g. `utvm run -o qemu_icount=false`)."""
    from utvm.project_api.server import load_project_file

    saved = dict((load_project_file(project_dir) or {}).get("options") or {})
    saved.update(options or {})
    return device_clock(board, saved)
