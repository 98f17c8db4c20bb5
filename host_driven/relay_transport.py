"""A transport relayed through a Project API server's open/read/write/close_transport methods.

Every chunk of bytes crosses JSON-RPC (base85), so this is the slow path; it works with any
version-1 server, including microTVM's. Prefer the direct transport when a server offers one.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional

from utvm.project_api.errors import ProjectAPIError, ServerError

from .closable import ClosableTransport
from .errors import IoTimeoutError


def close_server_transport(project) -> None:
    """Ask the project's server to close its transport; a dead or broken server has none left."""
    try:
        project.close_transport()
    except (ServerError, ProjectAPIError):
        pass


class RelayTransport(ClosableTransport):
    """Bytes through ``project.read_transport`` / ``write_transport`` of a GeneratedProject.

    Opening calls ``open_transport(options)``; closing calls ``close_transport()``. The project
    itself (its server) stays open and belongs to the caller.
    """

    def __init__(self, project, options: Optional[Mapping[str, Any]] = None):
        self.project = project
        self.link = f"the relay transport of {project.directory}"
        self.timeouts = (project.open_transport(options) or {}).get("timeouts") or {}

    def read(self, n: int, timeout: float) -> bytes:
        self._check_open()
        data = self.project.read_transport(n, max(0.0, timeout))
        if not data:
            # A version-1 server may answer an empty read instead of raising; it is a timeout.
            raise IoTimeoutError(f"no bytes from the relay within {timeout:.3g} s")
        return data

    def write(self, data: bytes, timeout: float) -> None:
        self._check_open()
        self.project.write_transport(bytes(data), max(0.0, timeout))

    def _release(self) -> None:
        close_server_transport(self.project)
