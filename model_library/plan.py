"""Extract a static execution plan from a lowered Relax `main`.

After lowering, `main` is a dataflow block of `R.call_tir(kernel, args)` calls, reshapes, tuples
and constants. The plan lists:
- tensors: inputs, kernel outputs, views (reshapes share their source's bytes, with no copy),
  and constants;
- kernels: the calls in order, each with its argument tensor ids (inputs first, then outputs,
  as the kernel takes them).
A model output that would alias an input or a constant gets a real copy kernel, because inputs
and outputs live in the arena and the runtime reads an output after the run.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from .c_names import unique_name
from .errors import ModelError


@dataclass
class PlanTensor:
    id: int
    name: str
    shape: tuple
    dtype: str
    storage: str  # "arena" or "const"
    root: int  # the tensor whose bytes this one uses (itself unless a view)
    const_data: np.ndarray | None = None
    offset: int = 0
    symbol: str | None = None  # C array name of a constant

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * np.dtype(_np_dtype(self.dtype)).itemsize


@dataclass
class PlanKernel:
    index: int
    name: str  # unique and readable: the fused TIR function's name
    prim_func: str  # name of the PrimFunc in the lowered module
    args: list = field(default_factory=list)  # tensor ids in call order
    outputs: list = field(default_factory=list)
    function: str = ""  # C symbol
    var: str = ""  # the binding of the lowered `main` it computes (layer_map reads it)


@dataclass
class ExecutionPlan:
    tensors: list
    kernels: list
    inputs: list  # tensor ids
    outputs: list  # tensor ids
    copy_funcs: dict = field(default_factory=dict)  # prim_func name -> PrimFunc made for output copies


def _np_dtype(dtype: str):
    return np.dtype("bool") if dtype == "bool" else np.dtype(dtype)


class _Builder:
    def __init__(self, mod, label: str, output_names: list):
        self.mod = mod
        self.label = label
        self.output_names = output_names
        self.tensors: list = []
        self.kernels: list = []
        self.values: dict = {}  # relax var -> tensor id, or tuple of ids
        self.const_ids: dict = {}  # (dtype, shape, bytes) -> tensor id
        self.names: set = set()  # tensor names
        self.kernel_names: set = set()
        self.copy_funcs: dict = {}

    def unique(self, name: str, taken: set | None = None) -> str:
        taken = self.names if taken is None else taken
        return unique_name(re.sub(r"[^\w.:-]", "_", name) or "t", taken)

    def add_tensor(self, name, ty, storage="arena", root=None, data=None) -> int:
        from tvm import relax

        from .frontends import _static_tensor_type

        shape, dtype = _static_tensor_type(ty, self.label, f"tensor {name!r}", relax)
        tid = len(self.tensors)
        self.tensors.append(
            PlanTensor(tid, self.unique(name), shape, dtype, storage, tid if root is None else root, data)
        )
        return tid

    def constant(self, const) -> int:
        data = np.ascontiguousarray(const.value.numpy())
        key = (str(data.dtype), data.shape, data.tobytes())
        if key not in self.const_ids:
            self.const_ids[key] = self.add_tensor(
                f"const_{len(self.const_ids)}", const.ty, "const", data=data
            )
        return self.const_ids[key]

    def operand(self, expr) -> int:
        import tvm

        if isinstance(expr, tvm.ir.expr.GenericConst):
            return self.constant(expr)
        value = self.values.get(expr)
        if value is None or isinstance(value, tuple):
            raise ModelError(
                f"{self.label}: unsupported kernel argument {type(expr).__name__} in the lowered model"
            )
        return value

    def add_kernel(self, prim_func: str, args: list, outputs: list, var: str = "") -> None:
        index = len(self.kernels)
        name = self.unique(prim_func, self.kernel_names)
        self.kernels.append(PlanKernel(index, name, prim_func, args + outputs, outputs, var=var))


def extract_plan(mod, label: str, output_names: list) -> ExecutionPlan:
    """Walk the lowered `main` and build the execution plan (offsets are assigned later)."""
    from tvm import relax

    b = _Builder(mod, label, output_names)
    main = mod["main"]
    for param in main.params:
        b.values[param] = b.add_tensor(param.name, param.ty)
    inputs = list(range(len(main.params)))
    returned = _returned_vars(main)
    for block in main.body.blocks:
        for binding in block.bindings:
            if not isinstance(binding, relax.VarBinding):
                raise ModelError(
                    f"{label}: unsupported binding {type(binding).__name__} in the lowered model"
                )
            _bind(b, binding.var, binding.value, binding.var in returned)
    outputs = _collect_outputs(b, main.body.body)
    outputs = [_materialize_output(b, tid, i) for i, tid in enumerate(outputs)]
    for i, tid in enumerate(outputs):
        if i < len(output_names) and output_names[i] and b.tensors[tid].root == tid:
            _rename(b, tid, output_names[i])
    return renumber(ExecutionPlan(b.tensors, b.kernels, inputs, outputs, b.copy_funcs))


def _returned_vars(main) -> set:
    """Variables whose value leaves `main` (directly, in a tuple, or through an alias)."""
    from tvm import relax

    aliases = {}
    for block in main.body.blocks:
        for binding in block.bindings:
            aliases[binding.var] = binding.value
    found, stack = set(), [main.body.body]
    while stack:
        expr = stack.pop()
        if isinstance(expr, relax.Tuple):
            stack.extend(expr.fields)
        elif isinstance(expr, relax.Var) and expr not in found:
            found.add(expr)
            value = aliases.get(expr)
            if isinstance(value, (relax.Var, relax.Tuple)):
                stack.append(value)
    return found


def _bind(b: _Builder, var, value, is_returned: bool) -> None:
    import tvm
    from tvm import relax

    if isinstance(value, relax.Call) and isinstance(value.op, tvm.ir.Op):
        op = value.op.name
        if op == "relax.call_tir":
            _bind_call_tir(b, var, value, is_returned)
        elif op == "relax.reshape":
            source = b.operand(value.args[0])
            b.values[var] = b.add_tensor(
                b.tensors[source].name + ".reshape",
                var.ty,
                b.tensors[source].storage,
                root=b.tensors[source].root,
            )
        else:
            raise ModelError(
                f"{b.label}: operator {op} is not supported by utvm's C backend "
                "(TVM did not lower it to a kernel)",
                hint="replace the operator in the model",
            )
    elif isinstance(value, relax.Call):
        raise ModelError(f"{b.label}: unsupported call to {value.op} in the lowered model")
    elif isinstance(value, relax.Tuple):
        b.values[var] = tuple(b.operand(f) for f in value.fields)
    elif isinstance(value, relax.TupleGetItem):
        b.values[var] = b.values[value.tuple_value][value.index]
    elif isinstance(value, relax.Var):
        b.values[var] = b.values[value]
    elif isinstance(value, tvm.ir.expr.GenericConst):
        b.values[var] = b.constant(value)
    else:
        raise ModelError(f"{b.label}: unsupported expression {type(value).__name__} in the lowered model")


def _bind_call_tir(b: _Builder, var, call, is_returned: bool) -> None:
    from tvm import relax

    callee = call.args[0]
    if len(call.args) > 2:
        raise ModelError(
            f"{b.label}: kernel {callee.name_hint} takes symbolic shape arguments (dynamic shapes)"
        )
    args = [b.operand(a) for a in call.args[1].fields]
    func = b.mod[callee]
    out_types = list(call.ty.fields) if isinstance(call.ty, relax.TupleType) else [call.ty]
    if len(args) == 1 and len(out_types) == 1 and relax.analysis.has_reshape_pattern(func):
        source = b.tensors[args[0]]
        view_ok = source.storage == "arena" and not (
            is_returned and b.tensors[source.root].root in _pinned(b)
        )
        if view_ok:
            b.values[var] = b.add_tensor(f"{callee.name_hint}", var.ty, "arena", root=source.root)
            return
    outputs = [
        b.add_tensor(callee.name_hint if len(out_types) == 1 else f"{callee.name_hint}.{i}", ty)
        for i, ty in enumerate(out_types)
    ]
    b.add_kernel(callee.name_hint, args, outputs, var.name)
    b.values[var] = outputs[0] if len(outputs) == 1 else tuple(outputs)


def _pinned(b: _Builder) -> set:
    """Storage that an output may not share: inputs and constants."""
    return {t.id for t in b.tensors if t.storage == "const"} | set(range(len(b.mod["main"].params)))


def _collect_outputs(b: _Builder, body) -> list:
    from tvm import relax

    value = b.values.get(body) if isinstance(body, relax.Var) else None
    if isinstance(body, relax.Tuple):
        return [b.operand(f) for f in body.fields]
    if isinstance(value, tuple):
        return list(value)
    return [b.operand(body)]


def _materialize_output(b: _Builder, tid: int, index: int) -> int:
    """An output sharing bytes with an input or a constant gets its own copy."""
    tensor = b.tensors[tid]
    if tensor.storage == "arena" and tensor.root not in _pinned(b):
        return tid
    name = f"copy_output_{index}"
    b.copy_funcs[name] = _copy_prim_func(tensor.shape, tensor.dtype)
    from tvm import relax

    out = b.add_tensor(name, relax.TensorType(tensor.shape, tensor.dtype))
    b.add_kernel(name, [tid], [out])
    return out


def _copy_prim_func(shape: tuple, dtype: str):
    from tvm import te

    source = te.placeholder(shape, dtype, name="source")
    result = te.compute(shape, lambda *i: source(*i), name="copy")
    return te.create_prim_func([source, result])


def _rename(b: _Builder, tid: int, name: str) -> None:
    tensor = b.tensors[tid]
    b.names.discard(tensor.name)
    tensor.name = b.unique(name)


def renumber(plan: ExecutionPlan) -> ExecutionPlan:
    """Order tensors as inputs, then arena tensors in execution order, then constants."""
    order = sorted(plan.tensors, key=lambda t: (t.storage == "const", t.id))
    new_id = {t.id: i for i, t in enumerate(order)}
    for t in order:
        t.id, t.root = new_id[t.id], new_id[t.root]
    for k in plan.kernels:
        k.args = [new_id[a] for a in k.args]
        k.outputs = [new_id[a] for a in k.outputs]
    plan.tensors = order
    plan.inputs = [new_id[i] for i in plan.inputs]
    plan.outputs = [new_id[i] for i in plan.outputs]
    return plan


def live_ranges(plan: ExecutionPlan, preserve_inputs: bool = True) -> dict:
    """{root tensor id: (first step, last step)} for every arena tensor that owns bytes."""
    last_step = max(len(plan.kernels) - 1, 0)
    ranges = {}

    def touch(root: int, step: int) -> None:
        first, last = ranges.get(root, (step, step))
        ranges[root] = (min(first, step), max(last, step))

    for tid in plan.inputs:
        touch(plan.tensors[tid].root, 0)
        if preserve_inputs:
            touch(plan.tensors[tid].root, last_step)
    for kernel in plan.kernels:
        for tid in kernel.args:
            if plan.tensors[tid].storage == "arena":
                touch(plan.tensors[tid].root, kernel.index)
    for tid in plan.outputs:
        touch(plan.tensors[tid].root, last_step)
    for t in plan.tensors:  # a kernel output nothing reads still needs its bytes
        if t.storage == "arena" and t.root == t.id and t.id not in ranges:
            ranges[t.id] = (0, 0)
    return ranges
