"""Validation against the source framework: the device, kernel by kernel, against the model's own
runtime (the TFLite interpreter with its reference kernels, ONNX Runtime, PyTorch).

The host reference (validate.py) runs the archive's own C, so a kernel TVM compiled wrongly is
wrong on both sides. Here the reference is the framework the model came from, which no TVM code
touched: the device runs the plan one kernel at a time, and each kernel that writes the output
tensor of a source layer (the archive's layer map says which) is compared with the framework's
tensor of that layer. A kernel that computes only part of a layer (a dequantize before a softmax)
or a layout change has no framework tensor; the report says so and the next kernel that has one is
compared. With ``isolate`` (the default) every kernel runs on the framework's tensors: before a
kernel runs, each of its inputs that is a source layer's output and differs on the device is
written with the framework's value, so a difference within the tolerance (int8 rounding one step
apart) cannot grow through later layers and make a correct kernel look wrong. Tolerance:
model_library's (compare.py), the compile-time check's rule.
"""

from __future__ import annotations

import hashlib
import tempfile
from os import PathLike
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional

import numpy as np
from utvm.model_library.source_runtimes import FORMAT_NAMES, SourceModel, Unavailable, run_source_layers
from utvm.project_api.errors import UserError

from .compare import compare, tolerance_text
from .layer_names import kernel_layers, layers_label, output_layer, source_layers
from .validate import TensorCheck, ValidationReport


def validate_against_source(
    session,
    inputs: Mapping[str, np.ndarray],
    model_file: Optional[str] = None,
    on_kernel: Optional[Callable[[int, str], None]] = None,
    isolate: bool = True,
) -> ValidationReport:
    """Run ``session``'s plan kernel by kernel and compare with the source framework's layers.

    The model is the one the archive carries, or ``model_file`` (its sha256 must be the one the
    archive records; for PyTorch, a torch.export program's file or the ExportedProgram itself).
    ``inputs`` (by name) must already be on the device.
    """
    library = session.library
    metadata = library.metadata
    source = metadata.get("source_layers")
    if not source:
        raise UserError(
            f"{library.path}: the archive has no layer map, so its kernels cannot be matched with the "
            "source model's layers",
            hint="recompile the model with this utvm (`utvm compile`), or validate against the host "
            "reference",
        )
    fmt, framework = source["format"], FORMAT_NAMES.get(source["format"], source["format"])
    keys = [layer["output"] for layer in source_layers(metadata)]
    ordered = [inputs[entry["name"]] for entry in library.inputs]
    with _model_path(library, source, model_file) as path:
        try:
            reference = run_source_layers(SourceModel(fmt, path), ordered, keys)
        except Unavailable as why:
            raise UserError(f"cannot run the source model: {why}",
                            hint="install the framework, or validate against the host reference") from None

    checks: List[TensorCheck] = []
    notes: List[str] = []
    known: Dict[int, np.ndarray] = {}  # root tensor id -> the framework's value of its bytes
    for entry in library.inputs:
        known[int(entry["tensor"])] = np.asarray(inputs[entry["name"]])
    for kernel in library.kernels:
        index, name = int(kernel["index"]), str(kernel["name"])
        if on_kernel is not None:
            on_kernel(index, name)
        if isolate:
            _write_framework_inputs(session, library, kernel, known)
        session.run_kernel(index)
        layers = kernel_layers(metadata, index)
        layer = output_layer(metadata, index)
        label = layers_label(layers) or "no layer"
        if layer is None:
            notes.append(f"kernel {index} ({name}; {label}): its output is no {framework} tensor "
                         "(part of a layer, or a layout change); the next kernel that writes one is compared")
            continue
        tensor_id = int(kernel["outputs"][0])
        spec = library.tensors[tensor_id]
        want = reference.get(layer["output"])
        if want is None or np.asarray(want).size != int(np.prod(spec["shape"])):
            shape = list(np.shape(want))
            what = "has no tensor" if want is None else f"has shape {shape}, not {spec['shape']}"
            notes.append(f"kernel {index} ({name}; {label}): {framework} {what} for "
                         f"{layer['output'][:80]!r}; not compared")
            continue
        got = session.read_plan_tensor(tensor_id)
        want = np.asarray(want).reshape(got.shape)
        checks.append(_check(index, name, spec, got, want, layers))
        if want.dtype == got.dtype:
            known[_root(library, tensor_id)] = want
    session.note_inputs_consumed()
    return ValidationReport(checks=checks, reference=f"{framework} model ({_runtime(fmt)})", isolated=isolate,
                            tolerance=tolerance_text(), notes=notes)


def _root(library, tensor_id: int) -> int:
    return int(library.tensors[tensor_id].get("view_of", tensor_id))


def _write_framework_inputs(session, library, kernel: Mapping[str, Any], known: Dict[int, np.ndarray]):
    """Give the kernel the framework's values of its inputs where the device's differ."""
    outputs = set(kernel["outputs"])
    for tensor_id in dict.fromkeys(kernel["args"]):
        root = _root(library, tensor_id)
        if tensor_id in outputs or library.tensors[root]["storage"] != "arena" or root not in known:
            continue
        device_value = session.read_plan_tensor(root)
        want = known[root].reshape(device_value.shape)
        if not np.array_equal(device_value, want):
            session.device.write_tensor(root, np.ascontiguousarray(want))


def _check(index: int, name: str, spec: Mapping[str, Any], got, want, layers) -> TensorCheck:
    return TensorCheck(
        kernel_index=index, kernel_name=name, tensor_id=int(spec["id"]), tensor_name=str(spec["name"]),
        dtype=str(spec["dtype"]), shape=list(spec["shape"]), comparison=compare(got, want),
        layers=list(layers),
    )


def _runtime(fmt: str) -> str:
    from utvm.model_library.source_runtimes import RUNTIME_NAMES

    return RUNTIME_NAMES.get(fmt, fmt)


class _model_path:
    """The source model as a file: the one given, or the archive's copy in a temporary folder."""

    def __init__(self, library, source: Dict[str, Any], model_file: Optional[str]):
        self.library, self.source, self.model_file = library, source, model_file
        self.folder: Optional[tempfile.TemporaryDirectory] = None

    def __enter__(self) -> Path:
        if self.model_file is not None and not isinstance(self.model_file, (str, PathLike)):
            return self.model_file  # a torch ExportedProgram, given from Python
        if self.model_file is not None:
            path = Path(self.model_file)
            if not path.is_file():
                raise UserError(f"source model {path} not found",
                                hint="give the model file the archive was compiled from")
            if self.source["format"] != "torch":  # a torch program's digest is of its imported module
                digest = hashlib.sha256(path.read_bytes()).hexdigest()
                if digest != self.source["model_sha256"]:
                    raise UserError(
                        f"{path} is not the model this archive was compiled from (sha256 {digest[:16]}..., "
                        f"the archive records {self.source['model_sha256'][:16]}...)",
                        hint="give the model file that `utvm compile` read")
            return path
        member = self.source.get("model_file")
        if not member:
            raise UserError(
                f"{self.library.path} does not carry its source model",
                hint="give it with --source-model MODEL (a PyTorch model: its torch.export .pt2 file)")
        self.folder = tempfile.TemporaryDirectory(prefix="utvm-source-")
        path = Path(self.folder.name) / Path(member).name
        path.write_bytes(self.library.read(member))
        return path

    def __exit__(self, *exc_info) -> None:
        if self.folder is not None:
            self.folder.cleanup()
