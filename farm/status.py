"""`utvm farm status`: the keys of a tracker with their free, busy and queued counts, read from the
tracker's own summary.

A node registered directly is listed by the tracker as ``server:KEY``; a proxy is one entry,
``server:proxy[K1,K2]``, that does not say how many nodes stand behind it, so a key served through a
proxy shows its nodes as "proxy" and its busy count as unknown ("-"). Free is the tracker's count of
idle nodes, queued the number of requests waiting (a client that gave up stays counted until a node
is offered to it and refused).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

from .errors import FarmError
from .tracker_client import TrackerClient, proxy_keys

POLL_SEC = 0.5


@dataclasses.dataclass
class KeyStatus:
    key: str
    nodes: int  # registered directly
    proxied: bool  # also served through a proxy
    free: int
    queued: int

    @property
    def busy(self) -> Optional[int]:
        """Nodes in a session; None when a proxy hides how many nodes there are."""
        return None if self.proxied else max(0, self.nodes - self.free)

    def to_json(self) -> Dict[str, Any]:
        return {**dataclasses.asdict(self), "busy": self.busy}


def key_status(summary: Dict[str, Any]) -> List[KeyStatus]:
    """One row per key the tracker knows, sorted by key."""
    queues = summary.get("queue_info") or {}
    direct: Dict[str, int] = {}
    proxied = set()
    for server in summary.get("server_info") or []:
        name = str(server.get("key", ""))
        if name.startswith("server:proxy["):
            proxied.update(proxy_keys(name))
        elif name.startswith("server:"):
            key = name[len("server:"):]
            direct[key] = direct.get(key, 0) + 1
    rows = []
    for key in sorted(set(queues) | set(direct) | proxied):
        info = queues.get(key) or {}
        rows.append(KeyStatus(key, direct.get(key, 0), key in proxied, int(info.get("free", 0)),
                              int(info.get("pending", 0))))
    return rows


def farm_status(address: Tuple[str, int]) -> List[KeyStatus]:
    """The tracker's keys and counts (see key_status)."""
    with TrackerClient(address) as tracker:
        return key_status(tracker.summary())


def wait_for_keys(address: Tuple[str, int], keys: Sequence[str], timeout: float) -> List[KeyStatus]:
    """The rows once every key has a free node (a script's way to wait for a tracker and nodes it
    just started); FarmError naming what is still missing after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            rows = farm_status(address)
        except FarmError:
            if time.monotonic() >= deadline:
                raise
            rows = None
        if rows is not None:
            free = {row.key for row in rows if row.free > 0}
            missing = [key for key in keys if key not in free]
            if not missing:
                return rows
            if time.monotonic() >= deadline:
                raise FarmError(f"no free node of {', '.join(missing)} on the tracker at "
                                f"{address[0]}:{address[1]} within {timeout:g} s",
                                hint="check that the nodes started (their output says why not)")
        time.sleep(POLL_SEC)


def format_status(rows: List[KeyStatus]) -> str:
    """A table: KEY NODES FREE BUSY QUEUED."""
    header = ("KEY", "NODES", "FREE", "BUSY", "QUEUED")
    cells = [header] + [
        (r.key, f"{r.nodes}+proxy" if r.proxied else str(r.nodes), str(r.free),
         "-" if r.busy is None else str(r.busy), str(r.queued))
        for r in rows
    ]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells)
