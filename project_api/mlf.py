"""Read a Model Library Format archive: safe tar reading, metadata.json checks, extraction.

Templates read archives at ``generate_project`` with this module alone (no numpy, no TVM): the
model's name, inputs, outputs, memory sizes and sources come from here. ``utvm.model_library``
builds its ``load()`` on it and writes the archives.

Reading accepts only regular files and directories with relative paths that stay inside the
archive (no absolute paths, no ``..``, no links or devices). metadata.json is validated before
anything is used; a newer format version is refused, and an archive that TVM itself exported
(microTVM's format) is recognised and refused by name. Standard library only.
"""

from __future__ import annotations

import json
import math
import re
import tarfile
from pathlib import Path, PurePosixPath
from typing import Dict, List, Union

from .errors import UserError
from .npy import DTYPES

FORMAT_VERSION = 1
METADATA_FILE = "metadata.json"
SOURCE_DIR = "codegen/host/src/"
INCLUDE_DIR = "codegen/host/include/"
REQUIRED_HEADERS = ("utvm_model_config.h",)
MAX_MEMBER_BYTES = 1 << 30  # a model's archive is megabytes; anything this large is not ours

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
MEMORY_KEYS = ("arena_bytes", "workspace_bytes", "constant_bytes", "io_bytes", "peak_live_lower_bound_bytes")
# Strings from an archive reach Makefiles, linker scripts, C and CMake: each kind has a strict pattern.
# The model name prefixes C symbols and names build files; kernel names are C functions.
MODEL_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
C_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,255}")
MODEL_HASH = re.compile(r"[0-9a-f]{8,128}")
MAX_NAME_CHARS = 256
# The source model's layers (optional `source_layers`): names as the model spells them.
SOURCE_FORMATS = ("tflite", "onnx", "torch")
MAX_LAYER_NAME_CHARS = 1024
SOURCE_MODEL_FILES = ("src/model.tflite", "src/model.onnx", "src/model.pt2")
# No single tensor or pool of a model for any board utvm serves comes near this; beyond it a size is
# taken for a corrupt or crafted archive.
MAX_BYTES = 1 << 40
# Slack allowed for alignment padding: after the plan's last arena byte, and per constant.
ARENA_SLACK_BYTES = 4096
CONSTANT_SLACK_BYTES = 64


class ArchiveError(UserError):
    """An archive that is not a readable, well-formed, safe Model Library Format archive."""


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


def read_archive(path: Path) -> Dict[str, bytes]:
    """Read every regular file of the archive into {relative path: bytes}, checking each entry."""
    path = Path(path)
    if not path.is_file():
        raise ArchiveError(f"{path}: no such archive",
                           hint="make one with `utvm compile MODEL -o model.tar`")
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


def extract_files(files: Dict[str, bytes], dest: Path) -> Path:
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


def parse_metadata(data: bytes, where: str) -> dict:
    """Parse and validate metadata.json; raise ArchiveError naming the first problem."""
    try:
        metadata = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ArchiveError(f"{where}: metadata.json is not valid JSON ({err})") from None
    validate_metadata(metadata, where)
    return metadata


def _refuse_foreign(metadata: dict, where: str) -> None:
    """An archive from TVM's own export_model_library_format has a ``version`` and ``modules``."""
    if "format_version" not in metadata and "modules" in metadata:
        raise ArchiveError(
            f"{where}: this archive was exported by TVM itself (microTVM's Model Library Format, "
            f"version {metadata.get('version')!r}); utvm reads archives made by `utvm compile`",
            hint="compile the original model with `utvm compile MODEL -o model.tar`",
        )


def validate_metadata(metadata, where: str) -> None:
    """Check metadata.json's structure, its strings against strict patterns, and its sizes against its
    plan; raise ArchiveError naming the first problem."""

    def fail(problem: str):
        raise ArchiveError(f"{where}: malformed metadata.json: {problem}",
                           hint="recompile the model with `utvm compile`; a hand-edited archive is refused")

    if not isinstance(metadata, dict):
        fail("the top level is not an object")
    _refuse_foreign(metadata, where)
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
    _check_pattern(metadata["model_name"], MODEL_NAME, "model_name",
                   "a C identifier of at most 64 characters", fail)
    _check_pattern(metadata["model_hash"], MODEL_HASH, "model_hash", "lower-case hex", fail)
    plan = metadata["plan"]
    for key in ("pools", "tensors", "kernels"):
        if not isinstance(plan.get(key), list):
            fail(f"plan.{key} is missing or not a list")
    memory = metadata["memory"]
    for key in MEMORY_KEYS:
        if not _is_count(memory.get(key)) or memory[key] > MAX_BYTES:
            fail(f"memory.{key} is missing or not a byte count (0 to {MAX_BYTES})")
    arena = memory["arena_bytes"]
    tensors = plan["tensors"]
    for index, tensor in enumerate(tensors):
        _check_tensor(tensor, index, arena, fail)
    count = len(tensors)
    for index, kernel in enumerate(plan["kernels"]):
        if not isinstance(kernel, dict) or kernel.get("index") != index:
            fail(f"plan.kernels[{index}] is not an object with index {index}")
        for key in ("name", "function"):
            _check_pattern(kernel.get(key), C_IDENTIFIER, f"plan.kernels[{index}].{key}", "a C identifier",
                           fail)
        for key in ("args", "outputs"):
            ids = kernel.get(key)
            if not isinstance(ids, list) or not all(_is_count(i) and i < count for i in ids):
                fail(f"plan.kernels[{index}].{key} must list tensor ids below {count}")
    _check_source_layers(metadata, fail)
    for side in ("inputs", "outputs"):
        if not metadata[side]:
            fail(f"{side} is empty")
        for index, entry in enumerate(metadata[side]):
            if not isinstance(entry, dict):
                fail(f"{side}[{index}] is not an object")
            _check_name(entry.get("name"), f"{side}[{index}].name", fail)
            tid = entry.get("tensor")
            if not _is_count(tid) or tid >= count or tensors[tid]["storage"] != "arena":
                fail(f"{side}[{index}].tensor must be the id of an arena tensor")
            if entry.get("shape") != tensors[tid]["shape"] or entry.get("dtype") != tensors[tid]["dtype"]:
                fail(f"{side}[{index}] ({entry['name']!r}) does not have the shape and dtype of tensor {tid}")
    _check_sizes(metadata, fail)


def _check_pattern(value, pattern, what: str, meaning: str, fail) -> None:
    if not isinstance(value, str) or not pattern.fullmatch(value):
        shown = repr(value)[:80]
        fail(f"{what} {shown} is not {meaning}")


def _check_name(value, what: str, fail, longest: int = MAX_NAME_CHARS) -> None:
    # Tensor names come from the model (e.g. "serving_default_input_1:0", "gpu_0/data_0"): any
    # printable text, on one line, of a sane length.
    if not isinstance(value, str) or not value or len(value) > longest or not value.isprintable():
        fail(f"{what} {repr(value)[:80]} is not a printable name of 1 to {longest} characters")


def _check_source_layers(metadata: dict, fail) -> None:
    """The optional layer map: `source_layers` and each kernel's `layers` and `source_output`."""
    source = metadata.get("source_layers")
    kernels = metadata["plan"]["kernels"]
    if source is None:
        if any("layers" in k or "source_output" in k for k in kernels):
            fail("plan.kernels name source layers, but there is no source_layers")
        return
    if not isinstance(source, dict) or source.get("format") not in SOURCE_FORMATS:
        fail(f"source_layers.format must be one of {', '.join(SOURCE_FORMATS)}")
    _check_pattern(source.get("model_sha256"), MODEL_HASH, "source_layers.model_sha256", "lower-case hex",
                   fail)
    if "model_file" in source and source["model_file"] not in SOURCE_MODEL_FILES:
        fail(f"source_layers.model_file must be one of {', '.join(SOURCE_MODEL_FILES)}")
    layers = source.get("layers")
    if not isinstance(layers, list):
        fail("source_layers.layers is missing or not a list")
    for index, layer in enumerate(layers):
        if not isinstance(layer, dict) or layer.get("index") != index:
            fail(f"source_layers.layers[{index}] is not an object with index {index}")
        for key in ("op", "name", "output") + tuple(k for k in ("module", "module_type") if k in layer):
            _check_name(layer.get(key), f"source_layers.layers[{index}].{key}", fail, MAX_LAYER_NAME_CHARS)
    for index, kernel in enumerate(kernels):
        covered, output = kernel.get("layers", []), kernel.get("source_output")
        if not isinstance(covered, list) or not all(_is_count(i) and i < len(layers) for i in covered):
            fail(f"plan.kernels[{index}].layers must list layer indices below {len(layers)}")
        if output is not None and not (_is_count(output) and output in covered):
            fail(f"plan.kernels[{index}].source_output must be one of its layers, or null")


def _check_tensor(tensor, index: int, arena: int, fail) -> None:
    if not isinstance(tensor, dict) or tensor.get("id") != index:
        fail(f"plan.tensors[{index}] is not an object with id {index}")
    if tensor.get("storage") not in ("arena", "const"):
        fail(f"plan.tensors[{index}].storage must be 'arena' or 'const'")
    _check_name(tensor.get("name"), f"plan.tensors[{index}].name", fail)
    dtype = tensor.get("dtype")
    if dtype not in DTYPES:
        fail(f"plan.tensors[{index}].dtype {dtype!r} is not one of {', '.join(DTYPES)}")
    shape = tensor.get("shape")
    if not isinstance(shape, list) or not all(_is_count(d) and 0 < d < (1 << 31) for d in shape):
        fail(f"plan.tensors[{index}].shape must be a list of positive integers below 2^31")
    offset, nbytes = tensor.get("offset"), tensor.get("nbytes")
    if not _is_count(offset) or not _is_count(nbytes):
        fail(f"plan.tensors[{index}].offset/nbytes must be non-negative integers")
    expected = math.prod(shape) * DTYPES[dtype][1]
    if nbytes != expected:
        fail(f"plan.tensors[{index}] has {nbytes} bytes; its shape {shape} of {dtype} needs {expected}")
    if tensor["storage"] == "arena" and offset + nbytes > arena:
        fail(f"plan.tensors[{index}] ends at {offset + nbytes}, past the arena ({arena} bytes)")
    if tensor["storage"] == "const":
        _check_pattern(tensor.get("symbol"), C_IDENTIFIER, f"plan.tensors[{index}].symbol", "a C identifier",
                       fail)


def _check_sizes(metadata: dict, fail) -> None:
    """The memory totals must be the plan's: a crafted size is refused, not built."""
    memory, tensors = metadata["memory"], metadata["plan"]["tensors"]
    end = max([t["offset"] + t["nbytes"] for t in tensors if t["storage"] == "arena"] + [0])
    if memory["arena_bytes"] > end + ARENA_SLACK_BYTES:
        fail(f"memory.arena_bytes is {memory['arena_bytes']}, but the plan's tensors end at byte {end}")
    if memory["peak_live_lower_bound_bytes"] > memory["arena_bytes"]:
        fail("memory.peak_live_lower_bound_bytes is larger than the arena")
    consts = [t["nbytes"] for t in tensors if t["storage"] == "const"]
    if memory["constant_bytes"] > sum(consts) + CONSTANT_SLACK_BYTES * len(consts):
        fail(f"memory.constant_bytes is {memory['constant_bytes']}, "
             f"but the plan's constants hold {sum(consts)}")
    io_ids = {e["tensor"] for side in ("inputs", "outputs") for e in metadata[side]}  # a tensor may be both
    io = sum(tensors[i]["nbytes"] for i in io_ids)
    if memory["io_bytes"] != io:
        fail(f"memory.io_bytes is {memory['io_bytes']}, but the inputs and outputs hold {io}")


def _is_count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


class ModelArchive:
    """A read, validated MLF archive, held in memory (nothing is written until extract())."""

    def __init__(self, path: Path, files: Dict[str, bytes], metadata: dict):
        self.path = Path(path)
        self._files = files
        self.metadata = metadata

    @property
    def name(self) -> str:
        return self.metadata["model_name"]

    @property
    def model_hash(self) -> str:
        return self.metadata["model_hash"]

    @property
    def inputs(self) -> list:
        """[{name, shape, dtype, tensor, quantization}] in the model's input order."""
        return self.metadata["inputs"]

    @property
    def outputs(self) -> list:
        return self.metadata["outputs"]

    @property
    def tensors(self) -> list:
        """plan.tensors; a tensor id indexes this list and utvm_model.tensors in C."""
        return self.metadata["plan"]["tensors"]

    @property
    def kernels(self) -> list:
        """plan.kernels, in execution order (the order of utvm_model.kernels in C)."""
        return self.metadata["plan"]["kernels"]

    @property
    def memory(self) -> dict:
        return self.metadata["memory"]

    def file_names(self) -> List[str]:
        return sorted(self._files)

    def read(self, name: str) -> bytes:
        """The bytes of one archive entry."""
        if name not in self._files:
            raise KeyError(f"{self.path} has no entry {name!r}")
        return self._files[name]

    def source_files(self) -> List[str]:
        """Archive paths of the C sources to compile (codegen/host/src/*.c)."""
        return [n for n in sorted(self._files) if n.startswith(SOURCE_DIR) and n.endswith(".c")]

    def header_files(self) -> List[str]:
        return [n for n in sorted(self._files) if n.startswith(INCLUDE_DIR) and n.endswith(".h")]

    def extract(self, dest) -> Path:
        """Write the archive's files under `dest` (created if needed); return `dest`."""
        return extract_files(self._files, Path(dest))

    def find_io(self, which: str, key: Union[int, str]) -> dict:
        """An input or output entry by name or position."""
        entries = self.inputs if which == "input" else self.outputs
        if isinstance(key, int) and not isinstance(key, bool):
            if not 0 <= key < len(entries):
                raise IndexError(f"{self.name} has {len(entries)} {which}s; there is no {which} {key}")
            return entries[key]
        for entry in entries:
            if entry["name"] == key:
                return entry
        names = ", ".join(repr(e["name"]) for e in entries)
        raise KeyError(f"{self.name} has no {which} named {key!r}; its {which}s are {names}")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r}, model={self.name!r})"


def read_model_archive(path, cls=ModelArchive) -> ModelArchive:
    """Read and validate the archive at `path` (as cls, a ModelArchive subclass); raise ArchiveError
    if it is malformed or unsafe."""
    path = Path(path)
    return archive_from_files(path, read_archive(path), cls)


def archive_from_files(path, files: Dict[str, bytes], cls=ModelArchive) -> ModelArchive:
    """Validate archive entries held in memory ({archive path: bytes}) as cls; `path` names them in
    errors. The same checks as read_model_archive, for an archive not yet written."""
    path = Path(path)
    if METADATA_FILE not in files:
        raise ArchiveError(f"{path}: no metadata.json; this is not a Model Library Format archive")
    metadata = parse_metadata(files[METADATA_FILE], str(path))
    archive = cls(path, files, metadata)
    if not archive.source_files():
        raise ArchiveError(f"{path}: no C sources under {SOURCE_DIR}")
    for header in REQUIRED_HEADERS:
        if INCLUDE_DIR + header not in files:
            raise ArchiveError(f"{path}: missing {INCLUDE_DIR}{header}")
    return archive
