"""Byte transports to a device: the abstract interface and a subprocess-pipe transport.

A transport moves raw bytes; framing and sessions sit on top. Every call has a deadline.
Serial, TCP and Project-API-relay transports live in their own modules.
"""

from __future__ import annotations

import abc
import fcntl
import os
import selectors
import signal
import subprocess
import time
from typing import Mapping, Optional, Sequence, Tuple

from utvm.project_api.output_pump import OutputPump

from .errors import IoTimeoutError, TransportClosedError

# Bytes of the child's stderr kept for error messages.
STDERR_TAIL_BYTES = 8192
# How long close() lets the child exit after its stdin closes, before stopping it.
CLOSE_GRACE_SEC = 2.0
# How long an end-of-file waits for the child's exit code.
EXIT_CODE_WAIT_SEC = 2.0
# Pipe capacity asked for (Linux): whole large packets fit, so fewer wake-ups per transfer.
PIPE_BYTES = 1 << 20
_F_SETPIPE_SZ = 1031  # fcntl.F_SETPIPE_SZ, named there only from Python 3.10


def _grow_pipe(fd: int) -> None:
    try:
        fcntl.fcntl(fd, getattr(fcntl, "F_SETPIPE_SZ", _F_SETPIPE_SZ), PIPE_BYTES)
    except OSError:
        pass  # not Linux, or above /proc/sys/fs/pipe-max-size: the default still works


class Transport(abc.ABC):
    """A bidirectional byte stream to a device."""

    @abc.abstractmethod
    def write(self, data: bytes, timeout: float) -> None:
        """Write all of ``data`` within ``timeout`` seconds.

        Raises IoTimeoutError if it cannot, TransportClosedError if the link is gone.
        """

    @abc.abstractmethod
    def read(self, n: int, timeout: float) -> bytes:
        """Return 1..n bytes; raise IoTimeoutError if none arrive in ``timeout`` seconds,
        TransportClosedError at end of file."""

    def read_into(self, buffer: memoryview, timeout: float) -> int:
        """Read 1..len(buffer) bytes into ``buffer`` and return how many; errors as ``read``.

        Bulk transfers receive through this into one buffer they keep; a transport that can read
        in place (a pipe) overrides it to skip the copy.
        """
        data = self.read(len(buffer), timeout)
        buffer[:len(data)] = data
        return len(data)

    def pipe_fds(self) -> Optional[Tuple[int, int]]:
        """(write fd, read fd) when the link is a non-blocking pipe pair a session may use directly
        for its single-request fast path (see pipe_call.py), else None."""
        return None

    @abc.abstractmethod
    def close(self) -> None:
        """Release the link. Safe to call more than once."""

    def __enter__(self):
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def _describe_exit(returncode: Optional[int]) -> str:
    if returncode is None:
        return "device process closed its output but is still running"
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"device process was killed by {name} (exit code {returncode})"
    return f"device process exited with code {returncode}"


# Signals a user or a supervisor sends to stop a program. Python runs their handlers in the main
# thread only, and a wait is cut short only in the thread that took the signal.
_CONTROL_SIGNALS = {getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP", "SIGALRM", "SIGUSR1",
                                                       "SIGUSR2") if hasattr(signal, name)}


def _start_deaf_to_signals(thread) -> None:
    """Start ``thread`` with the control signals blocked in it (it inherits the mask), so they
    reach the main thread and wake its waits at once."""
    if not hasattr(signal, "pthread_sigmask"):
        thread.start()
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, _CONTROL_SIGNALS)
    try:
        thread.start()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _wait(selector: selectors.BaseSelector, deadline: float) -> bool:
    """Whether the selector's descriptor became ready before the deadline."""
    remaining = deadline - time.monotonic()
    return remaining > 0 and bool(selector.select(remaining))


class SubprocessTransport(Transport):
    """A device that is a local process: bytes go to its stdin and come from its stdout.

    The child's stderr is kept in a bounded ring so an error can show its tail; when the child
    goes away, ``TransportClosedError`` names its exit code.
    """

    def __init__(self, argv: Sequence[str], cwd: Optional[str] = None,
                 env: Optional[Mapping[str, str]] = None):
        self.argv = [str(a) for a in argv]
        try:
            self._proc = subprocess.Popen(
                self.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                bufsize=0, cwd=cwd, env=None if env is None else dict(env),
            )
        except OSError as err:
            raise TransportClosedError(f"cannot start device process {self.argv[0]}: {err}") from err
        self._in_fd = self._proc.stdin.fileno()
        self._out_fd = self._proc.stdout.fileno()
        # Non-blocking so a full pipe never blocks past a deadline.
        os.set_blocking(self._in_fd, False)
        os.set_blocking(self._out_fd, False)
        _grow_pipe(self._in_fd)
        _grow_pipe(self._out_fd)
        # One selector per direction for the transport's life: no set-up cost per call.
        self._readable = selectors.DefaultSelector()
        self._readable.register(self._out_fd, selectors.EVENT_READ)
        self._writable = selectors.DefaultSelector()
        self._writable.register(self._in_fd, selectors.EVENT_WRITE)
        self._stderr = OutputPump(self._proc.stderr, keep_bytes=STDERR_TAIL_BYTES, name="utvm-device-stderr")
        _start_deaf_to_signals(self._stderr)
        self._closed = False

    def pipe_fds(self) -> Optional[Tuple[int, int]]:
        return None if self._closed else (self._in_fd, self._out_fd)

    @property
    def pid(self) -> int:
        return self._proc.pid

    @property
    def returncode(self) -> Optional[int]:
        """The child's exit code once it has exited (negative: killed by that signal)."""
        return self._proc.poll()

    def stderr_tail(self, max_lines: int = 20) -> str:
        """The last lines the child wrote to stderr."""
        return "\n".join(self._stderr.tail_lines(max_lines))

    def _closed_error(self, what: str) -> TransportClosedError:
        try:
            self._proc.wait(EXIT_CODE_WAIT_SEC)
        except subprocess.TimeoutExpired:
            pass
        # The exit is seen; give the stderr reader a moment to collect the last words.
        self._stderr.join(0.5)
        message = f"{what}: {_describe_exit(self._proc.returncode)}"
        tail = self.stderr_tail()
        if tail:
            message += "\nlast lines of its stderr:\n" + tail
        return TransportClosedError(message)

    def _check_open(self) -> None:
        if self._closed:
            raise TransportClosedError("the subprocess transport is closed")

    def write(self, data: bytes, timeout: float) -> None:
        if self._closed:
            self._check_open()
        try:
            # Nearly always the pipe takes the whole frame at once: no deadline, no view needed.
            written = os.write(self._in_fd, data)
        except BlockingIOError:
            written = 0
        except (BrokenPipeError, ConnectionResetError) as err:
            raise self._closed_error("cannot write to the device") from err
        if written == len(data):
            return
        view = memoryview(data).cast("B")[written:]
        deadline = time.monotonic() + timeout
        while view:
            if not _wait(self._writable, deadline):
                if self.returncode is not None:
                    raise self._closed_error("cannot write to the device")
                raise IoTimeoutError(
                    f"device process did not take {len(view)} more bytes within {timeout:.3g} s")
            try:
                view = view[os.write(self._in_fd, view):]
            except BlockingIOError:
                pass
            except (BrokenPipeError, ConnectionResetError) as err:
                raise self._closed_error("cannot write to the device") from err

    def read(self, n: int, timeout: float) -> bytes:
        return self._read_with(os.read, n, timeout)

    def read_into(self, buffer: memoryview, timeout: float) -> int:
        return self._read_with(os.readv, (buffer,), timeout)

    def _read_with(self, read, argument, timeout: float):
        """``read(fd, argument)`` (os.read or os.readv) once the pipe has bytes; its falsy result
        (b"" or 0) is end of file."""
        if self._closed:
            self._check_open()
        deadline = None
        while True:
            # Try first: on one CPU the device has usually answered by the time we read.
            try:
                got = read(self._out_fd, argument)
            except BlockingIOError:
                got = None
            if got is not None:
                if not got:
                    raise self._closed_error("the device closed the link")
                return got
            if deadline is None:
                deadline = time.monotonic() + timeout
            if not _wait(self._readable, deadline):
                raise IoTimeoutError(f"no bytes from the device process within {timeout:.3g} s")

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._readable.close()
        self._writable.close()
        for stream in (self._proc.stdin, self._proc.stdout):
            try:
                stream.close()
            except OSError:
                pass
        try:
            self._proc.wait(CLOSE_GRACE_SEC)
        except subprocess.TimeoutExpired:
            self._proc.terminate()
            try:
                self._proc.wait(CLOSE_GRACE_SEC)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._stderr.join(1.0)
