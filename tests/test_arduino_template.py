"""The Arduino template without a simulator run (issue 12): what create-project refuses (before
anything is written, with both numbers), the sketch it writes (a folder whose every include resolves
with no include path, whose C is warnings-clean with avr-gcc's 16-bit int and with arm-none-eabi-gcc
for each Arm Arduino board's CPU), how a physical board is flashed, and model_library's flash
constants for AVR targets. The runs under simavr are in test_arduino_simavr.py.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO_ROOT, require_tool, shared_model_path
from host_driven_helpers import run_cli
from model_builders import make_small_tflite
from utvm.boards import get_board
from utvm.model_library import load

sys.path[:0] = [str(REPO_ROOT), str(REPO_ROOT / "templates" / "arduino")]
from utvm_arduino import memory, runners  # noqa: E402
from utvm_arduino.simavr import SimavrError, SimavrProcess  # noqa: E402

from project_api import flash_runners  # noqa: E402

pytestmark = pytest.mark.timeout(600)

ARM_BOARDS = ["arduino_nano33ble", "arduino_due", "arduino_portenta_h7", "arduino_rpipico"]
_INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.M)
_ARCHIVES: dict = {}


def compiled(tmp_path_factory, target: str, **model) -> Path:
    """make_small_tflite(**model) compiled for `target` (once a session)."""
    key = (target, tuple(sorted(model.items())))
    if key not in _ARCHIVES:
        from utvm.model_library import compile as compile_model

        workdir = tmp_path_factory.mktemp("arduino-model")
        tflite = make_small_tflite(workdir / "m.tflite", **model)
        # Plain C without the int8 kernel library (its default there): TVM's C, as for AVR, so
        # the two archives of a model differ only in where their constants live.
        options = {"target": {"kind": "c", "mcpu": target}} if target != "c" else {"target": "c",
                                                                                  "kernel_library": False}
        _ARCHIVES[key] = compile_model(tflite, workdir / "m.tar", **options)
    return _ARCHIVES[key]


def create(archive, project, board, *options):
    result = run_cli("create-project", "arduino", archive, project, "-o", f"board={board}", *options)
    assert result.returncode == 0, result.stdout + result.stderr
    return project


def sketch_sources(project: Path, suffixes=(".c",)) -> list:
    return sorted(p for p in (project / "src").rglob("*") if p.suffix in suffixes)


def assert_compiles(compiler: str, flags: list, sources, scratch: Path, includes=()) -> None:
    """Each source compiles warnings-clean (C, -Wall -Wextra -Werror) with these flags."""
    for source in sources:
        command = [compiler, *flags, "-Wall", "-Wextra", "-Werror", *[f"-I{d}" for d in includes], "-c",
                   str(source), "-o", str(scratch / "x.o")]
        result = subprocess.run(command, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, f"{source}:\n{result.stderr}"


# ---- what create-project refuses -----------------------------------------------------------------


def test_no_mlperf_tiny_model_fits_an_uno(tmp_path):
    model = shared_model_path("kws_dscnn_int8.tflite")
    project = tmp_path / "p"
    result = run_cli("create-project", "arduino", model, project, "-o", "board=arduino_uno")
    assert result.returncode == 2, result.stdout + result.stderr
    # Both numbers: the SRAM the sketch needs and the SRAM the Uno has.
    need = re.search(r"needs [\d.]+ KiB \((\d+) bytes\) of SRAM, the board has 2 KiB \(2048 bytes\)",
                     result.stderr)
    assert need and int(need.group(1)) > 16 * 1024, result.stderr  # the arena alone is 16 KiB
    assert "largest: arena" in result.stderr
    assert not project.exists()


def test_constants_an_archive_keeps_in_sram_are_counted_there(tmp_path_factory, tmp_path):
    # Compiled for plain C, the 20 KiB of weights are `const` arrays: SRAM on an AVR.
    archive = compiled(tmp_path_factory, "c", in_dim=128, out_dim=160)
    project = tmp_path / "p"
    result = run_cli("create-project", "arduino", archive, project, "-o", "board=arduino_mega2560")
    assert result.returncode == 2
    assert re.search(r"needs [\d.]+ KiB \(\d+ bytes\) of SRAM, the board has 8 KiB \(8192 bytes\); largest: "
                     r"constant const_0 \(read by qnn_dense\) 20 KiB", result.stderr), result.stderr
    assert "--target 'c -mcpu=atmega2560'" in result.stderr  # the way to keep them in flash
    assert not project.exists()


def test_a_folder_name_arduino_cannot_use_is_refused(tmp_path_factory, tmp_path):
    archive = compiled(tmp_path_factory, "atmega2560")
    project = tmp_path / "my model"
    result = run_cli("create-project", "arduino", archive, project, "-o", "board=arduino_mega2560")
    assert result.returncode == 2 and "cannot name an Arduino sketch" in result.stderr
    assert not project.exists()


def test_the_fit_estimate_counts_what_avr_keeps_in_sram(tmp_path_factory):
    from utvm.project_api.mlf import read_model_archive

    flash = read_model_archive(compiled(tmp_path_factory, "atmega2560", in_dim=128, out_dim=160))
    plain = read_model_archive(compiled(tmp_path_factory, "c", in_dim=128, out_dim=160))
    board = get_board("arduino_mega2560").to_dict()
    assert memory.constants_in_flash(flash) and not memory.constants_in_flash(plain)
    in_flash, in_sram = memory.footprint(board, flash, 512), memory.footprint(board, plain, 512)
    constants = flash.metadata["memory"]["constant_bytes"]
    assert in_sram.ram_bytes - in_flash.ram_bytes == constants
    assert in_flash.ram["stack reserve"] == 512 and in_flash.ram["model tables"] > 100
    # The runtime's packet buffers follow the board's SRAM: 64 B packets on a 2 KiB Uno.
    assert memory.max_packet(get_board("arduino_uno").to_dict()) == 64 and memory.max_packet(board) == 256


# ---- the sketch ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mega_sketch(tmp_path_factory):
    archive = compiled(tmp_path_factory, "atmega2560")
    return create(archive, tmp_path_factory.mktemp("sketch") / "demo", "arduino_mega2560")


def test_the_sketch_is_a_folder_whose_includes_resolve_without_an_include_path(mega_sketch):
    assert (mega_sketch / "demo.ino").is_file()
    assert '#include "src/utvm/port/utvm_arduino.h"' in (mega_sketch / "demo.ino").read_text()
    files = sketch_sources(mega_sketch, (".c", ".h", ".cpp"))
    assert len(files) > 20
    for path in files:
        for name in _INCLUDE.findall(path.read_text()):
            assert (path.parent / name).is_file(), f"{path}: #include \"{name}\" does not resolve"
    config = (mega_sketch / "src/utvm/include/utvm/config.h").read_text()
    assert '#include "../../port/utvm_port_config.h"' in config
    port = (mega_sketch / "src/utvm/port/utvm_port_config.h").read_text()
    assert '#define UTVM_ARDUINO_BOARD "arduino_mega2560"' in port and "#define UTVM_MAX_PACKET 256" in port
    assert "memcpy_P" in port  # READ of a constant in flash


@pytest.mark.parametrize("mcu", ["atmega2560", "atmega328p"])
def test_the_sketch_c_is_warnings_clean_with_avr_gcc(mega_sketch, tmp_path, mcu):
    # No include path: every include of the sketch is relative to the file.
    assert_compiles(require_tool("avr-gcc"), [f"-mmcu={mcu}", "-Os", "-std=gnu11"],
                    sketch_sources(mega_sketch), tmp_path)


@pytest.mark.parametrize("board", ARM_BOARDS)
def test_arm_boards_get_a_sketch_whose_c_builds_for_their_cpu(tmp_path_factory, tmp_path, board):
    """No Arm Arduino core can be had here: the sketch is generated, and its portable C (runtime and
    model, compiled for the board's target) built with arm-none-eabi-gcc for the board's CPU."""
    gcc = require_tool("arm-none-eabi-gcc")
    record = get_board(board)
    project = create(compiled(tmp_path_factory, record.target["mcpu"]), tmp_path / "p", board)
    readme = (project / "README.md").read_text()
    assert f"arduino-cli compile --fqbn {record.arduino_fqbn} --build-path build ." in readme
    assert not (project / "src/utvm/model" / "utvm_flash.h").exists()
    flags = [f"-mcpu={record.cpu}", "-mthumb", "-mfloat-abi=" + (record.float_abi or "soft")]
    if record.fpu:
        flags.append(f"-mfpu={record.fpu}")
    assert_compiles(gcc, [*flags, "-Os", "-std=gnu11"], sketch_sources(project), tmp_path)


# ---- physical boards -----------------------------------------------------------------------------


def test_avrdude_writes_through_the_bootloader_of_the_record(tmp_path):
    require_tool("avrdude")
    board = get_board("arduino_mega2560").to_dict()
    image = tmp_path / "build" / "p.ino.elf"
    config = runners.physical_config(board, image, None)
    bound = runners.bound_runners("/dev/ttyACM0", board["arduino_fqbn"])
    runner = flash_runners.select_runner(board, config, "avrdude", implemented=bound)
    command = runner.command()
    assert command[1:] == ["-p", "m2560", "-c", "wiring", "-P", "/dev/ttyACM0", "-b", "115200", "-D",
                           "-U", f"flash:w:{tmp_path / 'build' / 'p.ino.hex'}:i"]
    cli = bound["arduino-cli"](config)
    assert cli.args == {} and cli.fqbn == "arduino:avr:mega:cpu=atmega2560"


def test_flashing_a_board_that_is_not_plugged_in_says_which_ids_were_looked_for(mega_sketch, tmp_path):
    build = mega_sketch / "build"
    build.mkdir(exist_ok=True)
    (build / "demo.ino.elf").write_bytes(b"\x7fELF")  # flash checks the port before the image
    result = run_cli("flash", mega_sketch, "-o", "device=board")
    assert result.returncode != 0
    assert "no serial port of arduino_mega2560 found (USB id 2341:0042, 2341:0010)" in result.stderr, \
        result.stderr


# ---- model_library: constants in flash for AVR targets ------------------------------------------


def test_simavr_refuses_an_image_that_is_not_for_avr(tmp_path):
    # libsimavr's loader crashes on another architecture's ELF; the run names the image instead.
    host_elf = tmp_path / "p.ino.elf"
    host_elf.write_bytes(Path(sys.executable).resolve().read_bytes()[:4096])
    with pytest.raises(SimavrError, match="p.ino.elf is not an AVR image"):
        SimavrProcess(host_elf, "atmega2560", 16_000_000, 115200, tmp_path / "build").launch()
    assert not (tmp_path / "build").exists()  # refused before the bridge was built or started


def test_an_avr_archive_keeps_its_constants_in_flash(tmp_path_factory, tmp_path):
    archive = load(compiled(tmp_path_factory, "atmega2560", quantized=False))
    files = {n: archive.read(n).decode() for n in archive.file_names() if n.endswith((".c", ".h"))}
    name = archive.name
    assert "#define UTVM_CONST_SPACE __flash" in files["codegen/host/include/utvm_flash.h"]
    constants = files[f"codegen/host/src/{name}_constants.c"]
    assert len(re.findall(r"UTVM_CONST_ALIGNED UTVM_CONST_STORAGE = \{", constants)) == 2
    kernels = files[f"codegen/host/src/{name}_kernels.c"]
    assert re.search(r"const UTVM_CONST_SPACE float\* param_0", kernels)
    plan = files[f"codegen/host/src/{name}_plan.c"]
    assert f"(const UTVM_CONST_SPACE float *)utvm_{name}_c0" in plan
    # For any other compiler the sources are plain C: build them for this machine.
    root = archive.extract(tmp_path / "mlf")
    assert_compiles(require_tool("cc"), ["-std=c99"], [root / s for s in archive.source_files()], tmp_path,
                    [root / "codegen/host/include", REPO_ROOT / "templates/runtime/include"])
    # Other targets are left alone.
    assert "codegen/host/include/utvm_flash.h" not in load(compiled(tmp_path_factory, "c")).file_names()


def test_a_kernel_called_with_and_without_constants_gets_a_flash_copy(tmp_path):
    """One PrimFunc called once with a constant and once with an arena tensor at the same place."""
    from utvm.model_library import c_sources, flash_constants
    from utvm.model_library.plan import ExecutionPlan, PlanKernel, PlanTensor

    def tensor(i, storage, **kw):
        return PlanTensor(id=i, name=f"t{i}", shape=(4,), dtype="int8", storage=storage, root=i, **kw)

    tensors = [tensor(0, "arena"), tensor(1, "arena", offset=16), tensor(2, "arena", offset=32),
               tensor(3, "const", const_data=np.arange(4, dtype=np.int8), symbol="utvm_m_c0")]
    kernels = [PlanKernel(0, "add", "add", [0, 3, 1], [1], "utvm_m_add"),
               PlanKernel(1, "add1", "add", [1, 0, 2], [2], "utvm_m_add")]
    plan = ExecutionPlan(tensors=tensors, kernels=kernels, inputs=[0], outputs=[2])
    body = ("TVM_DLL int32_t utvm_m_add(int8_t* a, int8_t* b, int8_t* c) {\n"
            "  for (int32_t i = 0; i < 4; ++i) {\n    c[i] = (int8_t)(a[i] + b[i]);\n  }\n  return 0;\n}\n")
    extern_c = '#ifdef __cplusplus\nextern "C"\n#endif\n'
    kernels_c = ('#include "utvm_tvm_support.h"\n#include "m_kernels.h"\n#include <math.h>\n'
                 f"{extern_c}TVM_DLL int32_t utvm_m_add(int8_t* a, int8_t* b, int8_t* c);\n"
                 f"{extern_c}TVM_DLL float expf(float);\n{extern_c}{body}")
    files = {
        "codegen/host/src/m_kernels.c": kernels_c.encode(),
        "codegen/host/include/m_kernels.h": c_sources.kernels_header(
            "m", "m_kernels.h", ["int32_t utvm_m_add(int8_t* a, int8_t* b, int8_t* c);"]).encode(),
        "codegen/host/src/m_constants.c": c_sources.constants_source("m", plan, 16).encode(),
        "codegen/host/src/m_plan.c": c_sources.plan_source("m", "utvm_m", "m_kernels.h", plan).encode(),
    }
    out = {k: v.decode() for k, v in flash_constants.place_constants_in_flash(files, "m", plan).items()}
    kernels_out = out["codegen/host/src/m_kernels.c"]
    flash_b = "const UTVM_CONST_SPACE int8_t* b"
    assert f"TVM_DLL int32_t utvm_m_add(int8_t* a, {flash_b}, int8_t* c) {{" in kernels_out
    assert "TVM_DLL int32_t utvm_m_add_v1(int8_t* a, int8_t* b, int8_t* c) {" in kernels_out
    assert "expf" not in kernels_out  # avr-libc's expf is a macro; <math.h> declares it
    plan_out = out["codegen/host/src/m_plan.c"]
    assert "return utvm_m_add((void *)(arena + 0u), (const UTVM_CONST_SPACE int8_t *)utvm_m_c0, " in plan_out
    assert "return utvm_m_add_v1((void *)(arena + 16u), (void *)(arena + 0u), " in plan_out
    header = out["codegen/host/include/m_kernels.h"]
    assert "int32_t utvm_m_add_v1(int8_t* a, int8_t* b, int8_t* c);" in header
    # All of it compiles warnings-clean for an AVR.
    root = tmp_path / "mlf"
    for name, text in out.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    (root / "codegen/host/include/utvm_tvm_support.h").write_text(c_sources.support_header()[1])
    (root / "codegen/host/include/utvm_model_config.h").write_text(c_sources.config_header(
        "m", "0", {"arena_bytes": 48, "workspace_bytes": 0, "constant_bytes": 4}, plan, 16, 16))
    assert_compiles(require_tool("avr-gcc"), ["-mmcu=atmega2560", "-Os", "-std=gnu11"],
                    sorted((root / "codegen/host/src").glob("*.c")), tmp_path,
                    [root / "codegen/host/include", REPO_ROOT / "templates/runtime/include"])
