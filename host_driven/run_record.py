"""The reproducibility record of a run: what produced a result, enough to produce it again.

`utvm run --json` carries it as ``record``, `utvm run --record out.json` writes it alone, and
`utvm run --output OUT.npz` writes it beside the outputs as OUT.record.json (sidecar_path):
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
import json
import pathlib
import shlex
import subprocess
from typing import Any, Dict, Mapping, Optional

from utvm.project_api.mlf import read_model_archive
from utvm.project_api.record import read_record

# The built image of each template, in the order they are looked for under the project.
FIRMWARE_CANDIDATES = ("build/firmware.elf", "build/model_device", "build/model_standalone",
                       "build/zephyr/zephyr.elf", "build/firmware.hex", "build/firmware.bin")
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


def project_facts(project_dir) -> Dict[str, Any]:
    """What the built project itself says for the record: ``firmware`` (the image's path and
    sha256), ``compiler`` (see compiler_version) and ``template`` (platform and options). A farm
    node reports this for the project it built, which the client cannot see."""
    project_dir = pathlib.Path(project_dir)
    record = read_record(project_dir)
    options = dict(record.options) if record else {}
    image = firmware_image(project_dir)
    return {
        "firmware": {
            "path": str(image.relative_to(project_dir)) if image else None,
            "sha256": sha256_file(image) if image else None,
        },
        "compiler": compiler_version(project_dir, options),
        "template": {"platform": record.platform_name if record else None, "options": options},
    }


def run_record(project_dir, archive, clock, seed: int, inputs: Mapping[str, str],
               now: Optional[datetime.datetime] = None) -> Dict[str, Any]:
    """The record (see the module docstring) of a run of the project at ``project_dir`` with
    ``archive`` (its MLF archive's path); ``clock`` is the run's DeviceClock, ``inputs`` where
    each input came from."""
    record = read_record(pathlib.Path(project_dir))
    board = (record.board if record else None) or {}
    return assemble_record(project_facts(project_dir), archive, clock, board, seed, inputs, now)


def assemble_record(facts: Mapping[str, Any], archive, clock, board: Optional[Mapping[str, Any]],
                    seed: int, inputs: Mapping[str, str], now: Optional[datetime.datetime] = None
                    ) -> Dict[str, Any]:
    """The record from a project's facts (project_facts, here or as a farm node reported them),
    the MLF archive's path, the run's DeviceClock, the board record, the seed and the inputs."""
    metadata = read_model_archive(archive).metadata
    source = metadata.get("source_layers") or {}
    board = board or {}
    firmware = facts.get("firmware") or {}
    template = facts.get("template") or {}
    return {
        "firmware": {"path": firmware.get("path"), "sha256": firmware.get("sha256")},
        "archive": {"sha256": sha256_file(pathlib.Path(archive)), "model_hash": metadata["model_hash"]},
        "model": {
            "name": metadata["model_name"],
            "format": metadata.get("source_format"),
            "sha256": source.get("model_sha256"),
        },
        "versions": {
            "utvm": _utvm_version(),
            "tvm": metadata.get("tvm_version"),
            "compiler": facts.get("compiler") or {"name": None, "version": None, "flags": None},
        },
        "board": {
            "name": clock.board,
            "kind": board.get("kind"),
            "emulated": clock.emulated,
            "emulator": (board.get("emulator") or {}).get("system") if clock.emulated else None,
        },
        "template": {"platform": template.get("platform"), "options": dict(template.get("options") or {})},
        "seed": seed,
        "inputs": dict(inputs),
        "time": (now or datetime.datetime.now(datetime.timezone.utc)).isoformat(timespec="seconds"),
    }


def sidecar_path(output) -> pathlib.Path:
    """Where `utvm run --output OUT.npz` writes the run's record: OUT.record.json beside it. Not
    inside the .npz, whose every member a reader may take for an output."""
    output = pathlib.Path(output)
    stem = output.name[:-len(".npz")] if output.name.endswith(".npz") else output.name
    return output.with_name(stem + ".record.json")


def write_record_file(path, record: Mapping[str, Any]) -> pathlib.Path:
    """Write a record as JSON (sorted keys, indented) to path; returns the path."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return path


def without_time(record: Mapping[str, Any]) -> Dict[str, Any]:
    """The record with its time removed: what two runs of the same project and inputs share."""
    return {k: v for k, v in record.items() if k != "time"}
