"""A host-driven session over any Transport: handshake, requests with retries, logs, reboots.

See docs/host-driven-protocol.md. In short: ``open()`` sends HELLO (version, host nonce, the
host's packet limit) until the device answers WELCOME (echoed nonce, a session id, its own
limit); both sides then use the smaller limit. Each request carries a sequence number and the
session id, and only the reply with both is taken as its answer. A lost or corrupted reply is
retried with the same sequence number: the device replays its last reply instead of running a
command twice, and every other command is idempotent. An ANNOUNCE (the device booted) during a
session raises DeviceRebootedError; LOG packets go to Python logging at any time.
"""

from __future__ import annotations

import collections
import ctypes
import itertools
import logging
import secrets
import struct
import sys
import time
from typing import Callable, Deque, Dict, Iterable, List, Optional, Tuple

from . import pipe_call
from . import protocol as P
from .errors import (
    DeviceError,
    DeviceRebootedError,
    IoTimeoutError,
    ProtocolError,
    SessionClosedError,
    TransportClosedError,
)
from .framing import CRC_BYTES, FrameDecoder, FrameEncoder, encode
from .transport import Transport

DEVICE_LOGGER = logging.getLogger("utvm.device")
_LOG = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 5.0
DEFAULT_RETRIES = 3
# The host's packet limit proposal; the device answers with its own and both use the smaller.
DEFAULT_MAX_PACKET = P.MAX_PACKET
# Requests in flight at once, at most; the device's rx window may lower it.
DEFAULT_WINDOW = 32
RECENT_LOG_LINES = 20
MIN_DECODE_LIMIT = 4096
# Below glibc's mmap threshold: larger reads cost a fresh mapping (page faults) each time.
_READ_BYTES = 64 * 1024
# A bulk READ's receive area, kept by the session: a batch of replies is about 130 KiB.
_RX_AREA_BYTES = 256 * 1024

# Looked up once: the single-request path runs in a few microseconds.
_PACK_HEADER = P.HEADER.pack
_HEADER_BYTES = P.HEADER.size
_PKT_REQUEST = P.PKT_REQUEST
_PKT_REPLY_OK = P.PKT_REPLY_OK
_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")

LogHandler = Callable[[int, str], None]


class ProtocolSession:
    """One host-driven session with a device over ``transport``.

    ``timeout`` is how long to wait for each reply (and for each handshake attempt), ``retries``
    how many times a request is re-sent before giving up. ``log_handler(level, text)`` is called
    for every device log line (Python ``logging`` levels), in addition to the ``utvm.device``
    logger. ``max_packet`` is the host's packet limit proposal and ``window`` how many requests
    may be in flight during a transfer.
    """

    def __init__(self, transport: Transport, *, timeout: float = DEFAULT_TIMEOUT,
                 retries: int = DEFAULT_RETRIES, log_handler: Optional[LogHandler] = None,
                 max_packet: int = DEFAULT_MAX_PACKET, window: int = DEFAULT_WINDOW,
                 open_timeout: Optional[float] = None):
        if not P.MIN_PACKET <= max_packet <= P.MAX_PACKET:
            raise ValueError(f"max_packet must be {P.MIN_PACKET} to {P.MAX_PACKET} bytes (the most "
                             f"CRC-16/CCITT fully protects), got {max_packet}")
        if window < 1:
            raise ValueError(f"window must be at least 1, got {window}")
        self.transport = transport
        self.timeout = timeout
        self.retries = retries
        self.log_handler = log_handler
        self.host_max_packet = max_packet
        self.host_window = window
        self.open_timeout = open_timeout if open_timeout is not None else timeout * (retries + 1)
        self.recent_logs: Deque[str] = collections.deque(maxlen=RECENT_LOG_LINES)
        self.session_id = 0
        self.boot_nonce: Optional[int] = None
        self.device_max_packet = 0
        self.max_packet = 0
        self.window = 1
        self.retransmissions = 0
        # LOG lines are not bound by the negotiated limit (their own is UTVM_LOG_MAX_TEXT), so the
        # decoder accepts a little more than a tiny proposal.
        self._decoder = FrameDecoder(max(max_packet, MIN_DECODE_LIMIT))
        self._encoder = FrameEncoder()
        # Packets decoded but not yet looked at (they arrived behind the last awaited reply).
        self._pending: Deque[bytes] = collections.deque()
        self._seq = secrets.randbelow(0x10000)
        self._open = False
        self._pipe_call: Optional[pipe_call.PipeCall] = None
        self._rx_area: Optional[bytearray] = None
        self._rx_address = 0

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def is_open(self) -> bool:
        return self._open

    @property
    def fast_path(self) -> Optional[str]:
        """"pipe call" when single requests go through the C fast path (a pipe-pair transport and
        the framing accelerator, see pipe_call.py), else None."""
        return "pipe call" if self._pipe_call is not None and self.transport.pipe_fds() is not None else None

    def open(self) -> ProtocolSession:
        """Handshake with the device (again, after a reboot). Raises IoTimeoutError if it never answers."""
        self._open = False
        deadline = time.monotonic() + self.open_timeout
        attempt_timeout = min(self.timeout, self.open_timeout)
        while True:
            # A fresh nonce per attempt: a late WELCOME to an earlier HELLO names a session the
            # device has already replaced, so it must not be taken.
            host_nonce = secrets.randbits(32) or 1
            hello = P.HELLO.pack(P.PKT_HELLO, P.PROTOCOL_VERSION, 0, host_nonce, self.host_max_packet)
            self.transport.write(encode(hello), attempt_timeout)
            attempt_end = min(deadline, time.monotonic() + attempt_timeout)
            while time.monotonic() < attempt_end:
                for packet in self._packets_until(attempt_end):
                    if self._take_welcome(packet, host_nonce):
                        return self
            if time.monotonic() >= deadline:
                raise IoTimeoutError(
                    f"the device did not answer the session handshake within {self.open_timeout:.3g} s; "
                    "check that it is flashed with a utvm firmware and that the transport settings "
                    "(port, baud rate) are right" + self._log_context())

    def _take_welcome(self, packet: bytes, host_nonce: int) -> bool:
        """Open the session if ``packet`` is the WELCOME to our HELLO; note a boot ANNOUNCE."""
        if packet[0] == P.PKT_ANNOUNCE and len(packet) >= P.ANNOUNCE.size:
            self.boot_nonce = P.ANNOUNCE.unpack_from(packet)[4]
        if packet[0] != P.PKT_WELCOME or len(packet) < P.WELCOME.size:
            return False
        _, version, window, nonce, session_id, device_max, boot = P.WELCOME.unpack_from(packet)
        if nonce != host_nonce:
            return False  # the answer to an earlier HELLO
        self._accept_welcome(version, window, session_id, device_max, boot)
        return True

    def _accept_welcome(self, version: int, window: int, session_id: int, device_max: int,
                        boot: int) -> None:
        if version != P.PROTOCOL_VERSION:
            raise ProtocolError(
                f"the device speaks host-driven protocol version {version}, this host version "
                f"{P.PROTOCOL_VERSION}", hint="rebuild and flash the project with this utvm version")
        if session_id == 0:
            raise ProtocolError(
                f"the device refused the session (it needs a packet limit of at least {P.MIN_PACKET} "
                f"bytes; the host proposed {self.host_max_packet})")
        self.session_id = session_id
        self.boot_nonce = boot
        self.device_max_packet = device_max
        self.max_packet = min(self.host_max_packet, device_max)
        self.window = max(1, min(self.host_window, window))
        self._pipe_call = pipe_call.for_transport(self.transport, self._encoder.lib, self.max_packet)
        self._open = True
        _LOG.debug("session %08x open: packet %d bytes, window %d", session_id, self.max_packet, self.window)

    def close(self) -> None:
        """End the session and close its transport."""
        self._open = False
        self.transport.close()

    def __enter__(self) -> ProtocolSession:
        if not self._open:
            self.open()
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    # -- receiving ---------------------------------------------------------------------------

    def _log_context(self) -> str:
        if not self.recent_logs:
            return ""
        return "; last device log lines: " + " | ".join(list(self.recent_logs)[-5:])

    def _device_log(self, packet: bytes) -> None:
        level = P.LOG_LEVELS.get(packet[1], logging.INFO) if len(packet) > 1 else logging.INFO
        text = packet[2:].decode("utf-8", "replace")
        self.recent_logs.append(text)
        DEVICE_LOGGER.log(level, "%s", text)
        if self.log_handler is not None:
            self.log_handler(level, text)

    def _packets_until(self, deadline: float) -> List[bytes]:
        """Packets other than LOG that arrive before the deadline (at least one read is tried).

        Returns as soon as one read produced any; an empty list means the deadline passed.
        """
        if self._pending:
            packets = list(self._pending)
            self._pending.clear()
            return packets
        while True:
            remaining = max(0.0, deadline - time.monotonic())
            try:
                data = self.transport.read(_READ_BYTES, remaining)
            except IoTimeoutError:
                return []
            packets = self._without_logs(self._decoder.feed(data))
            if packets or time.monotonic() >= deadline:
                return packets

    def _without_logs(self, packets: List[bytes]) -> List[bytes]:
        """``packets`` but the LOG ones, which go to the device log on the way."""
        if not any(packet[0] == P.PKT_LOG for packet in packets):
            return packets
        for packet in packets:
            if packet[0] == P.PKT_LOG:
                self._device_log(packet)
        return [packet for packet in packets if packet[0] != P.PKT_LOG]

    def _reply_for(self, packet: bytes, outstanding: Dict[int, Tuple[int, int, bytes]]):
        """(seq, payload, error) for a reply to one of ours, None for anything else to ignore."""
        kind = packet[0]
        if kind == P.PKT_ANNOUNCE:
            self._open = False
            nonce = P.ANNOUNCE.unpack_from(packet)[4] if len(packet) >= P.ANNOUNCE.size else None
            self.boot_nonce = nonce
            raise DeviceRebootedError(
                "the device rebooted during the session" + (f" (boot nonce {nonce:08x})" if nonce else "")
                + self._log_context())
        if kind not in (P.PKT_REPLY_OK, P.PKT_REPLY_ERR) or len(packet) < P.HEADER.size:
            return None
        _, cmd, seq, session_id = P.HEADER.unpack_from(packet)
        entry = outstanding.get(seq)
        if session_id != self.session_id or entry is None or entry[1] != cmd:
            _LOG.debug("ignoring a stale reply (seq %d, session %08x)", seq, session_id)
            return None
        payload = packet[P.HEADER.size:]
        if kind == P.PKT_REPLY_OK:
            return seq, payload, None
        code = payload[0] if payload else 0
        message = payload[1:].decode("utf-8", "replace")
        if code == P.ERR_BAD_SESSION:
            self._open = False
            raise DeviceRebootedError(f"the device no longer knows this session: {message}"
                                      + self._log_context())
        return seq, payload, DeviceError(code, message)

    # -- requests ----------------------------------------------------------------------------

    def request(self, cmd: int, payload: bytes = b"", timeout: Optional[float] = None) -> bytes:
        """Send one command and return its reply payload; a device refusal raises DeviceError."""
        if not self._open:
            raise SessionClosedError("the session is not open", hint="call ProtocolSession.open() first")
        if self._pending:
            return self.request_many(cmd, [payload], timeout=timeout)[0]
        # The common case, kept short (a round trip is a few microseconds): one frame out, and the
        # first slice back is exactly the reply. Anything else goes through the general loop.
        if timeout is None:
            timeout = self.timeout
        packet = self._request_packet(cmd, payload)
        fast = self._pipe_call
        if fast is not None and self.transport.pipe_fds() is not None:
            outcome = fast.call(packet, len(packet), int(timeout * 1000) + 1)
            if outcome >= 0:
                return fast.payload(outcome)
            decoder = self._decoder
            bad_before = decoder.bad_frames
            if outcome == pipe_call.OTHER:
                data = fast.received()
            elif outcome == pipe_call.TIMEOUT:
                data = None
            elif outcome == pipe_call.TOO_LARGE:  # _request_packet keeps to max_packet: a bug if seen
                raise ValueError(f"a {len(packet)}-byte packet does not fit the pipe call's frame buffer")
            else:  # the pipe failed or was full: the transport's own calls go on (and name a failure)
                self._write_frame(fast.unwritten(), timeout, cmd)
                data = self._first_slice(timeout, cmd)
        else:
            decoder = self._decoder
            bad_before = decoder.bad_frames
            self._write_frame(encode(packet), timeout, cmd)
            data = self._first_slice(timeout, cmd)
        if data is None:
            packets = []
            deadline = time.monotonic()  # the read waited the whole timeout
        else:
            reply = decoder.sole_packet(data, _PACK_HEADER(_PKT_REPLY_OK, cmd, self._seq, self.session_id))
            if reply is not None:
                return reply
            packets = self._without_logs(decoder.feed(data))
            deadline = time.monotonic() + timeout
        return self._await(cmd, [packet], packets, timeout, bad_before, deadline)[0]

    def request_many(self, cmd: int, payloads: Iterable[bytes], timeout: Optional[float] = None,
                     on_reply: Optional[Callable[[int, bytes], None]] = None) -> List[bytes]:
        """Send one command per payload, up to ``window`` in flight, and return the replies in order.

        ``on_reply(index, payload)`` is called as each reply arrives. ``timeout`` bounds the wait
        for each reply (not the whole batch). The first device error is raised once seen; replies
        still in flight are then ignored as stale.
        """
        if not self._open:
            raise SessionClosedError("the session is not open", hint="call ProtocolSession.open() first")
        timeout = self.timeout if timeout is None else timeout
        return self._await(cmd, iter(payloads), [], timeout, self._decoder.bad_frames,
                           time.monotonic() + timeout, on_reply=on_reply, framed=False)

    def _await(self, cmd: int, requests: Iterable[bytes], packets: List[bytes], timeout: float,
               bad_before: int, deadline: float, on_reply: Optional[Callable[[int, bytes], None]] = None,
               framed: bool = True) -> List[bytes]:
        """The replies to ``requests``: packets already sent when ``framed``, else payloads to send.

        ``packets`` are ones already received for them (and ``bad_before`` the corrupted-frame
        count before they were read), ``deadline`` when the requests already sent time out.
        Requests go out in batches of up to ``window``, each batch in one write; replies are
        matched by command, seq and session id.
        """
        name = P.COMMAND_NAMES.get(cmd, f"command {cmd}")
        results: List[Optional[bytes]] = []
        # seq -> (index, cmd, request packet, header of its REPLY_OK), oldest first.
        outstanding: Dict[int, Tuple[int, int, bytes, bytes]] = collections.OrderedDict()
        pending = iter(requests)
        exhausted = False
        if framed:
            for packet in pending:
                seq = P.HEADER.unpack_from(packet)[2]
                outstanding[seq] = (len(results), cmd, packet, _PACK_HEADER(P.PKT_REPLY_OK, cmd, seq,
                                                                                self.session_id))
                results.append(None)
            exhausted = True
        retries_left = self.retries
        while True:
            if not exhausted and len(outstanding) < self.window:
                batch = []
                for payload in itertools.islice(pending, self.window - len(outstanding)):
                    packet = self._request_packet(cmd, payload)
                    outstanding[self._seq] = (len(results), cmd, packet,
                                              _PACK_HEADER(P.PKT_REPLY_OK, cmd, self._seq, self.session_id))
                    results.append(None)
                    batch.append(packet)
                exhausted = len(outstanding) < self.window
                if batch:
                    self._send(self._encoder.encode_many(batch), timeout, cmd)
                    deadline = time.monotonic() + timeout
            if not outstanding:
                return results  # type: ignore[return-value]
            if not packets:
                bad_before = self._decoder.bad_frames
                packets = self._receive(deadline, name)
            progressed = False
            for at, packet in enumerate(packets):
                if not outstanding:
                    # Everything awaited has arrived: what follows (an ANNOUNCE after a RESET's
                    # reply, say) is for whoever reads next.
                    self._pending.extend(packets[at:])
                    break
                # Replies come in request order: check the oldest first, the general path after.
                seq = next(iter(outstanding))
                if packet.startswith(outstanding[seq][3]):
                    payload = packet[P.HEADER.size:]
                else:
                    reply = self._reply_for(packet, outstanding)
                    if reply is None:
                        continue
                    seq, payload, error = reply
                    if error is not None:
                        raise error
                index = outstanding.pop(seq)[0]
                results[index] = payload
                progressed = True
                if on_reply is not None:
                    on_reply(index, payload)
            packets = []
            if progressed:
                deadline = time.monotonic() + timeout
                continue
            corrupted = self._decoder.bad_frames > bad_before
            if not corrupted and time.monotonic() < deadline:
                continue
            if retries_left <= 0:
                raise IoTimeoutError(
                    f"no reply from the device to {name} within {timeout:.3g} s after {self.retries} "
                    f"retries ({self._decoder.bad_frames} corrupted frames seen)" + self._log_context())
            retries_left -= 1
            # A corrupted frame was probably the oldest reply: re-send that one at once. A silent
            # timeout may have lost any of them: re-send all. Replays and idempotence make this safe.
            resend = list(outstanding.values())[:1] if corrupted else list(outstanding.values())
            _LOG.debug("re-sending %d %s request(s) (%s)", len(resend), name,
                       "corrupted frame" if corrupted else "timeout")
            self.retransmissions += len(resend)
            self._send(self._encoder.encode_many([entry[2] for entry in resend]), timeout, cmd)
            deadline = time.monotonic() + timeout

    # -- chunked transfers -------------------------------------------------------------------

    def transfer(self, cmd: int, args: bytes, offset_at: int, length_at: int, chunk: int, total: int,
                 source=None, sink=None, timeout: Optional[float] = None,
                 on_chunk: Optional[Callable[[int, int], None]] = None) -> None:
        """A chunked WRITE or READ of ``total`` bytes, ``chunk`` bytes per request (at least one request).

        Each request's arguments are ``args`` with the chunk's offset (u32) at ``offset_at`` and,
        when ``length_at`` is not 0, its length (u32) there; both positions count from the start
        of the packet (header included). A WRITE sends ``source`` (a contiguous byte buffer) chunk
        by chunk; a READ's reply payloads, which must be exactly each chunk's length, are stored
        in ``sink`` (a writable byte buffer of ``total`` bytes). ``on_chunk(index, nbytes)`` is
        called as each chunk is acknowledged. With the framing accelerator, each batch of up to
        ``window`` requests is framed straight from ``source`` and its replies decoded straight
        into ``sink`` in one C call each; anything unexpected (a lost, corrupted or stale reply, a
        LOG, an error) hands the rest of the batch to the per-request path, retries included.
        """
        if not self._open:
            raise SessionClosedError("the session is not open", hint="call ProtocolSession.open() first")
        timeout = self.timeout if timeout is None else timeout
        plan = _Chunks(_PACK_HEADER(P.PKT_REQUEST, cmd, 0, self.session_id) + args, offset_at, length_at,
                       chunk, total, source)
        lib = self._encoder.lib
        if lib is None or total == 0 or sys.byteorder != "little" or not self._decoder.idle or self._pending:
            payloads = (plan.packet(0, index)[P.HEADER.size:] for index in range(plan.count))
            handler = _ChunkHandler(cmd, plan, sink, on_chunk, 0)
            self.request_many(cmd, payloads, timeout=timeout, on_reply=handler)
            return
        bulk = _BulkBuffers.of(self, lib, plan, sink)
        done = 0
        while done < plan.count:
            count = min(self.window, plan.count - done)
            seq = (self._seq + 1) & 0xFFFF
            self._seq = (self._seq + count) & 0xFFFF
            frames = bulk.requests(seq, done, count)
            self._send(frames, timeout, cmd)
            if sink is None:
                taken, leftover, deadline = self._take_acks(bulk, cmd, seq, count, timeout)
            else:
                taken, leftover, deadline = self._take_reads(bulk, cmd, seq, done, count, timeout)
            if on_chunk is not None:
                for index in range(done, done + taken):
                    on_chunk(index, plan.length(index))
            if taken < count:
                self._finish_batch(cmd, plan, seq, done, taken, count, leftover, sink, on_chunk, timeout,
                                   deadline)
            elif leftover:
                self._pending.extend(self._without_logs(self._decoder.feed(leftover)))
            done += count

    def _read_for(self, deadline: float, name: str, into: Optional[memoryview] = None):
        """The next slice from the device, or None when the deadline passes first; with ``into``,
        the slice goes there and its length is returned instead."""
        remaining = max(0.0, deadline - time.monotonic())
        try:
            if into is None:
                return self.transport.read(_READ_BYTES, remaining)
            return self.transport.read_into(into, remaining)
        except IoTimeoutError:
            return None
        except TransportClosedError as err:
            raise self._receive_failed(err, name) from err

    def _take_acks(self, bulk: _BulkBuffers, cmd: int, seq: int, count: int, timeout: float):
        """(acks taken in order, bytes left over, deadline) for a WRITE batch: the replies are known
        in advance, so the received bytes are compared with their frames."""
        expected, ends = bulk.acks(seq, count)
        name = P.COMMAND_NAMES[cmd]
        pos = 0
        deadline = time.monotonic() + timeout
        while pos < len(expected):
            data = self._read_for(deadline, name)
            if data is None:
                data = b""
            elif expected.startswith(data, pos):
                pos += len(data)
                deadline = time.monotonic() + timeout
                continue
            same = 0
            limit = min(len(data), len(expected) - pos)
            while same < limit and data[same] == expected[pos + same]:
                same += 1
            taken = sum(1 for end in ends if end <= pos + same)
            start = ends[taken - 1] if taken else 0
            return taken, expected[start:pos] + data[max(0, start - pos):], deadline
        return count, b"", deadline

    def _take_reads(self, bulk: _BulkBuffers, cmd: int, seq: int, done: int, count: int, timeout: float):
        """(replies taken in order, bytes left over, deadline) for a READ batch, decoded into the sink.

        Slices are read into the bulk buffers' receive area, behind the unfinished frame the last
        one left, and the replies decoded from there straight into the sink."""
        name = P.COMMAND_NAMES[cmd]
        taken = 0
        fill = 0
        view = bulk.rx_view
        deadline = time.monotonic() + timeout
        while taken < count:
            if fill == len(view):
                return taken, bytes(view[:fill]), deadline  # no frame end in sight: not a reply
            got = self._read_for(deadline, name, into=view[fill:])
            if got is None:
                return taken, bytes(view[:fill]), deadline
            fill += got
            got, used, bad = bulk.take(fill, seq + taken, done + taken, count - taken)
            if got:
                deadline = time.monotonic() + timeout
            taken += got
            if used:
                view[:fill - used] = view[used:fill]
                fill -= used
            if bad:
                break
        return taken, bytes(view[:fill]), deadline

    def _finish_batch(self, cmd: int, plan: _Chunks, seq: int, done: int, taken: int, count: int,
                      leftover: bytes, sink, on_chunk, timeout: float, deadline: float) -> None:
        """The rest of a batch (already sent) through the per-request path, with its retries."""
        bad_before = self._decoder.bad_frames
        packets = self._without_logs(self._decoder.feed(leftover)) if leftover else []
        first = done + taken
        requests = [plan.packet((seq + index - done) & 0xFFFF, index) for index in range(first, done + count)]
        self._await(cmd, requests, packets, timeout, bad_before, deadline,
                    on_reply=_ChunkHandler(cmd, plan, sink, on_chunk, first), framed=True)

    def _request_packet(self, cmd: int, payload: bytes) -> bytes:
        if _HEADER_BYTES + len(payload) > self.max_packet:
            raise ValueError(f"{P.COMMAND_NAMES.get(cmd, cmd)} payload of {len(payload)} bytes does not fit "
                             f"the negotiated packet of {self.max_packet} bytes")
        self._seq = seq = (self._seq + 1) & 0xFFFF
        return _PACK_HEADER(_PKT_REQUEST, cmd, seq, self.session_id) + payload

    def _write_frame(self, frame: bytes, timeout: float, cmd: int) -> None:
        if frame:
            self._send(frame, timeout, cmd)

    def _first_slice(self, timeout: float, cmd: int) -> Optional[bytes]:
        """The next slice from the device, or None when ``timeout`` passes first."""
        return self._read_for(time.monotonic() + timeout, P.COMMAND_NAMES.get(cmd, f"command {cmd}"))

    def _send(self, frame: bytes, timeout: float, cmd: int) -> None:
        try:
            self.transport.write(frame, timeout)
        except TransportClosedError as err:
            raise self._send_failed(err, cmd) from err

    def _send_failed(self, err: TransportClosedError, cmd: int) -> TransportClosedError:
        self._open = False
        return TransportClosedError(f"{err}\n(while sending {P.COMMAND_NAMES.get(cmd, f'command {cmd}')})")

    def _receive(self, deadline: float, name: str) -> List[bytes]:
        try:
            return self._packets_until(deadline)
        except TransportClosedError as err:
            raise self._receive_failed(err, name) from err

    def _receive_failed(self, err: TransportClosedError, name: str) -> TransportClosedError:
        self._open = False
        return TransportClosedError(f"{err}\n(while waiting for the reply to {name})" + self._log_context())

    def receive_area(self, nbytes: int):
        """(bytearray, its address) of at least ``nbytes``, kept for the session's next transfers:
        a fresh buffer per transfer would cost a mapping and its page faults each time."""
        if self._rx_area is None or len(self._rx_area) < nbytes:
            self._rx_area = bytearray(nbytes)
            self._rx_address = ctypes.addressof(ctypes.c_char.from_buffer(self._rx_area))
        return self._rx_area, self._rx_address

    def wait_for_reboot(self, timeout: Optional[float] = None) -> int:
        """Wait for the device's boot ANNOUNCE (after a reset); returns its boot nonce."""
        timeout = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        self._open = False
        while time.monotonic() < deadline:
            for packet in self._packets_until(deadline):
                if packet[0] == P.PKT_ANNOUNCE and len(packet) >= P.ANNOUNCE.size:
                    self.boot_nonce = P.ANNOUNCE.unpack_from(packet)[4]
                    return self.boot_nonce
        raise IoTimeoutError(f"the device did not announce a reboot within {timeout:.3g} s"
                             + self._log_context())



class _Chunks:
    """The requests of a chunked transfer: a packet template patched per chunk."""

    def __init__(self, template: bytes, offset_at: int, length_at: int, chunk: int, total: int, source):
        self.template = template
        self.offset_at = offset_at
        self.length_at = length_at
        self.chunk = chunk
        self.total = total
        self.source = source
        self.count = max(1, -(-total // chunk))

    def length(self, index: int) -> int:
        return max(0, min(self.chunk, self.total - index * self.chunk))

    def packet(self, seq: int, index: int) -> bytes:
        """Request ``index`` with sequence number ``seq`` (its header's, patched)."""
        head = bytearray(self.template)
        offset = index * self.chunk
        nbytes = self.length(index)
        _U16.pack_into(head, 2, seq)
        if self.offset_at:
            _U32.pack_into(head, self.offset_at, offset)
        if self.length_at:
            _U32.pack_into(head, self.length_at, nbytes)
        if self.source is None:
            return bytes(head)
        return bytes(head) + bytes(self.source[offset:offset + nbytes])


class _ChunkHandler:
    """on_reply for the per-request path of a transfer: checks and stores a READ's data, counts chunks."""

    def __init__(self, cmd: int, plan: _Chunks, sink, on_chunk, first: int):
        self.cmd, self.plan, self.sink, self.on_chunk, self.first = cmd, plan, sink, on_chunk, first

    def __call__(self, index: int, payload: bytes) -> None:
        index += self.first
        nbytes = self.plan.length(index)
        if self.sink is not None:
            offset = index * self.plan.chunk
            if len(payload) != nbytes:
                raise ProtocolError(f"{P.COMMAND_NAMES.get(self.cmd)} at offset {offset} returned "
                                    f"{len(payload)} bytes, not {nbytes}")
            self.sink[offset:offset + nbytes] = payload
        if self.on_chunk is not None:
            self.on_chunk(index, nbytes)


def _address(buffer, writable: bool) -> int:
    if type(buffer) is bytes and not writable:
        return ctypes.cast(ctypes.c_char_p(buffer), ctypes.c_void_p).value or 0
    view = memoryview(buffer)
    if view.readonly:
        raise ValueError("a read-only buffer other than bytes")
    return ctypes.addressof(ctypes.c_char.from_buffer(view))


class _BulkBuffers:
    """The accelerator's side of a transfer: frames batches from the source, takes replies into the sink."""

    def __init__(self, session: ProtocolSession, lib, plan: _Chunks, source, sink):
        self.lib = lib
        self.plan = plan
        self.window = session.window
        self.source_keep = source
        self.source = _address(source, False) if source is not None else None
        self.sink_keep = sink
        self.sink = _address(sink, True) if sink is not None else None
        packet_room = 2 * (len(plan.template) + plan.chunk + CRC_BYTES) + 2
        self.out = session._encoder.room(packet_room * self.window)
        self.ends = (ctypes.c_size_t * self.window)()
        self.reply = _PACK_HEADER(P.PKT_REPLY_OK, plan.template[1], 0, session.session_id)
        self.used = ctypes.c_size_t()
        self.bad = ctypes.c_int()
        if sink is not None:
            # Room for a batch of replies at once, and never less than two whole escaped frames.
            self.rx, self.rx_address = session.receive_area(max(_RX_AREA_BYTES, 2 * packet_room))
            self.rx_view = memoryview(self.rx)

    @classmethod
    def of(cls, session: ProtocolSession, lib, plan: _Chunks, sink) -> _BulkBuffers:
        source = plan.source
        if source is not None and type(source) is not bytes and memoryview(source).readonly:
            source = plan.source = bytes(source)
        return cls(session, lib, plan, source, sink)

    def requests(self, seq: int, first: int, count: int) -> memoryview:
        plan = self.plan
        address, buffer = self.out
        n = self.lib.utvm_accel_encode_chunks(plan.template, len(plan.template), plan.offset_at,
                                              plan.length_at, seq, first * plan.chunk, plan.chunk, plan.total,
                                              self.source, count, address, self.ends)
        return memoryview(buffer)[:n]

    def acks(self, seq: int, count: int):
        """The frames of a WRITE batch's replies, and where each ends."""
        out = ctypes.create_string_buffer(2 * (P.HEADER.size + CRC_BYTES) * count + 2 * count)
        n = self.lib.utvm_accel_encode_chunks(self.reply, len(self.reply), 0, 0, seq, 0, 0, 0, None, count,
                                              out, self.ends)
        return out.raw[:n], self.ends[:count]

    def take(self, fill: int, seq: int, first: int, count: int):
        """(replies taken, bytes used, stopped at an unexpected frame) for READ replies in the first
        ``fill`` bytes of the receive area."""
        plan = self.plan
        got = self.lib.utvm_accel_take_chunks(
            self.rx_address, fill, self.reply, seq & 0xFFFF, first * plan.chunk, plan.chunk, plan.total,
            count, self.sink, ctypes.byref(self.used), ctypes.byref(self.bad))
        return got, self.used.value, bool(self.bad.value)
