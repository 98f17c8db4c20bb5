"""Generate the model's kernels as C with TVM's C code generator, in microTVM's unpacked style.

TVM 0.27 lowers every PrimFunc to the packed FFI convention (DLTensor arguments checked at run
time, with the check messages kept as strings). A microcontroller wants the old microTVM
convention instead: `int32_t kernel(float *a, int8_t *b, ...)` over raw data pointers, shapes
fixed at compile time. So we run TVM's CPU lowering passes ourselves and, where TVM would run
MakePackedAPI, bind each buffer parameter to a plain pointer parameter. The C that TVM prints
is then made self-contained: its TVM includes become one small support header shipped in the
archive, so the sources build without TVM installed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .c_math import map_math_calls
from .c_names import c_identifier

SUPPORT_HEADER = "utvm_tvm_support.h"
# What TVM's C host code generator puts at the top of every file; replaced by SUPPORT_HEADER.
_TVM_PREAMBLE = (
    "#define TVM_EXPORTS",
    '#include "tvm/ffi/extra/c_env_api.h"',
    '#include "tvm/runtime/base.h"',
    '#include "tvm/runtime/c_backend_api.h"',
    '#include "tvm/ffi/c_api.h"',
)
_LIBRARY_CTX = "void* __tvm_ffi__library_ctx = NULL;"
# TVM prints non-finite float immediates as `inff`, `nanf` (float) and `inf`, `nan` (double),
# which are not C; <math.h>'s INFINITY and NAN are. c_names keeps these words out of identifiers.
_NON_FINITE = (
    (re.compile(r"\binff\b"), "INFINITY"),
    (re.compile(r"\bnanf\b"), "NAN"),
    (re.compile(r"\binf\b"), "((double)INFINITY)"),
    (re.compile(r"\bnan\b"), "((double)NAN)"),
)
_ALLOC = re.compile(r"(\w+) = .*TVMBackendAllocWorkspace\(\d+, \d+, \(uint64_t\)(\d+)ULL, \d+, \d+\)")
_FREE = re.compile(r"TVMBackendFreeWorkspace\(\d+, \d+, (\w+)\)")


@dataclass
class KernelSources:
    """TVM's C for a set of kernels, ready to ship."""

    source: str  # the kernels' C file
    prototypes: dict  # C symbol -> prototype line ("int32_t f(float* a, ...);")
    workspace: dict  # C symbol -> peak workspace bytes it allocates through the backend


def generate_kernels(prim_funcs: dict, target: dict, header_name: str, workspace_alignment: int = 16):
    """Compile `prim_funcs` ({C symbol: PrimFunc}) to one C source with unpacked signatures."""
    import tvm
    from tvm import tirx

    from .targets import tvm_target

    tvm_tgt = tvm_target(target)
    functions = {}
    for symbol, func in prim_funcs.items():
        func = func.with_attr("global_symbol", symbol)
        # A single function would be marked the module's entry and get a packed wrapper.
        functions[tvm.ir.GlobalVar(symbol)] = func.without_attr("tirx.is_entry_func")
    mod = tvm.IRModule(functions)
    mod = tirx.transform.BindTarget(tvm_tgt.with_host(tvm_tgt))(mod)
    with tvm.transform.PassContext(opt_level=3):
        mod = _lowering_passes()(mod)
        mod = tvm.ir.transform.Sequential(
            [tirx.transform.LowerTVMBuiltin(), tirx.transform.LowerIntrin(), map_math_calls()]
        )(mod)
        runtime_module = tvm.get_global_func("target.build.c")(mod, tvm_tgt)
    raw = runtime_module.inspect_source()
    source = _make_self_contained(raw, header_name)
    prototypes = _prototypes(source, list(prim_funcs))
    workspace = _workspace_per_function(source, list(prim_funcs), workspace_alignment)
    return KernelSources(source, prototypes, workspace)


def _lowering_passes():
    """TVM's CPU lowering (as tvm.tirx.build runs it), with the unpacked API instead of the packed."""
    import tvm
    from tvm import s_tir, tirx

    passes = [
        s_tir.transform.CanonicalizeLoop(),
        s_tir.transform.LowerCrossThreadReduction(),
        s_tir.transform.LowerInitBlock(),
        s_tir.transform.PlanAndUpdateBufferAllocationLocation(),
        s_tir.transform.ConvertBlocksToOpaque(),
        s_tir.transform.CompactBufferAllocation(),
        s_tir.transform.LowerMatchBuffer(),
        s_tir.transform.StmtSimplify(),
        s_tir.transform.LowerOpaqueBlock(),
        tirx.transform.FlattenBuffer(),
        tirx.transform.BF16ComputeLegalize(),
        tirx.transform.NarrowDataType(32),
        s_tir.transform.LoopPartition(),
        tirx.transform.VectorizeLoop(True),
        tirx.transform.StorageRewrite(),
        s_tir.transform.HoistIfThenElse(),
        tirx.transform.UnrollLoop(),
        s_tir.transform.RenormalizeSplitPattern(),
        tirx.transform.StmtSimplify(),
        tirx.transform.RemoveNoOp(),
        s_tir.transform.RewriteUnsafeSelect(),
        tirx.transform.CommonSubexprElim(),
        tirx.transform.FP8ComputeLegalize(),
        tirx.transform.VerifyMemory(),
        unpacked_api(),
        tirx.transform.FP8StorageLegalize(),
        tirx.transform.BF16StorageLegalize(),
    ]
    return tvm.ir.transform.Sequential(passes)


def unpacked_api():
    """A module pass: every buffer parameter becomes a raw data pointer; the function returns int32.

    The body keeps using the buffer: a DeclBuffer binds it to the new pointer. The device attributes
    tell LowerTVMBuiltin that large temporaries go to TVMBackendAllocWorkspace on the CPU.
    """
    import tvm
    from tvm import tirx
    from tvm.ir import PointerType, PrimType

    def convert(func):
        params, decls, taken = [], [], set()
        for param in func.params:
            if tirx.is_buffer_var(param):
                # Parameter names come from the model (an ONNX input `gpu_0/data_0`, say).
                pointer = tirx.Var(c_identifier(param.name, taken), PointerType(PrimType(param.dtype)))
                params.append(pointer)
                decls.append(tirx.DeclBuffer(param, data=pointer))
            else:
                params.append(param)
        zero = tirx.IntImm("int32", 0)
        # The attributes also give the body its own scope, so the workspace frees that
        # LowerTVMBuiltin adds at the end of the body come before the `return 0`.
        body = tirx.AttrStmt("default", "device_id", zero, func.body)
        body = tirx.AttrStmt("default", "device_type", tirx.IntImm("int32", 1), body)  # kDLCPU
        return tirx.PrimFunc(
            params, tirx.SeqStmt([*decls, body, tirx.Return(zero)]), PrimType("int32"), func.attrs
        )

    @tvm.transform.module_pass(opt_level=0, name="UtvmUnpackedAPI")
    def transform(mod, _ctx):
        return tvm.IRModule({gv: convert(f) for gv, f in mod.functions.items()}, attrs=mod.attrs)

    return transform


def _make_self_contained(raw: str, header_name: str) -> str:
    """Swap TVM's includes for our support header, drop the unused FFI library context, and spell
    non-finite float constants as C does."""
    lines = raw.splitlines()
    missing = [line for line in _TVM_PREAMBLE if line not in lines]
    if missing:
        raise RuntimeError(f"TVM's C code generator changed its preamble; expected {missing!r}")
    out, replaced = [], False
    for line in lines:
        if line in _TVM_PREAMBLE:
            if not replaced:
                out.append(f'#include "{SUPPORT_HEADER}"')
                out.append(f'#include "{header_name}"')
                replaced = True
            continue
        if line.strip() == _LIBRARY_CTX:
            continue
        out.append(line.rstrip())
    source = "\n".join(out) + "\n"
    for pattern, replacement in _NON_FINITE:
        source = pattern.sub(replacement, source)
    leftover = re.findall(r'#include "tvm/[^"]+"', source)
    if leftover or "__tvm_ffi__library_ctx" in source:
        raise RuntimeError(f"TVM's C code still needs TVM headers or its FFI context: {leftover}")
    return source


def _prototypes(source: str, symbols: list) -> dict:
    """The `TVM_DLL int32_t sym(...);` forward declarations TVM prints, as plain prototypes."""
    found = {}
    for match in re.finditer(r"^TVM_DLL (int32_t (\w+)\(.*\));$", source, flags=re.M):
        found.setdefault(match.group(2), match.group(1) + ";")
    missing = [s for s in symbols if s not in found]
    if missing:
        raise RuntimeError(f"no prototype in TVM's C for kernels {missing}")
    return {s: found[s] for s in symbols}


def _workspace_per_function(source: str, symbols: list, alignment: int) -> dict:
    """Peak bytes each kernel takes from the backend's stack allocator (aligned like the backend)."""
    starts = [
        (m.start(), m.group(1)) for m in re.finditer(r"^TVM_DLL int32_t (\w+)\(.*\) \{$", source, flags=re.M)
    ]
    peaks = {}
    for i, (start, symbol) in enumerate(starts):
        end = starts[i + 1][0] if i + 1 < len(starts) else len(source)
        stack, top, peak = [], 0, 0
        for line in source[start:end].splitlines():
            alloc, free = _ALLOC.search(line), _FREE.search(line)
            if alloc:
                begin = -(-top // alignment) * alignment
                stack.append((alloc.group(1), top))
                top = begin + int(alloc.group(2))
                peak = max(peak, top)
            elif free:
                names = [name for name, _ in stack]
                if free.group(1) not in names:
                    raise RuntimeError(f"{symbol}: workspace free of {free.group(1)} without an allocation")
                index = names.index(free.group(1))
                if index == len(stack) - 1:
                    top = stack.pop()[1]
                    while stack and stack[-1][0] is None:
                        top = stack.pop()[1]
                else:
                    stack[index] = (None, stack[index][1])
        body = source[start:end]
        if body.count("TVMBackendAllocWorkspace(") != len(_ALLOC.findall(body)):
            raise RuntimeError(f"{symbol}: cannot read the size of a workspace allocation")
        peaks[symbol] = peak
    missing = [s for s in symbols if s not in peaks]
    if missing:
        raise RuntimeError(f"no definition in TVM's C for kernels {missing}")
    return {s: peaks[s] for s in symbols}
