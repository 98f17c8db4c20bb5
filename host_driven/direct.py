"""Open a project's device transport: directly when its server offers it, else through the relay.

The ``utvm_open_direct_transport(options)`` extension (declared in server_info_query's
``utvm_extensions``) returns a description of how to reach the device without JSON-RPC:

- ``{"kind": "subprocess", "argv": [...], "cwd": ..., "name": ...}``: the client starts the
  program itself and talks over its pipes (the POSIX host template; ``ssh`` to a Jetson); ``name``
  (optional) says what it is in error messages;
- ``{"kind": "serial", "url": "socket://127.0.0.1:PORT", "baudrate": N}``: a pyserial URL;
- ``{"kind": "tcp", "host": ..., "port": ...}``: a TCP socket.

For serial and TCP the server may keep something running (an emulator), so closing the
transport also calls the server's ``close_transport``. A server without the extension (any
version-1 server, microTVM's included) is used through :class:`RelayTransport`.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional

from utvm.project_api.errors import UserError

from .closable import ClosableTransport
from .relay_transport import RelayTransport, close_server_transport
from .transport import SubprocessTransport, Transport

DIRECT_EXTENSION = "utvm_open_direct_transport"
TRANSPORT_MODES = ("auto", "direct", "relay")


def transport_from_description(description: Mapping[str, Any]) -> Transport:
    """Open the transport a server described (see the module docstring for the forms)."""
    kind = description.get("kind") if isinstance(description, Mapping) else None
    if kind == "subprocess":
        return SubprocessTransport(
            description["argv"], cwd=description.get("cwd"), env=description.get("env"),
            name=description.get("name") or "device process",
        )
    if kind == "serial":
        from .serial_transport import DEFAULT_BAUDRATE, SerialTransport

        return SerialTransport(
            description["url"], baudrate=int(description.get("baudrate") or DEFAULT_BAUDRATE)
        )
    if kind == "tcp":
        from .tcp_transport import TcpTransport

        return TcpTransport(description["host"], int(description["port"]))
    raise UserError(
        f"the server described a direct transport this client does not know: {description!r}",
        hint="use transport='relay', or update utvm",
    )


class ServerOwnedTransport(ClosableTransport):
    """A direct transport whose far end the server keeps running; closing tells the server too."""

    def __init__(self, inner: Transport, project):
        self.inner = inner
        self.project = project
        self.link = f"the direct transport of {project.directory}"

    def read(self, n: int, timeout: float) -> bytes:
        return self.inner.read(n, timeout)

    def read_into(self, buffer: memoryview, timeout: float) -> int:
        return self.inner.read_into(buffer, timeout)

    def write(self, data: bytes, timeout: float) -> None:
        self.inner.write(data, timeout)

    def _release(self) -> None:
        try:
            self.inner.close()
        finally:
            close_server_transport(self.project)


def open_direct_transport(project, options: Optional[Mapping[str, Any]] = None) -> Transport:
    """Ask the project's server for a direct transport and open it."""
    if not project.has_extension(DIRECT_EXTENSION):
        raise UserError(
            f"the server of {project.directory} does not offer a direct transport",
            hint="use transport='relay' (or 'auto', which falls back to it)",
        )
    options = project.prepare_options("open_transport", options)
    description = project.client.call(DIRECT_EXTENSION, {"options": options})
    transport = transport_from_description(description)
    if description.get("kind") == "subprocess":
        return transport
    return ServerOwnedTransport(transport, project)


def open_project_transport(
    project, options: Optional[Mapping[str, Any]] = None, mode: str = "auto"
) -> Transport:
    """The device transport of a GeneratedProject: ``mode`` is "auto", "direct" or "relay".

    "auto" uses the direct transport when the server declares it, and the relay otherwise.
    """
    if mode not in TRANSPORT_MODES:
        raise UserError(f"unknown transport mode {mode!r}", hint=f"use one of {', '.join(TRANSPORT_MODES)}")
    if mode == "direct" or (mode == "auto" and project.has_extension(DIRECT_EXTENSION)):
        return open_direct_transport(project, options)
    return RelayTransport(project, options)
