"""Small models the tests build themselves (no downloads), for model_library and anyone else.

`build_onnx_model(kind, path)` writes an ONNX model made with `onnx.helper`; `ONNX_KINDS` lists the
kinds. `make_small_tflite(path)` writes a tiny TFLite flatbuffer (int8 or float fully-connected)
with the `tflite` package's builders. Weights come from a seeded generator, so every build of a
kind gives the same bytes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

OPSET = 17
IR_VERSION = 9  # what onnxruntime >= 1.16 reads

# kind -> builder; each returns (nodes, inputs, outputs, initializers)
_BUILDERS: dict[str, Callable] = {}


def _builder(name: str):
    def register(fn):
        _BUILDERS[name] = fn
        return fn

    return register


def build_onnx_model(kind: str, path: str | Path, seed: int = 0) -> Path:
    """Write the ONNX model `kind` (one of ONNX_KINDS) to `path` and return the path."""
    import onnx
    from onnx import helper

    if kind not in _BUILDERS:
        raise ValueError(f"unknown test model kind {kind!r}; known: {', '.join(ONNX_KINDS)}")
    g = _Graph(np.random.default_rng(seed))
    _BUILDERS[kind](g)
    graph = helper.make_graph(g.nodes, f"utvm_test_{kind}", g.inputs, g.outputs, g.initializers)
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="utvm-tests"
    )
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    path = Path(path)
    path.write_bytes(model.SerializeToString())
    return path


def onnx_input_arrays(path: str | Path, seed: int = 1) -> dict[str, np.ndarray]:
    """Random inputs for every graph input of the ONNX model at `path`, keyed by input name."""
    import onnx

    model = onnx.load(str(path))
    rng = np.random.default_rng(seed)
    initializers = {i.name for i in model.graph.initializer}
    arrays = {}
    for value in model.graph.input:
        if value.name in initializers:
            continue
        tensor_type = value.type.tensor_type
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor_type.elem_type)
        shape = [d.dim_value if d.HasField("dim_value") else 1 for d in tensor_type.shape.dim]
        if np.issubdtype(dtype, np.integer):
            info = np.iinfo(dtype)
            arrays[value.name] = rng.integers(info.min, info.max, size=shape, endpoint=True).astype(dtype)
        else:
            arrays[value.name] = rng.standard_normal(shape).astype(dtype)
    return arrays


class _Graph:
    """Accumulates nodes, named weights and graph inputs/outputs."""

    def __init__(self, rng: np.random.Generator):
        self.rng = rng
        self.nodes, self.inputs, self.outputs, self.initializers = [], [], [], []
        self._count = 0

    def name(self, prefix: str) -> str:
        self._count += 1
        return f"{prefix}_{self._count}"

    def input(self, name: str, shape, elem_type=None) -> str:
        from onnx import TensorProto, helper

        self.inputs.append(helper.make_tensor_value_info(name, elem_type or TensorProto.FLOAT, shape))
        return name

    def output(self, name: str, shape=None, elem_type=None) -> None:
        from onnx import TensorProto, helper

        self.outputs.append(helper.make_tensor_value_info(name, elem_type or TensorProto.FLOAT, shape))

    def weight(self, array: np.ndarray, prefix: str = "w") -> str:
        from onnx import numpy_helper

        name = self.name(prefix)
        self.initializers.append(
            numpy_helper.from_array(np.array(array, order="C"), name)
        )  # keeps 0-d scalars 0-d
        return name

    def random(self, shape, scale: float = 0.5, prefix: str = "w") -> str:
        return self.weight((self.rng.standard_normal(shape) * scale).astype(np.float32), prefix)

    def op(self, op_type: str, inputs, output: str | None = None, **attrs) -> str:
        from onnx import helper

        output = output or self.name(op_type.lower())
        self.nodes.append(helper.make_node(op_type, list(inputs), [output], **attrs))
        return output

    def conv(
        self,
        x: str,
        cin: int,
        cout: int,
        k: int = 3,
        group: int = 1,
        stride: int = 1,
        pad: int = 1,
        output: str | None = None,
    ) -> str:
        w = self.random((cout, cin // group, k, k), scale=1.0 / np.sqrt(cin // group * k * k))
        b = self.random((cout,), scale=0.1, prefix="b")
        return self.op(
            "Conv",
            [x, w, b],
            output,
            kernel_shape=[k, k],
            group=group,
            strides=[stride, stride],
            pads=[pad] * 4,
        )

    # QDQ helpers: per-tensor int8 quantize -> dequantize, the pattern quantization tools emit
    def qdq(self, x: str, scale: float, zero_point: int = 0) -> str:
        s = self.weight(np.array(scale, dtype=np.float32), "scale")
        z = self.weight(np.array(zero_point, dtype=np.int8), "zp")
        q = self.op("QuantizeLinear", [x, s, z])
        return self.op("DequantizeLinear", [q, s, z])

    def int8_weight(self, shape, scale: float) -> str:
        q = self.rng.integers(-127, 127, size=shape, endpoint=True).astype(np.int8)
        s = self.weight(np.array(scale, dtype=np.float32), "wscale")
        z = self.weight(np.array(0, dtype=np.int8), "wzp")
        return self.op("DequantizeLinear", [self.weight(q, "wq"), s, z])


@_builder("conv")
def _conv(g: _Graph):
    x = g.input("image", [1, 3, 16, 16])
    y = g.op("Relu", [g.conv(x, 3, 8)])
    g.conv(y, 8, 4, k=1, pad=0, output="features")
    g.output("features", [1, 4, 16, 16])


@_builder("depthwise_conv")
def _depthwise(g: _Graph):
    x = g.input("image", [1, 8, 12, 12])
    y = g.conv(x, 8, 8, group=8, stride=2)
    g.op("Clip", [y, g.weight(np.array(0.0, np.float32)), g.weight(np.array(6.0, np.float32))], "relu6")
    g.output("relu6", [1, 8, 6, 6])


@_builder("dense")
def _dense(g: _Graph):
    x = g.input("x", [1, 32])
    h = g.op("Relu", [g.op("Gemm", [x, g.random((16, 32), 0.3), g.random((16,), 0.1)], transB=1)])
    g.op("Gemm", [h, g.random((16, 10), 0.3), g.random((10,), 0.1)], "logits")
    g.output("logits", [1, 10])


@_builder("pooling")
def _pooling(g: _Graph):
    x = g.input("image", [1, 4, 16, 16])
    m = g.op("MaxPool", [x], kernel_shape=[2, 2], strides=[2, 2])
    a = g.op("AveragePool", [m], kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1], count_include_pad=0)
    g.op("GlobalAveragePool", [a], "pooled")
    g.output("pooled", [1, 4, 1, 1])


@_builder("softmax")
def _softmax(g: _Graph):
    x = g.input("logits", [2, 10])
    g.op("Softmax", [g.op("Mul", [x, g.weight(np.array(3.0, np.float32))])], "probs", axis=-1)
    g.output("probs", [2, 10])


@_builder("residual")
def _residual(g: _Graph):
    x = g.input("image", [1, 8, 8, 8])
    y = g.conv(g.op("Relu", [g.conv(x, 8, 8)]), 8, 8)
    g.op("Relu", [g.op("Add", [y, x])], "out")
    g.output("out", [1, 8, 8, 8])


@_builder("reshape")
def _reshape(g: _Graph):
    """Reshapes that are views: of the input, in the middle, and as the output."""
    x = g.input("image", [1, 4, 4, 4])
    flat = g.op("Reshape", [x, g.weight(np.array([1, 64], np.int64), "shape")])
    h = g.op("Relu", [g.op("MatMul", [flat, g.random((64, 12), 0.2)])])
    g.op("Reshape", [h, g.weight(np.array([1, 3, 4], np.int64), "shape")], "grid")
    g.output("grid", [1, 3, 4])


@_builder("passthrough")
def _passthrough(g: _Graph):
    """An output that is only a reshape of the input: the plan needs a real copy."""
    x = g.input("x", [2, 6])
    g.op("Reshape", [x, g.weight(np.array([3, 4], np.int64), "shape")], "y")
    g.output("y", [3, 4])


@_builder("two_outputs")
def _two_outputs(g: _Graph):
    x = g.input("x", [1, 16])
    h = g.op("Gemm", [x, g.random((16, 8), 0.3), g.random((8,), 0.1)], "hidden")
    g.op("Softmax", [g.op("Relu", [h])], "probs", axis=-1)
    g.output("hidden", [1, 8])
    g.output("probs", [1, 8])


@_builder("cnn")
def _cnn(g: _Graph):
    """A small image classifier: conv, depthwise conv, residual add, pooling, dense, softmax."""
    x = g.input("image", [1, 3, 16, 16])
    y = g.op("Relu", [g.conv(x, 3, 8, stride=2)])
    z = g.op("Relu", [g.conv(y, 8, 8, group=8)])
    z = g.op("Relu", [g.op("Add", [g.conv(z, 8, 8, k=1, pad=0), y])])
    p = g.op(
        "Flatten", [g.op("GlobalAveragePool", [g.op("MaxPool", [z], kernel_shape=[2, 2], strides=[2, 2])])]
    )
    logits = g.op("Gemm", [p, g.random((10, 8), 0.5), g.random((10,), 0.1)], transB=1)
    g.op("Softmax", [logits], "probs", axis=-1)
    g.output("probs", [1, 10])


@_builder("qdq_cnn")
def _qdq_cnn(g: _Graph):
    """An int8 QDQ model (as quantization tools write them): conv, depthwise conv, add, pool, dense."""
    x = g.qdq(g.input("image", [1, 3, 12, 12]), 0.02)
    w1 = g.int8_weight((8, 3, 3, 3), 0.01)
    y = g.qdq(
        g.op("Relu", [g.op("Conv", [x, w1, g.random((8,), 0.05)], kernel_shape=[3, 3], pads=[1] * 4)]), 0.01
    )
    w2 = g.int8_weight((8, 1, 3, 3), 0.02)
    z = g.qdq(g.op("Conv", [y, w2], kernel_shape=[3, 3], pads=[1] * 4, group=8), 0.02)
    s = g.qdq(g.op("Relu", [g.op("Add", [z, y])]), 0.02)
    p = g.qdq(g.op("Flatten", [g.op("GlobalAveragePool", [s])]), 0.02)
    w3 = g.int8_weight((8, 10), 0.02)
    out = g.op("MatMul", [p, w3])
    g.qdq(out, 0.005)
    g.nodes[-1].output[0] = "logits"
    g.output("logits", [1, 10])


@_builder("qdq_dense")
def _qdq_dense(g: _Graph):
    x = g.qdq(g.input("x", [1, 24]), 0.03)
    h = g.qdq(g.op("Relu", [g.op("Gemm", [x, g.int8_weight((24, 16), 0.02), g.random((16,), 0.05)])]), 0.01)
    y = g.op("Gemm", [h, g.int8_weight((16, 6), 0.03), g.random((6,), 0.05)])
    g.qdq(y, 0.002)
    g.nodes[-1].output[0] = "scores"
    g.output("scores", [1, 6])


# models for error tests
@_builder("unsupported_op")
def _unsupported(g: _Graph):
    """Uses Celu, which TVM 0.27's ONNX importer does not implement."""
    x = g.input("x", [1, 8])
    g.op("Celu", [x], "y", alpha=1.0)
    g.output("y", [1, 8])


@_builder("dynamic_shape")
def _dynamic(g: _Graph):
    x = g.input("x", ["batch", 8])
    g.op("Relu", [x], "y")
    g.output("y", ["batch", 8])


@_builder("no_inputs")
def _no_inputs(g: _Graph):
    from onnx import numpy_helper

    value = numpy_helper.from_array(np.arange(4, dtype=np.float32), "value")
    g.nodes.append(__import__("onnx").helper.make_node("Constant", [], ["c"], value=value))
    g.op("Relu", ["c"], "y")
    g.output("y", [4])


ONNX_KINDS = tuple(sorted(_BUILDERS))
# kinds that compile and run (the rest exercise error paths)
ONNX_WORKING_KINDS = tuple(k for k in ONNX_KINDS if k not in ("unsupported_op", "dynamic_shape", "no_inputs"))


def make_small_tflite(path: str | Path, quantized: bool = True, seed: int = 0, in_dim: int = 16,
                      out_dim: int = 8) -> Path:
    """Write a tiny TFLite model: input [1, in_dim] -> FULLY_CONNECTED(out_dim) + RELU -> output
    [1, out_dim] (16 and 8 unless given).

    With `quantized`, tensors are int8 with per-tensor scales (int32 bias), as TFLite's full-integer
    quantization writes them; otherwise float32.
    """
    import flatbuffers
    import tflite as tfl  # the package re-exports every table's builder as <Table><Function>

    rng = np.random.default_rng(seed)
    b = flatbuffers.Builder(1024)
    if quantized:
        weights = rng.integers(-127, 127, size=(out_dim, in_dim), endpoint=True).astype(np.int8)
        bias = rng.integers(-500, 500, size=(out_dim,)).astype(np.int32)
        dtype, bias_type = tfl.TensorType.INT8, tfl.TensorType.INT32
        # The output scale grows with the sum's length, so wide layers do not just saturate.
        quant = {"in": (0.05, -3), "w": (0.01, 0), "b": (0.0005, 0), "out": (0.04 * in_dim / 16, -128)}
    else:
        weights = (rng.standard_normal((out_dim, in_dim)) * 0.3).astype(np.float32)
        bias = (rng.standard_normal(out_dim) * 0.1).astype(np.float32)
        dtype = bias_type = tfl.TensorType.FLOAT32
        quant = {}

    def vector(start_fn, values, prepend):
        start_fn(b, len(values))
        for v in reversed(values):
            prepend(v)
        return b.EndVector()

    def table(name: str, **fields):
        """Build table `name`; fields are added in the order given (offsets must exist already)."""
        getattr(tfl, f"{name}Start")(b)
        for field_name, value in fields.items():
            if value is not None:
                getattr(tfl, f"{name}Add{field_name}")(b, value)
        return getattr(tfl, f"{name}End")(b)

    def buffer(data: bytes | None):
        return table("Buffer", Data=b.CreateByteVector(data) if data else None)

    buffers = [buffer(None), buffer(None), buffer(weights.tobytes()), buffer(bias.tobytes()), buffer(None)]

    def tensor(name: str, shape, tensor_type, buffer_index, q):
        name_off = b.CreateString(name)
        shape_off = vector(tfl.TensorStartShapeVector, list(shape), b.PrependInt32)
        q_off = None
        if q:
            scale = vector(tfl.QuantizationParametersStartScaleVector, [q[0]], b.PrependFloat32)
            zero_point = vector(tfl.QuantizationParametersStartZeroPointVector, [q[1]], b.PrependInt64)
            q_off = table("QuantizationParameters", Scale=scale, ZeroPoint=zero_point)
        return table(
            "Tensor",
            Shape=shape_off,
            Type=tensor_type,
            Buffer=buffer_index,
            Name=name_off,
            Quantization=q_off,
        )

    tensors = [
        tensor("input", [1, in_dim], dtype, 1, quant.get("in")),
        tensor("weights", [out_dim, in_dim], dtype, 2, quant.get("w")),
        tensor("bias", [out_dim], bias_type, 3, quant.get("b")),
        tensor("output", [1, out_dim], dtype, 4, quant.get("out")),
    ]
    options = table("FullyConnectedOptions", FusedActivationFunction=tfl.ActivationFunctionType.RELU)
    operator = table(
        "Operator",
        OpcodeIndex=0,
        Inputs=vector(tfl.OperatorStartInputsVector, [0, 1, 2], b.PrependInt32),
        Outputs=vector(tfl.OperatorStartOutputsVector, [3], b.PrependInt32),
        BuiltinOptionsType=tfl.BuiltinOptions.FullyConnectedOptions,
        BuiltinOptions=options,
    )
    subgraph = table(
        "SubGraph",
        Tensors=vector(tfl.SubGraphStartTensorsVector, tensors, b.PrependUOffsetTRelative),
        Inputs=vector(tfl.SubGraphStartInputsVector, [0], b.PrependInt32),
        Outputs=vector(tfl.SubGraphStartOutputsVector, [3], b.PrependInt32),
        Operators=vector(tfl.SubGraphStartOperatorsVector, [operator], b.PrependUOffsetTRelative),
        Name=b.CreateString("main"),
    )
    fc = tfl.BuiltinOperator.FULLY_CONNECTED
    opcode = table("OperatorCode", DeprecatedBuiltinCode=fc, BuiltinCode=fc, Version=1)
    model = table(
        "Model",
        Version=3,
        OperatorCodes=vector(tfl.ModelStartOperatorCodesVector, [opcode], b.PrependUOffsetTRelative),
        Subgraphs=vector(tfl.ModelStartSubgraphsVector, [subgraph], b.PrependUOffsetTRelative),
        Description=b.CreateString("utvm test model"),
        Buffers=vector(tfl.ModelStartBuffersVector, buffers, b.PrependUOffsetTRelative),
    )
    b.Finish(model, file_identifier=b"TFL3")
    path = Path(path)
    path.write_bytes(bytes(b.Output()))
    return path


def c_compile_errors(library, extract_dir: str | Path, compiler: list) -> list:
    """Compile every C source of a loaded archive with `compiler` (a command list, warnings as
    errors) and return the failures as (source, stderr) pairs; an empty list means all compiled."""
    import subprocess

    root = library.extract(Path(extract_dir))
    runtime_include = Path(__file__).resolve().parent.parent / "templates" / "runtime" / "include"
    failures = []
    for source in library.source_files():
        command = [
            *compiler,
            "-std=c99",
            "-Wall",
            "-Wextra",
            "-Werror",
            "-I",
            str(root / "codegen/host/include"),
            "-I",
            str(runtime_include),
            "-c",
            str(root / source),
            "-o",
            str(root / (Path(source).stem + ".o")),
        ]
        result = subprocess.run(command, capture_output=True, text=True, timeout=300)
        if result.returncode != 0:
            failures.append((source, result.stderr[-3000:]))
    return failures


def make_tflite_relu(path: str | Path, in_shape, out_shape=None) -> Path:
    """Write a one-operator float TFLite model, RELU, whose input has `in_shape` and whose output the
    file declares as `out_shape` (by default the same): shapes no real model would have, for the
    refusals of absurd or inconsistent sizes."""
    import flatbuffers
    import tflite as tfl

    b = flatbuffers.Builder(256)

    def vector(start_fn, values, prepend):
        start_fn(b, len(values))
        for v in reversed(values):
            prepend(v)
        return b.EndVector()

    def table(name: str, **fields):
        getattr(tfl, f"{name}Start")(b)
        for field_name, value in fields.items():
            if value is not None:
                getattr(tfl, f"{name}Add{field_name}")(b, value)
        return getattr(tfl, f"{name}End")(b)

    buffers = [table("Buffer") for _ in range(3)]
    tensors = [
        table("Tensor", Shape=vector(tfl.TensorStartShapeVector, list(shape), b.PrependInt32),
              Type=tfl.TensorType.FLOAT32, Buffer=index + 1, Name=b.CreateString(name))
        for index, (name, shape) in enumerate((("input", in_shape), ("output", out_shape or in_shape)))
    ]
    operator = table("Operator", OpcodeIndex=0,
                     Inputs=vector(tfl.OperatorStartInputsVector, [0], b.PrependInt32),
                     Outputs=vector(tfl.OperatorStartOutputsVector, [1], b.PrependInt32))
    subgraph = table(
        "SubGraph",
        Tensors=vector(tfl.SubGraphStartTensorsVector, tensors, b.PrependUOffsetTRelative),
        Inputs=vector(tfl.SubGraphStartInputsVector, [0], b.PrependInt32),
        Outputs=vector(tfl.SubGraphStartOutputsVector, [1], b.PrependInt32),
        Operators=vector(tfl.SubGraphStartOperatorsVector, [operator], b.PrependUOffsetTRelative),
        Name=b.CreateString("main"),
    )
    relu = tfl.BuiltinOperator.RELU
    opcode = table("OperatorCode", DeprecatedBuiltinCode=relu, BuiltinCode=relu, Version=1)
    model = table(
        "Model", Version=3,
        OperatorCodes=vector(tfl.ModelStartOperatorCodesVector, [opcode], b.PrependUOffsetTRelative),
        Subgraphs=vector(tfl.ModelStartSubgraphsVector, [subgraph], b.PrependUOffsetTRelative),
        Buffers=vector(tfl.ModelStartBuffersVector, buffers, b.PrependUOffsetTRelative),
    )
    b.Finish(model, file_identifier=b"TFL3")
    path = Path(path)
    path.write_bytes(bytes(b.Output()))
    return path
