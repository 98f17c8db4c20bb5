"""Child processes the floor starts and owns: a process over non-blocking pipes, and the rules that
keep any child from outliving its owner.

- :class:`PipeChild` is a device process (or any program) whose stdin and stdout carry bytes with a
  deadline on every call, and whose stderr is drained into a bounded tail for error messages. The
  POSIX host device, the Jetson device under qemu-aarch64, and ``ssh`` all run as one.
- :func:`die_with_parent` asks Linux to kill a child when its owner dies, even by SIGKILL.
- :func:`stop_process_group` ends a child and everything it started.

Standard library only: generated projects carry this module.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import selectors
import signal
import subprocess
import sys
import time
from typing import Callable, Mapping, Optional, Sequence, Tuple

from .errors import IoTimeoutError, TransportClosedError
from .output_pump import OutputPump

# Bytes of the child's stderr kept for error messages.
STDERR_TAIL_BYTES = 8192
# How long close() lets the child exit after its stdin closes, before stopping it.
CLOSE_GRACE_SEC = 2.0
# How long an end-of-file waits for the child's exit code.
EXIT_CODE_WAIT_SEC = 2.0
# Pipe capacity asked for (Linux): whole large packets fit, so fewer wake-ups per transfer.
PIPE_BYTES = 1 << 20
_F_SETPIPE_SZ = 1031  # fcntl.F_SETPIPE_SZ, named there only from Python 3.10
_PR_SET_PDEATHSIG = 1


def die_with_parent(parent_pid: int) -> Callable[[], None]:
    """A ``preexec_fn`` that asks the kernel to SIGKILL the child when its parent dies (Linux; a
    no-op elsewhere). PR_SET_PDEATHSIG fires when the *thread* that started the child exits, so
    start children from a thread that lives as long as they should."""

    def preexec() -> None:
        if sys.platform.startswith("linux"):
            try:
                libc = ctypes.CDLL(None, use_errno=True)
                libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
            except (OSError, AttributeError):
                pass
        if os.getppid() != parent_pid:  # the parent died before prctl took effect
            os._exit(1)

    return preexec


def stop_process_group(proc: subprocess.Popen, grace: float = CLOSE_GRACE_SEC) -> Optional[int]:
    """SIGTERM proc's process group, then SIGKILL it if proc is still there after grace seconds;
    returns proc's exit code. For children started with ``start_new_session=True``."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if proc.poll() is not None:
            break
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            proc.send_signal(sig)
        try:
            proc.wait(grace)
            break
        except subprocess.TimeoutExpired:
            pass
    return proc.poll()


def kill_process_group(proc: subprocess.Popen) -> None:
    """SIGKILL what remains of proc's process group (children it left running)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def describe_exit(returncode: Optional[int], what: str = "process") -> str:
    """'process exited with code 3', 'process was killed by SIGKILL (exit code -9)', ..."""
    if returncode is None:
        return f"{what} closed its output but is still running"
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"{what} was killed by {name} (exit code {returncode})"
    return f"{what} exited with code {returncode}"


def _grow_pipe(fd: int) -> None:
    try:
        fcntl.fcntl(fd, getattr(fcntl, "F_SETPIPE_SZ", _F_SETPIPE_SZ), PIPE_BYTES)
    except OSError:
        pass  # not Linux, or above /proc/sys/fs/pipe-max-size: the default still works


def _wait(selector: selectors.BaseSelector, deadline: float) -> bool:
    """Whether the selector's descriptor became ready before the deadline."""
    remaining = deadline - time.monotonic()
    return remaining > 0 and bool(selector.select(remaining))


class PipeChild:
    """A program whose stdin and stdout carry bytes, every call with a deadline.

    The child dies with its owner (``die_with_parent``, on by default) and runs in its own process
    group, so close() stops it and whatever it started. Its stderr is kept in a bounded tail; when
    the child goes away, TransportClosedError names its exit code and shows that tail. ``name``
    says what the child is in those messages ("device process", "ssh"...).
    """

    def __init__(self, argv: Sequence[str], cwd: Optional[str] = None, env: Optional[Mapping[str,
                                                                                             str]] = None,
                 name: str = "device process", die_with_owner: bool = True, echo_stderr: bool = False):
        self.argv = [str(a) for a in argv]
        self.name = name
        try:
            self._proc = subprocess.Popen(
                self.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                bufsize=0, cwd=cwd, env=None if env is None else dict(env),
                start_new_session=True,  # a terminal's Ctrl-C reaches the owner, which stops it in order
                preexec_fn=die_with_parent(os.getpid()) if die_with_owner else None,
            )
        except OSError as err:
            raise TransportClosedError(f"cannot start {name} {self.argv[0]}: {err}") from err
        self._in_fd = self._proc.stdin.fileno()
        self._out_fd = self._proc.stdout.fileno()
        # Non-blocking so a full pipe never blocks past a deadline.
        os.set_blocking(self._in_fd, False)
        os.set_blocking(self._out_fd, False)
        _grow_pipe(self._in_fd)
        _grow_pipe(self._out_fd)
        # One selector per direction for the child's life: no set-up cost per call.
        self._readable = selectors.DefaultSelector()
        self._readable.register(self._out_fd, selectors.EVENT_READ)
        self._writable = selectors.DefaultSelector()
        self._writable.register(self._in_fd, selectors.EVENT_WRITE)
        self._stderr = OutputPump(self._proc.stderr, echo=echo_stderr, keep_bytes=STDERR_TAIL_BYTES,
                                  name=f"utvm-{name.replace(' ', '-')}-stderr")
        self._stderr.start()
        self._closed = False

    @property
    def pid(self) -> int:
        return self._proc.pid

    @property
    def returncode(self) -> Optional[int]:
        """The child's exit code once it has exited (negative: killed by that signal)."""
        return self._proc.poll()

    @property
    def closed(self) -> bool:
        return self._closed

    def pipe_fds(self) -> Optional[Tuple[int, int]]:
        """(stdin fd, stdout fd) of the child while open, both non-blocking."""
        return None if self._closed else (self._in_fd, self._out_fd)

    def stderr_tail(self, max_lines: int = 20) -> str:
        """The last lines the child wrote to stderr."""
        return "\n".join(self._stderr.tail_lines(max_lines))

    def closed_error(self, what: str) -> TransportClosedError:
        """A TransportClosedError for what failed, with the child's exit code and stderr tail."""
        try:
            self._proc.wait(EXIT_CODE_WAIT_SEC)
        except subprocess.TimeoutExpired:
            pass
        # The exit is seen; give the stderr reader a moment to collect the last words.
        self._stderr.join(0.5)
        message = f"{what}: {describe_exit(self._proc.returncode, self.name)}"
        tail = self.stderr_tail()
        if tail:
            message += "\nlast lines of its stderr:\n" + tail
        return TransportClosedError(message)

    def _check_open(self) -> None:
        if self._closed:
            raise TransportClosedError(f"the {self.name} is closed")

    def write(self, data: bytes, timeout: float) -> None:
        """Write all of data within timeout seconds (IoTimeoutError), or TransportClosedError."""
        if self._closed:
            self._check_open()
        try:
            # Nearly always the pipe takes the whole frame at once: no deadline, no view needed.
            written = os.write(self._in_fd, data)
        except BlockingIOError:
            written = 0
        except (BrokenPipeError, ConnectionResetError) as err:
            raise self.closed_error(f"cannot write to the {self.name}") from err
        if written == len(data):
            return
        view = memoryview(data).cast("B")[written:]
        deadline = time.monotonic() + timeout
        while view:
            if not _wait(self._writable, deadline):
                if self.returncode is not None:
                    raise self.closed_error(f"cannot write to the {self.name}")
                raise IoTimeoutError(
                    f"the {self.name} did not take {len(view)} more bytes within {timeout:.3g} s")
            try:
                view = view[os.write(self._in_fd, view):]
            except BlockingIOError:
                pass
            except (BrokenPipeError, ConnectionResetError) as err:
                raise self.closed_error(f"cannot write to the {self.name}") from err

    def read(self, n: int, timeout: float) -> bytes:
        """1..n bytes; IoTimeoutError if none arrive within timeout, TransportClosedError at EOF."""
        return self._read_with(os.read, n, timeout)

    def read_into(self, buffer: memoryview, timeout: float) -> int:
        """Read 1..len(buffer) bytes into buffer; errors as read()."""
        return self._read_with(os.readv, (buffer,), timeout)

    def _read_with(self, read, argument, timeout: float):
        """``read(fd, argument)`` (os.read or os.readv) once the pipe has bytes; its falsy result
        (b"" or 0) is end of file."""
        if self._closed:
            self._check_open()
        deadline = None
        while True:
            # Try first: on one CPU the child has usually answered by the time we read.
            try:
                got = read(self._out_fd, argument)
            except BlockingIOError:
                got = None
            if got is not None:
                if not got:
                    raise self.closed_error(f"the {self.name} closed its output")
                return got
            if deadline is None:
                deadline = time.monotonic() + timeout
            if not _wait(self._readable, deadline):
                raise IoTimeoutError(f"no bytes from the {self.name} within {timeout:.3g} s")

    def close(self) -> Optional[int]:
        """Close its stdin, give it CLOSE_GRACE_SEC to exit, then stop its process group. Safe to
        call more than once; returns its exit code."""
        if self._closed:
            return self._proc.returncode
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
            stop_process_group(self._proc, CLOSE_GRACE_SEC)
        kill_process_group(self._proc)  # anything it started and left behind
        self._stderr.join(1.0)
        return self._proc.returncode

    def __enter__(self):
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
