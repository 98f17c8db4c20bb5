"""How device timings are shown (utvm.host_driven.device_clock over the floor's emulator_clock):
instruction counts under QEMU -icount, cycles on silicon, and the emulator caveat wherever an
emulator's figure appears. The board is the record a project keeps. The figures of a real run
under QEMU are checked through `utvm run` in test_baremetal_models.py.
"""

from __future__ import annotations

import dataclasses
import json

from utvm.host_driven.device_clock import device_clock, project_device_clock
from utvm.project_api.board_records import resolve_board
from utvm.project_api.record import ProjectRecord, write_record


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
    clock = device_clock(resolve_board("mps2_an386"), {"qemu_icount": True})
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
    # "false" as `-o qemu_icount=false` gives it.
    assert device_clock(resolve_board("mps2_an385"), {"qemu_icount": "false"}).unit is None
    clock = device_clock(resolve_board("mps2_an385"), {"qemu_icount": False})
    assert (clock.emulated, clock.unit, clock.count(1.0)) == (True, None, None)
    assert "follow the host's clock" in clock.note and "not real-board timings" in clock.note
    assert clock.describe(0.002) == "2.0000 ms (emulator clock, not board time)"
    assert clock.benchmark_summary(_Bench(0.002, 0.002, 0, 0.002, 0.002)).endswith(f"[{clock.note}]")


def test_physical_boards_count_core_cycles_and_need_no_caveat():
    clock = device_clock(resolve_board("nucleo_f746zg"))  # 216 MHz Cortex-M7
    assert (clock.emulated, clock.unit, clock.note) == (False, "cycles", None)
    assert clock.describe(0.001) == "216,000 cycles (1.0000 ms)"


def test_boards_the_database_does_not_know_keep_seconds():
    clock = device_clock(None, name="my_custom_board")
    assert (clock.unit, clock.note) == (None, None)
    assert clock.describe(0.5) == "500.0000 ms (device timer)"


def test_a_projects_record_gives_the_board_and_the_options(tmp_path):
    write_record(tmp_path, ProjectRecord("baremetal", options={"qemu_icount": False},
                                         board=resolve_board("mps2_an386")))
    assert json.loads((tmp_path / "utvm-project.json").read_text())["board"]["name"] == "mps2_an386"
    clock = project_device_clock(tmp_path)
    assert (clock.board, clock.emulated, clock.unit) == ("mps2_an386", True, None)
    assert project_device_clock(tmp_path, {"qemu_icount": True}).unit == "instructions"
    # A project without a record (a foreign template's) keeps seconds, under the device's own name.
    clock = project_device_clock(tmp_path / "missing", name="their_board")
    assert (clock.board, clock.unit, clock.note) == ("their_board", None, None)
