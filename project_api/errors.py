"""The errors of the Project API floor.

`UserError` is meant for the person at the keyboard: one clear line, plus a hint on what to do.

The `utvm` command prints ``error: <message>`` and ``hint: <hint>`` and exits with
``exit_code``: 2 when the request itself is wrong (bad option, missing file), 1 when the work
failed (a build error, a server that died). ``--verbose`` adds the traceback.
"""

from __future__ import annotations

from typing import Optional


class UserError(Exception):
    """A problem the user can fix.

    message is one line saying what is wrong, details (optional, may span lines) is evidence such
    as the tail of a server's stderr, and hint says what to do.
    """

    exit_code = 2

    def __init__(self, message: str, hint: Optional[str] = None, details: Optional[str] = None):
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.details = details

    def __str__(self) -> str:
        parts = [self.message]
        if self.details:
            parts.append(self.details)
        if self.hint:
            parts.append(f"hint: {self.hint}")
        return "\n".join(parts)


class ProjectAPIError(UserError):
    """A Project API call failed: the server died, hung, replied with garbage, or raised."""

    exit_code = 1


# ---- Errors a template's handler raises on purpose. The server sends the class name over the wire;
# the client re-raises IoTimeoutError, TransportClosedError and UnsupportedTVMVersionError as these
# same classes (see docs/project-api.md).


class ServerError(Exception):
    """Base class of the errors a handler raises on purpose; the client re-raises them by name."""


class IoTimeoutError(ServerError):
    """read_transport got no byte before its timeout (or write_transport could not finish in time)."""


class TransportClosedError(ServerError):
    """The transport reached end-of-file, or is not open."""


class UnsupportedTVMVersionError(ServerError):
    """The client's TVM version is one this server does not support."""


class BuildError(ServerError):
    """The project's build tool or compiler failed; its output is in the server's output."""


class ProjectStateError(ServerError):
    """A method was called on a project that is not ready for it (not built, wrong project type)."""
