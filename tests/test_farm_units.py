"""The farm's pieces on their own: the tracker's wire constants against TVM's, the status rows, the
queue place, addresses and tokens, the node's refusal rules and its error replies. The real tracker,
proxy, nodes and QEMU boards are in test_farm.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading

import pytest
from farm_helpers import CLI, free_port
from utvm.farm import node_functions, wire
from utvm.farm.errors import FarmError, NodeLostError, TokenRefusedError
from utvm.farm.node import NodeConfig, check_exposure, sweep_stale_node_dirs
from utvm.farm.remote import _remote_error
from utvm.farm.status import format_status, key_status
from utvm.farm.tracker_client import CODE_REQUEST, CODE_SUCCESS, CODE_SUMMARY, TRACKER_MAGIC, QueueWatch
from utvm.project_api.errors import IoTimeoutError, TransportClosedError, UserError


def test_the_tracker_wire_constants_are_tvms():
    from tvm.rpc import base

    assert TRACKER_MAGIC == base.RPC_TRACKER_MAGIC
    assert (CODE_SUCCESS, CODE_REQUEST, CODE_SUMMARY) == (
        base.TrackerCode.SUCCESS, base.TrackerCode.REQUEST, base.TrackerCode.SUMMARY)


SUMMARY = {
    "queue_info": {"mps2_an386": {"free": 1, "pending": 2}, "host": {"free": 0, "pending": 0},
                   "nat": {"free": 1, "pending": 0}},
    "server_info": [
        {"key": "server:mps2_an386", "addr": ["127.0.0.1", 9091]},
        {"key": "server:mps2_an386", "addr": ["127.0.0.1", 9092]},
        {"key": "server:host", "addr": ["127.0.0.1", 9093]},
        {"key": "server:proxy[nat,other]", "addr": ["127.0.0.1", 9090]},
    ],
}


def test_status_rows_come_from_the_trackers_summary():
    rows = {r.key: r for r in key_status(SUMMARY)}
    assert sorted(rows) == ["host", "mps2_an386", "nat", "other"]
    m4 = rows["mps2_an386"]
    assert (m4.nodes, m4.free, m4.busy, m4.queued) == (2, 1, 1, 2)
    assert (rows["host"].nodes, rows["host"].busy) == (1, 1)
    assert rows["nat"].proxied and rows["nat"].busy is None  # a proxy does not say how many nodes
    table = format_status(key_status(SUMMARY)).splitlines()
    assert table[0].split() == ["KEY", "NODES", "FREE", "BUSY", "QUEUED"]
    assert table[2].split() == ["mps2_an386", "2", "1", "1", "2"]
    assert table[3].split() == ["nat", "0+proxy", "1", "-", "0"]


def test_the_queue_place_never_grows_and_follows_the_waiting_count():
    watch = QueueWatch(3)
    assert (watch.place, watch.waiting) == (3, 3)
    watch.update(5)  # two more came behind
    assert (watch.place, watch.waiting) == (3, 5)
    watch.update(2)  # two ahead were served... or left
    assert (watch.place, watch.waiting) == (2, 2)
    watch.update(0)
    assert watch.place == 1


def test_addresses_and_replies():
    assert wire.parse_address("127.0.0.1:9190") == ("127.0.0.1", 9190)
    assert wire.parse_address("[::1]:9190") == ("::1", 9190)
    for bad in ("127.0.0.1", "host:port", ":9190", "h:0", "h:70000"):
        with pytest.raises(UserError, match="bad --tracker address"):
            wire.parse_address(bad)
    assert wire.split_reply(wire.ok(b"\x00\xff")) == (True, b"\x00\xff")
    succeeded, payload = wire.split_reply(wire.error_reply("BuildError", "make failed", hint="see the log"))
    assert not succeeded and json.loads(payload)["type"] == "BuildError"
    with pytest.raises(ValueError):
        wire.split_reply(b"something else")


def test_remote_errors_come_back_as_utvm_errors():
    where = "the node serving 'k' (127.0.0.1:1)"
    assert isinstance(_remote_error({"type": "IoTimeoutError", "message": "slow"}, where), IoTimeoutError)
    closed = _remote_error({"type": "TransportClosedError", "message": "gone"}, where)
    assert isinstance(closed, TransportClosedError) and where in str(closed)
    assert isinstance(_remote_error({"type": "TokenRefused", "message": "no"}, where), TokenRefusedError)
    fit = _remote_error({"type": "UserError", "message": "the model does not fit", "hint": "a bigger board",
                         "exit_code": 2}, where)
    assert isinstance(fit, FarmError) and fit.exit_code == 2 and fit.hint == "a bigger board"
    assert fit.message == f"on {where}: UserError: the model does not fit"


def test_a_node_beyond_loopback_needs_a_token():
    base = dict(tracker=("127.0.0.1", 9190), key="k", template_dir=None, options={})
    check_exposure(NodeConfig(**base))  # 127.0.0.1, no token: fine
    check_exposure(NodeConfig(**base, through_proxy=("localhost", 9090)))
    for exposed in (dict(host="0.0.0.0"), dict(host="10.1.2.3"), dict(through_proxy=("192.0.2.1", 9090))):
        with pytest.raises(UserError, match="without a token"):
            check_exposure(NodeConfig(**base, **exposed))
        check_exposure(NodeConfig(**base, **exposed, token="secret"))


def test_token_files(tmp_path):
    with pytest.raises(UserError, match="cannot read the token file"):
        wire.read_token_file(tmp_path / "missing")
    (tmp_path / "empty").write_text("\n  \n")
    with pytest.raises(UserError, match="is empty"):
        wire.read_token_file(tmp_path / "empty")
    (tmp_path / "token").write_text("  abc123  \nignored\n")
    assert wire.read_token_file(tmp_path / "token") == "abc123"


@pytest.fixture
def node_session(tmp_path, monkeypatch):
    """node_functions' session state in this process, as a node's session process has it."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(node_functions, "_SESSION", None)
    monkeypatch.setattr(node_functions, "_CONFIG", {
        "key": "k", "template": "host", "template_dir": "/nonexistent", "platform": "host", "board": None,
        "options": {"board": "mps2_an386"}, "token": "right", "verbose": False, "tracker": None})
    yield node_functions
    node_functions._SESSION = None


def _reply(data: bytes):
    succeeded, payload = wire.split_reply(data)
    return succeeded, (json.loads(payload) if payload else None)


def test_nothing_acts_before_a_hello_with_the_token(node_session, tmp_path):
    functions = node_session._FUNCTIONS
    (tmp_path / wire.ARCHIVE_NAME).write_bytes(b"not looked at")
    calls = ((wire.GENERATE, (wire.ARCHIVE_NAME, "{}")), (wire.BUILD, ("{}",)), (wire.READ, (1, 0.1)))
    for name, args in calls:
        succeeded, body = _reply(functions[name](*args))
        assert not succeeded and body["type"] == "TokenRefused", body
    for token in ("", "wrong"):
        succeeded, body = _reply(functions[wire.HELLO](token, wire.PROTOCOL_VERSION))
        assert not succeeded and "refused the token" in body["message"]
    assert not (tmp_path / "project").exists()  # nothing was generated
    succeeded, body = _reply(functions[wire.HELLO]("right", wire.PROTOCOL_VERSION))
    assert succeeded and body["key"] == "k" and body["options"] == {"board": "mps2_an386"}


def test_a_client_adds_options_but_cannot_change_the_nodes(node_session):
    session = node_session._session()
    assert session.options('{"cflags": "-O2"}') == {"board": "mps2_an386", "cflags": "-O2"}
    assert session.options('{"board": "mps2_an386"}') == {"board": "mps2_an386"}
    with pytest.raises(node_session._Refused, match="this node serves board=mps2_an386"):
        session.options('{"board": "mps2_an385"}')


def test_the_next_node_removes_the_files_of_a_dead_one(tmp_path):
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True, check=True)
    dead = tmp_path / f"utvm-farm-node-{finished.stdout.strip()}-abc"
    alive = tmp_path / f"utvm-farm-node-{os.getpid()}-def"
    for d in (dead, alive):
        (d / "session").mkdir(parents=True)
    sweep_stale_node_dirs(tmp_path)
    assert not dead.exists() and alive.exists()


def test_command_line_errors():
    result = subprocess.run([*CLI, "run", "--key", "k", "model.tar"], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 2 and "--tracker and --key go together" in result.stderr
    result = subprocess.run([*CLI, "farm", "status", "--tracker", f"127.0.0.1:{free_port()}"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and "cannot reach the tracker" in result.stderr, result.stderr


class _SilentSession:
    """Stands in for TVM's RPC session of a node that stopped answering (SIGSTOP, a cut cable): its
    functions block. Only the deadline around the calls is under test here."""

    def __init__(self):
        self.release = threading.Event()

    def get_function(self, name):
        return lambda *args: self.release.wait(60) and wire.ok()


def test_a_silent_node_costs_the_client_its_deadline_not_forever(monkeypatch):
    from utvm.farm import remote

    monkeypatch.setattr(remote, "call_deadline", lambda name, *args: 0.5)
    silent = _SilentSession()
    board = remote.RemoteBoard(silent, "k", "127.0.0.1:1")
    try:
        with pytest.raises(NodeLostError, match=r"did not answer read within 0\.5 s"):
            board.read(16, 0.1)
        with pytest.raises(NodeLostError, match="stopped answering earlier"):
            board.write(b"x", 0.1)
        board.close()  # gives up on the end call at once: the caller thread is stuck
    finally:
        silent.release.set()


def test_read_deadlines_follow_the_reads_own_timeout():
    from utvm.farm.remote import CALL_MARGIN_SEC, call_deadline

    assert call_deadline(wire.READ, 64, 10.0) == pytest.approx(10.0 + CALL_MARGIN_SEC, abs=0.01)
    assert call_deadline(wire.BUILD, "{}") > call_deadline(wire.HELLO, "", 1)
