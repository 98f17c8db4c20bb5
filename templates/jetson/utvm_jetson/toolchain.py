"""The aarch64 cross toolchain for a board: GCC's flags for its CPU. Standard library only."""

from __future__ import annotations

from typing import List, Mapping

DEFAULT_CC = "aarch64-linux-gnu-gcc"


def cpu_flags(board: Mapping) -> List[str]:
    """GCC's flags for the board's CPU: the record's cc_flags where GCC has no -mcpu of that name
    (Carmel), else -mcpu=<cpu>."""
    return list(board.get("cc_flags") or [f"-mcpu={board['cpu']}"])
