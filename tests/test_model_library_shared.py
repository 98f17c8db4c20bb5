"""The four MLPerf Tiny models from ../shared/models: compile, run the archive's C, compare.

Skipped when ../shared/models is absent. Each model is compiled once per session. The reference is
the TFLite interpreter from ai-edge-litert with its reference kernels (the arithmetic TFLite Micro
uses); int8 outputs must be within 1 of it in every element, float outputs within 1e-4 relative.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import require_tool, shared_model_path
from model_builders import c_compile_errors
from tflite_reference import reference_interpreter
from utvm import model_library as ml

MODELS = ("kws_dscnn_int8", "ic_resnet8_int8", "ad01_int8", "ad01_fp32")
TRIALS = 8


@pytest.fixture(scope="session")
def shared_archives(tmp_path_factory):
    folder = tmp_path_factory.mktemp("shared_models")
    cache = {}

    def get(name: str):
        if name not in cache:
            model = shared_model_path(f"{name}.tflite")
            cache[name] = (model, ml.load(ml.compile(model, folder / f"{name}.tar")))
        return cache[name]

    return get


@pytest.mark.parametrize("name", MODELS)
def test_archive_matches_tflite_interpreter(name, shared_archives):
    model, library = shared_archives(name)
    interpreter = reference_interpreter(model)
    detail_in, detail_out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    entry = library.inputs[0]
    assert list(detail_in["shape"]) == entry["shape"] and np.dtype(detail_in["dtype"]) == np.dtype(
        entry["dtype"]
    )
    if entry["quantization"] is not None:
        assert entry["quantization"]["scale"] == pytest.approx(detail_in["quantization"][0])
        assert entry["quantization"]["zero_point"] == detail_in["quantization"][1]
    rng = np.random.default_rng(2024)
    worst = 0.0
    with ml.HostReference(library) as host:
        for _ in range(TRIALS):
            if entry["dtype"] == "int8":
                x = rng.integers(-128, 127, size=entry["shape"], endpoint=True).astype(np.int8)
            else:
                x = rng.standard_normal(entry["shape"]).astype(np.float32)
            interpreter.set_tensor(detail_in["index"], x)
            interpreter.invoke()
            want = interpreter.get_tensor(detail_out["index"])
            host.set_input(0, x)
            host.run()
            got = host.get_output(0)
            assert got.shape == want.shape and got.dtype == want.dtype
            if got.dtype == np.int8:
                worst = max(worst, int(np.abs(got.astype(int) - want.astype(int)).max()))
            else:
                np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * float(np.abs(want).max()))
    assert worst <= 1, f"{name}: an int8 output differs by {worst} from the TFLite interpreter"


@pytest.mark.parametrize("name", MODELS)
def test_plan_is_tight(name, shared_archives):
    _, library = shared_archives(name)
    memory = library.memory
    assert memory["arena_to_lower_bound"] <= 1.05, memory
    assert memory["arena_bytes"] >= memory["peak_live_lower_bound_bytes"]
    if name.endswith("int8"):
        # conv / dense / add / pool run as integer kernels on int8 activations and int8 weights
        integer = [k for k in library.kernels if k["name"].startswith("qnn_")]
        assert len(integer) >= len(library.kernels) - 3, [k["name"] for k in library.kernels]
        for kernel in integer:
            dtypes = {library.tensors[t]["dtype"] for t in kernel["args"][:2] + kernel["outputs"]}
            assert dtypes == {"int8"}, (kernel["name"], dtypes)
    offsets = [(t["offset"], t["nbytes"]) for t in library.tensors if t["storage"] == "arena"]
    assert all(o % 16 == 0 and o + n <= memory["arena_bytes"] for o, n in offsets)


COMPILERS = {
    "gcc": ["gcc", "-O2"],
    "clang": ["clang", "-O2"],
    "cortex-m4": ["arm-none-eabi-gcc", "-mcpu=cortex-m4", "-mthumb", "-Os"],
}


@pytest.mark.parametrize("compiler", list(COMPILERS))
def test_generated_c_compiles_warning_free(compiler, shared_archives, tmp_path):
    command = COMPILERS[compiler]
    require_tool(command[0])
    for name in MODELS:
        _, library = shared_archives(name)
        failures = c_compile_errors(library, tmp_path / name, command)
        assert not failures, failures


def test_compile_is_deterministic(shared_archives, tmp_path):
    model, library = shared_archives("kws_dscnn_int8")
    again = ml.compile(model, tmp_path / "again.tar")
    assert again.read_bytes() == library.path.read_bytes()
