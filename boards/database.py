"""Load and check the board database (boards.json) into immutable `Board` records.

The database is read with the floor's reader (utvm.project_api.board_records), which templates
use too; this module adds the schema check that every record must pass, and typed records.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import functools
import re
from pathlib import Path
from typing import Any, Optional

from utvm.project_api.board_records import DATABASE_NAME, load_board_records
from utvm.project_api.errors import UserError

DATABASE_PATH = Path(__file__).with_name(DATABASE_NAME)

PLATFORMS = ("baremetal", "zephyr", "arduino", "jetson", "host")
KINDS = ("emulated", "physical", "host")
_VID_PID = re.compile(r"^[0-9a-f]{4}:[0-9a-f]{4}$")


@dataclasses.dataclass(frozen=True)
class Board:
    """One board's facts. Lists are tuples and every call to `all_boards` builds fresh records,
    so callers may keep or edit what they get without touching the shared database."""

    name: str
    title: str
    kind: str  # "emulated" | "physical" | "host"
    platforms: tuple
    cpu: Optional[str]
    clock_hz: Optional[int]
    target: dict  # a TVM target dict, e.g. {"kind": "c", "mcpu": "cortex-m4"}
    fpu: Optional[str]  # GCC -mfpu name
    float_abi: Optional[str]  # GCC -mfloat-abi
    ram_bytes: Optional[int]
    flash_bytes: Optional[int]
    memory: Optional[dict]  # {"flash": {"origin", "length"}, "ram": {...}} for linker scripts
    usb_vid_pid: tuple  # "vvvv:pppp", lower-case hex
    baud: Optional[int]
    # The tools that can load an image, most preferred first, each with its own arguments
    # ({"openocd": {"configs": [...]}, "pyocd": {"target": ...}}), as west's runners take theirs.
    runners: dict
    emulator: Optional[dict]  # {"system", "machine", "cpu"}
    twin: Optional[str]
    notes: Optional[str] = None
    # Bare-metal UART driver: {"driver", "base", "rx_irq"}; STM32 USARTs add "bus", "rcc_bit", the
    # "tx" / "rx" pins ("PA2") and their alternate function "af".
    uart: Optional[dict] = None
    mcu: Optional[dict] = None  # the part: {"part", "irqs" (interrupt lines in its vector table)}
    # Bare-metal clock tree: {"driver", "hsi_hz", "rcc_modelled", "pll": {m, n, p, q, apb1_div,
    # apb2_div, flash_latency}}; with the PLL the core runs at clock_hz.
    clock: Optional[dict] = None
    zephyr_board: Optional[str] = None
    arduino_fqbn: Optional[str] = None
    gpu: Optional[dict] = None  # {"kind": "cuda", "arch", "cores", "tvm_tag"}: the TVM target tag of the GPU
    # Compiler flags for the CPU when GCC has no -mcpu of the `cpu` name (Carmel: -march=armv8.2-a+fp16).
    cc_flags: Optional[tuple] = None

    @property
    def flash_runners(self) -> tuple:
        """The names of the runners that can flash the board, most preferred first."""
        return tuple(self.runners)

    @property
    def flash_runner(self) -> Optional[str]:
        """The preferred flash runner, or None when the board needs none (host)."""
        return self.flash_runners[0] if self.flash_runners else None

    @property
    def is_emulated(self) -> bool:
        return self.kind == "emulated"

    def how_it_runs(self) -> str:
        """One line for `utvm boards`: the emulator command and/or the physical flash runner."""
        ways = []
        if self.kind == "physical":
            ways.append(f"physical ({' | '.join(self.flash_runners)})" if self.flash_runners else "physical")
        if self.emulator:
            machine = f" -M {self.emulator['machine']}" if self.emulator.get("machine") else ""
            if not machine:  # simavr names the chip with -m; QEMU's -cpu otherwise
                mcu = self.emulator.get("mcu")
                machine = f" -m {mcu}" if mcu else f" -cpu {self.emulator['cpu']}"
            ways.append(f"{self.emulator['system']}{machine}")
        if self.kind == "host":
            ways.append("native process")
        return "; ".join(ways)

    def to_dict(self) -> dict:
        """A JSON-ready copy (tuples become lists), as templates resolve it and projects keep it."""
        out = dataclasses.asdict(self)
        for key, value in out.items():
            if isinstance(value, tuple):
                out[key] = list(value)
        return out


_FIELDS = {f.name: f for f in dataclasses.fields(Board)}
_REQUIRED = [f.name for f in dataclasses.fields(Board)
             if f.default is dataclasses.MISSING and f.name != "name"]
_TUPLE_FIELDS = ("platforms", "usb_vid_pid", "cc_flags")


def _problems(name: str, rec: Any, names: set) -> list:
    """Everything wrong with one raw record, as sentences (empty when it is sound)."""
    if not isinstance(rec, dict):
        return [f"{name}: a record must be a mapping, got {type(rec).__name__}"]
    out = [f"{name}: unknown field {k!r}" for k in rec if k not in _FIELDS or k == "name"]
    out += [f"{name}: missing field {k!r}" for k in _REQUIRED if k not in rec]
    if out:
        return out
    if rec["kind"] not in KINDS:
        out.append(f"{name}: kind {rec['kind']!r} is not one of {KINDS}")
    out += [f"{name}: unknown platform {p!r}" for p in rec["platforms"] if p not in PLATFORMS]
    out += [f"{name}: bad USB id {v!r} (want 'vvvv:pppp', lower-case hex)"
            for v in rec["usb_vid_pid"] if not _VID_PID.match(str(v))]
    runners = rec["runners"]
    if not isinstance(runners, dict) or not all(isinstance(a, dict) for a in runners.values()):
        out.append(f"{name}: runners must map each runner's name to its arguments (an object)")
    if not isinstance(rec["target"], dict) or "kind" not in rec["target"]:
        out.append(f"{name}: target must be a TVM target dict with a 'kind'")
    if rec["fpu"] and rec["float_abi"] not in ("hard", "softfp"):
        out.append(f"{name}: an FPU ({rec['fpu']}) needs float_abi hard or softfp")
    for path in (("memory", "flash", "origin"), ("memory", "ram", "origin"), ("memory", "ccm", "origin"),
                 ("uart", "base")):
        node = rec
        for key in path:
            node = node.get(key) if isinstance(node, dict) else None
        if node is not None and not isinstance(node, int):
            out.append(f"{name}: {'.'.join(path)} must be an address (\"0x...\")")
    for key in ("ram_bytes", "flash_bytes", "clock_hz", "baud"):
        if rec[key] is not None and (not isinstance(rec[key], int) or rec[key] <= 0):
            out.append(f"{name}: {key} must be a positive integer or null")
    memory = rec["memory"]
    if memory is not None:
        for region, size_key in (("flash", "flash_bytes"), ("ram", "ram_bytes")):
            if memory.get(region, {}).get("length") != rec[size_key]:
                out.append(f"{name}: memory.{region}.length must equal {size_key}")
    if "baremetal" in rec["platforms"] and (memory is None or not rec.get("uart")):
        out.append(f"{name}: a baremetal board needs a memory map and a uart")
    if rec.get("clock") is not None or rec.get("mcu") is not None:
        out += _stm32_problems(name, rec)
    if rec["emulator"] is not None and not rec["emulator"].get("system"):
        out.append(f"{name}: emulator needs a 'system' (the emulator binary)")
    if rec["kind"] == "emulated" and rec["emulator"] is None:
        out.append(f"{name}: an emulated board needs an emulator")
    twin = rec["twin"]
    if twin is not None and twin not in names:
        out.append(f"{name}: twin {twin!r} is not in the database")
    return out


_PIN = re.compile(r"^P[A-K]([0-9]|1[0-5])$")
_APB_DIVS = (1, 2, 4, 8, 16)


def _is_count(value: Any, low: int = 0, high: Optional[int] = None) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= low and (
        high is None or value <= high)


def _stm32_problems(name: str, rec: dict) -> list:
    """The STM32F4 fields the bare-metal port builds its clock, USART and vector table from."""
    out = []
    mcu, clock, uart = rec.get("mcu") or {}, rec.get("clock") or {}, rec.get("uart") or {}
    if not (mcu.get("part") and _is_count(mcu.get("irqs"), 1, 496)):
        out.append(f"{name}: mcu needs a 'part' and 'irqs' (1 to 496 interrupt lines)")
    elif _is_count(uart.get("rx_irq")) and uart["rx_irq"] >= mcu["irqs"]:
        out.append(f"{name}: uart.rx_irq {uart['rx_irq']} is past the part's {mcu['irqs']} interrupts")
    if clock.get("driver") != "stm32f4":
        return out + [f"{name}: clock.driver must be 'stm32f4' (the only clock driver)"]
    pll = clock.get("pll") or {}
    counts = {"m": (2, 63), "n": (50, 432), "q": (2, 15), "flash_latency": (0, 15)}
    if not _is_count(clock.get("hsi_hz"), 1) or not isinstance(clock.get("rcc_modelled"), bool):
        out.append(f"{name}: clock needs 'hsi_hz' and 'rcc_modelled' (false under an emulator without RCC)")
    elif not all(_is_count(pll.get(k), lo, hi) for k, (lo, hi) in counts.items()) \
            or pll.get("p") not in (2, 4, 6, 8) or pll.get("apb1_div") not in _APB_DIVS \
            or pll.get("apb2_div") not in _APB_DIVS:
        out.append(f"{name}: clock.pll needs m (2-63), n (50-432), p (2, 4, 6 or 8), q (2-15), "
                   f"apb1_div and apb2_div ({', '.join(map(str, _APB_DIVS))}) and flash_latency")
    elif clock["hsi_hz"] // pll["m"] * pll["n"] // pll["p"] != rec["clock_hz"]:
        out.append(f"{name}: clock_hz {rec['clock_hz']} is not what clock.pll makes "
                   f"({clock['hsi_hz']} / {pll['m']} x {pll['n']} / {pll['p']})")
    if uart.get("driver") != "stm32f4_usart" or uart.get("bus") not in ("apb1", "apb2") \
            or not _is_count(uart.get("rcc_bit"), 0, 31) or not _is_count(uart.get("af"), 0, 15) \
            or not all(_PIN.match(str(uart.get(k))) for k in ("tx", "rx")):
        out.append(f"{name}: an STM32 uart needs driver 'stm32f4_usart', bus (apb1 or apb2), rcc_bit "
                   "(its enable bit), tx and rx pins ('PA2') and af (0-15)")
    return out


def _twin_problems(records: dict) -> list:
    """Twins pair a physical board with an emulated one; an emulated board's twin points back."""
    out = []
    for name, rec in records.items():
        twin = rec["twin"]
        if twin is None:
            continue
        other = records[twin]
        if {rec["kind"], other["kind"]} != {"emulated", "physical"}:
            out.append(f"{name}: twin {twin} must pair a physical board with an emulated one")
        elif rec["kind"] == "emulated" and other["twin"] != name:
            out.append(f"{name}: its twin {twin} must name {name} as its twin")
    return out


def check_database(data: dict, source: str = DATABASE_NAME) -> dict:
    """Check records as the floor's reader returns them; returns them. Raises UserError listing
    every problem found, so a bad edit to boards.json is reported in one go."""
    if not isinstance(data, dict) or not data:
        raise UserError(f"{source} must map board names to records")
    data = {name: {k: v for k, v in rec.items() if k != "name"} for name, rec in data.items()}
    problems = []
    for name, rec in data.items():
        problems += _problems(name, rec, set(data))
    if not problems:
        problems = _twin_problems(data)
    if problems:
        raise UserError(f"{source} has {len(problems)} problem(s):\n  " + "\n  ".join(problems),
                        hint="fix the records named above; docs/boards.md describes every field")
    return data


@functools.cache
def _load(path: str) -> dict:
    return check_database(load_board_records(path), source=path)


def _make(name: str, rec: dict) -> Board:
    fields = copy.deepcopy(rec)
    for key in _TUPLE_FIELDS:
        if fields.get(key) is not None:
            fields[key] = tuple(fields[key])
    return Board(name=name, **fields)


def all_boards(platform: Optional[str] = None) -> list:
    """Every board in the database, in file order; only those a platform's template can target
    when `platform` is given ("baremetal", "zephyr", "arduino", "jetson", "host")."""
    if platform is not None and platform not in PLATFORMS:
        raise UserError(f"unknown platform {platform!r}", hint=f"choose one of: {', '.join(PLATFORMS)}")
    boards = [_make(n, r) for n, r in _load(str(DATABASE_PATH)).items()]
    return [b for b in boards if platform is None or platform in b.platforms]


def board_names(platform: Optional[str] = None) -> list:
    """Names of `all_boards(platform)`, e.g. for a template's `board` option choices."""
    return [b.name for b in all_boards(platform)]


def get_board(name: str) -> Board:
    """The board called `name`; an unknown name raises UserError naming the closest matches."""
    records = _load(str(DATABASE_PATH))
    if name in records:
        return _make(name, records[name])
    close = difflib.get_close_matches(name, list(records), n=4, cutoff=0.5)
    hint = f"did you mean: {', '.join(close)}?" if close else "run `utvm boards` to list them"
    raise UserError(f"unknown board {name!r}", hint=hint)


def twin_of(board: Board) -> Optional[Board]:
    """The emulated stand-in of a physical board (or the physical board an emulated one models)."""
    return get_board(board.twin) if board.twin else None
