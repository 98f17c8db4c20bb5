"""model_library on models the suite builds itself: archives run through their own C sources.

Each ONNX model (float32 and int8 QDQ: conv, depthwise conv, dense, pooling, softmax, residual
add, reshape views, a copy-only output, two outputs) is compiled once per session. Its archive's
C is built by the host reference runner and must match TVM's VirtualMachine on the same Relax
module, and ONNX Runtime. The tiny TFLite models must match the TFLite reference interpreter.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from conftest import require_tool
from model_builders import (
    ONNX_WORKING_KINDS,
    build_onnx_model,
    c_compile_errors,
    make_small_tflite,
    onnx_input_arrays,
)
from tflite_reference import reference_interpreter
from utvm import model_library as ml

FLOAT_TOLERANCE = dict(rtol=1e-5, atol=1e-5)


@pytest.fixture(scope="session")
def onnx_archives(tmp_path_factory):
    """{kind: (onnx path, archive path)}, compiled on first use."""
    folder = tmp_path_factory.mktemp("onnx_models")
    cache = {}

    def get(kind: str):
        if kind not in cache:
            model = build_onnx_model(kind, folder / f"{kind}.onnx")
            cache[kind] = (model, ml.compile(model, folder / f"{kind}.tar"))
        return cache[kind]

    return get


def _run_host(library, inputs: dict) -> list:
    with ml.HostReference(library) as host:
        for name, array in inputs.items():
            host.set_input(name, array)
        host.run()
        return [host.get_output(i) for i in range(len(library.outputs))]


def _run_vm(model_path, inputs: dict) -> list:
    import tvm
    from tvm import relax

    mod = ml.relax_module(model_path)
    vm = relax.VirtualMachine(tvm.compile(mod, target="llvm"), tvm.cpu())
    result = vm["main"](*[tvm.runtime.tensor(a) for a in inputs.values()])
    return [result.numpy()] if hasattr(result, "numpy") else [r.numpy() for r in result]


def _output_step(model_path) -> float:
    """For a QDQ model, the scale of its last DequantizeLinear (one step of the int8 output)."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(model_path))
    weights = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    last = [n for n in model.graph.node if n.op_type == "DequantizeLinear"][-1]
    return float(weights[last.input[1]])


@pytest.mark.parametrize("kind", ONNX_WORKING_KINDS)
def test_onnx_archive_matches_vm_and_onnxruntime(kind, onnx_archives):
    import onnxruntime

    model_path, archive = onnx_archives(kind)
    library = ml.load(archive)
    inputs = onnx_input_arrays(model_path)
    ours = _run_host(library, inputs)
    assert [o["name"] for o in library.outputs] == [
        o.name
        for o in onnxruntime.InferenceSession(
            str(model_path), providers=["CPUExecutionProvider"]
        ).get_outputs()
    ]

    # TVM's own answer for the very module the archive came from: the C must reproduce it.
    for got, want in zip(ours, _run_vm(model_path, inputs)):
        np.testing.assert_allclose(got, want, **FLOAT_TOLERANCE)

    session = onnxruntime.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    expected = session.run(None, inputs)
    for got, want in zip(ours, expected):
        assert got.shape == want.shape and got.dtype == want.dtype
        if kind.startswith("qdq"):  # int8 results, dequantized: within one quantization step
            step = _output_step(model_path)
            assert np.max(np.abs(got - want)) <= step * 1.0001
        else:
            np.testing.assert_allclose(got, want, **FLOAT_TOLERANCE)


def test_quantized_operators_become_integer_kernels(onnx_archives):
    _, archive = onnx_archives("qdq_cnn")
    library = ml.load(archive)
    names = [k["name"] for k in library.kernels]
    assert any(n.startswith("qnn_conv2d") for n in names), names
    assert any(n.startswith("qnn_add") for n in names), names
    weights = [t for t in library.tensors if t["storage"] == "const" and t["dtype"] == "int8"]
    assert weights, "int8 weights should stay int8 in flash"


def test_reshapes_are_views_and_aliasing_outputs_are_copied(onnx_archives):
    library = ml.load(onnx_archives("reshape")[1])
    views = [t for t in library.tensors if "view_of" in t]
    assert views, "a reshape should share its source's bytes"
    for view in views:
        source = library.tensors[view["view_of"]]
        assert (view["offset"], view["nbytes"]) == (source["offset"], source["nbytes"])
    assert len(library.kernels) == 1  # only the matmul+relu; both reshapes cost nothing

    library = ml.load(onnx_archives("passthrough")[1])
    (output,) = library.outputs
    assert output["tensor"] != library.inputs[0]["tensor"]
    assert library.kernels[0]["outputs"] == [output["tensor"]]


def test_two_outputs_and_memory_figures(onnx_archives):
    library = ml.load(onnx_archives("two_outputs")[1])
    assert [o["name"] for o in library.outputs] == ["hidden", "probs"]
    for key in ("cnn", "residual", "conv", "two_outputs"):
        memory = ml.load(onnx_archives(key)[1]).memory
        assert memory["arena_bytes"] >= memory["peak_live_lower_bound_bytes"] > 0
        assert memory["arena_to_lower_bound"] <= 1.05
        assert memory["io_bytes"] > 0 and memory["constant_bytes"] > 0


def test_per_kernel_runs_reproduce_the_whole_run(onnx_archives):
    model_path, archive = onnx_archives("cnn")
    library = ml.load(archive)
    inputs = onnx_input_arrays(model_path, seed=7)
    whole = _run_host(library, inputs)[0]
    with ml.HostReference(library) as host:
        for name, array in inputs.items():
            host.set_input(name, array)
        intermediates = []
        for kernel in library.kernels:
            host.run_kernel(kernel["index"])
            intermediates.append(host.read_tensor(kernel["outputs"][0]))
        np.testing.assert_array_equal(host.get_output(0), whole)
        # feeding a kernel its recorded inputs again reproduces its output
        last = library.kernels[-1]
        host.write_tensor(last["outputs"][0], np.zeros_like(intermediates[-1]))
        host.run_kernel(last["index"])
        np.testing.assert_array_equal(host.read_tensor(last["outputs"][0]), intermediates[-1])
        constant = next(t for t in library.tensors if t["storage"] == "const")
        assert host.read_tensor(constant["id"]).shape == tuple(constant["shape"])
        with pytest.raises(ValueError, match="constant"):
            host.write_tensor(constant["id"], host.read_tensor(constant["id"]))
        with pytest.raises(TypeError, match="float32"):
            host.set_input(0, np.zeros(library.inputs[0]["shape"], dtype=np.int64) + 2**40 + 1)
        with pytest.raises(KeyError, match="no input named"):
            host.set_input("nope", np.zeros(3))


def test_kept_inputs_survive_a_run_so_runs_repeat(onnx_archives, tmp_path):
    model_path, _ = onnx_archives("residual")
    library = ml.load(ml.compile(model_path, tmp_path / "kept.tar", preserve_inputs=True))
    assert library.metadata["options"]["preserve_inputs"] is True
    inputs = onnx_input_arrays(model_path)
    with ml.HostReference(library) as host:
        host.set_input(0, inputs["image"])
        host.run()
        first = host.get_output(0)
        host.run()
        np.testing.assert_array_equal(host.get_output(0), first)


@pytest.mark.parametrize("quantized", [True, False], ids=["int8", "float32"])
def test_small_tflite_matches_the_reference_interpreter(tmp_path, quantized):
    model = make_small_tflite(tmp_path / "small.tflite", quantized=quantized)
    library = ml.load(ml.compile(model, tmp_path / "small.tar"))
    interpreter = reference_interpreter(model)
    detail_in, detail_out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    assert library.inputs[0]["quantization"] == (
        {"scale": pytest.approx(0.05), "zero_point": -3} if quantized else None
    )
    rng = np.random.default_rng(3)
    with ml.HostReference(library) as host:
        for _ in range(5):
            if quantized:
                x = rng.integers(-128, 127, size=(1, 16), endpoint=True).astype(np.int8)
            else:
                x = rng.standard_normal((1, 16)).astype(np.float32)
            interpreter.set_tensor(detail_in["index"], x)
            interpreter.invoke()
            host.set_input(0, x)
            host.run()
            want, got = interpreter.get_tensor(detail_out["index"]), host.get_output(0)
            if quantized:
                assert np.abs(got.astype(int) - want.astype(int)).max() <= 1
            else:
                np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_same_model_gives_identical_archive_bytes(tmp_path, onnx_archives):
    model_path, first = onnx_archives("qdq_cnn")
    second = ml.compile(model_path, tmp_path / "again.tar")
    assert first.read_bytes() == second.read_bytes()
    different = ml.compile(model_path, tmp_path / "other.tar", alignment=32)
    assert different.read_bytes() != first.read_bytes()


@pytest.mark.parametrize(
    "compiler",
    [["gcc", "-O2"], ["clang", "-O2"], ["arm-none-eabi-gcc", "-mcpu=cortex-m4", "-mthumb", "-Os"]],
    ids=["gcc", "clang", "arm-none-eabi-gcc"],
)
def test_generated_c_is_warning_free(tmp_path, onnx_archives, compiler):
    require_tool(compiler[0])
    for kind in ("cnn", "qdq_cnn"):
        failures = c_compile_errors(ml.load(onnx_archives(kind)[1]), tmp_path / kind, compiler)
        assert not failures, failures


def test_relax_module_input(tmp_path):
    from utvm.host_driven.demo_model import build_demo_module

    library = ml.load(ml.compile(build_demo_module(), tmp_path / "demo.tar", model_name="demo"))
    assert library.name == "demo" and library.metadata["source_format"] == "relax"
    x = np.random.default_rng(0).standard_normal(library.inputs[0]["shape"]).astype(np.float32)
    import tvm
    from tvm import relax

    vm = relax.VirtualMachine(tvm.compile(build_demo_module(), target="llvm"), tvm.cpu())
    want = vm["main"](tvm.runtime.tensor(x)).numpy()
    with ml.HostReference(library) as host:
        host.set_input(0, x)
        host.run()
        np.testing.assert_allclose(host.get_output(0), want, **FLOAT_TOLERANCE)


def test_torch_export_input(tmp_path):
    torch = pytest.importorskip(
        "torch", reason="torch not installed (optional extra: pip install 'utvm[torch]')"
    )

    class Tiny(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(8, 4)

        def forward(self, x):
            return torch.relu(self.fc(x))

    torch.manual_seed(0)
    module = Tiny().eval()
    x = torch.randn(1, 8)
    library = ml.load(ml.compile(module, tmp_path / "tiny.tar", example_inputs=(x,)))
    with ml.HostReference(library) as host:
        host.set_input(0, x.numpy())
        host.run()
        np.testing.assert_allclose(host.get_output(0), module(x).detach().numpy(), **FLOAT_TOLERANCE)


def test_torch_export_file_through_the_cli(tmp_path):
    """A program saved with torch.export.save (.pt2) compiles from the command line."""
    torch = pytest.importorskip(
        "torch", reason="torch not installed (optional extra: pip install 'utvm[torch]')"
    )
    torch.manual_seed(1)
    module = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.Tanh()).eval()
    x = torch.randn(2, 6)
    torch.export.save(torch.export.export(module, (x,)), str(tmp_path / "seq.pt2"))
    result = subprocess.run(
        [sys.executable, "-m", "utvm.cli.main", "compile", str(tmp_path / "seq.pt2"),
         "-o", str(tmp_path / "seq.tar")],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    library = ml.load(tmp_path / "seq.tar")
    assert library.metadata["source_format"] == "torch"
    with ml.HostReference(library) as host:
        host.set_input(0, x.numpy())
        host.run()
        np.testing.assert_allclose(host.get_output(0), module(x).detach().numpy(), **FLOAT_TOLERANCE)


def test_kernel_errors_name_the_kernel(onnx_archives, tmp_path):
    """A kernel that reports an error through the backend surfaces as KernelError naming it."""
    import re

    from utvm.model_library.archive import write_archive

    library = ml.load(onnx_archives("cnn")[1])
    failing = library.kernels[2]
    files = {name: library.read(name) for name in library.file_names()}
    source_name = next(n for n in files if n.endswith("_kernels.c"))
    source = files[source_name].decode()
    opening = re.search(rf"int32_t {failing['function']}\(.*\) \{{\n", source)
    assert opening is not None
    inject = '  TVMFFIErrorSetRaisedFromCStr("ValueError", "injected failure");\n  return -1;\n'
    source = source[: opening.end()] + inject + source[opening.end() :]
    files[source_name] = source.encode()
    broken = ml.load(write_archive(tmp_path / "broken.tar", files))
    inputs = onnx_input_arrays(onnx_archives("cnn")[0])
    with ml.HostReference(broken) as host:
        host.set_input(0, inputs["image"])
        expected = rf"kernel 2 \({failing['name']}\).*injected failure"
        with pytest.raises(ml.KernelError, match=expected) as info:
            host.run()
        assert info.value.kernel_index == 2
        host.run_kernel(0)  # the kernels before it still run
        with pytest.raises(ml.KernelError, match="ValueError: injected failure"):
            host.run_kernel(2)


def test_float_emulation_of_quantized_operators_on_request(onnx_archives, tmp_path):
    import tvm
    from tvm import relax

    model_path, _ = onnx_archives("qdq_cnn")  # has integer kernels by default (see above)
    library = ml.load(ml.compile(model_path, tmp_path / "float.tar", integer_ops=False))
    assert library.metadata["options"]["integer_ops"] is False
    assert not [k for k in library.kernels if k["name"].startswith("qnn_")]
    inputs = onnx_input_arrays(model_path)
    mod = ml.relax_module(model_path, integer_ops=False)
    vm = relax.VirtualMachine(tvm.compile(mod, target="llvm"), tvm.cpu())
    want = vm["main"](*[tvm.runtime.tensor(a) for a in inputs.values()]).numpy()
    np.testing.assert_allclose(_run_host(library, inputs)[0], want, **FLOAT_TOLERANCE)


def test_inputs_share_bytes_by_default(onnx_archives, tmp_path):
    model_path, archive = onnx_archives("cnn")
    shared = ml.load(archive)
    assert shared.metadata["options"]["preserve_inputs"] is False
    kept = ml.load(ml.compile(model_path, tmp_path / "kept.tar", preserve_inputs=True))
    assert shared.memory["arena_bytes"] < kept.memory["arena_bytes"]
    # The lower bound is the one under the true lifetimes: smaller when inputs die early.
    assert shared.memory["peak_live_lower_bound_bytes"] < kept.memory["peak_live_lower_bound_bytes"]
    inputs = onnx_input_arrays(model_path)
    np.testing.assert_array_equal(_run_host(shared, inputs)[0], _run_host(kept, inputs)[0])
