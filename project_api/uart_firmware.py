"""The part of a template's handler that every firmware talking over a UART shares (bare-metal, Zephyr):
the project's board, its built image, QEMU for an emulated board and the serial port of a physical
one, the transport methods over a UartLink, and the utvm extensions that open a direct transport
and run an aot_standalone image.

A template subclasses `UartFirmwareHandler`, sets where its project keeps things (``server_dir``,
``elf``, ...) and implements options_schema, generate, build and flash. Standard library
only at import; pyserial where a port is opened.
"""

from __future__ import annotations

import pathlib
import time
from typing import Dict, Optional

from . import board_records, npy, template_support, usb_discovery
from .emulator_clock import emulator_clock
from .errors import ProjectStateError, UserError
from .options import ProjectOption
from .qemu import QemuProcess
from .record import read_record
from .server import ProjectAPIHandler, TransportTimeouts
from .standalone_report import read_report, run_result
from .uart_link import UartLink

PROJECT_TYPES = ("host_driven", "aot_standalone")


def firmware_options(server_dir, platform_name: str) -> Dict[str, ProjectOption]:
    """The options every UART firmware template has, by name: board (a project offers its own board
    only; the template offers the database's boards of its platform), project_type, input_npz,
    serial_number, serial_port and qemu_icount."""
    record = read_record(server_dir)
    choices = [record.board_name] if record else board_records.board_names(platform_name)
    opt = ProjectOption
    return {o.name: o for o in (
        opt("board", type="str", choices=choices, required=["generate_project"],
            help=f"board from utvm's database (`utvm boards --template {platform_name}`)"),
        opt("project_type", type="str", choices=list(PROJECT_TYPES), default="host_driven",
            optional=["generate_project"],
            help="host_driven: the runtime serves the host over the UART; aot_standalone: the image runs "
                 "the model once on baked-in inputs and prints the outputs"),
        opt("input_npz", type="str", default="", optional=["generate_project"],
            help="aot_standalone: .npz of the inputs to bake in, by input name (default: seeded random)"),
        opt("serial_number", type="str", optional=["flash", "open_transport"],
            help="USB serial number of the board's probe, when more than one board is plugged in"),
        opt("serial_port", type="str", optional=["open_transport"],
            help="serial device of a physical board (default: found by the board's USB VID:PID)"),
        opt("qemu_icount", type="bool", default=True, optional=["open_transport"],
            help="emulated boards: run QEMU with -icount (the board's icount_shift, 0: 1 ns per "
                 "instruction), so the device clock counts instructions"),
    )}


class UartFirmwareHandler(ProjectAPIHandler):
    """A Project API handler whose device is firmware on a board's UART (or on QEMU's)."""

    platform_name = ""
    server_dir = pathlib.Path(".")  # the directory of the template's or project's server
    elf = "build/firmware.elf"  # the built image, relative to the project
    standalone_inputs_npz = "standalone_inputs.npz"
    emulator_note = "QEMU timings are not real-board timings"
    timeouts = TransportTimeouts(session_start_retry_timeout_sec=2.0, session_start_timeout_sec=10.0,
                                 session_established_timeout_sec=60.0)

    def __init__(self):
        self._link = UartLink()

    # -- what the template provides --

    def options_schema(self) -> list:
        """The template's ProjectOptions (a generated project offers its own board only)."""
        raise NotImplementedError

    def generate(self, mlf_path: pathlib.Path, project_dir: pathlib.Path, options):
        """generate_project's work; returns a server.GeneratedProject."""
        raise NotImplementedError

    def resolve_board(self, name: str) -> dict:
        """The board record a project for board `name` keeps (the database's, by default)."""
        return board_records.resolve_board(name, self.platform_name)

    # -- Project API --

    def server_info_query(self, tvm_version):
        return template_support.template_server_info(self.server_dir, self.platform_name,
                                                     self.options_schema())

    def generate_project(self, model_library_format_path, standalone_crt_dir, project_dir, options):
        return self.generate(pathlib.Path(model_library_format_path), pathlib.Path(project_dir), options)

    # -- the project --

    def _log(self, options, text: str) -> None:
        if options.get("verbose"):
            print(f"{self.platform_name}: {text}", flush=True)

    def _board(self) -> dict:
        record = read_record(self.server_dir)
        if record is None or not record.board:
            raise ProjectStateError("the template has no board; generate a project first")
        return record.board

    def _elf(self) -> pathlib.Path:
        elf = self.server_dir / self.elf
        if not elf.is_file():
            raise ProjectStateError(f"{self.elf} does not exist; build the project first (`utvm build`)")
        return elf

    def _qemu_process(self, board: dict, options) -> QemuProcess:
        emulator = board["emulator"]
        clock = emulator_clock(board, options)
        # Said every time an emulated board starts, since benchmarks read its clock.
        print(f"{self.platform_name}: {self.emulator_note}; {clock.note()}", flush=True)
        return QemuProcess(self._elf(), emulator["machine"], cpu=emulator.get("cpu"),
                           system=emulator.get("system", "qemu-system-arm"), icount_shift=clock.icount_shift,
                           log_path=self._elf().parent / "qemu.log")

    def _physical_port(self, board: dict, options) -> str:
        if options.get("serial_port"):
            return options["serial_port"]
        try:
            return usb_discovery.find_serial_port(board["usb_vid_pid"], options.get("serial_number"),
                                                  board["name"])
        except usb_discovery.DiscoveryError as err:
            raise UserError(str(err),
                            hint="plug the board in, or name its port with -o serial_port=...") from None

    def _host_driven_board(self, options) -> dict:
        board = self._board()
        if options["project_type"] != "host_driven":
            raise ProjectStateError("this is an aot_standalone project: it has no transport; "
                                    "run it with `utvm run` (the utvm_run_standalone extension)")
        return board

    # -- transport --

    def open_transport(self, options):
        board = self._host_driven_board(options)
        self.close_transport()
        if board["kind"] == "emulated":
            qemu = self._qemu_process(board, options)
            self._link.attach(qemu.start(), qemu)
        else:
            port = self._physical_port(board, options)
            self._log(options, f"opening {port} at {board['baud']} baud")
            self._link.open_serial(port, board["baud"])
        return self.timeouts

    def close_transport(self):
        self._link.close()

    def read_transport(self, n, timeout_sec):
        return self._link.read(n, timeout_sec)

    def write_transport(self, data, timeout_sec):
        self._link.write(data, timeout_sec)

    # -- extensions --

    def utvm_resolve_board(self, options):
        """Extension: the record of the board option, as generate_project will resolve it (the client
        compiles a model for its TVM target before generating); a project's own board."""
        record = read_record(self.server_dir)
        if record is not None and record.board:
            return record.board
        return self.resolve_board(options["board"])

    def utvm_open_direct_transport(self, options):
        """Extension: the serial URL a utvm client opens itself. For an emulated board QEMU is started
        here (and stopped by close_transport); the guest runs once the client connects."""
        board = self._host_driven_board(options)
        self.close_transport()
        if board["kind"] == "emulated":
            qemu = self._qemu_process(board, options)
            url = qemu.launch()
            self._link.qemu = qemu  # stopped by close_transport
        else:
            url = self._physical_port(board, options)
        return {"kind": "serial", "url": url, "baudrate": board["baud"]}

    def utvm_standalone_inputs(self, options):
        """Extension: the inputs baked into an aot_standalone image, by name, as hex."""
        if options["project_type"] != "aot_standalone":
            return {"baked": False, "inputs": None}
        arrays = npy.read_npz(self.server_dir / self.standalone_inputs_npz)
        return {"baked": True, "inputs": {name: data.hex() for name, (_, _, data) in arrays.items()}}

    def _standalone_exit(self, qemu: QemuProcess) -> Optional[int]:
        """After the report of an aot_standalone run under QEMU: QEMU's exit status, for firmware that
        ends the run (through semihosting); None for firmware that stays up (QEMU is stopped)."""
        return None

    def utvm_run_standalone(self, options, inputs=None, timeout_sec=60.0):
        """Extension: run an aot_standalone image once and return its report (see
        standalone_report.run_result). The inputs are the ones baked into the image at
        generate_project; giving others is refused. A physical board is reset by flashing it while
        its port is open."""
        board = self._board()
        if options["project_type"] != "aot_standalone":
            raise ProjectStateError("this is a host_driven project; open a session instead (`utvm run`)")
        if inputs:
            raise UserError("this aot_standalone image runs on the inputs baked into it at generate time "
                            f"({self.standalone_inputs_npz}); it takes no others",
                            hint="generate the project again with -o input_npz=INPUTS.npz")
        self.close_transport()
        exit_status = None
        clock = emulator_clock(board, options)
        if clock is not None:
            qemu = self._qemu_process(board, options)
            try:
                text = read_report(qemu.start(), timeout_sec)
                exit_status = self._standalone_exit(qemu)
            finally:
                qemu.stop()
        else:
            import serial

            with serial.serial_for_url(self._physical_port(board, options), baudrate=board["baud"]) as port:
                deadline = time.monotonic() + timeout_sec
                self.flash(options)
                text = read_report(port, max(1.0, deadline - time.monotonic()))
        return run_result(text, clock, exit_status, self.emulator_note)
