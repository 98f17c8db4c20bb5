"""Build a model for TVM's own runtime (the Relax VM) as a board's shared library, into its archive.

A tvm_runtime project (the Jetson template's) runs the model under TVM's runtime on the board, not
as C kernels under utvm's runtime. The template cannot build that library itself (templates stand
on the standard library alone), so the client builds it when it compiles the model: TVM compiles
the same Relax module the archive's C kernels come from (quantized operators rewritten alike) for
the board's CPU target, ``{"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mcpu": ...}``, or with
``device="cuda"`` for the GPU of the board's TVM target tag with that CPU as its host; the library
is linked with the cross compiler (``tvm.support.cc.cross_compiler``). It goes into the archive as
``runtime_library/model.so`` with ``library.json`` (see utvm.project_api.runtime_library).

With TVM 0.27 a CUDA library carries the kernels as CUDA C, which TVM compiles when the board
loads the library (NVRTC or nvcc on the board); the Jetson template checks for one at build.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

from utvm.project_api.mlf import read_archive
from utvm.project_api.runtime_library import INFO_MEMBER, LIBRARY_MEMBER, library_info

from .archive import write_archive
from .compiler import relax_module
from .errors import ModelError, TargetError
from .library import load
from .targets import target_string

DEVICES = ("cpu", "cuda")


def runtime_target(target: Mapping[str, Any], device: str = "cpu", gpu_tag: Optional[str] = None):
    """TVM's Target for the library: the board's CPU target, or its GPU tag hosted by that CPU."""
    import tvm

    if device not in DEVICES:
        raise TargetError(f"unknown device {device!r}", hint=f"use one of {', '.join(DEVICES)}")
    if target.get("kind") != "llvm":
        raise TargetError(f"a TVM runtime library is built with an llvm target, not {target.get('kind')!r}",
                          hint='give {"kind": "llvm", "mtriple": ..., "mcpu": ...}')
    try:
        if device == "cpu":
            return tvm.target.Target(dict(target))
        if not gpu_tag:
            raise TargetError("device=cuda needs the board's TVM target tag (its record's gpu.tvm_tag)")
        return tvm.target.Target(gpu_tag, host=dict(target))
    except TargetError:
        raise
    except Exception as err:
        raise TargetError(f"TVM rejects the target {gpu_tag or target_string(target)}: {err}") from None


def add_runtime_library(
    model: Any,
    archive: str | Path,
    target: Mapping[str, Any],
    *,
    device: str = "cpu",
    gpu_tag: Optional[str] = None,
    cc: str = "aarch64-linux-gnu-gcc",
    fmt: Optional[str] = None,
    input_shapes: Optional[dict] = None,
    progress: Optional[Callable[[str], None]] = None,
) -> Path:
    """Build `model` for TVM's runtime on the board and add the library to `archive` (an MLF archive
    compiled from the same model); returns the archive's path. Raises ModelError (a UserError)
    when the model or the cross compiler fails; the archive is then left as it was."""
    import tvm
    from tvm.support import cc as tvm_cc

    progress = progress or (lambda line: None)
    archive = Path(archive)
    library = load(archive)
    options = library.metadata.get("options") or {}
    tvm_target = runtime_target(target, device, gpu_tag)
    if shutil.which(cc) is None:
        raise ModelError(f"the cross compiler {cc!r} is not on PATH; it links TVM's library for the board",
                         hint="install it (Debian: apt-get install gcc-aarch64-linux-gnu) or name another "
                              "with -o cc=...")
    progress(f"building {library.name} for TVM's runtime: {gpu_tag or target_string(target)} "
             f"(device {device})")
    mod = relax_module(model, fmt=fmt, input_shapes=input_shapes,
                       integer_ops=bool(options.get("integer_ops", True)), rounding=options.get("rounding"))
    try:
        executable = tvm.compile(mod, target=tvm_target)
    except Exception as err:
        first = next((line for line in str(err).splitlines() if line.strip()), type(err).__name__)
        raise ModelError(f"TVM could not build {library.name} for {tvm_target.kind.name}: {first}") from None
    with tempfile.TemporaryDirectory(prefix="utvm-runtime-library-") as tmp:
        path = Path(tmp) / "model.so"
        try:
            executable.export_library(str(path), fcompile=tvm_cc.cross_compiler(cc))
        except Exception as err:
            raise ModelError(f"linking TVM's library with {cc} failed: {str(err).strip()[-1500:]}") from None
        data = path.read_bytes()
    described = target_string(target) if device == "cpu" else f"{gpu_tag} (host {target_string(target)})"
    info = library_info(data, target=dict(target), target_str=described, device=device,
                        gpu_tag=gpu_tag if device == "cuda" else None, cc=cc, tvm_version=tvm.__version__,
                        model_hash=library.model_hash)
    files = read_archive(archive)
    files[LIBRARY_MEMBER] = data
    files[INFO_MEMBER] = (json.dumps(info, indent=2, sort_keys=True) + "\n").encode()
    progress(f"adding {LIBRARY_MEMBER} ({len(data)} bytes) to {archive}")
    return write_archive(archive, files)
