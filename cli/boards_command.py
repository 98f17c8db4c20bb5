"""`utvm boards [--template T] [--json]`: list the board database. Imports no TVM, so it is instant."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import List, Optional

from utvm.boards import PLATFORMS, Board, all_boards
from utvm.project_api.board_records import format_bytes
from utvm.project_api.errors import UserError

_COLUMNS = ("NAME", "CPU", "RAM", "FLASH", "PLATFORMS", "HOW IT RUNS")


def register(subparsers) -> argparse.ArgumentParser:
    """Add the `boards` command to the `utvm` command line's subparsers."""
    parser = subparsers.add_parser(
        "boards",
        help="list the boards utvm knows, with RAM, flash, CPU and how each runs",
        description="List the board database: RAM, flash, CPU, the templates that target each board, "
        "and how it runs (an emulator, or a physical board with its flash runner).",
    )
    parser.add_argument("--template", metavar="T",
                        help=f"only boards this template can target ({', '.join(PLATFORMS)}, "
                        "or a template path)")
    parser.add_argument("--json", action="store_true", help="print the full records as JSON")
    parser.set_defaults(func=handler)
    return parser


def platform_of_template(template: str) -> str:
    """The platform a template name or template directory targets (its directory name)."""
    name = Path(template).name if ("/" in template or Path(template).is_dir()) else template
    if name not in PLATFORMS:
        raise UserError(f"no boards are recorded for template {template!r}",
                        hint=f"choose one of: {', '.join(PLATFORMS)}")
    return name


def _row(board: Board) -> List[str]:
    return [board.name, board.cpu or "native", format_bytes(board.ram_bytes), format_bytes(board.flash_bytes),
            ",".join(board.platforms), board.how_it_runs()]


def format_table(boards: List[Board]) -> str:
    """The boards as an aligned text table (last column left ragged)."""
    rows = [list(_COLUMNS)] + [_row(b) for b in boards]
    widths = [max(len(r[i]) for r in rows) for i in range(len(_COLUMNS) - 1)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths)) + "  " + r[-1] for r in rows]
    return "\n".join(line.rstrip() for line in lines)


def handler(args: argparse.Namespace, out=None) -> int:
    """Print the table (or JSON); returns the exit status."""
    out = out or sys.stdout
    template: Optional[str] = getattr(args, "template", None)
    boards = all_boards(platform_of_template(template) if template else None)
    if getattr(args, "json", False):
        json.dump([b.to_dict() for b in boards], out, indent=2)
        out.write("\n")
        return 0
    out.write(format_table(boards) + "\n")
    if any(b.emulator for b in boards):
        out.write("\nEmulated boards' timings are not real-board timings: instruction counts under QEMU "
                  "-icount, the host's clock under qemu-aarch64.\n")
    return 0
