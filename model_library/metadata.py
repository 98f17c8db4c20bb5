"""metadata.json: the format version, and the checks `load()` applies to an archive's metadata."""

from __future__ import annotations

import json

from .errors import ArchiveError

FORMAT_VERSION = 1
METADATA_FILE = "metadata.json"

_TOP_LEVEL = {
    "format_version": int,
    "model_name": str,
    "model_hash": str,
    "tvm_version": str,
    "target": dict,
    "target_str": str,
    "inputs": list,
    "outputs": list,
    "plan": dict,
    "memory": dict,
}
_MEMORY = ("arena_bytes", "workspace_bytes", "constant_bytes", "io_bytes", "peak_live_lower_bound_bytes")


def dumps(metadata: dict) -> bytes:
    """Canonical JSON text (sorted keys, fixed indentation), so archives are byte-identical."""
    return (json.dumps(metadata, indent=2, sort_keys=True) + "\n").encode("utf-8")


def parse(data: bytes, where: str) -> dict:
    """Parse and validate metadata.json; raise ArchiveError naming the first problem."""
    try:
        metadata = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ArchiveError(f"{where}: metadata.json is not valid JSON ({err})") from None
    validate(metadata, where)
    return metadata


def validate(metadata, where: str) -> None:
    def fail(problem: str):
        raise ArchiveError(f"{where}: malformed metadata.json: {problem}")

    if not isinstance(metadata, dict):
        fail("the top level is not an object")
    version = metadata.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool):
        fail("format_version is missing or not an integer")
    if version > FORMAT_VERSION:
        raise ArchiveError(
            f"{where}: archive format version {version} is newer than this utvm reads ({FORMAT_VERSION})",
            hint="upgrade utvm, or recompile the model with this version",
        )
    if version < 1:
        fail(f"format_version {version} is not valid")
    for key, kind in _TOP_LEVEL.items():
        if not isinstance(metadata.get(key), kind):
            fail(f"{key} is missing or not a {kind.__name__}")
    plan = metadata["plan"]
    for key in ("pools", "tensors", "kernels"):
        if not isinstance(plan.get(key), list):
            fail(f"plan.{key} is missing or not a list")
    for key in _MEMORY:
        if not _is_count(metadata["memory"].get(key)):
            fail(f"memory.{key} is missing or not a non-negative integer")
    arena = metadata["memory"]["arena_bytes"]
    tensors = plan["tensors"]
    for index, tensor in enumerate(tensors):
        _check_tensor(tensor, index, arena, fail)
    count = len(tensors)
    for index, kernel in enumerate(plan["kernels"]):
        if not isinstance(kernel, dict) or kernel.get("index") != index:
            fail(f"plan.kernels[{index}] is not an object with index {index}")
        for key in ("name", "function"):
            if not isinstance(kernel.get(key), str) or not kernel[key]:
                fail(f"plan.kernels[{index}].{key} is missing")
        for key in ("args", "outputs"):
            ids = kernel.get(key)
            if not isinstance(ids, list) or not all(_is_count(i) and i < count for i in ids):
                fail(f"plan.kernels[{index}].{key} must list tensor ids below {count}")
    for side in ("inputs", "outputs"):
        if not metadata[side]:
            fail(f"{side} is empty")
        for index, entry in enumerate(metadata[side]):
            if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
                fail(f"{side}[{index}] has no name")
            tid = entry.get("tensor")
            if not _is_count(tid) or tid >= count or tensors[tid]["storage"] != "arena":
                fail(f"{side}[{index}].tensor must be the id of an arena tensor")


def _check_tensor(tensor, index: int, arena: int, fail) -> None:
    if not isinstance(tensor, dict) or tensor.get("id") != index:
        fail(f"plan.tensors[{index}] is not an object with id {index}")
    if tensor.get("storage") not in ("arena", "const"):
        fail(f"plan.tensors[{index}].storage must be 'arena' or 'const'")
    shape = tensor.get("shape")
    if not isinstance(shape, list) or not all(_is_count(d) for d in shape):
        fail(f"plan.tensors[{index}].shape must be a list of non-negative integers")
    if not isinstance(tensor.get("dtype"), str) or not isinstance(tensor.get("name"), str):
        fail(f"plan.tensors[{index}] needs a name and a dtype")
    offset, nbytes = tensor.get("offset"), tensor.get("nbytes")
    if not _is_count(offset) or not _is_count(nbytes):
        fail(f"plan.tensors[{index}].offset/nbytes must be non-negative integers")
    if tensor["storage"] == "arena" and offset + nbytes > arena:
        fail(f"plan.tensors[{index}] ends at {offset + nbytes}, past the arena ({arena} bytes)")
    if tensor["storage"] == "const" and not isinstance(tensor.get("symbol"), str):
        fail(f"plan.tensors[{index}] is a constant without a symbol")


def _is_count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0
