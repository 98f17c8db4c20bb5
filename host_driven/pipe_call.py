"""The single-request fast path over a pipe pair: a request and its reply in one C call.

Used by the session's ``PipeCallPath`` (fast_paths.py) when its transport is a pipe pair
(``Transport.pipe_fds()``) and the framing accelerator is loaded. The C side (``_pipe_call.c``)
frames the request, writes it, waits for the first bytes back and takes them when they are
exactly the expected reply. Every other outcome is handed back to the session's own path: the
bytes that arrived, a timeout, or the part of the frame the pipe did not take (the transport's
own write and read then report a dead device with its exit code).
"""

from __future__ import annotations

import ctypes
import functools
from typing import Optional

from . import protocol as P

# Outcomes of utvm_pipe_call other than a payload length (>= 0); _pipe_call.c names them.
OTHER = -1
TIMEOUT = -2
READ_FAILED = -3
WRITE_FAILED = -4
WRITE_PARTIAL = -5
TOO_LARGE = -6
INTERRUPTED = -7

# Bytes taken per read, as the session's own reads.
RX_BYTES = 64 * 1024
HEADER_BYTES = P.HEADER.size


class _Context(ctypes.Structure):
    _fields_ = [
        ("write_fd", ctypes.c_int),
        ("read_fd", ctypes.c_int),
        ("frame", ctypes.c_void_p),
        ("frame_cap", ctypes.c_size_t),
        ("frame_n", ctypes.c_size_t),
        ("written", ctypes.c_size_t),
        ("rx", ctypes.c_void_p),
        ("rx_cap", ctypes.c_size_t),
        ("got", ctypes.c_size_t),
        ("reply", ctypes.c_void_p),
        ("reply_cap", ctypes.c_size_t),
        ("replies", ctypes.c_size_t),
    ]


def bind(lib: ctypes.CDLL) -> None:
    """Declare utvm_pipe_call's C signature on the loaded accelerator."""
    lib.utvm_pipe_call.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_long]
    lib.utvm_pipe_call.restype = ctypes.c_long


class PipeCall:
    """Round trips over the pipe pair (``write_fd``, ``read_fd``) for packets up to ``max_packet``."""

    def __init__(self, lib: ctypes.CDLL, write_fd: int, read_fd: int, max_packet: int):
        frame_cap = 2 * (max_packet + 2) + 2
        self._frame = ctypes.create_string_buffer(frame_cap)
        self._rx = ctypes.create_string_buffer(RX_BYTES)
        self._reply = ctypes.create_string_buffer(max_packet + 2)
        self._context = _Context(write_fd, read_fd, ctypes.addressof(self._frame), frame_cap, 0, 0,
                                 ctypes.addressof(self._rx), RX_BYTES, 0, ctypes.addressof(self._reply),
                                 max_packet + 2, 0)
        # call(packet, len(packet), timeout_ms): the reply's payload length (at HEADER_BYTES of
        # payload()'s buffer) when the reply is the request's REPLY_OK, else an outcome (OTHER,
        # TIMEOUT, READ_FAILED, WRITE_FAILED, WRITE_PARTIAL, TOO_LARGE, INTERRUPTED: a signal came
        # while it waited, so Python can run its handler). No Python frame in between: a round trip
        # is a few microseconds.
        self.call = functools.partial(lib.utvm_pipe_call, ctypes.byref(self._context))

    @property
    def replies(self) -> int:
        """Calls answered by their reply so far."""
        return self._context.replies

    def payload(self, length: int) -> bytes:
        """The reply payload after a successful call."""
        return self._reply[HEADER_BYTES:HEADER_BYTES + length]

    def received(self) -> bytes:
        """What arrived, after OTHER."""
        return self._rx[:self._context.got]

    def unwritten(self) -> bytes:
        """The part of the frame the pipe did not take (empty once it took it all)."""
        context = self._context
        if context.written >= context.frame_n:
            return b""
        return self._frame[context.written:context.frame_n]


def for_transport(transport, lib: Optional[ctypes.CDLL], max_packet: int) -> Optional[PipeCall]:
    """A PipeCall for ``transport`` when it is a pipe pair and the accelerator is loaded, else None."""
    fds = transport.pipe_fds() if lib is not None else None
    if fds is None:
        return None
    return PipeCall(lib, fds[0], fds[1], max_packet)
