"""The reproducibility record of a run: what produced a result, enough to produce it again.

`utvm run --json` carries it as ``record`` and `utvm run --record out.json` writes it alone:
- ``firmware``: the built image's path in the project and its sha256;
- ``archive``: the project's MLF archive's sha256 and the model hash it records;
- ``model``: the source model file's sha256 and format (from the archive's layer map);
- ``versions``: utvm, the TVM that compiled the archive, the C compiler that built the image
  (its ``--version`` line) and the compile flags the build recorded;
- ``board``: its name, its kind, and whether it is emulated (and by what);
- ``template``: the platform and the options the project was generated with;
- ``inputs`` with the seed of the random ones, and the time (UTC).
Nothing here is measured: the same project and inputs give the same record but for the time.
"""

from __future__ import annotations

import datetime
import hashlib
import pathlib
import shlex
import subprocess
from typing import Any, Dict, Mapping, Optional

from utvm.project_api.mlf import read_model_archive
from utvm.project_api.record import read_record

# The built image of each template, in the order they are looked for under the project.
FIRMWARE_CANDIDATES = ("build/firmware.elf", "build/model_device", "build/zephyr/zephyr.elf",
                       "build/firmware.hex", "build/firmware.bin")
VERSION_TIMEOUT = 10.0  # seconds for `CC --version`


def sha256_file(path: pathlib.Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def firmware_image(project_dir: pathlib.Path) -> Optional[pathlib.Path]:
    """The project's built image: a known name, else the only .elf/.hex/.bin under build/."""
    for name in FIRMWARE_CANDIDATES:
        if (project_dir / name).is_file():
            return project_dir / name
    found = sorted(p for ext in ("elf", "hex", "bin") for p in (project_dir / "build").rglob(f"*.{ext}"))
    return found[0] if len(found) == 1 else None


def compiler_version(project_dir: pathlib.Path, options: Mapping[str, Any]) -> Dict[str, Any]:
    """The compiler the build used (the first word of build/compile_flags, else the `cc` option),
    its `--version` line, and the flags."""
    flags_file = project_dir / "build" / "compile_flags"
    flags = flags_file.read_text(errors="replace").strip() if flags_file.is_file() else ""
    words = shlex.split(flags) if flags else []
    compiler = words[0] if words else str(options.get("cc") or "")
    version = None
    if compiler:
        try:
            result = subprocess.run([compiler, "--version"], capture_output=True, text=True,
                                    timeout=VERSION_TIMEOUT)
            version = (result.stdout.splitlines() or [None])[0]
        except (OSError, subprocess.TimeoutExpired):
            version = None
    return {"name": compiler or None, "version": version, "flags": flags or None}


def _utvm_version() -> Optional[str]:
    from importlib import metadata

    try:
        return metadata.version("utvm")
    except metadata.PackageNotFoundError:
        return None


def run_record(project_dir, archive, clock, seed: int, inputs: Mapping[str, str],
               now: Optional[datetime.datetime] = None) -> Dict[str, Any]:
    """The record (see the module docstring) of a run of the project at ``project_dir`` with
    ``archive`` (its MLF archive's path); ``clock`` is the run's DeviceClock, ``inputs`` where
    each input came from."""
    project_dir = pathlib.Path(project_dir)
    record = read_record(project_dir)
    options = dict(record.options) if record else {}
    metadata = read_model_archive(archive).metadata
    source = metadata.get("source_layers") or {}
    image = firmware_image(project_dir)
    board = (record.board if record else None) or {}
    return {
        "firmware": {
            "path": str(image.relative_to(project_dir)) if image else None,
            "sha256": sha256_file(image) if image else None,
        },
        "archive": {"sha256": sha256_file(pathlib.Path(archive)), "model_hash": metadata["model_hash"]},
        "model": {
            "name": metadata["model_name"],
            "format": metadata.get("source_format"),
            "sha256": source.get("model_sha256"),
        },
        "versions": {
            "utvm": _utvm_version(),
            "tvm": metadata.get("tvm_version"),
            "compiler": compiler_version(project_dir, options),
        },
        "board": {
            "name": clock.board,
            "kind": board.get("kind"),
            "emulated": clock.emulated,
            "emulator": (board.get("emulator") or {}).get("system") if clock.emulated else None,
        },
        "template": {"platform": record.platform_name if record else None, "options": options},
        "seed": seed,
        "inputs": dict(inputs),
        "time": (now or datetime.datetime.now(datetime.timezone.utc)).isoformat(timespec="seconds"),
    }


def without_time(record: Mapping[str, Any]) -> Dict[str, Any]:
    """The record with its time removed: what two runs of the same project and inputs share."""
    return {k: v for k, v in record.items() if k != "time"}
