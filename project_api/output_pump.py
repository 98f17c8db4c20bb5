"""Drain a child process's output stream on a thread: echo it, and keep its last bytes.

A child that writes more than a pipe holds blocks until someone reads, so every stream of a
child we start (a Project API server's stdout and stderr, a device process's stderr) is drained
for its whole life. The tail kept for error messages is bounded in bytes, whatever the lines.
"""

from __future__ import annotations

import codecs
import collections
import os
import signal
import sys
import threading
from typing import Deque, List

READ_BYTES = 65536
# Signals a user or a supervisor sends to stop a program. Python runs their handlers in the main
# thread only, and the kernel cuts a wait short only in the thread that took the signal: a pump
# thread that took one would leave the main thread asleep in its wait.
_CONTROL_SIGNALS = {getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP", "SIGALRM", "SIGUSR1",
                                                       "SIGUSR2") if hasattr(signal, name)}


class OutputPump(threading.Thread):
    """Reads ``stream`` to its end; echoes it to our stderr when ``echo``, and keeps its last
    ``keep_bytes`` bytes for :meth:`tail_lines`. Owns the stream and closes it at the end."""

    def __init__(self, stream, *, echo: bool = False, keep_bytes: int = 0, name: str = "utvm-child-output"):
        super().__init__(daemon=True, name=name)
        self._stream = stream
        self._echo = echo
        self._keep = keep_bytes
        self._chunks: Deque[bytes] = collections.deque()
        self._kept = 0
        self._lock = threading.Lock()

    def start(self) -> None:
        """Start the thread with the control signals blocked in it (it inherits the mask), so they
        reach the main thread and wake its waits at once."""
        if not hasattr(signal, "pthread_sigmask"):
            super().start()
            return
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, _CONTROL_SIGNALS)
        try:
            super().start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)

    def run(self) -> None:
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        fd = self._stream.fileno()
        # Closing the stream from another thread while this one reads could make the read hit
        # whatever file reuses the descriptor number, so only this thread closes it.
        try:
            while True:
                chunk = os.read(fd, READ_BYTES)
                if self._echo:
                    self._write_echo(decoder.decode(chunk, final=not chunk))
                if not chunk:
                    break
                self._keep_chunk(chunk)
        except OSError:
            pass
        finally:
            self._stream.close()

    def _write_echo(self, text: str) -> None:
        if not text:
            return
        try:
            sys.stderr.write(text)
            sys.stderr.flush()
        except (OSError, ValueError):
            self._echo = False  # our stderr is gone; keep draining

    def _keep_chunk(self, chunk: bytes) -> None:
        if self._keep <= 0:
            return
        with self._lock:
            self._chunks.append(chunk)
            self._kept += len(chunk)
            while self._kept - len(self._chunks[0]) >= self._keep:
                self._kept -= len(self._chunks.popleft())

    def tail_text(self) -> str:
        """The last ``keep_bytes`` bytes read so far, decoded (a cut character shows as U+FFFD)."""
        with self._lock:
            data = b"".join(self._chunks)[-self._keep:] if self._keep > 0 else b""
        return data.decode("utf-8", "replace")

    def tail_lines(self, max_lines: int) -> List[str]:
        """The last ``max_lines`` lines of the tail, without line ends."""
        return self.tail_text().splitlines()[-max_lines:] if max_lines > 0 else []
