"""Fold every kernel call on constants with one LLVM build, instead of one build per call.

After legalization a model's weight preparation is a chain of `call_tir`s on constants: the
transposes of a TFLite model's filters, the ConstantOfShape fills of ONNX's light models. TVM's
FoldConstant builds each of those kernels on its own with LLVM (373 builds and 14 s for ONNX's
light ResNet-50). `fold_constants` finds every call whose operands are constants or the results
of such calls, builds all their kernels in one module, runs them in order, and binds each result
as a constant. TVM's FoldConstant still runs afterwards for whatever this leaves.
"""

from __future__ import annotations


def fold_constants():
    """A Relax module pass doing the above on `main`."""
    import tvm

    @tvm.transform.module_pass(opt_level=0, name="UtvmFoldConstantCalls")
    def transform(mod, _ctx):
        return _fold(mod)

    return transform


def _fold(mod):
    import tvm
    from tvm import relax

    main = mod["main"]
    foldable = _foldable_calls(main, mod)
    if not foldable:
        return mod
    names = sorted({call.args[0].name_hint for call in foldable.values()})
    kernels = tvm.IRModule({tvm.ir.GlobalVar(n): mod[n].with_attr("global_symbol", n) for n in names})
    library = tvm.compile(kernels, target="llvm")
    values = {}
    for var, call in foldable.items():  # in program order: operands are folded before their users
        operands = [values[a] if isinstance(a, relax.Var) else a.value for a in call.args[1].fields]
        ty = call.ty
        result = tvm.runtime.empty(tuple(int(d) for d in ty.shape.values), ty.dtype)
        library[call.args[0].name_hint](*operands, result)
        values[var] = result
    blocks = []
    for block in main.body.blocks:
        bindings = [
            relax.VarBinding(b.var, relax.const(values[b.var])) if b.var in values else b
            for b in block.bindings
        ]
        blocks.append(type(block)(bindings))
    body = relax.SeqExpr(blocks, main.body.body)
    mod = mod.clone()
    mod["main"] = relax.Function(main.params, body, main.ret_ty, main.is_pure, main.attrs)
    return mod


def _foldable_calls(main, mod) -> dict:
    """{var: call_tir} for calls whose operands are all constants or earlier foldable results."""
    import tvm
    from tvm import relax

    call_tir = tvm.ir.Op.get("relax.call_tir")
    found: dict = {}
    for block in main.body.blocks:
        for binding in block.bindings:
            call = binding.value
            if not (isinstance(binding, relax.VarBinding) and isinstance(call, relax.Call)):
                continue
            if not call.op.same_as(call_tir) or len(call.args) != 2:
                continue
            ty = call.ty
            if not isinstance(ty, relax.TensorType) or not _static(ty):
                continue
            if not isinstance(mod[call.args[0]], tvm.tirx.PrimFunc):
                continue
            operands = call.args[1].fields
            if all(isinstance(a, tvm.ir.expr.GenericConst) or a in found for a in operands):
                found[binding.var] = call
    return found


def _static(ty) -> bool:
    shape = ty.shape
    return shape is not None and hasattr(shape, "values") and all(hasattr(d, "value") for d in shape.values)
