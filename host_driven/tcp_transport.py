"""A transport over a TCP connection (a device or emulator that serves the protocol on a socket)."""

from __future__ import annotations

import socket

from .closable import ClosableTransport
from .errors import IoTimeoutError, TransportClosedError

DEFAULT_CONNECT_TIMEOUT = 10.0


class TcpTransport(ClosableTransport):
    """Bytes over ``socket.create_connection((host, port))``, with a deadline on every call."""

    def __init__(self, host: str, port: int, connect_timeout: float = DEFAULT_CONNECT_TIMEOUT):
        self.address = f"{host}:{port}"
        self.link = f"TCP transport to {self.address}"
        try:
            self._sock = socket.create_connection((host, int(port)), timeout=connect_timeout)
        except OSError as err:
            raise TransportClosedError(f"cannot connect to {self.address}: {err}") from err
        # Small request packets must not wait for Nagle's algorithm.
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def read(self, n: int, timeout: float) -> bytes:
        self._check_open()
        self._sock.settimeout(max(0.0, timeout) or 1e-6)
        try:
            data = self._sock.recv(n)
        except socket.timeout as err:
            raise IoTimeoutError(f"no bytes from {self.address} within {timeout:.3g} s") from err
        except OSError as err:
            raise TransportClosedError(f"connection to {self.address} failed: {err}") from err
        if not data:
            raise TransportClosedError(f"{self.address} closed the connection")
        return data

    def write(self, data: bytes, timeout: float) -> None:
        self._check_open()
        self._sock.settimeout(max(0.0, timeout) or 1e-6)
        try:
            self._sock.sendall(data)
        except socket.timeout as err:
            raise IoTimeoutError(
                f"{self.address} did not take {len(data)} bytes within {timeout:.3g} s"
            ) from err
        except OSError as err:
            raise TransportClosedError(f"connection to {self.address} failed: {err}") from err

    def _release(self) -> None:
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._sock.close()
