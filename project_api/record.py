"""The project record: what a generated project was made from, read by every later step.

``utvm-project.json`` in a generated project holds the platform, the options given at
``generate_project`` (coerced, with the template's defaults filled in), the board record the
template resolved then, and where the project keeps its copy of the MLF archive. The server base
writes it; build, flash, open_transport, ``utvm run`` and the client read it through
:func:`read_record` and nothing else. For a project made by a server that keeps no record (a
microTVM template), the client writes one marked ``written_by: "client"`` so that the options
given at generate time need not be repeated on every later call.

Standard library only: generated projects carry this module.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import tempfile
from typing import Any, Dict, Optional

from .errors import UserError
from .file_modes import new_file_mode
from .wire import PROTOCOL_VERSION

RECORD_FILE = "utvm-project.json"


@dataclasses.dataclass
class ProjectRecord:
    """One generated project's record (see the module docstring)."""

    platform_name: str
    options: Dict[str, Any] = dataclasses.field(default_factory=dict)
    # The board record (a plain dict, as in the board database) resolved at generate_project.
    board: Optional[Dict[str, Any]] = None
    # The project's copy of the MLF archive, relative to the project directory.
    archive: Optional[str] = None
    # "server" (our server base) or "client" (kept by the client for a server that keeps none).
    written_by: str = "server"
    protocol_version: int = PROTOCOL_VERSION

    @property
    def project_type(self) -> Optional[str]:
        """The ``project_type`` option the project was generated with, when it has one."""
        value = self.options.get("project_type")
        return str(value) if value is not None else None

    @property
    def board_name(self) -> Optional[str]:
        """The resolved board's name, else the ``board`` option as given, else None."""
        if self.board and self.board.get("name"):
            return str(self.board["name"])
        value = self.options.get("board")
        return str(value) if value is not None else None

    def archive_path(self, directory) -> Optional[pathlib.Path]:
        """The absolute path of the project's archive copy, or None when the record names none."""
        return pathlib.Path(directory).resolve() / self.archive if self.archive else None

    def to_json(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)


def record_path(directory) -> pathlib.Path:
    return pathlib.Path(directory) / RECORD_FILE


def has_record(directory) -> bool:
    """True when directory holds a generated project's record."""
    return record_path(directory).is_file()


def read_record(directory) -> Optional[ProjectRecord]:
    """The record of the generated project in directory, or None when there is none (a template,
    or a foreign project nobody recorded). A record that cannot be read is a UserError."""
    path = record_path(directory)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as err:
        raise UserError(f"cannot read the project record {path}: {err}") from None
    try:
        data = json.loads(text)
        fields = {f.name for f in dataclasses.fields(ProjectRecord)}
        return ProjectRecord(**{k: v for k, v in data.items() if k in fields})
    except (ValueError, TypeError) as err:
        raise UserError(f"the project record {path} is damaged: {err}",
                        hint="regenerate the project with `utvm create-project`") from None


def write_record(directory, record: ProjectRecord) -> pathlib.Path:
    """Write record into directory atomically (a reader never sees half a file)."""
    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    text = json.dumps(record.to_json(), indent=2, sort_keys=True) + "\n"
    fd, tmp = tempfile.mkstemp(prefix=".utvm-project-", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, new_file_mode())
        os.replace(tmp, record_path(directory))
    except BaseException:
        pathlib.Path(tmp).unlink(missing_ok=True)
        raise
    return record_path(directory)
