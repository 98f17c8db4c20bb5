"""Start TVM's RPC server on the board and wait until it listens: under qemu-aarch64 on this machine
(the emulated board), or over SSH with the server's port forwarded to this machine.

The server is ``board/utvm_rpc_server.py`` (it imports TVM, so it runs only on the board). It runs
as a :class:`PipeChild`: it dies with the process that started it, and it exits when its stdin
closes, which over SSH is what the board sees when the connection drops or the client is killed.
It prints one line once it listens; until then, a deadline.

Standard library only: generated projects carry this module.
"""

from __future__ import annotations

import os
import pathlib
import shlex
import socket
import time
from typing import List

from project_api.child_process import PipeChild
from project_api.errors import IoTimeoutError, TransportClosedError, UserError

from .ssh import SshTarget

SERVER_SCRIPT = "utvm_rpc_server.py"
READY = b"utvm-rpc-server listening on"
# The environment the board's TVM runs with: only its runtime library is loaded.
BOARD_ENV = {"TVM_USE_RUNTIME_LIB": "1"}
# Ports the local server may take, from the rpc_port option on.
PORT_RANGE = 100


def free_local_port() -> int:
    """A TCP port free on 127.0.0.1 right now (for an SSH forward)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def server_arguments(port: int, port_end: int, tracker: str = "", key: str = "",
                     address: str = "127.0.0.1", cuda: bool = False) -> List[str]:
    """The server's command line: listen from port up to port_end; with a tracker, register under
    key, reachable at address; with cuda, load TVM's CUDA compiler callback."""
    # Listen where the tracker's clients can reach it: all interfaces for a board on the network.
    listen = "0.0.0.0" if tracker and address != "127.0.0.1" else "127.0.0.1"
    args = ["--host", listen, "--port", str(port), "--port-end", str(port_end)]
    if tracker:
        args += ["--tracker", tracker, "--key", key, "--custom-addr", address]
    return args + (["--cuda"] if cuda else [])


def wait_ready(child: PipeChild, timeout: float, where: str) -> int:
    """The port the server printed once it listens; a clear error if it dies or the time runs out."""
    deadline = time.monotonic() + timeout
    seen = b""
    while b"\n" not in seen:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            child.close()
            raise UserError(f"TVM's RPC server on {where} did not start within {timeout:g} s",
                            hint="importing TVM under an emulator takes about 20 s on a slow machine; "
                                 "raise board_start_timeout", details=child.stderr_tail() or None)
        try:
            seen += child.read(4096, remaining)
        except IoTimeoutError:
            continue
        except TransportClosedError as err:
            child.close()
            raise UserError(f"TVM's RPC server on {where} stopped before it listened",
                            hint="check that the board's Python has TVM (see docs/jetson.md)",
                            details=str(err)) from None
    line = seen.split(b"\n", 1)[0].strip()
    if not line.startswith(READY):
        child.close()
        raise UserError(f"TVM's RPC server on {where} printed {line[:200]!r} instead of its port",
                        details=child.stderr_tail() or None)
    return int(line[len(READY):].strip())


class BoardServer:
    """TVM's RPC server running for the board, and whatever carries it (ssh, a port forward); the
    handler keeps it as its device and closes it as one."""

    def __init__(self, children: List[PipeChild], host: str, port: int):
        self.children, self.host, self.port = children, host, port

    def close(self) -> None:
        for child in reversed(self.children):
            child.close()


def start_emulated(qemu: str, root: pathlib.Path, cpu: str, script: pathlib.Path, args: List[str],
                   tmp_dir: pathlib.Path, timeout: float) -> BoardServer:
    """The server (with its arguments, see server_arguments) under ``qemu-aarch64 -L root`` with
    the root's python3. Its temporary files go to tmp_dir, outside the shared root."""
    python = root / "usr" / "bin" / "python3"
    if not python.is_file():
        raise UserError(f"qemu_root {root} has no usr/bin/python3: it is no arm64 root with Python and TVM",
                        hint="build one with `python -m utvm.templates.jetson.utvm_jetson.arm64_root DIR` "
                             "and pass -o qemu_root=DIR (docs/jetson.md)")
    tmp_dir.mkdir(parents=True, exist_ok=True)
    argv = [qemu, "-L", str(root), "-cpu", cpu, str(python), str(script), *args]
    env = dict(os.environ, TMPDIR=str(tmp_dir), **BOARD_ENV)
    child = PipeChild(argv, env=env, name="board's RPC server (qemu-aarch64)")
    return BoardServer([child], "127.0.0.1", wait_ready(child, timeout, "the emulated board (qemu-aarch64)"))


def _wait_forward(forward: PipeChild, port: int, timeout: float, where: str) -> None:
    """Until the local end of an ssh -L forward accepts connections (ssh has logged in)."""
    deadline = time.monotonic() + timeout
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.settimeout(1.0)
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        if forward.returncode is not None or time.monotonic() > deadline:
            tail = forward.stderr_tail()
            forward.close()
            raise UserError(f"ssh could not forward TVM's RPC port from {where}",
                            hint="the board's sshd must allow TCP forwarding (AllowTcpForwarding)",
                            details=tail or None)
        time.sleep(0.1)


def start_over_ssh(target: SshTarget, remote_dir: str, remote_prefix: str, remote_python: str,
                   args: List[str], timeout: float) -> BoardServer:
    """The server on the board over SSH (its arguments from server_arguments), and a second ssh that
    forwards the port it took to a free local port: the client needs no route to the board but SSH,
    and a port already taken on the board only moves the server to the next one."""
    command = " ".join(filter(None, [
        f"cd {shlex.quote(remote_dir)} &&", "TVM_USE_RUNTIME_LIB=1 exec", remote_prefix,
        shlex.quote(remote_python), shlex.quote(SERVER_SCRIPT), *map(shlex.quote, args)]))
    server = PipeChild(target.argv(command), name="ssh")
    remote_port = wait_ready(server, timeout, target.where)
    local = free_local_port()
    try:
        forward = PipeChild(target.argv(None, forward=f"127.0.0.1:{local}:127.0.0.1:{remote_port}"),
                            name="ssh (port forward)")
        _wait_forward(forward, local, target.connect_timeout + 10.0, target.where)
    except BaseException:
        server.close()
        raise
    return BoardServer([server, forward], "127.0.0.1", local)
