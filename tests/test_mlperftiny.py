"""The mlperftiny project type (issue 17): firmware that the MLPerf Tiny runner drives.

Driven by tests/mlperftiny_runner.py, a runner written from the protocol in the issue:
- the host template's DUT program over its pipes (every command, every refusal, under ASan and
  UBSan too), and through `utvm pty`'s pseudo-terminal with pyserial, as the runner opens it;
- an mps2_an386 project under QEMU through `utvm pty`: lap times from the device's instruction
  clock, and results equal to `utvm run` of a host_driven project on the same inputs;
- the MLPerf Tiny KWS and IC models on mps2_an386 (when ../shared/models is there).
The results are the dequantized outputs with six decimals, so "equal" is within 5e-7.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
from conftest import SHARED_MODELS, require_tool
from host_driven_helpers import CLI, cached_archive, host_reference_outputs, run_cli
from mlperftiny_runner import SpecRunner, pipe_link, serial_link
from utvm.project_api import mlperftiny
from utvm.project_api.child_process import PipeChild
from utvm.project_api.errors import UserError
from utvm.project_api.project import TemplateProject
from utvm.project_api.pty_bridge import PtyBridge, bridge_status
from utvm.templates import template_path

pytestmark = pytest.mark.timeout(600)

DECIMALS = 1e-6  # the device prints six decimals; rounding is at most half of that, plus float noise


def _make_fc(workdir, key, in_dim, out_dim, quantized=True):
    from model_builders import make_small_tflite

    return make_small_tflite(workdir / f"{key}.tflite", quantized=quantized, in_dim=in_dim, out_dim=out_dim)


@pytest.fixture(scope="module")
def kws_like(tmp_path_factory):
    """An int8 model with kws01's input (490 values) and 12 class scores."""
    return cached_archive(tmp_path_factory, "mlperf_kws_like", lambda d: _make_fc(d, "kws_like", 490, 12),
                          preserve_inputs=True)


@pytest.fixture(scope="module")
def ad_like(tmp_path_factory):
    """An int8 model with ad01's input and output (640 values each)."""
    return cached_archive(tmp_path_factory, "mlperf_ad_like", lambda d: _make_fc(d, "ad_like", 640, 640),
                          preserve_inputs=True)


def cli(*args, expect_ok=True):
    result = run_cli(*args, timeout=600)
    if expect_ok:
        assert result.returncode == 0, f"utvm {' '.join(map(str, args))}:\n{result.stdout}\n{result.stderr}"
    return result


def make_project(tmp_path, template, archive, model_id, *options, name="dut"):
    project = tmp_path / name
    cli("create-project", template, archive, project, "-o", "project_type=mlperftiny",
        "-o", f"mlperf_model={model_id}", *options)
    cli("build", project)
    return project


def dequantized(archive, outputs):
    from utvm.model_library import load

    spec = load(archive).outputs[0]
    q = spec.get("quantization")
    values = np.asarray(outputs).reshape(-1)
    if q is None:
        return values.astype(np.float32)
    return (values.astype(np.int32) - q["zero_point"]).astype(np.float32) * np.float32(q["scale"])


def random_file(rng, dtype, count):
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max, size=count, endpoint=True, dtype=dtype)


# ---- the configuration a model gets ----------------------------------------------------------


def _io(dtype, shape, scale=None, zero_point=None, name="x"):
    entry = {"name": name, "dtype": dtype, "shape": shape}
    if scale is not None:
        entry["quantization"] = {"scale": scale, "zero_point": zero_point}
    return entry


def test_each_benchmark_maps_its_input_files_onto_the_model():
    kws = mlperftiny.dut_config({"inputs": [_io("int8", [1, 49, 10, 1], 0.5, 83)],
                                 "outputs": [_io("int8", [1, 12], 1 / 256, -128)]}, "kws01", "utvm b")
    assert kws["UTVM_MLPERF_INPUT_CONVERSION"] == "UTVM_MLPERF_INPUT_COPY"
    assert (kws["UTVM_MLPERF_INPUT_BYTES"], kws["UTVM_MLPERF_OUTPUT_ZERO_POINT"]) == ("490u", "(-128)")
    ic = mlperftiny.dut_config({"inputs": [_io("int8", [1, 32, 32, 3], 1.0, -128)],
                                "outputs": [_io("int8", [1, 10], 1 / 256, -128)]}, "ic01", "d")
    assert ic["UTVM_MLPERF_INPUT_CONVERSION"] == "UTVM_MLPERF_INPUT_U8_TO_I8"
    ad = mlperftiny.dut_config({"inputs": [_io("int8", [1, 640], 0.39, 89)],
                                "outputs": [_io("int8", [1, 640], 0.36, 96)]}, "ad01", "d")
    assert ad["UTVM_MLPERF_INPUT_CONVERSION"] == "UTVM_MLPERF_INPUT_QUANTIZE_F32"
    assert ad["UTVM_MLPERF_RESULT"] == "UTVM_MLPERF_RESULT_ANOMALY_MSE"
    assert (ad["UTVM_MLPERF_INPUT_BYTES"], ad["UTVM_MLPERF_INPUT_SCALE"]) == ("2560u", "(0.39f)")
    ad_float = mlperftiny.dut_config({"inputs": [_io("float32", [1, 640])],
                                      "outputs": [_io("float32", [1, 640])]}, "ad01", "d")
    assert ad_float["UTVM_MLPERF_INPUT_CONVERSION"] == "UTVM_MLPERF_INPUT_COPY"
    assert ad_float["UTVM_MLPERF_OUTPUT_TYPE"] == "UTVM_MLPERF_OUTPUT_F32"
    header = mlperftiny.config_header(kws, "kws */ model")
    assert '#define UTVM_MLPERF_MODEL_ID "kws01"' in header and "*/ model" not in header
    # The runner reads the name as m-name-dut-[NAME]: brackets and quotes cannot get in.
    assert mlperftiny.dut_config({"inputs": [_io("int8", [490], 1, 0)], "outputs": [_io("int8", [2], 1, 0)]},
                                 "kws01", 'a]b"c')["UTVM_MLPERF_DUT_NAME"] == '"a b c"'


@pytest.mark.parametrize("metadata, model_id, words", [
    ({"inputs": [_io("int8", [1, 100], 1, 0)], "outputs": [_io("int8", [1, 12], 1, 0)]}, "kws01",
     "490 int8 values"),
    ({"inputs": [_io("float32", [1, 490])], "outputs": [_io("int8", [1, 12], 1, 0)]}, "kws01",
     "do not go to a float32 input"),
    ({"inputs": [_io("int8", [640], 1, 0), _io("int8", [640], 1, 0, "y")],
      "outputs": [_io("int8", [1], 1, 0)]}, "ad01", "2 inputs and 1 outputs"),
    ({"inputs": [_io("int8", [1, 640])], "outputs": [_io("int8", [1, 640], 1, 0)]}, "ad01",
     "without a quantization scale"),
    ({"inputs": [_io("float32", [1, 640])], "outputs": [_io("float32", [1, 8])]}, "ad01",
     "compares output and input"),
    ({"inputs": [_io("int8", [490], 1, 0)], "outputs": [_io("int32", [1, 12])]}, "kws01",
     "int8, uint8 or float32 outputs"),
    ({"inputs": [_io("int8", [490], 1, 0)], "outputs": [_io("int8", [12], 1, 0)],
      "options": {"preserve_inputs": False}}, "kws01", "overwrite its input"),
    ({"inputs": [], "outputs": []}, "kws02", "unknown MLPerf Tiny model id"),
])
def test_a_model_that_does_not_fit_its_benchmark_is_refused(metadata, model_id, words):
    with pytest.raises(UserError) as err:
        mlperftiny.dut_config(metadata, model_id, "d")
    assert words in err.value.message and err.value.hint


# Every conversion and result kind: (model id, input, output).
CONFIGS = {
    "kws01-int8": ("kws01", _io("int8", [1, 490], 0.5, 83), _io("int8", [1, 12], 1 / 256, -128)),
    "ic01-int8": ("ic01", _io("int8", [1, 32, 32, 3], 1.0, -128), _io("int8", [1, 10], 1 / 256, -128)),
    "vww01-uint8": ("vww01", _io("uint8", [1, 96, 96, 3], 1.0, 0), _io("uint8", [1, 2], 1 / 256, 0)),
    "ad01-int8": ("ad01", _io("int8", [1, 640], 0.39, 89), _io("int8", [1, 640], 0.36, 96)),
    "ad01-float": ("ad01", _io("float32", [1, 640]), _io("float32", [1, 640])),
}


@pytest.mark.parametrize("cpu", ["cortex-m0plus", "cortex-m3", "cortex-m7"])
def test_the_dut_compiles_warning_free_for_every_configuration_on_cortex_m(cpu, repo_root, tmp_path):
    """Portable C: each benchmark's configuration, with -Wall -Wextra -Werror, on cores with and
    without an FPU (M0+ has no 64-bit division or float hardware either)."""
    cc = require_tool("arm-none-eabi-gcc")
    runtime = repo_root / "templates" / "runtime"
    for key, (model_id, given, result) in CONFIGS.items():
        folder = tmp_path / key
        folder.mkdir()
        config = mlperftiny.dut_config({"inputs": [given], "outputs": [result]}, model_id, "utvm test",
                                       "a note")
        (folder / mlperftiny.CONFIG_HEADER).write_text(mlperftiny.config_header(config, key))
        compiled = subprocess.run(
            [cc, f"-mcpu={cpu}", "-mthumb", "-Os", "-std=c99", "-Wall", "-Wextra", "-Werror", "-c",
             f"-I{folder}", f"-I{runtime / 'include'}", f"-I{runtime / 'apps' / 'mlperftiny'}",
             str(runtime / "apps" / "mlperftiny" / "mlperftiny.c"), "-o", str(folder / "dut.o")],
            capture_output=True, text=True)
        assert compiled.returncode == 0, f"{key} on {cpu}:\n{compiled.stderr}"


def test_runtime_mk_lists_the_dut_as_runtime_files_json_does(repo_root):
    runtime = repo_root / "templates" / "runtime"
    files = json.loads((runtime / "runtime_files.json").read_text())
    mk = (runtime / "runtime.mk").read_text()
    for key, var in (("sources", "SRCS"), ("includes", "INCLUDES")):
        listed = [f"$(UTVM_RUNTIME_DIR)/{rel}" for rel in files[f"{mlperftiny.RUNTIME_PART}_{key}"]]
        assert f"UTVM_RUNTIME_MLPERFTINY_{var} := {' '.join(listed)}" in mk
        assert all((runtime / rel).exists() for rel in files[f"{mlperftiny.RUNTIME_PART}_{key}"])


@pytest.mark.parametrize("name, offered", [("host", True), ("baremetal", True), ("zephyr", False)])
def test_templates_offering_mlperftiny_and_only_they_serve_the_pty_extensions(name, offered):
    """The UART firmware handler brings the type, its option and the extensions to the templates
    that offer it (bare-metal) and none of them to those that do not (Zephyr)."""
    with TemplateProject.from_directory(template_path(name), echo=False) as template:
        extensions = template.info()["utvm_extensions"]
        options = {o.name: o for o in template.project_options}
    assert ("utvm_open_pty" in extensions, "utvm_pty_status" in extensions) == (offered, offered)
    assert ("mlperftiny" in options["project_type"].choices) == offered
    assert (mlperftiny.MODEL_ID_OPTION in options) == offered
    assert (mlperftiny.TYPE_HELP in options["project_type"].help) == offered


# ---- the pseudo-terminal bridge -------------------------------------------------------------


def _child_link(child):
    return child.read, child.write


def test_the_pty_bridge_carries_bytes_both_ways_and_reports_the_end_of_the_link():
    serial = pytest.importorskip("serial", reason="pyserial not installed")
    child = PipeChild(["cat"], name="cat")
    bridge = PtyBridge(*_child_link(child), name="cat")
    try:
        path = bridge.start()
        assert os.path.realpath(path).startswith("/dev/pts/")
        with serial.Serial(path, 115200, timeout=5) as port:
            port.write(b"abc\r\n\x00%")  # raw: no echo, no CR/LF translation, NUL kept
            assert port.read(7) == b"abc\r\n\x00%"
        # Opened again after a close: still bridged.
        with serial.Serial(path, 115200, timeout=5) as port:
            port.write(b"again")
            assert port.read(5) == b"again"
        assert bridge.alive and bridge.error is None
        assert bridge_status(bridge) == {"path": path, "open": True, "error": None}
        # The server may know first that the device has gone (QEMU's exit status).
        assert bridge_status(bridge, "QEMU exited with status 1") == {
            "path": path, "open": False, "error": "QEMU exited with status 1"}
        child.close()  # the device goes away
        for _ in range(100):
            if not bridge.alive:
                break
            os.sched_yield()
            bridge._stop.wait(0.05)
        assert not bridge.alive and "cat's link ended" in bridge.error
        status = bridge_status(bridge)
        assert not status["open"] and status["error"] == bridge.error
        assert bridge_status(None) == {"path": None, "open": False, "error": "no pseudo-terminal is open"}
    finally:
        bridge.close()
        child.close()


# ---- the host DUT program --------------------------------------------------------------------


@pytest.fixture(scope="module")
def host_kws(kws_like, tmp_path_factory):
    require_tool("cc")
    return make_project(tmp_path_factory.mktemp("host-kws"), "host", kws_like, "kws01")


def _pipe_runner(project, program="build/model_mlperftiny"):
    child = PipeChild([str(project / program)], cwd=str(project), name="DUT")
    runner = SpecRunner(pipe_link(child))
    runner.boot()
    return runner


def test_the_host_dut_answers_every_command_and_its_results_are_the_models(host_kws, kws_like):
    runner = _pipe_runner(host_kws)
    try:
        assert runner.name() == "utvm host"
        assert runner.profile() == ("ULPMark for tinyML Firmware V0.0.1", "kws01")
        assert any(line.startswith("infer N [W]") for line in runner.command("help"))
        first = int(runner.command("timestamp")[0].removeprefix("m-lap-us-"))
        rng = np.random.default_rng(3)
        for _ in range(3):
            data = random_file(rng, np.int8, 490)
            runner.load(data.tobytes())
            done = runner.infer(5, 2)
            assert done.lap_us[0] >= first and done.elapsed_us >= 0
            [want] = host_reference_outputs(kws_like, {"input": data.reshape(1, 490)})
            expected = dequantized(kws_like, want)
            assert len(done.results) == 12
            np.testing.assert_allclose(done.results, expected, rtol=0, atol=DECIMALS)
            assert runner.results() == done.results
        # The bytes loaded, as the device holds them.
        buffer = [line for line in runner.command("db print") if line.startswith("m-buffer-")]
        assert bytes.fromhex("".join(line[len("m-buffer-"):].replace("-", "") for line in buffer)) \
            == data.tobytes()
    finally:
        runner.link.close()


def test_the_host_dut_refuses_bad_commands_with_one_error_line_and_stays_up(host_kws):
    runner = _pipe_runner(host_kws)
    try:
        assert runner.errors("results") == ["e-[No results yet: run 'infer N W' first]"]
        assert runner.errors("infer 1 0") == ["e-[No input loaded: send 'db load 490' and its bytes first]"]
        assert runner.errors("db 00") == ["e-[No input file expected: send 'db load N' first]"]
        assert runner.errors("frobnicate now") == ["e-[Unknown command: frobnicate]"]
        assert runner.errors("x" * 81) == ["e-[Command too long: at most 80 characters before the '%']"]
        assert runner.command("") == ["m-ready"]
        assert runner.errors("db load 0") == ["e-[db load needs a byte count above 0, not 0]"]
        assert runner.errors("db load 99999999999") == [
            "e-[db load needs a byte count above 0, not 99999999999]"]
        assert runner.errors("db load 491") == [
            "e-[db load: this model's input file is at most 490 bytes, not 491]"]
        assert runner.errors("db") == ["e-[Command 'db' needs a subcommand: load N, print, or hex bytes]"]
        assert runner.errors("db load 490") == []
        assert runner.errors("db abc") == ["e-[Odd number of hex digits: abc]"]
        assert runner.errors("db 0g") == ["e-[Invalid hex digits: 0g]"]
        assert runner.errors("db load 100") == []  # a short file: infer refuses it
        runner.command("db " + "11" * 31)
        assert runner.errors("db " + "22" * 31) == []
        runner.command("db " + "33" * 31)
        lines = runner.command("db " + "44" * 31)  # 124 bytes sent, the last 24 ignored
        assert "m-load-done" in lines
        assert runner.errors("db 55") == [
            "e-[All bytes of the input file are loaded: send 'db load N' for another]"]
        assert runner.errors("infer 1 0") == ["e-[No input loaded: send 'db load 490' and its bytes first]"]
        runner.load(bytes(490))
        assert runner.errors("infer 0") == ["e-[Inference iterations must be a whole number above 0, not 0]"]
        assert runner.errors("infer 2 -1") == ["e-[Inference warmups must be a whole number, not -1]"]
        # Brackets and control bytes from the host never reach a reply as they are.
        assert runner.errors("x]y\x01[") == ["e-[Unknown command: x?y]"]
        # Defaults: 1 inference after 10 warmups.
        assert runner.command("infer")[0] == "m-warmup-start-10"
        assert runner.infer(1, 0).results
    finally:
        runner.link.close()


def test_the_dut_parser_is_clean_under_address_and_undefined_behaviour_sanitizers(kws_like, tmp_path):
    require_tool("cc")
    project = make_project(tmp_path, "host", kws_like, "kws01", "-o",
                           "cflags=-fsanitize=address,undefined -fno-sanitize-recover=all")
    child = PipeChild([str(project / "build/model_mlperftiny")], cwd=str(project), name="DUT")
    runner = SpecRunner(pipe_link(child))
    runner.boot()
    rng = np.random.default_rng(9)
    hostile = ["", "db load 490", "db " + "f" * 79, "db load", "infer 4294967295 x",
               "infer 99999999999999999999", "\x00" * 100, "db print", "results", "y" * 500,
               "db load 4294967295", "timestamp extra args here"]
    for text in hostile + [bytes(rng.integers(1, 256, 60, dtype=np.uint8)).decode("latin-1").replace("%", "")
                           for _ in range(20)]:
        child.write(text.encode("latin-1") + b"%", 10.0)
        runner.read_lines_until_ready()
    runner.load(bytes(490))
    assert len(runner.infer(1, 1).results) == 12
    child.close()
    assert child.returncode == 0, child.stderr_tail()


def test_an_ad01_dut_quantizes_float_features_and_reports_the_mean_squared_error(ad_like, tmp_path):
    require_tool("cc")
    from utvm.model_library import load

    project = make_project(tmp_path, "host", ad_like, "ad01")
    runner = _pipe_runner(project)
    library = load(ad_like)
    q_in = library.inputs[0]["quantization"]
    try:
        features = np.random.default_rng(4).standard_normal(640).astype(np.float32) * 2
        runner.load(features.astype("<f4").tobytes())
        [score] = runner.infer(1, 0).results
        # As the DUT quantizes: round(x / scale) half away from zero, + zero point, clamped.
        ratio = features / np.float32(q_in["scale"])
        rounded = np.trunc(ratio + np.copysign(np.float32(0.5), ratio))
        quantized = np.clip(rounded + q_in["zero_point"], -128, 127).astype(np.int8)
        [out] = host_reference_outputs(ad_like, {library.inputs[0]["name"]: quantized.reshape(1, 640)})
        want = np.mean((dequantized(ad_like, out) - features) ** 2, dtype=np.float32)
        assert score == pytest.approx(float(want), rel=1e-5, abs=DECIMALS)
    finally:
        runner.link.close()


# ---- through `utvm pty`, as the runner opens the device -------------------------------------


def _pty_session(project, *extra):
    """`utvm pty PROJECT` in the background; returns (process, path)."""
    process = subprocess.Popen([*CLI, "pty", str(project), *extra],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    path = process.stdout.readline().strip()
    assert path.startswith("/dev/"), process.communicate(timeout=30)
    return process, path


def _stop(process):
    process.send_signal(signal.SIGINT)  # Ctrl-C
    try:
        out, err = process.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        # Ctrl-C was not acted on: the test fails, but leaves no `utvm pty` (and its emulator) behind.
        process.terminate()
        process.communicate(timeout=60)
        raise
    return process.returncode, err


def test_the_host_project_answers_on_the_pty_that_utvm_pty_prints(host_kws, kws_like):
    pytest.importorskip("serial", reason="pyserial not installed")
    process, path = _pty_session(host_kws)
    try:
        runner = SpecRunner(serial_link(path))
        # A second open, as the runner's discovery and its run each open the port.
        assert runner.name() == "utvm host"
        runner.link.close()
        runner = SpecRunner(serial_link(path))
        assert runner.profile()[1] == "kws01"
        data = random_file(np.random.default_rng(5), np.int8, 490)
        runner.load(data.tobytes())
        done = runner.infer(3, 1)
        [want] = host_reference_outputs(kws_like, {"input": data.reshape(1, 490)})
        np.testing.assert_allclose(done.results, dequantized(kws_like, want), rtol=0, atol=DECIMALS)
        runner.link.close()
    finally:
        code, err = _stop(process)
    assert code == 130, err


def test_utvm_pty_runs_a_command_with_the_path_and_returns_its_exit_code(host_kws):
    script = ("import os, serial; p = serial.Serial(os.environ['UTVM_PTY'], timeout=10); p.write(b'name%'); "
              "line = p.read_until(b'm-ready'); "
              "raise SystemExit(0 if b'm-name-dut-[utvm host]' in line else 3)")
    assert cli("pty", host_kws, "--", sys.executable, "-c", script).returncode == 0
    failing = cli("pty", host_kws, "--", sys.executable, "-c", "raise SystemExit(7)", expect_ok=False)
    assert failing.returncode == 7


def test_utvm_pty_and_utvm_run_refuse_the_wrong_project_type(host_kws, kws_like, tmp_path):
    require_tool("cc")
    other = tmp_path / "driven"
    cli("create-project", "host", kws_like, other)
    cli("build", other)
    refused = cli("pty", other, "--for", "1", expect_ok=False)
    assert refused.returncode == 1 and "this is a host_driven project" in refused.stderr, refused.stderr
    run = cli("run", host_kws, expect_ok=False)
    assert run.returncode == 2 and "is an mlperftiny project" in run.stderr
    assert "hint: `utvm pty" in run.stderr
    missing = cli("create-project", "host", kws_like, tmp_path / "nope", "-o", "project_type=mlperftiny",
                  expect_ok=False)
    assert missing.returncode == 2 and "needs the benchmark the model is for" in missing.stderr
    wrong = cli("create-project", "host", kws_like, tmp_path / "nope", "-o", "project_type=mlperftiny",
                "-o", "mlperf_model=ic01", expect_ok=False)
    assert wrong.returncode == 2 and "ic01: the model's input is int8[1, 490]" in wrong.stderr, wrong.stderr
    assert not (tmp_path / "nope").exists()


# ---- mps2_an386 under QEMU ------------------------------------------------------------------


@pytest.fixture(scope="module")
def qemu_tools():
    for tool in ("arm-none-eabi-gcc", "make", "qemu-system-arm"):
        require_tool(tool)
    pytest.importorskip("serial", reason="pyserial not installed")


def _utvm_run_outputs(project, arrays, workdir):
    """`utvm run` of a host_driven project on each input: the first output of each, as saved."""
    outputs = []
    for index, array in enumerate(arrays):
        np.save(workdir / f"in{index}.npy", array)
        cli("run", project, "--input", f"0={workdir / f'in{index}.npy'}",
            "--output", workdir / f"out{index}.npz")
        with np.load(workdir / f"out{index}.npz") as saved:
            outputs.append(saved[saved.files[0]])
    return outputs


def _runner_matches_utvm_run(tmp_path, archive, model_id, files, to_tensor, warmups=1, inferences=2,
                             repeat_first=False):
    """The mps2_an386 mlperftiny project, driven through `utvm pty` by the spec runner, against `utvm
    run` of a host_driven project of the same archive on the same inputs. Returns the inferences
    (and, with repeat_first, one more on the first input again)."""
    dut = make_project(tmp_path, "baremetal", archive, model_id, "-o", "board=mps2_an386")
    driven = tmp_path / "driven"
    cli("create-project", "baremetal", archive, driven, "-o", "board=mps2_an386")
    cli("build", driven)
    expected = _utvm_run_outputs(driven, [to_tensor(f) for f in files], tmp_path)
    process, path = _pty_session(dut)
    done = []
    try:
        runner = SpecRunner(serial_link(path), timeout=120)
        assert runner.name() == "utvm mps2_an386 (emulated)"
        assert runner.profile()[1] == model_id
        for data, want in zip(files, expected):
            runner.load(data.tobytes())
            done.append(runner.infer(inferences, warmups))
            np.testing.assert_allclose(done[-1].results, dequantized(archive, want), rtol=0, atol=DECIMALS)
        if repeat_first:
            runner.load(files[0].tobytes())
            again = runner.infer(inferences, warmups)
        runner.link.close()
    finally:
        code, err = _stop(process)
    assert code == 130, err
    assert "-icount shift=0: figures are instruction counts" in err
    return (done, again) if repeat_first else done


def test_an_mps2_an386_dut_on_a_pty_matches_utvm_run(qemu_tools, kws_like, tmp_path):
    rng = np.random.default_rng(6)
    files = [random_file(rng, np.int8, 490) for _ in range(3)]
    done, again = _runner_matches_utvm_run(tmp_path, kws_like, "kws01", files, lambda f: f.reshape(1, 490),
                                           repeat_first=True)
    # The device's clock under -icount: the same work takes the same instructions every time (a
    # lap is whole microseconds, so two readings of the same span may differ by one).
    assert all(d.elapsed_us > 0 for d in done)
    assert abs(again.elapsed_us - done[0].elapsed_us) <= 1, (again.lap_us, done[0].lap_us)


@pytest.mark.slow
def test_the_mlperf_tiny_kws_model_on_ten_inputs_matches_utvm_run(qemu_tools, tmp_path_factory, tmp_path):
    path = SHARED_MODELS / "kws_dscnn_int8.tflite"
    if not path.is_file():
        pytest.skip(f"reference model {path.name} not found in {SHARED_MODELS}")
    from utvm.model_library import compile as compile_model

    archive = compile_model(path, tmp_path / "kws.tar", target={"kind": "c", "mcpu": "cortex-m4"},
                            preserve_inputs=True)
    rng = np.random.default_rng(7)
    files = [random_file(rng, np.int8, 490) for _ in range(10)]
    done = _runner_matches_utvm_run(tmp_path, archive, "kws01", files, lambda f: f.reshape(1, 49, 10, 1),
                                    warmups=0, inferences=1)
    assert all(d.elapsed_us > 1000 for d in done)


@pytest.mark.slow
def test_the_mlperf_tiny_ic_model_converts_pixels_and_matches_utvm_run(qemu_tools, tmp_path):
    path = SHARED_MODELS / "ic_resnet8_int8.tflite"
    if not path.is_file():
        pytest.skip(f"reference model {path.name} not found in {SHARED_MODELS}")
    from utvm.model_library import compile as compile_model

    archive = compile_model(path, tmp_path / "ic.tar", target={"kind": "c", "mcpu": "cortex-m4"},
                            preserve_inputs=True)
    rng = np.random.default_rng(8)
    files = [random_file(rng, np.uint8, 32 * 32 * 3) for _ in range(2)]
    # The runner sends uint8 pixels; the model takes int8: pixel - 128.
    _runner_matches_utvm_run(tmp_path, archive, "ic01", files,
                             lambda f: (f.astype(np.int16) - 128).astype(np.int8).reshape(1, 32, 32, 3),
                             warmups=0, inferences=1)


def _descendant_running(ancestor: int, program: str) -> int:
    """The pid of a process running `program` below `ancestor` (which we started)."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv0 = f.read().split(b"\0")[0].decode()
        except OSError:
            continue
        if argv0 != program:
            continue
        pid = int(entry)
        while pid > 1:
            with open(f"/proc/{pid}/stat") as f:
                pid = int(f.read().rsplit(")", 1)[1].split()[1])
            if pid == ancestor:
                return int(entry)
    raise AssertionError(f"no {program} below process {ancestor}")


def test_utvm_pty_says_when_the_device_dies_and_exits_1(host_kws):
    process, path = _pty_session(host_kws)
    try:
        os.kill(_descendant_running(process.pid, str(host_kws / "build/model_mlperftiny")), signal.SIGKILL)
        _, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            _stop(process)
    assert process.returncode == 1, err
    assert "error: the device process's link ended" in err and "killed by SIGKILL" in err, err
