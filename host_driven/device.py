"""The device RPC client: typed calls over a ProtocolSession, with transfers chunked to the packet size.

Tensor transfers are split into chunks that fill the negotiated packet and pipelined up to the
session's window, so large tensors move at close to the link's speed.
"""

from __future__ import annotations

import dataclasses
import struct
import zlib
from typing import Callable, List, Optional, Tuple

from . import protocol as P
from .errors import BadArgumentError, DeviceError, ProtocolError
from .session import ProtocolSession

Progress = Callable[[int, int], None]

_DTYPE_KINDS = {0: "int", 1: "uint", 2: "float", 4: "bfloat"}
# Where a WRITE's or READ's offset, and a READ's length, sit in the request packet.
_OFFSET_AT = P.HEADER.size + 4
_READ_LENGTH_AT = P.HEADER.size + 8
# Transfers of a tensor before its checksum still differing is an error.
VERIFY_ATTEMPTS = 3
# A record longer than this is not one the runtime writes (a model's tables are a few KiB at most).
MAX_RECORD_BYTES = 1 << 20


def _progress_of(progress: Optional[Progress], total: int) -> Optional[Callable[[int, int], None]]:
    """A transfer's on_chunk that reports the bytes acknowledged so far to ``progress``."""
    if progress is None:
        return None
    done = [0]

    def on_chunk(_offset: int, nbytes: int) -> None:
        # At most the total: after packets shrink, a chunk acknowledged before may go again.
        done[0] = min(total, done[0] + nbytes)
        progress(done[0], total)

    return on_chunk


def _version_text(version: int) -> str:
    return f"{version >> 16}.{(version >> 8) & 0xFF}.{version & 0xFF}"


def _strings(data: bytes, count: int) -> List[str]:
    """`count` NUL-terminated strings (an older runtime may have cut the last ones short)."""
    parts = data.split(b"\0")
    return [(parts[i] if i < len(parts) else b"").decode("utf-8", "replace") for i in range(count)]


@dataclasses.dataclass(frozen=True)
class DeviceInfo:
    """What the device reports about itself and the model it carries."""

    runtime_version: str
    protocol_version: int
    model_abi_version: int
    model_name: str
    model_hash: str
    board: str
    arena_bytes: int
    workspace_bytes: int
    workspace_peak_bytes: int
    max_packet: int
    rx_window: int
    timer_hz: int
    num_tensors: int
    num_kernels: int
    inputs: Tuple[int, ...]
    outputs: Tuple[int, ...]

    @property
    def num_inputs(self) -> int:
        return len(self.inputs)

    @property
    def num_outputs(self) -> int:
        return len(self.outputs)


@dataclasses.dataclass(frozen=True)
class TensorInfo:
    """One tensor of the device's model table."""

    id: int
    name: str
    storage: str  # "arena" or "const"
    dtype: str  # e.g. "int8", "float32"
    shape: Tuple[int, ...]
    offset: int
    nbytes: int


@dataclasses.dataclass(frozen=True)
class KernelInfo:
    """One kernel of the device's model table, with its argument tensor ids."""

    index: int
    name: str
    args: Tuple[int, ...]


class DeviceClient:
    """Typed commands to the device on an open ProtocolSession."""

    def __init__(self, session: ProtocolSession):
        self.session = session
        self._timer_hz: Optional[int] = None
        self._checksums = True  # False once the runtime has answered CHECKSUM with UNKNOWN_COMMAND

    # -- queries -------------------------------------------------------------------------------

    def ping(self, payload: bytes = b"") -> None:
        """A round trip; the device echoes ``payload`` (fits one packet)."""
        echo = self.session.request(P.CMD_PING, payload, reply_size=len(payload))
        if echo != payload:
            raise ProtocolError(f"PING echoed {len(echo)} bytes that differ from the {len(payload)} sent")

    def _record(self, cmd: int, args: bytes = b"") -> bytes:
        """The whole record an INFO, TENSOR_INFO or KERNEL_INFO reply carries, in as many packets as
        it takes: the next part is asked for from where the last ended, until one comes back short
        of a full packet. (A runtime older than record offsets refuses the second ask: its one
        packet, with the strings cut, is then all there is.)"""
        data = last = self.session.request(cmd, args)
        while len(last) >= self.session.max_packet - P.HEADER.size and len(data) < MAX_RECORD_BYTES:
            try:
                last = self.session.request(cmd, args + P.RECORD_OFFSET.pack(len(data)))
            except DeviceError as err:
                if err.code != P.ERR_BAD_LENGTH:
                    raise
                break
            data += last
            if not last:
                break
        return data

    def info(self) -> DeviceInfo:
        """Runtime, model and board facts, and the workspace high-water mark so far."""
        data = self._record(P.CMD_INFO)
        if len(data) < P.INFO_FIXED.size:
            raise ProtocolError(f"INFO reply of {len(data)} bytes is shorter than {P.INFO_FIXED.size}")
        (version, arena, workspace, peak, max_packet, timer_hz, num_tensors, num_kernels, num_inputs,
         num_outputs, rx_window, abi, protocol_version) = P.INFO_FIXED.unpack_from(data)
        at = P.INFO_FIXED.size
        ids = struct.unpack_from(f"<{num_inputs + num_outputs}H", data, at)
        at += 2 * len(ids)
        name, model_hash, board = _strings(data[at:], 3)
        self._timer_hz = timer_hz
        return DeviceInfo(
            runtime_version=_version_text(version), protocol_version=protocol_version,
            model_abi_version=abi, model_name=name, model_hash=model_hash, board=board,
            arena_bytes=arena, workspace_bytes=workspace, workspace_peak_bytes=peak,
            max_packet=max_packet, rx_window=rx_window, timer_hz=timer_hz, num_tensors=num_tensors,
            num_kernels=num_kernels, inputs=tuple(ids[:num_inputs]), outputs=tuple(ids[num_inputs:]),
        )

    @property
    def timer_hz(self) -> int:
        """Frequency of the device's tick counter (the unit of run/time results)."""
        if self._timer_hz is None:
            self.info()
        return self._timer_hz  # type: ignore[return-value]

    def tensor_info(self, tensor_id: int) -> TensorInfo:
        """The device's entry for one tensor."""
        data = self._record(P.CMD_TENSOR_INFO, struct.pack("<H", tensor_id))
        storage, code, bits, ndim, offset, nbytes = P.TENSOR_INFO_FIXED.unpack_from(data)
        at = P.TENSOR_INFO_FIXED.size
        shape = struct.unpack_from(f"<{ndim}i", data, at)
        (name,) = _strings(data[at + 4 * ndim:], 1)
        return TensorInfo(id=tensor_id, name=name, storage="const" if storage == 1 else "arena",
                          dtype=f"{_DTYPE_KINDS.get(code, f'code{code}_')}{bits}", shape=tuple(shape),
                          offset=offset, nbytes=nbytes)

    def kernel_info(self, index: int) -> KernelInfo:
        """The device's entry for one kernel."""
        data = self._record(P.CMD_KERNEL_INFO, struct.pack("<H", index))
        (num_args,) = struct.unpack_from("<H", data)
        args = struct.unpack_from(f"<{num_args}H", data, 2)
        (name,) = _strings(data[2 + 2 * num_args:], 1)
        return KernelInfo(index=index, name=name, args=tuple(args))

    # -- tensors -------------------------------------------------------------------------------

    def checksum(self, tensor_id: int, nbytes: int, offset: int = 0, timeout: Optional[float] = None) -> int:
        """The device's CRC-32 (as ``zlib.crc32``) of a tensor's bytes ``offset`` to ``offset + nbytes``."""
        reply = self.session.request(P.CMD_CHECKSUM, P.CHECKSUM_ARGS.pack(tensor_id, 0, offset, nbytes),
                                     timeout=timeout, reply_size=4)
        return struct.unpack("<I", reply)[0]

    def _verified(self, tensor_id: int, data, nbytes: int) -> bool:
        """Whether the tensor's first ``nbytes`` on the device are ``data``: checked end to end with
        CHECKSUM once the link has shown noise (a frame's CRC-16 lets 1 in 65536 random errors
        through); taken as read on a clean link, or from a runtime without CHECKSUM."""
        if not self.session.noisy or not self._checksums:
            return True
        try:
            theirs = self.checksum(tensor_id, nbytes)
        except DeviceError as err:
            if err.code != P.ERR_UNKNOWN_COMMAND:
                raise
            self._checksums = False
            return True
        return theirs == zlib.crc32(data)

    def _unverified(self, tensor_id: int, nbytes: int, what: str) -> ProtocolError:
        return ProtocolError(
            f"the {nbytes} bytes {what} tensor {tensor_id} still differ between host and device after "
            f"{VERIFY_ATTEMPTS} transfers", hint="the link corrupts more than its checks catch: check the "
            "cable and the baud rate")

    def write_tensor(self, tensor_id: int, data, progress: Optional[Progress] = None) -> None:
        """Write ``data`` (any bytes-like object) into a tensor, from its first byte.

        A transfer larger than the tensor is refused by the device before anything is written.
        ``progress(done_bytes, total_bytes)`` is called as chunks are acknowledged. Once the link
        has shown noise, the device's checksum of what it received is compared with the data's.
        """
        view = memoryview(data).cast("B")
        total = len(view)
        source = data if type(data) is bytes else view
        for _ in range(VERIFY_ATTEMPTS):
            self.session.transfer(P.CMD_WRITE, P.WRITE_ARGS.pack(tensor_id, 0, 0, total), _OFFSET_AT, 0,
                                  total, source=source, on_chunk=_progress_of(progress, total))
            if self._verified(tensor_id, view, total):
                return
        raise self._unverified(tensor_id, total, "written to")

    def read_tensor(self, tensor_id: int, nbytes: int, progress: Optional[Progress] = None, out=None):
        """Read the first ``nbytes`` of a tensor (inputs, outputs, constants or intermediates).

        Returns a new ``bytes`` object, or, when ``out`` is given, fills ``out`` and returns it:
        a writable, C-contiguous buffer of exactly ``nbytes`` bytes (a bytearray, a numpy array of
        the tensor's shape and dtype), which saves allocating and copying the result. Once the link
        has shown noise, the bytes received are checked against the device's checksum.
        """
        if out is None:
            sink = bytearray(nbytes)
        else:
            sink = memoryview(out)
            if sink.readonly or not sink.c_contiguous or sink.nbytes != nbytes:
                raise ValueError(f"out must be a writable, C-contiguous buffer of {nbytes} bytes, got "
                                 f"{sink.nbytes} bytes{' (read-only)' if sink.readonly else ''}"
                                 f"{'' if sink.c_contiguous else ' (not contiguous)'}")
            sink = sink.cast("B")
        for _ in range(VERIFY_ATTEMPTS):
            self.session.transfer(P.CMD_READ, P.READ_ARGS.pack(tensor_id, 0, 0, 0, nbytes), _OFFSET_AT,
                                  _READ_LENGTH_AT, nbytes, sink=sink, on_chunk=_progress_of(progress, nbytes))
            if self._verified(tensor_id, sink, nbytes):
                return bytes(sink) if out is None else out
        raise self._unverified(tensor_id, nbytes, "read from")

    # -- execution -----------------------------------------------------------------------------

    def run(self, timeout: Optional[float] = None) -> int:
        """Run the whole model once; returns the device ticks it took."""
        return struct.unpack("<Q", self.session.request(P.CMD_RUN, timeout=timeout, reply_size=8))[0]

    def run_kernel(self, index: int, timeout: Optional[float] = None) -> int:
        """Run one kernel on the tensors already in the arena; returns its device ticks."""
        reply = self.session.request(P.CMD_RUN_KERNEL, struct.pack("<H", index), timeout=timeout,
                                     reply_size=8)
        return struct.unpack("<Q", reply)[0]

    def time(self, kernel: Optional[int] = None, number: int = 1, repeat: int = 1,
             timeout: Optional[float] = None) -> List[int]:
        """Device-timed calls: ``repeat`` tick counts, each for ``number`` back-to-back calls.

        ``kernel`` None times the whole model. ``timeout`` bounds each reply (one per packet of
        tick counts), so give a long one for slow models or a large ``number``. The device makes at
        most ``protocol.TIME_MAX_CALLS`` calls (number x repeat), and stops a request that runs past
        its ``UTVM_TIME_LIMIT_MS`` (a DeviceError, TOO_LARGE).
        """
        if number < 1 or repeat < 1:
            raise BadArgumentError(
                f"number and repeat must be at least 1, got number={number} repeat={repeat}")
        if number * repeat > P.TIME_MAX_CALLS:
            raise BadArgumentError(
                f"TIME of {number} x {repeat} calls: the device makes at most {P.TIME_MAX_CALLS} calls "
                "(number x repeat) per measurement", hint="ask for fewer calls")
        target = P.TIME_WHOLE_MODEL if kernel is None else kernel
        ticks: List[int] = []
        while len(ticks) < repeat:
            per_packet = (self.session.max_packet - P.HEADER.size) // 8
            count = min(per_packet, repeat - len(ticks))
            reply = self.session.request(P.CMD_TIME, P.TIME_ARGS.pack(target, 0, number, count),
                                         timeout=timeout, reply_size=8 * count)
            ticks.extend(struct.unpack(f"<{count}Q", reply))
        return ticks

    def reset(self, timeout: Optional[float] = None) -> None:
        """Reboot the device and open a new session on it (the arena's contents are lost)."""
        self.session.request(P.CMD_RESET, timeout=timeout)
        self.session.wait_for_reboot(timeout)
        self.session.open()
