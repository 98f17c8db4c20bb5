"""The mode a new file gets: what the user's umask allows. Files written through a temporary file
(mkstemp makes it 0600) and then renamed into place take this mode before the rename, as a file
opened with open() would have had. Standard library only."""

from __future__ import annotations

import os
import threading

_LOCK = threading.Lock()


def new_file_mode(base: int = 0o666) -> int:
    """base with the bits the process's umask removes taken away."""
    with _LOCK:  # os.umask can only be read by setting it; keep other threads from seeing the 0
        mask = os.umask(0)
        os.umask(mask)
    return base & ~mask
