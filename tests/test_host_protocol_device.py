"""The host-driven protocol end to end: Python host <-> the C runtime as a real POSIX process.

The device is templates/runtime + its POSIX port + the hand-written fixture model
(tests/runtime_fixtures/fixture_model.c), built with gcc and driven over SubprocessTransport.
"""

from __future__ import annotations

import logging
import os
import struct
import zlib

import numpy as np
import pytest
from runtime_fixtures.build import FAST_LINK_DEFINES, build_device
from utvm.host_driven import protocol as P
from utvm.host_driven.device import DeviceClient
from utvm.host_driven.errors import (
    DeviceError,
    DeviceRebootedError,
    IoTimeoutError,
    ProtocolError,
    SessionClosedError,
    TransportClosedError,
)
from utvm.host_driven.fast_paths import FramePath
from utvm.host_driven.framing import FLAG, FrameDecoder, encode
from utvm.host_driven.session import ProtocolSession
from utvm.host_driven.transport import SubprocessTransport, Transport

# The fixture model's tensors and kernels (see fixture_model.c).
INPUT, BIAS, SUM, OUTPUT, BIG = range(5)
N = 1000
BIG_BYTES = 65536
ARENA_BYTES = 3024 + BIG_BYTES
ADD, RELU, GUARD = range(3)
# input[0] values that make fixture_guard misbehave (BUSY: for input[1] x 10 ms).
FAIL, ABORT, REBOOT, LOG, BUSY = 127, 126, 125, 124, 123


@pytest.fixture(scope="module")
def device_exe(tmp_path_factory):
    # A window above 1: pipes buffer whole packets, so pipelining is exercised.
    return build_device(tmp_path_factory.mktemp("device"), defines=["UTVM_RX_WINDOW=4"])


class PassThrough(Transport):
    """The same pipe, seen through a wrapper: no pipe_fds(), so sessions take the Python path."""

    def __init__(self, inner: Transport):
        self.inner = inner

    def write(self, data, timeout):
        self.inner.write(data, timeout)

    def read(self, n, timeout):
        return self.inner.read(n, timeout)

    def close(self):
        self.inner.close()


@pytest.fixture(params=["pipe call", "python"])
def open_session(device_exe, request):
    """open_session(**session_kwargs) -> an open ProtocolSession on a fresh device process, whose
    single requests go through the C pipe call or, seen through a wrapper, the Python path."""
    sessions = []

    def make(transport_wrapper=None, **kwargs):
        transport = SubprocessTransport([str(device_exe)])
        if request.param == "python":
            transport = PassThrough(transport)
        if transport_wrapper is not None:
            transport = transport_wrapper(transport)
        kwargs.setdefault("timeout", 5.0)
        session = ProtocolSession(transport, **kwargs)
        sessions.append(session)
        session.open()
        if transport_wrapper is None:
            assert session.fast_path == (None if request.param == "python" else "pipe call")
        return session

    yield make
    for session in sessions:
        session.close()


@pytest.fixture
def client(open_session):
    # A small packet, so every tensor transfer takes many chunks.
    return DeviceClient(open_session(max_packet=128))


def _input_with(first: int, seed: int = 0) -> np.ndarray:
    data = np.random.default_rng(seed).integers(-128, 128, N, dtype=np.int8)
    data[0] = first
    return data


def _busy_input(tens_of_ms: int) -> np.ndarray:
    data = _input_with(BUSY)
    data.view(np.uint8)[1] = tens_of_ms
    return data


def _expected(inp: np.ndarray, bias: np.ndarray):
    total = np.clip(inp.astype(np.int16) + bias.astype(np.int16), -128, 127).astype(np.int8)
    return total, np.maximum(total, 0).astype(np.int8)


def _read_int8(client: DeviceClient, tensor: int) -> np.ndarray:
    return np.frombuffer(client.read_tensor(tensor, N), dtype=np.int8)


def _expect_still_serving(client: DeviceClient) -> None:
    client.ping(b"still there")
    assert client.info().model_name == "fixture"


# -- handshake and queries -------------------------------------------------------------------------


def test_handshake_negotiates_the_smaller_packet(open_session):
    small = open_session(max_packet=128)
    assert small.max_packet == 128 and small.device_max_packet == 512
    assert small.window == 4 and small.session_id != 0
    large = open_session(max_packet=P.MAX_PACKET, window=2)
    assert large.max_packet == 512 and large.window == 2


def test_info_describes_runtime_model_and_board(client):
    info = client.info()
    assert info.runtime_version == "0.1.0"
    assert info.protocol_version == P.PROTOCOL_VERSION
    assert (info.model_name, info.model_hash, info.board) == ("fixture", "0123456789abcdef" * 2, "host")
    assert info.arena_bytes == ARENA_BYTES and info.workspace_bytes == 1008
    assert info.max_packet == 512 and info.rx_window == 4
    assert info.timer_hz == 1_000_000_000 == client.timer_hz
    assert (info.num_tensors, info.num_kernels) == (5, 3)
    assert info.inputs == (INPUT,) and info.outputs == (OUTPUT,)


def test_tensor_and_kernel_tables(client):
    bias = client.tensor_info(BIAS)
    assert (bias.name, bias.storage, bias.dtype, bias.shape) == ("bias", "const", "int8", (N,))
    assert bias.nbytes == N
    big = client.tensor_info(BIG)
    assert (big.storage, big.dtype, big.offset, big.nbytes) == ("arena", "uint8", 3024, BIG_BYTES)
    kernel = client.kernel_info(ADD)
    assert (kernel.name, kernel.args) == ("fixture_add", (INPUT, BIAS, SUM))
    assert client.kernel_info(GUARD).name == "fixture_guard"


@pytest.fixture(params=["pipe call", "python", "engine only"])
def smallest(device_exe, request):
    """A DeviceClient at the protocol's smallest packet (64 bytes) on each of the session's paths:
    the C pipe call (and accelerated transfer batches), the Python round trip (batches too), and
    the engine's own per-request loop for everything."""
    transport = SubprocessTransport([str(device_exe)])
    if request.param != "pipe call":
        transport = PassThrough(transport)
    with ProtocolSession(transport, timeout=5.0, max_packet=P.MIN_PACKET) as session:
        if request.param == "engine only":
            session._path = FramePath(session)  # no fast path: every request through _await
        assert session.max_packet == P.MIN_PACKET
        yield DeviceClient(session)


def test_info_and_the_model_tables_arrive_whole_at_the_smallest_packet(smallest):
    info = smallest.info()  # 90 bytes: more than one 64-byte packet holds
    assert (info.model_name, info.model_hash, info.board) == ("fixture", "0123456789abcdef" * 2, "host")
    assert info.inputs == (INPUT,) and info.outputs == (OUTPUT,) and info.num_tensors == 5
    assert smallest.tensor_info(BIG).name == "big" and smallest.tensor_info(BIG).nbytes == BIG_BYTES
    assert smallest.kernel_info(ADD).args == (INPUT, BIAS, SUM)


def test_every_command_works_at_the_smallest_packet(smallest):
    smallest.ping(bytes(range(56)))  # the largest payload a 64-byte packet holds
    data = os.urandom(3000) + b"\x7e\x7d" * 100
    smallest.write_tensor(BIG, data)  # 44 data bytes per WRITE
    assert smallest.read_tensor(BIG, len(data)) == data  # 56 per READ
    inp = _input_with(5)
    smallest.write_tensor(INPUT, inp.tobytes())
    assert smallest.run() > 0
    _, expected_out = _expected(inp, _read_int8(smallest, BIAS))
    np.testing.assert_array_equal(_read_int8(smallest, OUTPUT), expected_out)
    assert len(smallest.time(kernel=RELU, repeat=20)) == 20  # 7 tick counts per packet
    with pytest.raises(DeviceError, match="tensor 0 \\(input\\) read of 2000 bytes") as excinfo:
        smallest.read_tensor(INPUT, 2000)  # the message is cut to the packet, the code is whole
    assert _device_error(excinfo).code == P.ERR_OUT_OF_BOUNDS
    _expect_still_serving(smallest)


def test_session_survives_a_second_handshake(open_session):
    session = open_session(max_packet=256)
    client = DeviceClient(session)
    first = session.session_id
    session.open()
    assert session.session_id != first
    client.ping(b"again")


# -- transfers -------------------------------------------------------------------------------------


def test_chunked_write_and_read_round_trip_with_progress(client):
    data = os.urandom(BIG_BYTES - 5) + b"\x7e\x7d\x7e\x7d\x7e"  # escapes at the very end too
    seen = []
    client.write_tensor(BIG, data, progress=lambda done, total: seen.append((done, total)))
    assert seen[-1] == (len(data), len(data))
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)
    assert len(seen) == -(-len(data) // (128 - 20))  # one progress call per chunk
    assert client.read_tensor(BIG, len(data)) == data
    # A partial read from offset 0 and the untouched tail are exact too.
    assert client.read_tensor(BIG, 300) == data[:300]


def test_read_into_a_callers_buffer(client):
    data = np.random.default_rng(7).integers(-128, 128, BIG_BYTES, dtype=np.int8)
    client.write_tensor(BIG, data)
    array = np.zeros(BIG_BYTES, dtype=np.int8)
    assert client.read_tensor(BIG, BIG_BYTES, out=array) is array
    np.testing.assert_array_equal(array, data)
    # Any writable contiguous buffer of the right size, e.g. a 2-D array of wider elements.
    wide = np.zeros((16, BIG_BYTES // 64), dtype=np.int32)
    client.read_tensor(BIG, BIG_BYTES, out=wide)
    assert wide.tobytes() == data.tobytes()
    buffer = bytearray(300)
    assert client.read_tensor(BIG, 300, out=buffer) == data[:300].tobytes()


@pytest.mark.parametrize("out, problem", [
    (bytearray(10), "of 11 bytes, got 10 bytes"),
    (bytes(11), "read-only"),
    (np.zeros((11, 2), dtype=np.int8)[:, 0], "not contiguous"),
])
def test_read_into_refuses_an_unfit_buffer(client, out, problem):
    with pytest.raises(ValueError, match=problem):
        client.read_tensor(BIG, 11, out=out)
    client.ping()  # nothing was sent


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_chunked_transfers_survive_lost_and_corrupted_bytes(open_session, seed):
    """Drops and corruption anywhere in a many-batch transfer, both ways: the bulk path hands the
    rest of a batch to the per-request retries, and the data still arrives exact."""
    from utvm.host_driven.fault_injection import FaultInjectingTransport, seeded_schedule

    injector = []

    def wrap(transport):
        injector.append(FaultInjectingTransport(transport, seed=seed))
        return injector[0]

    client = DeviceClient(open_session(transport_wrapper=wrap, max_packet=512, timeout=0.2, retries=6))
    data = os.urandom(BIG_BYTES)
    injector[0].add(seeded_schedule(seed, count=8, span=2 * BIG_BYTES, max_length=6), relative=True)
    client.write_tensor(BIG, data)
    assert client.read_tensor(BIG, BIG_BYTES) == data
    assert injector[0].injected, injector[0].describe()
    assert client.session.retransmissions > 0, "faults were injected but nothing was re-sent"


def test_largest_packets_move_a_megabyte(tmp_path):
    exe = build_device(tmp_path, defines=[*FAST_LINK_DEFINES, "FIXTURE_BIG_BYTES=1048576"])
    with ProtocolSession(SubprocessTransport([str(exe)]), timeout=10) as session:
        assert session.max_packet == P.MAX_PACKET and session.window == 32
        client = DeviceClient(session)
        data = os.urandom(1 << 20)
        client.write_tensor(BIG, data)
        assert client.read_tensor(BIG, len(data)) == data


def test_clang_build_serves_the_same(tmp_path):
    exe = build_device(tmp_path, cc="clang", defines=["UTVM_CRC_TABLE=1"])
    with ProtocolSession(SubprocessTransport([str(exe)]), max_packet=200) as session:
        client = DeviceClient(session)
        inp = _input_with(2)
        client.write_tensor(INPUT, inp.tobytes())
        client.run()
        _, expected_out = _expected(inp, _read_int8(client, BIAS))
        np.testing.assert_array_equal(_read_int8(client, OUTPUT), expected_out)


# -- execution -------------------------------------------------------------------------------------


def test_run_computes_outputs_and_intermediates(client):
    inp = _input_with(5)
    client.write_tensor(INPUT, inp.tobytes())
    ticks = client.run()
    assert ticks > 0
    bias = _read_int8(client, BIAS)  # constants are readable
    expected_sum, expected_out = _expected(inp, bias)
    np.testing.assert_array_equal(_read_int8(client, SUM), expected_sum)
    np.testing.assert_array_equal(_read_int8(client, OUTPUT), expected_out)
    # fixture_add took its scratch buffer from the workspace.
    assert client.info().workspace_peak_bytes == N


def test_run_kernel_runs_one_layer_at_a_time(client):
    inp = _input_with(9, seed=3)
    client.write_tensor(INPUT, inp.tobytes())
    client.run_kernel(ADD)
    expected_sum, expected_out = _expected(inp, _read_int8(client, BIAS))
    np.testing.assert_array_equal(_read_int8(client, SUM), expected_sum)
    assert not _read_int8(client, OUTPUT).any()  # relu has not run yet
    client.run_kernel(RELU)
    np.testing.assert_array_equal(_read_int8(client, OUTPUT), expected_out)


def test_time_returns_one_tick_count_per_repeat(client):
    client.write_tensor(INPUT, _input_with(1).tobytes())
    ticks = client.time(number=3, repeat=4)
    assert len(ticks) == 4 and all(t > 0 for t in ticks)
    assert len(client.time(kernel=RELU, number=1, repeat=2)) == 2
    # More repeats than one 128-byte packet holds (15): split over several TIME requests.
    assert len(client.time(kernel=ADD, repeat=40)) == 40


def test_time_of_absurdly_many_calls_is_refused_at_once(client):
    # Four billion runs would keep the device busy for hours, deaf to everything.
    refused = rf"TIME of 4294967295 x 1 calls exceeds {P.TIME_MAX_CALLS}"
    with pytest.raises(DeviceError, match=refused) as excinfo:
        client.session.request(P.CMD_TIME, P.TIME_ARGS.pack(P.TIME_WHOLE_MODEL, 0, 0xFFFFFFFF, 1))
    assert _device_error(excinfo).code == P.ERR_TOO_LARGE
    # The bound is on number x repeat, not on each alone.
    with pytest.raises(DeviceError, match=r"TIME of 2097152 x 10 calls exceeds"):
        client.session.request(P.CMD_TIME, P.TIME_ARGS.pack(ADD, 0, 1 << 21, 10))
    _expect_still_serving(client)


@pytest.mark.parametrize("number, repeat", [(0xFFFFFFFF, 1), (1 << 32, 1), (4096, 8192)])
def test_client_time_checks_the_same_bound_before_sending(client, number, repeat):
    with pytest.raises(ValueError, match=rf"at most {P.TIME_MAX_CALLS} calls"):
        client.time(number=number, repeat=repeat)
    client.ping()  # nothing was sent


def test_a_long_time_stops_at_the_devices_time_limit(tmp_path):
    exe = build_device(tmp_path, defines=["UTVM_TIME_LIMIT_MS=300"])
    with ProtocolSession(SubprocessTransport([str(exe)]), timeout=5.0, retries=0) as session:
        client = DeviceClient(session)
        client.write_tensor(INPUT, _busy_input(1).tobytes())  # each guard call: 10 ms
        # 10000 calls would take 100 s: the device stops once its 300 ms are up, and says so.
        with pytest.raises(DeviceError, match=r"TIME of 10000 x 1 calls stopped after \d+: "
                                              r"UTVM_TIME_LIMIT_MS is 300") as excinfo:
            client.time(kernel=GUARD, number=10000)
        assert _device_error(excinfo).code == P.ERR_TOO_LARGE
        assert len(client.time(kernel=GUARD, number=20)) == 1  # within the limit
        client.write_tensor(INPUT, _busy_input(50).tobytes())
        assert client.run() > 0  # one call is never cut short, whatever it takes


# -- errors: a clear reply, and the device keeps serving ---------------------------------------------


def _device_error(excinfo) -> DeviceError:
    assert isinstance(excinfo.value, DeviceError)
    return excinfo.value


def test_unknown_command(client):
    with pytest.raises(DeviceError) as excinfo:
        client.session.request(0x55)
    assert _device_error(excinfo).code == P.ERR_UNKNOWN_COMMAND
    assert "unknown command 85" in str(excinfo.value)
    _expect_still_serving(client)


def test_bad_tensor_id(client):
    with pytest.raises(DeviceError, match=r"tensor 9 does not exist; the model has 5 tensors") as excinfo:
        client.read_tensor(9, 10)
    assert _device_error(excinfo).code == P.ERR_BAD_TENSOR
    _expect_still_serving(client)


def test_out_of_bounds_read(client):
    with pytest.raises(DeviceError, match=r"tensor 0 \(input\) read of 2000 bytes at offset 0 exceeds its "
                                          r"1000 bytes") as excinfo:
        client.read_tensor(INPUT, 2000)
    assert _device_error(excinfo).code == P.ERR_OUT_OF_BOUNDS
    # A chunk past the end (hand-made, so only the device's own check stands in the way).
    with pytest.raises(DeviceError, match=r"read of 10 bytes at offset 995 exceeds its 1000 bytes"):
        client.session.request(P.CMD_READ, P.READ_ARGS.pack(INPUT, 0, 995, 10, 10))
    with pytest.raises(DeviceError, match=r"at offset 4294967295"):
        client.session.request(P.CMD_READ, P.READ_ARGS.pack(INPUT, 0, 0xFFFFFFFF, 2, 2))
    _expect_still_serving(client)


def test_constant_write_is_refused(client):
    with pytest.raises(DeviceError, match=r"tensor 1 \(bias\) is a constant") as excinfo:
        client.write_tensor(BIAS, bytes(10))
    assert _device_error(excinfo).code == P.ERR_READ_ONLY
    _expect_still_serving(client)


def test_oversized_transfer_is_refused_before_writing(client):
    pattern = bytes(range(256)) * (BIG_BYTES // 256)
    client.write_tensor(BIG, pattern)
    with pytest.raises(DeviceError) as excinfo:
        client.write_tensor(BIG, bytes(100_000))
    message = str(excinfo.value)
    assert "write of 100000 bytes at offset 0 exceeds its 65536 bytes" in message
    assert f"the whole arena of {ARENA_BYTES}" in message
    assert client.read_tensor(BIG, BIG_BYTES) == pattern  # nothing was written
    _expect_still_serving(client)


def test_bad_kernel_and_bad_arguments(client):
    with pytest.raises(DeviceError, match=r"kernel 7 does not exist; the model has 3 kernels"):
        client.run_kernel(7)
    with pytest.raises(DeviceError, match=r"takes 2 argument bytes, got 3") as excinfo:
        client.session.request(P.CMD_RUN_KERNEL, b"\x00\x00\x00")
    assert _device_error(excinfo).code == P.ERR_BAD_LENGTH
    with pytest.raises(DeviceError) as excinfo:
        client.session.request(P.CMD_TIME, P.TIME_ARGS.pack(P.TIME_WHOLE_MODEL, 0, 0, 1))
    assert _device_error(excinfo).code == P.ERR_BAD_ARGUMENT
    with pytest.raises(DeviceError, match=r"does not fit the negotiated packet payload of 120") as excinfo:
        client.session.request(P.CMD_READ, P.READ_ARGS.pack(INPUT, 0, 0, 500, 500))
    assert _device_error(excinfo).code == P.ERR_TOO_LARGE
    _expect_still_serving(client)


def test_kernel_failure_names_the_kernel_and_its_error(client):
    client.write_tensor(INPUT, _input_with(FAIL).tobytes())
    with pytest.raises(DeviceError) as excinfo:
        client.run()
    error = _device_error(excinfo)
    assert error.code == P.ERR_KERNEL_FAILED
    assert ("kernel 2 (fixture_guard) failed: ValueError: input[0] is 127, the fixture's failure trigger"
            in error.device_message)
    with pytest.raises(DeviceError, match=r"kernel 2 \(fixture_guard\) failed"):
        client.time(number=2, repeat=2)
    client.write_tensor(INPUT, _input_with(0).tobytes())
    assert client.run() > 0


# -- link faults -----------------------------------------------------------------------------------


def test_garbage_and_corrupted_frames_are_resynchronised(client):
    transport = client.session.transport
    transport.write(bytes(range(256)) * 4, 5.0)  # garbage holding FLAGs and bad escapes
    corrupted = bytearray(encode(P.HEADER.pack(P.PKT_REQUEST, P.CMD_RESET, 1, client.session.session_id)))
    corrupted[4] ^= 0x10
    transport.write(bytes(corrupted), 5.0)  # a RESET the device must not obey
    transport.write(encode(b"\x99unknown kind"), 5.0)
    _expect_still_serving(client)
    data = os.urandom(3000)
    client.write_tensor(BIG, data)
    assert client.read_tensor(BIG, 3000) == data


def test_retried_request_is_replayed_not_run_twice(client):
    client.write_tensor(INPUT, _input_with(LOG).tobytes())  # each run of the guard logs one line
    session = client.session
    logs = []
    session.log_handler = lambda level, text: logs.append(text)
    request = encode(P.HEADER.pack(P.PKT_REQUEST, P.CMD_RUN, 4242, session.session_id))
    session.transport.write(request + request, 5.0)
    decoder = FrameDecoder(session.max_packet)
    replies = []
    while len(replies) < 2:
        for packet in decoder.feed(session.transport.read(4096, 5.0)):
            if packet[0] == P.PKT_LOG:
                logs.append(packet[2:].decode())
            else:
                replies.append(packet)
    assert replies[0] == replies[1]  # the very same reply, ticks included
    assert replies[0][0] == P.PKT_REPLY_OK and struct.unpack_from("<H", replies[0], 2)[0] == 4242
    assert logs.count("fixture_guard saw 124") == 1


class _LossyTransport(Transport):
    """Passes packets through, except that the next reply after arm() is dropped or corrupted, or
    the next request (mode "drop request") never reaches the device."""

    def __init__(self, inner: Transport):
        self.inner = inner
        self.mode = None
        self._decoder = FrameDecoder(1 << 16)

    def arm(self, mode: str) -> None:
        self.mode = mode

    def write(self, data, timeout):
        if self.mode == "drop request":
            packets = FrameDecoder(1 << 16).feed(bytes(data))
            if any(packet[0] == P.PKT_REQUEST for packet in packets):
                self.mode = None
                data = b"".join(encode(packet) for packet in packets if packet[0] != P.PKT_REQUEST)
        elif self.mode == "spoil write":  # a WRITE's last data byte changed, and its CRC made good
            packets = FrameDecoder(1 << 16).feed(bytes(data))
            for at, packet in enumerate(packets):
                if packet[0] == P.PKT_REQUEST and packet[1] == P.CMD_WRITE and self.mode:
                    self.mode = None
                    packets[at] = packet[:-1] + bytes([packet[-1] ^ 0x10])
            data = b"".join(encode(packet) for packet in packets)
        self.inner.write(data, timeout)

    def read(self, n, timeout):
        data = self.inner.read(n, timeout)
        if self.mode is None:
            return data
        frames = []
        for packet in self._decoder.feed(data):
            frame = encode(packet)
            if self.mode == "spoil read" and packet[0] == P.PKT_REPLY_OK and packet[1] == P.CMD_READ:
                self.mode = None  # a READ's last data byte changed, and its CRC made good
                frame = encode(packet[:-1] + bytes([packet[-1] ^ 0x10]))
            elif self.mode in ("drop", "corrupt") and packet[0] in (P.PKT_REPLY_OK, P.PKT_REPLY_ERR):
                mode, self.mode = self.mode, None
                if mode == "drop":
                    continue
                frame = frame[:3] + bytes([frame[3] ^ 0x01]) + frame[4:]
            frames.append(frame)
        return b"".join(frames) or FLAG  # a lone FLAG is an empty frame: ignored

    def close(self):
        self.inner.close()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("fault, lost", [("drop", (0, 1)), ("corrupt", (0, 0)), ("drop request", (1, 0))])
def test_a_lost_or_corrupted_run_is_recovered_and_run_once(open_session, fault, lost):
    """A RUN whose reply is corrupted is asked for again at once. One whose request or reply is
    lost costs a short silence, not its 600-second timeout: the host asks the device what it last
    answered (QUERY), whose STATE says whether it ever saw the request. The re-send runs it, or is
    answered with the kept reply: never a second run."""
    session = open_session(transport_wrapper=_LossyTransport, timeout=5.0, retries=3)
    client = DeviceClient(session)
    inp = _input_with(LOG)
    client.write_tensor(INPUT, inp.tobytes())
    logs = []
    session.log_handler = lambda level, text: logs.append(text)
    session.transport.arm(fault)
    assert client.run(timeout=600.0) > 0
    assert session.retransmissions == 1
    assert logs.count("fixture_guard saw 124") == 1  # the retry was replayed, not run again
    assert (session.link.lost_requests, session.link.lost_replies) == lost
    _, expected_out = _expected(inp, _read_int8(client, BIAS))
    np.testing.assert_array_equal(_read_int8(client, OUTPUT), expected_out)


def test_a_busy_device_is_waited_for_not_asked_twice(open_session):
    """While a run takes longer than the silence, the device cannot answer the QUERY (it answers
    after the run); the host keeps waiting without resending anything."""
    session = open_session(timeout=5.0)
    client = DeviceClient(session)
    client.write_tensor(INPUT, _busy_input(150).tobytes())  # a 1.5 s run: past the first silence
    assert client.run(timeout=60.0) > 0
    assert session.retransmissions == 0
    client.ping(b"after")  # the late STATE is ignored, not taken for this reply


def test_checksum_is_the_crc32_of_the_tensor_bytes(client):
    data = os.urandom(5000)
    client.write_tensor(BIG, data)
    assert client.checksum(BIG, len(data)) == zlib.crc32(data)
    assert client.checksum(BIG, 100, offset=17) == zlib.crc32(data[17:117])
    assert client.checksum(BIAS, N) == zlib.crc32(client.read_tensor(BIAS, N))  # constants too
    with pytest.raises(DeviceError, match=r"tensor 0 \(input\) checksum of 10 bytes at offset 995"):
        client.checksum(INPUT, 10, offset=995)


@pytest.mark.parametrize("spoil", ["spoil write", "spoil read"])
def test_a_transfer_spoilt_past_the_crc_is_caught_by_its_checksum(open_session, spoil):
    """A frame whose spoilt bytes still pass CRC-16 (1 in 65536 random errors do): once the link
    has shown noise, transfers are checked end to end with the device's CRC-32 of the tensor,
    and done again when they differ."""
    session = open_session(transport_wrapper=_LossyTransport, timeout=1.0)
    client = DeviceClient(session)
    session.transport.arm("corrupt")  # the link shows noise: one reply arrives corrupted
    client.ping(b"noise")
    assert session.retransmissions == 1
    data = os.urandom(3000)
    if spoil == "spoil read":
        client.write_tensor(BIG, data)
    session.transport.arm(spoil)
    if spoil == "spoil write":
        client.write_tensor(BIG, data)
        session.transport.arm(None)
        assert client.read_tensor(BIG, len(data)) == data
    else:
        assert client.read_tensor(BIG, len(data)) == data
    assert session.transport.mode is None, "nothing was spoilt"


def test_reboot_mid_call_is_reported_and_a_new_session_works(client):
    client.write_tensor(INPUT, _input_with(REBOOT).tobytes())
    with pytest.raises(DeviceRebootedError, match="rebooted"):
        client.run()
    assert not client.session.is_open
    with pytest.raises(SessionClosedError):
        client.ping()
    client.session.open()  # no re-flash: the same process image booted again
    _expect_still_serving(client)
    assert not _read_int8(client, INPUT).any()  # the arena starts empty after a boot


def test_reset_command_reboots_and_reopens(client):
    client.write_tensor(INPUT, _input_with(3).tobytes())
    old_boot = client.session.boot_nonce
    client.reset()
    assert client.session.is_open and client.session.boot_nonce != old_boot
    assert not _read_int8(client, INPUT).any()


def test_forgotten_session_is_reported_like_a_reboot(client):
    client.session.session_id ^= 0x5A5A5A5A
    with pytest.raises(DeviceRebootedError, match="no longer knows this session"):
        client.ping()


def test_device_exit_mid_call_names_the_exit_code(client):
    client.write_tensor(INPUT, _input_with(ABORT).tobytes())
    with pytest.raises(TransportClosedError, match=r"exited with code 3") as excinfo:
        client.run()
    assert "RUN" in str(excinfo.value)
    assert not client.session.is_open


def test_silent_device_fails_the_handshake_clearly():
    transport = SubprocessTransport(["sleep", "30"])
    session = ProtocolSession(transport, timeout=0.3, open_timeout=1.0)
    try:
        with pytest.raises(IoTimeoutError, match="did not answer the session handshake within 1 s"):
            session.open()
    finally:
        session.close()


def test_device_refuses_another_protocol_version(device_exe):
    with SubprocessTransport([str(device_exe)]) as transport:
        transport.write(encode(P.HELLO.pack(P.PKT_HELLO, 99, 0, 1234, 4096)), 5.0)
        decoder = FrameDecoder(4096)
        welcome = None
        while welcome is None:
            for packet in decoder.feed(transport.read(4096, 5.0)):
                if packet[0] == P.PKT_WELCOME:
                    welcome = P.WELCOME.unpack(packet)
        _, version, _, nonce, session_id, _, _ = welcome
        assert (version, nonce, session_id) == (P.PROTOCOL_VERSION, 1234, 0)
        # The host side turns that into a clear error.
        session = ProtocolSession(transport)
        with pytest.raises(ProtocolError, match="version 7"):
            session._accept_welcome(7, 1, 0, 512, 1)


# -- logs ------------------------------------------------------------------------------------------


def test_device_logs_reach_python_logging(open_session, caplog):
    caplog.set_level(logging.DEBUG, logger="utvm.device")
    received = []
    session = open_session(log_handler=lambda level, text: received.append((level, text)))
    assert "utvm runtime ready: model fixture on host" in caplog.text  # sent at boot
    client = DeviceClient(session)
    client.write_tensor(INPUT, _input_with(LOG).tobytes())
    assert client.run() > 0  # the log line arrives between the request and its reply
    assert (logging.INFO, "fixture_guard saw 124") in received
    assert any(r.name == "utvm.device" and r.getMessage() == "fixture_guard saw 124" for r in caplog.records)
    assert "fixture_guard saw 124" in session.recent_logs


@pytest.mark.parametrize("limit", [P.MAX_PACKET + 1, 65536])
def test_the_host_never_proposes_packets_the_crc_cannot_protect(limit):
    with pytest.raises(ValueError, match="at most|4093"):
        ProtocolSession(object(), max_packet=limit)
