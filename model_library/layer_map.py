"""Which layers of the source model each kernel computes: the names the user wrote.

TVM 0.27's importers keep no spans or layer names in Relax, so the map is recorded while the
importer runs. Each importer stores every converted layer's result in a table (TFLite: the
`ExprTable`, by output tensor name; ONNX: `_nodes`, by output name; PyTorch: `env`, by FX node);
`recording()` watches those stores, and `assign()` finds the binding of `main` that holds each
result. A binding that is no layer's result (a dequantize, a bias add) belongs to the next layer
whose result is bound after it: the importer emitted it while converting that layer.

Lowering keeps binding names in `main` (passes rewrite values, not names) until FuseOps, which
moves groups of bindings into fused functions and binds each call to a fresh name; FuseTIR keeps
that name for the kernel. `fusion_trace()` matches the calls inside each fused function with the
bindings before FuseOps, and `kernel_layers()` maps a kernel's bindings to layers, with the
bindings of the imported model that no longer exist before FuseOps and that they read
(operations an integer kernel replaced, weights folded into constants). A kernel's
output is the source framework's tensor of a layer only when the kernel's last binding is that
layer's result (its `source_output`); otherwise (part of a layer, a layout change) there is none
to compare with.
"""

from __future__ import annotations

import contextlib
import hashlib
import operator
import os
from dataclasses import dataclass, field
from pathlib import Path

from utvm.project_api.mlf import MAX_LAYER_NAME_CHARS, SOURCE_MODEL_FILES


@dataclass
class Layer:
    """One layer (operator, node) of the source model."""

    index: int  # TFLite operator index, ONNX node index, PyTorch FX node position
    op: str  # CONV_2D, Conv, convolution (an ATen op)
    name: str  # TFLite output tensor name, ONNX node name, FX node name
    output: str  # the key the source runtime's tensor is read by (tensor name, output name, FX node name)
    module: str = ""  # PyTorch: the path of the module whose call the node came from
    module_type: str = ""  # PyTorch: that module's type (BatchNorm2d)

    def to_json(self) -> dict:
        entry = {"index": self.index, "op": self.op, "name": self.name, "output": self.output}
        if self.module:
            entry["module"] = self.module
            entry["module_type"] = self.module_type
        return entry


@dataclass
class LayerMap:
    """The source model's layers and which bindings of the imported `main` compute each one."""

    fmt: str
    layers: list
    var_layer: dict = field(default_factory=dict)  # binding name -> [indices of the layers it computes]
    var_output: dict = field(default_factory=dict)  # binding name -> layer whose result it is
    operands: dict = field(default_factory=dict)  # binding name -> names its value reads, as imported

    def kernel_layers(self, var: str, trace: dict) -> tuple:
        """(layers the kernel bound to `var` covers, the layer whose result it outputs or None).

        A fused kernel covers the bindings FuseOps moved into it (in order; the last is its
        result); any other kernel is the binding itself. Each also covers the imported bindings
        rewritten away on the way to it (one read by two kernels is listed by both).
        """
        names = trace.get("fused", {}).get(var) or [var]
        live, aliases = trace.get("live", set()), trace.get("aliases", {})
        last = [names[-1], *aliases.get(names[-1], ())]
        names = names + [a for n in names for a in aliases.get(n, ())]
        covered, stack, seen = set(), list(names), set()
        while stack:
            name = stack.pop()
            if name in seen:
                continue
            seen.add(name)
            covered.update(self.var_layer.get(name, ()))
            stack.extend(o for o in self.operands.get(name, ()) if o not in live)
        output = next((self.var_output[n] for n in last if n in self.var_output), None)
        return sorted(covered), output

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


def assign(fmt: str, mod, recorded: list, layers: list, key_layer: dict, output_keys=None) -> tuple:
    """Map every binding of the imported `main` to the layer whose conversion emitted it.

    A binding is a layer's result (its framework tensor can be compared) when it holds a key of
    `output_keys` (default: every key); a PyTorch layer of several nodes has one output node.

    Returns (the module with `main`'s bindings renamed, the map). The new names (`b<N>_<name>`)
    are unique, and unlike any name TVM's passes give the bindings they add (`lv`, `lv1`, `gv`),
    so a name seen after lowering is either the imported binding's or none of the map's.
    """
    from tvm import relax

    main = mod["main"]
    results = [(key_layer[key], expr, output_keys is None or key in output_keys)
               for key, expr in recorded if key in key_layer]
    result_layer: dict = {}  # binding name -> layer it is the result of
    layer_map = LayerMap(fmt, layers)
    pending: list = []
    for block in main.body.blocks:
        for binding in block.bindings:
            name = binding.var.name
            # Every layer that stored this binding: the first emitted it; the others are layers
            # that hand on the same value (a dropout or clone in eval mode, an ONNX Identity).
            # Its result is the last one's, the latest name of that tensor.
            matches = [
                (layer, is_output)
                for layer, expr, is_output in results
                if binding.value.same_as(expr) or (isinstance(expr, relax.Var) and binding.var.same_as(expr))
            ]
            pending.append(name)
            if not matches:
                continue
            result = [layer for layer, is_output in matches if is_output]
            if result:
                result_layer[name] = result[-1]
            for earlier in pending:
                layer_map.var_layer[earlier] = [matches[0][0]]
            layer_map.var_layer[name] = list(dict.fromkeys(layer for layer, _ in matches))
            pending = []
    if pending and layers:  # trailing bindings (the return tuple): the last layer's
        last = max(result_layer.values(), default=layers[-1].index)
        for name in pending:
            layer_map.var_layer[name] = [last]
    layer_map.var_output = result_layer
    layer_map.operands = {
        b.var.name: sorted({v.name for v in relax.analysis.free_vars(b.value)})
        for block in main.body.blocks
        for b in block.bindings
    }
    renamer = _renamer()(mod)
    mod["main"] = renamer.visit_expr(main)
    new = renamer.renamed
    layer_map.var_layer = {new.get(k, k): v for k, v in layer_map.var_layer.items()}
    layer_map.var_output = {new.get(k, k): v for k, v in layer_map.var_output.items()}
    layer_map.operands = {new.get(k, k): [new.get(o, o) for o in v] for k, v in layer_map.operands.items()}
    return mod, layer_map


def _renamer():
    """A Relax mutator that gives every binding of a function a new, unique name (not its params)."""
    from tvm import relax

    @relax.expr_functor.mutator
    class Renamer(relax.PyExprMutator):
        def __init__(self, mod=None):
            super().__init__(mod)
            self.renamed: dict = {}
            self.params: set = set()

        def visit_function_(self, func):
            self.params = {p.name for p in func.params}
            return super().visit_function_(func)

        def _rename(self, var, kind):
            if var.name in self.params:
                return var
            name = self.renamed.setdefault(var.name, f"b{len(self.renamed)}_{var.name}")
            return kind(name, var.ty)

        def visit_var_def_(self, var):
            return self._rename(var, relax.Var)

        def visit_dataflow_var_def_(self, var):
            return self._rename(var, relax.DataflowVar)

    return Renamer


def fusion_trace(unfused, fused_mod) -> dict:
    """{"fused": {binding name in `fused_mod`'s main: names of the bindings of `unfused`'s main it
    computes}, "live": names of `unfused`'s main (its bindings and parameters)}.

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

    canonical = {var: target.name for var, target in _same_tensor(unfused["main"]).items()}
    aliases: dict = {}  # name -> names of the same tensor, then of the tuples that hold it
    for var, name in canonical.items():
        aliases.setdefault(name, []).append(var.name)
    for block in unfused["main"].body.blocks:
        for binding in block.bindings:
            if isinstance(binding.value, relax.Tuple):
                for field in binding.value.fields:
                    if isinstance(field, relax.Var):
                        name = canonical.get(field, field.name)
                        aliases.setdefault(name, []).append(binding.var.name)
    calls: dict = {}
    for block in unfused["main"].body.blocks:
        for binding in block.bindings:
            key = call_key(binding.value, canonical)
            if key is not None:
                calls.setdefault(key, binding.var.name)
    result: dict = {}
    outer: dict = {}  # var of the fused main -> name in the unfused main
    same = _same_tensor(fused_mod["main"])
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
            elif binding.var in same:
                outer[binding.var] = outer.get(same[binding.var], same[binding.var].name)
            else:
                outer[binding.var] = binding.var.name
    main = unfused["main"]
    live = {p.name for p in main.params}
    live.update(b.var.name for block in main.body.blocks for b in block.bindings)
    return {"fused": result, "live": live, "aliases": aliases}


def _same_tensor(main) -> dict:
    """{var: the var of the binding that computes its tensor}, for the vars of `main` bound to
    another var or to an element of a tuple built in `main` (TVM's importers write some layers'
    results that way: batch norm's output, PyTorch's getitem)."""
    from tvm import relax

    values, canonical = {}, {}
    for block in main.body.blocks:
        for binding in block.bindings:
            values[binding.var] = binding.value
    for var, value in values.items():
        target = value
        while True:
            built = values.get(target.tuple_value) if isinstance(target, relax.TupleGetItem) else None
            if isinstance(built, relax.Tuple):
                target = built.fields[target.index]
            elif isinstance(target, relax.Var) and target in values and target is not var:
                if not isinstance(values[target], (relax.Var, relax.TupleGetItem)):
                    break
                target = values[target]
            else:
                break
        if isinstance(target, relax.Var) and not target.same_as(var):
            canonical[var] = target
    return canonical


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


def torch_layers(recorded: list) -> tuple:
    """([Layer], {fx node: layer index}, {fx nodes that are a layer's output}) of the
    call_function nodes the importer converted.

    The importer converts the program after PyTorch's decompositions, and the source runtime runs
    that same program, so each of its nodes is a layer, with its ATen op (`convolution`, `relu`),
    and, when the node comes from a call of a module (`self.bn(x)`), that module's path and type
    (`bn`, `BatchNorm2d`). A getitem that takes a tensor from a tuple (batch norm's, max pool's
    with indices) is plumbing, not a layer: it belongs to the node it reads, and is that layer's
    output (the tensor the framework records).
    """
    layers, key_layer, outputs = [], {}, {}  # outputs: layer index -> its output node
    for node, _ in recorded:
        if getattr(node, "op", None) != "call_function" or node in key_layer:
            continue
        source = node.args[0] if node.target is operator.getitem and node.args else None
        if source in key_layer:
            index = key_layer[source]
            if isinstance(outputs[index].meta.get("val"), (tuple, list)):  # its first tensor
                outputs[index] = node
                layers[index].output = node.name
            key_layer[node] = index
            continue
        index = len(layers)
        path, kind = (list((node.meta.get("nn_module_stack") or {}).values()) or [("", "")])[-1]
        layers.append(Layer(index, _clip(_op_name(node.target)), node.name, node.name, _clip(str(path)),
                            _clip(_type_name(kind)) if path else ""))
        key_layer[node] = index
        outputs[index] = node
    return layers, key_layer, set(outputs.values())


def _type_name(kind) -> str:
    """`BatchNorm2d` of `torch.nn.modules.batchnorm.BatchNorm2d` (a name or the class itself)."""
    return getattr(kind, "__name__", None) or str(kind).rsplit(".", 1)[-1]


def _op_name(target) -> str:
    """`relu` of aten.relu.default: the ATen operator without its overload; else the function's name."""
    packet = getattr(target, "overloadpacket", None)
    return str(getattr(packet, "__name__", None) or getattr(target, "__name__", target))


def _clip(text: str) -> str:
    text = "".join(c if c.isprintable() else " " for c in text)
    return text if len(text) <= MAX_LAYER_NAME_CHARS else text[: MAX_LAYER_NAME_CHARS - 3] + "..."


# ---------------------------------------------------------------- into the archive

# The source model travels in the archive (so `utvm run --validate --against source` needs nothing
# else), unless it is larger than this.
MAX_EMBEDDED_MODEL_BYTES = 64 << 20
MODEL_FILES = dict(zip(("tflite", "onnx", "torch"), SOURCE_MODEL_FILES))  # by source format


def annotate(meta: dict, plan, layer_map: LayerMap, trace: dict, digest: str, files: dict, model) -> None:
    """Add the layer map to metadata.json (`source_layers`, each kernel's `layers` and
    `source_output`) and the model file to `files` where it is a file (TFLite, ONNX, .pt2)."""
    meta["source_layers"] = layer_map.to_json(digest)
    for kernel, entry in zip(plan.kernels, meta["plan"]["kernels"]):
        covered, output = ([], None)
        if kernel.var:
            covered, output = layer_map.kernel_layers(kernel.var, trace)
        entry["layers"] = covered
        entry["source_output"] = output
    member = MODEL_FILES.get(layer_map.fmt)
    if member and isinstance(model, (str, os.PathLike)):
        path = Path(model)
        if path.is_file() and path.stat().st_size <= MAX_EMBEDDED_MODEL_BYTES:
            files[member] = path.read_bytes()
            meta["source_layers"]["model_file"] = member
