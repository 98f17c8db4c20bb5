"""A board's serial port as a Project API transport: finding it, and reads and writes with the
protocol's deadlines and errors.

- :func:`board_serial_port` is the port a template opens for a physical board: the ``serial_port``
  option, else the one port whose USB VID:PID is in the board record (and whose serial number is the
  ``serial_number`` option, when given); anything else is a UserError that lists the ports found.
- :class:`SerialLink` reads and writes a pyserial port (a device, an emulator's ``socket://`` UART,
  a pty) as ``read_transport`` and ``write_transport`` must: IoTimeoutError when nothing arrives in
  time, TransportClosedError when the port is gone (the caller's ``closed`` adds what it knows, e.g.
  an emulator's exit status).

Standard library only; pyserial is imported where a port is used. Generated projects carry this file.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Optional

from . import usb_discovery
from .errors import IoTimeoutError, TransportClosedError, UserError

# read_transport and write_transport with no timeout_sec wait at most this long.
DEFAULT_TIMEOUT_SEC = 300.0


def board_serial_port(board: Mapping[str, Any], options: Mapping[str, Any]) -> str:
    """The serial device of a physical board (see the module docstring)."""
    if options.get("serial_port"):
        return str(options["serial_port"])
    try:
        return usb_discovery.find_serial_port(board.get("usb_vid_pid") or [], options.get("serial_number"),
                                              str(board.get("name")))
    except usb_discovery.DiscoveryError as err:
        raise UserError(str(err),
                        hint="plug the board in, or name its port with -o serial_port=...") from None


class SerialLink:
    """read/write of one open pyserial port with the Project API's deadlines (module docstring)."""

    def __init__(self, port, closed: Optional[Callable[[Exception], TransportClosedError]] = None):
        self.port = port
        self._closed = closed or (lambda err: TransportClosedError(f"the serial port closed: {err}"))

    def read(self, n: int, timeout_sec: Optional[float]) -> bytes:
        """1..n bytes: the first within the timeout, then whatever else has arrived."""
        import serial

        timeout = DEFAULT_TIMEOUT_SEC if timeout_sec is None else timeout_sec
        try:
            self.port.timeout = timeout
            first = self.port.read(1)
            if not first:
                raise IoTimeoutError(f"no bytes from the device within {timeout} s")
            self.port.timeout = 0
            return first + (self.port.read(n - 1) if n > 1 else b"")
        except serial.SerialException as err:
            raise self._closed(err) from None

    def write(self, data: bytes, timeout_sec: Optional[float]) -> None:
        import serial

        try:
            self.port.write_timeout = DEFAULT_TIMEOUT_SEC if timeout_sec is None else timeout_sec
            self.port.write(data)
        except serial.SerialTimeoutException:
            raise IoTimeoutError(
                f"the device did not take {len(data)} bytes within {timeout_sec} s") from None
        except serial.SerialException as err:
            raise self._closed(err) from None

    def close(self) -> None:
        try:
            self.port.close()
        except Exception:  # noqa: BLE001 - closing a port that is gone must not hide the real error
            pass


class BoardConnection:
    """A template's open transport to a board: a SerialLink, and the process behind it when the board
    is emulated (anything with ``stop()``, ``poll()`` and ``log_tail()``, e.g. a QemuProcess), which
    closing stops too. read and write raise TransportClosedError while nothing is attached."""

    def __init__(self, what: str = "the device's serial port"):
        self.what = what
        self.link: Optional[SerialLink] = None
        self.process = None

    def attach(self, port, process=None) -> None:
        """Use an open pyserial port (and the emulator process it reaches)."""
        self.link = SerialLink(port, self._closed)
        self.process = process

    def _closed(self, err: Exception) -> TransportClosedError:
        status = self.process.poll() if self.process is not None else None
        detail = "" if status is None else \
            f"; the emulator exited with status {status}:\n{self.process.log_tail(1000)}"
        return TransportClosedError(f"{self.what} closed: {err}{detail}")

    def _open(self) -> SerialLink:
        if self.link is None:
            raise TransportClosedError("the transport is not open; call open_transport first")
        return self.link

    def read(self, n: int, timeout_sec: Optional[float]) -> bytes:
        return self._open().read(n, timeout_sec)

    def write(self, data: bytes, timeout_sec: Optional[float]) -> None:
        self._open().write(data, timeout_sec)

    def close(self) -> None:
        """Close the port and stop the process; safe to call more than once."""
        link, self.link = self.link, None
        process, self.process = self.process, None
        try:
            if link is not None:
                link.close()
        finally:
            if process is not None:
                process.stop()
