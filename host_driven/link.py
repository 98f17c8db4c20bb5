"""What the link has cost a session: corrupted frames, resent and lost packets, the packet size.

``ProtocolSession.link`` returns a :class:`LinkReport` snapshot; ``as_dict()`` is the form a
machine-readable summary carries (`utvm run --json` puts it under "link").
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict


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
