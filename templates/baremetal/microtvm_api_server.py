"""Bare-metal Cortex-M template: the model and the device runtime on a board with no RTOS.

Boards come from utvm's board database (platform "baremetal"): the emulated Arm MPS2 boards run
under qemu-system-arm; a physical board is flashed with the runner its record names (pyOCD or
OpenOCD) and found on USB by its VID:PID (and ``serial_number`` when several are plugged in).

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
import os
import pathlib
import random
import shlex
import shutil
import struct
import subprocess
import sys
import time

HERE = pathlib.Path(__file__).resolve().parent
# The floor: a generated project carries its copy beside this file; the template uses utvm's.
sys.path.insert(0, str(HERE if (HERE / "project_api").is_dir() else HERE.parents[1]))
sys.path.insert(0, str(HERE))  # utvm_baremetal, beside this file in the template and in projects

from utvm_baremetal import render, size_report, standalone  # noqa: E402

from project_api import board_records, flash_runners, mlperftiny, npy, template_support, usb_discovery  # noqa: E402
from project_api.emulator_clock import emulator_clock  # noqa: E402
from project_api.errors import (  # noqa: E402
    BuildError,
    IoTimeoutError,
    ProjectStateError,
    TransportClosedError,
    UserError,
)
from project_api.mlf import read_model_archive  # noqa: E402
from project_api.options import ProjectOption  # noqa: E402
from project_api.pty_bridge import PtyBridge  # noqa: E402
from project_api.qemu import QemuProcess  # noqa: E402
from project_api.record import read_record  # noqa: E402
from project_api.server import GeneratedProject, ProjectAPIHandler, TransportTimeouts, main  # noqa: E402

PLATFORM_NAME = "baremetal"
ARCHIVE = "model.tar"
PROJECT_TYPES = ("host_driven", "aot_standalone", mlperftiny.PROJECT_TYPE)
# Why a project of one type refuses a step meant for others.
WRONG_TYPE = {
    "host_driven": "this is a host_driven project; open a session instead (`utvm run`)",
    "aot_standalone": "this is an aot_standalone project: it has no transport; "
                      "run it with `utvm run` (the utvm_run_standalone extension)",
    "mlperftiny": "this is an mlperftiny project: the MLPerf Tiny runner drives it, on the board's serial "
                  "port, or for an emulated board on the pseudo-terminal `utvm pty` gives",
}
# The runtime files an mlperftiny image needs besides its app: no session, only the plan.
MLPERF_RUNTIME_SOURCES = ("src/backend.c", "src/plan.c")
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
DEFAULT_READ_TIMEOUT_SEC = 300.0
# The runtime's deepest call chain with a kernel's locals needs about this much; less is a mistake.
MIN_STACK_BYTES = 1024
EMULATOR_NOTE = "QEMU timings are not real-board timings"


def _options_schema():
    record = read_record(HERE)
    # A project offers its own board only; the template offers the database's bare-metal boards.
    choices = [record.board_name] if record else board_records.board_names(PLATFORM_NAME)
    opt = ProjectOption
    return [
        opt("board", type="str", choices=choices, required=["generate_project"],
            help="board from utvm's database (`utvm boards --template baremetal`)"),
        opt("project_type", type="str", choices=list(PROJECT_TYPES), default="host_driven",
            optional=["generate_project"],
            help="host_driven: the runtime serves the host over the UART; aot_standalone: the image runs "
                 "the model once on baked-in inputs and prints the outputs; mlperftiny: the MLPerf Tiny "
                 "runner's device under test (needs mlperf_model)"),
        opt(mlperftiny.MODEL_ID_OPTION, type="str", choices=list(mlperftiny.MODEL_IDS),
            optional=["generate_project"],
            help="mlperftiny: the benchmark the model is for (the runner picks its test by it)"),
        opt("input_npz", type="str", default="", optional=["generate_project"],
            help="aot_standalone: .npz of the inputs to bake in, by input name (default: seeded random)"),
        opt("stack_bytes", type="int", default=render.DEFAULT_STACK_BYTES, optional=["generate_project"],
            help="main stack reserved at the top of RAM"),
        opt("cflags", type="str", default="", optional=["build"],
            help="extra compiler flags after the defaults (-Os), e.g. -O2 or -DUTVM_MAX_PACKET=2048"),
        opt("flash_runner", type="str", choices=sorted(flash_runners.RUNNERS), optional=["flash"],
            help="flash tool to use (default: the first installed of the board's runners)"),
        opt("serial_number", type="str", optional=["flash", "open_transport"],
            help="USB serial number of the board's probe, when more than one board is plugged in"),
        opt("serial_port", type="str", optional=["open_transport"],
            help="serial device of a physical board (default: found by the board's USB VID:PID)"),
        opt("qemu_icount", type="bool", default=True, optional=["open_transport"],
            help="emulated boards: run QEMU with -icount (the board's icount_shift, 0: 1 ns per "
                 "instruction), so the device clock counts instructions"),
        opt("verbose", type="bool", default=False,
            optional=["generate_project", "build", "flash", "open_transport"], help="print each step"),
    ]


def _log(options, text):
    template_support.log_step(options, PLATFORM_NAME, text)


# ---- generate_project --------------------------------------------------------------------------


def _seeded_bytes(rng, dtype, count):
    """count elements of dtype: uniform over an integer type's range, standard normal for floats."""
    if dtype.startswith("float"):
        fmt = {"float16": "<e", "float32": "<f", "float64": "<d"}[dtype]
        return b"".join(struct.pack(fmt, rng.gauss(0.0, 1.0)) for _ in range(count))
    return rng.randbytes(npy.itemsize(dtype) * count)


def _standalone_inputs(archive, npz_path):
    """{name: (dtype, shape, bytes)} of the inputs to bake in, from npz_path or seeded random."""
    given = npy.read_npz(npz_path) if npz_path else {}
    rng = random.Random(0)
    arrays = {}
    for entry in archive.inputs:
        name, dtype, shape = entry["name"], entry["dtype"], tuple(entry["shape"])
        count = 1
        for d in shape:
            count *= d
        if npz_path:
            if name not in given:
                raise UserError(f"{npz_path} has no array named {name!r}",
                                hint=f"it has: {', '.join(given) or 'none'}")
            got_dtype, got_shape, data = given[name]
            if got_dtype != dtype or len(data) != npy.itemsize(dtype) * count:
                raise UserError(f"input {name!r} in {npz_path} is {got_dtype} {list(got_shape)}; "
                                f"the model takes {dtype} {list(shape)}",
                                hint="save it with that dtype and size")
            arrays[name] = (dtype, shape, data)
        else:
            arrays[name] = (dtype, shape, _seeded_bytes(rng, dtype, count))
    return arrays


def _generate(mlf_path, project_dir, options):
    board = board_records.resolve_board(options["board"], PLATFORM_NAME)
    archive = read_model_archive(mlf_path)  # refuses a malformed archive before anything is written
    stack = int(options["stack_bytes"])
    if not MIN_STACK_BYTES <= stack <= (board.get("ram_bytes") or stack) or stack % 8:
        raise UserError(f"stack_bytes={stack}: the main stack must be a multiple of 8 between "
                        f"{MIN_STACK_BYTES} and the board's RAM ({board.get('ram_bytes')} bytes)",
                        hint=f"the default is {render.DEFAULT_STACK_BYTES}")
    project_type = options["project_type"]
    mlperf, input_file_bytes = None, 0
    if project_type == mlperftiny.PROJECT_TYPE:
        mlperf = mlperftiny.dut_config(archive.metadata, _mlperf_model(options),
                                       mlperftiny.dut_name(board["name"], board["kind"] == "emulated"),
                                       note=_mlperf_note(board))
        input_file_bytes = int(mlperf["UTVM_MLPERF_INPUT_BYTES"].rstrip("u"))  # the firmware's buffer
    board_records.check_fit(board, board_records.footprint_from_metadata(
        archive.metadata, runtime_ram=RUNTIME_RAM_BYTES + stack + input_file_bytes,
        runtime_flash=RUNTIME_FLASH_BYTES))
    inputs = _standalone_inputs(archive, options.get("input_npz")) if project_type == "aot_standalone" else {}
    project_dir.mkdir(parents=True)
    shutil.copy2(__file__, project_dir / "microtvm_api_server.py")
    shutil.copytree(HERE / "utvm_baremetal", project_dir / "utvm_baremetal",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    shutil.copy2(mlf_path, project_dir / ARCHIVE)
    archive.extract(project_dir / "model")

    files = template_support.runtime_files(RUNTIME_DIR)
    runtime_sources = [RUNTIME_DIR / rel for rel in files["sources"]]
    app_sources, extra_headers = [], []
    if mlperf is not None:
        runtime_sources = [RUNTIME_DIR / rel for rel in MLPERF_RUNTIME_SOURCES]
        runtime_sources += [RUNTIME_DIR / rel for rel in files[f"{mlperftiny.RUNTIME_PART}_sources"]]
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
        runtime_sources=runtime_sources,
        generated_sources=sorted((project_dir / "model" / "codegen" / "host" / "src").glob("*.c")),
        include_dirs=[project_dir / "model" / "codegen" / "host" / "include"],
        app_sources=app_sources, extra_headers=extra_headers, stack_bytes=stack,
    )
    if mlperf is not None:
        (project_dir / "include" / mlperftiny.CONFIG_HEADER).write_text(
            mlperftiny.config_header(mlperf, archive.name))
    _log(options, f"generated {project_type} project for {archive.name} on {board['name']} in {project_dir}")
    return GeneratedProject(board=board, archive=ARCHIVE)


def _mlperf_model(options):
    model_id = options.get(mlperftiny.MODEL_ID_OPTION)
    if not model_id:
        raise UserError("project_type=mlperftiny needs the benchmark the model is for",
                        hint=f"add -o {mlperftiny.MODEL_ID_OPTION}= one of {', '.join(mlperftiny.MODEL_IDS)}")
    return model_id


def _mlperf_note(board):
    """The caveat the firmware of an emulated board prints with its lap times."""
    if board["kind"] != "emulated":
        return ""
    return (f"{board['name']} is emulated by QEMU: m-lap-us is guest time, which under -icount counts "
            "instructions; it is not a real-board time")


# ---- the generated project (standard library and pyserial only) -------------------------------


def _report_sizes(board, cflags):
    """Sizes from the ELF and the link map, against the board; saved in build/sizes.json and printed."""
    record, lines = size_report.size_report(HERE / ELF, HERE / MAP_FILE, board, cflags, label=ELF)
    (HERE / SIZES_FILE).write_text(json.dumps(record, indent=2) + "\n")
    for line in lines:
        print(f"{PLATFORM_NAME}: {line}", flush=True)


class BaremetalHandler(ProjectAPIHandler):
    def __init__(self):
        self._qemu = None
        self._serial = None
        self._bridge = None

    # -- helpers --

    def _board(self):
        record = read_record(HERE)
        if record is None or not record.board:
            raise ProjectStateError("the template has no board; generate a project first")
        return record.board

    def _elf(self):
        elf = HERE / ELF
        if not elf.is_file():
            raise ProjectStateError(f"{ELF} does not exist; build the project first")
        return elf

    def _qemu_process(self, board, options):
        emulator = board["emulator"]
        clock = emulator_clock(board, options)
        # Said every time an emulated board starts, since benchmarks read its clock.
        print(f"{PLATFORM_NAME}: {EMULATOR_NOTE}; {clock.note()}", flush=True)
        return QemuProcess(self._elf(), emulator["machine"], cpu=emulator.get("cpu"),
                           system=emulator.get("system", "qemu-system-arm"), icount_shift=clock.icount_shift,
                           log_path=HERE / "build" / "qemu.log")

    def _physical_port(self, board, options):
        if options.get("serial_port"):
            return options["serial_port"]
        try:
            return usb_discovery.find_serial_port(board["usb_vid_pid"], options.get("serial_number"),
                                                  board["name"])
        except usb_discovery.DiscoveryError as err:
            raise UserError(str(err),
                            hint="plug the board in, or name its port with -o serial_port=...") from None

    def _host_driven_board(self, options, types=("host_driven",)):
        board = self._board()
        if options["project_type"] not in types:
            raise ProjectStateError(WRONG_TYPE[options["project_type"]])
        return board

    # -- Project API --

    def server_info_query(self, tvm_version):
        return template_support.template_server_info(HERE, PLATFORM_NAME, _options_schema())

    def generate_project(self, model_library_format_path, standalone_crt_dir, project_dir, options):
        return _generate(pathlib.Path(model_library_format_path), pathlib.Path(project_dir), options)

    def build(self, options):
        board = self._board()
        make = shutil.which("make")
        if make is None:
            raise BuildError("make not found on PATH; install it (Debian: apt-get install make)")
        if shutil.which("arm-none-eabi-gcc") is None:
            raise BuildError("arm-none-eabi-gcc not found on PATH; install it (Debian: apt-get install "
                             "gcc-arm-none-eabi libnewlib-arm-none-eabi)")
        command = [make, f"CFLAGS_EXTRA={options.get('cflags') or ''}", "-j", str(min(os.cpu_count() or 1,
                                                                                      8))]
        _log(options, " ".join(shlex.quote(c) for c in command))
        result = subprocess.run(command, cwd=HERE, stdin=subprocess.DEVNULL)
        if result.returncode != 0:
            raise BuildError(f"make exited with code {result.returncode}; the compiler's output is above")
        _report_sizes(board, options.get("cflags") or "")

    def _runner(self, board, options):
        config = flash_runners.RunnerConfig(board=board["name"], image=HERE / ELF,
                                            serial_number=options.get("serial_number"),
                                            emulator=board.get("emulator"))
        return flash_runners.select_runner(board, config, options.get("flash_runner"))

    def flash(self, options):
        board = self._board()
        self._elf()
        runner = self._runner(board, options)
        _log(options, f"flashing {ELF} with {runner.name}")
        runner.flash()
        if board["kind"] == "emulated":
            _log(options, f"{board['name']} is emulated: the image is loaded when the transport opens")

    def open_transport(self, options):
        board = self._host_driven_board(options, types=("host_driven", mlperftiny.PROJECT_TYPE))
        self.close_transport()
        if board["kind"] == "emulated":
            self._qemu = self._qemu_process(board, options)
            self._serial = self._qemu.start()
        else:
            import serial

            port = self._physical_port(board, options)
            _log(options, f"opening {port} at {board['baud']} baud")
            self._serial = serial.serial_for_url(port, baudrate=board["baud"], timeout=0)
        return TransportTimeouts(session_start_retry_timeout_sec=2.0, session_start_timeout_sec=10.0,
                                 session_established_timeout_sec=60.0)

    def close_transport(self):
        if self._bridge is not None:  # first: its threads read and write the UART
            bridge, self._bridge = self._bridge, None
            bridge.close()
        port, self._serial = self._serial, None
        runner, self._qemu = self._qemu, None
        try:
            if port is not None:
                port.close()
        finally:
            if runner is not None:
                runner.stop()

    def _open_port(self):
        if self._serial is None:
            raise TransportClosedError("the transport is not open; call open_transport first")
        return self._serial

    def _closed(self, err):
        status = self._qemu.poll() if self._qemu else None
        detail = f"; QEMU exited with status {status}" if status is not None else ""
        return TransportClosedError(f"the device's UART closed: {err}{detail}")

    def read_transport(self, n, timeout_sec):
        import serial

        port = self._open_port()
        timeout = DEFAULT_READ_TIMEOUT_SEC if timeout_sec is None else timeout_sec
        try:
            port.timeout = timeout
            first = port.read(1)
            if not first:
                raise IoTimeoutError(f"no bytes from the device within {timeout} s")
            port.timeout = 0
            return first + (port.read(n - 1) if n > 1 else b"")
        except serial.SerialException as err:
            raise self._closed(err) from None

    def write_transport(self, data, timeout_sec):
        import serial

        port = self._open_port()
        try:
            port.write_timeout = DEFAULT_READ_TIMEOUT_SEC if timeout_sec is None else timeout_sec
            port.write(data)
        except serial.SerialTimeoutException:
            raise IoTimeoutError(
                f"the device did not take {len(data)} bytes within {timeout_sec} s") from None
        except serial.SerialException as err:
            raise self._closed(err) from None

    # -- extensions --

    def utvm_open_direct_transport(self, options):
        """Extension: the serial URL a utvm client opens itself. For an emulated board QEMU is started
        here (and stopped by close_transport); the guest runs once the client connects."""
        board = self._host_driven_board(options)
        self.close_transport()
        if board["kind"] == "emulated":
            self._qemu = self._qemu_process(board, options)
            url = self._qemu.launch()
        else:
            url = self._physical_port(board, options)
        return {"kind": "serial", "url": url, "baudrate": board["baud"]}

    def utvm_open_pty(self, options):
        """Extension (mlperftiny): the serial device path a tool such as the MLPerf Tiny runner opens.
        For an emulated board QEMU is started here with its UART behind a new pseudo-terminal
        (until close_transport); a physical board's own serial port is returned as it is.
        Returns {path, bridged, baudrate, note}."""
        board = self._host_driven_board(options, types=(mlperftiny.PROJECT_TYPE,))
        self.close_transport()
        if board["kind"] != "emulated":
            return {"path": self._physical_port(board, options), "bridged": False, "baudrate": board["baud"],
                    "note": ""}
        self._qemu = self._qemu_process(board, options)
        self._serial = self._qemu.start()
        try:
            mlperftiny.read_boot_lines(self.read_transport)
        except BaseException:
            self.close_transport()
            raise
        self._bridge = PtyBridge(self.read_transport, self.write_transport, name="QEMU UART")
        path = self._bridge.start()
        _log(options, f"{board['name']}'s UART is on {path}")
        return {"path": path, "bridged": True, "baudrate": board["baud"],
                "note": f"{EMULATOR_NOTE}; {emulator_clock(board, options).note()}"}

    def utvm_pty_status(self):
        """Extension: whether the pseudo-terminal of utvm_open_pty still reaches the device:
        {path, open, error}."""
        bridge = self._bridge
        if bridge is None:
            return {"path": None, "open": False, "error": "no pseudo-terminal is open"}
        error = bridge.error
        status = self._qemu.poll() if self._qemu else None
        if status is not None:
            error = f"QEMU exited with status {status}" + (f" ({error})" if error else "")
        return {"path": bridge.path, "open": bridge.alive and status is None, "error": error}

    def utvm_resolve_board(self, options):
        """Extension: the record of the board option, as generate_project will resolve it (the
        client compiles a model for its TVM target before generating)."""
        record = read_record(HERE)
        if record is not None and record.board:
            return record.board
        return board_records.resolve_board(options["board"], PLATFORM_NAME)

    def utvm_standalone_inputs(self, options):
        """Extension: the inputs baked into an aot_standalone image, by name, as hex."""
        if options["project_type"] != "aot_standalone":
            return {"baked": False, "inputs": None}
        arrays = npy.read_npz(HERE / STANDALONE_INPUTS_NPZ)
        return {"baked": True, "inputs": {name: data.hex() for name, (_, _, data) in arrays.items()}}

    def utvm_run_standalone(self, options, inputs=None, timeout_sec=60.0):
        """Extension: run an aot_standalone image and return its report: status, error, ticks,
        timer_hz, outputs [{index, name, hex}], exit_status (emulated boards), instructions (under
        QEMU -icount, else None), emulated and note. The inputs are the ones baked into the image at
        generate_project (standalone_inputs.npz); giving others is refused."""
        board = self._board()
        if options["project_type"] != "aot_standalone":
            raise ProjectStateError(WRONG_TYPE[options["project_type"]])
        if inputs:
            raise UserError("this aot_standalone image runs on the inputs baked into it at generate time "
                            f"({STANDALONE_INPUTS_NPZ}); it takes no others",
                            hint="generate the project again with -o input_npz=INPUTS.npz")
        self.close_transport()
        exit_status = None
        clock = emulator_clock(board, options)
        if clock is not None:
            runner = self._qemu_process(board, options)
            try:
                text = standalone.read_report(runner.start(), timeout_sec)
                exit_status = runner.wait(timeout=10.0)
            finally:
                runner.stop()
        else:
            import serial

            # The image runs at reset: open the port, then reset the board by flashing it again.
            with serial.serial_for_url(self._physical_port(board, options), baudrate=board["baud"]) as port:
                deadline = time.monotonic() + timeout_sec
                self.flash(options)
                text = standalone.read_report(port, max(1.0, deadline - time.monotonic()))
        report = standalone.parse_report(text)
        for out in report["outputs"]:
            out["hex"] = out.pop("data").hex()
        report.update(exit_status=exit_status, emulated=clock is not None, instructions=None,
                      note=EMULATOR_NOTE if clock is not None else "")
        if clock is not None and clock.counts_instructions and report.get("ticks") is not None \
                and report.get("timer_hz"):
            report["instructions"] = clock.instructions(report["ticks"] / report["timer_hz"])
            report["note"] += (f"; the run took {report['instructions']} instructions "
                               f"(-icount shift={clock.icount_shift})")
        return report


if __name__ == "__main__":
    main(BaremetalHandler())
