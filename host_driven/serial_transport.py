"""A transport over a pyserial URL: a serial device, ``socket://``, ``rfc2217://`` or ``loop://``.

``serial.serial_for_url`` handles every URL form pyserial knows, so a UART, an emulator's UART on
a TCP socket chardev, and an in-process loopback are all the same class here.
"""

from __future__ import annotations

from typing import Optional

from .closable import ClosableTransport
from .errors import IoTimeoutError, TransportClosedError

DEFAULT_BAUDRATE = 115200


class SerialTransport(ClosableTransport):
    """Bytes through ``serial.serial_for_url(url, baudrate)``; every read and write has a deadline.

    Extra keyword arguments go to ``serial_for_url`` (e.g. ``rtscts=True``).
    """

    def __init__(self, url: str, baudrate: int = DEFAULT_BAUDRATE, **kwargs):
        import serial  # pyserial is a core dependency; imported here to keep `utvm --help` fast

        self.url = url
        self.link = f"serial transport {url}"
        self._serial_error = serial.SerialException
        self._timeout_error = serial.SerialTimeoutException
        try:
            self._port = serial.serial_for_url(
                url, baudrate=baudrate, timeout=0, write_timeout=None, **kwargs
            )
        except (serial.SerialException, ValueError, OSError) as err:
            raise TransportClosedError(f"cannot open serial port {url}: {err}") from err
        self._timeout: Optional[float] = 0.0
        self._write_timeout: Optional[float] = None

    def _set_timeout(self, timeout: float) -> None:
        # Setting pyserial's timeout may reconfigure a real port, so only when it changes.
        if self._timeout != timeout:
            self._port.timeout = timeout
            self._timeout = timeout

    def read(self, n: int, timeout: float) -> bytes:
        self._check_open()
        try:
            self._set_timeout(max(0.0, timeout))
            first = self._port.read(1)
            if not first:
                raise IoTimeoutError(f"no bytes from {self.url} within {timeout:.3g} s")
            # Whatever else has arrived, without waiting (pyserial's in_waiting is not a count for
            # every URL scheme, so a zero-timeout read takes what is there).
            self._set_timeout(0.0)
            rest = self._port.read(n - 1) if n > 1 else b""
        except self._serial_error as err:
            raise TransportClosedError(f"serial transport {self.url} closed: {err}") from err
        return first + rest

    def write(self, data: bytes, timeout: float) -> None:
        self._check_open()
        try:
            write_timeout = max(0.001, timeout)
            if self._write_timeout != write_timeout:  # as for reads: a real port is reconfigured
                self._port.write_timeout = self._write_timeout = write_timeout
            self._port.write(data)
            self._port.flush()
        except self._timeout_error as err:
            raise IoTimeoutError(f"{self.url} did not take {len(data)} bytes within {timeout:.3g} s") from err
        except self._serial_error as err:
            raise TransportClosedError(f"serial transport {self.url} closed: {err}") from err

    def _release(self) -> None:
        try:
            self._port.close()
        except (self._serial_error, OSError):
            pass
