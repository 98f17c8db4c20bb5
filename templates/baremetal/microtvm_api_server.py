"""Bare-metal Cortex-M template: the model and the device runtime on a board with no RTOS.

Boards come from utvm's board database (platform "baremetal"): the emulated Arm MPS2 boards and
the STM32F405 (netduinoplus2) run under qemu-system-arm; a physical board (the STM32F4 Nucleo
boards) is flashed with the runner its record names (OpenOCD or pyOCD) and found on USB by its
VID:PID (and ``serial_number`` when several are plugged in). The record picks the UART and clock
drivers (src/platform); an STM32 image runs from the HSI unless the ``pll`` option is set.

Project types (option ``project_type``):
- ``host_driven`` (default): the runtime serves the host-driven protocol over the UART.
  ``open_transport`` starts QEMU (emulated) or opens the serial port (physical); the
  ``utvm_open_direct_transport`` extension hands a utvm client the serial URL instead.
- ``aot_standalone``: the image runs the model once on inputs baked into it, prints the outputs
  and the timer ticks over the UART and exits (through semihosting under QEMU);
  the ``utvm_run_standalone`` extension runs it and returns the parsed report.
- ``mlperftiny``: the device under test of the MLPerf Tiny runner (``-o mlperf_model=kws01``...),
  speaking the runner's text protocol on the UART over the same runtime and AOT entry point. A
  physical board is driven on its serial port; for an emulated one the ``utvm_open_pty``
  extension starts QEMU and puts its UART behind a pseudo-terminal the runner can open (``utvm
  pty``). The lap times come from the device timer: under QEMU, guest time (instructions).

``generate_project`` resolves the board and checks that the model fits it, then writes a
self-contained project: this server and the floor it stands on (``project_api/``), the
``utvm_baremetal`` helpers, the runtime, the model's C and a copy of the MLF, and a Makefile /
linker script / board header filled in from the board record, which the project record keeps.
Generating needs only Python's standard library; building needs make and arm-none-eabi-gcc.

Timings under QEMU are not real-board timings. With ``qemu_icount`` (the default) the emulated
clock advances one nanosecond per instruction, so a "time" is an instruction count.
"""

import json
import pathlib
import shlex
import shutil
import sys

HERE = pathlib.Path(__file__).resolve().parent
# The floor: a generated project carries its copy beside this file; the template uses utvm's.
sys.path.insert(0, str(HERE if (HERE / "project_api").is_dir() else HERE.parents[1]))
sys.path.insert(0, str(HERE))  # utvm_baremetal, beside this file in the template and in projects

from utvm_baremetal import render, size_report, stm32f4  # noqa: E402

from project_api import (  # noqa: E402
    board_records,
    flash_runners,
    mlperftiny,
    npy,
    template_support,
    uart_firmware,  # noqa: E402
)
from project_api import standalone_report as standalone  # noqa: E402
from project_api.errors import BuildError, UserError  # noqa: E402
from project_api.mlf import read_model_archive  # noqa: E402
from project_api.options import ProjectOption  # noqa: E402
from project_api.server import GeneratedProject, main  # noqa: E402
from project_api.uart_firmware import UartFirmwareHandler  # noqa: E402

PLATFORM_NAME = "baremetal"
ARCHIVE = "model.tar"
PROJECT_TYPES = (*uart_firmware.PROJECT_TYPES, mlperftiny.PROJECT_TYPE)
ELF = "build/firmware.elf"
MAP_FILE = "build/firmware.map"
SIZES_FILE = "build/sizes.json"
STANDALONE_INPUTS_C = "src/app/standalone_inputs.c"
STANDALONE_INPUTS_NPZ = "standalone_inputs.npz"
RUNTIME_DIR = HERE.parent / "runtime"
# The fit check's allowance for everything but the model's constants and arena. Flash: the runtime,
# platform and C library code measure under 7 KiB (-Os, `build` reports it); the rest is room for the
# model's kernel code, only known once compiled. RAM: buffers and state (the stack comes on top).
RUNTIME_FLASH_BYTES = 12 * 1024
RUNTIME_RAM_BYTES = 3 * 1024
# The runtime's deepest call chain with a kernel's locals needs about this much; less is a mistake.
MIN_STACK_BYTES = 1024
EMULATOR_NOTE = "QEMU timings are not real-board timings"


def _options_schema():
    common = uart_firmware.firmware_options(HERE, PLATFORM_NAME, PROJECT_TYPES)
    opt = ProjectOption
    return [
        common["board"], common["project_type"], common["mlperf_model"], common["input_npz"],
        opt("stack_bytes", type="int", default=render.DEFAULT_STACK_BYTES, optional=["generate_project"],
            help="main stack reserved at the top of RAM"),
        opt("pll", type="bool", default=False, optional=["generate_project"],
            help="STM32 boards: run the core from the PLL at the board's clock_hz (default: the 16 MHz "
                 "HSI it boots from)"),
        opt("cflags", type="str", default="", optional=["build"],
            help="extra compiler flags after the defaults (-Os), e.g. -O2 or -DUTVM_MAX_PACKET=2048"),
        opt("flash_runner", type="str", choices=sorted(flash_runners.RUNNERS), optional=["flash"],
            help="flash tool to use (default: the first installed of the board's runners)"),
        common["serial_number"], common["serial_port"], common["qemu_icount"],
        opt("verbose", type="bool", default=False,
            optional=["generate_project", "build", "flash", "open_transport"], help="print each step"),
    ]


def _log(options, text):
    template_support.log_step(options, PLATFORM_NAME, text)


# ---- generate_project --------------------------------------------------------------------------


def _generate(mlf_path, project_dir, options):
    # The record the project keeps says the clock its image runs at (STM32: HSI unless pll).
    board = stm32f4.running_board(board_records.resolve_board(options["board"], PLATFORM_NAME),
                                  bool(options.get("pll")))
    archive = read_model_archive(mlf_path)  # refuses a malformed archive before anything is written
    stack = int(options["stack_bytes"])
    if not MIN_STACK_BYTES <= stack <= (board.get("ram_bytes") or stack) or stack % 8:
        raise UserError(f"stack_bytes={stack}: the main stack must be a multiple of 8 between "
                        f"{MIN_STACK_BYTES} and the board's RAM ({board.get('ram_bytes')} bytes)",
                        hint=f"the default is {render.DEFAULT_STACK_BYTES}")
    project_type = options["project_type"]
    mlperf = None
    input_buffer = 0  # an mlperftiny image's buffer for one of the runner's input files
    if project_type == mlperftiny.PROJECT_TYPE:
        mlperf = mlperftiny.board_config(archive.metadata, options, board)
        input_buffer = mlperftiny.input_file_bytes(options)
    board_records.check_fit(board, board_records.footprint_from_metadata(
        archive.metadata, runtime_ram=RUNTIME_RAM_BYTES + stack + input_buffer,
        runtime_flash=RUNTIME_FLASH_BYTES))
    standalone_image = project_type == "aot_standalone"
    inputs = standalone.baked_inputs(archive.inputs, options.get("input_npz")) if standalone_image else {}
    project_dir.mkdir(parents=True)
    shutil.copy2(__file__, project_dir / "microtvm_api_server.py")
    shutil.copytree(HERE / "utvm_baremetal", project_dir / "utvm_baremetal",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    shutil.copy2(mlf_path, project_dir / ARCHIVE)
    archive.extract(project_dir / "model")

    files = template_support.runtime_files(RUNTIME_DIR)
    runtime_sources = files["sources"]
    app_sources, extra_headers = [], []
    if mlperf is not None:
        runtime_sources = mlperftiny.runtime_sources(files)
        extra_headers = [header for rel in files[f"{mlperftiny.RUNTIME_PART}_includes"]
                         for header in sorted((RUNTIME_DIR / rel).glob("*.h"))]
    if project_type == "aot_standalone":
        npy.write_npz(project_dir / STANDALONE_INPUTS_NPZ, inputs)
        source = project_dir / STANDALONE_INPUTS_C
        source.parent.mkdir(parents=True, exist_ok=True)
        source.write_text(standalone.inputs_c_source([(n, data) for n, (_, _, data) in inputs.items()]))
        app_sources.append(source)
    render.write_firmware_tree(
        project_dir, board, project_type, RUNTIME_DIR / "include",
        runtime_sources=[RUNTIME_DIR / rel for rel in runtime_sources],
        generated_sources=sorted((project_dir / "model" / "codegen" / "host" / "src").glob("*.c")),
        include_dirs=[project_dir / "model" / "codegen" / "host" / "include"],
        app_sources=app_sources, extra_headers=extra_headers, stack_bytes=stack,
    )
    if mlperf is not None:
        (project_dir / "include" / mlperftiny.CONFIG_HEADER).write_text(
            mlperftiny.config_header(mlperf, archive.name))
    _log(options, f"generated {project_type} project for {archive.name} on {board['name']} in {project_dir}")
    return GeneratedProject(board=board, archive=ARCHIVE)


# ---- the generated project (standard library and pyserial only) -------------------------------


def _report_sizes(board, cflags):
    """Sizes from the ELF and the link map, against the board; saved in build/sizes.json and printed."""
    record, lines = size_report.size_report(HERE / ELF, HERE / MAP_FILE, board, cflags, label=ELF)
    (HERE / SIZES_FILE).write_text(json.dumps(record, indent=2) + "\n")
    for line in lines:
        print(f"{PLATFORM_NAME}: {line}", flush=True)


class BaremetalHandler(UartFirmwareHandler):
    """The transport, the board and the extensions are the floor's (UartFirmwareHandler)."""

    platform_name = PLATFORM_NAME
    project_types = PROJECT_TYPES
    server_dir = HERE
    elf = ELF
    standalone_inputs_npz = STANDALONE_INPUTS_NPZ
    emulator_note = EMULATOR_NOTE

    options_schema = staticmethod(_options_schema)
    generate = staticmethod(_generate)

    # -- Project API --

    def build(self, options):
        board = self._board()
        if shutil.which("arm-none-eabi-gcc") is None:
            raise BuildError("arm-none-eabi-gcc not found on PATH; install it (Debian: apt-get install "
                             "gcc-arm-none-eabi libnewlib-arm-none-eabi)")
        template_support.run_make(HERE, [f"CFLAGS_EXTRA={options.get('cflags') or ''}"], options,
                                  PLATFORM_NAME)
        _report_sizes(board, options.get("cflags") or "")

    def _runner(self, board, options):
        config = flash_runners.RunnerConfig(board=board["name"], image=HERE / ELF,
                                            serial_number=options.get("serial_number"),
                                            emulator=board.get("emulator"))
        try:
            return flash_runners.select_runner(board, config, options.get("flash_runner"))
        except flash_runners.RunnerError as err:
            listed = ", ".join(board.get("runners") or {})
            raise UserError(str(err), hint="install one of them, or choose a runner with -o flash_runner=... "
                                           f"(the board lists: {listed})") from None

    def flash(self, options):
        board = self._board()
        self._elf()
        runner = self._runner(board, options)
        if board["kind"] == "emulated":
            runner.flash()  # checks the image and the emulator
            _log(options, f"{board['name']} is emulated: the image is loaded when the transport opens")
            return
        # Said every time: which tool writes the board, and how, whatever happens next.
        print(f"{PLATFORM_NAME}: flashing {ELF} onto {board['name']} with {runner.name}: "
              f"{shlex.join(runner.command())}", flush=True)
        try:
            runner.flash()
        except flash_runners.RunnerError as err:
            raise UserError(f"{runner.name} could not flash {board['name']}: {err}",
                            hint="is the board plugged in (USB id "
                                 f"{', '.join(board.get('usb_vid_pid') or []) or 'unknown'}) and its probe "
                                 "free? With several boards, choose one with -o serial_number=...") from None

    def _standalone_exit(self, qemu):
        # The image ends the run through semihosting; QEMU exits with its status.
        return qemu.wait(timeout=10.0)


if __name__ == "__main__":
    main(BaremetalHandler())
