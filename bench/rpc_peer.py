"""The TVM RPC peer: TVM's own RPC server and client on 127.0.0.1.

A no-op round trip is one call of the server's `testing.nop` global; an upload is `copyfrom` of
the host array into a remote tensor (then `sync`), a download `copyto` of that tensor into a
local one: like the other peers, bytes move between buffers that already exist. (Allocating
instead, `tvm.runtime.tensor(array, remote)` and `.numpy()`, measured the same here.)
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np

START_DEADLINE_S = 60.0
REPO_ROOT = Path(__file__).resolve().parent.parent


class RpcServerProcess:
    """`python -m bench.rpc_server` in its own process group; `port` once it listens."""

    def __init__(self):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.rpc_server"],
            cwd=REPO_ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            start_new_session=True,
            text=True,
        )
        self.port = self._read_port()

    def _read_port(self) -> int:
        import selectors

        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            if not sel.select(START_DEADLINE_S):
                self.close()
                raise RuntimeError(f"TVM RPC server did not start within {START_DEADLINE_S:.0f} s")
        line = self.proc.stdout.readline().strip()
        if not line.isdigit():
            self.close()
            raise RuntimeError(f"TVM RPC server failed to start (exit code {self.proc.poll()})")
        return int(line)

    def close(self) -> None:
        """End the server and every worker it forked (they share its process group)."""
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait(timeout=START_DEADLINE_S)
        for stream in (self.proc.stdin, self.proc.stdout):
            stream.close()


class RpcPeer:
    """A TVM RPC session to a server on 127.0.0.1 and a remote tensor of `nbytes` bytes."""

    name = "TVM RPC"

    def __init__(self, nbytes: int):
        import tvm
        from tvm import rpc

        self.server = RpcServerProcess()
        try:
            self.remote = rpc.connect("127.0.0.1", self.server.port)
            self.dev = self.remote.cpu()
            self.round_trip = self.remote.get_function("testing.nop")
            self.data = np.frombuffer(os.urandom(nbytes), dtype=np.uint8)
            self.on_device = tvm.runtime.tensor(self.data, self.dev)
            self.local = tvm.runtime.tensor(np.zeros_like(self.data), tvm.cpu())
            self.on_device.copyto(self.local)
            if not np.array_equal(self.local.numpy(), self.data):
                raise RuntimeError("TVM RPC returned different bytes than it was sent")
        except BaseException:
            self.server.close()
            raise

    def upload(self) -> None:
        self.on_device.copyfrom(self.data)
        self.dev.sync()

    def download(self) -> None:
        self.on_device.copyto(self.local)

    def close(self) -> None:
        # Drop the remote objects before the server goes, so nothing talks to a dead socket.
        del self.on_device, self.local, self.round_trip, self.dev, self.remote
        self.server.close()
