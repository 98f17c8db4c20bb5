"""The Arduino template on arduino_mega2560 under simavr (cycle-exact), through the `utvm` command line
as a user runs it (issue 12):

    utvm create-project arduino MODEL p -o board=arduino_mega2560 && utvm build p && utvm flash p
    utvm run p --benchmark --profile --validate

with small models the tests build themselves: int8 and float fully-connected layers, and one whose
20 KB of weights are more than the board's 8 KB of SRAM, which must stay in flash. Outputs are
compared with the TFLite interpreter (int8: within 1 per element; float: 1e-4 relative), timings
must be cycles of the simulated 16 MHz clock, and no simulator may outlive a run, an error, or a
client killed with SIGKILL. The sketch must also build by hand with the command its README gives.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import REPO_ROOT, require_tool
from host_driven_helpers import CLI, run_cli
from model_builders import make_small_tflite
from tflite_reference import tflite_reference
from utvm.boards import get_board
from utvm.model_library import load

pytestmark = pytest.mark.timeout(900)

BOARD = "arduino_mega2560"
BRIDGE = "utvm-simavr-bridge"
MODELS = {  # name -> make_small_tflite arguments
    "small_int8": {"quantized": True},
    "small_float": {"quantized": False},
    "wide_int8": {"quantized": True, "in_dim": 128, "out_dim": 160},  # 20 KiB of int8 weights
}


@pytest.fixture(scope="session")
def avr_tools():
    for tool in ("arduino-builder", "avr-gcc", "simavr", "cc"):
        require_tool(tool)
    if not os.path.isfile("/usr/include/simavr/sim_avr.h"):
        pytest.skip("libsimavr-dev is not installed (run `make test` as root to install it)")


def cli(*args, timeout: float = 600) -> subprocess.CompletedProcess:
    result = run_cli(*args, timeout=timeout)
    command = " ".join(map(str, args))
    assert result.returncode == 0, f"utvm {command} failed:\n{result.stdout}\n{result.stderr}"
    return result


def bridges(project) -> list:
    """pids of simavr bridges running this project's image."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if argv and argv[0].endswith(BRIDGE.encode()) and str(project).encode() in b" ".join(argv):
            found.append(int(pid))
    return found


def assert_no_bridge_left(project, within: float = 10.0):
    deadline = time.monotonic() + within
    while bridges(project) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not bridges(project), f"a simavr bridge of {project} outlived its run"


@pytest.fixture(scope="module")
def built(avr_tools, tmp_path_factory):
    """built(name, project_type): the model made, then created, built and flashed with the CLI."""
    cache = {}

    def make(name: str, project_type: str = "host_driven"):
        if (name, project_type) not in cache:
            workdir = tmp_path_factory.mktemp(f"{name}-{project_type}")
            model = make_small_tflite(workdir / f"{name}.tflite", **MODELS[name])
            project = workdir / "p"
            cli("create-project", "arduino", model, project, "-o", f"board={BOARD}",
                "-o", f"project_type={project_type}")
            build = cli("build", project)
            cli("flash", project)
            library = load(project / "model.tar")
            rng = np.random.default_rng(3)
            spec = library.inputs[0]
            dtype = np.dtype(spec["dtype"])
            if dtype.kind == "f":
                array = rng.standard_normal(spec["shape"]).astype(dtype)
            else:
                array = rng.integers(-128, 127, spec["shape"], endpoint=True).astype(dtype)
            np.save(workdir / "x.npy", array)
            cache[(name, project_type)] = {"dir": workdir, "model": model, "project": project, "input": array,
                                           "library": library, "build_log": build.stdout + build.stderr}
        return cache[(name, project_type)]

    return make


def _count(text: str) -> int:
    return int(text.replace(",", ""))


def assert_matches_tflite(model, inputs, outputs):
    expected = tflite_reference(model, inputs)
    for got, want in zip(outputs, expected):
        assert got.dtype == want.dtype and got.shape == want.shape
        if got.dtype.kind in "iu":
            worst = int(np.abs(got.astype(np.int64) - want.astype(np.int64)).max())
            assert worst <= 1, f"differs from TFLite by {worst}"
            assert len(np.unique(want)) > 2, "the reference output is saturated: a weak check"
        else:
            scale = float(np.abs(want).max())
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * scale)


@pytest.mark.parametrize("name", ["small_int8", "small_float", "wide_int8"])
def test_runs_host_driven_under_simavr_and_matches_tflite(built, name):
    case = built(name)
    project, out = case["project"], case["dir"] / "out.npz"
    result = cli("run", project, "--input", f"0={case['dir'] / 'x.npy'}", "--output", out,
                 "--benchmark", "--profile", "--validate", "--number", "2", "--repeat", "3", "--json")
    report, human = json.loads(result.stdout), result.stderr
    with np.load(out) as saved:
        assert_matches_tflite(case["model"], [case["input"]], [saved[n] for n in saved.files])
    # Cycles of the simulated 16 MHz clock: the port's Timer1 counts CPU cycles.
    assert f"{BOARD} runs under simavr, which is cycle-exact: device times are cycles of the simulated " \
           "16 MHz clock" in human
    ran = re.search(r"^ran in ([\d,]+) cycles \(", human, re.M)
    assert ran and _count(ran.group(1)) == round(report["run_seconds"] * 16e6), human
    bench = re.search(r"^benchmark: cycles per run: mean ([\d,]+), median ([\d,]+), .*\(3 x 2 calls\)$",
                      human, re.M)
    assert bench and _count(bench.group(2)) == round(report["benchmark"]["median"] * 16e6), human
    rows = re.findall(r"^\s+(\d+)  (\S+)\s+([\d,]+)\s+[\d.]+%(?:  #.*)?$", human, re.M)
    assert [row[1] for row in rows] == [k["name"] for k in case["library"].kernels], human
    assert all(_count(row[2]) > 1000 for row in rows)
    assert report["validation"]["passed"] is True and "validation: PASS" in human
    assert_no_bridge_left(project)


def test_a_softmax_model_runs_with_avr_libcs_expf(avr_tools, tmp_path):
    """avr-libc's expf is a macro: TVM's own prototype of it is dropped for AVR archives."""
    from model_builders import build_onnx_model, onnx_input_arrays

    model = build_onnx_model("softmax", tmp_path / "softmax.onnx")
    project = tmp_path / "p"
    cli("create-project", "arduino", model, project, "-o", f"board={BOARD}")
    kernels = next((project / "src/utvm/model").glob("*_kernels.c")).read_text()
    assert "expf(" in kernels and "TVM_DLL float expf(float);" not in kernels
    cli("build", project)
    cli("flash", project)
    [(name, array)] = onnx_input_arrays(model).items()
    np.save(tmp_path / "x.npy", array)
    result = cli("run", project, "--input", f"{name}={tmp_path / 'x.npy'}", "--output", tmp_path / "out.npz",
                 "--validate")
    assert "validation: PASS" in result.stdout + result.stderr
    import onnxruntime

    [want] = onnxruntime.InferenceSession(str(model)).run(None, {name: array})
    with np.load(tmp_path / "out.npz") as saved:
        np.testing.assert_allclose(saved["probs"], want, rtol=1e-4, atol=1e-6)
    assert_no_bridge_left(project)


def test_constants_larger_than_sram_stay_in_flash(built):
    case = built("wide_int8")
    constants = case["library"].metadata["memory"]["constant_bytes"]
    assert constants > 8192  # more than the board's SRAM
    sizes = json.loads((case["project"] / "build" / "sizes.json").read_text())
    assert sizes["constants_in_flash_bytes"] >= constants and sizes["constants_in_ram_bytes"] == 0
    assert sizes["ram_bytes"] < 8192 - 1024  # the image's data and bss leave room for the stack
    assert f"model constants: {sizes['constants_in_flash_bytes']} B in flash, 0 B in RAM" in case["build_log"]
    # What arduino-builder itself says about the image.
    assert re.search(r"Global variables use \d+ bytes .* of dynamic memory", case["build_log"])


@pytest.mark.parametrize("name", ["small_int8", "small_float", "wide_int8"])
def test_the_fit_check_estimate_bounds_the_image_closely(built, name):
    """create-project's SRAM estimate (without its stack reserve) against the linked image's .data and
    .bss: never below it, and not far above."""
    sys.path[:0] = [str(REPO_ROOT), str(REPO_ROOT / "templates" / "arduino")]
    from utvm_arduino import memory

    from project_api.mlf import read_model_archive

    case = built(name)
    sizes = json.loads((case["project"] / "build" / "sizes.json").read_text())
    archive = read_model_archive(case["project"] / "model.tar")
    estimate = memory.footprint(get_board(BOARD).to_dict(), archive, 0)
    assert sizes["ram_bytes"] <= estimate.ram_bytes <= sizes["ram_bytes"] * 1.15, (estimate.ram, sizes)
    assert sizes["flash_bytes"] <= estimate.flash_bytes, (estimate.flash, sizes)


def test_the_sketch_builds_by_hand_with_its_readme_command(built, tmp_path):
    case = built("small_int8")
    sketch = tmp_path / "p"  # a copy, elsewhere: the sketch stands on its own
    shutil.copytree(case["project"], sketch, ignore=shutil.ignore_patterns("build"))
    readme = (sketch / "README.md").read_text()
    commands = re.findall(r"^```\n(.+)\n```$", readme, re.M)
    [by_hand] = [c for c in commands if "arduino-builder" in c]
    assert "-fqbn arduino:avr:mega:cpu=atmega2560" in by_hand and "p.ino" in by_hand
    assert any(c.startswith("arduino-cli compile --fqbn arduino:avr:mega:cpu=atmega2560") for c in commands)
    result = subprocess.run(["bash", "-c", by_hand], cwd=sketch, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (sketch / "build" / "p.ino.elf").is_file() and (sketch / "build" / "p.ino.hex").is_file()
    assert "Sketch uses" in result.stdout


def test_aot_standalone_runs_once_and_reports_cycles(built):
    case = built("small_int8", "aot_standalone")
    out = case["dir"] / "standalone.npz"
    result = cli("run", case["project"], "--output", out, "--json")
    report, human = json.loads(result.stdout), result.stderr
    baked = load(case["project"] / "model.tar").inputs[0]
    with np.load(case["project"] / "standalone_inputs.npz") as inputs:
        array = inputs[baked["name"]]
    with np.load(out) as saved:
        assert_matches_tflite(case["model"], [array], [saved[n] for n in saved.files])
    assert report["status"] == 0 and report["timer_hz"] == 16_000_000 and report["ticks"] > 1000
    assert f"the run took {report['ticks']} cycles" in human
    assert_no_bridge_left(case["project"])


def test_no_simavr_outlives_an_error(built, tmp_path):
    case = built("small_int8")
    project = tmp_path / "broken"
    shutil.copytree(case["project"], project)
    # The image of the aot_standalone sketch: it prints its report and halts, so the session fails.
    standalone = built("small_int8", "aot_standalone")["project"] / "build" / "p.ino.elf"
    shutil.copy2(standalone, project / "build" / "broken.ino.elf")
    result = run_cli("run", project, "--benchmark", timeout=300)
    assert result.returncode != 0
    assert "error:" in result.stderr
    assert_no_bridge_left(project)


def test_no_simavr_outlives_a_killed_client(built):
    case = built("wide_int8")
    argv = [*CLI, "run", case["project"], "--benchmark", "--number", "50", "--repeat", "50"]
    client = subprocess.Popen(argv,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not bridges(case["project"]) and time.monotonic() < deadline and client.poll() is None:
            time.sleep(0.1)
        assert bridges(case["project"]), "the run never started simavr"
        time.sleep(1.0)  # mid-session
        client.send_signal(signal.SIGKILL)
        client.wait(10)
    finally:
        if client.poll() is None:
            client.kill()
    assert_no_bridge_left(case["project"])
