"""A device's UART as a Project API transport, for templates whose device talks over a serial line:
a physical board's port (pyserial), or the UART of an emulated board (QEMU's socket, simavr's
pseudo-terminal) with the emulator process behind it, stopped when the link closes.

`read` and `write` raise the protocol's errors: IoTimeoutError when nothing arrives (or cannot be
sent) in time, TransportClosedError when the link is not open or the line dropped (with the
emulator's exit status and the end of its log when the emulator is what went away). Standard library
only at import; pyserial when a port is used.
"""

from __future__ import annotations

from typing import Optional

from .errors import IoTimeoutError, TransportClosedError

DEFAULT_TIMEOUT_SEC = 300.0


def emulator_name(emulator) -> str:
    """How messages name an emulator process: QEMU, or the `system` it says it is (e.g. simavr)."""
    system = str(getattr(emulator, "system", None) or "the emulator")
    return "QEMU" if system.startswith("qemu-system-") else system


class UartLink:
    """The open serial line of one device, or none. Safe to close more than once."""

    def __init__(self):
        self.port = None  # a pyserial port
        # The emulator behind the port, if any: a process with stop() and poll(), and log_tail() and
        # `system` (its name) when it has them, e.g. a qemu.QemuProcess.
        self.emulator = None

    @property
    def is_open(self) -> bool:
        return self.port is not None

    def attach(self, port, emulator=None) -> None:
        """Serve `port` (already open); `emulator` is stopped with it."""
        self.close()
        self.port, self.emulator = port, emulator

    def open_serial(self, device: str, baudrate: int) -> None:
        """Open a physical board's serial device."""
        import serial

        self.attach(serial.serial_for_url(device, baudrate=baudrate, timeout=0))

    def close(self) -> None:
        """Close the port and stop the emulator, if any."""
        port, self.port = self.port, None
        emulator, self.emulator = self.emulator, None
        try:
            if port is not None:
                port.close()
        finally:
            if emulator is not None:
                emulator.stop()

    def _open_port(self):
        if self.port is None:
            raise TransportClosedError("the transport is not open; call open_transport first")
        return self.port

    def _closed(self, err) -> TransportClosedError:
        status = self.emulator.poll() if self.emulator else None
        detail = ""
        if status is not None:
            name = emulator_name(self.emulator)
            tail = self.emulator.log_tail(1000) if hasattr(self.emulator, "log_tail") else ""
            detail = f"; {name} exited with status {status}" + (f":\n{tail}" if tail.strip() else "")
        return TransportClosedError(f"the device's UART closed: {err}{detail}")

    def read(self, n: int, timeout_sec: Optional[float]) -> bytes:
        """1..n bytes, waiting up to timeout_sec (None: DEFAULT_TIMEOUT_SEC) for the first."""
        import serial

        port = self._open_port()
        timeout = DEFAULT_TIMEOUT_SEC if timeout_sec is None else timeout_sec
        try:
            port.timeout = timeout
            first = port.read(1)
            if not first:
                raise IoTimeoutError(f"no bytes from the device within {timeout} s")
            port.timeout = 0
            return first + (port.read(n - 1) if n > 1 else b"")
        except serial.SerialException as err:
            raise self._closed(err) from None

    def write(self, data: bytes, timeout_sec: Optional[float]) -> None:
        """Send all of data within timeout_sec (None: DEFAULT_TIMEOUT_SEC)."""
        import serial

        port = self._open_port()
        try:
            port.write_timeout = DEFAULT_TIMEOUT_SEC if timeout_sec is None else timeout_sec
            port.write(data)
        except serial.SerialTimeoutException:
            raise IoTimeoutError(
                f"the device did not take {len(data)} bytes within {timeout_sec} s") from None
        except serial.SerialException as err:
            raise self._closed(err) from None
