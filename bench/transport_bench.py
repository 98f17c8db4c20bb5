"""Round trip and tensor transfers for every transport peer, interleaved round by round."""

from __future__ import annotations

from typing import Callable, Dict

from .timing import MIB, interleaved

KEYS = ("round_trip_s", "upload_mib_s", "download_mib_s")


def open_peers(factories: Dict[str, Callable[[], object]], errors: dict) -> Dict[str, object]:
    """Start each peer; one that cannot start is left out and its reason kept in `errors`."""
    peers = {}
    for name, factory in factories.items():
        try:
            peers[name] = factory()
        except Exception as exc:  # a missing peer must not hide the others' figures
            errors[name] = f"{type(exc).__name__}: {exc}"
    return peers


def measure(peers: Dict[str, object], nbytes: int, *, number: int, repeat: int,
            xfer_repeat: int) -> Dict[str, Dict[str, float]]:
    """{peer: {round_trip_s, upload_mib_s, download_mib_s}} from one interleaved run."""
    rt = interleaved({n: p.round_trip for n, p in peers.items()}, number=number, repeat=repeat)
    up = interleaved({n: p.upload for n, p in peers.items()}, number=1, repeat=xfer_repeat, warmup=1)
    down = interleaved({n: p.download for n, p in peers.items()}, number=1, repeat=xfer_repeat, warmup=1)
    mib = nbytes / MIB
    return {n: {"round_trip_s": rt[n], "upload_mib_s": mib / up[n], "download_mib_s": mib / down[n]}
            for n in peers}
