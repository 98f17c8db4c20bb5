"""Compile models with TVM into Model Library Format archives, and read them back.

- `compile(model, output, target="c", ...)`: a TFLite / ONNX / Relax / PyTorch model in, an MLF
  archive (tar) out, with a static memory plan, TVM-generated C kernels and an AOT entry point.
- `load(path)`: read and validate an archive into a `ModelLibrary`.
- `HostReference(library)`: build the archive's C for this machine and run it from Python.
- `add_runtime_library(model, archive, target, ...)`: add TVM's own runtime library of the model for
  a board (a tvm_runtime project runs it in the Relax VM over TVM RPC).

The format is documented in docs/model-library-format.md. Heavy modules (TVM, numpy) are
imported on first use, so importing this package is cheap.
"""

from __future__ import annotations

from utvm.project_api.lazy_exports import lazy_exports

from .errors import ArchiveError, KernelError, ModelError, TargetError, UserError
from .metadata import FORMAT_VERSION

_LAZY = {
    "compile": ("compiler", "compile_model"),
    "compile_model": ("compiler", "compile_model"),
    "relax_module": ("compiler", "relax_module"),
    "load": ("library", "load"),
    "ModelLibrary": ("library", "ModelLibrary"),
    "HostReference": ("host_reference", "HostReference"),
    "parse_target": ("targets", "parse_target"),
    "add_runtime_library": ("runtime_library", "add_runtime_library"),
}

__all__ = ["FORMAT_VERSION", "ArchiveError", "KernelError", "ModelError", "TargetError", "UserError", *_LAZY]


__getattr__ = lazy_exports(__name__, _LAZY, globals())
