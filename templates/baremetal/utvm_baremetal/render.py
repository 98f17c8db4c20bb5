"""Lay out a bare-metal firmware tree: platform sources, the app, the runtime, the model, and the
Makefile / linker script / board_config.h rendered from the board record.

Runs when a project is generated, with the standard library and the floor's renderer only.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Iterable, List, Optional, Tuple

from project_api.template_support import render_file

from . import stm32f4

TEMPLATE_DIR = Path(__file__).resolve().parent.parent
PLATFORM_SRC = TEMPLATE_DIR / "src" / "platform"
APP_SRC = TEMPLATE_DIR / "src" / "app"
DEFAULT_STACK_BYTES = 8192

# Files in src/platform that belong to one driver only; the board record picks one of each kind:
# uart.driver, and clock.driver (clock_fixed.c when the record has no clock tree).
_UART_PREFIX = "uart_"
_CLOCK_PREFIX = "clock_"
_FIXED_CLOCK = "fixed"
# Placeholders whose values are whole lines of C or linker script.
_MULTILINE = ("driver_config", "extra_sections")


def float_flags(board: dict) -> str:
    """GCC floating-point flags for the board's FPU (soft float when it has none)."""
    if board.get("fpu"):
        return f"-mfloat-abi={board.get('float_abi') or 'hard'} -mfpu={board['fpu']}"
    return "-mfloat-abi=soft"


def _num_irq(board: dict) -> int:
    # A part's own interrupt count when the record gives it (the vector table then matches the
    # part's); else the table only needs to reach the UART's interrupt, in whole banks of 32.
    if (board.get("mcu") or {}).get("irqs"):
        return int(board["mcu"]["irqs"])
    return max(32, (board["uart"]["rx_irq"] // 32 + 1) * 32)


def _copy_files(files: Iterable[Path], dest: Path) -> List[Path]:
    dest.mkdir(parents=True, exist_ok=True)
    out = []
    for f in files:
        shutil.copy2(f, dest / f.name)
        out.append(dest / f.name)
    return out


def _driver_file(board: dict, prefix: str, kind: str, driver: str) -> Path:
    chosen = PLATFORM_SRC / f"{prefix}{driver}.c"
    if not chosen.is_file():
        raise ValueError(f"board {board['name']}: no bare-metal {kind} driver {driver!r} "
                         f"(want {chosen.name})")
    return chosen


def platform_sources(board: dict) -> List[Path]:
    """The platform layer's files for this board: everything but the other boards' UART and clock
    drivers."""
    chosen = {
        _UART_PREFIX: _driver_file(board, _UART_PREFIX, "UART", board["uart"]["driver"]),
        _CLOCK_PREFIX: _driver_file(board, _CLOCK_PREFIX, "clock",
                                    (board.get("clock") or {}).get("driver") or _FIXED_CLOCK),
    }
    return sorted(p for p in PLATFORM_SRC.iterdir() if p.suffix in (".c", ".h") and all(
        not p.name.startswith(prefix) or p == file for prefix, file in chosen.items()))


def _ccm(board: dict) -> Tuple[str, str]:
    """The linker script's CCM region and section, when the part has core-coupled RAM."""
    ccm = board["memory"].get("ccm")
    if not ccm:
        return "", ""
    region = f"  CCM   (rw)  : ORIGIN = 0x{ccm['origin']:08x}, LENGTH = {ccm['length']}"
    section = (
        "  /* Core-coupled RAM, kept apart from RAM: DMA cannot reach it. It holds only what is put in\n"
        "   * .ccm (__attribute__((section(\".ccm\")))); not loaded, not cleared. */\n"
        "  .ccm (NOLOAD) : ALIGN(4)\n  {\n    *(.ccm*)\n  } > CCM\n"
    )
    return region, section


def _into_project(path: Path, project_dir: Path, dest: str) -> Path:
    """path itself when it is inside project_dir, else a copy of it under project_dir / dest."""
    path = Path(path).resolve()
    if path.is_relative_to(project_dir.resolve()):
        return path
    target = project_dir / dest / path.name
    if path.is_dir():
        shutil.copytree(path, target, dirs_exist_ok=True)
    else:
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target)
    return target.resolve()


def write_firmware_tree(
    project_dir: Path,
    board: dict,
    app: str,
    runtime_include_dir: Path,
    runtime_sources: Iterable[Path] = (),
    generated_sources: Iterable[Path] = (),
    include_dirs: Iterable[Path] = (),
    app_sources: Iterable[Path] = (),
    extra_headers: Iterable[Path] = (),
    semihosting: Optional[bool] = None,
    stack_bytes: int = DEFAULT_STACK_BYTES,
    defines: Iterable[str] = (),
) -> None:
    """Write a buildable firmware tree into project_dir (which may already hold other files).

    app names the main program in src/app (without .c). Our C (platform, app, app_sources,
    runtime_sources) is compiled warnings-clean with -Werror; generated_sources (the model's C)
    with warnings only. Sources and include_dirs already inside project_dir are used where they
    are; others are copied in. semihosting defaults to on for emulated boards.
    """
    project_dir = Path(project_dir)
    if semihosting is None:
        semihosting = board.get("kind") == "emulated"
    strict = _copy_files(platform_sources(board), project_dir / "src" / "platform")
    strict += _copy_files([APP_SRC / f"{app}.c"], project_dir / "src" / "app")
    strict += [_into_project(p, project_dir, "src/app") for p in app_sources]
    shutil.copytree(runtime_include_dir, project_dir / "runtime" / "include", dirs_exist_ok=True)
    runtime_sources = list(runtime_sources)
    strict += _copy_files(runtime_sources, project_dir / "runtime" / "src")
    generated = [_into_project(p, project_dir, "model/src") for p in generated_sources]
    includes = ["include", "src/platform", "runtime/include"] + (["runtime/src"] if runtime_sources else [])
    includes += [_into_project(d, project_dir, "model/include").relative_to(project_dir.resolve()).as_posix()
                 for d in include_dirs]
    _copy_files(extra_headers, project_dir / "include")
    root = project_dir.resolve()

    flash, ram = board["memory"]["flash"], board["memory"]["ram"]
    ccm_region, ccm_section = _ccm(board)
    values = {
        "board_name": board["name"],
        "board_title": board["title"],
        "cpu": board["cpu"],
        "float_flags": float_flags(board),
        "defines": " ".join(defines),
        "includes": " ".join(f"-I{d}" for d in includes),
        "strict_sources": " ".join(p.resolve().relative_to(root).as_posix()
                                   for p in strict if p.suffix == ".c"),
        "generated_sources": " ".join(p.relative_to(root).as_posix() for p in generated if p.suffix == ".c"),
        "flash_origin": f"0x{flash['origin']:08x}",
        "flash_length": str(flash["length"]),
        "ram_origin": f"0x{ram['origin']:08x}",
        "ram_length": str(ram["length"]),
        "stack_bytes": str(stack_bytes),
        "clock_hz": str(board["clock_hz"]),
        "baud": str(board["baud"]),
        "uart_base": f"0x{board['uart']['base']:08x}",
        "uart_rx_irq": str(board["uart"]["rx_irq"]),
        "num_irq": str(_num_irq(board)),
        "has_fpu": "1" if board.get("fpu") else "0",
        "semihosting": "1" if semihosting else "0",
        "extra_memory": ccm_region,
        "extra_sections": ccm_section,
        "driver_config": "\n".join(stm32f4.config_lines(board)),
    }
    for template, dest in (("Makefile.in", "Makefile"), ("linker.ld.in", "linker.ld"),
                           ("board_config.h.in", "include/board_config.h")):
        render_file(TEMPLATE_DIR / template, project_dir / dest, values, multiline=_MULTILINE)
