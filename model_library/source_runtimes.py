"""Run a model in the runtime of the framework it came from: the answers no TVM code touched.

- TFLite: the interpreter from `ai-edge-litert`, with its reference kernels (the integer
  arithmetic TFLite Micro runs on microcontrollers; its optimized kernels round int8 differently).
- ONNX: ONNX Runtime on the CPU.
- PyTorch: the module itself (an nn.Module, or an ExportedProgram's module).

`run_source(source, inputs)` returns the outputs in the model's output order, or raises
`Unavailable` saying why it cannot (the runtime is not installed, or it refuses the model), so the
check can say which references it used.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

RUNTIME_NAMES = {"tflite": "the TFLite interpreter", "onnx": "ONNX Runtime", "torch": "PyTorch"}
FORMAT_NAMES = {"tflite": "TFLite", "onnx": "ONNX", "torch": "PyTorch"}


class Unavailable(Exception):
    """The source framework's runtime cannot run this model here (the message says why)."""


@dataclass
class SourceModel:
    """Where a model came from: its format and the file or object the user gave."""

    fmt: str
    model: Any  # a Path for files; the nn.Module or ExportedProgram for PyTorch objects
    example_inputs: Any = None

    @property
    def runtime_name(self) -> str:
        return RUNTIME_NAMES.get(self.fmt, self.fmt)

    @property
    def format_name(self) -> str:
        return FORMAT_NAMES.get(self.fmt, self.fmt)


def run_source(source: SourceModel, inputs: list) -> list:
    """The source runtime's outputs for `inputs` (numpy arrays in the model's input order)."""
    if source.fmt == "tflite":
        return _run_tflite(Path(source.model), inputs)
    if source.fmt == "onnx":
        return _run_onnx(Path(source.model), inputs)[0]
    if source.fmt == "torch":
        return _run_torch(source.model, inputs)
    raise Unavailable(f"a {source.fmt} model has no source runtime to compare with")


def run_source_layers(source: SourceModel, inputs: list, keys: list) -> dict:
    """The source runtime's tensors of its layers, {key: array} for the `keys` it has.

    Keys are TFLite tensor names (the interpreter keeps every intermediate tensor), ONNX value
    names (exposed as extra graph outputs) or FX node names of a torch.export program (each node's
    value, read as the graph runs). Raises Unavailable as `run_source` does.
    """
    if source.fmt == "tflite":
        return _run_tflite(Path(source.model), inputs, keys)[1]
    if source.fmt == "onnx":
        return _run_onnx(Path(source.model), inputs, keys)[1]
    if source.fmt == "torch":
        return _run_torch_nodes(source.model, inputs, keys)
    raise Unavailable(f"a {source.fmt} model has no source runtime to compare with")


def _run_tflite(path: Path, inputs: list, keys: list | None = None):
    try:
        from ai_edge_litert import interpreter as litert
    except ImportError:
        raise Unavailable("the TFLite interpreter is not installed (pip install ai-edge-litert)") from None
    try:
        with _quiet():
            interpreter = litert.Interpreter(
                model_path=str(path),
                experimental_op_resolver_type=litert.OpResolverType.BUILTIN_REF,
                num_threads=1,
                experimental_preserve_all_tensors=keys is not None,
            )
            interpreter.allocate_tensors()
        details = interpreter.get_input_details()
        _check_count("TFLite interpreter", len(details), inputs)
        for detail, array in zip(details, inputs):
            interpreter.set_tensor(detail["index"], _as_shape(array, detail["shape"]))
        with _quiet():
            interpreter.invoke()
        outputs = [interpreter.get_tensor(d["index"]) for d in interpreter.get_output_details()]
        if keys is None:
            return outputs
        wanted, found = set(keys), {}
        for detail in interpreter.get_tensor_details():
            if detail["name"] in wanted and detail["name"] not in found:
                found[detail["name"]] = np.array(interpreter.get_tensor(detail["index"]))
        return outputs, found
    except Unavailable:
        raise
    except Exception as err:
        raise Unavailable(f"the TFLite interpreter cannot run the model: {_first_line(err)}") from None


def _run_onnx(path: Path, inputs: list, keys: list | None = None) -> tuple:
    try:
        import onnx
        import onnxruntime
    except ImportError:
        raise Unavailable("ONNX Runtime is not installed (pip install onnxruntime)") from None
    try:
        model = onnx.load(str(path))
        initializers = {i.name for i in model.graph.initializer}
        names = [i.name for i in model.graph.input if i.name not in initializers]
        _check_count("ONNX Runtime", len(names), inputs)
        declared = [o.name for o in model.graph.output]
        extra = [k for k in dict.fromkeys(keys or []) if k not in declared and k not in initializers]
        for key in extra:  # an output without a type: ONNX Runtime infers it
            model.graph.output.append(onnx.ValueInfoProto(name=key))
        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3  # errors only: old opsets make it warn on every load
        session = onnxruntime.InferenceSession(
            model.SerializeToString(), options, providers=["CPUExecutionProvider"]
        )
        outputs = [np.asarray(o) for o in session.run(None, dict(zip(names, inputs)))]
        by_name = dict(zip(declared + extra, outputs))
        return outputs[: len(declared)], {k: by_name[k] for k in keys or [] if k in by_name}
    except Unavailable:
        raise
    except Exception as err:
        raise Unavailable(f"ONNX Runtime cannot run the model: {_first_line(err)}") from None


def _run_torch(model, inputs: list) -> list:
    try:
        import torch
    except ImportError:
        raise Unavailable("PyTorch is not installed") from None
    try:
        if isinstance(model, (str, Path)):
            model = torch.export.load(str(model))
        module = model.module() if isinstance(model, torch.export.ExportedProgram) else model
        with torch.no_grad():
            result = module(*[torch.from_numpy(np.ascontiguousarray(a)) for a in inputs])
    except Exception as err:
        raise Unavailable(f"PyTorch cannot run the model: {_first_line(err)}") from None
    leaves = result if isinstance(result, (list, tuple)) else [result]
    return [leaf.detach().cpu().numpy() for leaf in _flatten(leaves)]


def _run_torch_nodes(model, inputs: list, keys: list) -> dict:
    try:
        import torch
    except ImportError:
        raise Unavailable("PyTorch is not installed") from None
    wanted, found = set(keys), {}

    try:
        if isinstance(model, (str, Path)):
            model = torch.export.load(str(model))
        if not isinstance(model, torch.export.ExportedProgram):
            raise Unavailable("reading a PyTorch model's layers needs its torch.export program")
        with warnings.catch_warnings():  # torch 2.13 warns of its own deprecated pytree class here
            warnings.simplefilter("ignore", FutureWarning)
            model = model.run_decompositions()  # the program TVM's importer converts, node for node

        class Recorder(torch.fx.Interpreter):
            def run_node(self, node):
                value = super().run_node(node)
                if node.name in wanted and isinstance(value, torch.Tensor):
                    found[node.name] = value.detach().cpu().numpy()
                return value

        with torch.no_grad():
            Recorder(model.module()).run(*[torch.from_numpy(np.ascontiguousarray(a)) for a in inputs])
    except Unavailable:
        raise
    except Exception as err:
        raise Unavailable(f"PyTorch cannot run the model: {_first_line(err)}") from None
    return found


def _flatten(values) -> list:
    out = []
    for value in values:
        if isinstance(value, (list, tuple)):
            out.extend(_flatten(value))
        else:
            out.append(value)
    return out


def _check_count(runtime: str, expected: int, inputs: list) -> None:
    if expected != len(inputs):
        raise Unavailable(f"{runtime} takes {expected} inputs; the archive takes {len(inputs)}")


def _as_shape(array: np.ndarray, shape) -> np.ndarray:
    shape = tuple(int(d) for d in shape)
    return array.reshape(shape) if array.shape != shape and array.size == int(np.prod(shape)) else array


@contextlib.contextmanager
def _quiet():
    """The TFLite interpreter prints its delegate choice to stdout; keep the user's output clean."""
    with contextlib.redirect_stdout(io.StringIO()):
        yield


def _first_line(err: Exception) -> str:
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return f"{type(err).__name__}: {lines[0] if lines else ''}".rstrip(": ")
