"""Server side of the Project API, wire protocol version 1 (see docs/project-api.md).

A template's ``microtvm_api_server.py`` subclasses :class:`ProjectAPIHandler` and calls
:func:`main`. This module uses the standard library only and runs under any Python 3.9+, because
a generated project carries a copy of it (as ``utvm_project_server.py``) and must keep working
without utvm installed.

The channel is the pair of pipe file descriptors given by ``--read-fd`` / ``--write-fd``; stdout
and stderr are free for logs and build-tool output. The descriptors are made non-inheritable, so
no process a handler spawns can write into the channel or keep it open after the server exits.
"""

from __future__ import annotations

import abc
import base64
import dataclasses
import inspect
import json
import logging
import os
import pathlib
import shutil
import sys
import traceback
from typing import Any, Dict, List, Optional

PROTOCOL_VERSION = 1

# Written into a generated project by the server base: the platform and the options it was made with.
PROJECT_FILE = "utvm-project.json"
# File name of the server base's copy inside a generated project.
SERVER_BASE_FILE = "utvm_project_server.py"
# Methods a handler adds beyond version 1 must start with this prefix.
EXTENSION_PREFIX = "utvm_"
# Longest request line the server accepts (a 16 MiB write_transport is about 21 MB of base85).
MAX_REQUEST_BYTES = 64 << 20

OPTION_TYPES = ("bool", "int", "float", "str")

_LOG = logging.getLogger("utvm.server")


# Base85 with the RFC 1924 alphabet, producing exactly what base64.b85encode does. The standard
# library codec takes seconds for a 16 MiB payload, so large payloads use numpy when it is there.
_ALPHABET = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz!#$%&()*+-;<=>?@^_`{|}~"
# Below this size numpy's import and set-up cost more than they save.
_NUMPY_THRESHOLD = 64 << 10


def _numpy_for(size: int):
    # Optional: the server base must run on a bare Python, where the standard codec is used.
    if size < _NUMPY_THRESHOLD:
        return None
    try:
        import numpy
    except ImportError:
        return None
    return numpy


def b85encode(data: bytes) -> str:
    """Base85-encode data without padding, exactly as base64.b85encode(data) does."""
    np = _numpy_for(len(data))
    if np is None:
        return base64.b85encode(data).decode("ascii")
    padding = -len(data) % 4
    words = np.frombuffer(bytes(data) + b"\0" * padding, dtype=">u4").astype(np.uint64)
    digits = np.empty((words.size, 5), dtype=np.uint8)
    for position in range(4, -1, -1):
        digits[:, position] = words % 85
        words //= 85
    text = np.frombuffer(_ALPHABET, dtype=np.uint8)[digits].tobytes()
    return text[: len(text) - padding].decode("ascii")


def b85decode(text: str) -> bytes:
    """Decode base85 text as base64.b85decode does; raises ValueError on a bad character or hunk."""
    np = _numpy_for(len(text))
    if np is None:
        return base64.b85decode(text)
    raw = text.encode("ascii") if isinstance(text, str) else bytes(text)
    padding = -len(raw) % 5
    table = np.full(256, 255, dtype=np.uint8)
    table[np.frombuffer(_ALPHABET, dtype=np.uint8)] = np.arange(85, dtype=np.uint8)
    digits = table[np.frombuffer(raw + b"~" * padding, dtype=np.uint8)].reshape(-1, 5)
    if (digits == 255).any():
        bad = int(np.argmax(digits.reshape(-1) == 255))
        raise ValueError(f"bad base85 character at position {bad}")
    acc = np.zeros(digits.shape[0], dtype=np.uint64)
    for position in range(5):
        acc = acc * 85 + digits[:, position]
    if (acc > 0xFFFFFFFF).any():
        hunk = int(np.argmax(acc > 0xFFFFFFFF))
        raise ValueError(f"base85 overflow in hunk starting at byte {hunk * 5}")
    result = acc.astype(">u4").tobytes()
    return result[: len(result) - padding]


class ErrorCode:
    """JSON-RPC 2.0 error codes used by the protocol."""

    PARSE_ERROR = -32700
    INVALID_REQUEST = -32600
    METHOD_NOT_FOUND = -32601
    INVALID_PARAMS = -32602
    INTERNAL_ERROR = -32603
    SERVER_ERROR = -32000


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


def log_step(options: Dict[str, Any], platform_name: str, text: str) -> None:
    """Print one step of a handler's work on the server's stdout (a log, not the channel) when the
    call's ``verbose`` option is set."""
    if options.get("verbose"):
        print(f"{platform_name}: {text}", flush=True)


class _RequestError(Exception):
    """A request the server must answer with a JSON-RPC protocol error (not a handler error)."""

    def __init__(self, code: int, message: str, request_id=None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.request_id = request_id


@dataclasses.dataclass
class ProjectOption:
    """One project option, as reported by server_info_query.

    ``required`` and ``optional`` list the methods (``generate_project``, ``build``, ``flash``,
    ``open_transport``) that need or accept the option.
    """

    name: str
    type: str
    choices: Optional[List[Any]] = None
    default: Any = None
    required: List[str] = dataclasses.field(default_factory=list)
    optional: List[str] = dataclasses.field(default_factory=list)
    help: str = ""

    def __post_init__(self):
        if self.type not in OPTION_TYPES:
            raise ValueError(f"option {self.name!r}: type must be one of {OPTION_TYPES}, not {self.type!r}")
        self.required = list(self.required or [])
        self.optional = list(self.optional or [])
        if self.choices is not None:
            self.choices = list(self.choices)

    @property
    def methods(self) -> List[str]:
        """The methods that take this option, required ones first."""
        return self.required + [m for m in self.optional if m not in self.required]

    def to_json(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: Dict[str, Any]) -> ProjectOption:
        """Read an option from a server's reply; fields a version-1 server may leave out get defaults."""
        return cls(
            name=data["name"],
            type=data.get("type") or "str",
            choices=data.get("choices"),
            default=data.get("default"),
            required=data.get("required") or [],
            optional=data.get("optional") or [],
            help=data.get("help") or "",
        )


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



def _error_data(e: Exception) -> dict:
    """The ``data`` of a server-error reply: the traceback, plus a user error's parts when it has them.

    An exception with ``message``/``hint``/``exit_code`` attributes (utvm's UserError, duck-typed so
    this module stays standard-library only) keeps them apart, so the client can show the hint once
    and exit with the same code as a local error would.
    """
    data = {"traceback": traceback.format_exc(), "detail": str(e)}
    message, hint, exit_code = (getattr(e, k, None) for k in ("message", "hint", "exit_code"))
    if isinstance(message, str) and isinstance(hint, str):
        data["detail"], data["hint"] = message, hint
    if isinstance(exit_code, int):
        data["exit_code"] = exit_code
    return data

class ProjectAPIHandler(abc.ABC):
    """What a template implements. The server base validates requests and calls these methods.

    Options arrive complete: the declared defaults, overlaid by the options saved in a generated
    project, overlaid by the options of the call. Raise :class:`ServerError` subclasses (or any
    exception) to fail a call; the client gets the exception's class name and traceback.

    Extra methods whose names start with ``utvm_`` are served too and listed in
    server_info_query's ``utvm_extensions``; their params are passed by name.
    """

    @abc.abstractmethod
    def server_info_query(self, tvm_version: Optional[str]) -> ServerInfo:
        """Describe the platform, whether this is a template, and the project options."""

    @abc.abstractmethod
    def generate_project(
        self,
        model_library_format_path: pathlib.Path,
        standalone_crt_dir: Optional[pathlib.Path],
        project_dir: pathlib.Path,
        options: Dict[str, Any],
    ) -> None:
        """Create project_dir (which does not exist yet) from the MLF archive."""

    @abc.abstractmethod
    def build(self, options: Dict[str, Any]) -> None:
        """Build the generated project in the server's directory."""

    @abc.abstractmethod
    def flash(self, options: Dict[str, Any]) -> None:
        """Put the built firmware on the device."""

    @abc.abstractmethod
    def open_transport(self, options: Dict[str, Any]) -> TransportTimeouts:
        """Open the byte channel to the device."""

    @abc.abstractmethod
    def close_transport(self) -> None:
        """Close the byte channel; closing a closed transport is not an error."""

    @abc.abstractmethod
    def read_transport(self, n: int, timeout_sec: Optional[float]) -> bytes:
        """Return 1..n bytes; raise IoTimeoutError if none arrive in time, TransportClosedError at EOF."""

    @abc.abstractmethod
    def write_transport(self, data: bytes, timeout_sec: Optional[float]) -> None:
        """Write all of data, or raise IoTimeoutError / TransportClosedError."""


# Params of the version-1 methods: name -> (accepted JSON types, required).
_NUMBER = (int, float, type(None))
_METHOD_PARAMS: Dict[str, Dict[str, Any]] = {
    # Some microTVM clients sent no tvm_version; accept that.
    "server_info_query": {"tvm_version": ((str, type(None)), False)},
    "generate_project": {
        "model_library_format_path": ((str,), True),
        "standalone_crt_dir": ((str, type(None)), False),
        "project_dir": ((str,), True),
        "options": ((dict,), True),
    },
    "build": {"options": ((dict,), True)},
    "flash": {"options": ((dict,), True)},
    "open_transport": {"options": ((dict,), True)},
    "close_transport": {},
    "read_transport": {"n": ((int,), True), "timeout_sec": (_NUMBER, False)},
    "write_transport": {"data": ((str,), True), "timeout_sec": (_NUMBER, False)},
}
_OPTION_METHODS = ("generate_project", "build", "flash", "open_transport")


def _check_params(method: str, params: Dict[str, Any]) -> None:
    spec = _METHOD_PARAMS[method]
    unknown = sorted(set(params) - set(spec))
    if unknown:
        raise _RequestError(ErrorCode.INVALID_PARAMS, f"{method}: unknown params {unknown}")
    for name, (types, required) in spec.items():
        if name not in params:
            if required:
                raise _RequestError(ErrorCode.INVALID_PARAMS, f"{method}: missing param {name!r}")
            continue
        value = params[name]
        # bool is an int in Python but not a number in this protocol.
        if isinstance(value, bool) or not isinstance(value, types):
            raise _RequestError(
                ErrorCode.INVALID_PARAMS,
                f"{method}: param {name!r} must be {'/'.join(t.__name__ for t in types)}, "
                f"not {type(value).__name__}",
            )
    if method == "read_transport" and params["n"] <= 0:
        raise _RequestError(ErrorCode.INVALID_PARAMS, "read_transport: n must be positive")
    timeout = params.get("timeout_sec")
    if timeout is not None and timeout < 0:
        raise _RequestError(ErrorCode.INVALID_PARAMS, f"{method}: timeout_sec must not be negative")


def template_server_info(
    server_dir, platform_name: str, project_options: List[ProjectOption], model_file: str = "model.tar"
) -> ServerInfo:
    """The server_info_query reply of a template that copies itself into the projects it makes:
    a template until a project file is beside the server, then a project whose MLF copy is
    ``model_file`` in ``server_dir``."""
    server_dir = pathlib.Path(server_dir)
    generated = is_generated_project(server_dir)
    return ServerInfo(
        platform_name=platform_name,
        is_template=not generated,
        model_library_format_path=str(server_dir / model_file) if generated else None,
        project_options=project_options,
    )


def load_project_file(directory) -> Optional[Dict[str, Any]]:
    """The saved platform and options of the generated project in directory, or None for a template."""
    path = pathlib.Path(directory) / PROJECT_FILE
    if not path.is_file():
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def is_generated_project(directory) -> bool:
    """True when directory is a project generated through this server base."""
    return (pathlib.Path(directory) / PROJECT_FILE).is_file()


def copy_server_base(project_dir) -> pathlib.Path:
    """Copy this module into project_dir as utvm_project_server.py, so the project needs no utvm."""
    dest = pathlib.Path(project_dir) / SERVER_BASE_FILE
    if pathlib.Path(__file__).resolve() != dest.resolve():
        shutil.copyfile(__file__, dest)
    return dest


def _save_project_file(project_dir: pathlib.Path, platform_name: str, options: Dict[str, Any]) -> None:
    project_dir.mkdir(parents=True, exist_ok=True)
    record = {"protocol_version": PROTOCOL_VERSION, "platform_name": platform_name, "options": options}
    with open(project_dir / PROJECT_FILE, "w", encoding="utf-8") as f:
        json.dump(record, f, indent=2, sort_keys=True)
        f.write("\n")


class ProjectAPIServer:
    """Reads requests from one pipe, calls the handler, writes replies to the other."""

    def __init__(self, read_file, write_file, handler: ProjectAPIHandler, server_dir=None):
        self._read_file = read_file
        self._write_file = write_file
        self._handler = handler
        self._server_dir = pathlib.Path(server_dir or os.getcwd())
        self._tvm_version: Optional[str] = None
        self._info: Optional[ServerInfo] = None
        project = load_project_file(self._server_dir)
        self._saved_options: Dict[str, Any] = dict(project.get("options") or {}) if project else {}

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
        line = self._read_file.readline(MAX_REQUEST_BYTES + 1)
        if not line:
            return False
        if len(line) > MAX_REQUEST_BYTES and not line.endswith(b"\n"):
            self._discard_rest_of_line()
            self._reply_error(
                None, ErrorCode.INVALID_REQUEST, f"request longer than {MAX_REQUEST_BYTES} bytes"
            )
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
            self._reply_error(
                request_id,
                ErrorCode.SERVER_ERROR,
                type(e).__name__,
                _error_data(e),
            )
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
        if not isinstance(request, dict):
            raise _RequestError(ErrorCode.INVALID_REQUEST, "a request must be a JSON object")
        request_id = request.get("id")
        if isinstance(request_id, bool) or not isinstance(request_id, (int, float, str, type(None))):
            raise _RequestError(ErrorCode.INVALID_REQUEST, "id must be a number, a string or null")
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
        if method in _METHOD_PARAMS:
            _check_params(method, params)
            return getattr(self, "_call_" + method)(**params)
        if method.startswith(EXTENSION_PREFIX) and method in self.extensions():
            func = getattr(self._handler, method)
            try:
                inspect.signature(func).bind(**params)
            except TypeError as e:
                raise _RequestError(ErrorCode.INVALID_PARAMS, f"{method}: {e}") from None
            return func(**params)
        raise _RequestError(ErrorCode.METHOD_NOT_FOUND, f"method not found: {method}")

    def _server_info(self) -> ServerInfo:
        if self._info is None:
            self._info = self._handler.server_info_query(self._tvm_version)
        return self._info

    def _full_options(self, given: Dict[str, Any], with_saved: bool = True) -> Dict[str, Any]:
        """Declared defaults, then the project's saved options, then the call's own."""
        options = {o.name: o.default for o in self._server_info().project_options if o.default is not None}
        if with_saved:
            options.update(self._saved_options)
        options.update(given)
        return options

    def _call_server_info_query(self, tvm_version=None):
        self._tvm_version = tvm_version
        self._info = self._handler.server_info_query(tvm_version)
        reply = self._info.to_json()
        # A generated project reports the options it was made with as their defaults.
        for option in reply["project_options"]:
            if option["name"] in self._saved_options:
                option["default"] = self._saved_options[option["name"]]
        reply["protocol_version"] = PROTOCOL_VERSION
        reply["utvm_extensions"] = self.extensions()
        return reply

    def _call_generate_project(
        self, model_library_format_path, project_dir, options, standalone_crt_dir=None
    ):
        options = self._full_options(options, with_saved=False)
        project_dir = pathlib.Path(project_dir)
        self._handler.generate_project(
            pathlib.Path(model_library_format_path),
            pathlib.Path(standalone_crt_dir) if standalone_crt_dir else None,
            project_dir,
            options,
        )
        _save_project_file(project_dir, self._server_info().platform_name, options)
        if not (project_dir / SERVER_BASE_FILE).exists():
            copy_server_base(project_dir)

    def _call_build(self, options):
        self._handler.build(self._full_options(options))

    def _call_flash(self, options):
        self._handler.flash(self._full_options(options))

    def _call_open_transport(self, options):
        timeouts = self._handler.open_transport(self._full_options(options))
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
            raise _RequestError(
                ErrorCode.INVALID_PARAMS, f"write_transport: data is not base85: {e}"
            ) from None
        self._handler.write_transport(raw, timeout_sec)

    def _reply_error(
        self, request_id, code: int, message: str, data: Optional[Dict[str, Any]] = None
    ) -> None:
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
                    "id": request_id,
                    "error": {"code": ErrorCode.INTERNAL_ERROR, "message": f"reply is not JSON: {e}"},
                }
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
    _LOG.debug("serving %s (extensions: %s)", server._server_dir, server.extensions())
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
