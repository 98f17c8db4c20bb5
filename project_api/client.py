"""Client side of the Project API: launch a template's or project's server and call it.

Every call has a deadline. A server that hangs past it, dies, or writes garbage into the channel
becomes a :class:`ProjectAPIError` subclass naming the method, the server's exit code and the last
lines of its stderr; the server is then stopped, so the caller never hangs.

The server's stdout and stderr are read by background threads: the last lines of stderr are kept
for error messages, and both streams are copied to this process's stderr when ``echo`` is true
(the default), so build output stays visible without mixing into this process's stdout.
"""

from __future__ import annotations

import fcntl
import itertools
import json
import os
import pathlib
import selectors
import subprocess
import sys
import threading
import time
import weakref
from typing import Any, Dict, List, Mapping, Optional

from .child_process import describe_exit, die_with_parent, kill_process_group, stop_process_group
from .errors import (
    IoTimeoutError,
    ProjectAPIError,
    ServerError,
    TransportClosedError,
    UnsupportedTVMVersionError,
)
from .options import ProjectOption, validate_options
from .output_pump import OutputPump
from .wire import LAUNCH_SCRIPT, MAX_MESSAGE_BYTES, PROTOCOL_VERSION, SERVER_SCRIPT, b85decode, b85encode

# Deadlines per method, in seconds. Build and flash run real toolchains and can be slow.
DEFAULT_TIMEOUTS: Dict[str, float] = {
    "server_info_query": 60.0,
    "generate_project": 600.0,
    "build": 3600.0,
    "flash": 1200.0,
    "open_transport": 300.0,
    "close_transport": 60.0,
}
# Extension methods and anything else not listed above.
DEFAULT_CALL_TIMEOUT = 600.0
# read/write_transport: their own timeout_sec (this when None), plus room for the relay itself.
DEFAULT_TRANSPORT_TIMEOUT = 300.0
TRANSPORT_MARGIN_SEC = 30.0
TRANSPORT_SEC_PER_MIB = 2.0
# Longest reply accepted; a 16 MiB read_transport is about 21 MB of base85.
MAX_REPLY_BYTES = MAX_MESSAGE_BYTES
STDERR_TAIL_LINES = 20
STDERR_TAIL_BYTES = 8192
# How long close() lets the server exit on its own before stopping it.
CLOSE_TIMEOUT = 5.0
# How often a waiting call checks that the server is still alive.
_POLL_SLICE_SEC = 0.2

# Server errors re-raised as the same classes, so callers catch one definition.
_REMOTE_CLASSES = {
    cls.__name__: cls for cls in (IoTimeoutError, TransportClosedError, UnsupportedTVMVersionError)
}


class ServerLaunchError(ProjectAPIError):
    """The directory holds no server, or the server could not be started."""

    exit_code = 2


class ServerTimeoutError(ProjectAPIError):
    """The server did not answer before the call's deadline; it has been stopped."""


class ServerDiedError(ProjectAPIError):
    """The server exited (or closed the channel) while a call was waiting for it."""


class ServerProtocolError(ProjectAPIError):
    """The server wrote something into the channel that is not a valid reply."""


class UnsupportedProtocolVersionError(ProjectAPIError):
    """The server speaks a Project API version other than 1."""


class JSONRPCError(ProjectAPIError):
    """The server refused the request itself (parse error, unknown method, invalid params...)."""

    def __init__(self, message: str, code: int, hint: Optional[str] = None):
        super().__init__(message, hint=hint)
        self.code = code


class RemoteServerError(ServerError, ProjectAPIError):
    """The handler raised an exception: ``remote_type`` is its class name, ``remote_traceback`` its trace."""

    def __init__(
        self, message: str, remote_type: str, remote_traceback: Optional[str], hint: Optional[str] = None
    ):
        ProjectAPIError.__init__(self, message, hint=hint)
        self.remote_type = remote_type
        self.remote_traceback = remote_traceback


class _ChannelClosed(Exception):
    pass


class _ChannelTimeout(Exception):
    pass


def _above_stdio(fd: int) -> int:
    # With stdin closed, os.pipe() can return 0..2, which the child's stdio would clobber.
    if fd > 2:
        return fd
    new_fd = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 3)
    os.close(fd)
    return new_fd


class _Channel:
    """The client's two pipe ends, read and written with deadlines."""

    def __init__(self, read_fd: int, write_fd: int, alive):
        self.read_fd = read_fd
        self.write_fd = write_fd
        self._alive = alive
        os.set_blocking(read_fd, False)
        os.set_blocking(write_fd, False)
        self._readable = selectors.DefaultSelector()
        self._readable.register(read_fd, selectors.EVENT_READ)
        self._writable = selectors.DefaultSelector()
        self._writable.register(write_fd, selectors.EVENT_WRITE)
        self._buffer = bytearray()

    def _wait(self, selector, deadline: float) -> bool:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise _ChannelTimeout()
        return bool(selector.select(min(remaining, _POLL_SLICE_SEC)))

    def send(self, data: bytes, deadline: float) -> None:
        view = memoryview(data)
        while view:
            if not self._wait(self._writable, deadline):
                if not self._alive():
                    raise _ChannelClosed()
                continue
            try:
                view = view[os.write(self.write_fd, view[: 1 << 20]) :]
            except BlockingIOError:
                continue
            except (BrokenPipeError, ConnectionResetError):
                raise _ChannelClosed() from None

    def _read_some(self) -> bool:
        """Read what is available; False when nothing was there. Raises _ChannelClosed at EOF."""
        try:
            chunk = os.read(self.read_fd, 1 << 20)
        except BlockingIOError:
            return False
        if not chunk:
            raise _ChannelClosed()
        self._buffer += chunk
        return True

    def receive_line(self, deadline: float) -> bytes:
        scanned = 0
        while True:
            end = self._buffer.find(b"\n", scanned)
            if end >= 0:
                line = bytes(self._buffer[:end])
                del self._buffer[: end + 1]
                return line
            scanned = len(self._buffer)
            if scanned > MAX_REPLY_BYTES:
                return bytes(self._buffer)  # over-long: the caller reports it as garbage
            if self._wait(self._readable, deadline):
                self._read_some()
            elif not self._alive() and not self._read_some():
                # The server exited without closing the pipe (a child of it may hold it open).
                raise _ChannelClosed()

    def close_write(self) -> None:
        """Close our request end: the server sees end-of-file and exits."""
        if self.write_fd is not None:
            self._writable.close()
            os.close(self.write_fd)
            self.write_fd = None

    def close(self) -> None:
        self.close_write()
        if self.read_fd is not None:
            self._readable.close()
            os.close(self.read_fd)
            self.read_fd = None


def _reap(proc: subprocess.Popen, channel: _Channel) -> None:
    # Runs if a client is dropped without close(): never leave a server process behind.
    stop_process_group(proc, 1.0)
    channel.close()


def _installed_tvm_version() -> str:
    # Read from package metadata: importing tvm would make every CLI command slow.
    from importlib import metadata

    try:
        return metadata.version("apache-tvm")
    except metadata.PackageNotFoundError:
        return "unknown"


def _remote_detail(error: Mapping[str, Any]) -> tuple:
    data = error.get("data") if isinstance(error.get("data"), dict) else {}
    traceback_text = data.get("traceback") if isinstance(data.get("traceback"), str) else None
    detail = data.get("detail")
    if not isinstance(detail, str):
        # A plain version-1 server sends only the traceback; its last line is "Type: message".
        last = traceback_text.strip().splitlines()[-1] if traceback_text and traceback_text.strip() else ""
        detail = last.split(": ", 1)[1] if ": " in last else ""
    return detail, traceback_text


class ProjectAPIClient:
    """Launches ``microtvm_api_server.py`` in a directory and calls it over two pipes.

    timeouts overrides DEFAULT_TIMEOUTS per method name; each call also takes ``timeout=``.
    With validate (the default), options are checked against the server's schema before a call
    is sent. With die_with_owner the kernel kills the server when this process dies (Linux).
    Use as a context manager, or call close().
    """

    def __init__(
        self,
        directory,
        *,
        debug: bool = False,
        echo: bool = True,
        timeouts: Optional[Mapping[str, float]] = None,
        validate: bool = True,
        env: Optional[Mapping[str, str]] = None,
        die_with_owner: bool = False,
    ):
        self.directory = pathlib.Path(directory).resolve()
        self.timeouts = dict(DEFAULT_TIMEOUTS, **(timeouts or {}))
        self.validate = validate
        self._info: Optional[Dict[str, Any]] = None
        self._echo = echo
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._broken: Optional[str] = None
        args = self._command()

        to_server_r, to_server_w = (_above_stdio(fd) for fd in os.pipe())
        from_server_r, from_server_w = (_above_stdio(fd) for fd in os.pipe())
        args += ["--read-fd", str(to_server_r), "--write-fd", str(from_server_w)]
        if debug:
            # Last, as TVM's client puts it: TVM's launch scripts pass on only their first five arguments.
            args.append("--debug")
        child_env = dict(os.environ if env is None else env)
        child_env.setdefault("PYTHONUNBUFFERED", "1")  # so server logs show up as they happen
        try:
            self._proc = subprocess.Popen(
                args,
                cwd=self.directory,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                pass_fds=(to_server_r, from_server_w),
                # Its own process group, so a stuck server can be stopped with its children.
                start_new_session=True,
                env=child_env,
                # Off by default (a server normally exits when its pipe closes); a farm session, whose
                # owner may be killed, asks the kernel to take the server down with it.
                preexec_fn=die_with_parent(os.getpid()) if die_with_owner else None,
            )
        except OSError as e:
            for fd in (to_server_w, from_server_r):
                os.close(fd)
            raise ServerLaunchError(f"cannot start the project API server in {self.directory}: {e}") from e
        finally:
            # The child has its own copies; ours would keep the pipes open after it exits.
            os.close(to_server_r)
            os.close(from_server_w)
        # The liveness check must not reference self, or the finalizer below would keep it alive.
        proc = self._proc
        self._channel = _Channel(from_server_r, to_server_w, lambda: proc.poll() is None)
        self._pumps = [
            OutputPump(self._proc.stdout, echo=echo, name="utvm-server-stdout"),
            OutputPump(self._proc.stderr, echo=echo, keep_bytes=STDERR_TAIL_BYTES, name="utvm-server-stderr"),
        ]
        for pump in self._pumps:
            pump.start()
        self._finalizer = weakref.finalize(self, _reap, self._proc, self._channel)

    def stderr_tail(self) -> List[str]:
        """The last lines the server wrote to its stderr (at most STDERR_TAIL_LINES)."""
        return self._pumps[1].tail_lines(STDERR_TAIL_LINES)

    def _command(self) -> List[str]:
        script = self.directory / SERVER_SCRIPT
        if not self.directory.is_dir():
            raise ServerLaunchError(f"{self.directory} is not a directory")
        if not script.is_file():
            raise ServerLaunchError(
                f"{self.directory} has no {SERVER_SCRIPT}",
                hint="give a template name (see `utvm templates`), a template dir or a generated project",
            )
        launcher = self.directory / LAUNCH_SCRIPT
        if launcher.is_file():
            args = [str(launcher)] if os.access(launcher, os.X_OK) else ["sh", str(launcher)]
            args.append(str(script))
        else:
            args = [sys.executable, str(script)]
        return args

    # ----- lifecycle -----

    @property
    def pid(self) -> int:
        return self._proc.pid

    @property
    def exit_code(self) -> Optional[int]:
        """The server's exit code, or None while it runs."""
        return self._proc.poll()

    def close(self, timeout: float = CLOSE_TIMEOUT) -> Optional[int]:
        """Hang up, give the server timeout seconds to exit, then stop it. Returns its exit code."""
        if not self._finalizer.alive:
            return self._proc.returncode
        self._finalizer.detach()
        self._channel.close_write()
        try:
            self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            stop_process_group(self._proc, 2.0)
        self._channel.close()
        for pump in self._pumps:
            pump.join(1.0)
        return self._proc.returncode

    def __enter__(self) -> ProjectAPIClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ----- calls -----

    def deadline_for(self, method: str, params: Optional[Mapping[str, Any]] = None) -> float:
        """The default deadline, in seconds, of a call to method with these params."""
        if method in self.timeouts:
            return self.timeouts[method]
        if method in ("read_transport", "write_transport"):
            params = params or {}
            timeout_sec = params.get("timeout_sec")
            size = params.get("n", 0) if method == "read_transport" else len(params.get("data", "")) * 4 // 5
            own = DEFAULT_TRANSPORT_TIMEOUT if timeout_sec is None else float(timeout_sec)
            return own + TRANSPORT_MARGIN_SEC + TRANSPORT_SEC_PER_MIB * size / (1 << 20)
        return DEFAULT_CALL_TIMEOUT

    def call(
        self, method: str, params: Optional[Mapping[str, Any]] = None, timeout: Optional[float] = None
    ) -> Any:
        """Send one request (params by name) and return its result, within timeout seconds."""
        params = dict(params or {})
        if timeout is None:
            timeout = self.deadline_for(method, params)
        with self._lock:
            if not self._finalizer.alive:
                raise ProjectAPIError(f"{method}: the client for {self.directory} is closed")
            if self._broken:
                raise ProjectAPIError(
                    f"{method}: the server for {self.directory} is unusable: {self._broken}"
                )
            request_id = next(self._ids)
            request = {"jsonrpc": "2.0", "method": method, "params": params, "id": request_id}
            deadline = time.monotonic() + timeout
            try:
                self._channel.send(json.dumps(request).encode("utf-8") + b"\n", deadline)
                line = self._channel.receive_line(deadline)
            except _ChannelTimeout:
                self._fail(ServerTimeoutError, method, f"did not answer {method} within {timeout:g} s")
            except _ChannelClosed:
                self._fail(ServerDiedError, method, f"died during {method}")
            except BaseException:
                # Interrupted mid-call (e.g. Ctrl-C): a late reply would be taken for the next one.
                self._broken = f"a call to {method} was interrupted"
                raise
            reply = self._parse_reply(method, line, request_id)
        if "error" in reply:
            self._raise_error(method, reply["error"])
        return reply["result"]

    def _fail(self, error_class, method: str, what: str, details: Optional[str] = None):
        """Stop the server (its state is unknown) and raise error_class with its exit code and stderr."""
        if error_class is ServerDiedError:
            try:
                self._proc.wait(CLOSE_TIMEOUT)
            except subprocess.TimeoutExpired:
                pass
        was_running = self._proc.poll() is None
        stop_process_group(self._proc, 2.0)
        kill_process_group(self._proc)  # its children may hold its stderr open, and nothing will talk to them
        self._pumps[1].join(2.0)
        status = describe_exit(self._proc.returncode, "server")
        status = f"stopped it: {status}" if was_running else status
        self._broken = f"it {what}"
        tail = self.stderr_tail()
        lines = [details] if details else []
        if tail:
            lines.append(f"last {len(tail)} lines of the server's stderr:")
            lines += ["  " + line for line in tail]
        else:
            lines.append("the server wrote nothing to stderr")
        hint = "run with --verbose (debug=True) to see the server's log"
        if error_class is ServerTimeoutError:
            hint = (
                f"raise the deadline (timeout=..., or utvm --timeout SECONDS) if {method} needs longer; "
                + hint
            )
        raise error_class(
            f"project API server in {self.directory} {what} ({status})", hint=hint, details="\n".join(lines)
        )

    def _parse_reply(self, method: str, line: bytes, request_id: int) -> Dict[str, Any]:
        def garbage(why: str):
            shown = line[:200].decode("utf-8", "replace")
            self._fail(
                ServerProtocolError, method, f"sent an invalid reply to {method}: {why}", f"reply: {shown!r}"
            )

        if len(line) > MAX_REPLY_BYTES:
            garbage(f"no newline in the first {MAX_REPLY_BYTES} bytes")
        try:
            reply = json.loads(line.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            garbage("not JSON")
        if not isinstance(reply, dict) or reply.get("jsonrpc") != "2.0":
            garbage("not a JSON-RPC 2.0 object")
        if reply.get("id") != request_id:
            garbage(f"id {reply.get('id')!r} does not match request id {request_id}")
        if ("result" in reply) == ("error" in reply):
            garbage("a reply needs exactly one of result and error")
        if "error" in reply and not (
            isinstance(reply["error"], dict) and isinstance(reply["error"].get("code"), int)
        ):
            garbage("error is not {code, message, data}")
        return reply

    def _raise_error(self, method: str, error: Dict[str, Any]):
        code = error["code"]
        message = str(error.get("message", ""))
        if code != -32000:
            raise JSONRPCError(
                f"project API server in {self.directory} refused {method}: {message} (JSON-RPC error {code})",
                code,
                hint="the client and the server disagree on the protocol; check the template's server",
            )
        detail, traceback_text = _remote_detail(error)
        if message in _REMOTE_CLASSES:
            exc = _REMOTE_CLASSES[message](detail)
            exc.remote_traceback = traceback_text
            raise exc
        data = error.get("data") if isinstance(error.get("data"), dict) else {}
        remote_hint = data.get("hint") if isinstance(data.get("hint"), str) else None
        if remote_hint and detail:
            text = f"{method}: {detail}"  # a user error: its own words, without the class name
        else:
            text = f"{method} failed: {message}: {detail}" if detail else f"{method} failed: {message}"
        where = "output above says" if self._echo else "last lines above say"
        exc = RemoteServerError(
            text,
            message,
            traceback_text,
            hint=remote_hint
            or f"the server's {where} why; --verbose (or .remote_traceback) has the traceback",
        )
        if not self._echo:  # nothing was echoed (--quiet): the error quotes the end of it
            exc.details = "\n".join(self.stderr_tail()) or None
        if data.get("exit_code") in (1, 2):
            exc.exit_code = data["exit_code"]  # a user error on the server side exits as it would here
        raise exc

    # ----- the protocol's methods -----

    def server_info_query(
        self, tvm_version: Optional[str] = None, timeout: Optional[float] = None
    ) -> Dict[str, Any]:
        """Ask the server what it is; checks the protocol version and caches the answer as ``info``."""
        reply = self.call(
            "server_info_query", {"tvm_version": tvm_version or _installed_tvm_version()}, timeout
        )
        if not isinstance(reply, dict) or not isinstance(reply.get("project_options", []), list):
            raise ServerProtocolError(
                f"server_info_query reply from {self.directory} is not an object: {reply!r}"
            )
        if reply.get("protocol_version") != PROTOCOL_VERSION:
            raise UnsupportedProtocolVersionError(
                f"the server in {self.directory} speaks Project API version"
                f" {reply.get('protocol_version')!r}; this client speaks version {PROTOCOL_VERSION}"
            )
        self._info = reply
        return reply

    @property
    def info(self) -> Dict[str, Any]:
        """The server_info_query reply (queried on first use)."""
        if self._info is None:
            self.server_info_query()
        return self._info

    @property
    def project_options(self) -> List[ProjectOption]:
        """The server's declared options."""
        return [ProjectOption.from_json(o) for o in self.info.get("project_options") or []]

    def has_extension(self, name: str) -> bool:
        """True when the server declares the utvm extension method name."""
        return name in (self.info.get("utvm_extensions") or [])

    def prepare_options(self, method: str, options: Optional[Mapping[str, Any]]) -> Dict[str, Any]:
        """Validate and coerce options for method (see options.validate_options); no call is made."""
        if not self.validate:
            return dict(options or {})
        return validate_options(self.project_options, method, options)

    def generate_project(
        self,
        model_library_format_path,
        standalone_crt_dir,
        project_dir,
        options: Optional[Mapping[str, Any]] = None,
        timeout: Optional[float] = None,
    ) -> None:
        """Ask the template to create project_dir from the MLF archive."""
        params = {
            "model_library_format_path": str(pathlib.Path(model_library_format_path).resolve()),
            "standalone_crt_dir": str(pathlib.Path(standalone_crt_dir).resolve())
            if standalone_crt_dir
            else None,
            "project_dir": str(pathlib.Path(project_dir).resolve()),
            "options": self.prepare_options("generate_project", options),
        }
        self.call("generate_project", params, timeout)

    def build(self, options: Optional[Mapping[str, Any]] = None, timeout: Optional[float] = None) -> None:
        self.call("build", {"options": self.prepare_options("build", options)}, timeout)

    def flash(self, options: Optional[Mapping[str, Any]] = None, timeout: Optional[float] = None) -> None:
        self.call("flash", {"options": self.prepare_options("flash", options)}, timeout)

    def open_transport(
        self, options: Optional[Mapping[str, Any]] = None, timeout: Optional[float] = None
    ) -> Dict:
        """Open the device transport; returns ``{"timeouts": {...}}``."""
        return self.call(
            "open_transport", {"options": self.prepare_options("open_transport", options)}, timeout
        )

    def close_transport(self, timeout: Optional[float] = None) -> None:
        self.call("close_transport", {}, timeout)

    def read_transport(self, n: int, timeout_sec: Optional[float], timeout: Optional[float] = None) -> bytes:
        """Read 1..n bytes; raises IoTimeoutError or TransportClosedError as the server does."""
        reply = self.call("read_transport", {"n": n, "timeout_sec": timeout_sec}, timeout)
        try:
            return b85decode(reply["data"])
        except (TypeError, KeyError, ValueError) as e:
            raise ServerProtocolError(
                f"read_transport reply from {self.directory} has no valid data: {e}"
            ) from e

    def write_transport(
        self, data: bytes, timeout_sec: Optional[float], timeout: Optional[float] = None
    ) -> None:
        """Write all of data; raises IoTimeoutError or TransportClosedError as the server does."""
        self.call("write_transport", {"data": b85encode(bytes(data)), "timeout_sec": timeout_sec}, timeout)
