"""Route int8 kernels of a plan to the runtime's kernel library instead of TVM's generated C.

integer_ops writes each quantized operator as one integer kernel (TFLite's arithmetic, in TVM's
tensor expression language) tagged with its spec. For the patterns the library in
`templates/runtime/nn` handles (NHWC int8 convolution with groups 1, depthwise convolution with
channel multiplier 1, fully connected, element-wise add, average pooling), the plan's kernel
becomes a call into the library, and its constants are prepared at compile time:

- the input zero point folded into the bias (bias' = bias - zp_in * sum(w)); padding taps then
  read the zero point, which gives back exactly what the fold took (a padded tap contributes
  nothing in TFLite's arithmetic, and zp_in * w - zp_in * w = 0);
- weights reordered for the inner loops (same bytes, same size);
- an add's input rescaling tabulated (256 int32 per input).

Each routed kernel gets a new tensor-expression twin (`check_func`) that computes the same
function from the prepared constants, so the compile-time check runs TVM's LLVM build of it
against the library on the same inputs, kernel by kernel; the whole-model comparison against the
unprepared module shows the preparation changes no output. Everything else keeps TVM's C.

The library's sources are copied into the archive (codegen/host/src and include), so an archive
builds wherever its C goes, and the kernels run are the ones checked.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np

from . import integer_kernels as ik
from .c_names import unique_name
from .plan import ExecutionPlan, PlanTensor, renumber
from .targets import is_generic_target

HEADERS = ("utvm_nn.h", "utvm_nn_arith.h")
SOURCES = {
    "conv": "utvm_nn_conv.c",
    "depthwise": "utvm_nn_depthwise.c",
    "dense": "utvm_nn_dense.c",
    "add": "utvm_nn_elementwise.c",
    "avg_pool": "utvm_nn_elementwise.c",
}
# A depthwise kernel's 16-bit plane of one channel stays under this many bytes: longer inputs go
# through in strips of output rows.
DEPTHWISE_PLANE_BYTES = 4096
_ACC_LIMIT = 2**31 - 1


def library_enabled(target: dict) -> bool:
    """Whether kernels call the library by default for this target: on Arm Cortex-M cores, which
    its SXTB16/SMLAD and SSAT paths are written for, and on the generic C target with no CPU named
    (the host template's), where its SSE2 paths on x86-64 and its layouts beat TVM's C at -O3
    (KWS 0.59 against 1.16 ms on the host device). Named CPUs other than Cortex-M (the Cortex-A
    boards, AVR) keep TVM's C; `kernel_library=True` still forces the library there. Never by
    default on AVR, whose constants live in flash (a different address space, which the
    library's plain pointers cannot read)."""
    return str(target.get("mcpu") or "").lower().startswith("cortex-m") or is_generic_target(target)


@dataclass
class LibraryKernel:
    """One PrimFunc's calls into the library: what they compute and how they are called."""

    prim_func: str  # name of the check twin, which the plan's kernels now run
    kind: str  # "conv", "depthwise", "dense", "add", "avg_pool"
    function: str  # the library's C function
    params_type: str  # its parameter block's C type
    params: dict  # the block's fields (nested dicts for sub-structs)
    args: list  # (C type, name) of the wrapper's parameters, in the plan's argument order
    call_args: list  # the library call's arguments after the parameter block
    scratch_bytes: int
    check_func: object  # PrimFunc computing the same from the prepared constants
    prepare: object = field(repr=False)  # original constant arrays -> prepared constant arrays


def route_to_library(plan: ExecutionPlan, prim_funcs: dict) -> dict:
    """Route the plan's eligible kernels to the library, in place; return {new prim_func name:
    LibraryKernel}. `prim_funcs` are the lowered module's ({name: PrimFunc})."""
    routed: dict = {}
    by_original: dict = {}
    names = {t.name for t in plan.tensors}
    consts: dict = {}  # (dtype, shape, bytes) -> tensor id, existing and new
    for t in plan.tensors:
        if t.storage == "const" and t.root == t.id:
            consts[_const_key(t.const_data)] = t.id
    for kernel in plan.kernels:
        func = prim_funcs.get(kernel.prim_func)
        if func is None:
            continue
        if kernel.prim_func not in by_original:
            by_original[kernel.prim_func] = _library_kernel(kernel.prim_func, func, plan, kernel)
        lib = by_original[kernel.prim_func]
        if lib is None:
            continue
        const_ids = [a for a in kernel.args if plan.tensors[a].storage == "const"]
        arrays = [_const_value(plan, a) for a in const_ids]
        prepared = lib.prepare(arrays)
        if prepared is None:  # these constants would overflow the library's 32-bit sums
            continue
        new_ids = [_add_const(plan, consts, names, array, f"{lib.kind}_const") for array in prepared]
        data_args = [a for a in kernel.args if plan.tensors[a].storage != "const" and a not in kernel.outputs]
        kernel.args = data_args + new_ids + list(kernel.outputs)
        kernel.prim_func = lib.prim_func
        routed[lib.prim_func] = lib
    if routed:
        _drop_unused_constants(plan)
    return routed


def library_dir() -> Path:
    """The kernel library's sources, shipped with the device runtime (templates/runtime/nn)."""
    return Path(str(resources.files("utvm.templates") / "runtime" / "nn"))


def library_files(routed: dict) -> dict:
    """{archive path: bytes} of the library sources the routed kernels need."""
    folder = library_dir()
    files = {}
    for name in HEADERS:
        files[f"codegen/host/include/{name}"] = (folder / name).read_bytes()
    for source in sorted({SOURCES[lib.kind] for lib in routed.values()}):
        files[f"codegen/host/src/{source}"] = (folder / source).read_bytes()
    return files


def wrapper_source(name: str, kernels_header: str, wrappers: dict) -> str:
    """The C of every wrapper ({C symbol: LibraryKernel}): the plan calls these like TVM's kernels."""
    lines = [
        f"/* Model {name}: kernels that call utvm's int8 kernel library (utvm_nn.h).",
        " * Generated by utvm.model_library. */",
        "#include <stddef.h>",
        "#include <stdint.h>",
        "",
        '#include "utvm_nn.h"',
        f'#include "{kernels_header}"',
        '#include "utvm_tvm_support.h"',
        "",
        "#if UTVM_NN_ABI_VERSION != 1",
        '#error "utvm_nn.h does not match the library ABI these calls were generated for"',
        "#endif",
        "",
    ]
    scratch = max((lib.scratch_bytes for lib in wrappers.values()), default=0)
    if scratch:
        # Kernels run one at a time: one buffer serves them all. A static array rather than the
        # TVM workspace, so a model needs no workspace allocator for the library's kernels.
        lines += [f"static uint64_t scratch[{-(-scratch // 8)}]; /* {scratch} bytes */", ""]
    for symbol, lib in wrappers.items():
        lines += [
            f"static const {lib.params_type} {symbol}_params = {_initializer(lib.params)};",
            "",
            prototype(symbol, lib)[:-1] + " {",
        ]
        call = ", ".join([f"&{symbol}_params", *lib.call_args, *(["scratch"] if lib.scratch_bytes else [])])
        lines += [f"  {lib.function}({call});", "  return 0;", "}", ""]
    return "\n".join(lines)


def prototype(symbol: str, lib: LibraryKernel) -> str:
    params = ", ".join(f"{ctype}* {pname}" for ctype, pname in lib.args)
    return f"int32_t {symbol}({params});"


# ---- choosing and preparing ------------------------------------------------------------------


def _library_kernel(name: str, func, plan: ExecutionPlan, kernel):
    tagged = ik.spec_of(func)
    if tagged is None:
        return None
    op, spec = tagged
    builders = {"conv2d": _conv, "dense": _dense, "add": _add, "avg_pool2d": _avg_pool}
    if op not in builders:
        return None
    return builders[op](f"{name}_lib", spec)


def _int8_output(spec: dict, data_key: str = "data_dtype", out_key: str = "out_dtype") -> bool:
    return spec.get(data_key) == "int8" and spec.get(out_key) == "int8"


def _output_block(spec: dict) -> dict:
    return {
        "output_zero_point": int(spec["output_zero_point"]),
        "act_min": int(spec["activation"][0]),
        "act_max": int(spec["activation"][1]),
        "rounding": 1 if spec["rounding"] == "single" else 0,
    }


def _weighted_args(weight_name: str = "weight") -> list:
    return [("int8_t", "data"), ("int8_t", weight_name), ("int32_t", "bias"), ("int32_t", "multiplier"),
            ("int32_t", "shift"), ("int8_t", "output")]


def _folded_bias(bias, weights_2d: np.ndarray, zero_point: int):
    """bias - zp * sum(w) per row, or None if a 32-bit sum could overflow."""
    w = weights_2d.astype(np.int64)
    base = np.zeros(w.shape[0], np.int64) if bias is None else bias.astype(np.int64)
    folded = base - zero_point * w.sum(1)
    worst = np.abs(folded) + 128 * np.abs(w).sum(1)
    if worst.max(initial=0) > _ACC_LIMIT:
        return None
    return folded.astype(np.int32)


def _split_weighted(arrays: list, has_bias: bool) -> tuple:
    """(weights, bias or None, multiplier, shift) from a weighted kernel's constant arguments."""
    if has_bias:
        weights, bias, mult, shift = arrays
    else:
        (weights, mult, shift), bias = arrays, None
    return weights, bias, mult, shift


def _conv(name: str, spec: dict):
    if spec["data_layout"] != "NHWC" or not _int8_output(spec):
        return None
    n, h, w, c = spec["data_shape"]
    o, kh, kw, ipg = spec["weight_shape"]
    groups = int(spec["groups"])
    (sh, sw), (dh, dw) = spec["strides"], spec["dilation"]
    top, left, bottom, right = spec["padding"]
    oh = (h + top + bottom - (dh * (kh - 1) + 1)) // sh + 1
    ow = (w + left + right - (dw * (kw - 1) + 1)) // sw + 1
    depthwise = groups == c == o and ipg == 1 and groups > 1
    if groups != 1 and not depthwise:
        return None
    zp = int(spec["input_zero_point"])
    has_bias = bool(spec["has_bias"])
    k = kh * kw * ipg
    k4 = -(-k // 4) * 4
    block = {
        "batches": n, "in_h": h, "in_w": w, "in_c": c, "out_h": oh, "out_w": ow, "out_c": o,
        "k_h": kh, "k_w": kw, "stride_h": sh, "stride_w": sw, "dilation_h": dh, "dilation_w": dw,
        "pad_top": top, "pad_left": left, "input_zero_point": zp, "strip_rows": 0,
        "out": _output_block(spec),
    }  # fmt: skip
    if depthwise:
        block["strip_rows"], scratch = depthwise_scratch(oh, ow, kh, kw, sh, sw, dh, dw)

        def prepare(arrays):
            weights, bias, mult, shift = _split_weighted(arrays, has_bias)
            folded = _folded_bias(bias, weights.reshape(o, -1), zp)
            return None if folded is None else [weights, folded, mult, shift]

        check = _conv_check(spec, oh, ow, "depthwise", k4)
        return LibraryKernel(name, "depthwise", "utvm_nn_depthwise_s8", "utvm_nn_depthwise_t", block,
                             _weighted_args(), ["data", "weight", "bias", "multiplier", "shift", "output"],
                             scratch, check, prepare)
    scratch = 2 * k4 * 2 + k4  # two int16 columns and the int8 staging row (utvm_nn_conv_scratch_bytes)

    def prepare(arrays):
        weights, bias, mult, shift = _split_weighted(arrays, has_bias)
        rows = weights.reshape(o, k)
        folded = _folded_bias(bias, rows, zp)
        return None if folded is None else [pair_rows(rows), folded, mult, shift]

    check = _conv_check(spec, oh, ow, "gemm", k4)
    return LibraryKernel(name, "conv", "utvm_nn_conv_s8", "utvm_nn_conv_t", block, _weighted_args(),
                         ["data", "weight", "bias", "multiplier", "shift", "output"], scratch, check, prepare)


def depthwise_scratch(oh: int, ow: int, kh: int, kw: int, sh: int, sw: int, dh: int, dw: int) -> tuple:
    """(strip_rows, scratch bytes) of a depthwise kernel, as utvm_nn_depthwise.c lays them out: the
    plane's rows run along the longer output dimension; a strip of output rows at a time keeps
    the plane under DEPTHWISE_PLANE_BYTES; then one row of int32 sums."""
    if oh > ow:  # transposed view
        oh, ow, kh, kw, sh, sw, dh, dw = ow, oh, kw, kh, sw, sh, dw, dh
    pw = (ow - 1) * sw + (kw - 1) * dw + 1

    def rows_for(strip: int) -> int:
        return (strip - 1) * sh + (kh - 1) * dh + 1

    strip = oh
    while strip > 1 and rows_for(strip) * pw * 2 > DEPTHWISE_PLANE_BYTES:
        strip -= 1
    plane = rows_for(strip) * pw * 2
    return strip, -(-plane // 4) * 4 + ow * 4


def pair_rows(rows: np.ndarray) -> np.ndarray:
    """The convolution's weight layout: rows in pairs, 4-byte blocks of each row in turn, K padded
    to a multiple of 4; an odd last row plain."""
    return _interleave_rows(rows, 2)


def quad_rows(rows: np.ndarray) -> np.ndarray:
    """The fully connected layout: as pair_rows, with rows in fours; the last M % 4 rows plain."""
    return _interleave_rows(rows, 4)


def _interleave_rows(rows: np.ndarray, group: int) -> np.ndarray:
    m, k = rows.shape
    k4 = -(-k // 4) * 4
    padded = np.zeros((m, k4), np.int8)
    padded[:, :k] = rows
    full = (m // group) * group
    grouped = padded[:full].reshape(m // group, group, k4 // 4, 4).transpose(0, 2, 1, 3).reshape(-1)
    return np.ascontiguousarray(np.concatenate([grouped, padded[full:].reshape(-1)]))


def _dense(name: str, spec: dict):
    if not _int8_output(spec):
        return None
    n, k = spec["data_shape"]
    m = spec["weight_shape"][0]
    zp = int(spec["input_zero_point"])
    has_bias = bool(spec["has_bias"])
    block = {"batches": n, "k": k, "m": m, "out": _output_block(spec)}

    def prepare(arrays):
        weights, bias, mult, shift = _split_weighted(arrays, has_bias)
        folded = _folded_bias(bias, weights, zp)
        return None if folded is None else [quad_rows(weights), folded, mult, shift]

    return LibraryKernel(name, "dense", "utvm_nn_dense_s8", "utvm_nn_dense_t", block, _weighted_args(),
                         ["data", "weight", "bias", "multiplier", "shift", "output"], 0,
                         _dense_check(spec), prepare)


def _add(name: str, spec: dict):
    if spec["dtype"] != "int8":
        return None
    count = int(np.prod(spec["shape"]))
    out_mult, out_shift = spec["output_multiplier"]
    block = {"count": count, "multiplier": int(out_mult), "shift": int(out_shift), "out": _output_block(spec)}
    tables = [add_table(spec, i) for i in (0, 1)]

    def prepare(arrays):
        return tables

    args = [("int8_t", "a"), ("int8_t", "b"), ("int32_t", "table_a"), ("int32_t", "table_b"),
            ("int8_t", "output")]
    return LibraryKernel(name, "add", "utvm_nn_add_s8", "utvm_nn_add_t", block, args,
                         ["a", "b", "table_a", "table_b", "output"], 0, _add_check(spec), prepare)


def add_table(spec: dict, which: int) -> np.ndarray:
    """TFLite ADD's rescaled input `which` for every int8 value, indexed by the value's byte."""
    zero_point = int(spec["input_zero_points"][which])
    mult, shift = spec["input_multipliers"][which]
    values = np.arange(256, dtype=np.int64).astype(np.uint8).view(np.int8).astype(np.int64)
    left = 1 << int(spec["left_shift"])
    rounding = spec["rounding"]
    scaled = [requantize_int(int(v - zero_point) * left, int(mult), int(shift), rounding) for v in values]
    return np.array(scaled, dtype=np.int32)


def requantize_int(acc: int, multiplier: int, shift: int, rounding: str) -> int:
    """integer_kernels.requantize on Python integers (int32 in, int32 out)."""
    acc = _wrap32(acc)
    if rounding == "single":
        total = 31 - shift
        return _wrap32((acc * multiplier + (1 << (total - 1))) >> total)
    left, right = max(shift, 0), max(-shift, 0)
    high = ((acc << left) * multiplier + (1 << 30)) >> 31
    half = ((1 << right) - 1) >> 1
    up = 1 if high >= 0 and right > 0 else 0
    return _wrap32((high + half + up) >> right)


def _wrap32(value: int) -> int:
    return (value + 2**31) % 2**32 - 2**31


def _avg_pool(name: str, spec: dict):
    if spec["layout"] != "NHWC" or spec["dtype"] != "int8":
        return None
    n, h, w, c = spec["data_shape"]
    (ph, pw), (sh, sw) = spec["pool"], spec["strides"]
    top, left, bottom, right = spec["padding"]
    oh = (h + top + bottom - ph) // sh + 1
    ow = (w + left + right - pw) // sw + 1
    block = {"batches": n, "in_h": h, "in_w": w, "channels": c, "out_h": oh, "out_w": ow, "pool_h": ph,
             "pool_w": pw, "stride_h": sh, "stride_w": sw, "pad_top": top, "pad_left": left,
             "act_min": int(spec["activation"][0]), "act_max": int(spec["activation"][1])}
    spec_obj = ik.AvgPoolSpec(**{**spec, "data_shape": tuple(spec["data_shape"]), "pool": tuple(spec["pool"]),
                                 "strides": tuple(spec["strides"]), "padding": tuple(spec["padding"]),
                                 "activation": tuple(spec["activation"])})
    return LibraryKernel(name, "avg_pool", "utvm_nn_avg_pool_s8", "utvm_nn_avg_pool_t", block,
                         [("int8_t", "data"), ("int8_t", "output")], ["data", "output"], 0,
                         ik.avg_pool_prim_func(spec_obj), lambda arrays: [])


# ---- the check's twins: the same function, from the prepared constants ------------------------


def _channel_params(channels: int):
    from tvm import te

    return tuple(te.placeholder((channels,), "int32", name=n) for n in ("bias", "multiplier", "shift"))


def _spec_object(cls, spec: dict):
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in spec.items()})


def _conv_check(spec: dict, oh: int, ow: int, layout: str, k4: int):
    """Folded-bias convolution: sum(x_padded * w) + bias', padding read as the zero point."""
    from tvm import te, tirx

    conv = _spec_object(ik.ConvSpec, spec)
    n, h, w, c = conv.data_shape
    o, kh, kw, ipg = conv.weight_shape
    (sh, sw), (dh, dw) = conv.strides, conv.dilation
    top, left = conv.padding[0], conv.padding[1]
    data = te.placeholder(conv.data_shape, "int8", name="data")
    if layout == "gemm":
        weight = te.placeholder((o * k4,), "int8", name="weight")
    else:
        weight = te.placeholder(conv.weight_shape, "int8", name="weight")
    bias, mult, shift = _channel_params(o)
    ry, rx, rc = te.reduce_axis((0, kh), "ry"), te.reduce_axis((0, kw), "rx"), te.reduce_axis((0, ipg), "rc")
    zp = tirx.const(conv.input_zero_point, "int32")
    pairs = o // 2

    def tap(b, y, x, ch):
        inside = tirx.all(y >= 0, y < h, x >= 0, x < w)
        return tirx.if_then_else(inside, data[b, y, x, ch].astype("int32"), zp)

    def weight_at(k_out, kk):
        if layout != "gemm":
            return weight[k_out, ry, rx, rc]
        paired = (k_out // 2) * (2 * k4) + (kk // 4) * 8 + (k_out % 2) * 4 + kk % 4
        plain = pairs * 2 * k4 + kk
        return weight[tirx.Select(k_out < 2 * pairs, paired, plain)]

    def acc(b, y, x, k_out):
        ch = rc if layout == "gemm" else k_out
        kk = (ry * kw + rx) * ipg + rc
        value = tap(b, y * sh + ry * dh - top, x * sw + rx * dw - left, ch)
        return te.sum(value * weight_at(k_out, kk).astype("int32"), axis=[ry, rx, rc])

    accumulator = te.compute((n, oh, ow, o), acc, name="acc")
    output = te.compute(
        accumulator.shape,
        lambda b, y, x, k_out: ik._requantized(conv, accumulator[b, y, x, k_out], (bias, mult, shift), k_out),
        name="requantize",
    )
    return te.create_prim_func([data, weight, bias, mult, shift, output])


def _dense_check(spec: dict):
    from tvm import te, tirx

    dense = _spec_object(ik.DenseSpec, spec)
    n, k = dense.data_shape
    m = dense.weight_shape[0]
    k4 = -(-k // 4) * 4
    quads = m // 4
    data = te.placeholder((n, k), "int8", name="data")
    weight = te.placeholder((m * k4,), "int8", name="weight")
    bias, mult, shift = _channel_params(m)
    rk = te.reduce_axis((0, k), "rk")

    def weight_at(j, kk):
        grouped = (j // 4) * (4 * k4) + (kk // 4) * 16 + (j % 4) * 4 + kk % 4
        plain = quads * 4 * k4 + (j - quads * 4) * k4 + kk
        return weight[tirx.Select(j < 4 * quads, grouped, plain)]

    accumulator = te.compute(
        (n, m), lambda i, j: te.sum(data[i, rk].astype("int32") * weight_at(j, rk).astype("int32"), axis=rk),
        name="acc",
    )
    output = te.compute(
        (n, m), lambda i, j: ik._requantized(dense, accumulator[i, j], (bias, mult, shift), j),
        name="requantize",
    )
    return te.create_prim_func([data, weight, bias, mult, shift, output])


def _add_check(spec: dict):
    from tvm import te, tirx

    add = _spec_object(ik.AddSpec, spec)
    a = te.placeholder(add.shape, "int8", name="a")
    b = te.placeholder(add.shape, "int8", name="b")
    table_a = te.placeholder((256,), "int32", name="table_a")
    table_b = te.placeholder((256,), "int32", name="table_b")
    i32 = "int32"
    byte = tirx.const(255, i32)

    def body(*index):
        total = table_a[a[index].astype(i32) & byte] + table_b[b[index].astype(i32) & byte]
        mult, shift = add.output_multiplier
        out = ik.requantize(total, tirx.const(mult, i32), tirx.const(shift, i32), add.rounding)
        out = out + tirx.const(add.output_zero_point, i32)
        return ik._clamp_cast(out, add.activation[0], add.activation[1], add.dtype)

    output = te.compute(add.shape, body, name="add")
    return te.create_prim_func([a, b, table_a, table_b, output])


# ---- plan surgery -------------------------------------------------------------------------------


def _const_key(array: np.ndarray) -> tuple:
    return (str(array.dtype), array.shape, array.tobytes())


def _const_value(plan: ExecutionPlan, tid: int) -> np.ndarray:
    tensor = plan.tensors[tid]
    root = plan.tensors[tensor.root]
    return np.ascontiguousarray(root.const_data).reshape(tensor.shape)


def _add_const(plan: ExecutionPlan, consts: dict, names: set, array: np.ndarray, label: str) -> int:
    array = np.ascontiguousarray(array)
    key = _const_key(array)
    if key not in consts:
        tid = len(plan.tensors)
        name = unique_name(label, names)
        plan.tensors.append(PlanTensor(tid, name, tuple(array.shape), str(array.dtype), "const", tid, array))
        consts[key] = tid
    return consts[key]


def _drop_unused_constants(plan: ExecutionPlan) -> None:
    """Remove constants no kernel reads any more, and number the tensors again."""
    used_roots = {plan.tensors[a].root for k in plan.kernels for a in k.args}
    plan.tensors = [t for t in plan.tensors if t.storage != "const" or t.root in used_roots]
    renumber(plan)


def _initializer(value) -> str:
    if isinstance(value, dict):
        return "{" + ", ".join(f".{key} = {_initializer(v)}" for key, v in value.items()) + "}"
    return str(int(value))
