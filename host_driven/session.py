"""A host-driven session over any Transport: handshake, requests with retries, logs, reboots.

See docs/host-driven-protocol.md. In short: ``open()`` sends HELLO (version, host nonce, the
host's packet limit) until the device answers WELCOME (echoed nonce, a session id, its own
limit); both sides then use the smaller limit. Each request carries a sequence number and the
session id, and only the reply with both is taken as its answer. A lost or corrupted reply is
retried with the same sequence number: the device replays its last reply instead of running a
command twice, and every other command is idempotent. After a short silence the host asks the
device what it last answered (QUERY, STATE: link.py) and re-sends what was lost; on a noisy link
it halves the packet size. An ANNOUNCE (the device booted) during a session raises
DeviceRebootedError; LOG packets go to Python logging at any time.

This is the protocol engine. The common cases (a single request answered at once, a transfer's
batches) go through the fast path chosen for the transport (fast_paths.py), which hands anything
else back to the engine's general loop (``_await``).
"""

from __future__ import annotations

import collections
import itertools
import logging
import secrets
import time
from typing import Callable, Deque, Dict, Iterable, List, Optional, Set, Tuple

from . import fast_paths
from . import protocol as P
from .chunks import ChunkHandler, Chunks
from .errors import (
    DeviceError,
    DeviceRebootedError,
    IoTimeoutError,
    ProtocolError,
    SessionClosedError,
    TransportClosedError,
)
from .fast_paths import Handback
from .framing import FrameDecoder, FrameEncoder, encode
from .link import LinkReport, Probe
from .transport import Transport

DEVICE_LOGGER = logging.getLogger("utvm.device")
_LOG = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 5.0
DEFAULT_RETRIES = 3
# The host's packet limit proposal; the device answers with its own and both use the smaller.
DEFAULT_MAX_PACKET = P.MAX_PACKET
# Requests in flight at once, at most; the device's rx window may lower it.
DEFAULT_WINDOW = 32
# After this long without a reply (or half the request's timeout, when shorter), the host asks
# the device what it last answered (QUERY) instead of waiting out the whole timeout.
DEFAULT_PROBE_AFTER = 0.25
# The shortest silence that counts: a loaded host may take this long to run the device.
MIN_SILENCE = 0.02
# Re-sends without progress on a noisy link (corrupted frames, requests or replies the device's
# STATE shows lost) before the packets are halved, when they can be, and before giving up.
SHRINK_AFTER = 2
NOISY_RESENDS = 32
# How long the first HELLO of a session waits for its WELCOME before it goes again.
FIRST_HELLO_WAIT = 1.0
# The longest single wait on the transport: the main thread gets back to Python at least this often.
WAIT_SLICE = 0.25
RECENT_LOG_LINES = 20
MIN_DECODE_LIMIT = 4096
# Below glibc's mmap threshold: larger reads cost a fresh mapping (page faults) each time.
_READ_BYTES = 64 * 1024

# Looked up once: the single-request path runs in a few microseconds.
_PACK_HEADER = P.HEADER.pack
_HEADER_BYTES = P.HEADER.size
_PKT_REQUEST = P.PKT_REQUEST

# Commands that may be sent again in smaller packets, under a new session: they change nothing
# (or write the same bytes again), so their answer does not depend on how often they ran.
_IDEMPOTENT = frozenset({P.CMD_PING, P.CMD_INFO, P.CMD_TENSOR_INFO, P.CMD_KERNEL_INFO, P.CMD_WRITE,
                         P.CMD_READ})

LogHandler = Callable[[int, str], None]


def _sized(nbytes: Optional[int]) -> Optional[Callable[[int, bytes], bool]]:
    """An on_reply that takes only replies of ``nbytes`` bytes (None: any)."""
    return None if nbytes is None else (lambda _index, payload: len(payload) == nbytes)


class _Shrink(Exception):
    """Raised by the engine's loop to its caller: send these requests again in smaller packets."""


class ProtocolSession:
    """One host-driven session with a device over ``transport``.

    ``timeout`` is how long to wait for each reply (and for the whole handshake, ``retries`` + 1
    times over), ``retries`` how many times a request is re-sent after a silence of ``timeout``
    without progress before giving up (a noisy link, whose corrupted frames show the device is
    there, gets NOISY_RESENDS). After ``probe_after`` seconds of silence (or half the timeout,
    when shorter) the host asks the device what it last answered, and re-sends at once what it
    never saw or whose reply was lost; on a link that keeps corrupting, it halves the packet size.
    ``log_handler(level, text)`` is called for every device log line (Python ``logging`` levels),
    in addition to the ``utvm.device`` logger. ``max_packet`` is the host's packet limit proposal
    and ``window`` how many requests may be in flight during a transfer.
    """

    def __init__(self, transport: Transport, *, timeout: float = DEFAULT_TIMEOUT,
                 retries: int = DEFAULT_RETRIES, log_handler: Optional[LogHandler] = None,
                 max_packet: int = DEFAULT_MAX_PACKET, window: int = DEFAULT_WINDOW,
                 open_timeout: Optional[float] = None, probe_after: float = DEFAULT_PROBE_AFTER):
        if not P.MIN_PACKET <= max_packet <= P.MAX_PACKET:
            raise ValueError(f"max_packet must be {P.MIN_PACKET} to {P.MAX_PACKET} bytes (the most "
                             f"CRC-16/CCITT fully protects), got {max_packet}")
        if window < 1:
            raise ValueError(f"window must be at least 1, got {window}")
        self.transport = transport
        self.timeout = timeout
        self.retries = retries
        self._latency: Optional[float] = None
        self.probe_after = probe_after
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
        self.negotiated_packet = 0
        self._lost_requests = 0
        self._lost_replies = 0
        self._shrinks = 0
        self._replies_before = 0  # replies taken whole by transfer batches and earlier paths
        self._probe_id = 0
        self._proposal = max_packet
        # LOG lines are not bound by the negotiated limit (their own is UTVM_LOG_MAX_TEXT), so the
        # decoder accepts a little more than a tiny proposal.
        self._decoder = FrameDecoder(max(max_packet, MIN_DECODE_LIMIT))
        self._encoder = FrameEncoder()
        # Packets decoded but not yet looked at (they arrived behind the last awaited reply).
        self._pending: Deque[bytes] = collections.deque()
        self._seq = secrets.randbelow(0x10000)
        self._open = False
        self._path: fast_paths.FramePath = fast_paths.FramePath(self)

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def is_open(self) -> bool:
        return self._open

    @property
    def fast_path(self) -> Optional[str]:
        """"pipe call" when single requests go through the C fast path (a pipe-pair transport and
        the framing accelerator, see pipe_call.py), else None."""
        return self._path.name if self.transport.pipe_fds() is not None else None

    @property
    def noisy(self) -> bool:
        """Whether the link has shown noise: a corrupted frame, a re-send, a lost packet. Frames
        with more errors than their CRC-16 catches come with many it does catch, so DeviceClient
        checks transfers end to end from then on."""
        return bool(self._decoder.bad_frames or self.retransmissions or self._lost_requests)

    @property
    def link(self) -> LinkReport:
        """The link's figures so far: frames received and corrupted, packets resent and lost."""
        good = self._decoder.good_frames + self._replies_before + getattr(self._path, "replies", 0)
        bad = self._decoder.bad_frames
        return LinkReport(packet_bytes=self.max_packet, negotiated_packet_bytes=self.negotiated_packet,
                          frames_received=good + bad, frames_corrupted=bad,
                          retransmissions=self.retransmissions, lost_requests=self._lost_requests,
                          lost_replies=self._lost_replies, packet_shrinks=self._shrinks)

    def open(self) -> ProtocolSession:
        """Handshake with the device (again, after a reboot). Raises IoTimeoutError if it never answers."""
        self._handshake(self.host_max_packet)
        self.negotiated_packet = self.max_packet
        return self

    def _handshake(self, proposal: int, renegotiating: bool = False) -> None:
        """HELLO with the packet limit ``proposal`` until the WELCOME to it arrives. HELLO goes
        again after a silence that doubles each time, up to ``timeout``: a lost one costs little,
        and a slow link drains the HELLOs queued on it (only the WELCOME to the latest counts).
        When ``renegotiating`` an open session, a boot announcement means the arena is gone."""
        self._open = False
        self._proposal = proposal
        deadline = time.monotonic() + self.open_timeout
        # A first handshake knows nothing of the link yet (and the device may still be starting).
        first = self._silence(self.timeout) if renegotiating else min(self.timeout, FIRST_HELLO_WAIT)
        attempt_timeout = min(first, self.open_timeout)
        while True:
            # A fresh nonce per attempt: a late WELCOME to an earlier HELLO names a session the
            # device has already replaced, so it must not be taken.
            host_nonce = secrets.randbits(32) or 1
            hello = P.HELLO.pack(P.PKT_HELLO, P.PROTOCOL_VERSION, 0, host_nonce, proposal)
            self.transport.write(encode(hello), self.timeout)
            sent_at = time.monotonic()
            attempt_end = min(deadline, sent_at + attempt_timeout)
            while time.monotonic() < attempt_end:
                for packet in self._packets_until(attempt_end):
                    if renegotiating and packet[0] == P.PKT_ANNOUNCE:
                        raise self._rebooted(packet)
                    if self._take_welcome(packet, host_nonce):
                        self._note_latency(time.monotonic() - sent_at)  # a first idea of the link
                        return
            attempt_timeout = min(2 * attempt_timeout, self.timeout)
            if time.monotonic() >= deadline:
                raise IoTimeoutError(
                    f"the device did not answer the session handshake within {self.open_timeout:.3g} s; "
                    "check that it is flashed with a utvm firmware and that the transport settings "
                    "(port, baud rate) are right" + self._log_context())

    def _shrink(self, floor: int) -> None:
        """Halve the packet size (not below ``floor``) by a new handshake: frames that keep arriving
        corrupted are shorter and get through more often, as on a noisy serial line."""
        limit = max(floor, P.MIN_PACKET, self.max_packet // 2)
        _LOG.info("the link corrupts %d-byte packets again and again (%d corrupted frames so far): "
                  "going down to %d bytes", self.max_packet, self._decoder.bad_frames, limit)
        self._shrinks += 1
        self._handshake(limit, renegotiating=True)

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
                f"bytes; the host proposed {self._proposal})")
        self.session_id = session_id
        self.boot_nonce = boot
        self.device_max_packet = device_max
        self.max_packet = min(self._proposal, device_max)
        self.window = max(1, min(self.host_window, window))
        self._replies_before += getattr(self._path, "replies", 0)  # the old path's count, kept
        self._path = fast_paths.choose(self, self._encoder.lib, self.max_packet)
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
            # In slices: a signal taken by another thread (Python runs its handler in the main
            # one) is acted on within a slice, not at the end of a long wait.
            remaining = min(WAIT_SLICE, max(0.0, deadline - time.monotonic()))
            try:
                data = self.transport.read(_READ_BYTES, remaining)
            except IoTimeoutError:
                if time.monotonic() >= deadline:
                    return []
                continue
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

    def _rebooted(self, announce: bytes) -> DeviceRebootedError:
        """The error for a boot ANNOUNCE during the session (which it ends)."""
        self._open = False
        nonce = P.ANNOUNCE.unpack_from(announce)[4] if len(announce) >= P.ANNOUNCE.size else None
        self.boot_nonce = nonce
        return DeviceRebootedError(
            "the device rebooted during the session" + (f" (boot nonce {nonce:08x})" if nonce else "")
            + self._log_context())

    def _reply_for(self, packet: bytes, outstanding: Dict[int, Tuple[int, int, bytes]]):
        """(seq, payload, error) for a reply to one of ours, None for anything else to ignore."""
        kind = packet[0]
        if kind == P.PKT_ANNOUNCE:
            raise self._rebooted(packet)
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

    def request(self, cmd: int, payload: bytes = b"", timeout: Optional[float] = None,
                reply_size: Optional[int] = None) -> bytes:
        """Send one command and return its reply payload; a device refusal raises DeviceError.

        A reply of other than ``reply_size`` bytes (when given) is taken for a corrupted frame and
        asked for again.
        """
        if not self._open:
            raise SessionClosedError("the session is not open", hint="call ProtocolSession.open() first")
        if self._pending:
            return self.request_many(cmd, [payload], timeout=timeout, on_reply=_sized(reply_size))[0]
        # The common case goes through the fast path (a round trip is a few microseconds); what it
        # cannot finish, the general loop does. The fast path waits only until the first silence.
        if timeout is None:
            timeout = self.timeout
        wait = timeout * 0.5
        if wait > self._wait_cap:
            wait = self._wait_cap
        packet = self._request_packet(cmd, payload)
        reply = self._path.round_trip(packet, wait, timeout)
        if type(reply) is bytes:
            if reply_size is None or len(reply) == reply_size:
                return reply
            self._decoder.bad_frames += 1  # see _await: corrupted past the CRC's reach
            reply = Handback(0, None, self._decoder.bad_frames - 1, False)
        try:
            return self._finish(cmd, [packet], reply, timeout, wait, on_reply=_sized(reply_size),
                                shrink_floor=len(packet))[0]
        except _Shrink:
            self._shrink(len(packet))
        return self.request(cmd, payload, timeout, reply_size)

    def _silence(self, timeout: float) -> float:
        """How long without a reply before the device is asked about it."""
        return min(timeout * 0.5, self._wait_cap)

    @property
    def probe_after(self) -> float:
        """The longest silence before the device is asked what it last answered; shorter once
        the replies' latency is known (a few times the latency seen, MIN_SILENCE at least)."""
        return self._probe_after

    @probe_after.setter
    def probe_after(self, seconds: float) -> None:
        self._probe_after = seconds
        latency = self._latency
        self._wait_cap = seconds if latency is None else min(seconds, max(MIN_SILENCE, 4 * latency))

    def _note_latency(self, seconds: float) -> None:
        """A reply came ``seconds`` after its request went out (a smoothed average is kept)."""
        self._latency = seconds if self._latency is None else 0.875 * self._latency + 0.125 * seconds
        self.probe_after = self._probe_after

    def _finish(self, cmd: int, requests: List[bytes], handback: Handback, timeout: float, wait: float,
                on_reply: Optional[Callable[[int, bytes], None]] = None,
                shrink_floor: Optional[int] = None) -> List[bytes]:
        """The replies to ``requests`` (already sent), after a fast path handed them back having
        waited up to ``wait`` seconds."""
        data = handback.data
        packets = [] if data is None else self._without_logs(self._decoder.feed(data))
        # After a silence the requests have had `wait` of their timeout, and the device is asked now.
        deadline = time.monotonic() + timeout - (wait if handback.silent else 0.0)
        return self._await(cmd, requests, packets, timeout, handback.bad_before, deadline,
                           on_reply=on_reply, framed=True, ask_now=handback.silent, shrink_floor=shrink_floor)

    def request_many(self, cmd: int, payloads: Iterable[bytes], timeout: Optional[float] = None,
                     on_reply: Optional[Callable[[int, bytes], None]] = None) -> List[bytes]:
        """Send one command per payload, up to ``window`` in flight, and return the replies in order.

        ``on_reply(index, payload)`` is called as each reply arrives; returning False rejects the
        payload as corrupted (it is asked for again). ``timeout`` bounds the wait for each reply
        (not the whole batch). The first device error is raised once seen; replies
        still in flight are then ignored as stale.
        """
        if not self._open:
            raise SessionClosedError("the session is not open", hint="call ProtocolSession.open() first")
        timeout = self.timeout if timeout is None else timeout
        return self._await(cmd, iter(payloads), [], timeout, self._decoder.bad_frames,
                           time.monotonic() + timeout, on_reply=on_reply, framed=False)

    def _await(self, cmd: int, requests: Iterable[bytes], packets: List[bytes], timeout: float,
               bad_before: int, deadline: float, on_reply: Optional[Callable[[int, bytes], None]] = None,
               framed: bool = True, ask_now: bool = False, shrink_floor: Optional[int] = None) -> List[bytes]:
        """The replies to ``requests``: packets already sent when ``framed``, else payloads to send.

        ``packets`` are ones already received for them (and ``bad_before`` the corrupted-frame
        count before they were read), ``deadline`` when the requests already sent time out, and
        ``ask_now`` says they have met a silence already. Requests go out in batches of up to
        ``window``, each batch in one write; replies are matched by command, seq and session id.

        Recovery: a corrupted frame re-sends the oldest request at once (it was probably its
        reply). A silence asks the device what it last answered (_Probe); its STATE comes back at
        once when it is idle, and the requests it covers that are still unanswered were lost on
        the way, either way: they are re-sent (a replay or an idempotent command, never a second
        run). A device busy with a long command answers after it, with the reply. Past the
        deadline with no answer at all, everything in flight is re-sent, ``retries`` times at
        most without progress (NOISY_RESENDS when the link shows it is alive but noisy).

        With ``shrink_floor``, the caller can send its requests again in smaller packets: when
        they keep failing (SHRINK_AFTER re-sends without progress) and the link shows noise
        (corrupted frames, requests the device never saw), _Shrink is raised instead of another
        re-send, for idempotent commands only, while the packet is above the floor.
        """
        name = P.COMMAND_NAMES.get(cmd, f"command {cmd}")
        room = self.max_packet - _HEADER_BYTES  # no reply is longer
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
        silent_left, noisy_left = self.retries, NOISY_RESENDS  # re-sends left without progress
        sent_at = deadline - timeout  # when the requests in flight went out, roughly
        probe = Probe(self, self._silence(timeout), ask_now)
        can_shrink = (shrink_floor is not None and cmd in _IDEMPOTENT
                      and self.max_packet > max(shrink_floor, P.MIN_PACKET))
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
                    sent_at = time.monotonic()
                    deadline = sent_at + timeout
                    probe.restart()
            if not outstanding:
                return results  # type: ignore[return-value]
            # Read on unless a corrupted frame is already there to act on (a fast path's leftovers).
            if not packets and self._decoder.bad_frames == bad_before:
                probe.ask_if_due(outstanding, timeout, cmd)
                packets = self._receive(min(deadline, probe.due), name)
            progressed = False
            lost: List[int] = []
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
                elif packet[0] == P.PKT_STATE:
                    lost += probe.answered(packet, outstanding)
                    continue
                else:
                    reply = self._reply_for(packet, outstanding)
                    if reply is None:
                        continue
                    seq, payload, error = reply
                    if error is not None:
                        raise error
                index = outstanding[seq][0]
                if len(payload) > room or (on_reply is not None and on_reply(index, payload) is False):
                    # It passed the CRC, but it cannot be the reply: a frame spoilt past the CRC's
                    # reach (a trailing 0x00 keeps a CRC-16 check at 0). Corrupted, then.
                    self._decoder.bad_frames += 1
                    continue
                del outstanding[seq]
                results[index] = payload
                progressed = True
            packets = []
            now = time.monotonic()
            if progressed:
                silent_left, noisy_left = self.retries, NOISY_RESENDS
                deadline = now + timeout
                probe.restart()
                self._note_latency(now - sent_at)
            lost = [seq for seq in lost if seq in outstanding]
            corrupted = self._decoder.bad_frames > bad_before
            bad_before = self._decoder.bad_frames
            if lost:  # the device's STATE says so: they never arrived, or their replies did not
                resend, why = [outstanding[seq] for seq in lost], "lost on the way"
            elif progressed or (not corrupted and now < deadline):
                continue
            elif corrupted:  # probably the oldest one's reply: re-send that one at once
                resend, why = list(outstanding.values())[:1], "corrupted frame"
            else:  # silence past the deadline: any of them may be lost
                resend, why = list(outstanding.values()), "timeout"
            # Replays and idempotence make any re-send safe. The device is alive while frames
            # (even corrupted ones) or STATEs arrive: a noisy link gets more tries than a silent one.
            if why == "timeout":
                if silent_left <= 0:
                    raise self._no_reply(name, timeout)
                silent_left -= 1
            else:
                if can_shrink and NOISY_RESENDS - noisy_left >= SHRINK_AFTER:
                    raise _Shrink()
                if noisy_left <= 0:
                    raise self._no_reply(name, timeout)
                noisy_left -= 1
            _LOG.debug("re-sending %d %s request(s) (%s)", len(resend), name, why)
            self.retransmissions += len(resend)
            self._send(self._encoder.encode_many([entry[2] for entry in resend]), timeout, cmd)
            sent_at = now
            deadline = now + timeout
            probe.restart()

    def _no_reply(self, name: str, timeout: float) -> IoTimeoutError:
        return IoTimeoutError(
            f"no reply from the device to {name} within {timeout:.3g} s after {self.retries} retries "
            f"({self._decoder.bad_frames} corrupted frames seen)" + self._log_context())

    # -- chunked transfers -------------------------------------------------------------------

    def transfer(self, cmd: int, args: bytes, offset_at: int, length_at: int, total: int,
                 source=None, sink=None, timeout: Optional[float] = None,
                 on_chunk: Optional[Callable[[int, int], None]] = None) -> None:
        """A chunked WRITE or READ of ``total`` bytes, in chunks that fill the packet (at least one
        request).

        Each request's arguments are ``args`` with the chunk's offset (u32) at ``offset_at`` and,
        when ``length_at`` is not 0, its length (u32) there; both positions count from the start
        of the packet (header included). A WRITE sends ``source`` (a contiguous byte buffer) chunk
        by chunk; a READ's reply payloads, which must be exactly each chunk's length, are stored
        in ``sink`` (a writable byte buffer of ``total`` bytes). ``on_chunk(offset, nbytes)`` is
        called as each chunk is acknowledged. The fast path's batch route (fast_paths.py) moves a
        window of requests at a time; anything unexpected (a lost, corrupted or stale reply, a
        LOG, an error) hands the rest of the batch to the per-request loop, retries included.
        When the packets shrink on a noisy link, the rest of the transfer is planned again.
        """
        if not self._open:
            raise SessionClosedError("the session is not open", hint="call ProtocolSession.open() first")
        timeout = self.timeout if timeout is None else timeout
        start = 0
        while True:
            head = _PACK_HEADER(P.PKT_REQUEST, cmd, 0, self.session_id) + args
            # A WRITE's data rides in the request after its arguments, a READ's in the reply.
            chunk = self.max_packet - (len(head) if source is not None else _HEADER_BYTES)
            plan = Chunks(head, offset_at, length_at, chunk, total, source, start)
            acked: Set[int] = set()
            try:
                return self._transfer(plan, sink, on_chunk, timeout, acked)
            except _Shrink:
                start = plan.offset(next(index for index in itertools.count() if index not in acked))
                self._shrink(P.MIN_PACKET)

    def _transfer(self, plan: Chunks, sink, on_chunk, timeout: float, acked: Set[int]) -> None:
        """The requests of ``plan``; the indexes of those acknowledged go into ``acked``."""
        cmd = plan.template[1]
        batches = self._path.batches(plan, sink) if plan.total > plan.start else None
        if batches is None:  # the engine's own loop, a window of requests in flight
            payloads = (plan.packet(0, index)[_HEADER_BYTES:] for index in range(plan.count))
            self._await(cmd, payloads, [], timeout, self._decoder.bad_frames, time.monotonic() + timeout,
                        on_reply=ChunkHandler(cmd, plan, sink, on_chunk, 0, acked), framed=False,
                        shrink_floor=P.MIN_PACKET)
            return
        wait = self._silence(timeout)
        done = 0
        try:
            while done < plan.count:
                count = min(self.window, plan.count - done)
                seq = (self._seq + 1) & 0xFFFF
                self._seq = (self._seq + count) & 0xFFFF
                handback = batches.run(seq, done, count, wait, timeout)
                taken = handback.taken
                acked.update(range(done, done + taken))
                if on_chunk is not None:
                    for index in range(done, done + taken):
                        on_chunk(plan.offset(index), plan.length(index))
                if taken < count:
                    first = done + taken
                    requests = [plan.packet((seq + index - done) & 0xFFFF, index)
                                for index in range(first, done + count)]
                    self._finish(cmd, requests, handback, timeout, wait,
                                 on_reply=ChunkHandler(cmd, plan, sink, on_chunk, first, acked),
                                 shrink_floor=P.MIN_PACKET)
                elif handback.data:
                    self._pending.extend(self._without_logs(self._decoder.feed(handback.data)))
                done += count
        finally:
            self._replies_before += batches.taken

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

    def _request_packet(self, cmd: int, payload: bytes) -> bytes:
        if _HEADER_BYTES + len(payload) > self.max_packet:
            raise ValueError(f"{P.COMMAND_NAMES.get(cmd, cmd)} payload of {len(payload)} bytes does not fit "
                             f"the negotiated packet of {self.max_packet} bytes")
        self._seq = seq = (self._seq + 1) & 0xFFFF
        return _PACK_HEADER(_PKT_REQUEST, cmd, seq, self.session_id) + payload

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

