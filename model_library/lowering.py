"""Relax lowering: operators become TIR kernels, fused, with constants folded.

The result's `main` is a dataflow block of `R.call_tir` calls (plus reshapes and tuples) that
`plan.extract_plan` turns into a static plan. Memory is planned by utvm's own offset planner
over that call sequence, not by the VM's allocator, so no VM builtins are introduced here.
"""

from __future__ import annotations

from .constant_folding import fold_constants
from .errors import ModelError


def lower(mod, target: dict, label: str):
    """Legalize, fold and fuse `mod`; raise ModelError if TVM cannot lower an operator."""
    import tvm
    from tvm import relax

    from .targets import tvm_target

    passes = [
        relax.transform.DecomposeOpsForInference(),
        relax.transform.LegalizeOps(),
        relax.transform.AnnotateTIROpPattern(),
        fold_constants(),
        relax.transform.FoldConstant(),
        relax.transform.FuseOps(),
        relax.transform.FuseTIR(),
        relax.transform.DeadCodeElimination(),
    ]
    try:
        with tvm_target(target), tvm.transform.PassContext(opt_level=3):
            return tvm.ir.transform.Sequential(passes)(mod)
    except Exception as err:
        first = next((line for line in str(err).splitlines() if line.strip()), type(err).__name__)
        culprit = _failing_operator(mod, target)
        if culprit:
            detail = type(err).__name__ + (f": {first}" if first != type(err).__name__ else "")
            raise ModelError(
                f"{label}: TVM cannot lower operator {culprit}: {detail}",
                hint="the operator's attributes or shapes are outside what TVM's lowering handles",
            ) from None
        raise ModelError(f"{label}: TVM could not lower the model: {first}") from None


def _failing_operator(mod, target: dict) -> str:
    """The first operator call in `main` that TVM cannot legalize on its own, described; or "".

    TVM's legalization fails with the error of whichever operator's lowering broke (often a bare
    AssertionError from TOPI), so each call is tried alone to name the operator.
    """
    import tvm
    from tvm import relax

    from .targets import tvm_target

    main = mod["main"]
    for block in main.body.blocks:
        for binding in block.bindings:
            call = binding.value
            if not (isinstance(call, relax.Call) and isinstance(call.op, tvm.ir.Op)):
                continue
            params = list(relax.analysis.free_vars(call))
            try:
                out = relax.Var("out", binding.var.ty)  # a plain var: the call leaves its dataflow block
                body = relax.SeqExpr([relax.BindingBlock([relax.VarBinding(out, call)])], out)
                alone = relax.Function(params, body, out.ty)
                with tvm_target(target), tvm.transform.PassContext(opt_level=3):
                    relax.transform.LegalizeOps()(tvm.IRModule({"main": alone}))
            except Exception:
                return _describe_call(call)
    return ""


def _describe_call(call) -> str:
    """`nn.prelu(float32[2, 3, 4], float32[3]; axis=2)`: the operator, its operand types, attributes."""
    operands = []
    for arg in call.args:
        ty = arg.ty
        shape = getattr(ty, "shape", None)
        if hasattr(ty, "dtype") and shape is not None and hasattr(shape, "values"):
            dims = [str(d.value) if hasattr(d, "value") else str(d) for d in shape.values]
            operands.append(f"{ty.dtype}[{', '.join(dims)}]")
        else:
            operands.append(type(ty).__name__)
    attrs = []
    if call.attrs is not None:  # an attributes object's fields are its plain, public attributes
        for key in sorted(dir(call.attrs)):
            value = getattr(call.attrs, key, None)
            if not key.startswith("_") and key != "id_" and not callable(value):
                attrs.append(f"{key}={value}")
    name = call.op.name.removeprefix("relax.")
    return f"{name}({', '.join(operands)}" + (f"; {', '.join(attrs)}" if attrs else "") + ")"


def prim_funcs_in(mod) -> dict:
    """{name: PrimFunc} of the lowered module."""
    from tvm import tirx

    return {gv.name_hint: f for gv, f in mod.functions.items() if isinstance(f, tirx.PrimFunc)}
