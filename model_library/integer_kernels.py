"""Integer kernels with TFLite's reference arithmetic, written in TVM's tensor expression language.

TVM's TFLite importer runs an int8 model as float: dequantize, float operator, quantize. That is
close to TFLite but not the same (each layer can round differently by one, which compounds), it
keeps activations in float (four times the RAM) and weights in float (four times the flash). These
kernels compute what TFLite's reference kernels (and TFLite Micro's) compute, bit for bit:
int32 accumulation of (input - zero point) * weight, an int32 bias, and requantization with a
fixed-point multiplier and shift (gemmlowp's rounding). TVM's C code generator turns them into C
like every other kernel.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass

import numpy as np

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
# A PrimFunc attribute naming the kernel and its spec (JSON): what library_calls reads to call
# the runtime's kernel library for the same operator.
SPEC_ATTR = "utvm.integer_kernel"


def tagged(prim_func, op: str, spec):
    """`prim_func` carrying its operator and spec, for library_calls."""
    return prim_func.with_attr(SPEC_ATTR, json.dumps({"op": op, "spec": asdict(spec)}))


def spec_of(prim_func):
    """(op, spec dict) of a tagged PrimFunc, or None."""
    attrs = prim_func.attrs
    if attrs is None or SPEC_ATTR not in attrs:
        return None
    record = json.loads(str(attrs[SPEC_ATTR]))
    return record["op"], record["spec"]


def quantize_multiplier(real: float) -> tuple:
    """TFLite's QuantizeMultiplier: `real` ~= multiplier * 2**(shift - 31), multiplier in [2**30, 2**31)."""
    if real == 0.0:
        return 0, 0
    fraction, shift = math.frexp(real)
    fixed = int(math.floor(fraction * (1 << 31) + 0.5))  # std::round: halves away from zero (real > 0)
    if fixed == 1 << 31:
        fixed //= 2
        shift += 1
    if shift < -31:
        return 0, 0
    if shift > 30:
        return INT32_MAX, 30
    return fixed, shift


ROUNDINGS = ("single", "double")


def requantize(acc, multiplier, shift, rounding: str = "single"):
    """TFLite's MultiplyByQuantizedMultiplier on int32 TE expressions: acc * multiplier * 2**(shift-31).

    "double" is gemmlowp's SaturatingRoundingDoublingHighMul then RoundingDivideByPOT (TFLite's
    reference kernels, TFLite Micro and CMSIS-NN by default); "single" rounds once
    (TFLITE_SINGLE_ROUNDING). The op specs default to what TFLite's reference interpreter does.
    """
    from tvm import tirx

    if rounding == "single":
        i64 = "int64"
        total_shift = (tirx.const(31, "int32") - shift).astype(i64)
        rounder = tirx.shift_left(tirx.const(1, i64), total_shift - tirx.const(1, i64))
        product = acc.astype(i64) * multiplier.astype(i64) + rounder
        return tirx.shift_right(product, total_shift).astype("int32")
    if rounding != "double":
        raise ValueError(f"rounding must be one of {ROUNDINGS}, not {rounding!r}")
    return _requantize_double(acc, multiplier, shift)


def _requantize_double(acc, multiplier, shift):
    """gemmlowp's two roundings, rewritten so each value appears at most twice (no Let needed).

    SaturatingRoundingDoublingHighMul: trunc((p + nudge) / 2**31), nudge = 2**30 if p >= 0 else
    1 - 2**30, equals (p + 2**30) >> 31 for either sign (arithmetic shift). It never saturates here:
    multipliers are positive. RoundingDivideByPOT(h, e) rounds halves away from zero:
    (h + (2**e - 1) // 2 + (1 if h >= 0 and e > 0 else 0)) >> e.
    """
    from tvm import tirx

    i64 = "int64"
    zero = tirx.const(0, "int32")
    left = tirx.max(shift, zero).astype(i64)
    right = tirx.max(-shift, zero).astype(i64)
    one = tirx.const(1, i64)
    product = tirx.shift_left(acc.astype(i64), left) * multiplier.astype(i64)
    high = tirx.shift_right(product + tirx.const(1 << 30, i64), tirx.const(31, i64))
    half = tirx.shift_right(tirx.shift_left(one, right) - one, one)
    up = tirx.Select(
        tirx.all(high >= tirx.const(0, i64), right > tirx.const(0, i64)), one, tirx.const(0, i64)
    )
    return tirx.shift_right(high + half + up, right).astype("int32")


def _clamp_cast(value, low: int, high: int, dtype: str):
    from tvm import tirx

    return tirx.min(tirx.max(value, tirx.const(low, "int32")), tirx.const(high, "int32")).astype(dtype)


def _nhwc_dims(shape: tuple, nhwc: bool) -> tuple:
    """(N, H, W, C) of an NHWC or NCHW shape."""
    return tuple(shape) if nhwc else (shape[0], shape[2], shape[3], shape[1])


def _padded_reader(data, nhwc: bool, h: int, w: int, zero_point: int):
    """read(b, y, x, ch) -> int32 (value - zero point), or 0 outside the image: TFLite skips
    padding taps, which is the same as reading the zero point."""
    from tvm import tirx

    def read(b, y, x, ch):
        inside = tirx.all(y >= 0, y < h, x >= 0, x < w)
        value = data[b, y, x, ch] if nhwc else data[b, ch, y, x]
        shifted = value.astype("int32") - tirx.const(zero_point, "int32")
        return tirx.if_then_else(inside, shifted, tirx.const(0, "int32"))

    return read


def _compute_in_layout(nhwc: bool, dims: tuple, body, name: str):
    """te.compute over an NHWC or NCHW output; `body(b, y, x, ch)` sees NHWC indices."""
    from tvm import te

    n, oh, ow, c = dims
    if nhwc:
        return te.compute((n, oh, ow, c), lambda b, y, x, ch: body(b, y, x, ch), name=name)
    return te.compute((n, c, oh, ow), lambda b, ch, y, x: body(b, y, x, ch), name=name)


def _channel_params(channels: int, has_bias: bool) -> tuple:
    """Placeholders for the per-output-channel bias (optional), multiplier and shift."""
    from tvm import te

    bias = te.placeholder((channels,), "int32", name="bias") if has_bias else None
    mult = te.placeholder((channels,), "int32", name="multiplier")
    shift = te.placeholder((channels,), "int32", name="shift")
    return bias, mult, shift


def _requantized(spec, acc_value, params: tuple, channel):
    """acc + bias, requantized, offset by the output zero point, clamped and cast."""
    from tvm import tirx

    bias, mult, shift = params
    total = acc_value + (bias[channel] if bias is not None else tirx.const(0, "int32"))
    scaled = requantize(total, mult[channel], shift[channel], spec.rounding)
    scaled = scaled + tirx.const(spec.output_zero_point, "int32")
    return _clamp_cast(scaled, spec.activation[0], spec.activation[1], spec.out_dtype)


def _weighted_prim_func(data, weight, params: tuple, output):
    from tvm import te

    bias, mult, shift = params
    return te.create_prim_func([data, weight] + ([bias] if bias is not None else []) + [mult, shift, output])


@dataclass
class ConvSpec:
    """A quantized 2-D convolution (NHWC or NCHW data; weights given as OHWI, grouped)."""

    data_shape: tuple
    data_layout: str  # "NHWC" or "NCHW"
    weight_shape: tuple  # (O, KH, KW, I/groups)
    strides: tuple
    padding: tuple  # (top, left, bottom, right)
    dilation: tuple
    groups: int
    input_zero_point: int
    output_zero_point: int
    activation: tuple  # (min, max) in the output's integer domain
    data_dtype: str = "int8"
    out_dtype: str = "int8"
    has_bias: bool = True
    rounding: str = "double"  # as TFLite's reference CONV_2D / DEPTHWISE_CONV_2D


def conv2d_prim_func(spec: ConvSpec):
    """PrimFunc(data, weight OHWI, [bias int32], multiplier int32[O], shift int32[O]) -> output."""
    from tvm import te

    nhwc = spec.data_layout == "NHWC"
    n, h, w, c = _nhwc_dims(spec.data_shape, nhwc)
    o, kh, kw, ipg = spec.weight_shape
    opg = o // spec.groups
    (sh, sw), (dh, dw) = spec.strides, spec.dilation
    top, left, bottom, right = spec.padding
    oh = (h + top + bottom - (dh * (kh - 1) + 1)) // sh + 1
    ow = (w + left + right - (dw * (kw - 1) + 1)) // sw + 1
    data = te.placeholder(spec.data_shape, spec.data_dtype, name="data")
    weight = te.placeholder(spec.weight_shape, "int8", name="weight")
    params = _channel_params(o, spec.has_bias)
    ry, rx, rc = te.reduce_axis((0, kh), "ry"), te.reduce_axis((0, kw), "rx"), te.reduce_axis((0, ipg), "rc")
    read = _padded_reader(data, nhwc, h, w, spec.input_zero_point)

    def acc(b, y, x, k):
        ch = (k // opg) * ipg + rc
        tap = read(b, y * sh + ry * dh - top, x * sw + rx * dw - left, ch)
        return te.sum(tap * weight[k, ry, rx, rc].astype("int32"), axis=[ry, rx, rc])

    accumulator = _compute_in_layout(nhwc, (n, oh, ow, o), acc, "acc")

    def epilogue(*index):
        return _requantized(spec, accumulator[index], params, index[3] if nhwc else index[1])

    output = te.compute(accumulator.shape, epilogue, name="requantize")
    return tagged(_weighted_prim_func(data, weight, params, output), "conv2d", spec)


@dataclass
class DenseSpec:
    """A quantized fully connected layer: data (N, K), weight (M, K) int8."""

    data_shape: tuple
    weight_shape: tuple
    input_zero_point: int
    output_zero_point: int
    activation: tuple
    data_dtype: str = "int8"
    out_dtype: str = "int8"
    has_bias: bool = True
    rounding: str = "single"  # as TFLite's reference FULLY_CONNECTED


def dense_prim_func(spec: DenseSpec):
    """PrimFunc(data, weight (M, K), [bias int32], multiplier int32[M], shift int32[M]) -> output."""
    from tvm import te, tirx

    n, k = spec.data_shape
    m = spec.weight_shape[0]
    data = te.placeholder((n, k), spec.data_dtype, name="data")
    weight = te.placeholder((m, k), "int8", name="weight")
    params = _channel_params(m, spec.has_bias)
    rk = te.reduce_axis((0, k), "rk")
    zx = tirx.const(spec.input_zero_point, "int32")
    accumulator = te.compute(
        (n, m),
        lambda i, j: te.sum((data[i, rk].astype("int32") - zx) * weight[j, rk].astype("int32"), axis=rk),
        name="acc",
    )

    output = te.compute((n, m), lambda i, j: _requantized(spec, accumulator[i, j], params, j), "requantize")
    return tagged(_weighted_prim_func(data, weight, params, output), "dense", spec)


@dataclass
class AddSpec:
    """TFLite's quantized ADD of two same-shape tensors."""

    shape: tuple
    input_zero_points: tuple
    input_multipliers: tuple  # ((multiplier, shift), (multiplier, shift))
    output_multiplier: tuple
    output_zero_point: int
    activation: tuple
    dtype: str = "int8"
    left_shift: int = 20
    rounding: str = "double"  # as TFLite's reference ADD


def add_params(scale_a: float, scale_b: float, scale_out: float, left_shift: int = 20) -> tuple:
    """TFLite's ADD parameters (computed in double, as its Prepare does)."""
    twice_max = 2.0 * max(float(scale_a), float(scale_b))
    real_a = float(scale_a) / twice_max
    real_b = float(scale_b) / twice_max
    real_out = twice_max / ((1 << left_shift) * float(scale_out))
    return quantize_multiplier(real_a), quantize_multiplier(real_b), quantize_multiplier(real_out)


def add_prim_func(spec: AddSpec):
    from tvm import te, tirx

    a = te.placeholder(spec.shape, spec.dtype, name="a")
    b = te.placeholder(spec.shape, spec.dtype, name="b")
    i32 = "int32"

    def scaled(x, zero_point, params):
        value = (x.astype(i32) - tirx.const(zero_point, i32)) * tirx.const(1 << spec.left_shift, i32)
        return requantize(value, tirx.const(params[0], i32), tirx.const(params[1], i32), spec.rounding)

    def body(*index):
        total = scaled(a[index], spec.input_zero_points[0], spec.input_multipliers[0]) + scaled(
            b[index], spec.input_zero_points[1], spec.input_multipliers[1]
        )
        out = requantize(
            total,
            tirx.const(spec.output_multiplier[0], i32),
            tirx.const(spec.output_multiplier[1], i32),
            spec.rounding,
        )
        out = out + tirx.const(spec.output_zero_point, i32)
        return _clamp_cast(out, spec.activation[0], spec.activation[1], spec.dtype)

    output = te.compute(spec.shape, body, name="add")
    return tagged(te.create_prim_func([a, b, output]), "add", spec)


@dataclass
class AvgPoolSpec:
    """TFLite's quantized AVERAGE_POOL_2D (NHWC or NCHW, padding not counted)."""

    data_shape: tuple
    layout: str
    pool: tuple
    strides: tuple
    padding: tuple  # (top, left, bottom, right)
    activation: tuple
    dtype: str = "int8"


def avg_pool_prim_func(spec: AvgPoolSpec):
    from tvm import te, tirx

    nhwc = spec.layout == "NHWC"
    n, h, w, c = _nhwc_dims(spec.data_shape, nhwc)
    (ph, pw), (sh, sw) = spec.pool, spec.strides
    top, left, bottom, right = spec.padding
    oh = (h + top + bottom - ph) // sh + 1
    ow = (w + left + right - pw) // sw + 1
    data = te.placeholder(spec.data_shape, spec.dtype, name="data")
    ry, rx = te.reduce_axis((0, ph), "ry"), te.reduce_axis((0, pw), "rx")
    i32 = "int32"

    def window(y, x):
        y0, x0 = y * sh - top, x * sw - left
        return y0, x0

    read = _padded_reader(data, nhwc, h, w, 0)

    def total(b, y, x, ch):
        y0, x0 = window(y, x)
        return te.sum(read(b, y0 + ry, x0 + rx, ch), axis=[ry, rx])

    def count(y, x):
        y0, x0 = window(y, x)
        rows = tirx.min(y0 + ph, h) - tirx.max(y0, 0)
        cols = tirx.min(x0 + pw, w) - tirx.max(x0, 0)
        return rows.astype(i32) * cols.astype(i32)

    sums = _compute_in_layout(nhwc, (n, oh, ow, c), total, "sum")

    def average(*index):
        y, x = (index[1], index[2]) if nhwc else (index[2], index[3])
        s, k = sums[index], count(y, x)
        half = tirx.truncdiv(k, tirx.const(2, i32))
        # TFLite rounds to nearest, halves away from zero, with C's truncating division.
        value = tirx.Select(s > tirx.const(0, i32), tirx.truncdiv(s + half, k), tirx.truncdiv(s - half, k))
        return _clamp_cast(value, spec.activation[0], spec.activation[1], spec.dtype)

    output = te.compute(sums.shape, average, name="average")
    return tagged(te.create_prim_func([data, output]), "avg_pool2d", spec)


def channel_requant_params(
    input_scale: float, weight_scales, output_scale: float, channels: int, float_product: bool = False
) -> tuple:
    """Per-output-channel (multiplier, shift) arrays, computed as TFLite computes them.

    Per-channel weights: input scale x weight scale / output scale in double
    (PopulateConvolutionQuantizationParams). One weight scale (GetQuantizedConvolutionMultipler, as
    fully connected layers use): with `float_product`, the two scales are multiplied in float first.
    """
    scales = np.asarray(weight_scales, dtype=np.float32).reshape(-1)
    x, out = np.float32(input_scale), np.float32(output_scale)
    if float_product and scales.size == 1:
        reals = [float(np.float32(x * scales[0])) / float(out)]
    else:
        reals = [float(x) * float(s) / float(out) for s in scales]
    pairs = [quantize_multiplier(r) for r in reals]
    mult = np.array([p[0] for p in pairs], dtype=np.int32)
    shift = np.array([p[1] for p in pairs], dtype=np.int32)
    return np.broadcast_to(mult, (channels,)).copy(), np.broadcast_to(shift, (channels,)).copy()
