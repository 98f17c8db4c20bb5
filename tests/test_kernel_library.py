"""utvm's int8 kernel library (templates/runtime/nn, model_library/library_calls.py): the plan's
int8 kernels call it, and every tensor it writes is bit for bit what TVM's generated C for the
same kernels writes (the archive compiled with `kernel_library=False`), kernel by kernel, on
several inputs. The Cortex-M (SXTB16/SMLAD) paths are checked on QEMU by the bare-metal tests'
layer-by-layer validation against this machine's build of the same archive.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import shared_model_path
from model_builders import build_onnx_model
from utvm import model_library as ml
from utvm.model_library.host_reference import DEFAULT_CFLAGS
from utvm.model_library.library_calls import library_enabled, pair_rows, quad_rows

LIBRARY_SOURCES = ("utvm_nn_conv.c", "utvm_nn_depthwise.c", "utvm_nn_dense.c", "utvm_nn_elementwise.c")


def _compile_both(model, tmp_path):
    with_library = ml.load(ml.compile(model, tmp_path / "library.tar", "cortex-m4", check=False))
    without = ml.load(ml.compile(model, tmp_path / "tvm.tar", kernel_library=False, check=False))
    return with_library, without


def _random(rng, shape, dtype: np.dtype) -> np.ndarray:
    if dtype.kind == "f":
        return rng.standard_normal(shape).astype(dtype)
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max, size=shape, endpoint=True).astype(dtype)


def _assert_kernels_agree(with_library, without, seeds, library_cflags=DEFAULT_CFLAGS) -> int:
    """Run both archives kernel by kernel on seeded random inputs; every kernel's outputs equal.
    Returns how many kernels call the library."""
    assert [k["name"] for k in with_library.kernels] == [k["name"] for k in without.kernels]
    names = {t["id"]: t["name"] for t in with_library.tensors}
    other = {t["name"]: t["id"] for t in without.tensors}
    with ml.HostReference(with_library, cflags=library_cflags) as ours, ml.HostReference(without) as theirs:
        for seed in seeds:
            rng = np.random.default_rng(seed)
            for entry in with_library.inputs:
                array = _random(rng, entry["shape"], np.dtype(entry["dtype"]))
                ours.set_input(entry["name"], array)
                theirs.set_input(entry["name"], array)
            for kernel in with_library.kernels:
                ours.run_kernel(kernel["index"])
                theirs.run_kernel(kernel["index"])
                for tid in kernel["outputs"]:
                    np.testing.assert_array_equal(
                        ours.read_tensor(tid), theirs.read_tensor(other[names[tid]]),
                        err_msg=f"kernel {kernel['name']}, seed {seed}")
    return sum(1 for k in with_library.kernels if k["function"].endswith("_lib"))


def test_onnx_qdq_model_calls_the_library_and_matches_tvm_c(tmp_path):
    model = build_onnx_model("qdq_cnn", tmp_path / "qdq_cnn.onnx")
    with_library, without = _compile_both(model, tmp_path)
    assert with_library.metadata["options"]["kernel_library"] is True
    assert without.metadata["options"]["kernel_library"] is False
    sources = {s.rsplit("/", 1)[-1] for s in with_library.source_files()}
    assert sources & set(LIBRARY_SOURCES)
    assert not {s.rsplit("/", 1)[-1] for s in without.source_files()} & set(LIBRARY_SOURCES)
    assert _assert_kernels_agree(with_library, without, seeds=(0, 1, 2)) >= 2


@pytest.mark.parametrize("name", ["kws_dscnn_int8", "ic_resnet8_int8", "ad01_int8"])
def test_mlperf_models_match_tvm_c_kernel_by_kernel(tmp_path, name):
    """Convolutions (im2col, odd channel counts), depthwise (strided, padded), fully connected,
    add and average pooling, on the MLPerf Tiny models."""
    with_library, without = _compile_both(shared_model_path(f"{name}.tflite"), tmp_path)
    routed = _assert_kernels_agree(with_library, without, seeds=(0, 7))
    assert routed >= len(with_library.kernels) // 2


@pytest.mark.parametrize("name", ["kws_dscnn_int8", "ad01_int8"])
def test_the_portable_c_paths_match_tvm_c_too(tmp_path, name):
    """The library's plain C (what a CPU without SSE2 or the DSP extension runs), built on this
    machine with its SIMD paths turned off."""
    with_library, without = _compile_both(shared_model_path(f"{name}.tflite"), tmp_path)
    cflags = [*DEFAULT_CFLAGS, "-DUTVM_NN_NO_SIMD"]
    assert _assert_kernels_agree(with_library, without, seeds=(3,), library_cflags=cflags) >= 4


def test_weight_layouts_interleave_rows_in_blocks_of_four():
    rows = np.arange(3 * 5, dtype=np.int8).reshape(3, 5)  # K = 5 is padded to 8
    paired = pair_rows(rows)
    assert paired.size == 3 * 8
    # rows 0 and 1 in blocks of four bytes, then row 2 plain, zero-padded
    np.testing.assert_array_equal(paired[:8], [0, 1, 2, 3, 5, 6, 7, 8])
    np.testing.assert_array_equal(paired[8:16], [4, 0, 0, 0, 9, 0, 0, 0])
    np.testing.assert_array_equal(paired[16:], [10, 11, 12, 13, 14, 0, 0, 0])
    quads = quad_rows(np.arange(4 * 4, dtype=np.int8).reshape(4, 4))
    np.testing.assert_array_equal(quads, np.arange(16))


def test_the_library_is_the_default_on_cortex_m_and_on_the_generic_c_target():
    """Cortex-M takes its DSP paths; the generic C target (the host template's) its SSE2 paths on
    x86-64. AVR's constants live in flash, which the library's plain pointers cannot read, and
    other named CPUs keep TVM's C."""
    assert library_enabled({"kind": "c", "mcpu": "cortex-m4"})
    assert library_enabled({"kind": "c", "mcpu": "cortex-m3"})
    assert library_enabled({"kind": "c"})
    assert not library_enabled({"kind": "c", "mcpu": "atmega328p"})
    assert not library_enabled({"kind": "c", "mcpu": "cortex-a57"})
    assert not library_enabled({"kind": "c", "mtriple": "aarch64-linux-gnu"})
