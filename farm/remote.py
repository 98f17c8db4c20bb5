"""The client's end of a farm session: the board a tracker handed out, and a transport through it.

:class:`RemoteBoard` holds the TVM RPC session to a node and calls utvm's functions there (see
wire.py); :class:`FarmTransport` is a host-driven Transport whose bytes go through the node's
read and write functions, so the ordinary host-driven session runs on top unchanged.
"""

from __future__ import annotations

import json
import pathlib
import queue
import threading
from typing import Any, Dict, Mapping, Optional

from utvm.host_driven.closable import ClosableTransport
from utvm.project_api.client import DEFAULT_TIMEOUTS
from utvm.project_api.errors import IoTimeoutError, TransportClosedError

from . import wire
from .errors import FarmError, NodeLostError, TokenRefusedError

# Room a call to a node gets beyond the node's own deadline for it: the round trip, a loaded machine.
CALL_MARGIN_SEC = 60.0
TRANSFER_SEC_PER_MIB = 2.0
# Calls that do little on the node: hello, a look-up, close, end.
SHORT_CALL_SEC = DEFAULT_TIMEOUTS["close_transport"] + CALL_MARGIN_SEC


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


def call_deadline(name: str, *args) -> float:
    """Seconds a node function may take: what the node allows itself (the Project API client's
    deadlines, a read's own timeout), plus room for the round trip."""
    method = {wire.GENERATE: "generate_project", wire.BUILD: "build", wire.FLASH: "flash",
              wire.OPEN: "open_transport"}.get(name)
    if method:
        return DEFAULT_TIMEOUTS[method] + CALL_MARGIN_SEC
    if name in (wire.READ, wire.WRITE):
        size = args[0] if name == wire.READ else len(args[0])
        return float(args[1]) + CALL_MARGIN_SEC + TRANSFER_SEC_PER_MIB * size / (1 << 20)
    return SHORT_CALL_SEC


class _Late(Exception):
    pass


class _Caller:
    """Runs a board's RPC calls on a thread of its own, so that each call has a deadline: TVM's RPC
    blocks without one, and a node that stops answering (stopped, or cut off without its connection
    closing) would hang the client. A call past its deadline leaves the thread behind, blocked; the
    board is unusable from then on."""

    def __init__(self, name: str):
        self._jobs: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()
        self.stuck = False

    def _serve(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            fn, args, box, done = job
            try:
                box.append((True, fn(*args)))
            except BaseException as err:  # noqa: BLE001 - handed to the caller, who raises it
                box.append((False, err))
            done.set()

    def run(self, fn, args, timeout: float):
        box: list = []
        done = threading.Event()
        self._jobs.put((fn, args, box, done))
        if not done.wait(timeout):
            self.stuck = True
            raise _Late()
        succeeded, value = box[0]
        if not succeeded:
            raise value
        return value

    def stop(self) -> None:
        if not self.stuck:
            self._jobs.put(None)


class RemoteBoard:
    """A board held through the farm: the RPC session to its node, and utvm's functions there.

    Every call has a deadline (call_deadline). Closing ends the session on the node (transport
    closed, emulator stopped, files removed) and drops the connection, which frees the board for the
    tracker's next client.
    """

    def __init__(self, rpc_session, key: str, where: str):
        self._rpc = rpc_session
        self._functions: Dict[str, Any] = {}
        self._caller = _Caller(f"utvm-farm-{key}")
        self.key = key
        self.address = where
        self.where = f"the node serving {key!r} ({where})"
        self.description: Dict[str, Any] = {}
        # What the node said of the project it built (run_record.project_facts): firmware hash,
        # compiler, template options; empty until build.
        self.built: Dict[str, Any] = {}

    # -- calls -----------------------------------------------------------------------------------

    def _function(self, name: str):
        if self._rpc is None:
            raise FarmError(f"the session with {self.where} is closed")
        if name not in self._functions:

            def not_a_node(err: Exception) -> Exception:
                if not isinstance(err, AttributeError):  # tvm_ffi's "Module has no function"
                    return NodeLostError(f"{self.where} went away: {error_line(err)}",
                                         hint="`utvm farm status` shows whether it is still registered")
                return FarmError(f"{self.where} has no {name}, so it is not a utvm farm node",
                                 hint="start the node with `utvm farm node`")

            self._functions[name] = self._run(f"a look-up of {name}", self._rpc.get_function, (name,),
                                              SHORT_CALL_SEC, failed=not_a_node)
        return self._functions[name]

    def _run(self, what: str, fn, args, timeout: float, failed=None):
        """fn(*args) on the caller thread within timeout. When TVM raises, the error is
        ``failed(err)`` if given, else NodeLostError; a node silent past the deadline is NodeLostError."""
        if self._caller.stuck:
            raise NodeLostError(f"{self.where} stopped answering earlier in this session")
        try:
            return self._caller.run(fn, args, timeout)
        except _Late:
            raise NodeLostError(f"{self.where} did not answer {what} within {timeout:g} s",
                                hint="the node or the network to it is stuck; `utvm farm status` shows "
                                "whether it is still registered") from None
        except Exception as err:  # noqa: BLE001 - TVM raises its own errors when the link breaks
            if failed is not None:
                raise failed(err) from None
            raise NodeLostError(f"{self.where} went away during {what}: {error_line(err)}",
                                hint="the node may have died; `utvm farm status` shows when it is back, "
                                "then run again") from None

    def call(self, name: str, *args) -> bytes:
        """Call a node function; its payload on success, its error raised as a utvm error."""
        function = self._function(name)
        reply = self._run(name[len(wire.PREFIX):], function, args, call_deadline(name, *args))
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
        path = pathlib.Path(archive)
        timeout = CALL_MARGIN_SEC + TRANSFER_SEC_PER_MIB * path.stat().st_size / (1 << 20)
        self._run("the upload", self._rpc.upload, (str(path), wire.ARCHIVE_NAME), timeout)

    def generate(self, options: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
        return self.call_json(wire.GENERATE, wire.ARCHIVE_NAME, json.dumps(dict(options or {})))

    def build(self, options: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
        """Build the project on the node; returns (and keeps as ``built``) the node's facts of it."""
        self.built = self.call_json(wire.BUILD, json.dumps(dict(options or {}))) or {}
        return self.built

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
            self._caller.stop()

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
