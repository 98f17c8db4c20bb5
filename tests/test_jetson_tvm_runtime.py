"""The Arachne path: a tvm_runtime Jetson project runs the model under TVM's own runtime and Relax VM
on the emulated aarch64 board, driven through TVM RPC.

The board is an arm64 Debian root (mmdebstrap) with the aarch64 wheels of apache-tvm 0.27 and its
dependencies, run by `qemu-aarch64 -L ROOT`; TVM's RPC server starts in that Python, in-process. The
root is built once per machine into ~/.cache/utvm-tests (see jetson_helpers.arm64_root). The server is
reached directly (started by the project under qemu-aarch64), through TVM's tracker by key, and over
SSH with its port forwarded. Outputs are checked against the TFLite interpreter; nothing is left
running after a client is killed; a CUDA project says at build that the board has no CUDA compiler.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import require_tool
from host_driven_helpers import CLI, run_cli
from jetson_helpers import arm64_root, free_port, processes_mentioning, throwaway_sshd, wait_until_gone
from model_builders import make_small_tflite
from tflite_reference import tflite_reference
from utvm.model_library import load

pytestmark = [pytest.mark.timeout(900), pytest.mark.slow]

# Starting TVM's RPC server under qemu-aarch64 imports TVM there: 15 to 60 s on a busy 2-core machine.
RUN_DEADLINE_SEC = 600


def cli(*args, ok: bool = True, timeout: float = RUN_DEADLINE_SEC) -> subprocess.CompletedProcess:
    result = run_cli(*args, timeout=timeout)
    if ok:
        assert result.returncode == 0, f"utvm {' '.join(map(str, args))}:\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="module")
def root():
    require_tool("aarch64-linux-gnu-gcc")
    return arm64_root()


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    pytest.importorskip("tflite", reason="the tflite package builds the small model")
    path = tmp_path_factory.mktemp("tvm-runtime-model") / "small_float.tflite"
    return make_small_tflite(path, quantized=False)


@pytest.fixture(scope="module")
def project(root, model, tmp_path_factory):
    """The small float model as a tvm_runtime project for the emulated board, built."""
    project = tmp_path_factory.mktemp("tvm-runtime") / "p"
    made = cli("--progress", "create-project", "jetson", model, project, "-o", "board=qemu_aarch64",
               "-o", "project_type=tvm_runtime", "-o", f"qemu_root={root}")
    assert ("building small_float for TVM's runtime: llvm -mcpu=cortex-a57 -mtriple=aarch64-linux-gnu"
            in made.stderr)
    built = cli("build", project)
    assert "jetson: build/model.so: TVM 0.27.0.post1 Relax VM library for llvm" in built.stderr
    return project


def _input(project, seed=11):
    spec = load(project / "model.tar").inputs[0]
    return np.random.default_rng(seed).standard_normal(spec["shape"]).astype(spec["dtype"])


def _check_float(got, want):
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * float(np.abs(want).max()))


def test_utvm_run_drives_tvm_s_relax_vm_on_the_emulated_board(project, model, tmp_path):
    assert "nothing to copy" in cli("flash", project).stderr
    x = _input(project)
    np.save(tmp_path / "x.npy", x)
    ran = cli("run", project, "--input", f"0={tmp_path / 'x.npy'}", "--output", tmp_path / "out.npz",
              "--benchmark", "--profile", "--validate", "--number", "3", "--repeat", "2", "--progress")
    out = ran.stdout
    assert "device: board qemu_aarch64, runtime TVM 0.27.0.post1, Relax VM, model small_float" in out
    assert "aarch64, device cpu" in out
    assert "note: qemu_aarch64 runs under qemu-aarch64: timings follow the host's clock" in out
    assert "benchmark: mean" in out and "(2 x 3 calls" in out
    assert "profile (device time per kernel):" in out
    # Every call of TVM's VM is named by the TFLite layer it computes, from the archive's layer map.
    table = out.split("profile (device time per kernel):\n")[1].split("      total")[0].splitlines()
    assert table[0].split() == ["#", "kernel", "mean", "ms", "share", "layers"]
    assert table[1:] and all(re.search(r"  #0 FULLY_CONNECTED \S+$", row) for row in table[1:]), table
    assert "validating the outputs against the host reference" in ran.stderr  # a progress line
    assert "validation: PASS: the 1 output(s) of the board's run match the host reference" in out
    [want] = tflite_reference(model, [x])
    with np.load(tmp_path / "out.npz") as saved:
        [got] = [saved[name] for name in saved.files]
    _check_float(got, want)
    assert not wait_until_gone(str(project)), "TVM's RPC server outlived `utvm run`"


def test_the_session_api_through_tvm_s_tracker(project, model):
    """Session.from_project, as from Python: the board's server registers with TVM's tracker under
    the board's key and the client asks the tracker for it."""
    pytest.importorskip("tornado", reason="TVM's tracker needs tornado (the test extra pins it)")
    from utvm.host_driven import Session, TvmRuntimeSession

    port = free_port()
    tracker = subprocess.Popen([sys.executable, "-m", "tvm.exec.rpc_tracker", "--host", "127.0.0.1",
                                "--port", str(port), "--port-end", str(port + 1)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        x = _input(project, seed=12)
        with Session.from_project(project, {"tracker": f"127.0.0.1:{port}"}) as session:
            assert isinstance(session, TvmRuntimeSession)
            assert session.info.server == f"tracker 127.0.0.1:{port} key qemu_aarch64"
            session.set_input(0, x)
            seconds = session.run()
            got = session.get_output(0)
            result = session.benchmark(number=2, repeat=3)
        assert seconds > 0 and result.repeat == 3 and result.number == 2 and result.min > 0
        [want] = tflite_reference(model, [x])
        _check_float(got, want)
    finally:
        tracker.kill()
        tracker.wait(10)
    assert not wait_until_gone(str(project))


def test_over_ssh_the_server_s_port_is_forwarded(root, project, tmp_path):
    with throwaway_sshd(tmp_path / "sshd") as sshd:
        remote = tmp_path / "board"
        over_ssh = [*sshd.options(remote), "-o", f"remote_prefix=qemu-aarch64 -L {root}",
                    "-o", f"remote_python={root}/usr/bin/python3"]
        flashed = cli("flash", project, *over_ssh)
        assert f"copied utvm_rpc_server.py to 127.0.0.1:{sshd.port}:{remote}" in flashed.stderr
        ran = cli("run", project, *over_ssh, "--benchmark", "--number", "2", "--repeat", "2")
        assert "device: board qemu_aarch64, runtime TVM 0.27.0.post1, Relax VM" in ran.stdout
        assert "TVM RPC server 127.0.0.1:" in ran.stdout and "benchmark: mean" in ran.stdout
        deadline = time.monotonic() + 30
        while sshd.sessions() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not sshd.sessions(), "an SSH session outlived `utvm run`"


def test_nothing_is_left_after_the_client_is_killed(project):
    """SIGKILL `utvm run` while the board's server runs under qemu-aarch64: the project's server
    sees its channel close and exits, and the board's server dies with it (PR_SET_PDEATHSIG)."""
    board_script = str(project / "board" / "utvm_rpc_server.py")
    client = subprocess.Popen([*CLI, "run", str(project), "--benchmark", "--number", "100000"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + RUN_DEADLINE_SEC
        while not processes_mentioning(board_script):
            assert client.poll() is None, "utvm run ended before the board's server started"
            assert time.monotonic() < deadline
            time.sleep(0.2)
        time.sleep(2.0)
        os.kill(client.pid, signal.SIGKILL)
        client.wait(10)
    finally:
        if client.poll() is None:
            client.kill()
    assert not wait_until_gone(board_script), "TVM's RPC server outlived a killed client"
    assert not wait_until_gone(str(project)), "a process of the project outlived a killed client"


def test_cuda_without_a_cuda_compiler_on_the_board_fails_at_build(root, model, tmp_path):
    """device=cuda compiles with the board's TVM target tag; TVM 0.27 leaves the kernels as CUDA C
    for the board to compile as it loads the library, so build checks the board (over SSH) has the
    compiler TVM will use. The emulated board's Python has none."""
    with throwaway_sshd(tmp_path / "sshd") as sshd:
        project = tmp_path / "p"
        made = cli("--progress", "create-project", "jetson", model, project, "-o", "board=jetson_orin_nano",
                   "-o", "project_type=tvm_runtime", "-o", "device=cuda", *sshd.options(tmp_path / "board"),
                   "-o", f"remote_prefix=qemu-aarch64 -L {root}",
                   "-o", f"remote_python={root}/usr/bin/python3")
        assert "building small_float for TVM's runtime: nvidia/jetson-orin-nano (device cuda)" in made.stderr
        library = load(project / "model.tar").read("runtime_library/model.so")
        assert b"__global__" in library  # the kernels, as CUDA C
        built = cli("build", project, ok=False)
        assert built.returncode != 0
        host = "llvm -mcpu=cortex-a78ae -mtriple=aarch64-linux-gnu"
        assert f"library for nvidia/jetson-orin-nano (host {host})" in built.stderr
        assert ("device=cuda: TVM 0.27 compiles the model's CUDA kernels on the board as it loads the "
                f"library, and 127.0.0.1:{sshd.port} has no CUDA compiler for it") in built.stderr
        assert "pip install cuda-bindings" in built.stderr
