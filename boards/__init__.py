"""The board database shared by every template: `all_boards`, `get_board`, and the fit check.

The records live in boards.yaml beside this file; docs/boards.md describes the fields.
"""

from .database import (
    DATABASE_PATH,
    KINDS,
    PLATFORMS,
    Board,
    all_boards,
    board_names,
    get_board,
    parse_database,
    twin_of,
)
from .fit import Footprint, check_fit, footprint_from_metadata, format_bytes

__all__ = [
    "DATABASE_PATH",
    "KINDS",
    "PLATFORMS",
    "Board",
    "Footprint",
    "all_boards",
    "board_names",
    "check_fit",
    "footprint_from_metadata",
    "format_bytes",
    "get_board",
    "parse_database",
    "twin_of",
]
