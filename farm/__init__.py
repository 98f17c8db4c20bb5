"""Shared boards through TVM's own RPC tracker: farm nodes, and the client side of a remote board.

    from utvm.farm import Session
    with Session.from_tracker("127.0.0.1:9190", "mps2_an386", "model.tar") as session:
        session.set_input(0, x); session.run(); y = session.get_output(0)

A node (`utvm farm node`) is a stock `tvm.rpc.Server` registered with TVM's tracker under a board key,
with utvm's functions (node_functions.py) registered when it starts; the tracker queues clients per
key and TVM's proxy reaches nodes behind NAT. See docs/farm.md, including its threat model.
Names are imported on first use, so importing this package (as the `utvm` command does) is cheap.
"""

from __future__ import annotations

from utvm.project_api.lazy_exports import lazy_exports

_LAZY = {
    "Session": ("session", "FarmSession"),
    "FarmSession": ("session", "FarmSession"),
    "connect_board": ("session", "connect_board"),
    "RemoteBoard": ("remote", "RemoteBoard"),
    "FarmTransport": ("remote", "FarmTransport"),
    "TrackerClient": ("tracker_client", "TrackerClient"),
    "NodeConfig": ("node", "NodeConfig"),
    "serve_node": ("node", "serve_node"),
    "farm_status": ("status", "farm_status"),
    "FarmError": ("errors", "FarmError"),
    "QueueTimeoutError": ("errors", "QueueTimeoutError"),
    "TokenRefusedError": ("errors", "TokenRefusedError"),
    "NodeLostError": ("errors", "NodeLostError"),
}

__all__ = sorted(_LAZY)


__getattr__ = lazy_exports(__name__, _LAZY, globals())
