"""The single-request C fast path (host_driven/pipe_call.py) against a real device process.

Every outcome the C call hands back to the Python session is produced for real: the reply
(escaped bytes included), a reply behind a LOG, a device error, a timeout and retry while the
device is stopped, a pipe too full to take the request, and a device that died.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from runtime_fixtures.build import build_device
from utvm.host_driven import _framing_accel, pipe_call
from utvm.host_driven import protocol as P
from utvm.host_driven.device import DeviceClient
from utvm.host_driven.errors import DeviceError, TransportClosedError
from utvm.host_driven.framing import encode
from utvm.host_driven.session import ProtocolSession
from utvm.host_driven.transport import SubprocessTransport

INPUT = 0
N = 1000
LOG_TRIGGER = 124  # input[0] that makes the fixture's guard kernel log a line (fixture_model.c)


@pytest.fixture(scope="module")
def device_exe(tmp_path_factory):
    return build_device(tmp_path_factory.mktemp("pipe-call-device"))


@pytest.fixture
def session(device_exe):
    transport = SubprocessTransport([str(device_exe)])
    with ProtocolSession(transport, timeout=5.0) as session:
        if session.fast_path != "pipe call":
            pytest.skip("the framing accelerator did not load (no C compiler?): no pipe call to test")
        yield session


def _resume_later(pid: int, delay: float) -> threading.Thread:
    thread = threading.Thread(target=lambda: (time.sleep(delay), os.kill(pid, signal.SIGCONT)))
    thread.start()
    return thread


def test_escaped_requests_and_replies_round_trip(session):
    client = DeviceClient(session)
    payloads = (b"", b"\x7e", b"\x7d", b"\x7e\x7d" * 40, bytes(range(256)),
                bytes(range(255, -1, -1)) + b"\x7e" * 200)
    for payload in payloads:
        client.ping(payload)  # the device echoes it; ping() compares
    assert client.info().model_name == "fixture"


def test_a_log_before_the_reply_and_a_device_error_take_the_python_path(session, caplog):
    client = DeviceClient(session)
    data = np.zeros(N, dtype=np.int8)
    data[0] = LOG_TRIGGER
    client.write_tensor(INPUT, data.tobytes())
    with caplog.at_level("INFO", logger="utvm.device"):
        assert client.run() > 0
    assert "fixture_guard saw 124" in [record.getMessage() for record in caplog.records]
    with pytest.raises(DeviceError, match="kernel 9 does not exist"):
        client.run_kernel(9)
    client.ping(b"after")


def test_a_stopped_device_times_out_then_the_retry_is_answered(session):
    pid = session.transport.pid
    session.timeout = 0.2
    os.kill(pid, signal.SIGSTOP)
    resumer = _resume_later(pid, 0.5)
    try:
        DeviceClient(session).ping(b"late")
    finally:
        resumer.join()
    assert session.retransmissions > 0


def test_a_full_pipe_hands_the_rest_of_the_request_to_the_transport(session):
    pid = session.transport.pid
    write_fd, _ = session.transport.pipe_fds()
    os.kill(pid, signal.SIGSTOP)
    try:
        # Fill the device's input with FLAGs (empty frames, which it ignores) until it takes no more.
        filled = 0
        while True:
            try:
                filled += os.write(write_fd, b"\x7e" * 65536)
            except BlockingIOError:
                break
        assert filled > 0
        resumer = _resume_later(pid, 0.3)
        DeviceClient(session).ping(b"through a full pipe")
    finally:
        os.kill(pid, signal.SIGCONT)
        resumer.join()


PROXY = Path(__file__).with_name("fault_proxy.py")


@pytest.mark.parametrize("faults", [
    ["--corrupt", "from:400"],  # a reply fails its CRC in the C call: the session re-asks at once
    ["--drop", "from:401"],
    ["--corrupt", "to:300"],  # a request fails its CRC on the device: no reply, resent after the timeout
    ["--drop", "to:301"],
    ["--corrupt", "from:350", "--corrupt", "from:351", "--drop", "to:500", "--corrupt", "from:700"],
])
def test_spoilt_bytes_below_the_pipe_call_are_retried_never_taken(device_exe, faults):
    """A proxy process between the host's pipes and the device spoils bytes, so the C call itself
    meets them (a transport wrapper would hide the pipe and take the Python path)."""
    transport = SubprocessTransport([sys.executable, str(PROXY), *faults, "--", str(device_exe)])
    with ProtocolSession(transport, timeout=0.3, retries=5) as session:
        if session.fast_path != "pipe call":
            pytest.skip("the framing accelerator did not load (no C compiler?): no pipe call to test")
        client = DeviceClient(session)
        for i in range(40):
            client.ping(bytes([i, 0x7E, 0x7D]) * 7)  # ping() checks the echo
        assert session.retransmissions > 0, "a fault was injected but nothing was re-sent"
        assert client.info().model_name == "fixture"


@pytest.mark.timeout(60)
@pytest.mark.parametrize("lost", ["request", "reply"])
def test_a_lost_run_is_asked_about_not_waited_out(device_exe, lost):
    """The RUN request (or its reply) vanishes below the pipe call: after a short silence the host
    asks the device what it last answered, and resends; the run happens once, long before its
    600-second timeout."""
    drop = f"to:{P.PKT_REQUEST}:{P.CMD_RUN}" if lost == "request" else f"from:{P.PKT_REPLY_OK}:{P.CMD_RUN}"
    transport = SubprocessTransport([sys.executable, str(PROXY), "--drop-packet", drop, "--",
                                     str(device_exe)])
    with ProtocolSession(transport, timeout=5.0, max_packet=512) as session:
        if session.fast_path != "pipe call":
            pytest.skip("the framing accelerator did not load (no C compiler?): no pipe call to test")
        client = DeviceClient(session)
        data = np.zeros(N, dtype=np.int8)
        data[0] = LOG_TRIGGER  # each run of the guard kernel logs a line
        client.write_tensor(INPUT, data.tobytes())
        logs = []
        session.log_handler = lambda level, text: logs.append(text)
        assert client.run(timeout=600.0) > 0
        assert logs.count("fixture_guard saw 124") == 1, "the run was not made exactly once"
        assert session.retransmissions == 1
        lost_counts = (session.link.lost_requests, session.link.lost_replies)
        assert lost_counts == ((1, 0) if lost == "request" else (0, 1))


def test_a_dead_device_is_named_with_its_exit_status(session):
    session.transport._proc.kill()
    session.transport._proc.wait(5)
    with pytest.raises(TransportClosedError, match=r"killed by SIGKILL") as excinfo:
        DeviceClient(session).ping()
    assert "PING" in str(excinfo.value)
    assert not session.is_open


def test_requests_larger_than_a_packet_are_refused_before_sending(session):
    with pytest.raises(ValueError, match="does not fit the negotiated packet"):
        session.request(P.CMD_PING, bytes(session.max_packet))
    DeviceClient(session).ping()


def test_a_packet_too_large_for_the_frame_buffer_is_not_sent():
    lib = _framing_accel.load()
    if lib is None:
        pytest.skip("the framing accelerator did not load (no C compiler?): no pipe call to test")
    read_fd, write_fd = os.pipe()
    try:
        os.set_blocking(read_fd, False)
        call = pipe_call.PipeCall(lib, write_fd, read_fd, max_packet=64)
        assert call.call(bytes(65), 65, 100) == pipe_call.TOO_LARGE
        with pytest.raises(BlockingIOError):
            os.read(read_fd, 1)  # nothing was written
        # The largest packet goes out; over this loop its own frame comes back, not a reply.
        packet = P.HEADER.pack(P.PKT_REQUEST, P.CMD_PING, 1, 2) + b"\x7e" * 56
        assert call.call(packet, 64, 100) == pipe_call.OTHER
        assert call.received() == encode(packet)
    finally:
        os.close(read_fd)
        os.close(write_fd)
