"""The host owns its device: a POSIX device never outlives the process that drives it, and a signal
to that process alone ends a session promptly, however long the device is busy.

Each test runs a real host (a Python process driving the runtime's POSIX device through
SubprocessTransport, as `utvm run` does), keeps the device busy with the fixture model's slow
kernel (tests/runtime_fixtures), then signals or kills the host and watches both processes.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from runtime_fixtures.build import build_device

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
