"""The MLPerf Tiny models of ../shared/models on the emulated Cortex-M boards (the MPS2 images and
the STM32F405 netduinoplus2), through the `utvm` command line as a user runs it:

    utvm create-project baremetal MODEL proj -o board=mps2_an386
    utvm build proj
    utvm run proj --input 0=x.npy --output out.npz
    utvm run proj --benchmark --profile --validate

Outputs are compared with the TFLite interpreter (ai-edge-litert): int8 within 1 per element, float
within 1e-4 relative to the output's magnitude. Under QEMU -icount the device clock counts
instructions, so benchmark and profile figures must be instruction counts with the emulator
caveat, never times presented as a board's. Also: a model too large for a board is refused at
create-project with both numbers, and the build reports the runtime's flash without the model.
"""

from __future__ import annotations

import json
import re
import subprocess

import numpy as np
import pytest
from conftest import SHARED_MODELS, require_tool
from host_driven_helpers import run_cli
from tflite_reference import tflite_reference
from utvm.boards import get_board
from utvm.model_library import load

pytestmark = pytest.mark.timeout(600)

MODELS = {
    "kws": "kws_dscnn_int8.tflite",
    "ad_int8": "ad01_int8.tflite",
    "ad_fp32": "ad01_fp32.tflite",
    "ic_resnet8": "ic_resnet8_int8.tflite",
}
# Every model on the Cortex-M4F board; the M3 (no FPU, soft float) and the M7 run the three the
# issue names. ResNet-8 (286 M instructions a run) runs once, on the M4F. The STM32F405
# (netduinoplus2, the emulated twin of the STM32F4 Nucleo boards: their USART and clock drivers)
# runs the two int8 models.
CASES = [(model, "mps2_an386") for model in MODELS] + [
    (model, board) for board in ("mps2_an385", "mps2_an500") for model in ("kws", "ad_int8", "ad_fp32")
] + [(model, "netduinoplus2") for model in ("kws", "ad_int8")]
RUNTIME_GOAL_BYTES = 8 * 1024
SEED = 7

_ARCHIVES: dict = {}


@pytest.fixture(scope="session")
def toolchain():
    for tool in ("arm-none-eabi-gcc", "make", "qemu-system-arm"):
        require_tool(tool)


def _model_path(key: str):
    path = SHARED_MODELS / MODELS[key]
    if not path.is_file():
        pytest.skip(f"reference model {path.name} not found in {SHARED_MODELS} (../shared/models is absent)")
    return path


@pytest.fixture(scope="session")
def board_archive(tmp_path_factory):
    """archive(model key, board): the model compiled for the board's own target, once a session."""
    from utvm.model_library import compile as compile_model

    def archive(key: str, board: str):
        target = get_board(board).target
        cache_key = (key, json.dumps(target, sort_keys=True))
        if cache_key not in _ARCHIVES:
            workdir = tmp_path_factory.mktemp(f"{key}-{target.get('mcpu', 'c')}")
            _ARCHIVES[cache_key] = compile_model(_model_path(key), workdir / f"{key}.tar", target=target)
        return _ARCHIVES[cache_key]

    return archive


def seeded_input(spec: dict) -> np.ndarray:
    rng = np.random.default_rng(SEED)
    dtype = np.dtype(spec["dtype"])
    if dtype.kind == "f":
        return rng.standard_normal(spec["shape"]).astype(dtype)
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max, spec["shape"], dtype=dtype, endpoint=True)


def cli(*args, expect_ok: bool = True) -> subprocess.CompletedProcess:
    result = run_cli(*args)
    if expect_ok:
        command = " ".join(map(str, args))
        assert result.returncode == 0, f"utvm {command} failed:\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="module", params=CASES, ids=[f"{m}-{b}" for m, b in CASES])
def case(request, toolchain, board_archive, tmp_path_factory):
    """One model on one board: created and built with the CLI, its input saved, the build's output kept."""
    key, board = request.param
    model_path = _model_path(key)
    archive = board_archive(key, board)
    workdir = tmp_path_factory.mktemp(f"{key}-{board}")
    project = workdir / "proj"
    cli("create-project", "baremetal", archive, project, "-o", f"board={board}")
    built = cli("build", project)
    library = load(archive)
    inputs = [seeded_input(spec) for spec in library.inputs]
    input_args = []
    for index, array in enumerate(inputs):
        np.save(workdir / f"input{index}.npy", array)
        input_args += ["--input", f"{index}={workdir / f'input{index}.npy'}"]
    return {
        "key": key, "board": board, "model": model_path, "library": library, "project": project,
        "dir": workdir, "inputs": inputs, "build_log": built.stdout + built.stderr,
        "input_args": input_args,
    }  # fmt: skip


def test_outputs_match_the_tflite_interpreter(case):
    out = case["dir"] / "out.npz"
    cli("run", case["project"], *case["input_args"], "--output", out)
    expected = tflite_reference(case["model"], case["inputs"])
    names = [o["name"] for o in case["library"].outputs]
    with np.load(out) as saved:
        assert sorted(saved.files) == sorted(names)
        for name, want in zip(names, expected):
            got = saved[name]
            assert got.dtype == want.dtype and got.shape == want.shape, name
            if got.dtype.kind in "iu":
                worst = int(np.abs(got.astype(np.int64) - want.astype(np.int64)).max())
                assert worst <= 1, f"{name}: differs from TFLite by {worst}"
            else:
                scale = float(np.abs(want).max())
                np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * scale, err_msg=name)


def test_a_model_file_is_compiled_by_create_project(toolchain, tmp_path):
    """The issue's command as written: MODEL is the .tflite file itself."""
    model = _model_path("kws")
    project = tmp_path / "proj"
    cli("create-project", "baremetal", model, project, "-o", "board=mps2_an386")
    # Compiled for the board's CPU, not for generic C.
    assert load(project / "model.tar").metadata["target"].get("mcpu") == "cortex-m4"
    cli("build", project)
    array = seeded_input(load(project / "model.tar").inputs[0])
    np.save(tmp_path / "x.npy", array)
    cli("run", project, "--input", f"0={tmp_path / 'x.npy'}", "--output", tmp_path / "out.npz")
    [want] = tflite_reference(model, [array])
    with np.load(tmp_path / "out.npz") as saved:
        [got] = [saved[name] for name in saved.files]
    assert got.shape == want.shape and np.abs(got.astype(int) - want.astype(int)).max() <= 1


def _count(text: str) -> int:
    return int(text.replace(",", ""))


def test_benchmark_profile_and_validate_report_instruction_counts(case):
    result = cli("run", case["project"], *case["input_args"], "--benchmark", "--profile", "--validate",
                 "--number", "1", "--repeat", "2", "--json")
    report, human = json.loads(result.stdout), result.stderr
    # The emulator caveat, where every timing is shown.
    assert re.search(rf"note: {case['board']} runs under qemu-system-arm -icount shift=0: figures are "
                     r"instruction counts, not cycles or times of a real board", human), human
    # The whole run, the benchmark and the profile in instructions (1 ns of -icount time each), the
    # same numbers the device's timer gave in the JSON, and no millisecond figure beside them.
    ran = re.search(r"^ran in ([\d,]+) instructions$", human, re.M)
    assert ran and _count(ran.group(1)) == round(report["run_seconds"] * 1e9), human
    bench = re.search(r"^benchmark: instructions per run: mean ([\d,]+), median ([\d,]+), .*\(2 x 1 calls\)$",
                      human, re.M)
    assert bench, human
    assert _count(bench.group(2)) == round(report["benchmark"]["median"] * 1e9)
    kernels = [k["name"] for k in case["library"].kernels]
    rows = re.findall(r"^\s+(\d+)  (\S+)\s+([\d,]+)\s+[\d.]+%$", human, re.M)
    assert [name for _, name, _ in rows] == kernels, human
    counts = [_count(c) for _, _, c in rows]
    assert all(c > 0 for c in counts)
    for row, count in zip(report["profile"]["rows"], counts):
        assert count == round(row["mean"] * 1e9)
    timing_lines = [ln for ln in human.splitlines() if ln.startswith(("ran in", "benchmark:", "kernels sum"))]
    assert timing_lines and not any(" ms" in line for line in timing_lines), timing_lines
    # Validation over the UART: every intermediate tensor read back and checked against the host.
    validation = report["validation"]
    assert validation["passed"] is True and validation["first_failure"] is None, validation["verdict"]
    assert len(validation["checks"]) >= len(kernels)
    assert "validation: PASS" in human


def test_build_reports_the_elf_sections_and_the_parts(case):
    sizes = json.loads((case["project"] / "build" / "sizes.json").read_text())
    log = case["build_log"]
    sections = f".text {sizes['text']} B, .data {sizes['data']} B, .bss {sizes['bss']} B"
    assert f"build/firmware.elf: {sections}" in log
    parts = sizes["parts"]
    # The model's constants are in flash, as big as the plan says (plus alignment).
    constants = case["library"].metadata["memory"]["constant_bytes"]
    assert constants <= parts["model constants"]["flash"] < constants + 4096
    assert parts["model arena"]["ram"] >= case["library"].metadata["memory"]["arena_bytes"]
    # Every byte of flash is in a part, but for the padding between sections.
    accounted = sum(p["flash"] for p in parts.values())
    assert sizes["flash_bytes"] - 256 <= accounted <= sizes["flash_bytes"]
    assert f"flash by part: runtime {parts['runtime']['flash']} B" in log


def _object_sizes(paths) -> int:
    """.text + .data of object files, by the toolchain's own `size`."""
    out = subprocess.run(["arm-none-eabi-size", *map(str, paths)], capture_output=True, text=True, check=True)
    return sum(int(line.split()[0]) + int(line.split()[1]) for line in out.stdout.splitlines()[1:])


def test_build_reports_the_runtime_flash_without_the_model_within_8_kib(case):
    """On Cortex-M3 (mps2_an385) with -Os this is the issue's figure; the other cores are held to it too."""
    cpu = get_board(case["board"]).cpu
    line = re.search(rf"runtime without the model \({cpu}, -Os\): (\d+) B of flash for the runtime, "
                     r"(\d+) B with the platform layer, the app and the C library code they use "
                     r"\(within the goal of 8192 B\)", case["build_log"])
    assert line, case["build_log"]
    runtime, no_model = int(line.group(1)), int(line.group(2))
    sizes = json.loads((case["project"] / "build" / "sizes.json").read_text())
    assert (sizes["runtime_flash_bytes"], sizes["no_model_flash_bytes"]) == (runtime, no_model)
    assert sizes["cpu"] == cpu and sizes["cflags"] == "-Os"
    # What the link kept of the runtime's objects: at most what they hold, and most of it.
    compiled = _object_sizes(sorted((case["project"] / "build" / "runtime" / "src").glob("*.o")))
    assert compiled / 2 < runtime <= compiled
    assert runtime < no_model <= RUNTIME_GOAL_BYTES


# ---- a model too large for the board -------------------------------------------------------------


def _too_big_onnx(path, memory: str):
    """A float32 ONNX model that needs more than 4 MiB of flash (two dense layers with 4.25 MiB of
    weights) or of RAM (a 1.1 M-element activation in and out of a Relu, about 8.4 MiB of arena)."""
    onnx = pytest.importorskip("onnx", reason="onnx not installed")
    from onnx import TensorProto, helper, numpy_helper

    if memory == "flash":
        width, rng = 256, np.random.default_rng(0)
        weights = [numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name)
                   for name, shape in (("fc1_weight", (width, 4352)), ("fc2_weight", (4352, 16)))]
        nodes = [helper.make_node("MatMul", ["x", "fc1_weight"], ["h"]),
                 helper.make_node("Relu", ["h"], ["r"]),
                 helper.make_node("MatMul", ["r", "fc2_weight"], ["y"])]
        out_shape = [1, 16]
    else:
        width, weights, out_shape = 1_100_000, [], [1, 1_100_000]
        nodes = [helper.make_node("Relu", ["x"], ["y"])]
    graph = helper.make_graph(nodes, f"too_big_{memory}",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, width])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)], weights)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


TOO_BIG = {
    "flash": r"needs [\d.]+ MiB \((\d+) bytes\) of flash, the board has 4 MiB \(4194304 bytes\); "
             r"largest: constant \S+ \(read by \w+\) 4\.\d MiB",
    "RAM": r"needs [\d.]+ MiB \((\d+) bytes\) of RAM, the board has 4 MiB \(4194304 bytes\); "
           r"largest: arena [\d.]+ MiB",
}


@pytest.mark.parametrize("memory", sorted(TOO_BIG))
def test_a_model_too_large_for_the_board_is_refused_at_create_project(memory, tmp_path):
    model = _too_big_onnx(tmp_path / "too_big.onnx", memory)
    project = tmp_path / "proj"
    result = cli("create-project", "baremetal", model, project, "-o", "board=mps2_an386", expect_ok=False)
    assert result.returncode == 2, "a model that does not fit is a usage error, as it is locally"
    assert "the model does not fit mps2_an386" in result.stderr, result.stderr
    assert result.stderr.count("hint:") == 1, result.stderr
    found = re.search(TOO_BIG[memory], result.stderr)
    assert found and int(found.group(1)) > 4194304, result.stderr
    assert not project.exists()
