"""Shared boards through TVM's own RPC tracker, with real processes on 127.0.0.1: TVM's tracker and
proxy (python -m tvm.exec.rpc_tracker / rpc_proxy), `utvm farm node` serving a host-template board
and mps2_an386 boards under QEMU, and clients that are processes of their own.

What each test shows (issue 13's "Must show"): two boards in one pool serving three clients at once on
the QEMU key through the tracker's queue, with outputs equal to a local run; a node behind the proxy
answering the same run; a node killed with SIGKILL mid-run (the client gets a clear error, the
restarted node serves the next one); a client killed mid-run freeing the board; the token refusing
a session before anything runs. After each, no process of a node's sessions (project server, QEMU)
is left. Nothing here asserts a duration.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import require_tool
from farm_helpers import (
    CLI,
    free_port,
    node_dir,
    processes_mentioning,
    start_client,
    start_node,
    start_proxy,
    start_tracker,
    stopping_what_starts,
    wait_for_free,
    wait_until_gone,
)
from host_driven_helpers import small_tflite_archive

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def _stop_what_the_test_started():
    with stopping_what_starts():
        yield

QEMU_KEY_BOARD = "mps2_an386"
# A benchmark this long keeps the device busy for many seconds: the tests kill someone during it.
BUSY_RUNS = 16_000_000  # under the device's bound of 2**24 calls per TIME request


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """The small int8 model compiled for the host and for mps2_an386, seeded inputs, and the outputs
    of a local run of each (a project built here, driven by the ordinary host-driven Session)."""
    require_tool("qemu-system-arm")
    require_tool("arm-none-eabi-gcc")
    require_tool("make")
    from model_builders import make_small_tflite
    from utvm.boards import get_board
    from utvm.host_driven import Session
    from utvm.model_library import compile_model
    from utvm.project_api.project import TemplateProject
    from utvm.templates import template_path

    root = tmp_path_factory.mktemp("farm-models")
    host_archive = small_tflite_archive(tmp_path_factory)
    model = make_small_tflite(root / "small.tflite", True)
    m4_archive = Path(compile_model(model, root / "small-m4.tar", model_name="small_m4",
                                    target=get_board(QEMU_KEY_BOARD).target))
    expected = {}
    projects = {}
    inputs = root / "inputs.npz"
    for name, archive, template, options in (("host", host_archive, "host", {}),
                                             ("qemu", m4_archive, "baremetal", {"board": QEMU_KEY_BOARD})):
        with TemplateProject.from_directory(template_path(template), echo=False) as tmpl:
            with tmpl.generate_project(archive, root / f"local-{name}", options) as project:
                project.build()
                project.flash()
                projects[name] = project.directory
                with Session.from_project(project, model=archive) as session:
                    if not inputs.exists():
                        arrays = session.signature.random_inputs(7)
                        np.savez(inputs, **arrays)
                    with np.load(inputs) as npz:
                        session.set_inputs({k: npz[k] for k in npz.files})
                    session.run()
                    expected[name] = session.get_outputs()
    return {"host": host_archive, "qemu": m4_archive, "inputs": inputs, "expected": expected,
            "projects": projects}


@pytest.fixture(scope="module")
def tracker(tmp_path_factory):
    port = free_port()
    proc = start_tracker(tmp_path_factory.mktemp("tracker"), port)
    yield port
    proc.stop()


def _outputs_match(path: Path, expected) -> None:
    with np.load(path) as got:
        assert sorted(got.files) == sorted(expected)
        for name, array in expected.items():
            np.testing.assert_array_equal(got[name], array)


def _assert_clean(node) -> None:
    left = wait_until_gone(node_dir(node))
    assert not left, "processes of the node's sessions are left:\n" + "\n".join(left)


def _stop_node(node) -> None:
    node.stop()
    _assert_clean(node)
    assert not list(Path(tempfile.gettempdir()).glob(node_dir(node) + "*")), "the node left its directory"


def test_two_boards_in_a_real_pool(tmp_path, tracker, models):
    host = start_node(tmp_path, tracker, "host", "host")
    qemu = start_node(tmp_path, tracker, QEMU_KEY_BOARD, "baremetal", f"board={QEMU_KEY_BOARD}")
    try:
        wait_for_free(tracker, "host")
        wait_for_free(tracker, QEMU_KEY_BOARD)
        status = subprocess.run([*CLI, "farm", "status", "--tracker", f"127.0.0.1:{tracker}"],
                                capture_output=True, text=True, timeout=120)
        assert status.returncode == 0, status.stderr
        rows = {line.split()[0]: line.split()[1:] for line in status.stdout.splitlines()[2:]}
        assert rows["host"] == ["1", "1", "0", "0"] and rows[QEMU_KEY_BOARD] == ["1", "1", "0", "0"]

        go = tmp_path / "go"
        clients = [start_client(tmp_path, tracker, QEMU_KEY_BOARD, models["qemu"], models["inputs"],
                                f"qemu{i}", "--go", go) for i in range(3)]
        clients.append(start_client(tmp_path, tracker, "host", models["host"], models["inputs"], "host0",
                                    "--go", go))
        for client in clients:
            client.wait_for("ready")
        go.touch()  # all four ask the tracker at once
        for client in clients:
            assert client.wait(600) == 0, client.text()
        for i in range(3):
            _outputs_match(tmp_path / f"qemu{i}.npz", models["expected"]["qemu"])
        _outputs_match(tmp_path / "host0.npz", models["expected"]["host"])
        # One board, three clients: the tracker queued the others, and they said where they stood.
        waited = [c for c in clients[:3] if "in the queue" in c.text()]
        assert len(waited) >= 2, "\n---\n".join(c.text() for c in clients[:3])
        assert "place " in waited[0].text()
        qemu.wait_for(r"(?s)(session over.*){3}")
        _assert_clean(qemu)
    finally:
        _stop_node(host)
        _stop_node(qemu)


def test_a_node_behind_the_proxy_answers_the_same_run(tmp_path, tracker, models):
    proxy_port = free_port()
    proxy = start_proxy(tmp_path, proxy_port, tracker)
    key = "mps2_an386_behind_nat"
    node = start_node(tmp_path, tracker, key, "baremetal", f"board={QEMU_KEY_BOARD}",
                      extra=["--through-proxy", f"127.0.0.1:{proxy_port}"])
    try:
        assert "serving through the proxy" in node.text()
        wait_for_free(tracker, key)
        with np.load(models["inputs"]) as npz:
            [name] = npz.files
            np.save(tmp_path / "x.npy", npz[name])
        out = tmp_path / "proxied.npz"
        run = subprocess.run([*CLI, "run", "--tracker", f"127.0.0.1:{tracker}", "--key", key, models["qemu"],
                              "--input", f"0={tmp_path / 'x.npy'}", "--output", out, "--json"],
                             capture_output=True, text=True, timeout=600)
        assert run.returncode == 0, run.stderr
        summary = json.loads(run.stdout)
        assert summary["farm"]["key"] == key and f"127.0.0.1:{proxy_port}" in summary["farm"]["node"]
        assert summary["device"]["board"] == QEMU_KEY_BOARD
        assert summary["device_clock"]["unit"] == "instructions"  # read as locally: QEMU -icount
        _outputs_match(out, models["expected"]["qemu"])
        status = subprocess.run([*CLI, "farm", "status", "--tracker", f"127.0.0.1:{tracker}"],
                                capture_output=True, text=True, timeout=120)
        assert f"{key}  0+proxy" in status.stdout, status.stdout
    finally:
        _stop_node(node)
        proxy.stop()


def test_a_farm_run_carries_the_record_of_what_the_node_built(tmp_path, tracker, models):
    """`utvm run --tracker ... --json --record --output`: the record is the same in all three places;
    the archive's hash is the client's, the firmware's is the node's, from the same build as a local
    one of the same archive with the same template and options (compiler, flags, options, image
    name); the board is the node's, emulated or not."""
    from utvm.host_driven.run_record import project_facts, sha256_file

    nodes = {"host": start_node(tmp_path, tracker, "host_record", "host"),
             "qemu": start_node(tmp_path, tracker, "m4_record", "baremetal", f"board={QEMU_KEY_BOARD}")}
    try:
        for name, key in (("host", "host_record"), ("qemu", "m4_record")):
            wait_for_free(tracker, key)
            argv = ["run", "--tracker", f"127.0.0.1:{tracker}", "--key", key, models[name],
                    "--json", "--seed", "4", "--record", tmp_path / f"{name}.json",
                    "--output", tmp_path / f"{name}.npz"]
            run = subprocess.run([*CLI, *argv], capture_output=True, text=True, timeout=600)
            assert run.returncode == 0, run.stderr
            record = json.loads(run.stdout)["record"]
            assert json.loads((tmp_path / f"{name}.json").read_text()) == record
            assert json.loads((tmp_path / f"{name}.record.json").read_text()) == record
            local = project_facts(models["projects"][name])
            # The node built the same project with the same compiler in its own directory: the
            # image names no directory (-ffile-prefix-map), so it is the local build's, bit for bit.
            assert record["firmware"]["path"] == local["firmware"]["path"]
            assert re.fullmatch("[0-9a-f]{64}", record["firmware"]["sha256"] or ""), record["firmware"]
            assert record["firmware"]["sha256"] == local["firmware"]["sha256"]
            assert record["versions"]["compiler"] == local["compiler"] and local["compiler"]["version"]
            assert record["template"] == local["template"]
            assert record["archive"]["sha256"] == sha256_file(models[name])
            assert record["seed"] == 4 and record["inputs"] == {"input": "random (seed 4)"}
            assert record["board"]["key"] == key and record["board"]["node"].startswith("127.0.0.1:")
            assert record["versions"]["utvm"] and record["versions"]["tvm"] and record["time"]
            if name == "host":
                assert (record["board"]["name"], record["board"]["emulated"]) == ("host", False)
            else:
                assert record["board"]["name"] == QEMU_KEY_BOARD and record["board"]["emulated"] is True
                assert record["board"]["emulator"] == "qemu-system-arm"
    finally:
        for node in nodes.values():
            _stop_node(node)


def test_a_node_killed_mid_run_gives_a_clear_error_and_rejoins(tmp_path, tracker, models):
    key = "mps2_an386_sigkill"
    node = start_node(tmp_path, tracker, key, "baremetal", f"board={QEMU_KEY_BOARD}")
    restarted = None
    try:
        wait_for_free(tracker, key)
        client = start_client(tmp_path, tracker, key, models["qemu"], models["inputs"], "victim",
                              "--busy-runs", str(BUSY_RUNS))
        client.wait_for("running")
        time.sleep(1.0)  # well into the benchmark
        assert processes_mentioning(node_dir(node)), "the session's QEMU should be running"
        node.kill(signal.SIGKILL)
        node.wait(30)
        assert client.wait(120) == 1, client.text()
        text = client.text()
        assert "TransportClosedError" in text and "went away" in text, text
        assert "IoTimeoutError" not in text  # the error came from the lost node, not from a deadline
        _assert_clean(node)  # the kernel took the session, its project server and QEMU down

        restarted = start_node(tmp_path, tracker, key, "baremetal", f"board={QEMU_KEY_BOARD}", name="again")
        wait_for_free(tracker, key)
        leftovers = list(Path(tempfile.gettempdir()).glob(node_dir(node) + "*"))
        assert not leftovers, "the restarted node did not sweep the dead node's files"
        client = start_client(tmp_path, tracker, key, models["qemu"], models["inputs"], "next")
        assert client.wait(600) == 0, client.text()
        _outputs_match(tmp_path / "next.npz", models["expected"]["qemu"])
    finally:
        node.stop()
        if restarted is not None:
            _stop_node(restarted)


def test_a_client_killed_mid_run_frees_the_board(tmp_path, tracker, models):
    key = "mps2_an386_client_dies"
    node = start_node(tmp_path, tracker, key, "baremetal", f"board={QEMU_KEY_BOARD}")
    try:
        wait_for_free(tracker, key)
        holder = start_client(tmp_path, tracker, key, models["qemu"], models["inputs"], "holder",
                              "--busy-runs", str(BUSY_RUNS))
        holder.wait_for("running")
        # While the board is held, a client with a short deadline waits in the queue, then gives up.
        impatient = start_client(tmp_path, tracker, key, models["qemu"], models["inputs"], "impatient",
                                 "--queue-timeout", "4")
        assert impatient.wait(300) == 1, impatient.text()
        assert "place 1 of 1 in the queue" in impatient.text()
        assert "QueueTimeoutError" in impatient.text() and "gave up at the deadline" in impatient.text()

        holder.kill(signal.SIGKILL)
        holder.wait(30)
        # The next client gets the board long before the dead client's benchmark would have ended.
        client = start_client(tmp_path, tracker, key, models["qemu"], models["inputs"], "after",
                              "--queue-timeout", "120")
        assert client.wait(600) == 0, client.text()
        _outputs_match(tmp_path / "after.npz", models["expected"]["qemu"])
        # Whether the client died inside a read the node was serving (the node notices it) or between
        # two calls (TVM's loop ends), the node ends that session and frees the board.
        node.wait_for(r"(?s)session opened.*session over.*session opened.*session over")
        _assert_clean(node)
    finally:
        _stop_node(node)


def test_the_token_holds(tmp_path, tracker, models):
    from utvm.farm.errors import FarmError, NodeLostError, TokenRefusedError
    from utvm.farm.session import connect_board

    token = tmp_path / "farm.token"
    token.write_text("s3cret-token-for-the-test\n")
    key = "host_with_token"
    node = start_node(tmp_path, tracker, key, "host", extra=["--token-file", token, "--hello-timeout", "20"])
    try:
        assert "token required" in node.text()
        wait_for_free(tracker, key)
        for name, extra in (("missing", []), ("wrong", ["--token", "not-the-token"])):
            client = start_client(tmp_path, tracker, key, models["host"], models["inputs"], name, *extra)
            assert client.wait(300) == 1, client.text()
            assert "TokenRefusedError" in client.text() and "refused the token" in client.text()

        # Function by function: nothing acts before a hello with the token.
        with connect_board(("127.0.0.1", tracker), key, queue_timeout=60) as board:
            with pytest.raises(TokenRefusedError, match="refused the token"):
                board.hello("not-the-token")
            board.upload(models["host"])  # TVM's own functions need no token: see docs/farm.md
            for call in (board.generate, board.build, board.flash, board.open_transport):
                with pytest.raises(FarmError, match="has not presented the node's token"):
                    call({})
        assert "generate" not in node.text() and "build" not in node.text()

        # A client that holds the connection without presenting the token loses it at the deadline.
        with connect_board(("127.0.0.1", tracker), key, queue_timeout=60) as board:
            node.wait_for("no hello with the token within 20 s; ending the session")
            with pytest.raises(NodeLostError, match="went away"):
                board.hello("s3cret-token-for-the-test")

        client = start_client(tmp_path, tracker, key, models["host"], models["inputs"], "right",
                              "--token-file", token)
        assert client.wait(300) == 0, client.text()
        _outputs_match(tmp_path / "right.npz", models["expected"]["host"])
    finally:
        _stop_node(node)


def test_a_node_will_not_listen_beyond_loopback_without_a_token(tmp_path):
    for extra in (["--host", "0.0.0.0"], ["--through-proxy", "192.0.2.1:9090"]):
        argv = [*CLI, "farm", "node", "--tracker", "127.0.0.1:9", "--key", "k", *extra, "host"]
        result = subprocess.run(argv, capture_output=True, text=True, timeout=120)
        assert result.returncode == 2, result.stderr
        assert "without a token" in result.stderr and "--token-file" in result.stderr
