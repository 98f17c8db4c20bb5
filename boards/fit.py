"""Does a model fit a board? RAM and flash needs, by consumer, checked against the board record."""

from __future__ import annotations

import dataclasses
from typing import Dict, Optional

from utvm.project_api.errors import UserError

from .database import Board


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


def check_fit(board: Board, footprint: Footprint) -> None:
    """Raise UserError when the footprint exceeds the board's RAM or flash, with both numbers and
    the largest consumers. Sizes the board record leaves null are not checked."""
    problems = []
    for what, need, have, consumers in (
        ("RAM", footprint.ram_bytes, board.ram_bytes, footprint.ram),
        ("flash", footprint.flash_bytes, board.flash_bytes, footprint.flash),
    ):
        if have is not None and need > have:
            problems.append(
                f"needs {format_bytes(need)} ({need} bytes) of {what}, the board has {format_bytes(have)} "
                f"({have} bytes); largest: {_largest(consumers)}"
            )
    if problems:
        twin_hint = "" if board.kind == "emulated" else " or a board with more memory (`utvm boards`)"
        raise UserError(
            f"the model does not fit {board.name}: " + "; and ".join(problems),
            hint=f"use a smaller or more quantized model{twin_hint}",
        )
