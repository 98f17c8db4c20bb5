"""utvm's functions on a farm node: the Project API carried over TVM's RPC, for one session at a time.

`install(config)` is the `server_init_callback` of the node's `tvm.rpc.Server`. It runs in TVM's
server process (a child of `utvm farm node`) and:

- asks the kernel to kill that process when `utvm farm node` dies, and every process forked from it
  (each session is one) when its parent dies, so a SIGKILL anywhere leaves nothing running below;
- registers the functions of wire.FUNCTIONS as TVM global functions;
- watches TVM's serving thread, and exits the process if it ends, so the node restarts it.

TVM forks one process per session, so the state below (the project, the transport) belongs to one
session and vanishes with it. A session must say hello with the node's token before any other
function acts. When the session ends for any reason, its end (`_end_session`, run at the session
process's exit, or asked for by the client) closes the transport, stops the project's server and
with it any emulator, and removes the session's files.
"""

from __future__ import annotations

import hmac
import json
import multiprocessing
import multiprocessing.util
import os
import pathlib
import shutil
import socket
import stat
import threading
import time
import traceback
from typing import Any, Callable, Dict, Optional

from utvm.host_driven.direct import open_project_transport
from utvm.host_driven.run_record import project_facts
from utvm.project_api.child_process import die_with_parent
from utvm.project_api.errors import IoTimeoutError, ServerError, UserError
from utvm.project_api.project import GeneratedProject, TemplateProject

from . import wire

PROJECT_DIR = "project"
# A device read waits in slices of this many seconds, checking between them that the client is there.
CLIENT_CHECK_SEC = 1.0
TCP_ESTABLISHED = 1  # tcpi_state, the first byte of Linux's struct tcp_info
# A session must present the token within this many seconds of connecting (`--hello-timeout`).
HELLO_DEADLINE_SEC = 60.0
# How long the watchdog waits for TVM's server state to appear before it gives up watching.
STATE_WAIT_SEC = 60.0


class _Refused(Exception):
    """A call the node refuses before acting (no hello, a wrong token, a call out of order)."""

    def __init__(self, kind: str, message: str, hint: Optional[str] = None):
        super().__init__(message)
        self.kind, self.message, self.hint = kind, message, hint


class NodeSession:
    """One session's state on the node: who said hello, the project, the transport."""

    def __init__(self, config: Dict[str, Any]):
        self.config = config
        self.authenticated = False
        self.work = pathlib.Path.cwd()  # TVM's per-session work directory (it chdirs before forking)
        self.project: Optional[GeneratedProject] = None
        self.transport = None
        self.link: Optional[socket.socket] = None  # this session's connection, to see the client leave

    def client_gone(self) -> bool:
        """Whether the client closed the session's connection (it died, or dropped the session)."""
        if self.link is None:
            return False
        try:
            if hasattr(socket, "TCP_INFO"):  # Linux: the state says it even with unread bytes queued
                return self.link.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0] != TCP_ESTABLISHED
            return self.link.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
        except BlockingIOError:
            return False
        except OSError:
            return True

    def peer(self) -> str:
        """' (connection from HOST:PORT)' for log lines, or '' when the connection is not known."""
        try:
            host, port = self.link.getpeername()[:2] if self.link is not None else ("", 0)
        except OSError:
            return ""
        return f" (connection from {host}:{port})" if host else ""

    def say(self, text: str) -> None:
        print(f"utvm farm node [{self.config['key']}]: {text}", flush=True)

    def options(self, client_json: str) -> Dict[str, Any]:
        """The node's options, with the ones the client adds; a client may not change the node's."""
        given = json.loads(client_json or "{}")
        if not isinstance(given, dict):
            raise _Refused("UserError", "options must be a JSON object")
        fixed = self.config["options"]
        clash = sorted(k for k, v in given.items() if k in fixed and str(v) != str(fixed[k]))
        if clash:
            raise _Refused("UserError", f"this node serves {', '.join(f'{k}={fixed[k]}' for k in clash)}; "
                           "a client cannot change that",
                           hint=f"drop -o {clash[0]}=..., or ask for a key whose node serves what you want")
        return {**fixed, **given}

    def require_project(self) -> GeneratedProject:
        if self.project is None:
            raise _Refused("ProjectStateError", "no project in this session yet",
                           hint="upload an archive and call generate first")
        return self.project

    def require_transport(self):
        if self.transport is None:
            raise _Refused("TransportClosedError", "the device transport is not open in this session",
                           hint="call open first")
        return self.transport

    def end(self) -> None:
        """Close the transport and the project's server (stopping any emulator), remove the files.
        Safe to call again: the session process calls it once more when it exits."""
        transport, self.transport = self.transport, None
        project, self.project = self.project, None
        try:
            if transport is not None:
                transport.close()
        except Exception:  # noqa: BLE001 - a dead device must not keep the rest from being cleaned
            pass
        try:
            if project is not None:
                project.close()
        finally:
            shutil.rmtree(self.work / PROJECT_DIR, ignore_errors=True)
            (self.work / wire.ARCHIVE_NAME).unlink(missing_ok=True)


def client_link(config: Dict[str, Any]) -> Optional[socket.socket]:
    """This session's connection to its client (or to the proxy that pairs it), found among the
    process's sockets: the one connected socket whose peer is not the tracker. None when that is not
    exactly one socket (then a dead client is noticed when its reply cannot be sent)."""
    tracker = config.get("tracker") or ("", 0)
    tracker_ips = set()
    try:
        tracker_ips = {info[4][0] for info in socket.getaddrinfo(tracker[0], tracker[1])}
    except (OSError, UnicodeError):
        pass
    found: Dict[tuple, socket.socket] = {}  # by (local, peer) address: a connection may have two fds
    for name in os.listdir("/proc/self/fd") if os.path.isdir("/proc/self/fd") else []:
        try:
            if not stat.S_ISSOCK(os.fstat(int(name)).st_mode):
                continue
            sock = socket.socket(fileno=os.dup(int(name)))
        except OSError:
            continue
        try:
            ends = (sock.getsockname(), sock.getpeername())
        except OSError:
            ends = None  # a listening socket
        peer = ends[1] if ends else None
        if (sock.type != socket.SOCK_STREAM or not peer or ends in found
                or (peer[1] == tracker[1] and peer[0] in tracker_ips)):
            sock.close()
        else:
            found[ends] = sock
    if len(found) == 1:
        return next(iter(found.values()))
    for sock in found.values():
        sock.close()
    return None


_SESSION: Optional[NodeSession] = None
_CONFIG: Dict[str, Any] = {}


def _session() -> NodeSession:
    global _SESSION
    if _SESSION is None:
        _SESSION = NodeSession(_CONFIG)
        # Run when the session process exits, however its RPC loop ended (client gone, client done).
        multiprocessing.util.Finalize(None, _end_session, exitpriority=10)
    return _SESSION


def _end_session() -> None:
    if _SESSION is not None:
        _SESSION.end()
        if _SESSION.authenticated:
            _SESSION.say("session over: transport closed, files removed; ready for the next")


def _error_reply(err: BaseException) -> bytes:
    if isinstance(err, _Refused):
        return wire.error_reply(err.kind, err.message, err.hint)
    if isinstance(err, UserError):
        return wire.error_reply(type(err).__name__, err.message, err.hint, err.details, err.exit_code)
    if isinstance(err, ServerError):
        return wire.error_reply(type(err).__name__, str(err))
    return wire.error_reply(type(err).__name__, str(err) or type(err).__name__,
                            details=traceback.format_exc(limit=8))


def _guarded(fn: Callable[..., bytes], needs_hello: bool = True) -> Callable[..., bytes]:
    """fn as a node function: refused until the session said hello with the token; errors as replies."""

    def call(*args) -> bytes:
        try:
            session = _session()
            if needs_hello and not session.authenticated:
                raise _Refused("TokenRefused", "this session has not presented the node's token",
                               hint=f"call {wire.HELLO} with the token first")
            return fn(session, *args)
        except Exception as err:  # noqa: BLE001 - every failure goes back to the client as a reply
            return _error_reply(err)

    call.__name__ = fn.__name__
    return call


# ---- the functions -----------------------------------------------------------------------------


def hello(session: NodeSession, token: str, client_protocol: int) -> bytes:
    expected = session.config.get("token") or ""
    if expected and not hmac.compare_digest(str(token).encode(), expected.encode()):
        session.say("refused a session: missing or wrong token")
        raise _Refused("TokenRefused", f"the node serving {session.config['key']!r} refused the token "
                       f"({'none was given' if not token else 'it does not match'})",
                       hint="give the node's token with --token-file FILE (or UTVM_FARM_TOKEN)")
    if int(client_protocol) != wire.PROTOCOL_VERSION:
        raise _Refused("UserError", f"this node speaks farm protocol {wire.PROTOCOL_VERSION}, the client "
                       f"{client_protocol}", hint="use the same utvm version on the node and the client")
    session.authenticated = True
    session.link = client_link(session.config)
    session.say(f"session opened{session.peer()}")
    return wire.ok_json({key: session.config[key] for key in ("key", "template", "platform", "board",
                                                              "options")})


def _step(session: NodeSession, what: str, action: Callable[[], Any]) -> Any:
    session.say(f"{what}...")
    start = time.monotonic()
    try:
        result = action()
    except Exception as err:
        session.say(f"{what} failed: {getattr(err, 'message', None) or err}")
        raise
    session.say(f"{what}: done in {time.monotonic() - start:.1f} s")
    return result


def generate(session: NodeSession, archive_name: str, options_json: str) -> bytes:
    if session.project is not None:
        raise _Refused("ProjectStateError", "this session already generated its project")
    name = pathlib.Path(str(archive_name)).name  # only a file of this session's own directory
    archive = session.work / name
    if not archive.is_file():
        raise _Refused("UserError", f"no uploaded archive {name!r} in this session",
                       hint="upload the MLF archive (RPCSession.upload) before generate")
    options = session.options(options_json)
    verbose = bool(session.config.get("verbose"))

    def make() -> GeneratedProject:
        with TemplateProject.from_directory(session.config["template_dir"], echo=verbose,
                                            die_with_owner=True) as template:
            return template.generate_project(archive, session.work / PROJECT_DIR, options)

    session.project = _step(session, "generate", make)
    return wire.ok_json({"platform": session.project.platform_name,
                         "project_type": session.project.project_type})


def build(session: NodeSession, options_json: str) -> bytes:
    project = session.require_project()
    _step(session, "build", lambda: project.build(session.options(options_json)))
    # The client cannot see the image: the node tells it what the run's record needs of the project.
    return wire.ok_json(project_facts(project.directory))


def flash(session: NodeSession, options_json: str) -> bytes:
    project = session.require_project()
    _step(session, "flash", lambda: project.flash(session.options(options_json)))
    return wire.ok()


def open_transport(session: NodeSession, options_json: str) -> bytes:
    project = session.require_project()
    if session.transport is not None:
        session.transport.close()
        session.transport = None
    session.transport = open_project_transport(project, session.options(options_json))
    session.say(f"transport open ({type(session.transport).__name__})")
    return wire.ok_json({"transport": type(session.transport).__name__})


def read(session: NodeSession, n: int, timeout: float) -> bytes:
    transport = session.require_transport()
    deadline = time.monotonic() + float(timeout)
    # In slices, so that a client that died while its device runs frees the board now, not at the
    # read's deadline (TVM's loop would notice only when the reply cannot be sent).
    while True:
        remaining = deadline - time.monotonic()
        try:
            return wire.ok(transport.read(int(n), max(0.0, min(remaining, CLIENT_CHECK_SEC))))
        except IoTimeoutError:
            if remaining <= CLIENT_CHECK_SEC:
                raise
        if session.client_gone():
            session.say("the client went away mid-session; ending it")
            session.end()
            os._exit(0)


def write(session: NodeSession, data: bytes, timeout: float) -> bytes:
    session.require_transport().write(bytes(data), float(timeout))
    return wire.ok()


def close_transport(session: NodeSession) -> bytes:
    transport, session.transport = session.transport, None
    if transport is not None:
        transport.close()
    return wire.ok()


def end(session: NodeSession) -> bytes:
    session.end()
    return wire.ok()


_FUNCTIONS = {
    wire.HELLO: _guarded(hello, needs_hello=False),
    wire.GENERATE: _guarded(generate),
    wire.BUILD: _guarded(build),
    wire.FLASH: _guarded(flash),
    wire.OPEN: _guarded(open_transport),
    wire.READ: _guarded(read),
    wire.WRITE: _guarded(write),
    wire.CLOSE: _guarded(close_transport),
    wire.END: _guarded(end),
}


# ---- the server process ------------------------------------------------------------------------


_FORKING_PARENT = [0]


def _before_fork() -> None:
    _FORKING_PARENT[0] = os.getpid()


def _after_fork_in_child() -> None:
    # A session process (or anything else forked here) dies with the process that forked it.
    die_with_parent(_FORKING_PARENT[0])()
    if _FORKING_PARENT[0] == _CONFIG.get("server_pid"):  # a session (not a child a session spawns)
        threading.Thread(target=_end_without_hello, name="utvm-farm-hello", daemon=True).start()


def _end_without_hello() -> None:
    """End a session that presents no token in time: a client that only holds the connection (TVM's
    own client, or one that hung) would otherwise keep the board from everyone queued behind it."""
    deadline = float(_CONFIG.get("hello_timeout") or HELLO_DEADLINE_SEC)
    time.sleep(deadline)
    if _SESSION is None or not _SESSION.authenticated:
        print(f"utvm farm node [{_CONFIG.get('key')}]: no hello with the token within {deadline:g} s; "
              "ending the session", flush=True)
        os._exit(0)


def _watch_serving_thread() -> None:
    """Exit this process when TVM's serving thread ends (it raises on some errors and stops serving
    while the process lives on); `utvm farm node` sees the exit and starts a new server."""
    from tvm.rpc import server as rpc_server

    deadline = time.monotonic() + STATE_WAIT_SEC
    while rpc_server.PopenRPCServerState.current is None:
        if time.monotonic() > deadline:
            return
        time.sleep(0.1)
    rpc_server.PopenRPCServerState.current.thread.join()
    print(f"utvm farm node [{_CONFIG.get('key')}]: TVM's RPC server stopped serving; restarting it",
          flush=True)
    os._exit(3)


def install(config: Dict[str, Any]) -> None:
    """The node's server_init_callback (see the module docstring). ``config`` holds key, template,
    template_dir, platform, board, options, token, verbose, tracker, hello_timeout and node_pid."""
    import tvm_ffi

    die_with_parent(int(config["node_pid"]))()
    _CONFIG.clear()
    _CONFIG.update(config, server_pid=os.getpid())
    # Sessions must be forked from this process: the functions registered here live in its memory.
    multiprocessing.set_start_method("fork", force=True)
    os.register_at_fork(before=_before_fork, after_in_child=_after_fork_in_child)
    for name, fn in _FUNCTIONS.items():
        tvm_ffi.register_global_func(name, fn, override=True)
    threading.Thread(target=_watch_serving_thread, name="utvm-farm-watchdog", daemon=True).start()
