"""A device's UART as a Project API transport, for templates whose device talks over a serial line:
a physical board's port (pyserial), or the socket of a board emulated by QEMU (with the QEMU process
behind it, stopped when the link closes).

`read` and `write` raise the protocol's errors: IoTimeoutError when nothing arrives (or cannot be
sent) in time, TransportClosedError when the link is not open or the line dropped (naming QEMU's exit
status when QEMU is what went away). Standard library only at import; pyserial when a port is used.
"""

from __future__ import annotations

from typing import Optional

from .errors import IoTimeoutError, TransportClosedError

DEFAULT_TIMEOUT_SEC = 300.0


class UartLink:
    """The open serial line of one device, or none. Safe to close more than once."""

    def __init__(self):
        self.port = None  # a pyserial port
        self.qemu = None  # a qemu.QemuProcess when the board is emulated

    @property
    def is_open(self) -> bool:
        return self.port is not None

    def attach(self, port, qemu=None) -> None:
        """Serve `port` (already open); `qemu` is stopped with it."""
        self.close()
        self.port, self.qemu = port, qemu

    def open_serial(self, device: str, baudrate: int) -> None:
        """Open a physical board's serial device."""
        import serial

        self.attach(serial.serial_for_url(device, baudrate=baudrate, timeout=0))

    def close(self) -> None:
        """Close the port and stop QEMU, if any."""
        port, self.port = self.port, None
        qemu, self.qemu = self.qemu, None
        try:
            if port is not None:
                port.close()
        finally:
            if qemu is not None:
                qemu.stop()

    def _open_port(self):
        if self.port is None:
            raise TransportClosedError("the transport is not open; call open_transport first")
        return self.port

    def _closed(self, err) -> TransportClosedError:
        status = self.qemu.poll() if self.qemu else None
        detail = f"; QEMU exited with status {status}" if status is not None else ""
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
