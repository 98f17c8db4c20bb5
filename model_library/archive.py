"""Deterministic writing of MLF archives (reading is utvm.project_api.mlf's).

Entries sorted by name, mtime 0, uid/gid 0, no user or group names, mode 0644 for files and 0755
for directories, plain (uncompressed) tar in the POSIX format. The same files give the same bytes.
The archive is written to a temporary file beside the destination and renamed into place, so a
failure never leaves a half-written archive.
"""

from __future__ import annotations

import io
import os
import tarfile
import tempfile
from pathlib import Path, PurePosixPath

from utvm.project_api.errors import UserError
from utvm.project_api.file_modes import new_file_mode


def check_output(output) -> Path:
    """The archive path `output`, refused at once (before any compile) when it cannot be written: empty,
    a directory, or in a folder that is not one or cannot be written."""
    if not str(output).strip():
        raise UserError("the output path is empty", hint="name the archive to write, e.g. -o model.tar")
    output = Path(output)
    if output.is_dir():
        raise UserError(f"{output} is a directory", hint="name a file, e.g. -o model.tar")
    folder = next((p for p in [output.parent, *output.parent.parents] if p.exists()), Path("."))
    if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
        raise UserError(f"cannot write {output}: {folder} is not a folder this user can write to",
                        hint="choose another output path")
    return output


def write_archive(output: Path, files: dict) -> Path:
    """Write {archive path: bytes} to `output` atomically; return the output path."""
    output = check_output(output)
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"cannot create the folder of {output}: {err.strerror}") from None
    directories = set()
    for name in files:
        parts = PurePosixPath(name).parts
        directories.update("/".join(parts[:i]) for i in range(1, len(parts)))
    fd, tmp_name = tempfile.mkstemp(prefix=f".{output.name}.", suffix=".tmp", dir=output.parent)
    try:
        with (
            os.fdopen(fd, "wb") as raw,
            tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar,
        ):
            for name in sorted(directories | set(files)):
                info = tarfile.TarInfo(name)
                info.mtime = 0
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                if name in files:
                    data = files[name]
                    info.size, info.mode, info.type = len(data), 0o644, tarfile.REGTYPE
                    tar.addfile(info, io.BytesIO(data))
                else:
                    info.mode, info.type = 0o755, tarfile.DIRTYPE
                    tar.addfile(info)
        os.chmod(tmp_name, new_file_mode())  # as open() would have made it, not mkstemp's 0600
        os.replace(tmp_name, output)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return output
