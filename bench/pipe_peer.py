"""The raw-pipe peer: a C child process that echoes, sinks or sources bytes over stdin/stdout.

The host side uses plain os.read / os.write, so this is the ceiling for any protocol that a
Python host runs over the same kind of pipe.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import tempfile
from pathlib import Path

SOURCE = Path(__file__).with_name("pipe_echo.c")
DEADLINE_S = 30.0


def build(out_dir: Path) -> Path:
    """Compile the echo child with the host C compiler; raise RuntimeError if there is none."""
    cc = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc") or shutil.which("clang")
    if cc is None:
        raise RuntimeError("no C compiler found (set CC or install gcc) for the raw-pipe peer")
    exe = out_dir / "pipe_echo"
    subprocess.run([cc, "-O2", "-o", str(exe), str(SOURCE)], check=True, timeout=DEADLINE_S)
    return exe


class PipePeer:
    """A running echo child and the host's end of its pipes; moves `nbytes` per transfer."""

    name = "raw pipe"

    def __init__(self, nbytes: int):
        self._tmp = tempfile.TemporaryDirectory(prefix="utvm-bench-pipe-")
        exe = build(Path(self._tmp.name))
        self.proc = subprocess.Popen([str(exe)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0)
        self.wfd = self.proc.stdin.fileno()
        self.rfd = self.proc.stdout.fileno()
        self.data = os.urandom(nbytes)
        self.sink = bytearray(nbytes)

    def _write(self, data) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self.wfd, view) :]

    def _read_into(self, buf: bytearray) -> None:
        view = memoryview(buf)
        got = 0
        while got < len(buf):
            n = self.proc.stdout.readinto(view[got:])
            if not n:
                raise RuntimeError(f"pipe peer exited (code {self.proc.poll()})")
            got += n

    def round_trip(self) -> None:
        """One byte there and back."""
        os.write(self.wfd, b"e")
        if os.read(self.rfd, 1) != b"e":
            raise RuntimeError("pipe peer echoed the wrong byte")

    def upload(self) -> None:
        """Send the data and wait for the child's acknowledgement."""
        self._write(b"u" + struct.pack("<I", len(self.data)))
        self._write(self.data)
        if os.read(self.rfd, 1) != b"k":
            raise RuntimeError("pipe peer did not acknowledge the upload")

    def download(self) -> None:
        """Fill the sink with bytes from the child."""
        self._write(b"d" + struct.pack("<I", len(self.sink)))
        self._read_into(self.sink)

    def close(self) -> None:
        self.proc.stdin.close()
        try:
            self.proc.wait(timeout=DEADLINE_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc.stdout.close()
        self._tmp.cleanup()
