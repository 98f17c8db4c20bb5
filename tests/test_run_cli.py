"""`utvm run` end to end on the MLPerf Tiny models of ../shared/models, as a user runs it:
create-project host, build, run with a seeded input, compare with the TFLite interpreter; then the
benchmark, profile, validation and JSON report, and the relay and direct transports agreeing.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from host_driven_helpers import (
    SHARED_MODELS,
    built_project,
    cached_archive,
    host_reference_outputs,
    run_cli,
    shared_model_archive,
)
from tflite_reference import tflite_reference
from utvm.host_driven.signature import ModelSignature
from utvm.model_library import load

MODELS = ["kws_dscnn_int8.tflite", "ic_resnet8_int8.tflite", "ad01_int8.tflite", "ad01_fp32.tflite"]
SEED = 1234
# The device's own two measurements must agree: kernels timed one by one vs. the whole run.


def assert_close_to_reference(got, want):
    assert got.dtype == want.dtype and got.shape == want.shape
    if got.dtype.kind in "iu":
        assert np.abs(got.astype(np.int64) - want.astype(np.int64)).max() <= 1
    else:
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * float(np.abs(want).max()))


@pytest.fixture(scope="module", params=MODELS)
def case(request, tmp_path_factory):
    """One model: its file, the seeded input on disk, and a project made and built with the CLI."""
    model_path = SHARED_MODELS / request.param
    if not model_path.is_file():
        pytest.skip(
            f"reference model {request.param} not found in {SHARED_MODELS} (../shared/models is absent)"
        )
    archive = shared_model_archive(tmp_path_factory, request.param)
    workdir = tmp_path_factory.mktemp(model_path.stem)
    project = workdir / "proj"
    created = run_cli("create-project", "host", archive, project)
    assert created.returncode == 0, created.stderr
    built = run_cli("build", project)
    assert built.returncode == 0, built.stderr
    spec = load(archive).inputs[0]
    rng = np.random.default_rng(SEED)
    if spec["dtype"] == "int8":
        array = rng.integers(-128, 127, spec["shape"], dtype=np.int8, endpoint=True)
    else:
        array = rng.standard_normal(spec["shape"]).astype(spec["dtype"])
    np.save(workdir / "input.npy", array)
    return {
        "model": model_path,
        "archive": archive,
        "project": project,
        "dir": workdir,
        "input": array,
        "spec": spec,
    }


@pytest.fixture(scope="module")
def full_report(case):
    """`utvm run` with every flag, over the direct transport; (parsed JSON, out.npz path)."""
    out = case["dir"] / "direct.npz"
    result = run_cli(
        "run", case["project"], "--input", f"{case['spec']['name']}={case['dir'] / 'input.npy'}",
        "--output", out, "--benchmark", "--profile", "--validate", "--json", "--transport", "direct",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout), out


def test_outputs_match_the_tflite_interpreter(case, full_report):
    _, out = full_report
    expected = tflite_reference(case["model"], [case["input"]])
    names = [o["name"] for o in load(case["archive"]).outputs]
    with np.load(out) as saved:
        assert sorted(saved.files) == sorted(names)
        for name, want in zip(names, expected):
            assert_close_to_reference(saved[name], want)


def test_json_report_has_what_it_promises(case, full_report):
    report, out = full_report
    library = load(case["archive"])
    device = report["device"]
    assert device["board"] == "host" and device["runtime_version"]
    assert device["model_hash"] == library.model_hash
    assert device["arena_bytes"] == library.memory["arena_bytes"]
    assert report["output_file"] == str(out.resolve())
    for entry in library.outputs:
        assert report["outputs"][entry["name"]]["shape"] == entry["shape"]
        assert report["outputs"][entry["name"]]["path"].endswith(f":{entry['name']}")
    bench = report["benchmark"]
    for key in ("mean", "median", "std", "min", "max"):
        assert bench[key] >= 0
    assert bench["min"] <= bench["median"] <= bench["max"]
    assert report["validation"]["passed"] is True and report["validation"]["first_failure"] is None
    assert report["validation"]["verdict"].startswith("PASS")
    link = report["link"]  # a clean pipe: frames came back, none spoilt, packets as negotiated
    assert link["frames_received"] > 0 and link["frames_corrupted"] == 0 and link["frame_error_rate"] == 0
    assert link["packet_bytes"] == link["negotiated_packet_bytes"] == device["max_packet"]


def test_profile_rows_add_up_to_the_whole_run(case, full_report):
    # The rows are every kernel, in plan order, and the total is their sum. Whether that sum agrees with
    # a whole run's time is a measurement on a noisy machine, so it is shown to the user, not asserted.
    report, _ = full_report
    rows = report["profile"]["rows"]
    assert [r["name"] for r in rows] == [k["name"] for k in load(case["archive"]).kernels]
    assert all(r["mean"] > 0 for r in rows)
    assert report["profile"]["total"] == pytest.approx(sum(r["mean"] for r in rows))
    assert sum(r["share"] for r in rows) == pytest.approx(1.0)


def test_relay_gives_the_same_outputs_as_direct(case, full_report):
    _, direct_out = full_report
    out = case["dir"] / "relay.npz"
    result = run_cli(
        "run",
        case["project"],
        "--input",
        f"0={case['dir'] / 'input.npy'}",
        "--output",
        out,
        "--transport",
        "relay",
    )
    assert result.returncode == 0, result.stderr
    with np.load(out) as relay, np.load(direct_out) as direct:
        assert relay.files == direct.files
        for name in relay.files:
            np.testing.assert_array_equal(relay[name], direct[name])


def test_human_readable_report(case):
    result = run_cli("run", case["project"], "--benchmark", "--profile", "--validate", "--seed", "7")
    assert result.returncode == 0, result.stderr
    text = result.stdout
    assert "device: board host, runtime" in text and "arena" in text
    assert "random (seed 7)" in text
    assert "benchmark: mean" in text and "median" in text
    assert load(case["archive"]).kernels[0]["name"] in text
    assert "validation: PASS" in text


def test_bad_input_file_is_a_one_line_error(case):
    wrong = case["dir"] / "wrong.npy"
    np.save(wrong, np.zeros((3, 3), np.float64))
    result = run_cli("run", case["project"], "--input", f"0={wrong}")
    assert result.returncode == 2
    assert "error: input 0" in result.stderr and "got float64[3,3]" in result.stderr
    assert "Traceback" not in result.stderr
    assert "device:" not in result.stdout + result.stderr, "inputs are checked before a device starts"
    result = run_cli("run", case["project"], "--input", "nosuch=x.npy")
    assert result.returncode == 2 and "has no input named 'nosuch'" in result.stderr


def test_every_output_lands_in_the_npz(tmp_path_factory, tmp_path):
    """A model with two outputs (built by the suite itself, no ../shared needed)."""
    pytest.importorskip("onnx", reason="onnx not installed (the test extra)")
    from model_builders import build_onnx_model

    archive = cached_archive(
        tmp_path_factory, "two_outputs", lambda d: build_onnx_model("two_outputs", d / "m.onnx")
    )
    project = built_project(tmp_path_factory, archive)
    library = load(archive)
    result = run_cli("run", project, "--output", tmp_path / "out.npz", "--seed", "3", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    names = [o["name"] for o in library.outputs]
    assert len(names) == 2 and sorted(report["outputs"]) == sorted(names)
    expected = host_reference_outputs(archive, ModelSignature(library.metadata).random_inputs(3))
    with np.load(tmp_path / "out.npz") as saved:
        for name, want in zip(names, expected):
            np.testing.assert_array_equal(saved[name], want)
