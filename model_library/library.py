"""Read a Model Library Format archive back: `load(path) -> ModelLibrary`.

`load` reads and checks the archive with the floor's reader (utvm.project_api.mlf): every entry
is checked (no absolute paths, no `..`, no links), metadata.json is validated, a newer format
version is refused, and the sources metadata.json relies on must be present. Nothing is written to
disk until `extract()`. ModelLibrary adds what needs numpy.
"""

from __future__ import annotations

import numpy as np
from utvm.project_api.mlf import ModelArchive, archive_from_files, read_model_archive


class ModelLibrary(ModelArchive):
    """A loaded, validated MLF archive."""

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


def load(path) -> ModelLibrary:
    """Read and validate the archive at `path`; raise ArchiveError if it is malformed or unsafe."""
    return read_model_archive(path, cls=ModelLibrary)


def from_files(path, files: dict) -> ModelLibrary:
    """Validate archive entries held in memory ({archive path: bytes}); `path` names them in errors."""
    return archive_from_files(path, files, cls=ModelLibrary)
