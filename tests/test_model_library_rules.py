"""Small rules of model_library, checked on their own: C names, the check's tolerance, C math calls,
and the workspace scheduler's guard against cut loops."""

from __future__ import annotations

import re

import numpy as np
import pytest
from utvm.model_library.c_names import c_identifier, c_string_text
from utvm.model_library.tolerance import first_mismatch, tolerance_for

C_IDENTIFIER = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


@pytest.mark.parametrize(
    "name",
    ["gpu_0/data_0", "0", "", "__x", "int", "model/conv2d;bias:0", "héllo wörld", "inf", "NAN", "a-b.c"],
)
def test_c_identifier_is_valid_c(name):
    assert C_IDENTIFIER.match(c_identifier(name)), c_identifier(name)


def test_c_identifier_keeps_names_apart():
    taken: set = set()
    names = [c_identifier(n, taken) for n in ("gpu_0/data_0", "gpu_0_data_0", "gpu_0:data_0")]
    assert names == ["gpu_0_data_0", "gpu_0_data_0_1", "gpu_0_data_0_2"]
    assert c_identifier("plain_name") == "plain_name"


def test_c_string_text_cannot_end_a_literal():
    text = c_string_text('a"b\\c\nd/é')
    assert '"' not in text and "\\" not in text and "\n" not in text and text.isascii()


def test_tolerance_rule():
    want = np.array([1000.0, 0.001, -3.0], np.float32)
    assert tolerance_for("float32", want) == pytest.approx(0.1)
    # relative to the tensor's scale: a small element may be off by 1e-4 of the largest
    assert first_mismatch(want + np.array([0.05, 0.05, 0.0], np.float32), want) is None
    bad = first_mismatch(want + np.array([0.0, 0.0, 0.2], np.float32), want)
    assert bad is not None and bad.index == (2,) and bad.count == 1
    assert first_mismatch(np.array([5, -3], np.int8), np.array([6, -4], np.int8)) is None
    assert first_mismatch(np.array([5], np.int8), np.array([7], np.int8)) is not None
    assert first_mismatch(np.array([5], np.int64), np.array([6], np.int64)) is not None  # indices: exact
    nan = np.array([np.nan, np.inf], np.float32)
    assert first_mismatch(nan, nan.copy()) is None
    assert first_mismatch(np.array([np.nan, 1.0], np.float32), np.array([1.0, 1.0], np.float32)) is not None


def _kernel_source(make):
    from tvm import te
    from utvm.model_library.kernel_codegen import generate_kernels

    a = te.placeholder((4,), "float32", name="a")
    b = te.compute((4,), lambda i: make(a[i]), name="b")
    return generate_kernels({"k": te.create_prim_func([a, b])}, {"kind": "c"}, "k.h").source


@pytest.mark.parametrize(
    "op, c_call",
    [("abs", "fabsf("), ("exp2", "exp2f("), ("exp10", "powf("), ("isinf", "INFINITY")],
)
def test_math_intrinsics_become_c99_calls(op, c_call):
    from tvm import tirx

    if op == "isinf":
        source = _kernel_source(lambda v: tirx.if_then_else(tirx.isinf(v), v, v * 2.0))
    else:
        source = _kernel_source(lambda v: getattr(tirx, op)(v))
    assert c_call in source
    assert not re.search(r"\b(inff|nanf)\b", source)


def _pad_add_kernel():
    """The fused max pool -> pad (8 to 12 channels) -> add kernel of issue 20, as TVM lowers it."""
    from tvm import te, topi

    x = te.placeholder((1, 8, 16, 16), "float32", name="x")
    other = te.placeholder((1, 12, 8, 8), "float32", name="other")
    pooled = topi.nn.pool2d(x, (2, 2), (2, 2), (1, 1), (0, 0, 0, 0), "max")
    padded = topi.nn.pad(pooled, (0, 0, 0, 0), (0, 4, 0, 0))
    return te.create_prim_func([x, other, topi.add(padded, other)])


def test_workspace_schedule_keeps_every_iteration():
    from utvm.model_library.workspace_schedule import covers_domains, minimize_workspace

    func = _pad_add_kernel()
    scheduled = minimize_workspace(func)
    blocks = re.findall(r'sblock\("(\w+)"', scheduled.script())
    assert "PadInput" not in blocks and "pool_max_init" in blocks  # it was rescheduled
    assert covers_domains(func) and covers_domains(scheduled)  # and the add still runs 12 * 8 * 8 times


def test_covers_domains_sees_a_cut_loop(monkeypatch):
    """What reverse_compute_at did to the kernel above: covers_domains says so."""
    from tvm import s_tir
    from utvm.model_library import workspace_schedule

    sch = s_tir.Schedule(_pad_add_kernel())
    workspace_schedule._inline_injective(sch)
    pool = next(b for b in workspace_schedule._blocks(sch) if workspace_schedule._reduction_loop_vars(sch, b))
    loops = sch.get_loops(pool)
    sch.reverse_compute_at(sch.get_consumers(pool)[0], loops[3], preserve_unit_loops=True)
    assert not workspace_schedule.covers_domains(sch.mod["main"])


def _dense_kernel(k: int, n: int):
    """x[1, K] times w[K, N] (TFLite's FULLY_CONNECTED as Relax legalizes it), bias, ReLU."""
    from tvm import te, topi

    x = te.placeholder((1, k), "float32", name="x")
    w = te.placeholder((k, n), "float32", name="w")
    b = te.placeholder((n,), "float32", name="b")
    r = te.reduce_axis((0, k), name="k")
    mm = te.compute((1, n), lambda i, j: te.sum(x[i, r] * w[r, j], axis=r), name="matmul")
    return te.create_prim_func([x, w, b, topi.nn.relu(topi.add(mm, b))])


def test_float_matvec_on_a_vector_unit_sums_rows_of_outputs_in_the_same_order():
    """On the host the reduction goes outside the loop over outputs (w read contiguously, a
    loop gcc vectorizes); every output still sums k = 0, 1, ... from the same zero, so the C
    gives the very bits the scalar schedule gives."""
    import tvm
    from utvm.model_library.workspace_schedule import covers_domains, minimize_workspace

    func = _dense_kernel(96, 40)
    scalar, rows = minimize_workspace(func), minimize_workspace(func, vector_unit=True)
    assert covers_domains(scalar) and covers_domains(rows)

    # the scalar schedule sums each output over k innermost; the vector one loops outputs inside k
    assert re.search(r"for k, j in T.grid", rows.script()), rows.script()
    assert not re.search(r"for k, j in T.grid", scalar.script())
    rng = np.random.default_rng(0)
    args = [rng.standard_normal((1, 96)).astype("float32"), rng.standard_normal((96, 40)).astype("float32"),
            rng.standard_normal(40).astype("float32")]
    outs = []
    for f in (scalar, rows):
        lib = tvm.compile(tvm.IRModule({"main": f}), target="llvm")
        out = tvm.runtime.tensor(np.zeros((1, 40), "float32"))
        lib["main"](*[tvm.runtime.tensor(a) for a in args], out)
        outs.append(out.numpy())
    np.testing.assert_array_equal(outs[0], outs[1])
