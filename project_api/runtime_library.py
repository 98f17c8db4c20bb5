"""The TVM runtime library an MLF archive may carry beside its C kernels.

A project that runs the model under TVM's own runtime (the Relax VM, e.g. the Jetson template's
``tvm_runtime`` projects) needs the model built by TVM into a shared library for the board. utvm's
model_library writes it into the archive as ``runtime_library/model.so``, with
``runtime_library/library.json`` saying what it is:

    {"format_version": 1, "file": "model.so", "entry": "main", "target": {...}, "target_str": "...",
     "device": "cpu" | "cuda", "gpu_tag": null | "nvidia/jetson-orin-nano", "cc": "aarch64-linux-gnu-gcc",
     "tvm_version": "0.27.0.post1", "model_hash": "<the archive's model_hash>", "sha256": "<of model.so>"}

The rest of the archive is unchanged, so its signature (inputs, outputs) and its C kernels (the
host reference) stay what they were. Standard library only: generated projects carry this module.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Dict, Optional

from .errors import UserError

LIBRARY_DIR = "runtime_library/"
LIBRARY_MEMBER = LIBRARY_DIR + "model.so"
INFO_MEMBER = LIBRARY_DIR + "library.json"
FORMAT_VERSION = 1


def library_info(library: bytes, **fields: Any) -> Dict[str, Any]:
    """The library.json record of library (its bytes) with the given fields."""
    return {"format_version": FORMAT_VERSION, "file": LIBRARY_MEMBER[len(LIBRARY_DIR):], "entry": "main",
            **fields, "sha256": hashlib.sha256(library).hexdigest()}


def read_library_info(archive) -> Optional[Dict[str, Any]]:
    """The library.json of an archive (an mlf.ModelArchive), checked against the library it
    describes; None when the archive carries no runtime library."""
    names = set(archive.file_names())
    if INFO_MEMBER not in names:
        return None
    try:
        info = json.loads(archive.read(INFO_MEMBER).decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as err:
        raise UserError(f"{archive.path}: {INFO_MEMBER} is not valid JSON: {err}") from None
    if not isinstance(info, dict) or info.get("format_version") != FORMAT_VERSION:
        raise UserError(f"{archive.path}: {INFO_MEMBER} is not a runtime library record of version "
                        f"{FORMAT_VERSION}", hint="compile the model again with this utvm")
    if LIBRARY_MEMBER not in names:
        raise UserError(f"{archive.path}: {INFO_MEMBER} describes {LIBRARY_MEMBER}, which is missing")
    if hashlib.sha256(archive.read(LIBRARY_MEMBER)).hexdigest() != info.get("sha256"):
        raise UserError(f"{archive.path}: {LIBRARY_MEMBER} does not match the checksum in {INFO_MEMBER}",
                        hint="the archive was altered; compile the model again")
    if info.get("model_hash") != archive.model_hash:
        raise UserError(f"{archive.path}: the runtime library was built for another model than the "
                        "archive's kernels", hint="compile the model again")
    return info
