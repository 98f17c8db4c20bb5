"""A client of TVM's RPC tracker with a deadline on every wait, and a board request that shows its
place in the tracker's queue.

The tracker is TVM's own (`python -m tvm.exec.rpc_tracker`); this speaks its wire format: a magic
number each way, then length-prefixed JSON messages (see tvm/rpc/tracker.py). It is written here,
in the standard library, so that `utvm farm status` answers without importing TVM (seconds), and
so that no wait is unbounded (TVM's TrackerSession retries for a minute and then blocks without a
limit). tests/test_farm_units.py checks the constants against TVM's.

One connection per waiting request: TVM's tracker answers a request on the connection that made it,
so the progress display polls the summary on a second connection of its own.
"""

from __future__ import annotations

import json
import select
import socket
import struct
import time
from typing import Any, Callable, Dict, Optional, Tuple

from .errors import FarmError, QueueTimeoutError

TRACKER_MAGIC = 0x2F271
CODE_SUCCESS, CODE_REQUEST, CODE_SUMMARY = 0, 4, 6
MAX_MESSAGE_BYTES = 1 << 20
CONNECT_TIMEOUT_SEC = 10.0
PROGRESS_EVERY_SEC = 2.0
# A request served this soon says nothing; one that waits longer says where it stands.
FIRST_NOTE_SEC = 0.5


class TrackerClient:
    """One connection to a tracker; every call has a deadline of ``timeout`` seconds."""

    def __init__(self, address: Tuple[str, int], timeout: float = CONNECT_TIMEOUT_SEC):
        self.address = address
        self.timeout = timeout
        host, port = address
        try:
            self.sock = socket.create_connection((host, port), timeout=timeout)
        except OSError as err:
            raise FarmError(f"cannot reach the tracker at {host}:{port}: {err.strerror or err}",
                            hint="start one with `python -m tvm.exec.rpc_tracker --host HOST --port PORT`, "
                            "or check --tracker") from None
        try:
            self.sock.sendall(struct.pack("<i", TRACKER_MAGIC))
            if struct.unpack("<i", self._recv(4))[0] != TRACKER_MAGIC:
                raise FarmError(f"{host}:{port} is not a TVM RPC tracker (wrong magic number)",
                                hint="check --tracker")
        except BaseException:
            self.close()
            raise

    @property
    def where(self) -> str:
        return f"{self.address[0]}:{self.address[1]}"

    def _recv(self, n: int) -> bytes:
        chunks, got = [], 0
        try:
            while got < n:
                chunk = self.sock.recv(n - got)
                if not chunk:
                    raise FarmError(f"the tracker at {self.where} closed the connection")
                chunks.append(chunk)
                got += len(chunk)
        except socket.timeout:
            raise FarmError(f"the tracker at {self.where} did not answer within {self.timeout:g} s") from None
        except OSError as err:
            raise FarmError(f"lost the tracker at {self.where}: {err.strerror or err}") from None
        return b"".join(chunks)

    def send(self, message: Any) -> None:
        data = json.dumps(message).encode("utf-8")
        try:
            self.sock.sendall(struct.pack("<i", len(data)) + data)
        except OSError as err:
            raise FarmError(f"lost the tracker at {self.where}: {err.strerror or err}") from None

    def receive(self) -> Any:
        size = struct.unpack("<i", self._recv(4))[0]
        if not 0 < size <= MAX_MESSAGE_BYTES:
            raise FarmError(f"the tracker at {self.where} sent a message of {size} bytes")
        return json.loads(self._recv(size).decode("utf-8"))

    def summary(self) -> Dict[str, Any]:
        """The tracker's own summary: {"queue_info": {key: {free, pending}}, "server_info": [...]}."""
        self.send([CODE_SUMMARY])
        reply = self.receive()
        if not isinstance(reply, list) or reply[:1] != [CODE_SUCCESS]:
            raise FarmError(f"the tracker at {self.where} answered the summary with {reply!r}")
        return reply[1]

    def close(self) -> None:
        sock, self.sock = getattr(self, "sock", None), None
        if sock is not None:
            sock.close()

    def __enter__(self) -> TrackerClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def key_counts(summary: Dict[str, Any], key: str) -> Dict[str, int]:
    """{free, pending} of key in a tracker summary (zeros for a key the tracker has not seen)."""
    info = (summary.get("queue_info") or {}).get(key) or {}
    return {"free": int(info.get("free", 0)), "pending": int(info.get("pending", 0))}


class QueueWatch:
    """The client's place in a key's queue, estimated from the tracker's summaries.

    The tracker serves a key's requests in order, and reports only how many wait. At the request the
    place is the number waiting, this request included (less the free nodes, which serve the first
    ones at once); it never grows after that (those who come later queue behind), so each summary's
    count bounds it from above.
    """

    def __init__(self, pending_at_request: int):
        self.place = max(1, pending_at_request)
        self.waiting = self.place

    def update(self, pending: int) -> None:
        self.waiting = max(1, pending)
        self.place = max(1, min(self.place, pending))


Progress = Callable[[str], None]


def wait_for_board(address: Tuple[str, int], key: str, deadline: float, say: Optional[Progress] = None,
                   priority: int = 1) -> Tuple[str, int, str]:
    """Queue a request for key on the tracker and wait until it is served, at most until ``deadline``
    (time.monotonic()); returns the (host, port, match key) the tracker handed out. ``say`` gets a
    line with the place in the queue and the time waited every PROGRESS_EVERY_SEC while waiting."""
    start = time.monotonic()
    with TrackerClient(address) as waiting, TrackerClient(address) as watcher:
        # Those already waiting are ahead; free nodes serve them first.
        before = key_counts(watcher.summary(), key)
        waiting.send([CODE_REQUEST, key, "", priority])
        watch = QueueWatch(max(1, before["pending"] + 1 - before["free"]))
        next_note = start + FIRST_NOTE_SEC
        while True:
            now = time.monotonic()
            if now >= deadline:
                place = f" (place {watch.place} of {watch.waiting} in the queue)"
                raise QueueTimeoutError(
                    f"no board for key {key!r} within {now - start:.0f} s{place}; gave up at the deadline",
                    hint="try again later, raise --queue-timeout, or see `utvm farm status --tracker "
                    f"{waiting.where}`")
            ready, _, _ = select.select([waiting.sock], [], [], min(0.5, max(0.0, deadline - now)))
            if ready:
                reply = waiting.receive()
                if not isinstance(reply, list) or reply[:1] != [CODE_SUCCESS]:
                    raise FarmError(f"the tracker at {waiting.where} answered the request with {reply!r}")
                host, port, match_key = reply[1]
                return str(host), int(port), str(match_key)
            if time.monotonic() >= next_note:
                summary = watcher.summary()
                watch.update(key_counts(summary, key)["pending"])
                if say is not None:
                    nodes = "" if serves_key(summary, key) else f"; no node serves {key!r} yet"
                    say(f"waiting for a board on key {key!r}: place {watch.place} of {watch.waiting} in the "
                        f"queue, {time.monotonic() - start:.0f} s so far{nodes}")
                next_note = time.monotonic() + PROGRESS_EVERY_SEC


def serves_key(summary: Dict[str, Any], key: str) -> bool:
    """Whether a node (directly, or a proxy for it) is registered for key."""
    for server in summary.get("server_info") or []:
        name = str(server.get("key", ""))
        if name == f"server:{key}" or (name.startswith("server:proxy[") and key in proxy_keys(name)):
            return True
    return False


def proxy_keys(name: str) -> list:
    """The keys a proxy reports, from its tracker entry 'server:proxy[k1,k2]'."""
    inner = name[len("server:proxy["):].rstrip("]")
    return [k for k in inner.split(",") if k]
