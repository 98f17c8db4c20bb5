"""Errors of the farm: a tracker out of reach, a queue that did not move in time, a node that refused
or went away. Each says what happened and what to do, as every utvm error does."""

from __future__ import annotations

from utvm.project_api.errors import UserError


class FarmError(UserError):
    """The farm could not do what was asked: the tracker, a node or the session failed."""

    exit_code = 1


class QueueTimeoutError(FarmError):
    """No board of the key was free before the client's deadline."""


class TokenRefusedError(FarmError):
    """The node refused the token (missing or wrong); nothing ran."""

    exit_code = 2


class NodeLostError(FarmError):
    """The node's session ended under the client (the node died, dropped the connection, or stopped
    answering within the call's deadline)."""
