"""Zephyr template: Zephyr 4.x applications built with west (generated and checked here, not built in CI).

Boards come from utvm's board database (platform "zephyr"), which maps utvm's names to Zephyr's board
targets (nucleo_f746zg, stm32f746g_disco, nucleo_l4r5zi, nrf5340dk/nrf5340/cpuapp, mimxrt1050_evk,
qemu_cortex_m3, mps2/an385). The generated project is a Zephyr application: CMakeLists.txt with
find_package(Zephyr), prj.conf, the board's devicetree overlay (and Kconfig fragment) in boards/, a
west manifest, and in src/ the runtime's port onto Zephyr's APIs (UART interrupts into a ring
buffer, the kernel's cycle counter, sys_reboot); the runtime and the model's C are application
sources.

Project types (option ``project_type``): ``host_driven`` (the runtime serves the host over the
UART) and ``aot_standalone`` (the image runs the model once on baked-in inputs and prints a report).

Steps: ``build`` runs `west build -b BOARD` against the Zephyr tree of ``zephyr_base`` (or
$ZEPHYR_BASE) with the Zephyr SDK or the GNU Arm Embedded toolchain, and reports flash and RAM use
from the ELF; a missing tree, SDK or tool is one clear error naming what to install and the option
to set. ``flash`` runs `west flash` with the board's runner (nothing to flash on QEMU boards).
``open_transport`` opens the board's serial port (found by USB VID:PID and ``serial_number``), or
runs QEMU with the built image and its UART on a socket, stopped on close and on every error path.

Generating needs only Python's standard library. No Zephyr tree can be had on utvm's CI machines:
projects are generated and checked there (devicetree, Kconfig, west manifest, portable C) but not
built; see docs/zephyr.md for what a user needs to build them.
"""

import json
import os
import pathlib
import shlex
import shutil
import subprocess
import sys

HERE = pathlib.Path(__file__).resolve().parent
# The floor: a generated project carries its copy beside this file; the template uses utvm's.
sys.path.insert(0, str(HERE if (HERE / "project_api").is_dir() else HERE.parents[1]))
sys.path.insert(0, str(HERE))  # utvm_zephyr, beside this file in the template and in projects

from utvm_zephyr import app_files, environment, zephyr_boards  # noqa: E402

from project_api import (  # noqa: E402
    board_records,
    flash_runners,
    npy,
    template_support,
    uart_firmware,  # noqa: E402
)
from project_api import standalone_report as standalone  # noqa: E402
from project_api.elf_sizes import read_elf_sizes  # noqa: E402
from project_api.errors import BuildError  # noqa: E402
from project_api.mlf import read_model_archive  # noqa: E402
from project_api.options import ProjectOption  # noqa: E402
from project_api.server import GeneratedProject, main  # noqa: E402
from project_api.uart_firmware import UartFirmwareHandler  # noqa: E402

PLATFORM_NAME = "zephyr"
ARCHIVE = "model.tar"
BUILD_DIR = "build"
ELF = "build/zephyr/zephyr.elf"
SIZES_FILE = "build/sizes.json"
STANDALONE_INPUTS_C = "src/standalone_inputs.c"
STANDALONE_INPUTS_NPZ = "standalone_inputs.npz"
RUNTIME_DIR = HERE.parent / "runtime"
# The runtime's own share in the fit check, as in the bare-metal template (its code, buffers and
# state); the main thread's stack and Zephyr's share come on top.
RUNTIME_FLASH_BYTES = 12 * 1024
RUNTIME_RAM_BYTES = 3 * 1024
KERNEL_SHARE = "Zephyr kernel and drivers (estimate)"
DEFAULT_MAIN_STACK_BYTES = 8192
EMULATOR_NOTE = "QEMU timings are not real-board timings"


# ---- flash runners: `west flash -r NAME`, which runs the board's own configuration of the tool -----


class WestRunner(flash_runners.FlashRunner):
    """A Zephyr runner run through `west flash`; `available` asks for the tool it drives."""

    caps = flash_runners.RunnerCaps(serial_number=True, reset=True)
    west = ("west",)
    build_dir = pathlib.Path(BUILD_DIR)

    def command(self):
        cmd = list(self.west) + ["flash", "-d", str(self.build_dir), "-r", self.name]
        if self.config.serial_number:
            cmd += ["--dev-id", self.config.serial_number]
        return cmd


def _west_runner(name, tool, hint):
    return type(f"West_{name}", (WestRunner,), {"name": name, "tool": tool, "install_hint": hint})


WEST_RUNNERS = {r.name: r for r in (
    _west_runner("openocd", "openocd", "Debian/Ubuntu: `sudo apt-get install openocd`"),
    _west_runner("stm32cubeprogrammer", "STM32_Programmer_CLI", "STM32CubeProgrammer from ST"),
    _west_runner("linkserver", "LinkServer", "LinkServer from NXP"),
    _west_runner("pyocd", "pyocd", "`pip install pyocd`"),
    _west_runner("jlink", "JLinkExe", "SEGGER J-Link Software, https://www.segger.com/downloads/jlink/"),
    _west_runner("nrfjprog", "nrfjprog", "nRF Command Line Tools from Nordic Semiconductor"),
    _west_runner("nrfutil", "nrfutil", "nrfutil from Nordic Semiconductor, with its device command"),
)}


def _options_schema():
    common = uart_firmware.firmware_options(HERE, PLATFORM_NAME)
    opt = ProjectOption
    steps = ["generate_project", "build", "flash"]
    return [
        common["board"], common["project_type"], common["input_npz"],
        opt("main_stack_bytes", type="int", default=DEFAULT_MAIN_STACK_BYTES, optional=["generate_project"],
            help="stack of Zephyr's main thread, where the model runs (CONFIG_MAIN_STACK_SIZE)"),
        opt("zephyr_base", type="str", default="", optional=steps,
            help="the zephyr folder of a Zephyr 4.x west workspace (default: $ZEPHYR_BASE)"),
        opt("west_cmd", type="str", default="", optional=steps,
            help="the west command (default: west on PATH, else this Python's `-m west`)"),
        opt("toolchain", type="str", choices=list(environment.TOOLCHAINS), default="zephyr",
            optional=["generate_project", "build"],
            help="zephyr: the Zephyr SDK; gnuarmemb: the GNU Arm Embedded toolchain (arm-none-eabi-gcc)"),
        opt("zephyr_sdk", type="str", default="", optional=["generate_project", "build"],
            help="the Zephyr SDK's folder (default: $ZEPHYR_SDK_INSTALL_DIR or where its installer puts it)"),
        opt("gnuarmemb_path", type="str", default="", optional=["generate_project", "build"],
            help="toolchain=gnuarmemb: the prefix holding bin/arm-none-eabi-gcc (default: the one on PATH)"),
        opt("flash_runner", type="str", choices=sorted(WEST_RUNNERS), optional=["flash"],
            help="west flash runner (default: the first installed of the runners Zephyr's board configures)"),
        common["serial_number"], common["serial_port"], common["qemu_icount"],
        opt("verbose", type="bool", default=False, optional=steps + ["open_transport"],
            help="print each step"),
    ]


def _log(options, text):
    template_support.log_step(options, PLATFORM_NAME, text)


# ---- generate_project --------------------------------------------------------------------------


def _zephyr_record(board, facts):
    """The board record as the Zephyr build runs it: the core clock Zephyr's devicetree sets up,
    where that differs from the record's, so that cycle counts on the host are the board's."""
    clock = facts.core_clock_hz
    if clock is None or clock == board.get("clock_hz"):
        return board
    note = (f"Zephyr's devicetree for {facts.target} clocks the core at {clock / 1e6:g} MHz "
            f"(the chip's rating: {board['clock_hz'] / 1e6:g} MHz).")
    return dict(board, clock_hz=clock, notes=f"{board.get('notes') or ''} {note}".strip())


def _check_fit(board, archive, main_stack):
    """The fit check with Zephyr's own share as a stated estimate; prints what was counted."""
    footprint = board_records.footprint_from_metadata(
        archive.metadata, runtime_ram=RUNTIME_RAM_BYTES + main_stack, runtime_flash=RUNTIME_FLASH_BYTES)
    footprint.ram[KERNEL_SHARE] = zephyr_boards.KERNEL_RAM_ESTIMATE_BYTES
    footprint.flash[KERNEL_SHARE] = zephyr_boards.KERNEL_FLASH_ESTIMATE_BYTES
    board_records.check_fit(board, footprint)
    size = board_records.format_bytes
    print(f"{PLATFORM_NAME}: {archive.name} fits {board['name']}: needs {size(footprint.ram_bytes)} "
          f"({footprint.ram_bytes} bytes) of RAM, the board has {size(board['ram_bytes'])} "
          f"({board['ram_bytes']} bytes); {size(footprint.flash_bytes)} ({footprint.flash_bytes} bytes) of "
          f"flash, the board has {size(board['flash_bytes'])} ({board['flash_bytes']} bytes). Counted for "
          f"Zephyr itself, an estimate until `build` measures the image: "
          f"{zephyr_boards.KERNEL_RAM_ESTIMATE_BYTES} bytes of RAM, "
          f"{zephyr_boards.KERNEL_FLASH_ESTIMATE_BYTES} bytes of flash", flush=True)


def _generate(mlf_path, project_dir, options):
    board = board_records.resolve_board(options["board"], PLATFORM_NAME)
    facts = zephyr_boards.zephyr_board(board)
    board = _zephyr_record(board, facts)
    archive = read_model_archive(mlf_path)  # refuses a malformed archive before anything is written
    main_stack = int(options["main_stack_bytes"])
    _check_fit(board, archive, main_stack)
    project_type = options["project_type"]
    standalone_image = project_type == "aot_standalone"
    inputs = standalone.baked_inputs(archive.inputs, options.get("input_npz")) if standalone_image else {}

    project_dir.mkdir(parents=True)
    shutil.copy2(__file__, project_dir / "microtvm_api_server.py")
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(HERE / "utvm_zephyr", project_dir / "utvm_zephyr", ignore=ignore)
    shutil.copy2(mlf_path, project_dir / ARCHIVE)
    archive.extract(project_dir / "model")
    files = template_support.copy_runtime(RUNTIME_DIR, project_dir / "runtime")
    shutil.copy2(RUNTIME_DIR / "runtime_files.json", project_dir / "runtime" / "runtime_files.json")
    src = project_dir / "src"
    src.mkdir()
    for name in ("utvm_zephyr.h", "utvm_zephyr_port.c", f"main_{project_type}.c"):
        shutil.copy2(HERE / "src" / name, src / name)
    if standalone_image:
        npy.write_npz(project_dir / STANDALONE_INPUTS_NPZ, inputs)
        (project_dir / STANDALONE_INPUTS_C).write_text(
            standalone.inputs_c_source([(n, data) for n, (_, _, data) in inputs.items()]), encoding="utf-8")

    sources = sorted(src.glob("*.c"))
    sources += [project_dir / "runtime" / rel for rel in files["sources"]]
    sources += sorted((project_dir / "model" / "codegen" / "host" / "src").glob("*.c"))
    app_files.write_app_files(project_dir, board, facts, project_type, sources, main_stack, archive.name)
    _log(options, f"generated {project_type} Zephyr application for {archive.name} on {facts.target} "
                  f"in {project_dir}")
    return GeneratedProject(board=board, archive=ARCHIVE)


# ---- the generated project ---------------------------------------------------------------------


def _report_sizes(board):
    """Flash and RAM of the built image from its ELF, against the board; also in build/sizes.json."""
    sizes = read_elf_sizes(HERE / ELF)
    record = dict(sizes.to_dict(), flash_bytes=sizes.flash_bytes, ram_bytes=sizes.ram_bytes,
                  board_flash_bytes=board.get("flash_bytes"), board_ram_bytes=board.get("ram_bytes"))
    (HERE / SIZES_FILE).write_text(json.dumps(record, indent=2) + "\n")
    print(f"{PLATFORM_NAME}: {ELF}: text {sizes.text} B, data {sizes.data} B, bss {sizes.bss} B; "
          f"flash {sizes.flash_bytes} of {board.get('flash_bytes')} B, RAM {sizes.ram_bytes} of "
          f"{board.get('ram_bytes')} B (stacks included)", flush=True)
    largest = ", ".join(f"{name} {size} B ({kind})" for name, kind, size in sizes.largest_symbols[:5])
    print(f"{PLATFORM_NAME}: largest: {largest}", flush=True)


class ZephyrHandler(UartFirmwareHandler):
    """The transport, the board and the extensions are the floor's (UartFirmwareHandler): QEMU runs
    the built image on a QEMU board; the aot_standalone image stays up after its report, and QEMU is
    stopped then."""

    platform_name = PLATFORM_NAME
    server_dir = HERE
    elf = ELF
    standalone_inputs_npz = STANDALONE_INPUTS_NPZ
    emulator_note = EMULATOR_NOTE

    options_schema = staticmethod(_options_schema)
    generate = staticmethod(_generate)

    # -- Project API --

    def build(self, options):
        board = self._board()
        env = environment.build_environment(options)
        command = env.west + ["build", "-b", board["zephyr_board"], "-d", BUILD_DIR, "-p", "auto", str(HERE)]
        _log(options, f"Zephyr {'.'.join(map(str, env.zephyr_version))} at {env.zephyr_base}; "
                      + " ".join(f"{k}={shlex.quote(v)}" for k, v in env.env.items()) + " "
                      + " ".join(shlex.quote(c) for c in command))
        result = subprocess.run(command, cwd=HERE, stdin=subprocess.DEVNULL, env=dict(os.environ, **env.env))
        if result.returncode != 0:
            raise BuildError(f"west build exited with code {result.returncode}; its output is above")
        _report_sizes(board)

    def flash(self, options):
        board = self._board()
        elf = self._elf()
        config = flash_runners.RunnerConfig(board=board["name"], image=elf,
                                            serial_number=options.get("serial_number"),
                                            emulator=board.get("emulator"))
        if board["kind"] == "emulated":
            flash_runners.QemuRunner(config).flash()  # checks the image and the emulator
            _log(options, f"{board['name']} is emulated: QEMU loads {ELF} when the transport opens")
            return
        env = environment.flash_environment(options)
        # The runners Zephyr's board.cmake configures, not the record's (those are for other tools).
        runners = {name: {} for name in zephyr_boards.zephyr_board(board).runners}
        runner = flash_runners.select_runner(dict(board, runners=runners), config,
                                             options.get("flash_runner"), implemented=WEST_RUNNERS)
        runner.west, runner.build_dir = tuple(env.west), HERE / BUILD_DIR
        os.environ.update(env.env)  # west flash finds Zephyr's runners through ZEPHYR_BASE
        _log(options, f"flashing with {runner.describe()}")
        runner.flash()

    def resolve_board(self, name):
        board = board_records.resolve_board(name, PLATFORM_NAME)
        return _zephyr_record(board, zephyr_boards.zephyr_board(board))


if __name__ == "__main__":
    main(ZephyrHandler())
