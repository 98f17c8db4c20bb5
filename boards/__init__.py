"""The board database shared by every template: `all_boards`, `get_board`, `twin_of`.

The records live in boards.json beside this file; docs/boards.md describes the fields. Templates
read the same file with the floor's reader (utvm.project_api.board_records), which also holds the
fit check they run at generate_project.
"""

from .database import (
    DATABASE_PATH,
    KINDS,
    PLATFORMS,
    Board,
    all_boards,
    board_names,
    check_database,
    get_board,
    twin_of,
)

__all__ = [
    "DATABASE_PATH",
    "KINDS",
    "PLATFORMS",
    "Board",
    "all_boards",
    "board_names",
    "check_database",
    "get_board",
    "twin_of",
]
