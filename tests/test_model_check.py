"""The compile-time check and the faults it exists for.

The reproducer of issue 20 (MaxPool, a Pad to more channels, an Add with a strided Conv) was
compiled into a kernel that never wrote the padded channels. These tests show it right now, and
show that compile refuses such an archive when the fault is put back by breaking the pass that
made it (in this process only), naming the kernel; a broken memory plan and a wrong answer from
TVM's importer are refused too.
"""

from __future__ import annotations

import argparse

import numpy as np
import pytest
from utvm.cli import compile_command as compile_cli
from utvm.model_library import HostReference, compile_model, load, workspace_schedule
from utvm.model_library import compiler as compiler_module
from utvm.model_library.check import CheckError
from utvm.model_library.errors import ModelError

onnx = pytest.importorskip("onnx", reason="the onnx package builds the test models")
ort = pytest.importorskip("onnxruntime", reason="ONNX Runtime is the reference for these models")


def _save(path, name, nodes, x_shape, y_shape, weights):
    """Write a one-input, one-output float ONNX graph (opset 17) with `weights` as initializers."""
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        nodes,
        name,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, y_shape)],
        [numpy_helper.from_array(array, key) for key, array in weights.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    path.write_bytes(model.SerializeToString())
    return path


def pad_add_model(path):
    """Issue 20's reproducer: MaxPool 2x2/2 on [1,8,16,16], Pad 4 channels at the end, + Conv 3x3/2."""
    from onnx import helper

    rng = np.random.default_rng(0)
    weights = {
        "w": rng.standard_normal((12, 8, 3, 3)).astype(np.float32),
        "pads": np.array([0, 0, 0, 0, 0, 4, 0, 0], np.int64),
    }
    nodes = [
        helper.make_node("MaxPool", ["x"], ["pooled"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Pad", ["pooled", "pads"], ["padded"]),
        helper.make_node("Conv", ["x", "w"], ["conv"], kernel_shape=[3, 3], strides=[2, 2], pads=[1] * 4),
        helper.make_node("Add", ["padded", "conv"], ["y"]),
    ]
    return _save(path, "pad_add", nodes, [1, 8, 16, 16], [1, 12, 8, 8], weights)


def two_branch_model(path):
    """x -> Conv A, x -> Conv B, then sigmoid(A) + B."""
    from onnx import helper

    rng = np.random.default_rng(1)
    weights = {
        "wa": rng.standard_normal((4, 4, 1, 1)).astype(np.float32),
        "wb": rng.standard_normal((4, 4, 3, 3)).astype(np.float32),
    }
    nodes = [
        helper.make_node("Conv", ["x", "wa"], ["a"], kernel_shape=[1, 1]),
        helper.make_node("Conv", ["x", "wb"], ["b"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Sigmoid", ["a"], ["sa"]),
        helper.make_node("Add", ["sa", "b"], ["y"]),
    ]
    return _save(path, "two_branch", nodes, [1, 4, 8, 8], [1, 4, 8, 8], weights)


@pytest.fixture
def restore_the_pad_fault(monkeypatch):
    """Put back what workspace_schedule did before the fix: move any epilogue, check nothing."""
    monkeypatch.setattr(workspace_schedule, "_same_spatial_domain", lambda *args: True)
    monkeypatch.setattr(workspace_schedule, "covers_domains", lambda func: True)


def _run_archive(archive, inputs):
    library = load(archive)
    with HostReference(library) as host:
        for i, array in enumerate(inputs):
            host.set_input(i, array)
        host.run()
        return [host.get_output(i) for i in range(len(library.outputs))]


def test_pad_add_reproducer_matches_onnx_runtime(tmp_path):
    model = pad_add_model(tmp_path / "pad_add.onnx")
    lines = []
    archive = compile_model(model, tmp_path / "pad_add.tar", progress=lines.append)
    x = np.random.default_rng(7).standard_normal((1, 8, 16, 16)).astype(np.float32)
    (ours,) = _run_archive(archive, [x])
    (want,) = ort.InferenceSession(str(model)).run(None, {"x": x})
    scale = np.abs(want).max()
    assert np.abs(ours - want).max() <= 1e-4 * scale
    # The padded channels 8..11 are the conv alone: they are the ones the fault left unwritten.
    assert np.abs(ours[:, 8:] - want[:, 8:]).max() <= 1e-4 * scale
    assert any(line.startswith("check passed") and "ONNX Runtime" in line for line in lines), lines


def test_compile_refuses_a_kernel_fault_naming_the_kernel(tmp_path, restore_the_pad_fault):
    model = pad_add_model(tmp_path / "pad_add.onnx")
    output = tmp_path / "pad_add.tar"
    with pytest.raises(CheckError) as refused:
        compile_model(model, output)
    message = str(refused.value)
    assert "fused_max_pool2d_pad_add" in message and "kernel 1" in message
    assert "the archive's C" in message and "TVM's LLVM build" in message
    assert "at [0, 8," in message  # the first unwritten element: channel 8, the first padded one
    assert not output.exists()


def test_utvm_compile_refuses_it_and_no_check_writes_it(tmp_path, restore_the_pad_fault):
    model = pad_add_model(tmp_path / "pad_add.onnx")
    parser = argparse.ArgumentParser()
    compile_cli.register(parser.add_subparsers())
    output = tmp_path / "checked.tar"
    args = parser.parse_args(["compile", str(model), "-o", str(output)])
    with pytest.raises(CheckError, match=r"kernel 1 \(fused_max_pool2d_pad_add\) is wrong"):
        args.func(args)
    assert not output.exists()
    unchecked = tmp_path / "unchecked.tar"
    args = parser.parse_args(["compile", str(model), "-o", str(unchecked), "--no-check"])
    assert args.func(args) == 0
    assert unchecked.is_file()  # written, and wrong: what the check exists to stop
    x = np.random.default_rng(7).standard_normal((1, 8, 16, 16)).astype(np.float32)
    (ours,) = _run_archive(unchecked, [x])
    (want,) = ort.InferenceSession(str(model)).run(None, {"x": x})
    assert np.abs(ours[:, 8:] - want[:, 8:]).max() > 1e-2


def test_a_plan_fault_is_refused_as_one(tmp_path, monkeypatch):
    """A plan whose output is wired to the wrong tensor (the input, of the same shape): every
    kernel is right on the bytes it is given, so the check names the plan, from the outputs."""
    real_extract_plan = compiler_module.extract_plan

    def miswired(*args, **kwargs):
        plan = real_extract_plan(*args, **kwargs)
        plan.outputs = [plan.inputs[0]]
        return plan

    monkeypatch.setattr(compiler_module, "extract_plan", miswired)
    model = two_branch_model(tmp_path / "two_branch.onnx")
    with pytest.raises(CheckError, match="every kernel matched on its own, so the fault is in the plan"):
        compile_model(model, tmp_path / "two_branch.tar")


def test_a_wrong_answer_from_tvms_importer_is_refused(tmp_path):
    """ONNX's test_sequence_model3: TVM's importer returns X where ONNX Runtime returns Z."""
    from pathlib import Path

    model = Path(onnx.__file__).parent / "backend/test/data/simple/test_sequence_model3/model.onnx"
    with pytest.raises(CheckError) as refused:
        compile_model(model, tmp_path / "seq.tar")
    message = str(refused.value)
    assert "differs from ONNX Runtime" in message
    assert "so the fault is in TVM's ONNX importer" in message


def test_the_check_can_be_skipped_and_costs_nothing_then(tmp_path):
    model = pad_add_model(tmp_path / "pad_add.onnx")
    lines = []
    compile_model(model, tmp_path / "fast.tar", check=False, progress=lines.append)
    assert not any("check" in line for line in lines)


def test_lowering_failure_names_the_operator(tmp_path):
    import tvm
    from tvm import relax

    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((2, 3, 4), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            slope = relax.const(np.full(3, 0.25, np.float32))
            out = bb.emit_output(relax.op.nn.prelu(x, slope, axis=2))  # 3 slopes, 4 elements on axis 2
        bb.emit_func_output(out)
    with pytest.raises(ModelError, match=r"operator nn\.prelu\(float32\[2, 3, 4\], float32\[3\]; axis=2\)"):
        compile_model(bb.get(), tmp_path / "prelu.tar")
    assert isinstance(bb.get(), tvm.IRModule)


def _i64(*values):
    return np.array(values, np.int64)


_CONV3 = {"kernel_shape": [3, 3], "pads": [1] * 4}
# name -> (op, inputs, attributes); `w(shape)` names a random weight, `c(array)` a constant
REDUCTIONS = {
    "maxpool": lambda w: ("MaxPool", ["x"], {"kernel_shape": [2, 2], "strides": [2, 2]}),
    "avgpool": lambda w: ("AveragePool", ["x"], {"kernel_shape": [3, 3], "pads": [1] * 4}),
    "conv": lambda w: ("Conv", ["x", w((6, 4, 3, 3))], _CONV3),
    "depthwise": lambda w: ("Conv", ["x", w((4, 1, 3, 3))], {**_CONV3, "group": 4}),
}
INJECTIVES = {
    "pad_channels_after": lambda c: ("Pad", ["r", c(_i64(0, 0, 0, 0, 0, 3, 0, 0))], {}),
    "pad_channels_before": lambda c: ("Pad", ["r", c(_i64(0, 2, 0, 0, 0, 0, 0, 0))], {}),
    "pad_edges": lambda c: ("Pad", ["r", c(_i64(0, 0, 1, 2, 0, 0, 2, 1))], {"mode": "edge"}),
    "slice_channels": lambda c: ("Slice", ["r", c(_i64(1)), c(_i64(3)), c(_i64(1))], {}),
    "concat": lambda c: ("Concat", ["r", "r"], {"axis": 1}),
    "transpose": lambda c: ("Transpose", ["r"], {"perm": [0, 2, 3, 1]}),
    "tile": lambda c: ("Tile", ["r", c(_i64(1, 2, 1, 1))], {}),
}


@pytest.mark.parametrize("injective", sorted(INJECTIVES))
@pytest.mark.parametrize("reduction", sorted(REDUCTIONS))
def test_fused_reduction_injective_elementwise_patterns(tmp_path, reduction, injective):
    """The class of issue 20's fault: a reduction, an injective op changing the shape, an
    elementwise op, fused into one kernel. Each compiles with the check on, so its C matches TVM's
    LLVM build kernel by kernel and ONNX Runtime."""
    from onnx import TensorProto, helper, numpy_helper, shape_inference

    rng = np.random.default_rng(5)
    weights = []

    def constant(array):
        weights.append(numpy_helper.from_array(array, f"c{len(weights)}"))
        return weights[-1].name

    def random_weight(shape):
        return constant(rng.standard_normal(shape).astype(np.float32))

    def graph(steps, output_shape):
        nodes = [helper.make_node(op, inputs, [out], **attrs) for (op, inputs, attrs), out in steps]
        x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 12, 12])
        y = helper.make_tensor_value_info(steps[-1][1], TensorProto.FLOAT, output_shape)
        body = helper.make_graph(nodes, "pattern", [x], [y], weights)
        model = helper.make_model(body, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 9
        return model

    steps = [(REDUCTIONS[reduction](random_weight), "r"), (INJECTIVES[injective](constant), "i")]
    inferred = shape_inference.infer_shapes(graph(steps, None)).graph.output[0]
    shape = [d.dim_value for d in inferred.type.tensor_type.shape.dim]
    steps.append((("Add", ["i", random_weight(shape)], {}), "y"))
    path = tmp_path / "pattern.onnx"
    path.write_bytes(graph(steps, shape).SerializeToString())
    lines = []
    compile_model(path, tmp_path / "pattern.tar", progress=lines.append)
    assert any(line.startswith("check passed") and "ONNX Runtime" in line for line in lines), lines
