"""Byte transports to a device: the abstract interface and a subprocess-pipe transport.

A transport moves raw bytes; framing and sessions sit on top. Every call has a deadline.
Serial, TCP and Project-API-relay transports live in their own modules.
"""

from __future__ import annotations

import abc
from typing import Mapping, Optional, Sequence, Tuple

from utvm.project_api.child_process import PipeChild


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


class SubprocessTransport(PipeChild, Transport):
    """A device that is a local process: bytes go to its stdin and come from its stdout.

    The floor's PipeChild does the work (deadlines, the stderr tail, exit codes in errors, the
    device dying with its owner); this adds the Transport interface and the pipe fast path.
    """

    def __init__(self, argv: Sequence[str], cwd: Optional[str] = None,
                 env: Optional[Mapping[str, str]] = None, name: str = "device process"):
        PipeChild.__init__(self, argv, cwd=cwd, env=env, name=name)

    def pipe_fds(self) -> Optional[Tuple[int, int]]:
        return PipeChild.pipe_fds(self)

    def read(self, n: int, timeout: float) -> bytes:
        return PipeChild.read(self, n, timeout)

    def read_into(self, buffer: memoryview, timeout: float) -> int:
        return PipeChild.read_into(self, buffer, timeout)

    def write(self, data: bytes, timeout: float) -> None:
        PipeChild.write(self, data, timeout)

    def close(self) -> None:
        PipeChild.close(self)
