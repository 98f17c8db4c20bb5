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
AVR when arduino-cli is absent) and found on USB by its VID:PID and ``serial_number``.

On AVR, model constants stay in flash when the archive was compiled for the board's AVR target
(the client does that for a model file): the fit check counts the arena, the runtime, the model's
tables and anything else not in flash against SRAM, before anything is written.
"""

import json
import pathlib
import shlex
import shutil
import subprocess
import sys
import tempfile
import time

HERE = pathlib.Path(__file__).resolve().parent
# The floor: a generated project carries its copy beside this file; the template uses utvm's.
sys.path.insert(0, str(HERE if (HERE / "project_api").is_dir() else HERE.parents[1]))
sys.path.insert(0, str(HERE))  # utvm_arduino, beside this file in the template and in projects

from utvm_arduino import build as sketch_build  # noqa: E402
from utvm_arduino import memory, runners, sketch  # noqa: E402
from utvm_arduino.simavr import SimavrProcess, build_bridge  # noqa: E402

from project_api import board_records, flash_runners, npy, serial_link, standalone, template_support  # noqa: E402
from project_api.errors import (  # noqa: E402
    BuildError,
    ProjectStateError,
    UserError,
)
from project_api.mlf import read_model_archive  # noqa: E402
from project_api.options import ProjectOption  # noqa: E402
from project_api.record import read_record  # noqa: E402
from project_api.server import GeneratedProject, ProjectAPIHandler, TransportTimeouts, main  # noqa: E402

PLATFORM_NAME = "arduino"
ARCHIVE = "model.tar"
PROJECT_TYPES = ("host_driven", "aot_standalone")
DEVICES = ("auto", "simavr", "board")
STANDALONE_INPUTS_NPZ = "standalone_inputs.npz"
SIZES_FILE = "build/sizes.json"
RUNTIME_DIR = HERE.parent / "runtime"
DEFAULT_STACK_BYTES = 512
SIMAVR_NOTE = ("runs under simavr, which is cycle-exact: device times are cycles of the simulated "
               "{mhz:g} MHz clock")


def _options_schema():
    record = read_record(HERE)
    # A project offers its own board only; the template offers the database's Arduino boards.
    choices = [record.board_name] if record else board_records.board_names(PLATFORM_NAME)
    opt = ProjectOption
    return [
        opt("board", type="str", choices=choices, required=["generate_project"],
            help="board from utvm's database (`utvm boards --template arduino`)"),
        opt("project_type", type="str", choices=list(PROJECT_TYPES), default="host_driven",
            optional=["generate_project"],
            help="host_driven: the sketch serves the host over Serial; aot_standalone: the sketch runs "
                 "the model once on baked-in inputs and prints the outputs"),
        opt("input_npz", type="str", default="", optional=["generate_project"],
            help="aot_standalone: .npz of the inputs to bake in, by input name (default: seeded random)"),
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
        opt("serial_number", type="str", optional=["flash", "open_transport"],
            help="USB serial number of the board, when more than one is plugged in"),
        opt("serial_port", type="str", optional=["flash", "open_transport"],
            help="serial device of a physical board (default: found by the board's USB VID:PID)"),
        opt("verbose", type="bool", default=False,
            optional=["generate_project", "build", "flash", "open_transport"], help="print each step"),
    ]


def _log(options, text):
    template_support.log_step(options, PLATFORM_NAME, text)


def _say(text):
    print(f"{PLATFORM_NAME}: {text}", flush=True)


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
    inputs = standalone.baked_inputs(archive, options.get("input_npz")) if project_type == "aot_standalone" \
        else {}
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


class ArduinoHandler(ProjectAPIHandler):
    def __init__(self):
        self._connection = serial_link.BoardConnection("the board's serial port")

    # -- helpers --

    def _board(self):
        record = read_record(HERE)
        if record is None or not record.board:
            raise ProjectStateError("the template has no board; generate a project first")
        return record.board

    def _elf(self):
        elf = sketch_build.elf_path(HERE)
        if not elf.is_file():
            raise ProjectStateError(f"{elf.relative_to(HERE)} does not exist; build the project first")
        return elf

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

    def _simulation(self, board, capture=None, wait_open=False):
        return SimavrProcess(self._elf(), board["emulator"].get("mcu") or board["cpu"], board["clock_hz"],
                             HERE / "build", capture=capture, wait_open=wait_open)

    def _launch_simulation(self, board):
        """Start simavr for a session (the firmware waits until a host opens the terminal); returns
        the process, which the connection stops on close_transport."""
        _say(f"{board['name']} " + SIMAVR_NOTE.format(mhz=board["clock_hz"] / 1e6))
        simulation = self._simulation(board, wait_open=True)
        self._connection.process = simulation
        try:
            simulation.launch()
        except BaseException:
            self.close_transport()
            raise
        return simulation

    def _host_driven_board(self, options):
        board = self._board()
        if options["project_type"] != "host_driven":
            raise ProjectStateError("this is an aot_standalone project: it has no transport; "
                                    "run it with `utvm run` (the utvm_run_standalone extension)")
        return board

    # -- Project API --

    def server_info_query(self, tvm_version):
        return template_support.template_server_info(HERE, PLATFORM_NAME, _options_schema())

    def generate_project(self, model_library_format_path, standalone_crt_dir, project_dir, options):
        return _generate(pathlib.Path(model_library_format_path), pathlib.Path(project_dir), options)

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
        if self._device(board, options) == "simavr":
            with open(elf, "rb") as f:
                header = f.read(20)
            if header[:4] != b"\x7fELF" or int.from_bytes(header[18:20], "little") != 83:  # EM_AVR
                raise BuildError(f"{elf.name} is not an AVR image")
            build_bridge(HERE / "build")
            _log(options, f"{board['name']} runs under simavr: the image is loaded when the transport opens")
            return
        port = serial_link.board_serial_port(board, options)
        config = runners.physical_config(board, elf, options.get("serial_number"))
        implemented = runners.bound_runners(port, board["arduino_fqbn"])
        preferred = options.get("flash_runner") or ("arduino-cli" if options.get("arduino_cli_cmd") else None)
        runner = flash_runners.select_runner(board, config, preferred, implemented=implemented)
        _log(options, runner.describe())
        runner.flash()

    def open_transport(self, options):
        board = self._host_driven_board(options)
        self.close_transport()
        if self._device(board, options) == "simavr":
            simulation = self._launch_simulation(board)
            try:
                self._connection.attach(simulation.connect(board["baud"]), simulation)
            except BaseException:
                self.close_transport()
                raise
        else:
            import serial

            name = serial_link.board_serial_port(board, options)
            _log(options, f"opening {name} at {board['baud']} baud")
            self._connection.attach(serial.serial_for_url(name, baudrate=board["baud"], timeout=0))
        # Opening a real board's port resets it: its bootloader runs for a second or two first.
        return TransportTimeouts(session_start_retry_timeout_sec=2.0, session_start_timeout_sec=15.0,
                                 session_established_timeout_sec=60.0)

    def close_transport(self):
        self._connection.close()

    def read_transport(self, n, timeout_sec):
        return self._connection.read(n, timeout_sec)

    def write_transport(self, data, timeout_sec):
        self._connection.write(data, timeout_sec)

    # -- extensions --

    def utvm_open_direct_transport(self, options):
        """Extension: the serial port a utvm client opens itself: the simulated board's terminal
        (simavr starts here, and the firmware once the client opens it; close_transport stops it),
        or the physical board's port."""
        board = self._host_driven_board(options)
        self.close_transport()
        if self._device(board, options) == "simavr":
            url = self._launch_simulation(board).pty
        else:
            url = serial_link.board_serial_port(board, options)
        return {"kind": "serial", "url": url, "baudrate": board["baud"]}

    def utvm_resolve_board(self, options):
        """Extension: the record of the board option, as generate_project will resolve it (the
        client compiles a model for its TVM target before generating)."""
        return template_support.resolved_board(HERE, options.get("board"), PLATFORM_NAME)

    def utvm_standalone_inputs(self, options):
        """Extension: the inputs baked into an aot_standalone sketch, by name, as hex."""
        return standalone.baked_inputs_reply(HERE / STANDALONE_INPUTS_NPZ, options["project_type"])

    def utvm_run_standalone(self, options, inputs=None, timeout_sec=60.0):
        """Extension: run an aot_standalone sketch and return its report: status, error, ticks,
        timer_hz, outputs [{index, name, hex}], exit_status (under simavr), cycles (the run's, when the
        timer counts CPU cycles: AVR), emulated and note. The inputs are the ones baked in at
        generate_project; giving others is refused."""
        board = self._board()
        if options["project_type"] != "aot_standalone":
            raise ProjectStateError("this is a host_driven project; open a session instead (`utvm run`)")
        if inputs:
            raise UserError("this aot_standalone sketch runs on the inputs baked into it at generate time "
                            f"({STANDALONE_INPUTS_NPZ}); it takes no others",
                            hint="generate the project again with -o input_npz=INPUTS.npz")
        self.close_transport()
        simulated = self._device(board, options) == "simavr"
        exit_status = None
        if simulated:
            capture = HERE / "build" / "standalone_output.txt"
            simulation = self._simulation(board, capture=capture)
            try:
                simulation.launch()
                exit_status = simulation.wait(timeout_sec)
            finally:
                simulation.stop()
            text = capture.read_text(encoding="utf-8", errors="replace")
        else:
            import serial

            # The sketch runs at reset: opening the port resets the board (DTR), as does uploading.
            name = serial_link.board_serial_port(board, options)
            with serial.serial_for_url(name, baudrate=board["baud"]) as port:
                deadline = time.monotonic() + timeout_sec
                text = standalone.read_report(port, timeout_sec)
                if standalone.END_LINE not in text:
                    self.flash(options)
                    text = standalone.read_report(port, max(1.0, deadline - time.monotonic()))
        report = standalone.parse_report(text)
        for out in report["outputs"]:
            out["hex"] = out.pop("data").hex()
        note = (f"{board['name']} " + SIMAVR_NOTE.format(mhz=board["clock_hz"] / 1e6)) if simulated else ""
        cycles = None
        if report.get("ticks") is not None and report.get("timer_hz") == board.get("clock_hz"):
            cycles = report["ticks"]  # the AVR port's timer counts CPU cycles
            note += f"{'; ' if note else ''}the run took {cycles} cycles"
        report.update(exit_status=exit_status, emulated=simulated, cycles=cycles, instructions=None,
                      note=note)
        return report


if __name__ == "__main__":
    main(ArduinoHandler())
