"""What a build reports about its image: section sizes against the board, the largest symbols, the
flash and RAM of each part (runtime, platform, app, model, C library), and the device runtime's
flash without the model against its goal.

Standard library only: it runs in generated projects after `make`.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Tuple

from project_api import elf_sizes

from . import link_map

# DESIGN.md's goal for the firmware without a model on a Cortex-M (-Os): at most 8 KiB of flash.
RUNTIME_FLASH_GOAL_BYTES = 8 * 1024


def _flags(cflags: str) -> str:
    # The Makefile compiles with -Os, then the user's flags (a later -O wins).
    return " ".join(["-Os"] + cflags.split())


def size_report(elf: Path, map_file: Path, board: dict, cflags: str = "",
                label: str = "") -> Tuple[dict, List[str]]:
    """(the record saved as build/sizes.json, the lines the build prints) for a linked image; label
    names the image in the first line (default: its file name)."""
    sizes = elf_sizes.read_elf_sizes(elf)
    parts = link_map.read_link_map(map_file, sizes.section_kinds)
    runtime = parts.flash(link_map.RUNTIME)
    no_model = parts.flash(*link_map.NO_MODEL_PARTS)
    record = sizes.to_dict()
    record.update(
        flash_bytes=sizes.flash_bytes, ram_bytes=sizes.ram_bytes,
        board_flash_bytes=board["flash_bytes"], board_ram_bytes=board["ram_bytes"],
        parts=parts.to_dict(), cpu=board["cpu"], cflags=_flags(cflags),
        runtime_flash_bytes=runtime, no_model_flash_bytes=no_model,
        runtime_flash_goal_bytes=RUNTIME_FLASH_GOAL_BYTES,
    )
    top = ", ".join(f"{name} {size} B ({kind})" for name, kind, size in sizes.largest_symbols[:5])
    by_part = ", ".join(f"{name} {size.flash} B" for name, size in parts.parts.items() if size.flash)
    ram_by_part = ", ".join(f"{name} {size.ram} B" for name, size in parts.parts.items() if size.ram)
    verdict = "within" if no_model <= RUNTIME_FLASH_GOAL_BYTES else "OVER"
    lines = [
        f"{label or Path(elf).name}: .text {sizes.text} B, .data {sizes.data} B, .bss {sizes.bss} B, "
        f"stack {sizes.stack} B; flash {sizes.flash_bytes} of {board['flash_bytes']} B, "
        f"RAM {sizes.ram_bytes} of {board['ram_bytes']} B",
        f"largest: {top}",
        f"flash by part: {by_part}",
        f"RAM by part (stack aside): {ram_by_part}",
        f"runtime without the model ({board['cpu']}, {record['cflags']}): {runtime} B of flash for the "
        f"runtime, {no_model} B with the platform layer, the app and the C library code they use "
        f"({verdict} the goal of {RUNTIME_FLASH_GOAL_BYTES} B)",
    ]
    return record, lines
