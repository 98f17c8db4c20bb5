"""`utvm farm node`: one board, served under a key through TVM's own RPC server and tracker.

The node process checks the template and the board options once, then runs a stock
`tvm.rpc.Server` registered with the tracker (or connected out to a proxy), whose
`server_init_callback` is node_functions.install. It supervises that server: when it exits (TVM's
serving thread stopped, or it was killed) the node removes what its sessions left and starts a new
one. SIGTERM or SIGINT stops the server, and with it any session and emulator, and removes the
node's files.

Every file a session writes lives under the node's own temporary directory (TMPDIR is pointed at it
for the server), so nothing outlives the node; a node killed with SIGKILL leaves that directory,
and the next node started on the machine removes it.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import pathlib
import shutil
import signal
import socket
import tempfile
import time
from typing import Any, Dict, Mapping, Optional, Tuple

from utvm.project_api.errors import UserError
from utvm.project_api.project import TemplateProject

from . import node_functions, wire
from .errors import FarmError
from .tracker_client import TrackerClient

RESOLVE_BOARD = "utvm_resolve_board"
NODE_DIR_PREFIX = "utvm-farm-node-"
RESTART_DELAY_SEC = 2.0
# How often the node checks on its TVM server process.
POLL_SEC = 0.5
# How long a starting node waits for its tracker or proxy to answer (TVM's server waits a minute too).
REACH_TIMEOUT_SEC = 60.0


@dataclasses.dataclass
class NodeConfig:
    """What `utvm farm node` was asked to serve, and how."""

    tracker: Tuple[str, int]
    key: str
    template_dir: pathlib.Path
    options: Dict[str, Any]
    host: str = "127.0.0.1"
    port: int = 9091
    port_end: int = 9191
    through_proxy: Optional[Tuple[str, int]] = None
    token: str = ""
    verbose: bool = False
    hello_timeout: float = node_functions.HELLO_DEADLINE_SEC


def _start_server(rpc, config: NodeConfig, init_callback):
    """TVM's RPC server for the node: connected out to the proxy, or listening and registered."""
    if config.through_proxy:
        host, port = config.through_proxy
        return rpc.Server(host, port=port, is_proxy=True, key=config.key, silent=not config.verbose,
                          server_init_callback=init_callback)
    if not 0 < config.port < config.port_end <= 65536:
        raise UserError(f"no port to try between {config.port} and {config.port_end}",
                        hint="give --port and a larger --port-end")
    try:
        return rpc.Server(config.host, port=config.port, port_end=config.port_end,
                          tracker_addr=config.tracker, key=config.key, silent=not config.verbose,
                          server_init_callback=init_callback)
    except (ValueError, OSError) as err:  # TVM's server reports a bind failure as a ValueError
        reason = str(err).strip().splitlines()[-1]
        ports = f"{config.port}..{config.port_end - 1}"
        raise UserError(f"cannot listen on {config.host} ports {ports}: {reason}",
                        hint="give free ports with --port/--port-end, or an address of this host") from None


def check_exposure(config: NodeConfig) -> None:
    """A node reachable beyond this machine must demand a token (TVM's RPC itself has none)."""
    if config.token:
        return
    reach = config.through_proxy[0] if config.through_proxy else config.host
    if not wire.is_loopback(reach):
        where = f"through the proxy at {reach}" if config.through_proxy else f"on {reach}"
        raise UserError(f"refusing to serve {where} without a token: anyone who reaches it could use "
                        "the board",
                        hint="give --token-file FILE (a shared secret), or serve on 127.0.0.1 and reach the "
                        "node through an SSH tunnel (see docs/farm.md)")


def describe_template(template_dir: pathlib.Path, options: Mapping[str, Any],
                      verbose: bool = False) -> Dict[str, Any]:
    """Check the node's options against the template, and resolve its board: platform, board record
    (None for a template that does not resolve boards) and the options, coerced."""
    with TemplateProject.from_directory(template_dir, echo=verbose) as template:
        checked = template.prepare_options("generate_project", options)
        for option in template.project_options:
            if option.name == "project_type" and checked.get("project_type") not in (None, "host_driven"):
                raise UserError(f"a farm node serves host-driven sessions, not project_type="
                                f"{checked['project_type']}", hint="drop -o project_type=...")
        board = None
        if template.has_extension(RESOLVE_BOARD):
            board = template.client.call(RESOLVE_BOARD, {"options": checked})
        given = {k: checked[k] for k in options}
        return {"platform": template.info().get("platform_name"), "board": board, "options": given}


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (killed, not yet reaped by its parent) is dead too
        return pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def sweep_stale_node_dirs(root: Optional[pathlib.Path] = None) -> None:
    """Remove the directories of nodes that died without cleaning up (killed with SIGKILL)."""
    root = pathlib.Path(root or tempfile.gettempdir())
    for path in root.glob(f"{NODE_DIR_PREFIX}*"):
        pid = path.name[len(NODE_DIR_PREFIX):].split("-")[0]
        if pid.isdigit() and not _pid_alive(int(pid)):
            shutil.rmtree(path, ignore_errors=True)


def _clear(directory: pathlib.Path) -> None:
    for child in directory.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)


def _reach(config: NodeConfig) -> None:
    if config.through_proxy:
        host, port = config.through_proxy
        try:
            socket.create_connection((host, port), timeout=5.0).close()
        except OSError as err:
            raise FarmError(f"cannot reach the proxy at {host}:{port}: {err.strerror or err}",
                            hint="start it first: python -m tvm.exec.rpc_proxy --tracker ...") from None
    else:
        TrackerClient(config.tracker, timeout=5.0).close()


def wait_for_tracker(config: NodeConfig, say, timeout: float = REACH_TIMEOUT_SEC) -> None:
    """Wait until the tracker (or the proxy) answers, as TVM's server does, up to ``timeout`` seconds;
    then its error."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            _reach(config)
            return
        except FarmError as err:
            if time.monotonic() >= deadline:
                raise
            if say is not None:
                say(f"utvm farm node [{config.key}]: {err.message}; retrying for up to {timeout:g} s")
                say = None  # said once
            time.sleep(1.0)


class _Stop(Exception):
    pass


def _raise_stop(signum, frame) -> None:
    raise _Stop()


def serve_node(config: NodeConfig, say=print) -> int:
    """Serve the board until SIGTERM or SIGINT; returns the exit code."""
    check_exposure(config)
    facts = describe_template(config.template_dir, config.options, config.verbose)
    board = (facts["board"] or {}).get("name")
    options = " ".join(f"{k}={v}" for k, v in facts["options"].items())
    say(f"utvm farm node [{config.key}]: template {config.template_dir.name}"
        + (f", board {board}" if board else "") + (f", options {options}" if options else ""))
    wait_for_tracker(config, say)
    from tvm import rpc  # after the checks: importing TVM takes a while

    sweep_stale_node_dirs()
    node_dir = pathlib.Path(tempfile.mkdtemp(prefix=f"{NODE_DIR_PREFIX}{os.getpid()}-"))
    # The server and its sessions make their work directories here (TVM uses tempfile).
    os.environ["TMPDIR"] = str(node_dir)
    tempfile.tempdir = None
    init = {
        "key": config.key, "template": config.template_dir.name, "template_dir": str(config.template_dir),
        "platform": facts["platform"], "board": facts["board"], "options": facts["options"],
        "token": config.token, "verbose": config.verbose, "node_pid": os.getpid(),
        "tracker": None if config.through_proxy else list(config.tracker),
        "hello_timeout": config.hello_timeout,
    }
    old_handlers = {sig: signal.signal(sig, _raise_stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    server = None
    try:
        init_callback = functools.partial(node_functions.install, init)
        while True:
            server = _start_server(rpc, config, init_callback)
            if config.through_proxy:
                where = f"through the proxy at {config.through_proxy[0]}:{config.through_proxy[1]}"
            else:
                where = (f"on {config.host}:{server.port}, registered with the tracker at "
                         f"{config.tracker[0]}:{config.tracker[1]}")
            say(f"utvm farm node [{config.key}]: serving {where}; token "
                + ("required" if config.token else "not required (loopback only)"))
            while server.proc.is_alive():
                time.sleep(POLL_SEC)
            say(f"utvm farm node [{config.key}]: the TVM server process ended; starting a new one in "
                f"{RESTART_DELAY_SEC:g} s")
            server.terminate()
            server = None
            _clear(node_dir)
            time.sleep(RESTART_DELAY_SEC)
    except _Stop:
        say(f"utvm farm node [{config.key}]: stopping")
        return 0
    finally:
        for sig, handler in old_handlers.items():
            signal.signal(sig, handler)
        if server is not None:
            server.terminate()
        shutil.rmtree(node_dir, ignore_errors=True)
