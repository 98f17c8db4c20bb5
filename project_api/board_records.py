"""Board records for templates: read the board database, resolve a board by name, check a model's fit.

The database is ``boards/boards.json`` beside this package (the ``utvm.boards`` package validates
it, lists it and documents it; see docs/boards.md). JSON, so that a template reads it with the
standard library alone, in the utvm package and when TVM's own client launches the template.
A template resolves its ``board`` option here once, at generate_project, and saves the record in
the project (record.ProjectRecord.board); every later step reads it from there, so a generated
project never needs the database.

A record is a plain dict: the database's fields plus ``name``, with addresses ("0x20000000")
turned into integers. Standard library only.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import pathlib
from typing import Any, Dict, List, Optional

from .errors import UserError

DATABASE_NAME = "boards.json"
# Fields holding addresses, written in the database as hex strings.
_ADDRESS_FIELDS = (("memory", "flash", "origin"), ("memory", "ram", "origin"), ("memory", "ccm", "origin"),
                   ("uart", "base"))


def default_database_path() -> pathlib.Path:
    """boards/boards.json beside this package (in the utvm package and in the repository)."""
    return pathlib.Path(__file__).resolve().parents[1] / "boards" / DATABASE_NAME


def _address(value: Any) -> Any:
    return int(value, 0) if isinstance(value, str) else value


def _normalise(name: str, raw: Dict[str, Any]) -> Dict[str, Any]:
    record = json.loads(json.dumps(raw))  # a deep copy the caller may edit
    record["name"] = name
    for path in _ADDRESS_FIELDS:
        node = record
        for key in path[:-1]:
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, dict) and path[-1] in node:
            try:
                node[path[-1]] = _address(node[path[-1]])
            except ValueError:
                pass  # the database check names it; see utvm.boards
    return record


def load_board_records(path=None) -> Dict[str, Dict[str, Any]]:
    """{name: record} of every board in the database, in file order."""
    path = pathlib.Path(path) if path else default_database_path()
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"the board database {path} is missing",
                        hint="a generated project keeps its board in utvm-project.json; a template needs "
                             "utvm's boards/boards.json") from None
    except ValueError as err:
        raise UserError(f"the board database {path} is not valid JSON: {err}") from None
    if not isinstance(raw, dict):
        raise UserError(f"the board database {path} must map board names to records")
    return {name: _normalise(name, rec) for name, rec in raw.items() if isinstance(rec, dict)}


def board_names(platform: Optional[str] = None, path=None) -> List[str]:
    """Names of the boards a platform's template can target (all boards when platform is None)."""
    return [name for name, rec in load_board_records(path).items()
            if platform is None or platform in (rec.get("platforms") or [])]


def resolve_board(name: str, platform: Optional[str] = None, path=None) -> Dict[str, Any]:
    """The record of board `name`, checked to be one `platform`'s template can target. An unknown
    name names the closest matches; a board of another platform names the platforms it has."""
    records = load_board_records(path)
    if name not in records:
        candidates = board_names(platform, path) if platform else list(records)
        close = difflib.get_close_matches(name, candidates, n=4, cutoff=0.5)
        hint = f"did you mean: {', '.join(close)}?" if close else (
            f"run `utvm boards{' --template ' + platform if platform else ''}` to list them")
        raise UserError(f"unknown board {name!r}", hint=hint)
    record = records[name]
    platforms = record.get("platforms") or []
    if platform is not None and platform not in platforms:
        raise UserError(f"board {name} is not a {platform} board "
                        f"(its templates: {', '.join(platforms) or 'none'})",
                        hint=f"choose one of: {', '.join(board_names(platform, path))}")
    return record


# ---- Does a model fit a board? ------------------------------------------------------------------


def format_bytes(n: Optional[int]) -> str:
    """1536 -> '1.5 KiB'; exact byte counts below 1 KiB; '-' for unknown."""
    if n is None:
        return "-"
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            value = n / size
            return f"{value:.0f} {unit}" if value == int(value) else f"{value:.1f} {unit}"
    return f"{n} B"


@dataclasses.dataclass
class Footprint:
    """What a build needs, split by consumer so an overflow can name the biggest ones."""

    ram: Dict[str, int]
    flash: Dict[str, int]

    @property
    def ram_bytes(self) -> int:
        return sum(self.ram.values())

    @property
    def flash_bytes(self) -> int:
        return sum(self.flash.values())


def footprint_from_metadata(metadata: dict, runtime_ram: int, runtime_flash: int,
                            kernel_code_bytes: int = 0) -> Footprint:
    """The footprint of a model from its MLF metadata.json, plus what the runtime and platform
    need (stack, buffers; runtime code). Consumers: the arena (inputs and outputs live in it), the
    workspace, the constants (the three largest by name, the rest together), and the code."""
    memory = metadata.get("memory") or {}
    ram = {"arena": int(memory.get("arena_bytes") or 0), "workspace": int(memory.get("workspace_bytes") or 0),
           "runtime and stack": runtime_ram}
    flash = {"runtime code": runtime_flash}
    if kernel_code_bytes:
        flash["kernel code"] = kernel_code_bytes
    constants = _named_constants(metadata)
    total_constants = int(memory.get("constant_bytes") or sum(constants.values()))
    # Name the largest constants; the rest are lumped so the totals stay exact.
    for name, size in sorted(constants.items(), key=lambda kv: -kv[1])[:3]:
        flash[f"constant {name}"] = size
    rest = total_constants - sum(v for k, v in flash.items() if k.startswith("constant "))
    if rest > 0:
        flash["other constants"] = rest
    return Footprint(ram={k: v for k, v in ram.items() if v}, flash={k: v for k, v in flash.items() if v})


def _named_constants(metadata: dict) -> Dict[str, int]:
    """{name: bytes} of the plan's constant tensors (they live in flash). A constant is also named
    by the first kernel that reads it, since importers often give weights generic names."""
    plan = metadata.get("plan") or {}
    readers: Dict[int, str] = {}
    for kernel in plan.get("kernels") or []:
        if isinstance(kernel, dict) and "name" in kernel:
            for arg in kernel.get("args") or []:
                readers.setdefault(arg, str(kernel["name"]))
    out = {}
    for t in plan.get("tensors") or []:
        if isinstance(t, dict) and t.get("storage") == "const" and "name" in t and "nbytes" in t:
            reader = readers.get(t.get("id"))
            out[f"{t['name']} (read by {reader})" if reader else str(t["name"])] = int(t["nbytes"])
    return out


def _largest(consumers: Dict[str, int], n: int = 3) -> str:
    top = sorted(consumers.items(), key=lambda kv: -kv[1])[:n]
    return ", ".join(f"{name} {format_bytes(size)}" for name, size in top)


def check_fit(board: Dict[str, Any], footprint: Footprint, ram_name: str = "RAM") -> None:
    """Raise UserError when the footprint exceeds the board's RAM or flash, with both numbers and
    the largest consumers. Sizes the board record leaves null are not checked. ram_name is what the
    message calls the RAM ("SRAM" on an AVR)."""
    problems = []
    for what, need, have, consumers in (
        (ram_name, footprint.ram_bytes, board.get("ram_bytes"), footprint.ram),
        ("flash", footprint.flash_bytes, board.get("flash_bytes"), footprint.flash),
    ):
        if have is not None and need > have:
            problems.append(
                f"needs {format_bytes(need)} ({need} bytes) of {what}, the board has {format_bytes(have)} "
                f"({have} bytes); largest: {_largest(consumers)}"
            )
    if problems:
        twin_hint = "" if board.get("kind") == "emulated" else " or a board with more memory (`utvm boards`)"
        raise UserError(
            f"the model does not fit {board.get('name')}: " + "; and ".join(problems),
            hint=f"use a smaller or more quantized model{twin_hint}",
        )
