"""The host owns its device: a POSIX device never outlives the process that drives it, and a signal
to that process alone ends a session promptly, however long the device is busy.

The first tests run a real host (a Python process driving the runtime's POSIX device through
SubprocessTransport, as `utvm run` does), keep the device busy with the fixture model's slow
kernel (tests/runtime_fixtures), then signal or kill the host and watch both processes. The last
ones do the same to the `utvm run` command itself, on a host project, a bare-metal project under
QEMU, an Arduino project under simavr and a Jetson project under qemu-aarch64, signalling the process
alone and its whole group: it must exit with one line and leave no device, emulator, simulator or
project server behind.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import require_tool
from host_driven_helpers import CLI, run_cli
from runtime_fixtures.build import build_device
from test_baremetal_template import _fixture_metadata, _write_mlf

# The fixture's guard kernel (2) keeps the device busy for input[1] x 10 ms when input[0] is 123.
GUARD, BUSY = 2, 123
# How long a gone host's device, or a signalled host, may take to exit (a loaded CI machine is
# slow to schedule them): far below the device's busy time (a TIME of 20 x 2.55 s), so a process
# that waits out that work fails the test.
EXIT_WITHIN_S = 20.0

HOST = textwrap.dedent("""
    import signal, sys
    from utvm.host_driven.device import DeviceClient
    from utvm.host_driven.session import ProtocolSession
    from utvm.host_driven.transport import SubprocessTransport

    device, mode = sys.argv[1], sys.argv[2]
    with ProtocolSession(SubprocessTransport([device]), timeout=600.0) as session:
        client = DeviceClient(session)
        data = bytearray(1000)
        data[0], data[1] = {busy}, 255
        client.write_tensor(0, bytes(data))
        print(session.transport.pid, flush=True)
        if mode == "closed_on_signals":
            from utvm.host_driven.interrupts import closed_on_signals
            with closed_on_signals(session, (signal.SIGTERM,)):
                client.time(kernel={guard}, number=20, timeout=600.0)
        else:
            client.time(kernel={guard}, number=20, timeout=600.0)
""").format(busy=BUSY, guard=GUARD)


@pytest.fixture(scope="module")
def device_exe(tmp_path_factory):
    return build_device(tmp_path_factory.mktemp("ownership-device"))


def _state(pid: int) -> str:
    """The process's state letter from /proc ("" once it is gone or a zombie nobody reaped)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return ""
    return "" if state in "ZX" else state


def _wait_gone(pid: int, within: float) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if not _state(pid):
            return True
        time.sleep(0.05)
    return False


def _start_host(device_exe: Path, mode: str = "plain"):
    """(host process, device pid) once the device is busy with the host's TIME request."""
    host = subprocess.Popen([sys.executable, "-c", HOST, str(device_exe), mode], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    device_pid = int(host.stdout.readline())
    deadline = time.monotonic() + EXIT_WITHIN_S
    while _state(device_pid) != "R":  # running: the slow kernel spins
        if time.monotonic() > deadline or host.poll() is not None:
            host.kill()
            pytest.fail(f"the device never got busy; host stderr: {host.communicate()[1]}")
        time.sleep(0.02)
    time.sleep(0.2)  # the host is now waiting for the reply
    return host, device_pid


def _cleanup(host, device_pid: int) -> None:
    if host.poll() is None:
        host.kill()
    host.communicate()
    if _state(device_pid):
        os.kill(device_pid, signal.SIGKILL)


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGTERM])
def test_a_busy_device_exits_when_its_host_dies(device_exe, how):
    host, device_pid = _start_host(device_exe)
    try:
        host.send_signal(how)  # no handler: the host dies on the spot, with the device mid-TIME
        host.wait(EXIT_WITHIN_S)
        assert _wait_gone(device_pid, EXIT_WITHIN_S), (
            f"the device (pid {device_pid}) is still {_state(device_pid)} after its host died")
    finally:
        _cleanup(host, device_pid)


def test_sigint_to_the_host_alone_ends_the_session_promptly(device_exe):
    host, device_pid = _start_host(device_exe)
    try:
        os.kill(host.pid, signal.SIGINT)  # the process alone, as a supervisor does: not its group
        try:
            host.wait(EXIT_WITHIN_S)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the host did not act on SIGINT while it waited for the device (host state "
                        f"{_state(host.pid)!r}, device {_state(device_pid)!r})")
        assert "KeyboardInterrupt" in host.communicate()[1]
        assert _wait_gone(device_pid, EXIT_WITHIN_S), "the device outlived the interrupted session"
    finally:
        _cleanup(host, device_pid)


def test_closed_on_signals_closes_the_session_and_names_the_signal(device_exe):
    host, device_pid = _start_host(device_exe, "closed_on_signals")
    try:
        os.kill(host.pid, signal.SIGTERM)
        try:
            host.wait(EXIT_WITHIN_S)
        except subprocess.TimeoutExpired:
            pytest.fail("the host did not act on SIGTERM while it waited for the device")
        stderr = host.communicate()[1]
        assert "SessionInterrupted" in stderr and "SIGTERM" in stderr
        assert _wait_gone(device_pid, EXIT_WITHIN_S), "the device outlived the closed session"
    finally:
        _cleanup(host, device_pid)


# ---- the `utvm run` command -------------------------------------------------------------------

# (template, options) of the projects `utvm run` drives here: the POSIX device over pipes, and the
# bare-metal firmware under QEMU behind the template's server.
CLI_PROJECTS = {"host": (), "baremetal": ("-o", "board=mps2_an385")}
CLI_SIGNALS = [signal.SIGINT, signal.SIGTERM]


@pytest.fixture(scope="module")
def cli_project(tmp_path_factory):
    """project(template): the fixture model's project for that template, made and built with the
    CLI once; and the input that keeps its device busy (2.55 s a run)."""
    workdir = tmp_path_factory.mktemp("cli-ownership")
    archive = _write_mlf(workdir / "fixture.tar", _fixture_metadata())
    busy = np.zeros(1000, np.int8)
    busy[0], busy[1] = BUSY, -1  # the guard reads input[1] as 255: 255 x 10 ms
    np.save(workdir / "busy.npy", busy)
    made = {}

    def project(template: str) -> Path:
        if template == "baremetal":
            for tool in ("arm-none-eabi-gcc", "make", "qemu-system-arm"):
                require_tool(tool)
        if template not in made:
            directory = workdir / template
            for step in (("create-project", template, archive, directory, *CLI_PROJECTS[template]),
                         ("build", directory)):
                result = run_cli(*step)
                assert result.returncode == 0, result.stderr
            made[template] = directory
        return made[template]

    project.busy_input = workdir / "busy.npy"
    return project


def _processes_of(directory: Path) -> dict:
    """{pid: command line} of the live processes whose command line names a file in directory
    (the project's server, its device program, QEMU with its firmware)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        if any(str(directory) in arg for arg in argv) and _state(int(entry.name)):
            found[int(entry.name)] = " ".join(argv)
    return found


@pytest.mark.parametrize("target", ["process", "group"])
@pytest.mark.parametrize("signum", CLI_SIGNALS, ids=lambda s: signal.Signals(s).name)
@pytest.mark.parametrize("template", sorted(CLI_PROJECTS))
def test_utvm_run_signalled_closes_its_session_and_leaves_no_device(cli_project, template, signum, target):
    project = cli_project(template)
    busy = ["--input", f"input={cli_project.busy_input}", "--number", "20"]
    _signal_utvm_run(project, busy, signum, target)


# The simulators of the newer templates: simavr behind the Arduino template's UART-to-pty bridge, and
# qemu-aarch64 running the Jetson template's device program. A small model benchmarked many times
# keeps them busy; SIGTERM goes to the process alone and SIGINT to the group (the other two pairs
# take the same path in utvm, shown above).
SIMULATED = {
    "arduino": (("arduino-builder", "avr-gcc", "simavr", "cc"), ("-o", "board=arduino_mega2560")),
    "jetson": (("aarch64-linux-gnu-gcc", "make", "qemu-aarch64"), ("-o", "board=qemu_aarch64")),
}


@pytest.mark.parametrize("signum,target", [(signal.SIGTERM, "process"), (signal.SIGINT, "group")],
                         ids=["SIGTERM-process", "SIGINT-group"])
@pytest.mark.parametrize("template", sorted(SIMULATED))
def test_utvm_run_signalled_leaves_no_simulator(tmp_path_factory, template, signum, target):
    from host_driven_helpers import small_tflite_archive

    tools, options = SIMULATED[template]
    for tool in tools:
        require_tool(tool)
    if template == "arduino" and not os.path.isfile("/usr/include/simavr/sim_avr.h"):
        pytest.skip("libsimavr-dev is not installed (run `make test` as root to install it)")
    archive = small_tflite_archive(tmp_path_factory)
    project = tmp_path_factory.mktemp(f"signal-{template}") / "p"
    for step in (("create-project", template, archive, project, *options), ("build", project)):
        result = run_cli(*step, timeout=900)
        assert result.returncode == 0, result.stderr
    _signal_utvm_run(project, ["--number", "1000000"], signum, target)


def _signal_utvm_run(project: Path, run_args, signum: int, target: str) -> None:
    """Start `utvm run PROJECT --benchmark` in its own group, signal it (or its group) while the
    device is busy, and check it exits with 128 + signal, one line, and nothing of the project left."""
    utvm = subprocess.Popen(
        [*CLI, "run", str(project), *run_args, "--benchmark", "--timeout", "600", "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True)  # its own group, so killpg reaches it and what shares its group
    try:
        seen = []
        for line in utvm.stderr:  # the human lines go to stderr under --json
            seen.append(line)
            if line.startswith("device:"):
                break
        else:
            pytest.fail("utvm run never reached the device:\n" + "".join(seen))
        # The session is open and the device now runs the busy input.
        helpers = {pid: argv for pid, argv in _processes_of(project).items() if pid != utvm.pid}
        assert helpers, "no device or server process was found for the project"
        time.sleep(0.5)
        if target == "group":
            os.killpg(utvm.pid, signum)
        else:
            os.kill(utvm.pid, signum)
        try:
            _, stderr = utvm.communicate(timeout=EXIT_WITHIN_S)
        except subprocess.TimeoutExpired:
            pytest.fail(f"utvm run did not act on {signal.Signals(signum).name} within {EXIT_WITHIN_S} s")
        name = signal.Signals(signum).name
        assert utvm.returncode == 128 + signum, stderr
        assert f"error: stopped by {name}" in stderr and "Traceback" not in stderr, stderr
        deadline = time.monotonic() + EXIT_WITHIN_S
        while _processes_of(project) and time.monotonic() < deadline:
            time.sleep(0.05)
        left = _processes_of(project)
        assert not left, f"left behind after {name} to utvm's {target}: {left}"
    finally:
        if utvm.poll() is None:
            os.killpg(utvm.pid, signal.SIGKILL)
            utvm.communicate()
        for pid in _processes_of(project):
            os.kill(pid, signal.SIGKILL)
