"""Errors meant for the person at the keyboard: one clear line, plus a hint on what to do.

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
