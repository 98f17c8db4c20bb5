"""A Project API version-1 client written only from the wire spec in DESIGN.md.

It imports nothing from utvm, so it stands for microTVM's client. Tests also use it to send raw,
malformed requests to a server.
"""

import base64
import json
import os
import select
import subprocess
import sys
import tempfile
import time


class SpecClient:
    """Launches microtvm_api_server.py in a directory with two pipes, and talks JSON-RPC over them."""

    def __init__(self, directory, debug=False):
        to_server_r, self._to_server = os.pipe()
        self._from_server, from_server_w = os.pipe()
        args = [sys.executable, os.path.join(directory, "microtvm_api_server.py")]
        self._stdout, self._stderr = tempfile.TemporaryFile(), tempfile.TemporaryFile()
        args += ["--read-fd", str(to_server_r), "--write-fd", str(from_server_w)] + (
            ["--debug"] if debug else []
        )
        self.proc = subprocess.Popen(
            args,
            cwd=directory,
            pass_fds=(to_server_r, from_server_w),
            # Files, not pipes: a chatty server must never block on output nobody reads yet.
            stdout=self._stdout,
            stderr=self._stderr,
            stdin=subprocess.DEVNULL,
        )
        os.close(to_server_r)
        os.close(from_server_w)
        self._buffer = b""
        self._next_id = 0

    def send_raw(self, data):
        os.write(self._to_server, data)

    def read_reply(self, timeout=60.0):
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([self._from_server], [], [], remaining)[0]:
                raise TimeoutError("no reply from the server")
            chunk = os.read(self._from_server, 1 << 20)
            if not chunk:
                raise EOFError("the server closed the channel")
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return json.loads(line)

    def request(self, method, params=None, timeout=60.0):
        """Send one request and return the whole reply object (result or error)."""
        self._next_id += 1
        message = {"jsonrpc": "2.0", "method": method, "params": params or {}, "id": self._next_id}
        self.send_raw(json.dumps(message).encode("utf-8") + b"\n")
        reply = self.read_reply(timeout)
        assert reply["id"] == self._next_id, reply
        return reply

    def call(self, method, params=None, timeout=60.0):
        """Send one request and return its result; raise RuntimeError carrying the error object."""
        reply = self.request(method, params, timeout)
        if "error" in reply:
            raise RuntimeError(reply["error"])
        return reply["result"]

    def write_transport(self, data, timeout_sec):
        return self.call(
            "write_transport", {"data": base64.b85encode(data).decode("ascii"), "timeout_sec": timeout_sec}
        )

    def read_transport(self, n, timeout_sec):
        return base64.b85decode(self.call("read_transport", {"n": n, "timeout_sec": timeout_sec})["data"])

    def close(self, timeout=10.0):
        """Close the channel, wait for the server to exit, and return (exit code, stdout, stderr)."""
        os.close(self._to_server)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._from_server)
        out, err = (self._read_all(f) for f in (self._stdout, self._stderr))
        return self.proc.returncode, out, err

    @staticmethod
    def _read_all(f):
        f.seek(0)
        text = f.read().decode("utf-8", "replace")
        f.close()
        return text
