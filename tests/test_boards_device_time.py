"""How device timings are shown (utvm.boards.device_time): instruction counts under QEMU -icount,
cycles on silicon, and the emulator caveat wherever an emulator's figure appears. The figures of a
real run under QEMU are checked through `utvm run` in test_baremetal_models.py.
"""

from __future__ import annotations

import dataclasses
import json

from utvm.boards.device_time import device_clock, project_device_clock


@dataclasses.dataclass
class _Bench:  # the fields `utvm run` reads from host_driven's BenchmarkResult
    mean: float
    median: float
    std: float
    min: float
    max: float
    repeat: int = 2
    number: int = 1

    def summary(self) -> str:
        return f"mean {self.mean * 1e3:.4f} ms"


@dataclasses.dataclass
class _Row:
    index: int
    name: str
    mean: float
    share: float


@dataclasses.dataclass
class _Profile:
    rows: list
    total: float

    def table(self) -> str:
        return "ms table"


def test_icount_makes_figures_instruction_counts_with_the_caveat():
    clock = device_clock("mps2_an386", {"qemu_icount": True})
    assert (clock.emulated, clock.unit) == (True, "instructions")
    assert "-icount shift=0" in clock.note and "not cycles or times of a real board" in clock.note
    assert clock.describe(0.0323348) == "32,334,800 instructions"
    summary = clock.benchmark_summary(_Bench(0.0019216, 0.0019216, 1e-8, 0.0019215, 0.0019217))
    assert summary == ("instructions per run: mean 1,921,600, median 1,921,600, std 10, min 1,921,500, "
                       "max 1,921,700 (2 x 1 calls)")
    rows = [_Row(0, "conv", 0.0015, 0.75), _Row(1, "dense", 0.0005, 0.25)]
    table = clock.profile_table(_Profile(rows, 0.002))
    assert "mean instructions" in table and "1,500,000" in table and "2,000,000" in table
    assert "ms" not in table


def test_without_icount_the_emulator_clock_is_shown_as_such():
    assert device_clock("mps2_an385", {"qemu_icount": "false"}).unit is None  # as `-o` gives it
    clock = device_clock("mps2_an385", {"qemu_icount": False})
    assert (clock.emulated, clock.unit, clock.count(1.0)) == (True, None, None)
    assert "follow the host's clock" in clock.note and "not real-board timings" in clock.note
    assert clock.describe(0.002) == "2.0000 ms (emulator clock, not board time)"
    assert clock.benchmark_summary(_Bench(0.002, 0.002, 0, 0.002, 0.002)).endswith(f"[{clock.note}]")


def test_physical_boards_count_core_cycles_and_need_no_caveat():
    clock = device_clock("nucleo_f746zg")  # 216 MHz Cortex-M7
    assert (clock.emulated, clock.unit, clock.note) == (False, "cycles", None)
    assert clock.describe(0.001) == "216,000 cycles (1.0000 ms)"


def test_boards_the_database_does_not_know_keep_seconds():
    clock = device_clock("my_custom_board")
    assert (clock.unit, clock.note) == (None, None)
    assert clock.describe(0.5) == "500.0000 ms (device timer)"


def test_a_projects_saved_options_are_read_and_can_be_overridden(tmp_path):
    (tmp_path / "utvm-project.json").write_text(json.dumps({"options": {"qemu_icount": False}}))
    assert project_device_clock(tmp_path, "mps2_an386").unit is None
    assert project_device_clock(tmp_path, "mps2_an386", {"qemu_icount": True}).unit == "instructions"
    assert project_device_clock(tmp_path / "missing", "mps2_an386").unit == "instructions"
