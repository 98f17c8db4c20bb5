"""Tar handling for MLF archives: deterministic writing, and reading that refuses unsafe entries.

Writing: entries sorted by name, mtime 0, uid/gid 0, no user or group names, mode 0644 for files
and 0755 for directories, plain (uncompressed) tar in the POSIX format. The same files give the
same bytes. The archive is written to a temporary file beside the destination and renamed into
place, so a failure never leaves a half-written archive.

Reading: only regular files and directories, with relative paths that stay inside the archive
(no absolute paths, no `..`, no links or devices).
"""

from __future__ import annotations

import io
import os
import tarfile
import tempfile
from pathlib import Path, PurePosixPath

from .errors import ArchiveError

MAX_MEMBER_BYTES = 1 << 30  # a model's archive is megabytes; anything this large is not ours


def write_archive(output: Path, files: dict) -> Path:
    """Write {archive path: bytes} to `output` atomically; return the output path."""
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
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
        os.replace(tmp_name, output)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return output


def check_member(member: tarfile.TarInfo, archive: Path) -> str:
    """The member's normalised relative path; raise ArchiveError if it is unsafe."""
    name = member.name
    path = PurePosixPath(name)
    if name.startswith("/") or path.is_absolute() or (len(name) > 1 and name[1] == ":"):
        raise ArchiveError(f"{archive}: refusing entry {name!r}: absolute path")
    if ".." in path.parts:
        raise ArchiveError(f"{archive}: refusing entry {name!r}: it escapes the extraction folder (..)")
    if member.issym() or member.islnk():
        raise ArchiveError(f"{archive}: refusing entry {name!r}: links are not allowed in a model archive")
    if not (member.isfile() or member.isdir()):
        raise ArchiveError(f"{archive}: refusing entry {name!r}: not a regular file or directory")
    if member.size > MAX_MEMBER_BYTES:
        raise ArchiveError(f"{archive}: refusing entry {name!r}: {member.size} bytes is too large")
    normalised = "/".join(p for p in path.parts if p not in ("", "."))
    if not normalised and not member.isdir():
        raise ArchiveError(f"{archive}: refusing entry {name!r}: empty path")
    return normalised


def read_archive(path: Path) -> dict:
    """Read every regular file of the archive into {relative path: bytes}, checking each entry."""
    path = Path(path)
    if not path.is_file():
        raise ArchiveError(f"{path}: no such archive")
    files = {}
    try:
        with tarfile.open(path, mode="r:*") as tar:
            for member in tar.getmembers():
                name = check_member(member, path)
                if member.isfile():
                    if name in files:
                        raise ArchiveError(f"{path}: entry {name!r} appears twice")
                    handle = tar.extractfile(member)
                    files[name] = handle.read() if handle is not None else b""
    except (tarfile.TarError, EOFError, OSError) as err:
        raise ArchiveError(f"{path}: not a readable tar archive ({type(err).__name__}: {err})") from None
    return files


def extract_files(files: dict, dest: Path) -> Path:
    """Write checked {relative path: bytes} under `dest`, never outside it."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    root = dest.resolve()
    for name, data in sorted(files.items()):
        target = (root / name).resolve()
        if root not in target.parents:
            raise ArchiveError(f"refusing to write {name!r} outside {dest}")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    return dest
