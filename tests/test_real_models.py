"""Real models no one here wrote, on the real path, against their own frameworks.

- MediaPipe's TFLite models, from the `mediapipe` 0.10.14 wheel on PyPI (mediapipe/modules/):
  face_detection_short_range and hand_recrop gave wrong answers before issue 20 (a fused kernel
  left the channels of a pad unwritten); the models utvm cannot take are refused naming the
  operator.
- ONNX's "light" ShuffleNet and ResNet-50 (in the onnx package): their input `gpu_0/data_0`
  once reached C as a parameter name.
- PyTorch's own transformer encoder layer, with random weights.
Each is compiled with the check on, built into a POSIX host project, run on the device over its
pipes (ResNet-50: in the archive's C built for the host, see its test), and compared with the
framework's runtime: floats within 1e-4 of the output's scale.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from host_driven_helpers import built_project, cached_archive
from pypi_models import wheel_models
from tflite_reference import tflite_reference
from utvm.host_driven.executor import Session
from utvm.model_library import HostReference, ModelError, compile_model, load
from utvm.model_library.tolerance import first_mismatch

MEDIAPIPE = ("mediapipe", "0.10.14")
pytestmark = pytest.mark.slow


def mediapipe_model(name: str) -> Path:
    files = wheel_models(*MEDIAPIPE, ".tflite")
    found = sorted(files.glob(f"mediapipe/modules/*/{name}.tflite"))
    assert found, f"{name}.tflite is not in the mediapipe {MEDIAPIPE[1]} wheel"
    return found[0]


def run_on_host_device(tmp_path_factory, key: str, model) -> tuple:
    """Compile `model` (check on), build a host project, run it on seeded inputs: (inputs, outputs)."""
    archive = cached_archive(tmp_path_factory, key, lambda _d: model)
    library = load(archive)
    inputs = seeded_inputs(library)
    with Session.from_project(built_project(tmp_path_factory, archive)) as session:
        session.set_inputs({e["name"]: x for e, x in zip(library.inputs, inputs)})
        session.run()
        outputs = [session.get_output(i) for i in range(len(library.outputs))]
    return inputs, outputs


def run_on_host_reference(tmp_path_factory, key: str, model) -> tuple:
    """Compile `model` (check on) and run the archive's C built for this machine: (inputs, outputs)."""
    archive = cached_archive(tmp_path_factory, key, lambda _d: model)
    library = load(archive)
    inputs = seeded_inputs(library)
    with HostReference(library) as host:
        for i, array in enumerate(inputs):
            host.set_input(i, array)
        host.run()
        return inputs, [host.get_output(i) for i in range(len(library.outputs))]


def seeded_inputs(library) -> list:
    rng = np.random.default_rng(3)
    return [rng.uniform(-1, 1, e["shape"]).astype(e["dtype"]) for e in library.inputs]


def assert_matches(outputs: list, reference: list, who: str) -> None:
    assert len(outputs) == len(reference)
    for i, (got, want) in enumerate(zip(outputs, reference)):
        mismatch = first_mismatch(got, want)
        assert mismatch is None, f"output {i}: " + mismatch.describe("the device", who)


@pytest.mark.parametrize("name", ["face_detection_short_range", "hand_recrop"])
def test_mediapipe_model_matches_tflite(tmp_path_factory, name):
    path = mediapipe_model(name)
    inputs, outputs = run_on_host_device(tmp_path_factory, f"mediapipe_{name}", path)
    assert_matches(outputs, tflite_reference(path, inputs), "the TFLite interpreter")


@pytest.mark.parametrize(
    "name, refusal",
    [
        ("selfie_segmentation", "TFLite custom operator(s) Convolution2DTransposeBias"),
        ("face_landmark_with_attention", "Landmarks2TransformMatrix, TransformTensorBilinear"),
        ("pose_detection", "operator 9 (DEQUANTIZE) takes float16 weights that DENSIFY makes"),
    ],
)
def test_mediapipe_model_refused_naming_the_operator(tmp_path, name, refusal):
    with pytest.raises(ModelError) as refused:
        compile_model(mediapipe_model(name), tmp_path / "model.tar")
    assert refusal in str(refused.value)


@pytest.mark.parametrize("name, on_device", [("shufflenet", True), ("resnet50", False)])
def test_onnx_light_model_matches_onnx_runtime(tmp_path_factory, name, on_device):
    """ResNet-50's 45 MB of constants take gcc half a minute per build: it runs in the archive's C
    built for the host (the build the check made, reused), not in a second, project build."""
    onnx = pytest.importorskip("onnx", reason="the onnx package ships the light models")
    ort = pytest.importorskip("onnxruntime", reason="ONNX Runtime is the reference")
    path = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light" / f"light_{name}.onnx"
    run = run_on_host_device if on_device else run_on_host_reference
    inputs, outputs = run(tmp_path_factory, f"light_{name}", path)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].name == "gpu_0/data_0"
    assert_matches(outputs, session.run(None, {"gpu_0/data_0": inputs[0]}), "ONNX Runtime")


def test_torch_transformer_encoder_layer_matches_pytorch(tmp_path_factory):
    torch = pytest.importorskip("torch", reason="PyTorch is the reference")
    torch.manual_seed(0)
    layer = torch.nn.TransformerEncoderLayer(d_model=32, nhead=4, dim_feedforward=64, batch_first=True)
    example = torch.randn(1, 10, 32)
    exported = torch.export.export(layer.eval(), (example,))
    inputs, outputs = run_on_host_device(tmp_path_factory, "torch_encoder_layer", exported)
    with torch.no_grad():
        want = layer(torch.from_numpy(inputs[0])).numpy()
    assert_matches(outputs, [want], "PyTorch")
