"""Put the floor into a generated project, so that its server runs without utvm installed.

A generated project carries a copy of this package as ``project_api/`` beside its
``microtvm_api_server.py``; the server finds it there (see docs/project-api.md, "Writing a
template"). The copy is the whole package: it is small, and a partial copy would break the first
time a module gained an import. Standard library only.
"""

from __future__ import annotations

import pathlib
import shutil

# The name the floor has inside a generated project (and the import name templates use).
FLOOR_PACKAGE = "project_api"
FLOOR_DIR = pathlib.Path(__file__).resolve().parent


def copy_floor(project_dir) -> pathlib.Path:
    """Copy the floor's modules into project_dir/project_api; returns that directory."""
    dest = pathlib.Path(project_dir) / FLOOR_PACKAGE
    if dest.resolve() == FLOOR_DIR:
        return dest  # the server already runs from this copy
    dest.mkdir(parents=True, exist_ok=True)
    for source in sorted(FLOOR_DIR.glob("*.py")):
        shutil.copy2(source, dest / source.name)
    return dest
