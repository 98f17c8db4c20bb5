"""The MLPerf Tiny KWS (int8) and AD (float32) models of ../shared/models on the emulated Jetson, as a
user runs them, three ways:

    utvm create-project jetson MODEL p -o board=qemu_aarch64      (qemu-aarch64 here)
    utvm create-project jetson MODEL p -o board=qemu_aarch64 -o ssh_host=... (through a local sshd)
    utvm create-project jetson MODEL p -o board=qemu_aarch64 -o project_type=tvm_runtime
    utvm build p && utvm flash p && utvm run p --benchmark --profile --validate

Outputs match the TFLite interpreter: within 1 per element for int8, 1e-4 relative to the output's
magnitude for float.
"""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest
from conftest import SHARED_MODELS, require_tool
from host_driven_helpers import run_cli
from jetson_helpers import arm64_root, throwaway_sshd
from tflite_reference import tflite_reference
from utvm.model_library import load

pytestmark = [pytest.mark.timeout(1200), pytest.mark.slow]

MODELS = {"kws_int8": "kws_dscnn_int8.tflite", "ad_fp32": "ad01_fp32.tflite"}
WAYS = ("qemu", "ssh", "tvm_runtime")
SEED = 23


def cli(*args) -> subprocess.CompletedProcess:
    result = run_cli(*args, timeout=900)
    assert result.returncode == 0, f"utvm {' '.join(map(str, args))}:\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    with throwaway_sshd(tmp_path_factory.mktemp("sshd")) as server:
        yield server


def _ways_options(way, request, workdir):
    if way == "ssh":
        board = request.getfixturevalue("sshd")
        return [*board.options(workdir / "on-the-board"),
                "-o", "remote_prefix=qemu-aarch64 -L /usr/aarch64-linux-gnu"]
    if way == "tvm_runtime":
        return ["-o", "project_type=tvm_runtime", "-o", f"qemu_root={arm64_root()}"]
    return []


@pytest.fixture(scope="module", params=[(m, w) for m in MODELS for w in WAYS],
                ids=[f"{m}-{w}" for m in MODELS for w in WAYS])
def run(request, tmp_path_factory):
    """One model one way: created from the .tflite, built, flashed, run with every flag."""
    key, way = request.param
    for tool in ("aarch64-linux-gnu-gcc", "make", "qemu-aarch64"):
        require_tool(tool)
    model = SHARED_MODELS / MODELS[key]
    if not model.is_file():
        pytest.skip(f"reference model {model.name} not found in {SHARED_MODELS} (../shared/models is absent)")
    workdir = tmp_path_factory.mktemp(f"{key}-{way}")
    project = workdir / "p"
    options = _ways_options(way, request, workdir)
    cli("create-project", "jetson", model, project, "-o", "board=qemu_aarch64", *options)
    cli("build", project)
    cli("flash", project)
    library = load(project / "model.tar")
    rng = np.random.default_rng(SEED)
    spec = library.inputs[0]
    if np.dtype(spec["dtype"]).kind == "f":
        x = rng.standard_normal(spec["shape"]).astype(spec["dtype"])
    else:
        x = rng.integers(-128, 128, spec["shape"], dtype=spec["dtype"])
    np.save(workdir / "x.npy", x)
    ran = cli("run", project, "--input", f"0={workdir / 'x.npy'}", "--output", workdir / "out.npz",
              "--benchmark", "--profile", "--validate", "--number", "2", "--repeat", "2", "--json")
    with np.load(workdir / "out.npz") as saved:
        outputs = {name: saved[name] for name in saved.files}
    return {"key": key, "way": way, "model": model, "x": x, "outputs": outputs, "library": library,
            "report": json.loads(ran.stdout), "log": ran.stderr}


def test_outputs_match_the_tflite_interpreter(run):
    [want] = tflite_reference(run["model"], [run["x"]])
    [got] = [run["outputs"][o["name"]] for o in run["library"].outputs]
    assert got.dtype == want.dtype and got.shape == want.shape
    if got.dtype.kind in "iu":
        worst = int(np.abs(got.astype(np.int64) - want.astype(np.int64)).max())
        assert worst <= 1, f"differs from TFLite by {worst}"
    else:
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * float(np.abs(want).max()))


def test_benchmark_profile_and_validation(run):
    report, log = run["report"], run["log"]
    assert report["device"]["board"] == "qemu_aarch64"
    assert "note: qemu_aarch64 runs under qemu-aarch64: timings follow the host's clock; they are not " \
           "real-board timings" in log
    bench = report["benchmark"]
    assert bench["repeat"] == 2 and bench["number"] == 2
    assert 0 < bench["min"] <= bench["median"] <= bench["max"]
    rows = report["profile"]["rows"]
    assert rows and all(r["mean"] > 0 for r in rows)
    validation = report["validation"]
    assert validation["passed"] is True, validation["verdict"]
    if run["way"] == "tvm_runtime":
        assert report["device"]["runtime_version"] == "TVM 0.27.0.post1, Relax VM"
        assert report["device"]["machine"] == "aarch64"
    else:
        # utvm's runtime: every kernel of the plan profiled and checked layer by layer.
        kernels = [k["name"] for k in run["library"].kernels]
        assert [r["name"] for r in rows] == kernels
        assert len(validation["checks"]) >= len(kernels)
