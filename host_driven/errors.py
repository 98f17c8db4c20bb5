"""Errors of a host-driven session, each naming what went wrong and what to do.

``IoTimeoutError`` and ``TransportClosedError`` are the Project API's own classes, re-exported
here, so a caller catches one definition whether bytes travel over a pipe or through a server.
"""

from __future__ import annotations

from typing import Optional

from utvm.project_api.errors import IoTimeoutError, TransportClosedError, UserError

from . import protocol

__all__ = [
    "BadArgumentError",
    "DeviceError",
    "DeviceRebootedError",
    "HostDrivenError",
    "IoTimeoutError",
    "ProtocolError",
    "SessionClosedError",
    "TransportClosedError",
]


class HostDrivenError(UserError):
    """Base class of host-driven session errors."""

    exit_code = 1


class BadArgumentError(HostDrivenError, ValueError):
    """An argument the device would refuse (or that cannot be sent), caught before anything is sent."""

    exit_code = 2


class ProtocolError(HostDrivenError):
    """The device answered with something the protocol does not allow (wrong version, bad reply)."""


class DeviceError(HostDrivenError):
    """The device refused a command: ``code`` is the protocol status, ``message`` the device's text.

    The device keeps serving after sending one; the session stays usable.
    """

    def __init__(self, code: int, message: str, hint: Optional[str] = None):
        self.code = code
        self.code_name = protocol.STATUS_NAMES.get(code, f"status {code}")
        super().__init__(f"device error {self.code_name}: {message}", hint=hint or _HINTS.get(code))
        self.device_message = message


_HINTS = {
    protocol.ERR_MODEL_MISMATCH: "the firmware's runtime and model do not match; regenerate and rebuild it",
    protocol.ERR_UNKNOWN_COMMAND: "the firmware's runtime is older than the host; rebuild the project",
}


class DeviceRebootedError(HostDrivenError):
    """The device rebooted (or forgot the session) while a session was open.

    Tensors written before are gone. Open a new session; the firmware need not be flashed again.
    """

    def __init__(self, message: str, hint: Optional[str] = None, details: Optional[str] = None):
        hint = hint or "open a new session (Session.open()) and write the inputs again"
        super().__init__(message, hint=hint, details=details)


class SessionClosedError(HostDrivenError):
    """A request on a session that is not open (never opened, closed, or ended by a reboot)."""
