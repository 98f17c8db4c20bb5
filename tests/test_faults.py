"""Faults between host and device, injected for real, on the POSIX host template.

The device is a host-template project (a small int8 TFLite model compiled by model_library),
reached through the transport the template describes; a FaultInjectingTransport between it and
the host session drops, corrupts, delays or cuts bytes on a seeded schedule, or kills the device
process at a chosen byte. After every fault, an inference returns the host reference's exact
outputs or raises a clear error, and no test waits past its deadline.

Two faults need the device to misbehave from inside a kernel (exit or reboot in the middle of a
run); those use the runtime's fixture model, built with the same runtime and POSIX port that the
host template copies (tests/runtime_fixtures).
"""

from __future__ import annotations

import os
import signal
import struct

import numpy as np
import pytest
from host_driven_helpers import built_project, cached_archive, small_tflite_archive
from runtime_fixtures.build import FAST_LINK_DEFINES, build_device
from utvm.host_driven import protocol as P
from utvm.host_driven.errors import (
    DeviceError,
    DeviceRebootedError,
    HostDrivenError,
    IoTimeoutError,
    TransportClosedError,
)
from utvm.host_driven.executor import Session
from utvm.host_driven.fault_injection import FROM_DEVICE, TO_DEVICE, FaultInjectingTransport, seeded_schedule
from utvm.host_driven.framing import encode
from utvm.host_driven.session import ProtocolSession
from utvm.host_driven.transport import SubprocessTransport

# Per-reply wait and re-sends: short, so a lost packet costs a fraction of a second. A lost RUN
# reply costs RUN_TIMEOUT_S (the model runs in microseconds).
REPLY_TIMEOUT_S = 0.25
RUN_TIMEOUT_S = 0.5
RETRIES = 4
CASES = 10
# A clear error: the session's own errors, or the transport's timeout / closed link.
CLEAR_ERRORS = (HostDrivenError, IoTimeoutError, TransportClosedError)

pytestmark = pytest.mark.timeout(120)


# ---- the device: a host-template project ------------------------------------------------------


@pytest.fixture(scope="module")
def host_device(tmp_path_factory):
    """(archive, project_dir) of the small int8 model on the POSIX host template, built."""
    archive = small_tflite_archive(tmp_path_factory)
    return archive, built_project(tmp_path_factory, archive)


@pytest.fixture(scope="module")
def cases(host_device):
    """Seeded inputs and the outputs model_library's HostReference computes for them."""
    from utvm.model_library import HostReference, load

    library = load(host_device[0])
    spec = library.inputs[0]
    rng = np.random.default_rng(5)
    out = []
    with HostReference(library) as reference:
        for _ in range(CASES):
            x = rng.integers(-128, 128, size=spec["shape"]).astype(spec["dtype"])
            reference.set_input(0, x)
            reference.run()
            out.append((x, reference.get_output(0)))
    return out


@pytest.fixture
def open_device(host_device):
    """open_device(seed) -> an open executor Session whose transport is a fault injector.

    The inner transport is what the template's server describes (its direct transport).
    """
    from utvm.host_driven.direct import open_project_transport
    from utvm.project_api.project import GeneratedProject

    archive, project_dir = host_device
    sessions = []

    def make(seed: int = 0, **kwargs) -> Session:
        with GeneratedProject.from_directory(project_dir, echo=False) as project:
            inner = open_project_transport(project, mode="direct")
        injector = FaultInjectingTransport(inner, seed=seed)
        kwargs = {"timeout": REPLY_TIMEOUT_S, "retries": RETRIES, "run_timeout": RUN_TIMEOUT_S, **kwargs}
        session = Session(injector, archive, **kwargs)
        sessions.append(session)
        return session.open()

    yield make
    for session in sessions:
        session.close()


def infer(session: Session, x: np.ndarray) -> np.ndarray:
    session.set_input(0, x)
    session.run()
    return session.get_output(0)


def assert_clean_inference(session: Session, cases) -> None:
    """With the link clean again, every case gives the reference's exact outputs."""
    session.transport.clear()
    for x, expected in cases[:3]:
        np.testing.assert_array_equal(infer(session, x), expected)


def pid_of(session: Session) -> int:
    return session.transport.inner.pid


# ---- bytes corrupted, dropped, delayed --------------------------------------------------------


@pytest.mark.parametrize("seed", range(6))
def test_corrupted_or_dropped_bytes_never_give_wrong_outputs(open_device, cases, seed):
    session = open_device(seed)
    injector = session.transport
    # Spread over about as many bytes as CASES inferences move, in both directions.
    injector.add(seeded_schedule(seed, count=12, span=700, kinds=("drop", "corrupt"), max_length=6),
                 relative=True)
    outcomes = []
    for x, expected in cases:
        try:
            y = infer(session, x)
        except CLEAR_ERRORS as err:
            assert str(err), "an error without a message"
            outcomes.append(type(err).__name__)
            if not session.protocol.is_open:  # only a reboot or a closed link ends a session
                pytest.fail(f"a corrupted byte ended the session: {err}\n{injector.describe()}")
            continue
        np.testing.assert_array_equal(y, expected, err_msg=f"wrong outputs after {injector.describe()}")
        outcomes.append("ok")
    assert injector.injected, f"the schedule was never reached: {injector.describe()}"
    assert "ok" in outcomes, f"no inference got through: {outcomes}\n{injector.describe()}"
    assert session.protocol.retransmissions > 0, "faults were injected but nothing was re-sent"
    assert_clean_inference(session, cases)


def write_relu_onnx(path, elements: int):
    """An ONNX model y = Relu(x) on float32 [1, elements]: a tensor that fills a large packet."""
    onnx = pytest.importorskip("onnx", reason="onnx not installed: pip install onnx")
    from onnx import TensorProto, helper

    shape = [1, elements]
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "relu_probe",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.save(model, str(path))
    return path


def test_two_bit_errors_32767_bits_apart_are_caught(tmp_path_factory):
    """CRC-16/CCITT misses every pair of flipped bits 32767 bits apart (the period of its
    polynomial's primitive factor), so packets are capped at 4093 bytes, where it catches every
    2-bit error. Two bits flipped 32767 apart in an 8 KiB READ must not come back as data."""
    archive = cached_archive(tmp_path_factory, "relu_8k", lambda d: write_relu_onnx(d / "relu_8k.onnx", 2048))
    project_dir = built_project(tmp_path_factory, archive)
    inner = SubprocessTransport([str(project_dir / "build" / "model_device")], cwd=str(project_dir))
    injector = FaultInjectingTransport(inner)
    with Session(injector, archive, timeout=REPLY_TIMEOUT_S, retries=RETRIES) as session:
        tensor = session.signature.input(0).tensor_id
        zeros = bytes(8192)
        session.device.write_tensor(tensor, zeros)
        # The cap is what makes this safe: no one packet can hold both flips.
        assert session.protocol.max_packet <= 4093 < 4095
        # 100 bytes into the reply frame is inside the payload (the escaped header is <= 17 bytes)
        # and the payload is zeros, so nothing is escaped between the two flips.
        injector.inject("corrupt", FROM_DEVICE, after=100, xor=b"\x80")  # bit 8*100
        injector.inject("corrupt", FROM_DEVICE, after=100 + 4095, xor=b"\x01")  # bit 8*100 + 32767
        try:
            got = session.device.read_tensor(tensor, len(zeros))
        except CLEAR_ERRORS:
            return  # caught and reported: fine
        assert len(injector.injected) == 2
        assert got == zeros, "a READ returned corrupted data that passed the CRC"


def test_corrupted_handshake_is_retried(open_device, cases):
    """Corruption during HELLO/WELCOME: open() retries until a clean handshake."""
    session = open_device(1)
    injector = session.transport
    injector.inject("corrupt", TO_DEVICE, after=3, length=2)
    injector.inject("corrupt", FROM_DEVICE, after=4, length=1)
    session.open()
    assert len(injector.injected) == 2
    assert_clean_inference(session, cases)


def test_delays_past_the_reply_timeout_are_retried(open_device, cases):
    session = open_device(3)
    injector = session.transport
    injector.add(seeded_schedule(3, count=6, span=800, kinds=("delay",), directions=(FROM_DEVICE,),
                                 max_delay_s=0.4), relative=True)
    for i, (x, expected) in enumerate(cases):
        session.set_input(0, x)
        session.run()
        if i == 0:  # the READ reply arrives after the host's reply timeout: re-sent, replayed
            injector.inject("delay", FROM_DEVICE, after=0, delay_s=2 * REPLY_TIMEOUT_S)
        np.testing.assert_array_equal(session.get_output(0), expected, err_msg=injector.describe())
    assert session.protocol.retransmissions > 0


def test_a_dead_link_fails_with_a_clear_timeout(open_device, cases):
    """Every byte to the device lost: the call gives up after its retries and says so."""
    session = open_device()
    session.transport.inject("drop", TO_DEVICE, after=0, length=1 << 30)
    with pytest.raises(IoTimeoutError, match=f"after {RETRIES} retries"):
        infer(session, cases[0][0])
    assert_clean_inference_after_reopen(session, cases)


def assert_clean_inference_after_reopen(session: Session, cases) -> None:
    session.transport.clear()
    session.open()
    assert_clean_inference(session, cases)


def test_link_cut_mid_call_is_a_clear_error(open_device, cases):
    session = open_device()
    session.transport.inject("cut", TO_DEVICE, after=10)
    with pytest.raises(TransportClosedError, match="link cut"):
        infer(session, cases[0][0])
    with pytest.raises(CLEAR_ERRORS):
        infer(session, cases[1][0])


# ---- the device crashes, exits, or reboots ----------------------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGSEGV])
def test_device_crash_mid_call_is_a_clear_error(open_device, cases, sig):
    session = open_device()
    session.set_input(0, cases[0][0])
    pid = pid_of(session)
    # The device dies just as the RUN request starts to go out.
    session.transport.inject("hook", TO_DEVICE, after=0, action=lambda: os.kill(pid, sig))
    with pytest.raises(TransportClosedError, match=f"killed by {sig.name}"):
        session.run()
    with pytest.raises(CLEAR_ERRORS):
        infer(session, cases[1][0])


def test_device_crash_mid_reply_is_a_clear_error(open_device, cases):
    session = open_device()
    session.set_input(0, cases[0][0])
    session.run()
    pid = pid_of(session)
    # Four bytes into the READ reply the device is killed; nothing after them ever arrives.
    session.transport.inject("hook", FROM_DEVICE, after=4, action=lambda: os.kill(pid, signal.SIGKILL))
    session.transport.inject("drop", FROM_DEVICE, after=4, length=1 << 30)
    with pytest.raises(TransportClosedError, match="killed by SIGKILL"):
        session.get_output(0)
    with pytest.raises(CLEAR_ERRORS):
        infer(session, cases[1][0])


def test_device_terminated_mid_call_is_a_clear_error(open_device, cases):
    session = open_device()
    pid = pid_of(session)
    session.transport.inject("hook", TO_DEVICE, after=5, action=lambda: os.kill(pid, signal.SIGTERM))
    with pytest.raises(TransportClosedError, match="SIGTERM"):
        infer(session, cases[0][0])
    with pytest.raises(CLEAR_ERRORS):
        infer(session, cases[1][0])


def forged_reset(session_id: int) -> bytes:
    """A RESET request of the live session, as if another party had sent it (the device replays
    a reply only for the same command and sequence number, so any number will do)."""
    return encode(P.HEADER.pack(P.PKT_REQUEST, P.CMD_RESET, 0, session_id))


def test_reboot_mid_session_is_reported_and_a_new_session_works(open_device, cases):
    session = open_device()
    np.testing.assert_array_equal(infer(session, cases[0][0]), cases[0][1])
    injector = session.transport
    boot_before = session.protocol.boot_nonce
    reset = forged_reset(session.protocol.session_id)
    # Just before the next RUN request, the device is told to reboot (a watchdog, a brown-out...).
    session.set_input(0, cases[1][0])
    injector.inject("hook", TO_DEVICE, after=0, action=lambda: injector.inner.write(reset, 1.0))
    with pytest.raises(DeviceRebootedError, match="rebooted|no longer knows"):
        session.run()
    # The same process, re-executed: no re-flash, no new transport.
    session.open()
    assert session.protocol.boot_nonce != boot_before
    for x, expected in cases[1:4]:
        np.testing.assert_array_equal(infer(session, x), expected)


# ---- bad commands and oversized transfers -----------------------------------------------------


BAD_REQUESTS = [
    ("unknown command", 0x7F, b"", "UNKNOWN_COMMAND", "unknown command 127"),
    ("bad length", P.CMD_INFO, b"\0\0", "BAD_LENGTH", "got 2"),
    ("bad tensor", P.CMD_TENSOR_INFO, struct.pack("<H", 999), "BAD_TENSOR", "tensor 999"),
    ("bad kernel", P.CMD_RUN_KERNEL, struct.pack("<H", 999), "BAD_KERNEL", "kernel 999"),
    # 0xFFFF means "the whole model" to TIME; RUN_KERNEL must not take it as that.
    ("kernel 0xFFFF", P.CMD_RUN_KERNEL, struct.pack("<H", 0xFFFF), "BAD_KERNEL", "kernel 65535"),
    ("read past the end", P.CMD_READ, P.READ_ARGS.pack(0, 0, 8, 16, 16), "OUT_OF_BOUNDS", "offset 8"),
    ("zero repeats", P.CMD_TIME, P.TIME_ARGS.pack(P.TIME_WHOLE_MODEL, 0, 1, 0), "BAD_ARGUMENT", "repeat"),
]


@pytest.mark.parametrize("what, cmd, args, code, text", BAD_REQUESTS, ids=[r[0] for r in BAD_REQUESTS])
def test_bad_arguments_get_an_error_reply_and_the_device_keeps_serving(open_device, cases, what, cmd, args,
                                                                       code, text):
    session = open_device()
    with pytest.raises(DeviceError, match=text) as info:
        session.protocol.request(cmd, args)
    assert info.value.code_name == code
    assert session.protocol.is_open
    assert_clean_inference(session, cases)


def test_write_to_a_constant_is_refused(open_device, cases):
    session = open_device()
    const = next(i for i, t in enumerate(session.library.tensors) if t["storage"] == "const")
    with pytest.raises(DeviceError, match="constant") as info:
        session.device.write_tensor(const, b"\0" * 4)
    assert info.value.code_name == "READ_ONLY"
    assert_clean_inference(session, cases)


@pytest.mark.parametrize("direction", ["write", "read"])
def test_transfer_larger_than_the_arena_is_refused_with_both_numbers(open_device, cases, direction):
    session = open_device()
    arena = session.info.arena_bytes
    size = arena + 1000
    tensor = session.signature.input(0).tensor_id
    with pytest.raises(DeviceError) as info:
        if direction == "write":
            session.device.write_tensor(tensor, bytes(size))
        else:
            session.device.read_tensor(tensor, size)
    message = str(info.value)
    assert info.value.code_name == "OUT_OF_BOUNDS"
    assert str(size) in message and str(arena) in message, message
    assert_clean_inference(session, cases)


# ---- faults raised by the device itself, from inside a kernel (the runtime's fixture model) ----

FIXTURE_ABORT, FIXTURE_REBOOT = 126, 125
FIXTURE_N = 1000


@pytest.fixture(scope="module")
def fixture_device(tmp_path_factory):
    return build_device(tmp_path_factory.mktemp("fixture-device"), defines=FAST_LINK_DEFINES)


def fixture_client(device_exe):
    from utvm.host_driven.device import DeviceClient

    transport = FaultInjectingTransport(SubprocessTransport([str(device_exe)]))
    protocol = ProtocolSession(transport, timeout=REPLY_TIMEOUT_S, retries=RETRIES)
    return DeviceClient(protocol.open())


def fixture_input(first: int) -> bytes:
    data = np.random.default_rng(first).integers(-128, 128, FIXTURE_N, dtype=np.int8)
    data[0] = first
    return data.tobytes()


def test_device_exiting_mid_run_is_a_clear_error(fixture_device):
    client = fixture_client(fixture_device)
    try:
        client.write_tensor(0, fixture_input(FIXTURE_ABORT))
        with pytest.raises(TransportClosedError, match="exited with code 3"):
            client.run(timeout=5.0)
    finally:
        client.session.close()


def test_device_rebooting_mid_run_is_reported_then_serves_again(fixture_device):
    client = fixture_client(fixture_device)
    try:
        client.write_tensor(0, fixture_input(FIXTURE_REBOOT))
        with pytest.raises(DeviceRebootedError):
            client.run(timeout=5.0)
        client.session.open()
        ok = fixture_input(3)
        client.write_tensor(0, ok)
        client.run(timeout=5.0)
        assert client.read_tensor(0, FIXTURE_N) == ok
    finally:
        client.session.close()
