"""A host_driven Jetson project through a real sshd: `utvm flash` copies the program to "the board"
(this machine behind a throwaway sshd on 127.0.0.1, key login only), and `utvm run` drives it over
`ssh -T`, with `remote_prefix` naming qemu-aarch64 since binfmt_misc is not mounted here.

Also what goes wrong with SSH: a wrong port, a refused key and an sshd killed mid-session each end
in a clear error (the subprocess deadline is the hang guard), and nothing is left running, not even
after the client is killed with SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import numpy as np
import pytest
from conftest import require_tool
from host_driven_helpers import CLI, run_cli
from jetson_helpers import processes_mentioning, throwaway_sshd, wait_until_gone
from model_builders import make_small_tflite
from tflite_reference import tflite_reference
from utvm.model_library import load

pytestmark = pytest.mark.timeout(600)

QEMU_PREFIX = "remote_prefix=qemu-aarch64 -L /usr/aarch64-linux-gnu"
# A hang guard: every failure below must end well before this.
ERROR_DEADLINE_SEC = 90


def cli(*args, ok: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
    result = run_cli(*args, timeout=timeout)
    if ok:
        assert result.returncode == 0, f"utvm {' '.join(map(str, args))}:\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="module")
def board(tmp_path_factory):
    for tool in ("aarch64-linux-gnu-gcc", "make", "qemu-aarch64"):
        require_tool(tool)
    with throwaway_sshd(tmp_path_factory.mktemp("sshd")) as sshd:
        yield sshd


@pytest.fixture(scope="module")
def project(board, tmp_path_factory):
    """A small int8 model's host_driven project for qemu_aarch64, reached through the sshd."""
    pytest.importorskip("tflite", reason="the tflite package builds the small model")
    workdir = tmp_path_factory.mktemp("jetson-ssh")
    model = make_small_tflite(workdir / "small_int8.tflite", quantized=True)
    project = workdir / "p"
    remote = workdir / "on-the-board"
    cli("create-project", "jetson", model, project, "-o", "board=qemu_aarch64", *board.options(remote),
        "-o", QEMU_PREFIX)
    cli("build", project)
    return {"dir": project, "model": model, "remote": remote, "workdir": workdir}


def test_flash_copies_the_program_and_run_drives_it_over_ssh(board, project, tmp_path):
    flashed = cli("flash", project["dir"])
    assert f"copied model_device to 127.0.0.1:{board.port}:{project['remote']}" in flashed.stderr
    built = project["dir"] / "build" / "model_device"
    assert (project["remote"] / "model_device").read_bytes() == built.read_bytes()
    archive = load(project["dir"] / "model.tar")
    x = np.random.default_rng(5).integers(-128, 128, archive.inputs[0]["shape"], dtype=np.int8)
    np.save(tmp_path / "x.npy", x)
    ran = cli("run", project["dir"], "--input", f"0={tmp_path / 'x.npy'}", "--output", tmp_path / "out.npz",
              "--benchmark", "--profile", "--validate", "--number", "2", "--repeat", "2")
    assert "device: board qemu_aarch64" in ran.stdout and "validation: PASS" in ran.stdout
    [want] = tflite_reference(project["model"], [x])
    with np.load(tmp_path / "out.npz") as out:
        [got] = [out[name] for name in out.files]
    assert np.abs(got.astype(int) - want.astype(int)).max() <= 1
    assert not board.sessions(), "an SSH session outlived `utvm run`"


def test_the_ssh_transport_has_the_pipe_fast_path(board, project):
    from utvm.host_driven import Session

    cli("flash", project["dir"])
    with Session.from_project(project["dir"]) as session:
        assert session.transport.pipe_fds() is not None
        if session.protocol.fast_path is None:
            pytest.skip("the framing accelerator did not load (no C compiler?): no pipe call to use")
        assert session.protocol.fast_path == "pipe call"
        assert session.transport.name == "ssh"
        assert board.sessions(), "no SSH session while the device runs"


def test_a_wrong_port_is_named(project):
    from jetson_helpers import free_port

    port = free_port()
    result = cli("run", project["dir"], "-o", f"ssh_port={port}", ok=False, timeout=ERROR_DEADLINE_SEC)
    assert result.returncode != 0
    assert f"the connection was refused: nothing listens on port {port} of 127.0.0.1" in result.stderr
    assert "hint: check ssh_host and ssh_port" in result.stderr


def test_a_refused_key_is_named(project, tmp_path):
    other = tmp_path / "other_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True, timeout=30)
    for command in (("run", project["dir"]), ("flash", project["dir"])):
        result = cli(*command, "-o", f"ssh_key={other}", ok=False, timeout=ERROR_DEADLINE_SEC)
        assert result.returncode != 0
        assert f"the board refused the login (key {other})" in result.stderr, result.stderr
        assert "authorized_keys" in result.stderr


def test_an_sshd_killed_mid_session_is_a_clear_error(project, tmp_path):
    """The board's sshd dies (listener and sessions) between two runs: the next call fails at once,
    naming ssh and what it said, and the device on the board is gone with the connection."""
    from utvm.host_driven import Session, TransportClosedError

    with throwaway_sshd(tmp_path / "sshd") as sshd:
        remote = tmp_path / "remote"
        options = dict(opt.split("=", 1) for opt in sshd.options(remote)[1::2])
        cli("flash", project["dir"], *sshd.options(remote))
        archive = load(project["dir"] / "model.tar")
        with Session.from_project(project["dir"], options) as session:
            session.set_input(0, np.zeros(archive.inputs[0]["shape"], np.int8))
            session.run()
            sshd.kill()
            with pytest.raises(TransportClosedError) as caught:
                session.run()
        message = str(caught.value)
        assert "ssh exited with code 255" in message, message
        assert "closed by remote host" in message or "Connection reset" in message or \
            "Broken pipe" in message, message
        assert not wait_until_gone(str(remote)), "the device outlived its SSH session"


def test_nothing_is_left_after_the_client_is_killed(board, project):
    """SIGKILL `utvm run` in the middle of a long benchmark: its ssh dies with it (PR_SET_PDEATHSIG),
    the board's sshd ends the session, and the device exits at the end of its stdin."""
    cli("flash", project["dir"])
    client = subprocess.Popen([*CLI, "run", str(project["dir"]), "--benchmark", "--number", "200000",
                               "--repeat", "50"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not processes_mentioning(str(project["remote"])):  # the device, whose cwd is remote_dir
            assert client.poll() is None, "utvm run ended before the device started"
            assert time.monotonic() < deadline, "the device never started on the board"
            time.sleep(0.2)
        time.sleep(1.0)  # well into the benchmark
        os.kill(client.pid, signal.SIGKILL)
        client.wait(10)
    finally:
        if client.poll() is None:
            client.kill()
    assert not wait_until_gone(str(project["remote"])), "the device outlived a killed client"
    assert not wait_until_gone(str(board.client_key)), "ssh outlived a killed client"
    deadline = time.monotonic() + 30
    while board.sessions() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not board.sessions(), "the board's sshd still serves a killed client"
