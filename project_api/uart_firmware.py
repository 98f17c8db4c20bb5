"""The part of a template's handler that every firmware talking over a UART shares (bare-metal, Zephyr,
Arduino): the project's board, its built image, an emulator for an emulated board (QEMU unless the
template says otherwise) and the serial port of a physical one, the transport methods over a
UartLink, and the utvm extensions that open a direct transport, run an aot_standalone image, and put
an mlperftiny image behind a pseudo-terminal.

A template subclasses `UartFirmwareHandler`, sets where its project keeps things (``server_dir``,
``elf``, ...) and the project types it offers (``project_types``), and implements options_schema,
generate, build and flash. A template whose boards run under another emulator overrides `_emulated`
and `_emulator` (Arduino: simavr on a pseudo-terminal). Standard library only at import; pyserial
where a port is opened.
"""

from __future__ import annotations

import pathlib
import time
from typing import Dict, Optional

from . import board_records, mlperftiny, npy, template_support, usb_discovery
from .emulator_clock import emulator_clock
from .errors import ProjectStateError, UserError
from .options import ProjectOption
from .pty_bridge import bridge_status
from .qemu import QemuProcess
from .record import read_record
from .server import ProjectAPIHandler, TransportTimeouts
from .standalone_report import read_report, run_result
from .uart_link import UartLink, emulator_name

# The project types every UART firmware template offers; a template may offer mlperftiny as well.
PROJECT_TYPES = ("host_driven", "aot_standalone")
_TYPE_HELP = {
    "host_driven": "host_driven: the runtime serves the host over the UART",
    "aot_standalone": "aot_standalone: the image runs the model once on baked-in inputs and prints the "
                      "outputs",
    mlperftiny.PROJECT_TYPE: mlperftiny.TYPE_HELP,
}
# Why a project of one type refuses a step meant for others.
WRONG_TYPE = {
    "host_driven": "this is a host_driven project; open a session instead (`utvm run`)",
    "aot_standalone": "this is an aot_standalone project: it has no transport; "
                      "run it with `utvm run` (the utvm_run_standalone extension)",
    mlperftiny.PROJECT_TYPE: "this is an mlperftiny project: the MLPerf Tiny runner drives it, on the "
                             "board's serial port, or for an emulated board on the pseudo-terminal "
                             "`utvm pty` gives",
}


def firmware_options(server_dir, platform_name: str, project_types=PROJECT_TYPES) -> Dict[str, ProjectOption]:
    """The options every UART firmware template has, by name: board (a project offers its own board
    only; the template offers the database's boards of its platform), project_type (one of
    project_types, those the template offers), input_npz, serial_number, serial_port and
    qemu_icount; and mlperf_model when mlperftiny is offered."""
    record = read_record(server_dir)
    choices = [record.board_name] if record else board_records.board_names(platform_name)
    opt = ProjectOption
    mlperf = [mlperftiny.model_option()] if mlperftiny.PROJECT_TYPE in project_types else []
    return {o.name: o for o in (
        opt("board", type="str", choices=choices, required=["generate_project"],
            help=f"board from utvm's database (`utvm boards --template {platform_name}`)"),
        opt("project_type", type="str", choices=list(project_types), default="host_driven",
            optional=["generate_project"], help="; ".join(_TYPE_HELP[t] for t in project_types)),
        *mlperf,
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
    project_types = PROJECT_TYPES  # the project types the template offers (give firmware_options the same)
    server_dir = pathlib.Path(".")  # the directory of the template's or project's server
    elf = "build/firmware.elf"  # the built image, relative to the project
    standalone_inputs_npz = "standalone_inputs.npz"
    emulator_note = "QEMU timings are not real-board timings"
    timeouts = TransportTimeouts(session_start_retry_timeout_sec=2.0, session_start_timeout_sec=10.0,
                                 session_established_timeout_sec=60.0)

    def __init__(self):
        self._link = UartLink()
        self._bridge = None  # the pseudo-terminal of utvm_open_pty
        if mlperftiny.PROJECT_TYPE not in self.project_types:
            # The server lists and serves the callable utvm_* attributes: these serve mlperftiny only.
            self.utvm_open_pty = self.utvm_pty_status = None

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

    def _emulated(self, board: dict, options) -> bool:
        """Whether this call's device is an emulator (the board record's kind, by default)."""
        return board["kind"] == "emulated"

    def _emulator(self, board: dict, options):
        """The emulator process for one run of the image, not yet started: QEMU by default. Whatever a
        template returns instead has QemuProcess's launch() (the UART's URL; the firmware starts when
        a client opens it), start() (launch and open it: the pyserial port), poll(), wait(timeout)
        and stop()."""
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

    def _board_for(self, options, types) -> dict:
        """The board, for a step that serves projects of these types only."""
        board = self._board()
        if options["project_type"] not in types:
            raise ProjectStateError(WRONG_TYPE[options["project_type"]])
        return board

    # -- transport --

    def open_transport(self, options):
        board = self._board_for(options, ("host_driven", mlperftiny.PROJECT_TYPE))
        self.close_transport()
        if self._emulated(board, options):
            emulator = self._emulator(board, options)
            self._link.attach(emulator.start(), emulator)
        else:
            port = self._physical_port(board, options)
            self._log(options, f"opening {port} at {board['baud']} baud")
            self._link.open_serial(port, board["baud"])
        return self.timeouts

    def close_transport(self):
        bridge, self._bridge = self._bridge, None
        if bridge is not None:  # first: its threads read and write the link
            bridge.close()
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
        """Extension: the serial URL a utvm client opens itself. For an emulated board the emulator is
        started here (and stopped by close_transport); the guest runs once the client connects."""
        board = self._board_for(options, ("host_driven",))
        self.close_transport()
        if self._emulated(board, options):
            emulator = self._emulator(board, options)
            url = emulator.launch()
            self._link.emulator = emulator  # stopped by close_transport
        else:
            url = self._physical_port(board, options)
        return {"kind": "serial", "url": url, "baudrate": board["baud"]}

    def utvm_open_pty(self, options):
        """Extension (mlperftiny): the serial device path a tool such as the MLPerf Tiny runner opens.
        For an emulated board the emulator is started here with its UART behind a new pseudo-terminal
        (until close_transport); a physical board's own serial port is returned as it is.
        Returns {path, bridged, baudrate, note}."""
        board = self._board_for(options, (mlperftiny.PROJECT_TYPE,))
        self.close_transport()
        if not self._emulated(board, options):
            return {"path": self._physical_port(board, options), "bridged": False, "baudrate": board["baud"],
                    "note": ""}
        emulator = self._emulator(board, options)
        self._link.attach(emulator.start(), emulator)
        try:
            self._bridge = mlperftiny.bridge_device(self.read_transport, self.write_transport,
                                                    f"{emulator_name(emulator)} UART")
        except BaseException:
            self.close_transport()
            raise
        self._log(options, f"{board['name']}'s UART is on {self._bridge.path}")
        return {"path": self._bridge.path, "bridged": True, "baudrate": board["baud"],
                "note": f"{self.emulator_note}; {emulator_clock(board, options).note()}"}

    def utvm_pty_status(self):
        """Extension: whether the pseudo-terminal of utvm_open_pty still reaches the device:
        {path, open, error}."""
        emulator = self._link.emulator
        status = emulator.poll() if emulator else None
        return bridge_status(self._bridge, None if status is None
                             else f"{emulator_name(emulator)} exited with status {status}")

    def utvm_standalone_inputs(self, options):
        """Extension: the inputs baked into an aot_standalone image, by name, as hex."""
        if options["project_type"] != "aot_standalone":
            return {"baked": False, "inputs": None}
        arrays = npy.read_npz(self.server_dir / self.standalone_inputs_npz)
        return {"baked": True, "inputs": {name: data.hex() for name, (_, _, data) in arrays.items()}}

    def _standalone_exit(self, emulator) -> Optional[int]:
        """After the report of an aot_standalone run under an emulator: its exit status, for firmware
        that ends the run (through semihosting under QEMU); None for firmware that stays up (the
        emulator is stopped)."""
        return None

    def utvm_run_standalone(self, options, inputs=None, timeout_sec=60.0):
        """Extension: run an aot_standalone image once and return its report (see
        standalone_report.run_result). The inputs are the ones baked into the image at
        generate_project; giving others is refused. A physical board is reset by flashing it while
        its port is open."""
        board = self._board_for(options, ("aot_standalone",))
        if inputs:
            raise UserError("this aot_standalone image runs on the inputs baked into it at generate time "
                            f"({self.standalone_inputs_npz}); it takes no others",
                            hint="generate the project again with -o input_npz=INPUTS.npz")
        self.close_transport()
        exit_status = None
        if self._emulated(board, options):
            emulator = self._emulator(board, options)
            try:
                text = read_report(emulator.start(), timeout_sec)
                exit_status = self._standalone_exit(emulator)
            finally:
                emulator.stop()
        else:
            import serial

            with serial.serial_for_url(self._physical_port(board, options), baudrate=board["baud"]) as port:
                deadline = time.monotonic() + timeout_sec
                self.flash(options)
                text = read_report(port, max(1.0, deadline - time.monotonic()))
        return run_result(text, emulator_clock(board, options), exit_status, self.emulator_note)
