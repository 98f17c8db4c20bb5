"""Transports to a device: pyserial URLs (loop://, socket://), TCP, the Project API relay, and the
direct-transport extension, each carrying the real runtime's protocol where a device is involved.
"""

from __future__ import annotations

import shutil
import socket
import time

import numpy as np
import pytest
from host_driven_helpers import built_project, small_tflite_archive, socket_bridge
from project_api_peers import make_mlf
from runtime_fixtures.build import FAST_LINK_DEFINES, build_device
from utvm.host_driven.device import DeviceClient
from utvm.host_driven.direct import (
    DIRECT_EXTENSION,
    ServerOwnedTransport,
    open_project_transport,
    transport_from_description,
)
from utvm.host_driven.errors import IoTimeoutError, TransportClosedError
from utvm.host_driven.relay_transport import RelayTransport
from utvm.host_driven.serial_transport import SerialTransport
from utvm.host_driven.session import ProtocolSession
from utvm.host_driven.tcp_transport import TcpTransport
from utvm.host_driven.transport import SubprocessTransport
from utvm.project_api.errors import UserError
from utvm.project_api.project import GeneratedProject, TemplateProject
from utvm.templates import template_path

BIG_TENSOR = 4  # the fixture model's untouched uint8 tensor, 65536 bytes
PATTERN = bytes(range(256)) * 256


@pytest.fixture(scope="module")
def fixture_device(tmp_path_factory):
    """The runtime + POSIX port + the runtime tests' hand-written model, built for a fast link."""
    return build_device(tmp_path_factory.mktemp("fixture-device"), defines=FAST_LINK_DEFINES)


def _exercise_device(transport) -> None:
    """A handshake, device info, a 64 KiB round trip and a run, over ``transport``."""
    with ProtocolSession(transport, timeout=5.0) as session:
        device = DeviceClient(session)
        info = device.info()
        assert info.model_name == "fixture"
        device.write_tensor(BIG_TENSOR, PATTERN)
        assert device.read_tensor(BIG_TENSOR, len(PATTERN)) == PATTERN
        device.write_tensor(0, np.full(1000, 3, dtype=np.int8).tobytes())
        assert device.run() > 0


def test_loop_url_round_trip_and_deadlines():
    with SerialTransport("loop://") as transport:
        transport.write(b"hello, device", 1.0)
        received = b""
        while len(received) < 13:
            received += transport.read(64, 1.0)
        assert received == b"hello, device"
        start = time.monotonic()
        with pytest.raises(IoTimeoutError, match="loop://"):
            transport.read(10, 0.2)
        assert time.monotonic() - start < 5.0
    with pytest.raises(TransportClosedError):
        transport.read(1, 0.1)


def test_read_into_fills_a_buffer_with_deadlines_and_end_of_file():
    """Bulk reads go through read_into: the pipe's own (readv) and the base class's (over read)."""
    with SerialTransport("loop://") as loop:
        loop.write(b"abcdef", 1.0)
        buffer = bytearray(4)
        got = loop.read_into(memoryview(buffer), 1.0)
        assert buffer[:got] == b"abcdef"[:got] and 1 <= got <= 4
    cat = shutil.which("cat")
    if cat is None:
        pytest.skip("cat not installed: needed as a pipe peer")
    with SubprocessTransport([cat]) as pipe:
        pipe.write(b"0123456789", 1.0)
        buffer = bytearray(16)
        got = 0
        while got < 10:
            got += pipe.read_into(memoryview(buffer)[got:], 1.0)
        assert buffer[:10] == b"0123456789"
        with pytest.raises(IoTimeoutError, match="within 0.2 s"):
            pipe.read_into(memoryview(buffer), 0.2)
        pipe._proc.stdin.close()  # cat sees end of file and exits
        with pytest.raises(TransportClosedError, match="closed its output.*exited with code 0"):
            pipe.read_into(memoryview(buffer), 5.0)


def test_bad_serial_url_is_a_clear_error():
    with pytest.raises(TransportClosedError, match="cannot open serial port"):
        SerialTransport("socket://127.0.0.1:1")


def test_socket_url_carries_the_protocol(fixture_device):
    with socket_bridge([str(fixture_device)]) as port:
        _exercise_device(SerialTransport(f"socket://127.0.0.1:{port}"))


def test_tcp_carries_the_protocol(fixture_device):
    with socket_bridge([str(fixture_device)]) as port:
        _exercise_device(TcpTransport("127.0.0.1", port))


def test_tcp_peer_closing_is_transport_closed():
    server = socket.create_server(("127.0.0.1", 0))
    transport = TcpTransport("127.0.0.1", server.getsockname()[1])
    conn, _ = server.accept()
    conn.close()
    server.close()
    with pytest.raises(TransportClosedError, match="closed the connection"):
        transport.read(10, 5.0)
    transport.close()


def test_tcp_connect_refused_is_a_clear_error():
    with pytest.raises(TransportClosedError, match="cannot connect"):
        TcpTransport("127.0.0.1", 1, connect_timeout=2.0)


def test_relay_through_the_example_templates_loopback(tmp_path):
    mlf = make_mlf(tmp_path / "any.tar")
    with TemplateProject.from_directory(template_path("example"), echo=False) as template:
        project = template.generate_project(mlf, tmp_path / "proj", {"app_name": "demo"})
    with project:
        assert not project.has_extension(DIRECT_EXTENSION)
        transport = open_project_transport(project, mode="auto")  # no extension: the relay
        assert isinstance(transport, RelayTransport)
        with transport:
            transport.write(PATTERN, 5.0)
            received = b""
            while len(received) < len(PATTERN):
                received += transport.read(len(PATTERN), 5.0)
            assert received == PATTERN
            with pytest.raises(IoTimeoutError):
                transport.read(1, 0.1)
        with pytest.raises(UserError, match="does not offer a direct transport"):
            open_project_transport(project, mode="direct")


def test_unknown_direct_description_is_refused():
    with pytest.raises(UserError, match="does not know"):
        transport_from_description({"kind": "carrier-pigeon"})


def test_direct_description_kinds(fixture_device):
    with socket_bridge([str(fixture_device)]) as port:
        _exercise_device(transport_from_description({"kind": "serial", "url": f"socket://127.0.0.1:{port}"}))
    with socket_bridge([str(fixture_device)]) as port:
        _exercise_device(transport_from_description({"kind": "tcp", "host": "127.0.0.1", "port": port}))
    _exercise_device(transport_from_description({"kind": "subprocess", "argv": [str(fixture_device)]}))


def test_host_project_offers_direct_and_relay(tmp_path_factory):
    project_dir = built_project(tmp_path_factory, small_tflite_archive(tmp_path_factory))
    with GeneratedProject.from_directory(project_dir, echo=False) as project:
        assert project.has_extension(DIRECT_EXTENSION)
        for mode, kind in (
            ("auto", SubprocessTransport),
            ("direct", SubprocessTransport),
            ("relay", RelayTransport),
        ):
            transport = open_project_transport(project, mode=mode)
            assert isinstance(transport, kind)
            assert not isinstance(transport, ServerOwnedTransport)
            with ProtocolSession(transport, timeout=5.0) as session:
                assert DeviceClient(session).info().model_name == "small_int8"


def test_relay_reports_device_exit(tmp_path_factory, tmp_path):
    """A device process that dies behind the relay is TransportClosedError with its exit code and
    stderr, not a hang."""
    project_dir = tmp_path / "proj"
    shutil.copytree(built_project(tmp_path_factory, small_tflite_archive(tmp_path_factory)), project_dir)
    program = project_dir / "build" / "model_device"
    program.write_text("#!/bin/sh\necho 'device: out of cheese' >&2\nexit 3\n")
    program.chmod(0o755)
    with GeneratedProject.from_directory(project_dir, echo=False) as project:
        with RelayTransport(project) as transport:
            start = time.monotonic()
            with pytest.raises(TransportClosedError, match="exited with code 3") as caught:
                transport.read(10, 10.0)
            assert "out of cheese" in str(caught.value)
            assert time.monotonic() - start < 10.0
