"""Import a model (TFLite, ONNX, Relax, PyTorch) into a Relax IRModule with its weights bound.

Every failure is a ModelError that names the model and says what is wrong: a corrupt or
truncated file, an unknown format, an operator TVM's importer does not support, a dynamic
shape, or a model without inputs. TVM and the format packages are imported lazily.
"""

from __future__ import annotations

import hashlib
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from .c_names import c_identifier
from .errors import ModelError
from .importer_errors import check_onnx_tensors, check_tflite_operators, run_importer
from .onnx_legacy import restate_legacy_ops

# utvm's plan and device runtime count a tensor's bytes, and the arena's, in 32 bits.
MAX_TENSOR_BYTES = 0xFFFFFFFF

FORMATS = ("tflite", "onnx", "relax", "torch")
_EXTENSIONS = {
    ".tflite": "tflite",
    ".onnx": "onnx",
    ".json": "relax",
    ".relax": "relax",
    ".tvmscript": "relax",
    ".pt2": "torch",
    ".ep": "torch",
}
_TFLITE_DTYPES = {
    0: "float32",
    1: "float16",
    2: "int32",
    3: "uint8",
    4: "int64",
    6: "bool",
    7: "int16",
    9: "int8",
    10: "float64",
    15: "uint32",
    16: "uint16",
}


@dataclass
class TensorInfo:
    """One model input or output as the user sees it."""

    name: str
    shape: tuple = ()
    dtype: str = ""
    quantization: dict | None = None


@dataclass
class ImportedModel:
    """A model in Relax form: `mod["main"]` takes the inputs only; weights are constants."""

    mod: Any
    name: str
    fmt: str
    label: str  # how error messages refer to the model (its path, or a description)
    digest: str  # sha256 of what was imported (model bytes, or the serialised module)
    inputs: list = field(default_factory=list)
    output_names: list = field(default_factory=list)
    # The output shapes the model file declares, where it declares them (checked against the import).
    declared_output_shapes: list = field(default_factory=list)
    output_quantization: list = field(default_factory=list)


def sanitize_name(name: str) -> str:
    """A C identifier made from `name` (used as the model name and symbol prefix)."""
    cleaned = c_identifier(name.strip(), prefix="m_").rstrip("_")
    return cleaned if cleaned not in ("", "m") else "model"


def detect_format(path: Path, data: bytes) -> str:
    """The model format from the file name, falling back to the file's first bytes."""
    fmt = _EXTENSIONS.get(path.suffix.lower())
    if fmt is not None:
        return fmt
    if len(data) >= 8 and data[4:8] == b"TFL3":
        return "tflite"
    if data[:2] == b"PK":
        return "torch"
    raise ModelError(
        f"{path}: unknown model format (extension {path.suffix or '(none)'!r})",
        hint=f"use one of {', '.join(sorted(_EXTENSIONS))}, or say which with "
        f"--format {{{','.join(FORMATS)}}}",
    )


def import_model(
    model: Any,
    fmt: str | None = None,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    model_name: str | None = None,
    example_inputs: Sequence[Any] | None = None,
) -> ImportedModel:
    """Import `model` (a path, a Relax IRModule, or a torch ExportedProgram / nn.Module)."""
    if fmt is not None and fmt not in FORMATS:
        raise ModelError(f"unknown model format {fmt!r}", hint=f"use one of {', '.join(FORMATS)}")
    if isinstance(model, (str, Path)):
        imported = _import_file(Path(model), fmt, input_shapes)
    elif _is_ir_module(model):
        imported = _import_relax(model, "Relax IRModule", "model", _module_digest(model))
    elif _is_torch_object(model):
        imported = _import_torch(model, example_inputs)
    else:
        raise ModelError(
            f"cannot compile an object of type {type(model).__name__}",
            hint="pass a model file path, a tvm.IRModule, or a torch ExportedProgram / nn.Module",
        )
    if model_name:
        imported.name = sanitize_name(model_name)
    _check_static(imported)
    return imported


def require_model_file(path: Path) -> None:
    """Refuse a model path that is not a file, before any slow import."""
    if not path.is_file():
        raise ModelError(
            f"{path}: no such model file",
            hint="check the path; a model is a .tflite, .onnx or .pt2 file",
        )


def _import_file(path: Path, fmt: str | None, input_shapes) -> ImportedModel:
    require_model_file(path)
    data = path.read_bytes()
    if not data:
        raise ModelError(f"{path}: the file is empty (corrupt or truncated model)")
    fmt = fmt or detect_format(path, data)
    digest = hashlib.sha256(data).hexdigest()
    name = sanitize_name(path.name.split(".")[0])
    if fmt == "tflite":
        return _import_tflite(path, data, name, digest, input_shapes)
    if fmt == "onnx":
        return _import_onnx(path, data, name, digest, input_shapes)
    if fmt == "relax":
        return _import_relax(_read_relax_file(path, data), str(path), name, digest)
    model = _load_torch_file(path)
    imported = _import_torch(model, None, label=str(path))
    imported.name, imported.digest = name, digest
    return imported


# ---------------------------------------------------------------- TFLite


def _import_tflite(path: Path, data: bytes, name: str, digest: str, input_shapes) -> ImportedModel:
    import tflite

    if len(data) < 8 or data[4:8] != b"TFL3":
        raise ModelError(
            f"{path}: not a TFLite flatbuffer (no TFL3 identifier); the file is corrupt or truncated"
        )
    try:
        model = tflite.Model.GetRootAsModel(data, 0)
        inputs, outputs = _check_tflite_structure(model, len(data))
    except ModelError:
        raise
    except Exception as err:  # flatbuffers raises struct/Index/ValueError on out-of-range reads
        raise ModelError(f"{path}: corrupt or truncated TFLite file ({type(err).__name__}: {err})") from None
    if not inputs:
        raise ModelError(f"{path}: the model has no inputs", hint="utvm compiles models that take an input")
    check_tflite_operators(model, path)
    from tvm import relax
    from tvm.relax.frontend.tflite import from_tflite

    shape_dict = {k: tuple(v) for k, v in (input_shapes or {}).items()} or None
    mod = run_importer(path, "TFLite", lambda: from_tflite(model, shape_dict=shape_dict))
    mod = _bind_detached_params(mod, relax)
    imported = ImportedModel(mod, name, "tflite", str(path), digest)
    imported.inputs = [TensorInfo(n, quantization=q) for n, q in inputs]
    imported.output_names = [n for n, _ in outputs]
    imported.output_quantization = [q for _, q in outputs]
    imported.declared_output_shapes = _tflite_output_shapes(model)
    return imported


def _tflite_output_shapes(model) -> list:
    """The output shapes the file declares (None where it leaves a dimension open, -1)."""
    subgraph = model.Subgraphs(0)
    shapes = []
    for i in range(subgraph.OutputsLength()):
        shape = tuple(int(d) for d in subgraph.Tensors(subgraph.Outputs(i)).ShapeAsNumpy())
        shapes.append(None if any(d < 0 for d in shape) else shape)
    return shapes


def _check_tflite_structure(model, size: int):
    """Walk the flatbuffer so a truncated file fails here, with a clear message, not deep in TVM."""
    if model.SubgraphsLength() < 1:
        raise ValueError("no subgraphs")
    for b in range(model.BuffersLength()):
        buffer = model.Buffers(b)
        if buffer.Offset() > 1 and buffer.Offset() + buffer.Size() > size:
            raise ValueError(f"buffer {b} extends past the end of the file")
        if buffer.DataLength():
            buffer.DataAsNumpy()  # numpy refuses a vector that runs past the end of the data
    for c in range(model.OperatorCodesLength()):
        model.OperatorCodes(c).BuiltinCode()
    graph = model.Subgraphs(0)
    for t in range(graph.TensorsLength()):
        tensor = graph.Tensors(t)
        tensor.ShapeAsNumpy()
        if tensor.Buffer() >= max(model.BuffersLength(), 1):
            raise ValueError(f"tensor {t} names buffer {tensor.Buffer()} of {model.BuffersLength()}")
    for o in range(graph.OperatorsLength()):
        op = graph.Operators(o)
        op.InputsAsNumpy()
        op.OutputsAsNumpy()

    def describe(index):
        tensor = graph.Tensors(int(index))
        return tensor.Name().decode("utf-8", "replace"), _tflite_quantization(tensor)

    inputs = [describe(i) for i in graph.InputsAsNumpy()] if graph.InputsLength() else []
    outputs = [describe(i) for i in graph.OutputsAsNumpy()] if graph.OutputsLength() else []
    return inputs, outputs


def _tflite_quantization(tensor) -> dict | None:
    params = tensor.Quantization()
    if params is None or params.ScaleLength() == 0:
        return None
    scales, zero_points = params.ScaleAsNumpy(), params.ZeroPointAsNumpy()
    if params.ScaleLength() != 1:
        return {
            "scale": [float(s) for s in scales],
            "zero_point": [int(z) for z in zero_points],
            "axis": int(params.QuantizedDimension()),
        }
    zero_point = int(zero_points[0]) if params.ZeroPointLength() else 0
    return {"scale": float(scales[0]), "zero_point": zero_point}


# ---------------------------------------------------------------- ONNX


def _import_onnx(path: Path, data: bytes, name: str, digest: str, input_shapes) -> ImportedModel:
    try:
        import onnx
    except ImportError:
        raise ModelError(
            f"{path}: reading ONNX models needs the onnx package", hint="pip install 'utvm[onnx]'"
        ) from None
    try:
        model = onnx.load_model_from_string(data)
        onnx.checker.check_model(model)
    except Exception as err:  # DecodeError on truncation, ValidationError on a malformed graph
        raise ModelError(f"{path}: corrupt or truncated ONNX file ({type(err).__name__}: {err})") from None
    check_onnx_tensors(model, path)
    restate_legacy_ops(model)
    initializers = {init.name for init in model.graph.initializer}
    graph_inputs = [i for i in model.graph.input if i.name not in initializers]
    if not graph_inputs:
        raise ModelError(f"{path}: the model has no inputs", hint="utvm compiles models that take an input")
    shapes = dict(input_shapes or {})
    dtypes = {}
    for value in graph_inputs:
        tensor_type = value.type.tensor_type
        dtypes[value.name] = onnx.helper.tensor_dtype_to_np_dtype(tensor_type.elem_type).name
        if value.name not in shapes:
            dims = [
                d.dim_value if d.HasField("dim_value") else (d.dim_param or "?")
                for d in tensor_type.shape.dim
            ]
            if any(not isinstance(d, int) or d <= 0 for d in dims):
                raise ModelError(
                    f"{path}: input {value.name!r} has a dynamic shape {dims}",
                    hint=f"give a static shape, e.g. input_shapes={{{value.name!r}: [1, ...]}}",
                )
            shapes[value.name] = dims
    from tvm import relax
    from tvm.relax.frontend.onnx import from_onnx

    mod = run_importer(path, "ONNX", lambda: from_onnx(model, shape_dict=shapes, dtype_dict=dtypes))
    mod = _bind_detached_params(mod, relax)
    imported = ImportedModel(mod, name, "onnx", str(path), digest)
    imported.inputs = [TensorInfo(value.name) for value in graph_inputs]
    imported.output_names = [value.name for value in model.graph.output]
    return imported


# ---------------------------------------------------------------- Relax


def _is_ir_module(obj) -> bool:
    try:
        import tvm
    except ImportError:
        return False
    return isinstance(obj, tvm.IRModule)


def _module_digest(mod) -> str:
    """sha256 of a module: its printed text plus the bytes of every constant, in program order.

    (tvm.ir.save_json and script(show_meta=True) crash on some Relax modules in TVM 0.27.)
    """
    import tvm
    from tvm import relax

    digest = hashlib.sha256(mod.script().encode())
    constants = []

    def visit(expr):
        if isinstance(expr, tvm.ir.expr.GenericConst):
            constants.append(expr.value.numpy())

    for gv in sorted(mod.get_global_vars(), key=lambda g: g.name_hint):
        func = mod[gv]
        if isinstance(func, relax.Function):
            relax.analysis.post_order_visit(func, visit)
    for array in constants:
        digest.update(f"{array.dtype}{array.shape}".encode() + array.tobytes())
    return digest.hexdigest()


def _read_relax_file(path: Path, data: bytes):
    import tvm

    try:
        text = data.decode("utf-8")
        if path.suffix.lower() == ".json":
            mod = tvm.ir.load_json(text)
        else:
            mod = tvm.script.from_source(text)
    except Exception as err:
        raise ModelError(f"{path}: cannot read the Relax module ({type(err).__name__}: {err})") from None
    if not isinstance(mod, tvm.IRModule):
        raise ModelError(f"{path}: the file holds a {type(mod).__name__}, not an IRModule")
    return mod


def _import_relax(mod, label: str, name: str, digest: str) -> ImportedModel:
    from tvm import relax

    if "main" not in [gv.name_hint for gv in mod.get_global_vars()]:
        raise ModelError(f"{label}: the module has no `main` function")
    main = mod["main"]
    if not isinstance(main, relax.Function):
        raise ModelError(f"{label}: `main` is not a Relax function")
    if main.attrs is not None and "num_input" in main.attrs:
        if int(main.attrs["num_input"]) != len(main.params):
            raise ModelError(
                f"{label}: `main` takes weights as parameters",
                hint="bind them first (relax.frontend.detach_params / relax.transform.BindParams)",
            )
    if not main.params:
        raise ModelError(f"{label}: the model has no inputs", hint="utvm compiles models that take an input")
    imported = ImportedModel(mod, name, "relax", label, digest)
    imported.inputs = [TensorInfo(p.name) for p in main.params]
    return imported


def _bind_detached_params(mod, relax):
    """Importers keep weights as extra `main` parameters; bind them as constants."""
    main = mod["main"]
    if main.attrs is None or "num_input" not in main.attrs:
        return mod
    mod, params = relax.frontend.detach_params(mod)
    num_input = int(mod["main"].attrs["num_input"])
    weights = params.get("main", [])
    if weights:
        binding = {p.name: t for p, t in zip(mod["main"].params[num_input:], weights)}
        mod = relax.transform.BindParams("main", binding)(mod)
    return mod


# ---------------------------------------------------------------- PyTorch


def _is_torch_object(obj) -> bool:
    # A user's model is a subclass of nn.Module defined in their own module, so the class's module
    # name says nothing; ask torch, but only if the caller already imported it (it is optional).
    torch = sys.modules.get("torch")
    if torch is None:
        return False
    return isinstance(obj, (torch.nn.Module, torch.export.ExportedProgram))


def _load_torch_file(path: Path):
    try:
        import torch
    except ImportError:
        raise ModelError(
            f"{path}: compiling PyTorch models needs torch", hint="pip install 'utvm[torch]'"
        ) from None
    try:
        return torch.export.load(str(path))
    except Exception as err:
        raise ModelError(
            f"{path}: cannot load the torch.export archive ({type(err).__name__}: {err})"
        ) from None


def _import_torch(model, example_inputs, label: str | None = None) -> ImportedModel:
    import torch
    from tvm import relax
    from tvm.relax.frontend.torch import from_exported_program

    label = label or f"PyTorch {type(model).__name__}"
    if isinstance(model, torch.nn.Module):
        if not example_inputs:
            raise ModelError(f"{label}: an nn.Module needs example_inputs to be exported")
        try:
            model = torch.export.export(model.eval(), tuple(example_inputs))
        except Exception as err:
            raise ModelError(f"{label}: torch.export failed ({type(err).__name__}: {err})") from None
    mod = run_importer(label, "PyTorch", lambda: from_exported_program(model))
    mod = _bind_detached_params(mod, relax)
    imported = _import_relax(mod, label, sanitize_name(type(model).__name__), _module_digest(mod))
    imported.fmt = "torch"
    return imported


# ---------------------------------------------------------------- checks shared by every format


def _check_static(imported: ImportedModel) -> None:
    """Fill in input shapes and dtypes from `main`, refusing symbolic (dynamic) shapes."""
    from tvm import relax

    main = imported.mod["main"]
    if len(main.params) != len(imported.inputs):
        imported.inputs = [TensorInfo(p.name) for p in main.params]
    for info, param in zip(imported.inputs, main.params):
        info.name = param.name
        info.shape, info.dtype = _static_tensor_type(param.ty, imported.label, f"input {param.name!r}", relax)
    ret = main.ret_ty
    ret_types = list(ret.fields) if isinstance(ret, relax.TupleType) else [ret]
    for index, ty in enumerate(ret_types):
        shape, _ = _static_tensor_type(ty, imported.label, f"output {index}", relax)
        declared = dict(enumerate(imported.declared_output_shapes)).get(index)
        if declared is not None and tuple(declared) != shape:
            raise ModelError(
                f"{imported.label}: the file declares output {index} with shape {list(declared)}, "
                f"but its operators compute {list(shape)}",
                hint="the model file is inconsistent; export it again from its framework",
            )


def _static_tensor_type(ty, label: str, what: str, relax) -> tuple:
    if not isinstance(ty, relax.TensorType):
        raise ModelError(f"{label}: {what} is a {type(ty).__name__}, not a tensor")
    if ty.shape is None or not hasattr(ty.shape, "values"):
        raise ModelError(
            f"{label}: {what} has a dynamic shape (unknown rank)",
            hint="give static input shapes (input_shapes=...)",
        )
    dims = []
    for dim in ty.shape.values:
        if not hasattr(dim, "value"):
            raise ModelError(
                f"{label}: {what} has a dynamic shape {list(ty.shape.values)}",
                hint="give static input shapes (input_shapes=...)",
            )
        dims.append(int(dim.value))
    nbytes = math.prod(dims) * max(1, _dtype_bits(str(ty.dtype)) // 8)
    if nbytes > MAX_TENSOR_BYTES:
        raise ModelError(
            f"{label}: {what} of shape {dims} ({ty.dtype}) holds {nbytes:,} bytes; "
            f"a tensor may hold at most {MAX_TENSOR_BYTES:,} (utvm's plan counts bytes in 32 bits)",
            hint="check the model's input shapes (input_shapes=...)",
        )
    return tuple(dims), str(ty.dtype)


def _dtype_bits(dtype: str) -> int:
    digits = "".join(c for c in dtype if c.isdigit())
    return int(digits) if digits else 8
