"""Arduino template: the model and the device runtime as an Arduino sketch, for any Arduino board.

A generated project is a sketch folder, `<project>/<project>.ino` plus `src/`, which the Arduino
IDE opens and `arduino-cli compile --fqbn <FQBN>` builds; the runtime and the model are sketch
sources, the port uses `Serial` at the board's baud rate and a hardware timer (AVR: Timer1 counts
CPU cycles) or `micros()`. Boards come from utvm's board database (platform "arduino").

Project types (option ``project_type``):
- ``host_driven`` (default): the sketch serves the host-driven protocol over Serial.
- ``aot_standalone``: the sketch runs the model once on inputs baked into it (in flash), prints
  the outputs and the timer ticks over Serial and halts; ``utvm_run_standalone`` runs it.

Build: arduino-cli when it is on PATH or named with ``-o arduino_cli_cmd=``; otherwise, for AVR
boards, Debian's arduino-builder with arduino-core-avr. The build reports the image's flash and RAM.

Where the sketch runs (option ``device``): the AVR boards with a simulator in their record
(arduino_uno, arduino_mega2560) run under simavr, cycle-exact, through a small UART-to-pty bridge
built on this machine from libsimavr-dev (``device=auto`` picks that unless a serial port or serial
number names a real board). A physical board is flashed with ``arduino-cli upload`` (avrdude for
AVR when arduino-cli is absent) and found on USB by its VID:PID and ``serial_number``. The handler is
the floor's UartFirmwareHandler (board, transport, extensions), with simavr where it would run QEMU.

On AVR, model constants stay in flash when the archive was compiled for the board's AVR target
(the client does that for a model file): the fit check counts the arena, the runtime, the model's
tables and anything else not in flash against SRAM, before anything is written.
"""

import dataclasses
import json
import pathlib
import shlex
import shutil
import subprocess
import sys
import tempfile

HERE = pathlib.Path(__file__).resolve().parent
# The floor: a generated project carries its copy beside this file; the template uses utvm's.
sys.path.insert(0, str(HERE if (HERE / "project_api").is_dir() else HERE.parents[1]))
sys.path.insert(0, str(HERE))  # utvm_arduino, beside this file in the template and in projects

from utvm_arduino import build as sketch_build  # noqa: E402
from utvm_arduino import memory, runners, sketch  # noqa: E402
from utvm_arduino.simavr import SimavrProcess, build_bridge, is_avr_elf  # noqa: E402

from project_api import board_records, flash_runners, npy, template_support, uart_firmware  # noqa: E402
from project_api import standalone_report as standalone  # noqa: E402
from project_api.errors import BuildError, UserError  # noqa: E402
from project_api.mlf import read_model_archive  # noqa: E402
from project_api.options import ProjectOption  # noqa: E402
from project_api.server import GeneratedProject, TransportTimeouts, main  # noqa: E402
from project_api.uart_firmware import UartFirmwareHandler  # noqa: E402

PLATFORM_NAME = "arduino"
ARCHIVE = "model.tar"
DEVICES = ("auto", "simavr", "board")
STANDALONE_INPUTS_NPZ = "standalone_inputs.npz"
SIZES_FILE = "build/sizes.json"
RUNTIME_DIR = HERE.parent / "runtime"
DEFAULT_STACK_BYTES = 512
SIMAVR_NOTE = ("runs under simavr, which is cycle-exact: device times are cycles of the simulated "
               "{mhz:g} MHz clock")


def _options_schema():
    common = uart_firmware.firmware_options(HERE, PLATFORM_NAME)
    opt = ProjectOption
    return [
        common["board"], common["project_type"], common["input_npz"],
        opt("stack_bytes", type="int", default=DEFAULT_STACK_BYTES, optional=["generate_project"],
            help="RAM the fit check keeps for the stack, besides everything the sketch places"),
        opt("arduino_cli_cmd", type="str", default="", optional=["build", "flash"],
            help="arduino-cli to build and upload with (default: arduino-cli on PATH, else Debian's "
                 "arduino-builder for AVR boards)"),
        opt("device", type="str", choices=list(DEVICES), default="auto",
            optional=["flash", "open_transport"],
            help="where the sketch runs: simavr (AVR boards with a simulator), board (a physical board "
                 "on USB), auto (board when serial_port or serial_number is given, else simavr if the "
                 "board has it)"),
        opt("flash_runner", type="str", choices=sorted(runners.RUNNERS), optional=["flash"],
            help="upload tool for a physical board (default: the first installed of the board's runners)"),
        common["serial_number"],
        # A physical board is uploaded to through its serial port (its bootloader), so flash takes it too.
        dataclasses.replace(common["serial_port"], optional=["flash", "open_transport"]),
        opt("verbose", type="bool", default=False,
            optional=["generate_project", "build", "flash", "open_transport"], help="print each step"),
    ]


def _log(options, text):
    template_support.log_step(options, PLATFORM_NAME, text)


def _say(text):
    print(f"{PLATFORM_NAME}: {text}", flush=True)


def _simavr_note(board):
    return f"{board['name']} " + SIMAVR_NOTE.format(mhz=board["clock_hz"] / 1e6)


# ---- generate_project --------------------------------------------------------------------------


def _check_board(board):
    if not board.get("arduino_fqbn"):
        raise UserError(f"board {board['name']} has no arduino_fqbn in the board database",
                        hint="add the board's fully qualified board name (e.g. arduino:avr:uno)")


def _fit(board, archive, stack_bytes):
    """Refuse a model that cannot fit the board, with both numbers, before anything is written."""
    footprint = memory.footprint(board, archive, stack_bytes)
    try:
        board_records.check_fit(board, footprint, ram_name="SRAM" if memory.is_avr(board) else "RAM")
    except UserError as err:
        if memory.is_avr(board) and not memory.constants_in_flash(archive):
            err.hint = (f"{err.hint}; this archive keeps its constants in SRAM on AVR: compile the model for "
                        f"the board's target (give create-project the model file, or `utvm compile MODEL "
                        f"--target 'c -mcpu={board['target'].get('mcpu')}'`) to keep them in flash")
        raise
    problem = memory.flash_window_problem(board, archive)
    if problem:
        raise UserError(f"the model does not fit {board['name']}: {problem}",
                        hint="use a smaller or more quantized model")


def _memory_notes(board, archive, footprint):
    def listing(consumers):
        ordered = sorted(consumers.items(), key=lambda kv: -kv[1])
        return ", ".join(f"{name} {size} B" for name, size in ordered)

    ram_word = "SRAM" if memory.is_avr(board) else "RAM"
    lines = ["Estimated before the build (the build prints the real figures from the ELF):",
             "",
             f"- {ram_word}: {footprint.ram_bytes} of {board.get('ram_bytes')} B: {listing(footprint.ram)}",
             f"- flash: {footprint.flash_bytes} of {board.get('flash_bytes')} B: {listing(footprint.flash)}"]
    if memory.is_avr(board):
        where = ("in flash (`PROGMEM`), read by the kernels through avr-gcc's `__flash` address space"
                 if memory.constants_in_flash(archive) else
                 "in SRAM: the archive was not compiled for an AVR target, so they are plain `const` arrays, "
                 "which avr-gcc copies to SRAM")
        lines += ["", f"The model's constants are {where}. Everything else that is `const` (the model's "
                      "tables, the runtime's strings) is in SRAM on AVR, and is counted there."]
    return "\n".join(lines)


def _run_notes(board, project_type):
    fqbn = board["arduino_fqbn"]
    lines = []
    if board.get("emulator", {}) and (board.get("emulator") or {}).get("system") == "simavr":
        lines.append(f"Without the board: `utvm flash .` then `utvm run .` run it under simavr (cycle-exact "
                     f"{board['clock_hz'] / 1e6:g} MHz {board['cpu']}) with its UART on a pseudo-terminal.")
    lines.append(f"On the board: `arduino-cli upload --fqbn {fqbn} --port PORT --input-dir build .`, or "
                 "`utvm flash . -o device=board` (finds the port by USB id; `-o serial_number=` picks one "
                 "of several boards).")
    baud = board["baud"]
    if project_type == "host_driven":
        lines.append(f"Then `utvm run . -o device=board` drives the model over Serial at {baud} baud.")
    else:
        lines.append(f"The sketch prints its report over Serial at {baud} baud once, after a reset.")
    return "\n\n".join(lines)


def _config_values(board, archive, flash_constants):
    avr = memory.is_avr(board)
    const_copy = ""
    if avr and flash_constants:
        const_copy = ("/* The model's constants are in flash: READ copies them with memcpy_P. */\n"
                      "#include <avr/pgmspace.h>\n"
                      "#define UTVM_CONST_COPY(dst, src, n) memcpy_P((dst), (src), (n))\n")
    return {
        "board_name": board["name"],
        "baud": str(board["baud"]),
        "ram_bytes": str(board.get("ram_bytes")),
        "max_packet": str(memory.max_packet(board)),
        "max_allocs": "8" if avr else "32",
        "error_bytes": "64" if avr else "128",
        "log_text": "48" if avr else "96",
        "const_copy": const_copy,
    }


def _generate(mlf_path, project_dir, options):
    board = board_records.resolve_board(options["board"], PLATFORM_NAME)
    _check_board(board)
    archive = read_model_archive(mlf_path)  # refuses a malformed archive before anything is written
    problem = sketch.sketch_name_problem(project_dir.name)
    if problem:
        raise UserError(problem, hint="choose a project directory name such as my_model")
    stack = int(options["stack_bytes"])
    _fit(board, archive, stack)
    project_type = options["project_type"]
    inputs = standalone.baked_inputs(archive.inputs, options.get("input_npz")) \
        if project_type == "aot_standalone" else {}
    flash_constants = memory.constants_in_flash(archive)
    footprint = memory.footprint(board, archive, stack)

    project_dir.mkdir(parents=True)
    shutil.copy2(__file__, project_dir / "microtvm_api_server.py")
    shutil.copytree(HERE / "utvm_arduino", project_dir / "utvm_arduino",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    shutil.copy2(mlf_path, project_dir / ARCHIVE)
    standalone_c = ""
    if project_type == "aot_standalone":
        npy.write_npz(project_dir / STANDALONE_INPUTS_NPZ, inputs)
        standalone_c = sketch.inputs_source([(name, data) for name, (_, _, data) in inputs.items()])
    values = dict(
        _config_values(board, archive, flash_constants),
        model_name=archive.name, board_title=board["title"], project_type=project_type,
        build_command=sketch_build.readme_commands(board["arduino_fqbn"], project_dir.name)["cli_build"],
        app_summary=("serve the host-driven protocol" if project_type == "host_driven"
                     else "run the model once on the baked-in inputs and print the report"),
        timer_summary="Timer1 counting CPU cycles" if memory.is_avr(board) else "`micros()`",
        memory_notes=_memory_notes(board, archive, footprint),
        run_notes=_run_notes(board, project_type),
        **sketch_build.readme_commands(board["arduino_fqbn"], project_dir.name),
    )
    with tempfile.TemporaryDirectory(prefix="utvm-mlf-") as tmp:
        model_root = archive.extract(pathlib.Path(tmp))
        sketch.write_sketch(project_dir, RUNTIME_DIR, model_root, values, standalone_c)
    _log(options, f"generated {project_type} sketch for {archive.name} on {board['name']} in {project_dir}")
    return GeneratedProject(board=board, archive=ARCHIVE)


# ---- the generated project (standard library and pyserial only) -------------------------------


def _constant_symbols():
    """C symbols of the model's constants, from the project's archive."""
    archive = read_model_archive(HERE / ARCHIVE)
    return sorted({t["symbol"] for t in archive.tensors if t.get("storage") == "const" and t.get("symbol")})


class ArduinoHandler(UartFirmwareHandler):
    """The board, the transport and the extensions are the floor's (UartFirmwareHandler); the sketch
    runs under simavr (on a pseudo-terminal) where the other templates run QEMU."""

    platform_name = PLATFORM_NAME
    server_dir = HERE
    elf = sketch_build.elf_path(HERE).relative_to(HERE).as_posix()
    standalone_inputs_npz = STANDALONE_INPUTS_NPZ
    # Opening a real board's port resets it: its bootloader runs for a second or two first.
    timeouts = TransportTimeouts(session_start_retry_timeout_sec=2.0, session_start_timeout_sec=15.0,
                                 session_established_timeout_sec=60.0)

    options_schema = staticmethod(_options_schema)
    generate = staticmethod(_generate)

    # -- where the sketch runs --

    def _device(self, board, options):
        """"simavr" or "board": where this call's sketch runs."""
        device = options.get("device") or "auto"
        simulated = (board.get("emulator") or {}).get("system") == "simavr"
        if device == "auto":
            device = "board" if options.get("serial_port") or options.get("serial_number") or not simulated \
                else "simavr"
        if device == "simavr" and not simulated:
            raise UserError(f"{board['name']} has no simulator; only the AVR boards with simavr in their "
                            "record run without the board",
                            hint="use -o device=board with the board plugged in")
        return device

    def _emulated(self, board, options):
        return self._device(board, options) == "simavr"

    def _emulator(self, board, options):
        _say(_simavr_note(board))  # said every time, since benchmarks read its clock
        return SimavrProcess(self._elf(), board["emulator"].get("mcu") or board["cpu"], board["clock_hz"],
                             board["baud"], HERE / "build")

    def _standalone_exit(self, emulator):
        # The sketch halts after its report (interrupts off, asleep), which ends the simulation.
        return emulator.wait(10.0)

    # -- Project API --

    def build(self, options):
        board = self._board()
        try:
            command = sketch_build.choose_command(HERE, board, options.get("arduino_cli_cmd"))
        except sketch_build.BuildToolMissing as err:
            raise BuildError(str(err)) from None
        (HERE / sketch_build.BUILD_DIR).mkdir(exist_ok=True)
        _log(options, " ".join(shlex.quote(c) for c in command))
        result = subprocess.run(command, cwd=HERE, stdin=subprocess.DEVNULL)
        if result.returncode != 0:
            raise BuildError(f"{pathlib.Path(command[0]).name} exited with code {result.returncode}; "
                             "its output is above")
        record, lines = sketch_build.size_report(self._elf(), board, _constant_symbols())
        (HERE / SIZES_FILE).write_text(json.dumps(record, indent=2) + "\n")
        for line in lines:
            _say(line)

    def flash(self, options):
        board = self._board()
        elf = self._elf()
        if self._emulated(board, options):
            if not is_avr_elf(elf):
                raise BuildError(f"{elf.name} is not an AVR image")
            build_bridge(HERE / "build")
            _log(options, f"{board['name']} runs under simavr: the image is loaded when the transport opens")
            return
        port = self._physical_port(board, options)
        config = runners.physical_config(board, elf, options.get("serial_number"))
        implemented = runners.bound_runners(port, board["arduino_fqbn"])
        preferred = options.get("flash_runner") or ("arduino-cli" if options.get("arduino_cli_cmd") else None)
        runner = flash_runners.select_runner(board, config, preferred, implemented=implemented)
        _log(options, runner.describe())
        runner.flash()

    # -- extensions --

    def utvm_run_standalone(self, options, inputs=None, timeout_sec=60.0):
        """Extension: the floor's run of an aot_standalone sketch (status, error, ticks, timer_hz,
        outputs, exit_status, emulated, note), plus `cycles`: the run's, when the sketch's timer
        counts CPU cycles (AVR's Timer1), which under simavr are the simulated clock's."""
        board = self._board()
        report = super().utvm_run_standalone(options, inputs, timeout_sec)
        simulated = self._emulated(board, options)
        notes = [_simavr_note(board)] if simulated else []
        report["cycles"] = None
        if report.get("ticks") is not None and report.get("timer_hz") == board.get("clock_hz"):
            report["cycles"] = report["ticks"]
            notes.append(f"the run took {report['cycles']} cycles")
        report.update(emulated=simulated, note="; ".join(notes))
        return report


if __name__ == "__main__":
    main(ArduinoHandler())
