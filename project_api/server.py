"""The server base of the Project API: the handler a template implements, and the JSON-RPC loop.

A template's ``microtvm_api_server.py`` subclasses :class:`ProjectAPIHandler` and calls
:func:`main`. The channel is the pair of pipe file descriptors given by ``--read-fd`` /
``--write-fd``; stdout and stderr are free for logs and build-tool output. The descriptors are
made non-inheritable, so no process a handler spawns can write into the channel or keep it open
after the server exits.

The base does for every template what the protocol promises (docs/project-api.md): it checks each
request's params, merges options (declared defaults, then the options the project was generated
with, then the call's own) and coerces them by their declared types for the version-1 methods and
for extensions alike, writes the project record after ``generate_project``, and turns a handler's
exception into an error reply that carries its class name, its hint and its traceback.

Standard library only: generated projects carry this module.
"""

from __future__ import annotations

import abc
import dataclasses
import inspect
import json
import logging
import math
import os
import pathlib
import sys
import traceback
from typing import Any, Dict, List, Optional

from . import record as project_record
from .errors import UserError
from .floor_copy import FLOOR_PACKAGE, copy_floor
from .options import ProjectOption, coerce_value
from .wire import (
    EXTENSION_PREFIX,
    MAX_MESSAGE_BYTES,
    METHOD_PARAMS,
    OPTION_METHODS,
    PROTOCOL_VERSION,
    ErrorCode,
    b85decode,
    b85encode,
    param_problem,
)

_LOG = logging.getLogger("utvm.server")


@dataclasses.dataclass
class ServerInfo:
    """What server_info_query returns (the server base adds protocol_version and utvm_extensions)."""

    platform_name: str
    is_template: bool
    model_library_format_path: Optional[str]
    project_options: List[ProjectOption]

    def to_json(self) -> Dict[str, Any]:
        return {
            "platform_name": self.platform_name,
            "is_template": bool(self.is_template),
            "model_library_format_path": (
                None if self.model_library_format_path is None else str(self.model_library_format_path)
            ),
            "project_options": [o.to_json() for o in self.project_options],
        }


@dataclasses.dataclass
class TransportTimeouts:
    """The session timeouts open_transport reports to the client, in seconds."""

    session_start_retry_timeout_sec: float
    session_start_timeout_sec: float
    session_established_timeout_sec: float


@dataclasses.dataclass
class GeneratedProject:
    """What a handler's generate_project may return: facts the server base records in the project
    (see record.ProjectRecord). ``archive`` is the project's MLF copy, relative to the project."""

    board: Optional[Dict[str, Any]] = None
    archive: Optional[str] = None


class ProjectAPIHandler(abc.ABC):
    """What a template implements. The server base validates requests and calls these methods.

    Options arrive complete and coerced: the declared defaults, overlaid by the options saved in a
    generated project, overlaid by the options of the call. Raise errors.ServerError subclasses
    (or any exception) to fail a call; the client gets the exception's class name and traceback,
    and a UserError's message, hint and exit code.

    Extra methods whose names start with ``utvm_`` are served too and listed in
    server_info_query's ``utvm_extensions``; their params are passed by name, and a param named
    ``options`` gets the same merging and coercion as the version-1 methods' options.
    """

    @abc.abstractmethod
    def server_info_query(self, tvm_version: Optional[str]) -> ServerInfo:
        """Describe the platform, whether this is a template, and the project options. Called for
        every request that needs the option schema, so it must be cheap and have no side effect."""

    @abc.abstractmethod
    def generate_project(
        self,
        model_library_format_path: pathlib.Path,
        standalone_crt_dir: Optional[pathlib.Path],
        project_dir: pathlib.Path,
        options: Dict[str, Any],
    ) -> Optional[GeneratedProject]:
        """Create project_dir (absolute; it does not exist yet) from the MLF archive, with a copy of
        the server in it. Check everything that can be checked (the board, the model's fit) before
        writing anything. May return a GeneratedProject with the resolved board record and the
        archive copy's path, which the base saves in the project record with the options."""

    @abc.abstractmethod
    def build(self, options: Dict[str, Any]) -> None:
        """Build the generated project in the server's directory; raise BuildError on failure."""

    @abc.abstractmethod
    def flash(self, options: Dict[str, Any]) -> None:
        """Put the built firmware on the device (nothing, for a board that loads at open)."""

    @abc.abstractmethod
    def open_transport(self, options: Dict[str, Any]) -> TransportTimeouts:
        """Open the byte channel to the device (starting an emulator or a process if need be)."""

    @abc.abstractmethod
    def close_transport(self) -> None:
        """Close the byte channel and stop whatever open_transport started; closing a closed
        transport is not an error."""

    @abc.abstractmethod
    def read_transport(self, n: int, timeout_sec: Optional[float]) -> bytes:
        """Return 1..n bytes; raise IoTimeoutError if none arrive in time (a None timeout_sec
        still has a deadline of the handler's choosing), TransportClosedError at end of file."""

    @abc.abstractmethod
    def write_transport(self, data: bytes, timeout_sec: Optional[float]) -> None:
        """Write all of data, or raise IoTimeoutError / TransportClosedError."""


class _RequestError(Exception):
    """A request the server must answer with a JSON-RPC protocol error (not a handler error)."""

    def __init__(self, code: int, message: str, request_id=None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.request_id = request_id


def _error_data(e: Exception) -> dict:
    """The ``data`` of a server-error reply: the traceback, plus a user error's parts when it has them.

    An exception with ``message``/``hint``/``exit_code`` attributes (a UserError, or any exception
    shaped like one) keeps them apart, so the client can show the hint once and exit with the same
    code as a local error would.
    """
    data = {"traceback": traceback.format_exc(), "detail": str(e)}
    message, hint, exit_code = (getattr(e, k, None) for k in ("message", "hint", "exit_code"))
    if isinstance(message, str) and isinstance(hint, str):
        data["detail"], data["hint"] = message, hint
    if isinstance(exit_code, int):
        data["exit_code"] = exit_code
    return data


class ProjectAPIServer:
    """Reads requests from one pipe, calls the handler, writes replies to the other."""

    def __init__(self, read_file, write_file, handler: ProjectAPIHandler, server_dir=None):
        self._read_file = read_file
        self._write_file = write_file
        self._handler = handler
        self.server_dir = pathlib.Path(server_dir or os.getcwd())
        self._tvm_version: Optional[str] = None
        saved = project_record.read_record(self.server_dir)
        self._saved_options: Dict[str, Any] = dict(saved.options) if saved else {}

    def extensions(self) -> List[str]:
        """Names of the handler's utvm_* extension methods."""
        return sorted(
            name
            for name in dir(type(self._handler))
            if name.startswith(EXTENSION_PREFIX) and callable(getattr(self._handler, name, None))
        )

    def serve_forever(self) -> None:
        """Serve until the client closes its end of the channel."""
        while self.serve_one():
            pass

    def serve_one(self) -> bool:
        """Serve one request; False once the channel is closed."""
        line = self._read_file.readline(MAX_MESSAGE_BYTES + 1)
        if not line:
            return False
        if len(line) > MAX_MESSAGE_BYTES and not line.endswith(b"\n"):
            self._discard_rest_of_line()
            self._reply_error(None, ErrorCode.INVALID_REQUEST,
                              f"request longer than {MAX_MESSAGE_BYTES} bytes")
            return True
        if not line.strip():
            return True
        request_id = None
        try:
            request_id, method, params = self._parse(line)
            _LOG.debug("request %s id=%r", method, request_id)
            result = self._dispatch(method, params)
        except _RequestError as e:
            request_id = request_id if e.request_id is None else e.request_id
            _LOG.debug("rejected request id=%r: %s", request_id, e.message)
            self._reply_error(request_id, e.code, e.message)
        except Exception as e:  # any handler failure becomes a server-error reply
            _LOG.debug("handler raised %s", type(e).__name__, exc_info=True)
            self._reply_error(request_id, ErrorCode.SERVER_ERROR, type(e).__name__, _error_data(e))
        else:
            self._reply(request_id, {"result": result})
        return True

    def _discard_rest_of_line(self) -> None:
        while True:
            chunk = self._read_file.readline(1 << 20)
            if not chunk or chunk.endswith(b"\n"):
                return

    @staticmethod
    def _parse(line: bytes):
        try:
            request = json.loads(line.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as e:
            raise _RequestError(ErrorCode.PARSE_ERROR, f"parse error: {e}") from None
        except RecursionError:
            raise _RequestError(ErrorCode.PARSE_ERROR, "parse error: nested too deeply") from None
        if not isinstance(request, dict):
            raise _RequestError(ErrorCode.INVALID_REQUEST, "a request must be a JSON object")
        request_id = request.get("id")
        if isinstance(request_id, bool) or not isinstance(request_id, (int, float, str, type(None))):
            raise _RequestError(ErrorCode.INVALID_REQUEST, "id must be a number, a string or null")
        if isinstance(request_id, float) and not math.isfinite(request_id):
            # NaN and Infinity are not JSON: such an id could not be echoed in a valid reply.
            raise _RequestError(ErrorCode.INVALID_REQUEST, "id must be a finite number, a string or null")
        if "id" not in request:
            raise _RequestError(ErrorCode.INVALID_REQUEST, "a request needs an id (no notifications)")
        if request.get("jsonrpc") != "2.0":
            raise _RequestError(ErrorCode.INVALID_REQUEST, 'jsonrpc must be "2.0"', request_id)
        method = request.get("method")
        if not isinstance(method, str):
            raise _RequestError(ErrorCode.INVALID_REQUEST, "method must be a string", request_id)
        params = request.get("params", {})
        if not isinstance(params, dict):
            raise _RequestError(ErrorCode.INVALID_PARAMS, "params must be an object (by name)", request_id)
        return request_id, method, params

    def _dispatch(self, method: str, params: Dict[str, Any]) -> Any:
        if method in METHOD_PARAMS:
            problem = param_problem(method, params)
            if problem:
                raise _RequestError(ErrorCode.INVALID_PARAMS, problem)
            if method in OPTION_METHODS:
                params = dict(params, options=self._full_options(
                    method, params["options"], with_saved=method != "generate_project"))
            return getattr(self, "_call_" + method)(**params)
        if method.startswith(EXTENSION_PREFIX) and method in self.extensions():
            func = getattr(self._handler, method)
            if "options" in inspect.signature(func).parameters:
                # Merged and coerced as the version-1 methods' options are, given or not.
                given = params.get("options") or {}
                if not isinstance(given, dict):
                    raise _RequestError(ErrorCode.INVALID_PARAMS, f"{method}: options must be an object")
                params = dict(params, options=self._full_options(method, given))
            try:
                inspect.signature(func).bind(**params)
            except TypeError as e:
                raise _RequestError(ErrorCode.INVALID_PARAMS, f"{method}: {e}") from None
            return func(**params)
        raise _RequestError(ErrorCode.METHOD_NOT_FOUND, f"method not found: {method}")

    def _schema(self) -> List[ProjectOption]:
        return self._handler.server_info_query(self._tvm_version).project_options

    def _full_options(self, method: str, given: Dict[str, Any], with_saved: bool = True) -> Dict[str, Any]:
        """Declared defaults, then the project's saved options, then the call's own, each coerced
        by its declared type. An unknown name or a bad value is a UserError naming it."""
        schema = {o.name: o for o in self._schema()}
        options = {name: o.default for name, o in schema.items() if o.default is not None}
        if with_saved:
            options.update(self._saved_options)
        options.update({k: v for k, v in given.items() if v is not None})
        for name, value in options.items():
            if name in schema:
                options[name] = coerce_value(schema[name], value)
            elif name in given:
                raise UserError(f"{method}: unknown option {name!r}",
                                hint=f"valid options: {', '.join(sorted(schema)) or '(none)'}")
        return options

    def _call_server_info_query(self, tvm_version=None):
        self._tvm_version = tvm_version
        reply = self._handler.server_info_query(tvm_version).to_json()
        # A generated project reports the options it was made with as their defaults.
        for option in reply["project_options"]:
            if option["name"] in self._saved_options:
                option["default"] = self._saved_options[option["name"]]
        reply["protocol_version"] = PROTOCOL_VERSION
        reply["utvm_extensions"] = self.extensions()
        return reply

    def _call_generate_project(self, model_library_format_path, project_dir, options,
                               standalone_crt_dir=None):
        project_dir = pathlib.Path(project_dir)
        if not project_dir.is_absolute():
            # Relative to which directory? The client's and the server's differ: refuse to guess.
            raise UserError(f"generate_project: project_dir {str(project_dir)!r} is not an absolute path",
                            hint="the client must send an absolute path")
        facts = self._handler.generate_project(
            pathlib.Path(model_library_format_path),
            pathlib.Path(standalone_crt_dir) if standalone_crt_dir else None,
            project_dir,
            options,
        ) or GeneratedProject()
        if not (project_dir / FLOOR_PACKAGE).is_dir():
            copy_floor(project_dir)  # the project's server imports it: it must never be missing
        platform = self._handler.server_info_query(self._tvm_version).platform_name
        project_record.write_record(project_dir, project_record.ProjectRecord(
            platform_name=platform, options=dict(options), board=facts.board, archive=facts.archive))

    def _call_build(self, options):
        self._handler.build(options)

    def _call_flash(self, options):
        self._handler.flash(options)

    def _call_open_transport(self, options):
        timeouts = self._handler.open_transport(options)
        if dataclasses.is_dataclass(timeouts):
            timeouts = dataclasses.asdict(timeouts)
        return {"timeouts": timeouts}

    def _call_close_transport(self):
        self._handler.close_transport()

    def _call_read_transport(self, n, timeout_sec=None):
        data = self._handler.read_transport(n, timeout_sec)
        if not isinstance(data, (bytes, bytearray)):
            raise TypeError(f"read_transport returned {type(data).__name__}, not bytes")
        return {"data": b85encode(bytes(data))}

    def _call_write_transport(self, data, timeout_sec=None):
        try:
            raw = b85decode(data)
        except ValueError as e:
            raise _RequestError(ErrorCode.INVALID_PARAMS,
                                f"write_transport: data is not base85: {e}") from None
        self._handler.write_transport(raw, timeout_sec)

    def _reply_error(self, request_id, code: int, message: str, data: Optional[Dict[str,
                                                                                    Any]] = None) -> None:
        error: Dict[str, Any] = {"code": code, "message": message}
        if data is not None:
            error["data"] = data
        self._reply(request_id, {"error": error})

    def _reply(self, request_id, body: Dict[str, Any]) -> None:
        reply = {"jsonrpc": "2.0", "id": request_id}
        reply.update(body)
        try:
            line = json.dumps(reply, allow_nan=False)
        except (TypeError, ValueError) as e:
            line = json.dumps(
                {
                    "jsonrpc": "2.0",
                    "id": request_id if isinstance(request_id, (str, int)) else None,
                    "error": {"code": ErrorCode.INTERNAL_ERROR, "message": f"reply is not JSON: {e}"},
                },
                allow_nan=False,
            )
        self._write_file.write(line.encode("utf-8") + b"\n")
        self._write_file.flush()


def _default_server_dir() -> pathlib.Path:
    main_file = getattr(sys.modules.get("__main__"), "__file__", None)
    return pathlib.Path(main_file).resolve().parent if main_file else pathlib.Path.cwd()


def main(handler: ProjectAPIHandler, argv: Optional[List[str]] = None, server_dir=None) -> None:
    """Parse ``--read-fd R --write-fd W [--debug]`` and serve handler until the client hangs up.

    server_dir is the template or project directory (default: the directory of the running script).
    """
    import argparse

    parser = argparse.ArgumentParser(description="Project API server (wire protocol version 1)")
    parser.add_argument("--read-fd", type=int, required=True, help="pipe to read requests from")
    parser.add_argument("--write-fd", type=int, required=True, help="pipe to write replies to")
    parser.add_argument("--debug", action="store_true", help="log every request to stderr")
    args = parser.parse_args(argv)

    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.INFO,
        format="%(name)s: %(message)s",
        stream=sys.stderr,
    )
    for fd in (args.read_fd, args.write_fd):
        if fd in (0, 1, 2):
            parser.error(f"fd {fd} is a standard stream; the channel needs its own pipes")
        # Spawned build tools must neither write into the channel nor hold it open.
        os.set_inheritable(fd, False)
    read_file = os.fdopen(args.read_fd, "rb")
    write_file = os.fdopen(args.write_fd, "wb")
    server = ProjectAPIServer(read_file, write_file, handler, server_dir or _default_server_dir())
    _LOG.debug("serving %s (extensions: %s)", server.server_dir, server.extensions())
    try:
        server.serve_forever()
    except BrokenPipeError:
        _LOG.debug("client closed the reply pipe")
    finally:
        read_file.close()
        try:
            write_file.close()
        except BrokenPipeError:
            pass
