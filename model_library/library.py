"""Read a Model Library Format archive back: `load(path) -> ModelLibrary`.

`load` reads every entry into memory after checking it (no absolute paths, no `..`, no links),
parses and validates metadata.json, refuses a newer format version, and checks that the sources
metadata.json relies on are present. Nothing is written to disk until `extract()`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from . import metadata as md
from .archive import extract_files, read_archive
from .errors import ArchiveError

SOURCE_DIR = "codegen/host/src/"
INCLUDE_DIR = "codegen/host/include/"
REQUIRED_HEADERS = ("utvm_model_config.h",)


class ModelLibrary:
    """A loaded, validated MLF archive."""

    def __init__(self, path: Path, files: dict, metadata: dict):
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

    def file_names(self) -> list:
        return sorted(self._files)

    def read(self, name: str) -> bytes:
        """The bytes of one archive entry."""
        if name not in self._files:
            raise KeyError(f"{self.path} has no entry {name!r}")
        return self._files[name]

    def source_files(self) -> list:
        """Archive paths of the C sources to compile (codegen/host/src/*.c)."""
        return [n for n in sorted(self._files) if n.startswith(SOURCE_DIR) and n.endswith(".c")]

    def header_files(self) -> list:
        return [n for n in sorted(self._files) if n.startswith(INCLUDE_DIR) and n.endswith(".h")]

    def extract(self, dest) -> Path:
        """Write the archive's files under `dest` (created if needed); return `dest`."""
        return extract_files(self._files, Path(dest))

    def find_io(self, which: str, key) -> dict:
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

    def input_c_array(self, key, array, symbol: str | None = None) -> str:
        """C source defining a const array holding `array` for input `key` (for test firmware)."""
        from .c_literals import c_array_body, c_element_type
        from .c_names import c_identifier

        entry = self.find_io("input", key)
        data = np.asarray(array, dtype=entry["dtype"]).reshape(entry["shape"])
        symbol = symbol or c_identifier(f"utvm_input_{entry['name']}")
        ctype = c_element_type(entry["dtype"])
        return (
            f"#include <stdint.h>\nconst {ctype} {symbol}[{max(data.size, 1)}] = {{\n"
            f"{c_array_body(data, entry['dtype'])}\n}};\n"
        )

    def __repr__(self) -> str:
        return f"ModelLibrary({str(self.path)!r}, model={self.name!r})"


def load(path) -> ModelLibrary:
    """Read and validate the archive at `path`; raise ArchiveError if it is malformed or unsafe."""
    path = Path(path)
    return from_files(path, read_archive(path))


def from_files(path, files: dict) -> ModelLibrary:
    """Validate archive entries held in memory ({archive path: bytes}); `path` names them in errors."""
    path = Path(path)
    if md.METADATA_FILE not in files:
        raise ArchiveError(f"{path}: no metadata.json; this is not a Model Library Format archive")
    metadata = md.parse(files[md.METADATA_FILE], str(path))
    library = ModelLibrary(path, files, metadata)
    if not library.source_files():
        raise ArchiveError(f"{path}: no C sources under {SOURCE_DIR}")
    for header in REQUIRED_HEADERS:
        if INCLUDE_DIR + header not in files:
            raise ArchiveError(f"{path}: missing {INCLUDE_DIR}{header}")
    return library
