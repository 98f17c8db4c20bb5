"""Relax lowering: operators become TIR kernels, fused, with constants folded.

The result's `main` is a dataflow block of `R.call_tir` calls (plus reshapes and tuples) that
`plan.extract_plan` turns into a static plan. Memory is planned by utvm's own offset planner
over that call sequence, not by the VM's allocator, so no VM builtins are introduced here.
"""

from __future__ import annotations

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
        raise ModelError(f"{label}: TVM could not lower the model: {first}") from None


def prim_funcs_in(mod) -> dict:
    """{name: PrimFunc} of the lowered module."""
    from tvm import tirx

    return {gv.name_hint: f for gv, f in mod.functions.items() if isinstance(f, tirx.PrimFunc)}
