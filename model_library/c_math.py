"""Math intrinsics that TVM's C code generator cannot print, given as C99 <math.h> calls.

TVM lowers most math intrinsics for the "c" target to libm calls (expf, tanhf, ...), but leaves
some unresolved, so C generation fails ("Unresolved call tirx.fabs"): `abs` of a float (Softsign,
Softplus, isinf and isfinite all use it), `exp2`, `exp10` and `fmod`. The LLVM target has its own
rules for them. `map_math_calls` (a module pass, run after TVM's LowerIntrin) rewrites each
remaining call into the C99 function of the right precision: `fabsf` for float32, `fabs` for
float64, and 10^x as `powf(10.0f, x)` (C99 has no exp10).
"""

from __future__ import annotations

# tirx op -> C99 function for float64; float32 adds the `f` suffix.
_C99 = {"tirx.fabs": "fabs", "tirx.exp2": "exp2", "tirx.fmod": "fmod"}
_SUFFIX = {"float32": "f", "float64": ""}


def map_math_calls():
    """A module pass: every call above with a float32/float64 result becomes a C99 libm call."""
    import tvm
    import tvm_ffi
    from tvm import tirx

    def rewrite(node):
        dtype = str(getattr(node.ty, "dtype", ""))  # a TIR call's type is its scalar type
        if not isinstance(node.op, tvm.ir.Op) or dtype not in _SUFFIX:
            return node
        suffix = _SUFFIX[dtype]
        if node.op.name in _C99:
            return tirx.call_pure_extern(dtype, _C99[node.op.name] + suffix, *node.args)
        if node.op.name == "tirx.exp10":
            return tirx.call_pure_extern(dtype, "pow" + suffix, tirx.const(10.0, dtype), node.args[0])
        return node

    def convert(func):
        return func.with_body(tvm_ffi.structural_map(func.body, [(tvm.ir.Call, rewrite)]))

    @tvm.transform.module_pass(opt_level=0, name="UtvmMapMathCalls")
    def transform(mod, _ctx):
        return tvm.IRModule(
            {gv: convert(f) if isinstance(f, tirx.PrimFunc) else f for gv, f in mod.functions.items()},
            attrs=mod.attrs,
        )

    return transform
