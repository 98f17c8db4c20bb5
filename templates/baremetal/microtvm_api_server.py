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

``generate_project`` checks that the model fits the board, then writes a self-contained project:
this server and a copy of the server base, the ``utvm_baremetal`` helpers, the runtime, the
model's C and a copy of the MLF, and a Makefile / linker script / board header rendered from the
board record (saved as board.json). Building needs make and arm-none-eabi-gcc; nothing of utvm.

Timings under QEMU are not real-board timings. With ``qemu_icount`` (the default) the emulated
clock advances one nanosecond per instruction, so a "time" is an instruction count.
"""

import json
import os
import pathlib
import shlex
import shutil
import subprocess
import sys
import time

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # utvm_baremetal, beside this file in the template and in projects
# The server base: a generated project carries its own copy; the template inside the utvm package
# uses the package's (../../project_api/server.py from here).
try:
    import utvm_project_server as server
except ImportError:
    sys.path.insert(0, str(HERE.parents[1] / "project_api"))
    import server

from utvm_baremetal import discovery, flash_runners, qemu, render, size_report, standalone  # noqa: E402

PLATFORM_NAME = "baremetal"
PROJECT_TYPES = ("host_driven", "aot_standalone")
ELF = "build/firmware.elf"
MAP_FILE = "build/firmware.map"
SIZES_FILE = "build/sizes.json"
STANDALONE_INPUTS_C = "src/app/standalone_inputs.c"
STANDALONE_INPUTS_NPZ = "standalone_inputs.npz"
# The fit check's allowance for everything but the model's constants and arena. Flash: the runtime,
# platform and C library code measure under 7 KiB (-Os, `build` reports it); the rest is room for the
# model's kernel code, only known once compiled. RAM: buffers and state (the stack comes on top).
RUNTIME_FLASH_BYTES = 12 * 1024
RUNTIME_RAM_BYTES = 3 * 1024
DEFAULT_READ_TIMEOUT_SEC = 300.0
EMULATOR_NOTE = "QEMU timings are not real-board timings"


def _template_board_names():
    try:
        from utvm.boards import board_names
    except ImportError:  # a generated project without utvm installed
        return None
    return board_names(PLATFORM_NAME)


def _project_board():
    path = HERE / render.BOARD_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def _options_schema():
    board = _project_board()
    choices = [board["name"]] if board else _template_board_names()
    opt = server.ProjectOption
    return [
        opt("board", type="str", choices=choices, required=["generate_project"],
            help="board from utvm's database (`utvm boards --template baremetal`)"),
        opt("project_type", type="str", choices=list(PROJECT_TYPES), default="host_driven",
            optional=["generate_project"],
            help="host_driven: the runtime serves the host over the UART; aot_standalone: the image runs "
                 "the model once on baked-in inputs and prints the outputs"),
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


BuildError = server.BuildError
ProjectStateError = server.ProjectStateError


def _log(options, text):
    server.log_step(options, PLATFORM_NAME, text)


# ---- generate_project (runs in the template, where utvm, numpy and jinja2 are installed) -------


def _check_board(name):
    from utvm.boards import get_board
    from utvm.project_api.errors import UserError

    board = get_board(name)
    if PLATFORM_NAME not in board.platforms:
        from utvm.boards import board_names

        raise UserError(f"board {name} is not a bare-metal board (its templates: "
                        f"{', '.join(board.platforms)})",
                        hint=f"choose one of: {', '.join(board_names(PLATFORM_NAME))}")
    return board


def _standalone_inputs(library, npz_path):
    """The inputs to bake in, as arrays in the model's dtypes and shapes (from npz_path, or seeded)."""
    import numpy as np
    from utvm.project_api.errors import UserError

    given = dict(np.load(npz_path)) if npz_path else {}
    rng = np.random.default_rng(0)
    arrays = {}
    for entry in library.inputs:
        name, dtype, shape = entry["name"], np.dtype(entry["dtype"]), tuple(entry["shape"])
        if npz_path and name not in given:
            raise UserError(f"{npz_path} has no array named {name!r}",
                            hint=f"it has: {', '.join(given) or 'none'}")
        if name in given:
            value = np.asarray(given[name])
            if value.size != int(np.prod(shape)):
                raise UserError(f"input {name!r} in {npz_path} has {value.size} elements; "
                                f"the model takes {shape}")
            arrays[name] = value.astype(dtype).reshape(shape)
        elif dtype.kind == "f":
            arrays[name] = rng.standard_normal(shape).astype(dtype)
        else:
            info = np.iinfo(dtype)
            arrays[name] = rng.integers(info.min, int(info.max) + 1, shape, dtype=dtype)
    return arrays


def _copy_helpers(project_dir):
    shutil.copy2(__file__, project_dir / "microtvm_api_server.py")
    server.copy_server_base(project_dir)
    shutil.copytree(HERE / "utvm_baremetal", project_dir / "utvm_baremetal",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))


def _generate(mlf_path, project_dir, options):
    from utvm.boards import check_fit, footprint_from_metadata
    from utvm.model_library import load

    board = _check_board(options["board"])
    library = load(mlf_path)  # refuses a malformed archive before anything is written
    stack = int(options["stack_bytes"])
    check_fit(board, footprint_from_metadata(library.metadata, runtime_ram=RUNTIME_RAM_BYTES + stack,
                                             runtime_flash=RUNTIME_FLASH_BYTES))
    project_type = options["project_type"]
    project_dir.mkdir(parents=True)
    _copy_helpers(project_dir)
    shutil.copy2(mlf_path, project_dir / "model.tar")
    library.extract(project_dir / "model")

    runtime = HERE.parent / "runtime"
    files = json.loads((runtime / "runtime_files.json").read_text())
    app_sources = []
    if project_type == "aot_standalone":
        import numpy as np

        arrays = _standalone_inputs(library, options.get("input_npz"))
        np.savez(project_dir / STANDALONE_INPUTS_NPZ, **arrays)
        source = project_dir / STANDALONE_INPUTS_C
        source.parent.mkdir(parents=True, exist_ok=True)
        source.write_text(standalone.inputs_c_source([(n, a.tobytes()) for n, a in arrays.items()]))
        app_sources.append(source)
    render.write_firmware_tree(
        project_dir, board.to_dict(), project_type, runtime / "include",
        runtime_sources=[runtime / rel for rel in files["sources"]],
        generated_sources=sorted((project_dir / "model" / "codegen" / "host" / "src").glob("*.c")),
        include_dirs=[project_dir / "model" / "codegen" / "host" / "include"],
        app_sources=app_sources, stack_bytes=stack,
    )
    _log(options, f"generated {project_type} project for {library.name} on {board.name} in {project_dir}")


# ---- the generated project (standard library and pyserial only) -------------------------------


def _report_sizes(board, cflags):
    """Sizes from the ELF and the link map, against the board; saved in build/sizes.json and printed."""
    record, lines = size_report.size_report(HERE / ELF, HERE / MAP_FILE, board, cflags, label=ELF)
    (HERE / SIZES_FILE).write_text(json.dumps(record, indent=2) + "\n")
    for line in lines:
        print(f"{PLATFORM_NAME}: {line}", flush=True)


def _icount_shift(board, options):
    """QEMU's -icount shift for this run (the board record's, default 0), or None without -icount."""
    if not options.get("qemu_icount", True):
        return None
    return int(board["emulator"].get("icount_shift") or 0)


def _emulator_note(board, options):
    """Said every time an emulated board starts, since benchmarks read its clock."""
    shift = _icount_shift(board, options)
    counts = "ticks follow the host's clock" if shift is None else \
        f"the guest clock counts instructions ({1 << shift} ns each), so device times are instruction counts"
    print(f"baremetal: {board['name']} runs under QEMU {board['emulator']['machine']}: {EMULATOR_NOTE}; "
          f"{counts}", flush=True)


class BaremetalHandler(server.ProjectAPIHandler):
    def __init__(self):
        self._qemu = None
        self._serial = None

    # -- helpers --

    def _saved_options(self):
        project = server.load_project_file(HERE) or {}
        return dict(project.get("options") or {})

    def _board(self):
        board = _project_board()
        if board is None:
            raise ProjectStateError("the template has no board; generate a project first")
        return board

    def _project_type(self, options):
        return options.get("project_type") or self._saved_options().get("project_type", "host_driven")

    def _elf(self):
        elf = HERE / ELF
        if not elf.is_file():
            raise ProjectStateError(f"{ELF} does not exist; build the project first")
        return elf

    def _qemu_process(self, board, options):
        emulator = board["emulator"]
        return qemu.QemuProcess(self._elf(), emulator["machine"], cpu=emulator.get("cpu"),
                                system=emulator.get("system", "qemu-system-arm"),
                                icount_shift=_icount_shift(board, options),
                                log_path=HERE / "build" / "qemu.log")

    def _physical_port(self, board, options):
        if options.get("serial_port"):
            return options["serial_port"]
        return discovery.find_serial_port(board["usb_vid_pid"], options.get("serial_number"), board["name"])

    def _timeouts(self):
        return server.TransportTimeouts(session_start_retry_timeout_sec=2.0, session_start_timeout_sec=10.0,
                                        session_established_timeout_sec=60.0)

    def _host_driven_board(self, options):
        board = self._board()
        if self._project_type(options) != "host_driven":
            raise ProjectStateError("this is an aot_standalone project: it has no transport; "
                                    "use the utvm_run_standalone extension (or read the UART yourself)")
        return board

    # -- Project API --

    def server_info_query(self, tvm_version):
        return server.template_server_info(HERE, PLATFORM_NAME, _options_schema())

    def generate_project(self, model_library_format_path, standalone_crt_dir, project_dir, options):
        _generate(pathlib.Path(model_library_format_path), pathlib.Path(project_dir), options)

    def build(self, options):
        board = self._board()
        make = shutil.which("make")
        if make is None:
            raise BuildError("make not found on PATH; install it (Debian: apt-get install make)")
        if shutil.which("arm-none-eabi-gcc") is None:
            raise BuildError("arm-none-eabi-gcc not found on PATH; install it (Debian: apt-get install "
                             "gcc-arm-none-eabi libnewlib-arm-none-eabi)")
        jobs = str(min(os.cpu_count() or 1, 8))
        command = [make, f"CFLAGS_EXTRA={options.get('cflags') or ''}", "-j", jobs]
        _log(options, " ".join(shlex.quote(c) for c in command))
        result = subprocess.run(command, cwd=HERE, stdin=subprocess.DEVNULL)
        if result.returncode != 0:
            raise BuildError(f"make exited with code {result.returncode}; the compiler's output is above")
        _report_sizes(board, options.get("cflags") or "")

    def flash(self, options):
        board = self._board()
        runner = flash_runners.select_runner(board, options.get("flash_runner"), options.get("serial_number"))
        _log(options, f"flashing {ELF} with {runner.name}")
        runner.flash(self._elf())
        if board["kind"] == "emulated":
            _log(options, f"{board['name']} is emulated: the image is loaded when the transport opens")

    def open_transport(self, options):
        board = self._host_driven_board(options)
        self.close_transport()
        if board["kind"] == "emulated":
            self._qemu = self._qemu_process(board, options)
            _emulator_note(board, options)
            self._serial = self._qemu.start()
        else:
            import serial

            port = self._physical_port(board, options)
            _log(options, f"opening {port} at {board['baud']} baud")
            self._serial = serial.serial_for_url(port, baudrate=board["baud"], timeout=0)
        return self._timeouts()

    def close_transport(self):
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
            raise server.TransportClosedError("the transport is not open; call open_transport first")
        return self._serial

    def _closed(self, err):
        status = self._qemu.poll() if self._qemu else None
        detail = f"; QEMU exited with status {status}" if status is not None else ""
        return server.TransportClosedError(f"the device's UART closed: {err}{detail}")

    def read_transport(self, n, timeout_sec):
        import serial

        port = self._open_port()
        timeout = DEFAULT_READ_TIMEOUT_SEC if timeout_sec is None else timeout_sec
        try:
            port.timeout = timeout
            first = port.read(1)
            if not first:
                raise server.IoTimeoutError(f"no bytes from the device within {timeout} s")
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
            raise server.IoTimeoutError(f"the device did not take {len(data)} bytes within {timeout_sec} s") \
                from None
        except serial.SerialException as err:
            raise self._closed(err) from None

    # -- extensions --

    def utvm_open_direct_transport(self, options):
        """Extension: the serial URL a utvm client opens itself. For an emulated board QEMU is started
        here (and stopped by close_transport); the guest runs once the client connects."""
        merged = self._saved_options()
        merged.update(options or {})
        board = self._host_driven_board(merged)
        self.close_transport()
        if board["kind"] == "emulated":
            self._qemu = self._qemu_process(board, merged)
            _emulator_note(board, merged)
            url = self._qemu.launch()
        else:
            url = self._physical_port(board, merged)
        return {"kind": "serial", "url": url, "baudrate": board["baud"]}

    def utvm_run_standalone(self, options=None, timeout_sec=60.0):
        """Extension: run an aot_standalone image and return its report: status, error, ticks,
        timer_hz, outputs [{index, name, hex}], exit_status (emulated boards), instructions (under
        QEMU -icount, else None) and note."""
        merged = self._saved_options()
        merged.update(options or {})
        board = self._board()
        if self._project_type(merged) != "aot_standalone":
            raise ProjectStateError("this is a host_driven project; open a session instead")
        self.close_transport()
        exit_status = None
        if board["kind"] == "emulated":
            runner = self._qemu_process(board, merged)
            try:
                text = standalone.read_report(runner.start(), timeout_sec)
                exit_status = runner.wait(timeout=10.0)
            finally:
                runner.stop()
        else:
            import serial

            # The image runs at reset: open the port, then reset the board by flashing it again.
            with serial.serial_for_url(self._physical_port(board, merged), baudrate=board["baud"]) as port:
                deadline = time.monotonic() + timeout_sec
                self.flash(merged)
                text = standalone.read_report(port, max(1.0, deadline - time.monotonic()))
        report = standalone.parse_report(text)
        for out in report["outputs"]:
            out["hex"] = out.pop("data").hex()
        report.update(exit_status=exit_status, emulated=board["kind"] == "emulated", instructions=None,
                      note=EMULATOR_NOTE if board["kind"] == "emulated" else "")
        shift = _icount_shift(board, merged) if board["kind"] == "emulated" else None
        if shift is not None and report.get("ticks") is not None and report.get("timer_hz"):
            # -icount: the guest clock advances 2^shift ns per instruction.
            report["instructions"] = round(report["ticks"] / report["timer_hz"] * 1e9 / (1 << shift))
            report["note"] += f"; the run took {report['instructions']} instructions (-icount shift={shift})"
        return report


if __name__ == "__main__":
    server.main(BaremetalHandler())
