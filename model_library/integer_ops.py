"""Replace TVM's float emulation of quantized operators with integer kernels (TFLite arithmetic).

TVM's TFLite importer (and the ONNX importer for QDQ models) writes a quantized operator as
`quantize(op(dequantize(x), dequantize(weights)) + dequantize(bias))`, optionally clipped. This
pass finds those patterns in `main` before legalization and replaces each with one `call_tir` of
an integer kernel from `integer_kernels`: int8 in, int8 out, int8 weights and int32 bias kept as
they are in the model. Anything that does not match exactly (a float bias, a non-zero weight zero
point, an unusual layout) keeps TVM's float emulation, which is correct to within rounding.

Recognised: 2-D convolution (grouped and depthwise too), fully connected (matmul), element-wise
ADD, and average pooling.
"""

from __future__ import annotations

import numpy as np

from . import integer_kernels as ik

_QUANT_DTYPES = {"int8": (-128, 127), "uint8": (0, 255)}
_OPAQUE = 8  # relax OpPatternKind kOpaque: FuseOps leaves the kernel alone


class _Matcher:
    """Reads the dataflow graph of `main` through its variable bindings."""

    def __init__(self, func):
        from tvm import relax

        self.values = relax.analysis.get_var2val(func)

    def value(self, expr):
        from tvm import relax

        while isinstance(expr, relax.Var) and expr in self.values:
            expr = self.values[expr]
        return expr

    def call(self, expr, op: str):
        import tvm
        from tvm import relax

        value = self.value(expr)
        if (
            isinstance(value, relax.Call)
            and isinstance(value.op, tvm.ir.Op)
            and value.op.name == f"relax.{op}"
        ):
            return value
        return None

    def const(self, expr):
        """The numpy value of a constant, following reshapes and transposes of constants."""
        import tvm

        value = self.value(expr)
        if isinstance(value, tvm.ir.expr.GenericConst):
            return value.value.numpy()
        for op in ("reshape", "permute_dims"):
            call = self.call(value, op)
            if call is not None:
                inner = self.const(call.args[0])
                if inner is None:
                    return None
                if op == "reshape":
                    return inner.reshape(_shape(call))
                return inner.transpose(_axes(call, inner.ndim))
        return None

    def scalar(self, expr):
        array = self.const(expr)
        if array is None or array.size != 1:
            return None
        return array.reshape(-1)[0].item()

    def dequantized_tensor(self, expr):
        """(int tensor expr, scale, zero point) if `expr` is dequantize(x) with per-tensor parameters."""
        call = self.call(expr, "dequantize")
        if call is None or self.const(call.args[0]) is not None:
            return None
        scale, zero_point = self.scalar(call.args[1]), self.scalar(call.args[2])
        dtype = _dtype(call.args[0])
        if scale is None or zero_point is None or dtype not in _QUANT_DTYPES:
            return None
        return call.args[0], float(np.float32(scale)), int(zero_point)

    def dequantized_weight(self, expr):
        """(int array, float32 scales, channel axis) of a dequantized constant, zero point 0.

        Follows reshape / permute_dims applied before or after the dequantize; the channel axis
        is the axis the scales apply to, in the final layout (None for one scale).
        """
        call = self.call(expr, "dequantize")
        if call is not None:
            data, scales = self.const(call.args[0]), self.const(call.args[1])
            zero_points = self.const(call.args[2])
            if data is None or scales is None or zero_points is None or np.any(zero_points != 0):
                return None
            if data.dtype not in (np.int8, np.int32):
                return None
            scales = scales.astype(np.float32).reshape(-1)
            axis = int(call.attrs.axis) % data.ndim if scales.size > 1 else None
            return data, scales, axis
        for op in ("reshape", "permute_dims"):
            wrapped = self.call(expr, op)
            if wrapped is None:
                continue
            inner = self.dequantized_weight(wrapped.args[0])
            if inner is None:
                return None
            data, scales, axis = inner
            if op == "permute_dims":
                axes = _axes(wrapped, data.ndim)
                return data.transpose(axes), scales, None if axis is None else axes.index(axis)
            new_shape = _shape(wrapped)
            return data.reshape(new_shape), scales, _reshaped_axis(data.shape, new_shape, axis)
        return None


def _dtype(expr) -> str:
    ty = expr.ty
    return str(ty.dtype) if hasattr(ty, "dtype") else ""


def _static_shape(expr) -> tuple | None:
    ty = expr.ty
    try:
        return tuple(int(d.value) for d in ty.shape.values)
    except (AttributeError, TypeError):
        return None


def _shape(reshape_call) -> tuple:
    return tuple(int(d.value) for d in reshape_call.ty.shape.values)


def _axes(permute_call, ndim: int) -> list:
    axes = permute_call.attrs.axes
    return list(range(ndim))[::-1] if axes is None else [int(a) for a in axes]


def _reshaped_axis(old: tuple, new: tuple, axis):
    """Where a per-channel axis lands after a reshape (same size, same elements before it)."""
    if axis is None:
        return None
    before = int(np.prod(old[:axis], dtype=np.int64))
    for candidate in range(len(new)):
        if new[candidate] == old[axis] and int(np.prod(new[:candidate], dtype=np.int64)) == before:
            return candidate
    return -1  # the channels were split or merged: not a layout the kernels take


def _activation(matcher: _Matcher, sink):
    """(quantize call, (act_min, act_max), quantize's operand below any float activation) for
    `[clip_q](quantize([relu | clip_f](x)))`; a float relu / clip becomes the integer clamp TFLite
    applies (quantize is monotonic and maps 0 to the zero point exactly)."""
    low = high = None
    clip = matcher.call(sink, "clip")
    if clip is not None:
        low, high = float(clip.args[1].value), float(clip.args[2].value)
        sink = clip.args[0]
    quant = matcher.call(sink, "quantize")
    if quant is None:
        return None
    out_dtype = str(quant.attrs.out_dtype)
    if out_dtype not in _QUANT_DTYPES:
        return None
    qmin, qmax = _QUANT_DTYPES[out_dtype]
    act = [
        qmin if low is None else max(qmin, int(np.ceil(low))),
        qmax if high is None else min(qmax, int(np.floor(high))),
    ]
    core = quant.args[0]
    scale, zero_point = matcher.scalar(quant.args[1]), matcher.scalar(quant.args[2])
    relu, float_clip = matcher.call(core, "nn.relu"), matcher.call(core, "clip")
    if (relu is not None or float_clip is not None) and scale is not None and zero_point is not None:
        if relu is not None:
            bounds, core = (0.0, None), relu.args[0]
        else:
            bounds, core = (
                (float(float_clip.args[1].value), float(float_clip.args[2].value)),
                float_clip.args[0],
            )
        quantized = [
            None if b is None or not np.isfinite(b) else int(zero_point) + _round_half_away(b / float(scale))
            for b in bounds
        ]
        if quantized[0] is not None:
            act[0] = max(act[0], quantized[0])
        if quantized[1] is not None:
            act[1] = min(act[1], quantized[1])
    return quant, tuple(act), core


def _round_half_away(value: float) -> int:
    return int(np.sign(value) * np.floor(abs(value) + 0.5))


def _output_params(matcher: _Matcher, quant):
    scale, zero_point = matcher.scalar(quant.args[1]), matcher.scalar(quant.args[2])
    if scale is None or zero_point is None:
        return None
    return float(np.float32(scale)), int(zero_point), str(quant.attrs.out_dtype)


def _split_bias(matcher: _Matcher, expr, anchor_op: str):
    """(anchor call, bias (int array, scales) or None) for anchor or add(anchor, dequantized bias)."""
    anchor = matcher.call(expr, anchor_op)
    if anchor is not None:
        return anchor, None
    add = matcher.call(expr, "add")
    if add is None:
        return None
    for first, second in ((add.args[0], add.args[1]), (add.args[1], add.args[0])):
        anchor = matcher.call(first, anchor_op)
        bias = matcher.dequantized_weight(second)
        if anchor is not None and bias is not None and bias[0].dtype == np.int32:
            return anchor, bias
    return None


def _bias_vector(
    bias, channels: int, channel_axis: int, out_rank: int, acc_scales, out_scale: float
) -> np.ndarray | None:
    """The int32 bias per output channel, if it broadcasts along the channel axis and its scale is
    the accumulator's (input scale x weight scale) within TFLite's own tolerance (2% of the
    output scale); TFLite then adds the int32 values as they are."""
    if bias is None:
        return np.zeros(channels, dtype=np.int32)
    data, scales, _ = bias
    if data.size != channels:
        return None
    shape = (1,) * (out_rank - data.ndim) + data.shape
    if channels > 1 and [i for i, d in enumerate(shape) if d != 1] != [channel_axis]:
        return None
    expected = np.broadcast_to(acc_scales, (channels,))
    difference = np.abs(np.broadcast_to(scales, (channels,)).astype(np.float64) - expected)
    if np.any(difference > 0.02 * out_scale):
        return None
    return data.reshape(-1).astype(np.int32)


class IntegerRewriter:
    """Adds the replacement kernels to the module being rewritten."""

    def __init__(self, mod, rounding: str | None):
        from tvm import relax

        self.builder = relax.BlockBuilder(mod)
        self.rounding = rounding
        self.count = 0

    def spec(self, spec):
        """`spec` with the rounding forced, when one was asked for."""
        if self.rounding is not None:
            spec.rounding = self.rounding
        return spec

    def kernel(self, name: str, prim_func, args: list, out_ty):
        from tvm import relax

        # te.create_prim_func names every function "main"; the module's own name is the GlobalVar.
        prim_func = prim_func.without_attr("global_symbol").with_attr("op_pattern", _OPAQUE)
        gvar = self.builder.add_func(prim_func, name)
        self.count += 1
        return relax.call_tir(gvar, relax.Tuple(args), out_ty)


def _const(array: np.ndarray):
    from tvm import relax

    return relax.const(np.ascontiguousarray(array))


def _weighted_op(m: _Matcher, sink, anchor_op: str):
    """(anchor call, bias, activation, (out scale, out zero point, out dtype)) of
    `quantize(anchor + bias)` with an optional activation, or None."""
    found = _activation(m, sink)
    if found is None:
        return None
    quant, act, core = found
    split = _split_bias(m, core, anchor_op)
    out = _output_params(m, quant)
    if split is None or out is None:
        return None
    return split[0], split[1], act, out


def _common_spec_fields(x_expr, x_zp: int, out: tuple, act: tuple, bias) -> dict:
    """The fields ConvSpec and DenseSpec share."""
    return dict(
        input_zero_point=x_zp,
        output_zero_point=out[1],
        activation=act,
        data_dtype=_dtype(x_expr),
        out_dtype=out[2],
        has_bias=bias is not None,
    )


def _weighted_args(x_expr, weights: np.ndarray, bias, bias_vec, mult, shift) -> list:
    consts = [weights] + ([bias_vec] if bias is not None else []) + [mult, shift]
    return [x_expr] + [_const(c) for c in consts]


def _rewrite_conv(m: _Matcher, rw: IntegerRewriter, sink, out_ty):
    parts = _weighted_op(m, sink, "nn.conv2d")
    if parts is None:
        return None
    conv, bias, act, out = parts
    attrs = conv.attrs
    data_layout, kernel_layout = str(attrs.data_layout), str(attrs.kernel_layout)
    x = m.dequantized_tensor(conv.args[0])
    weight = m.dequantized_weight(conv.args[1])
    if (
        x is None
        or weight is None
        or data_layout not in ("NHWC", "NCHW")
        or str(attrs.out_layout) != data_layout
        or sorted(kernel_layout) != sorted("OIHW")
        or weight[0].dtype != np.int8
    ):
        return None
    (x_expr, x_scale, x_zp), (w, w_scales, w_axis) = x, weight
    o_axis = kernel_layout.index("O")
    if w_axis is not None and w_axis != o_axis:
        return None
    w_ohwi = w.transpose([kernel_layout.index(c) for c in "OHWI"])
    channels = w_ohwi.shape[0]
    out_shape = _static_shape(conv)
    data_shape = _static_shape(x_expr)
    if out_shape is None or data_shape is None:
        return None
    channel_axis = data_layout.index("C")
    acc_scales = np.float32(x_scale) * w_scales
    bias_vec = _bias_vector(bias, channels, channel_axis, len(out_shape), acc_scales, out[0])
    if bias_vec is None:
        return None
    mult, shift = ik.channel_requant_params(x_scale, w_scales, out[0], channels)
    spec = ik.ConvSpec(
        data_shape=data_shape,
        data_layout=data_layout,
        weight_shape=w_ohwi.shape,
        strides=tuple(int(s) for s in attrs.strides),
        padding=tuple(int(p) for p in attrs.padding),
        dilation=tuple(int(d) for d in attrs.dilation),
        groups=int(attrs.groups),
        **_common_spec_fields(x_expr, x_zp, out, act, bias),
    )
    args = _weighted_args(x_expr, w_ohwi, bias, bias_vec, mult, shift)
    return rw.kernel("qnn_conv2d", ik.conv2d_prim_func(rw.spec(spec)), args, out_ty)


def _rewrite_dense(m: _Matcher, rw: IntegerRewriter, sink, out_ty):
    parts = _weighted_op(m, sink, "matmul")
    if parts is None:
        return None
    matmul, bias, act, out = parts
    x = m.dequantized_tensor(matmul.args[0])
    weight = m.dequantized_weight(matmul.args[1])
    if x is None or weight is None or weight[0].ndim != 2 or weight[0].dtype != np.int8:
        return None
    (x_expr, x_scale, x_zp), (w, w_scales, w_axis) = x, weight
    data_shape = _static_shape(x_expr)
    if data_shape is None or len(data_shape) != 2 or (w_axis is not None and w_axis != 1):
        return None
    w_mk = np.ascontiguousarray(w.T)  # (M, K): each output's weights contiguous
    channels = w_mk.shape[0]
    bias_vec = _bias_vector(bias, channels, 1, 2, np.float32(x_scale) * w_scales, out[0])
    if bias_vec is None:
        return None
    mult, shift = ik.channel_requant_params(x_scale, w_scales, out[0], channels, float_product=True)
    spec = ik.DenseSpec(
        data_shape=data_shape, weight_shape=w_mk.shape, **_common_spec_fields(x_expr, x_zp, out, act, bias)
    )
    args = _weighted_args(x_expr, w_mk, bias, bias_vec, mult, shift)
    return rw.kernel("qnn_dense", ik.dense_prim_func(rw.spec(spec)), args, out_ty)


def _rewrite_add(m: _Matcher, rw: IntegerRewriter, sink, out_ty):
    found = _activation(m, sink)
    if found is None:
        return None
    quant, act, core = found
    add = m.call(core, "add")
    out = _output_params(m, quant)
    if add is None or out is None:
        return None
    a, b = m.dequantized_tensor(add.args[0]), m.dequantized_tensor(add.args[1])
    if a is None or b is None:
        return None
    shape = _static_shape(a[0])
    same_shapes = shape is not None and shape == _static_shape(b[0]) == _static_shape(quant)
    if not same_shapes or not _dtype(a[0]) == _dtype(b[0]) == out[2]:
        return None
    params = ik.add_params(a[1], b[1], out[0])
    spec = ik.AddSpec(
        shape=shape,
        input_zero_points=(a[2], b[2]),
        input_multipliers=params[:2],
        output_multiplier=params[2],
        output_zero_point=out[1],
        activation=act,
        dtype=out[2],
    )
    return rw.kernel("qnn_add", ik.add_prim_func(rw.spec(spec)), [a[0], b[0]], out_ty)


def _rewrite_avg_pool(m: _Matcher, rw: IntegerRewriter, sink, out_ty):
    narrow = m.call(sink, "astype")
    if narrow is None or _dtype(sink) not in _QUANT_DTYPES:
        return None
    pool = m.call(narrow.args[0], "nn.avg_pool2d")
    widen = m.call(pool.args[0], "astype") if pool is not None else None
    if widen is None or _dtype(widen.args[0]) != _dtype(sink):
        return None
    attrs = pool.attrs
    layout = str(attrs.layout)
    if (
        layout not in ("NHWC", "NCHW")
        or str(attrs.out_layout) != layout
        or bool(attrs.ceil_mode)
        or bool(attrs.count_include_pad)
        or any(int(d) != 1 for d in attrs.dilation)
    ):
        return None
    data_shape = _static_shape(widen.args[0])
    if data_shape is None:
        return None
    spec = ik.AvgPoolSpec(
        data_shape=data_shape,
        layout=layout,
        pool=tuple(int(p) for p in attrs.pool_size),
        strides=tuple(int(s) for s in attrs.strides),
        padding=tuple(int(p) for p in attrs.padding),
        activation=_QUANT_DTYPES[_dtype(sink)],
        dtype=_dtype(sink),
    )
    return rw.kernel("qnn_avg_pool2d", ik.avg_pool_prim_func(spec), [widen.args[0]], out_ty)


_REWRITES = (_rewrite_conv, _rewrite_dense, _rewrite_add, _rewrite_avg_pool)


def rewrite_integer_ops(mod, rounding: str | None = None):
    """Return (module with quantized operators as integer kernels, number of kernels introduced).

    `rounding` forces "single" or "double" requantization rounding on every kernel; by default
    each kernel rounds as TFLite's reference kernel for that operator does.
    """
    if rounding is not None and rounding not in ik.ROUNDINGS:
        raise ValueError(f"rounding must be one of {ik.ROUNDINGS}, not {rounding!r}")
    from tvm import relax

    main = mod["main"]
    matcher = _Matcher(main)
    rewriter = IntegerRewriter(mod, rounding)
    replaced = {}
    clipped = {
        matcher.value(b.var).args[0]
        for block in main.body.blocks
        for b in block.bindings
        if matcher.call(b.var, "clip") is not None
    }
    for block in main.body.blocks:
        for binding in block.bindings:
            var = binding.var
            if _dtype(var) not in _QUANT_DTYPES or var in clipped:  # the clip that follows is the sink
                continue
            for rewrite in _REWRITES:
                new = rewrite(matcher, rewriter, var, var.ty)
                if new is not None:
                    replaced[var] = new
                    break
    if not replaced:
        return mod, 0
    blocks = []
    for block in main.body.blocks:
        bindings = [
            relax.VarBinding(b.var, replaced.get(b.var, b.value)) if isinstance(b, relax.VarBinding) else b
            for b in block.bindings
        ]
        blocks.append(
            relax.DataflowBlock(bindings)
            if isinstance(block, relax.DataflowBlock)
            else relax.BindingBlock(bindings)
        )
    new_main = relax.Function(
        main.params, relax.SeqExpr(blocks, main.body.body), main.ret_ty, main.is_pure, main.attrs
    )
    out = rewriter.builder.get()
    out["main"] = new_main
    out = relax.transform.DeadCodeElimination()(relax.transform.Normalize()(out))
    return out, rewriter.count
