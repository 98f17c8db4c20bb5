"""The client's end of a farm session: the board a tracker handed out, and a transport through it.

:class:`RemoteBoard` holds the TVM RPC session to a node and calls utvm's functions there (see
wire.py); :class:`FarmTransport` is a host-driven Transport whose bytes go through the node's
read and write functions, so the ordinary host-driven session runs on top unchanged.
"""

from __future__ import annotations

import json
import pathlib
from typing import Any, Dict, Mapping, Optional

from utvm.host_driven.closable import ClosableTransport
from utvm.project_api.errors import IoTimeoutError, TransportClosedError

from . import wire
from .errors import FarmError, NodeLostError, TokenRefusedError


def error_line(err: BaseException) -> str:
    """The telling line of a TVM RPC error (its last non-empty line, without TVM's banner)."""
    text = str(err).strip()
    lines = [line for line in text.splitlines()
             if line.strip() and not line.startswith("RPCError: Error caught")]
    return lines[-1].strip() if lines else type(err).__name__


def _remote_error(body: Dict[str, Any], where: str) -> Exception:
    kind, message = str(body.get("type")), str(body.get("message"))
    if kind == "IoTimeoutError":
        return IoTimeoutError(message)
    if kind == "TransportClosedError":
        return TransportClosedError(f"{message} (on {where})")
    hint, details = body.get("hint"), body.get("details")
    if kind == "TokenRefused":
        return TokenRefusedError(message, hint=hint)
    error = FarmError(f"on {where}: {kind}: {message}", hint=hint, details=details)
    if body.get("exit_code") is not None:
        error.exit_code = int(body["exit_code"])
    return error


class RemoteBoard:
    """A board held through the farm: the RPC session to its node, and utvm's functions there.

    Closing ends the session on the node (transport closed, emulator stopped, files removed) and
    drops the connection, which frees the board for the tracker's next client.
    """

    def __init__(self, rpc_session, key: str, where: str):
        self._rpc = rpc_session
        self._functions: Dict[str, Any] = {}
        self.key = key
        self.where = f"the node serving {key!r} ({where})"
        self.description: Dict[str, Any] = {}

    # -- calls -----------------------------------------------------------------------------------

    def _function(self, name: str):
        if self._rpc is None:
            raise FarmError(f"the session with {self.where} is closed")
        if name not in self._functions:
            try:
                self._functions[name] = self._rpc.get_function(name)
            except Exception as err:  # noqa: BLE001 - TVM's error for a missing function, or a lost link
                raise FarmError(f"{self.where} has no {name}: it is not a utvm farm node ({error_line(err)})",
                                hint="start the node with `utvm farm node`") from None
        return self._functions[name]

    def call(self, name: str, *args) -> bytes:
        """Call a node function; its payload on success, its error raised as a utvm error."""
        function = self._function(name)
        try:
            reply = function(*args)
        except Exception as err:  # noqa: BLE001 - TVM raises its own errors when the link breaks
            raise NodeLostError(f"{self.where} went away during {name[len(wire.PREFIX):]}: {error_line(err)}",
                                hint="the node may have died; `utvm farm status` shows when it is back, "
                                "then run again") from None
        succeeded, payload = wire.split_reply(reply)
        if succeeded:
            return payload
        raise _remote_error(json.loads(payload.decode("utf-8")), self.where)

    def call_json(self, name: str, *args) -> Any:
        payload = self.call(name, *args)
        return json.loads(payload.decode("utf-8")) if payload else None

    # -- the Project API through the node ----------------------------------------------------------

    def hello(self, token: str) -> Dict[str, Any]:
        """Present the token; the node describes itself (key, template, platform, board, options)."""
        self.description = self.call_json(wire.HELLO, token or "", wire.PROTOCOL_VERSION)
        return self.description

    @property
    def board(self) -> Optional[Dict[str, Any]]:
        return self.description.get("board")

    @property
    def options(self) -> Dict[str, Any]:
        return dict(self.description.get("options") or {})

    def upload(self, archive) -> None:
        """Send the MLF archive into the session's directory on the node (TVM's upload)."""
        try:
            self._rpc.upload(str(pathlib.Path(archive)), wire.ARCHIVE_NAME)
        except Exception as err:  # noqa: BLE001 - as in call()
            raise NodeLostError(f"{self.where} went away during the upload: {error_line(err)}") from None

    def generate(self, options: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
        return self.call_json(wire.GENERATE, wire.ARCHIVE_NAME, json.dumps(dict(options or {})))

    def build(self, options: Optional[Mapping[str, Any]] = None) -> None:
        self.call(wire.BUILD, json.dumps(dict(options or {})))

    def flash(self, options: Optional[Mapping[str, Any]] = None) -> None:
        self.call(wire.FLASH, json.dumps(dict(options or {})))

    def open_transport(self, options: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
        return self.call_json(wire.OPEN, json.dumps(dict(options or {})))

    def read(self, n: int, timeout: float) -> bytes:
        return self.call(wire.READ, int(n), float(timeout))

    def write(self, data: bytes, timeout: float) -> None:
        self.call(wire.WRITE, bytes(data), float(timeout))

    def close_transport(self) -> None:
        self.call(wire.CLOSE)

    def close(self) -> None:
        """End the node's session and drop the connection (the board goes back to the tracker)."""
        if self._rpc is None:
            return
        try:
            self.call(wire.END)
        except FarmError:
            pass  # a node that is gone has nothing left to end
        finally:
            # TVM closes the connection when the last reference to the session goes.
            self._functions.clear()
            self._rpc = None

    def __enter__(self) -> RemoteBoard:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class FarmTransport(ClosableTransport):
    """Device bytes through a farm node's read and write functions."""

    def __init__(self, board: RemoteBoard):
        self.board = board
        self.link = f"the device of {board.where}"

    def _lost(self, err: NodeLostError) -> TransportClosedError:
        return TransportClosedError(f"{err.message}; {err.hint}")

    def read(self, n: int, timeout: float) -> bytes:
        self._check_open()
        try:
            return self.board.read(n, timeout)
        except NodeLostError as err:
            raise self._lost(err) from None

    def write(self, data: bytes, timeout: float) -> None:
        self._check_open()
        try:
            self.board.write(data, timeout)
        except NodeLostError as err:
            raise self._lost(err) from None

    def _release(self) -> None:
        try:
            self.board.close_transport()
        except (FarmError, TransportClosedError):
            pass
