"""Issue 16: answers in the model's own terms.

- The archive maps every kernel to the source model's layers (TFLite operator index, op type and
  output tensor name; ONNX node; PyTorch FX node and module path), and the floor's reader refuses
  a malformed map.
- `utvm run --profile --validate --against source` shows those names and compares each kernel on
  the device with the framework's own tensor of its layer (TFLite interpreter with reference
  kernels, ONNX Runtime, PyTorch): on the host and on mps2_an386 under QEMU, for the MLPerf Tiny
  models, an ONNX model and a PyTorch module.
- One wrong constant in a copy of a generated project is named as the first diverging layer.
"""

from __future__ import annotations

import copy
import json
import operator
import re
import shutil

import numpy as np
import pytest
from conftest import SHARED_MODELS, require_tool
from host_driven_helpers import cached_archive, run_cli
from utvm.model_library import load
from utvm.project_api.mlf import ArchiveError, validate_metadata

pytestmark = pytest.mark.timeout(900)

TFLITE_OPS = {"CONV_2D", "DEPTHWISE_CONV_2D", "AVERAGE_POOL_2D", "FULLY_CONNECTED", "SOFTMAX"}  # kws, ad01
ONNX_OPS = {"Conv", "Relu", "Add", "MaxPool", "GlobalAveragePool", "Flatten", "Gemm", "Softmax", "MatMul",
            "QuantizeLinear", "DequantizeLinear"}  # model_builders' cnn and qdq_cnn


def cli(*args):
    result = run_cli(*args)
    assert result.returncode == 0, f"utvm {' '.join(map(str, args))}:\n{result.stdout}\n{result.stderr}"
    return result


def shared(name: str):
    path = SHARED_MODELS / name
    if not path.is_file():
        pytest.skip(f"reference model {name} not found in {SHARED_MODELS} (../shared/models is absent)")
    return path


def host_project(tmp_path, archive):
    project = tmp_path / "proj"
    cli("create-project", "host", archive, project)
    cli("build", project)
    return project


def run_against_source(project, *extra):
    """`utvm run --profile --validate --against source --json`: (exit code, JSON report, stderr)."""
    result = run_cli("run", project, "--profile", "--validate", "--against", "source", "--json", *extra)
    assert result.stdout.strip(), result.stderr
    return result.returncode, json.loads(result.stdout), result.stderr


def assert_layers_shown(report: dict, human: str, library, op_names: set) -> None:
    """Every profile row and every check carries its kernel's layers, as the archive maps them."""
    layers = library.metadata["source_layers"]["layers"]
    for row, kernel in zip(report["profile"]["rows"], library.kernels):
        assert [x["index"] for x in row["layers"]] == kernel["layers"]
    for check in report["validation"]["checks"]:
        assert check["layers"], check
    shown = {layers[i]["op"] for k in library.kernels for i in k["layers"]}
    assert shown <= op_names and shown, shown
    for op in shown:
        assert re.search(rf"#\d+ {re.escape(op)}[ ,]", human), human


# ---------------------------------------------------------------- the map in the archive


def test_small_tflite_model_maps_its_operators(tmp_path_factory):
    from model_builders import make_small_tflite

    archive = cached_archive(tmp_path_factory, "small_int8_layers",
                             lambda d: make_small_tflite(d / "small.tflite", quantized=True))
    library = load(archive)
    source = library.metadata["source_layers"]
    assert source["format"] == "tflite" and source["model_file"] == "src/model.tflite"
    assert library.read("src/model.tflite")[4:8] == b"TFL3"
    assert [layer["op"] for layer in source["layers"]] == ["FULLY_CONNECTED"]
    assert [k["layers"] for k in library.kernels] == [[0]]
    assert library.kernels[0]["source_output"] == 0


@pytest.mark.parametrize(
    "mutate, problem",
    [
        (lambda m: m["source_layers"].update(format="keras"), "source_layers.format"),
        (lambda m: m["source_layers"].update(model_sha256="XYZ"), "model_sha256"),
        (lambda m: m["source_layers"].update(model_file="../../etc/passwd"), "model_file"),
        (lambda m: m["source_layers"]["layers"][0].update(index=5), "layers[0]"),
        (lambda m: m["source_layers"]["layers"][0].update(name="a\nb"), "layers[0].name"),
        (lambda m: m["source_layers"]["layers"][0].update(op="x" * 2000), "layers[0].op"),
        (lambda m: m["source_layers"]["layers"][0].update(module="fc", module_type="a\tb"),
         "layers[0].module_type"),
        (lambda m: m["plan"]["kernels"][0].update(layers=[7]), "plan.kernels[0].layers"),
        (lambda m: m["plan"]["kernels"][0].update(source_output=3), "source_output"),
        (lambda m: m.pop("source_layers"), "no source_layers"),
    ],
)
def test_a_malformed_layer_map_is_refused(tmp_path_factory, mutate, problem):
    from model_builders import make_small_tflite

    archive = cached_archive(tmp_path_factory, "small_int8_layers",
                             lambda d: make_small_tflite(d / "small.tflite", quantized=True))
    metadata = copy.deepcopy(load(archive).metadata)
    mutate(metadata)
    with pytest.raises(ArchiveError, match=re.escape(problem)):
        validate_metadata(metadata, "model.tar")


# ---------------------------------------------------------------- TFLite, on the host


@pytest.mark.parametrize("name", ["kws_dscnn_int8.tflite", "ad01_fp32.tflite"])
def test_mlperf_model_matches_tflite_layer_by_layer_on_the_host(tmp_path_factory, tmp_path, name):
    model = shared(name)
    archive = cached_archive(tmp_path_factory, model.stem, lambda _d: model)
    library = load(archive)
    code, report, human = run_against_source(host_project(tmp_path, archive))
    assert code == 0, human
    validation = report["validation"]
    assert validation["passed"] and validation["isolated"], validation["verdict"]
    assert "TFLite" in validation["reference"]
    compared = [k["index"] for k in library.kernels if k["source_output"] is not None]
    assert [c["kernel_index"] for c in validation["checks"]] == compared
    assert len(compared) >= len(library.kernels) - 1  # kws: a dequantize inside the softmax layer
    assert_layers_shown(report, human, library, TFLITE_OPS)
    # The names are the model's: TFLite output tensor names.
    assert "functional_1/" in human


def break_one_constant(project, kernel_index: int) -> str:
    """Change the first element of the kernel's largest constant in the project's C; its symbol."""
    metadata = json.loads((project / "model" / "metadata.json").read_text())
    tensors = metadata["plan"]["tensors"]
    kernel = metadata["plan"]["kernels"][kernel_index]
    weights = max((tensors[a] for a in kernel["args"] if tensors[a]["storage"] == "const"),
                  key=lambda t: t["nbytes"])
    [source] = (project / "model" / "codegen" / "host" / "src").glob("*_constants.c")
    text = source.read_text()
    start = text.index("{", text.index(weights["symbol"] + "[")) + 1
    first = re.compile(r"\s*(-?\d+)").match(text, start)
    value = int(first.group(1))
    source.write_text(text[: first.start(1)] + str(value - 100 if value > 0 else value + 100)
                      + text[first.end(1):])
    return weights["symbol"]


def test_one_wrong_constant_is_named_as_the_first_diverging_tflite_layer(tmp_path_factory, tmp_path):
    model = shared("kws_dscnn_int8.tflite")
    archive = cached_archive(tmp_path_factory, model.stem, lambda _d: model)
    library = load(archive)
    broken = tmp_path / "broken"
    shutil.copytree(host_project(tmp_path, archive), broken)
    break_one_constant(broken, 3)
    cli("build", broken)
    code, report, human = run_against_source(broken)
    assert code == 1, human
    first = report["validation"]["first_failure"]
    layer = library.metadata["source_layers"]["layers"][3]
    assert first["kernel_index"] == 3 and [x["index"] for x in first["layers"]] == [3]
    assert layer["op"] == "DEPTHWISE_CONV_2D" and layer["name"].startswith("functional_1/activation_3/Relu")
    verdict = report["validation"]["verdict"]
    assert verdict.startswith("FAIL: layer #3 DEPTHWISE_CONV_2D functional_1/activation_3/Relu is the first "
                              "to diverge, in kernel 3 (")
    assert "tolerance: 8- and 16-bit integers within 1" in verdict
    # The kernels after it run on the interpreter's tensors, so only the broken one fails.
    assert [c["kernel_index"] for c in report["validation"]["checks"] if not c["passed"]] == [3]


# ---------------------------------------------------------------- ONNX and PyTorch


@pytest.mark.parametrize("kind", ["cnn", "qdq_cnn"])
def test_onnx_model_matches_onnx_runtime_node_by_node(tmp_path_factory, tmp_path, kind):
    pytest.importorskip("onnxruntime", reason="onnxruntime not installed (the test extra)")
    from model_builders import build_onnx_model

    archive = cached_archive(tmp_path_factory, f"onnx_{kind}",
                             lambda d: build_onnx_model(kind, d / f"{kind}.onnx"))
    library = load(archive)
    assert library.metadata["source_layers"]["model_file"] == "src/model.onnx"
    code, report, human = run_against_source(host_project(tmp_path, archive))
    assert code == 0, human
    assert report["validation"]["passed"] and "ONNX Runtime" in report["validation"]["reference"]
    assert_layers_shown(report, human, library, ONNX_OPS)
    # A fused kernel lists every node it covers: the first convolution with its activation.
    first = [library.metadata["source_layers"]["layers"][i]["op"] for i in library.kernels[0]["layers"]]
    assert "Relu" in first or "QuantizeLinear" in first, first


def _torch_module():
    torch = pytest.importorskip("torch", reason="torch not installed (the test extra)")

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
            self.bn = torch.nn.BatchNorm2d(8)
            self.drop = torch.nn.Dropout(0.5)
            self.fc = torch.nn.Linear(8 * 4 * 4, 10)

        def forward(self, x):
            x = self.drop(torch.relu(self.bn(self.conv(x))))
            x = torch.nn.functional.max_pool2d(x, 2)
            return torch.softmax(self.fc(x.flatten(1)), dim=-1)

    torch.manual_seed(0)
    net = Net().eval()
    with torch.no_grad():  # running statistics that are not the identity
        net.bn.running_mean.uniform_(-0.5, 0.5)
        net.bn.running_var.uniform_(0.5, 2.0)
    return torch, net, (torch.randn(1, 3, 8, 8),)


def _saved_torch_module(torch, net, example):
    def saved(workdir):
        path = workdir / "net.pt2"
        torch.export.save(torch.export.export(net, example), str(path))
        return path

    return saved


def assert_torch_layers_in_user_terms(library, human: str) -> None:
    """The module calls the user wrote (`bn`, a BatchNorm2d) name the nodes; no getitem shows."""
    layers = library.metadata["source_layers"]["layers"]
    by_module = {layer["module"]: layer["module_type"] for layer in layers if layer.get("module")}
    assert by_module == {"conv": "Conv2d", "bn": "BatchNorm2d", "drop": "Dropout", "fc": "Linear"}, by_module
    assert not [layer for layer in layers if "getitem" in (layer["op"], layer["name"])], layers
    # Batch norm's tensor is the getitem of its tuple: that layer's output, not a layer of its own.
    [bn] = [layer for layer in layers if layer.get("module") == "bn"]
    assert bn["output"].startswith("getitem")
    assert bn["name"] == bn["op"] == "_native_batch_norm_legit_no_training"
    assert library.kernels[0]["layers"] == [0, 1] and library.kernels[0]["source_output"] == 1
    assert "conv (Conv2d), #1 _native_batch_norm_legit_no_training bn (BatchNorm2d)" in human, human
    assert "getitem" not in human and re.search(r"#\d+ permute, #\d+ addmm fc \(Linear\)", human), human
    # Dropout (a clone in eval mode) hands on relu's tensor: the kernel computing it covers both.
    relu, drop = (next(x["index"] for x in layers if x["op"] == op) for op in ("relu", "clone"))
    covering = [k["index"] for k in library.kernels if relu in k["layers"]]
    assert covering == [k["index"] for k in library.kernels if drop in k["layers"]] and covering


def test_pytorch_module_matches_pytorch_node_by_node(tmp_path_factory, tmp_path):
    torch, net, example = _torch_module()
    archive = cached_archive(tmp_path_factory, "torch_net", _saved_torch_module(torch, net, example))
    library = load(archive)
    source = library.metadata["source_layers"]
    assert source["format"] == "torch" and source["model_file"] == "src/model.pt2"
    code, report, human = run_against_source(host_project(tmp_path, archive))
    assert code == 0, human
    assert report["validation"]["passed"] and "PyTorch" in report["validation"]["reference"]
    assert_layers_shown(report, human, library, {layer["op"] for layer in source["layers"]})
    assert_torch_layers_in_user_terms(library, human)


def test_pytorch_layers_are_fx_nodes_named_by_their_module_calls():
    """A container module, a module called twice in a row, a LayerNorm (a tuple and its getitem)
    and functions called in a container's and the model's forward."""
    torch = pytest.importorskip("torch", reason="torch not installed (the test extra)")
    from utvm.host_driven.layer_names import layers_label
    from utvm.model_library.layer_map import torch_layers

    class Block(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc, self.act = torch.nn.Linear(4, 4), torch.nn.ReLU()

        def forward(self, x):
            return torch.sigmoid(self.act(self.act(self.fc(x))))

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.block, self.norm = Block(), torch.nn.LayerNorm(4)

        def forward(self, x):
            return torch.tanh(self.norm(self.block(x)))

    program = torch.export.export(Net().eval(), (torch.randn(1, 4),)).run_decompositions()
    layers, key_layer, outputs = torch_layers([(node, None) for node in program.graph.nodes])
    assert layers_label([layer.to_json() for layer in layers]) == (
        "#0 permute, #1 addmm block.fc (Linear), #2 relu, #3 relu block.act (ReLU), "
        "#4 sigmoid block (Block), #5 native_layer_norm norm (LayerNorm), #6 tanh tanh")
    nodes = {node.name: node for node in program.graph.nodes}
    [getitem] = [n for n in nodes.values() if n.target is operator.getitem and n.args[1] == 0]
    assert key_layer[getitem] == key_layer[nodes["native_layer_norm"]] == 5
    assert layers[5].output == getitem.name
    assert getitem in outputs and nodes["native_layer_norm"] not in outputs


def test_pytorch_program_given_from_python(tmp_path):
    """compile() from an nn.Module carries no model file; validate_source takes the program."""
    from utvm.host_driven.executor import Session
    from utvm.model_library import compile_model
    from utvm.project_api.project import TemplateProject
    from utvm.templates import template_path

    torch, net, example = _torch_module()
    archive = compile_model(net, tmp_path / "net.tar", example_inputs=example)
    assert "model_file" not in load(archive).metadata["source_layers"]
    with TemplateProject.from_directory(template_path("host"), echo=False) as template:
        with template.generate_project(archive, tmp_path / "proj", {}) as project:
            project.build()
    with Session.from_project(tmp_path / "proj") as session:
        session.set_input(0, np.random.default_rng(0).standard_normal((1, 3, 8, 8)).astype("float32"))
        report = session.validate_source(model_file=torch.export.export(net, example))
    assert report.passed and len(report.checks) >= 4, report.verdict()


# ---------------------------------------------------------------- mps2_an386 under QEMU


def baremetal_project(tmp_path, model):
    """`utvm create-project baremetal MODEL -o board=mps2_an386`, built (QEMU runs it)."""
    for tool in ("arm-none-eabi-gcc", "make", "qemu-system-arm"):
        require_tool(tool)
    project = tmp_path / "proj"
    cli("create-project", "baremetal", model, project, "-o", "board=mps2_an386")
    cli("build", project)
    return project


def assert_emulated_mps2(report: dict) -> None:
    board = report["record"]["board"]
    assert board["name"] == "mps2_an386" and board["emulated"] is True
    assert board["emulator"] == "qemu-system-arm"


@pytest.mark.parametrize("name", ["kws_dscnn_int8.tflite", "ad01_fp32.tflite"])
def test_mlperf_model_matches_tflite_layer_by_layer_on_mps2_an386(tmp_path, name):
    project = baremetal_project(tmp_path, shared(name))
    library = load(project / "model.tar")
    code, report, human = run_against_source(project)
    assert code == 0, human
    assert report["validation"]["passed"] and "TFLite" in report["validation"]["reference"]
    assert_layers_shown(report, human, library, TFLITE_OPS)
    assert_emulated_mps2(report)
    assert report["record"]["firmware"]["path"] == "build/firmware.elf"


@pytest.mark.parametrize("kind", ["cnn", "qdq_cnn"])
def test_onnx_model_matches_onnx_runtime_node_by_node_on_mps2_an386(tmp_path, kind):
    """The QDQ model's int8 kernels are the runtime's kernel library's on Cortex-M, not TVM's C."""
    pytest.importorskip("onnxruntime", reason="onnxruntime not installed (the test extra)")
    from model_builders import build_onnx_model

    project = baremetal_project(tmp_path, build_onnx_model(kind, tmp_path / f"{kind}.onnx"))
    library = load(project / "model.tar")
    code, report, human = run_against_source(project)
    assert code == 0, human
    validation = report["validation"]
    assert validation["passed"] and "ONNX Runtime" in validation["reference"], validation["verdict"]
    assert len(validation["checks"]) == len(library.kernels)
    assert_layers_shown(report, human, library, ONNX_OPS)
    assert_emulated_mps2(report)


def test_pytorch_module_matches_pytorch_node_by_node_on_mps2_an386(tmp_path):
    torch, net, example = _torch_module()
    model = tmp_path / "net.pt2"
    torch.export.save(torch.export.export(net, example), str(model))
    project = baremetal_project(tmp_path, model)
    library = load(project / "model.tar")
    code, report, human = run_against_source(project)
    assert code == 0, human
    validation = report["validation"]
    assert validation["passed"] and "PyTorch" in validation["reference"], validation["verdict"]
    assert len(validation["checks"]) == len(library.kernels) >= 4
    assert_layers_shown(report, human, library,
                        {layer["op"] for layer in library.metadata["source_layers"]["layers"]})
    assert_torch_layers_in_user_terms(library, human)
    assert_emulated_mps2(report)


def test_against_without_validate_is_a_one_line_error(tmp_path):
    result = run_cli("run", tmp_path, "--against", "source")
    assert result.returncode == 2
    assert result.stderr.splitlines()[0] == (
        "error: --against and --source-model choose --validate's reference")



def test_relax_vm_calls_are_given_the_layers_of_the_plan_kernels_they_match():
    """A tvm_runtime profile names the calls of TVM's Relax VM: matched with the plan's kernels by
    PrimFunc, in order; a call TVM split off (softmax, quantize) gets its unmatched neighbours'."""
    from utvm.host_driven.layer_names import call_layers, layers_label

    ops = ["CONV_2D", "DEPTHWISE_CONV_2D", "CONV_2D", "FULLY_CONNECTED", "SOFTMAX"]
    layers = [{"index": i, "op": op, "name": f"t{i}", "output": f"t{i}"} for i, op in enumerate(ops)]
    plan = [("qnn_conv2d", "qnn_conv2d", [0]), ("qnn_conv2d1", "qnn_conv2d1", [1]),
            ("qnn_conv2d_1", "qnn_conv2d", [2]), ("qnn_dense", "qnn_dense", [3]),
            ("dequantize", "dequantize", [4]), ("fused_softmax_quantize", "fused_softmax_quantize", [4])]
    kernels = [{"index": i, "name": name, "function": f"utvm_m_{function}", "layers": covered}
               for i, (name, function, covered) in enumerate(plan)]
    metadata = {"source_layers": {"format": "tflite", "layers": layers}, "plan": {"kernels": kernels}}
    calls = ["qnn_conv2d", "qnn_conv2d1", "qnn_conv2d", "qnn_dense", "dequantize", "softmax", "quantize"]
    labels = [layers_label(x) for x in call_layers(metadata, calls)]
    assert labels == ["#0 CONV_2D t0", "#1 DEPTHWISE_CONV_2D t1", "#2 CONV_2D t2", "#3 FULLY_CONNECTED t3",
                      "#4 SOFTMAX t4", "#4 SOFTMAX t4", "#4 SOFTMAX t4"]
    assert call_layers({"plan": {"kernels": kernels}}, calls) == [[]] * len(calls)  # no layer map
