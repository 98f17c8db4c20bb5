"""The link under a session: what it has cost (LinkReport), and asking the device about a silence
(Probe).

``ProtocolSession.link`` returns a :class:`LinkReport` snapshot; ``as_dict()`` is the form a
machine-readable summary carries (`utvm run --json` puts it under "link").
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Dict, List, Tuple

from . import protocol as P
from .framing import encode


@dataclasses.dataclass(frozen=True)
class LinkReport:
    """The link's figures so far.

    ``frames_received`` counts every frame the host took from the device, ``frames_corrupted`` the
    ones it dropped (bad CRC or escape, cut short, merged with another); ``frame_error_rate`` is
    their ratio. ``lost_requests`` and ``lost_replies`` are what the device's answers to QUERY
    told apart: a request it never saw, or a reply it sent that never arrived. ``packet_bytes`` is
    the packet limit in use now, ``negotiated_packet_bytes`` the one the handshake first agreed;
    ``packet_shrinks`` counts the times repeated corruption made the session halve it.
    """

    packet_bytes: int
    negotiated_packet_bytes: int
    frames_received: int
    frames_corrupted: int
    retransmissions: int
    lost_requests: int
    lost_replies: int
    packet_shrinks: int

    @property
    def frame_error_rate(self) -> float:
        return self.frames_corrupted / self.frames_received if self.frames_received else 0.0

    def as_dict(self) -> Dict[str, Any]:
        return {**dataclasses.asdict(self), "frame_error_rate": round(self.frame_error_rate, 6)}


class Probe:
    """Asking the device, after a silence, what it last answered (QUERY, answered by STATE).

    The STATE comes back at once from an idle device, after everything sent before the QUERY:
    a request it covers that is still unanswered was lost, on the way there or back. A busy device
    answers only when done, so unanswered QUERYs are repeated at doubling intervals.
    """

    def __init__(self, session, silence: float, ask_now: bool):
        """For one wait of ``session`` (a ProtocolSession); the first QUERY goes after ``silence``,
        or at once with ``ask_now``."""
        self.session = session
        self.silence = silence
        self.interval = silence
        self.due = time.monotonic() + (0.0 if ask_now else silence)
        # probe id -> the seqs outstanding when it was sent
        self.sent: Dict[int, Tuple[int, ...]] = {}

    def restart(self) -> None:
        """Something moved: the next silence counts from now."""
        self.interval = self.silence
        self.due = time.monotonic() + self.silence

    def ask_if_due(self, outstanding, timeout: float, cmd: int) -> None:
        now = time.monotonic()
        if now < self.due:
            return
        session = self.session
        session._probe_id = probe_id = (session._probe_id + 1) & 0xFFFF
        self.sent[probe_id] = tuple(outstanding)
        session._send(encode(P.QUERY.pack(P.PKT_QUERY, 0, probe_id)), timeout, cmd)
        self.due = now + self.interval
        self.interval *= 2

    def answered(self, packet: bytes, outstanding) -> List[int]:
        """The seqs a STATE shows lost (counted as lost requests or lost replies); [] for a STATE
        that answers none of this wait's QUERYs."""
        if len(packet) < P.STATE.size:
            return []
        _, last_cmd, probe_id, session_id, last_seq, flags, _ = P.STATE.unpack_from(packet)
        covered = self.sent.pop(probe_id, None)
        if covered is None:
            return []
        lost = [seq for seq in covered if seq in outstanding]
        session = self.session
        # The device answers in order: what it answered last, and everything before it, was seen.
        seen = lost.index(last_seq) + 1 if (flags & P.STATE_KEPT and session_id == session.session_id
                                            and last_seq in lost
                                            and outstanding[last_seq][1] == last_cmd) else 0
        session._lost_replies += seen
        session._lost_requests += len(lost) - seen
        return lost
