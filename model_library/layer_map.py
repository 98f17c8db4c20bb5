"""Which layers of the source model each kernel computes: the names the user wrote.

TVM 0.27's importers keep no spans or layer names in Relax, so the map is recorded while the
importer runs. Each importer stores every converted layer's result in a table (TFLite: the
`ExprTable`, by output tensor name; ONNX: `_nodes`, by output name; PyTorch: `env`, by FX node);
`recording()` watches those stores, and `assign()` finds the binding of `main` that holds each
result. A binding that is no layer's result (a dequantize, a bias add) belongs to the next layer
whose result is bound after it: the importer emitted it while converting that layer.

Lowering keeps binding names in `main` (passes rewrite values, not names) until FuseOps, which
moves groups of bindings into fused functions and binds each call to a fresh name; FuseTIR keeps
that name for the kernel. `fused_bindings()` matches the calls inside each fused function with the
bindings before FuseOps, and `kernel_layers()` maps a kernel's bindings to layers. A kernel's
output is the source framework's tensor of a layer only when the kernel's last binding is that
layer's result (its `source_output`); otherwise (part of a layer, a layout change) there is none
to compare with.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

from utvm.project_api.mlf import MAX_LAYER_NAME_CHARS, SOURCE_MODEL_FILES


@dataclass
class Layer:
    """One layer (operator, node) of the source model."""

    index: int  # TFLite operator index, ONNX node index, FX node position
    op: str  # CONV_2D, Conv, aten.conv2d.default
    name: str  # TFLite output tensor name, ONNX node name, FX node name
    output: str  # the key the source runtime's tensor is read by (tensor name, output name, FX node name)
    module: str = ""  # PyTorch: the module path the node came from

    def to_json(self) -> dict:
        entry = {"index": self.index, "op": self.op, "name": self.name, "output": self.output}
        if self.module:
            entry["module"] = self.module
        return entry


@dataclass
class LayerMap:
    """The source model's layers and which bindings of the imported `main` compute each one."""

    fmt: str
    layers: list
    var_layer: dict = field(default_factory=dict)  # binding name -> layer index
    var_output: dict = field(default_factory=dict)  # binding name -> layer whose result it is

    def kernel_layers(self, var: str, fused: dict) -> tuple:
        """(layers the kernel bound to `var` covers, the layer whose result it outputs or None).

        A fused kernel covers the bindings FuseOps moved into it (`fused[var]`, in order; the last
        is its result); any other kernel is the binding itself.
        """
        names = fused.get(var) or [var]
        covered = sorted({self.var_layer[n] for n in names if n in self.var_layer})
        return covered, self.var_output.get(names[-1])

    def to_json(self, digest: str) -> dict:
        return {
            "format": self.fmt,
            "model_sha256": digest,
            "layers": [layer.to_json() for layer in self.layers],
        }


@contextlib.contextmanager
def recording(fmt: str):
    """While the importer of `fmt` runs, collect [(key, expr)] of every layer result it stores."""
    recorded: list = []
    if fmt == "tflite":
        from tvm.relax.frontend.tflite import tflite_frontend as frontend

        owner, name = frontend.ExprTable, "set_expr"
        original = frontend.ExprTable.set_expr

        def patched(self, key, expr, force_override=False):
            if key not in self.exprs or force_override:
                recorded.append((key, expr))
            return original(self, key, expr, force_override)

    elif fmt == "onnx":
        from tvm.relax.frontend.onnx import onnx_frontend as frontend

        owner, name = frontend.ONNXGraphImporter, "_construct_nodes"
        original = owner._construct_nodes

        def patched(self, graph):
            self._nodes = _RecordingDict(self._nodes, recorded)
            return original(self, graph)

    elif fmt == "torch":
        from tvm.relax.frontend.torch import exported_program_translator as frontend

        owner, name = frontend.ExportedProgramImporter, "_translate_fx_graph"
        original = owner._translate_fx_graph

        def patched(self, *args, **kwargs):
            if not isinstance(self.env, _RecordingDict):
                self.env = _RecordingDict(self.env, recorded)
            return original(self, *args, **kwargs)

    else:
        yield recorded
        return
    setattr(owner, name, patched)
    try:
        yield recorded
    finally:
        setattr(owner, name, original)


class _RecordingDict(dict):
    def __init__(self, initial, log: list):
        super().__init__(initial)
        self._log = log

    def __setitem__(self, key, value):
        self._log.append((key, value))
        super().__setitem__(key, value)


def assign(fmt: str, main, recorded: list, layers: list, key_layer: dict) -> LayerMap:
    """Map every binding of the imported `main` to the layer whose conversion emitted it."""
    from tvm import relax

    results = [(key_layer[key], expr) for key, expr in recorded if key in key_layer]
    result_layer: dict = {}  # binding name -> layer it is the result of
    layer_map = LayerMap(fmt, layers)
    pending: list = []
    for block in main.body.blocks:
        for binding in block.bindings:
            name = binding.var.name
            found = next(
                (
                    layer
                    for layer, expr in results
                    if binding.value.same_as(expr)
                    or (isinstance(expr, relax.Var) and binding.var.same_as(expr))
                ),
                None,
            )
            pending.append(name)
            if found is None:
                continue
            result_layer[name] = found
            for earlier in pending:
                layer_map.var_layer[earlier] = found
            pending = []
    if pending and layers:  # trailing bindings (the return tuple): the last layer's
        last = max(result_layer.values(), default=layers[-1].index)
        for name in pending:
            layer_map.var_layer[name] = last
    layer_map.var_output = result_layer
    return layer_map


def fused_bindings(unfused, fused_mod) -> dict:
    """{binding name in `fused_mod`'s main: names of the bindings of `unfused`'s main it computes}.

    FuseOps names its calls afresh and shares one function between groups of the same structure,
    so the names inside a fused function say nothing. Each of its kernel calls is matched instead
    with the call of `unfused` that has the same kernel and the same operands.
    """
    from tvm import relax

    def operand_key(arg, names: dict):
        if isinstance(arg, relax.Var):
            return names.get(arg, arg.name)
        return _constant_key(arg)

    def call_key(call, names: dict):
        if not (isinstance(call, relax.Call) and getattr(call.op, "name", "") == "relax.call_tir"):
            return None
        operands = call.args[1].fields if isinstance(call.args[1], relax.Tuple) else [call.args[1]]
        return (call.args[0].name_hint, tuple(operand_key(a, names) for a in operands))

    calls: dict = {}
    for block in unfused["main"].body.blocks:
        for binding in block.bindings:
            key = call_key(binding.value, {})
            if key is not None:
                calls.setdefault(key, binding.var.name)
    result: dict = {}
    outer: dict = {}  # var of the fused main -> name in the unfused main
    for block in fused_mod["main"].body.blocks:
        for binding in block.bindings:
            value = binding.value
            if isinstance(value, relax.Call) and isinstance(value.op, relax.GlobalVar):
                func = fused_mod[value.op]
                if not isinstance(func, relax.Function):
                    continue
                inner = {p: operand_key(a, outer) for p, a in zip(func.params, value.args)}
                covered = []
                for bl in func.body.blocks:
                    for b in bl.bindings:
                        key = call_key(b.value, inner)
                        if key in calls:
                            inner[b.var] = calls[key]
                            covered.append(calls[key])
                result[binding.var.name] = covered
                if covered:
                    outer[binding.var] = inner.get(func.body.body, covered[-1])
            else:
                outer[binding.var] = binding.var.name
    return result


def _constant_key(expr) -> tuple:
    """A constant by its contents (FuseOps may hand the fused call the same data anew)."""
    value = getattr(expr, "value", None)
    if value is None or not hasattr(value, "numpy"):
        return ("expr", type(expr).__name__)
    data = value.numpy()
    return (str(data.dtype), data.shape, hashlib.sha256(data.tobytes()).hexdigest())


# ---------------------------------------------------------------- the layers of each format


def tflite_layers(model) -> tuple:
    """([Layer] of subgraph 0's operators, {output tensor name: layer index})."""
    import tflite

    codes = vars(tflite.BuiltinOperator).items()
    names = {v: k for k, v in codes if isinstance(v, int) and not k.startswith("_")}
    graph = model.Subgraphs(0)
    layers, key_layer = [], {}
    for index in range(graph.OperatorsLength()):
        op = graph.Operators(index)
        code = model.OperatorCodes(op.OpcodeIndex())
        builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
        kind = names.get(builtin, str(builtin))
        if kind == "CUSTOM" and code.CustomCode():
            kind = code.CustomCode().decode("utf-8", "replace")
        outputs = [graph.Tensors(int(t)).Name().decode("utf-8", "replace") for t in op.OutputsAsNumpy()]
        first = outputs[0] if outputs else f"operator_{index}"
        layers.append(Layer(index, kind, _clip(first), first))
        for out in outputs:
            key_layer.setdefault(out, index)
    return layers, key_layer


def onnx_layers(model) -> tuple:
    """([Layer] of the graph's nodes, {output name: layer index})."""
    layers, key_layer = [], {}
    for index, node in enumerate(model.graph.node):
        outputs = [o for o in node.output if o]
        first = outputs[0] if outputs else f"node_{index}"
        layers.append(Layer(index, node.op_type, _clip(node.name or first), first))
        for out in outputs:
            key_layer.setdefault(out, index)
    return layers, key_layer


def torch_layers(program) -> tuple:
    """([Layer] of the exported graph's call_function nodes, {fx node: layer index})."""
    layers, key_layer = [], {}
    for node in program.graph.nodes:
        if node.op != "call_function":
            continue
        index = len(layers)
        stack = node.meta.get("nn_module_stack") or {}
        module = ""
        if stack:
            path, _ = list(stack.values())[-1]
            module = _clip(str(path))
        layers.append(Layer(index, _clip(str(getattr(node.target, "__name__", node.target))), node.name,
                            node.name, module))
        key_layer[node] = index
    return layers, key_layer


def _clip(text: str) -> str:
    text = "".join(c if c.isprintable() else " " for c in text)
    return text if len(text) <= MAX_LAYER_NAME_CHARS else text[: MAX_LAYER_NAME_CHARS - 3] + "..."


# ---------------------------------------------------------------- into the archive

# The source model travels in the archive (so `utvm run --validate --against source` needs nothing
# else), unless it is larger than this.
MAX_EMBEDDED_MODEL_BYTES = 64 << 20
MODEL_FILES = {member.rsplit(".", 1)[1]: member for member in SOURCE_MODEL_FILES}


def annotate(meta: dict, plan, layer_map: LayerMap, fused: dict, digest: str, files: dict, model) -> None:
    """Add the layer map to metadata.json (`source_layers`, each kernel's `layers` and
    `source_output`) and the model file to `files` where it is a TFLite or ONNX file."""
    meta["source_layers"] = layer_map.to_json(digest)
    for kernel, entry in zip(plan.kernels, meta["plan"]["kernels"]):
        covered, output = ([], None)
        if kernel.var:
            covered, output = layer_map.kernel_layers(kernel.var, fused)
        entry["layers"] = covered
        entry["source_output"] = output
    member = MODEL_FILES.get(layer_map.fmt)
    if member and isinstance(model, (str, os.PathLike)):
        path = Path(model)
        if path.is_file() and path.stat().st_size <= MAX_EMBEDDED_MODEL_BYTES:
            files[member] = path.read_bytes()
            meta["source_layers"]["model_file"] = member
