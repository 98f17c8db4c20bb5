"""The device runtime on the bare-metal Cortex-M port, under qemu-system-arm, driven by the host-driven
protocol over the emulated UART: mps2-an385 (M3), mps2-an386 (M4F), mps2-an500 (M7).

The model is the runtime's hand-written fixture (tests/runtime_fixtures), so this needs no TVM; the
generated-model path is covered by the template's end-to-end test. Timings are not asserted.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO_ROOT, require_tool
from runtime_fixtures.build import FIXTURE_DIR, RUNTIME_DIR, build_device, runtime_sources
from utvm.boards import get_board
from utvm.host_driven.device import DeviceClient
from utvm.host_driven.errors import DeviceError, DeviceRebootedError, TransportClosedError
from utvm.host_driven.serial_transport import SerialTransport
from utvm.host_driven.session import ProtocolSession
from utvm.host_driven.transport import SubprocessTransport
from utvm.project_api import qemu
from utvm.project_api import standalone_report as standalone

# The template's helpers import the floor as `project_api`, as they do inside a generated project.
sys.path[:0] = [str(REPO_ROOT), str(REPO_ROOT / "templates" / "baremetal")]
from utvm_baremetal import render  # noqa: E402

BOARDS = ["mps2_an385", "mps2_an386", "mps2_an500"]
INPUT, BIAS, SUM, OUTPUT, BIG = range(5)
N = 1000
FAIL, ABORT, REBOOT = 127, 126, 125
STANDALONE_FIRST = 7


@pytest.fixture(scope="module")
def firmware(tmp_path_factory):
    """firmware(board, app="host_driven") -> ELF of the runtime + fixture model + bare-metal port."""
    require_tool("arm-none-eabi-gcc")
    require_tool("make")

    built = {}

    def build(board: str, app: str = "host_driven"):
        if (board, app) not in built:
            project = tmp_path_factory.mktemp(board)
            app_sources = []
            if app == "aot_standalone":
                app_sources.append(project / "standalone_inputs.c")
                baked = [("input", _input(STANDALONE_FIRST).tobytes())]
                app_sources[0].write_text(standalone.inputs_c_source(baked))
            render.write_firmware_tree(
                project, get_board(board).to_dict(), app, RUNTIME_DIR / "include",
                runtime_sources=runtime_sources(posix=False), app_sources=app_sources,
                generated_sources=[FIXTURE_DIR / "fixture_model.c"],
                extra_headers=[FIXTURE_DIR / "utvm_model_config.h"])
            result = subprocess.run(["make", "-s"], cwd=project, capture_output=True, text=True, timeout=300)
            assert result.returncode == 0, result.stdout + result.stderr
            built[(board, app)] = project / "build" / "firmware.elf"
        return built[(board, app)]

    return build


@pytest.fixture
def device(firmware):
    """device(board, icount_shift=None) -> (QemuProcess, open ProtocolSession)."""
    require_tool("qemu-system-arm")
    opened = []

    def start(board: str, icount_shift=None):
        emulator = get_board(board).emulator
        runner = qemu.QemuProcess(firmware(board), emulator["machine"], cpu=emulator["cpu"],
                                  icount_shift=icount_shift)
        opened.append(runner)
        url = runner.launch()  # the session connects itself, as a utvm client does
        session = ProtocolSession(SerialTransport(url), timeout=5.0)
        opened.append(session)
        return runner, session.open()

    yield start
    for thing in reversed(opened):
        thing.close() if isinstance(thing, ProtocolSession) else thing.stop()


def _input(first: int) -> np.ndarray:
    data = np.random.default_rng(first).integers(-128, 128, N, dtype=np.int8)
    data[0] = first
    return data


def _read_int8(client: DeviceClient, tensor: int) -> np.ndarray:
    return np.frombuffer(client.read_tensor(tensor, N), dtype=np.int8)


def _expected_output(inp: np.ndarray, bias: np.ndarray) -> np.ndarray:
    total = np.clip(inp.astype(np.int16) + bias, -128, 127).astype(np.int8)
    return np.maximum(total, 0)


@pytest.mark.parametrize("board", BOARDS)
def test_runtime_serves_on_the_board(board, device):
    runner, session = device(board)
    client = DeviceClient(session)
    info = client.info()
    assert (info.board, info.model_name, info.timer_hz) == (board, "fixture", 25_000_000)

    inp = _input(5)
    client.write_tensor(INPUT, inp.tobytes())
    assert client.run() > 0
    np.testing.assert_array_equal(_read_int8(client, OUTPUT), _expected_output(inp, _read_int8(client, BIAS)))

    client.write_tensor(INPUT, _input(FAIL).tobytes())
    with pytest.raises(DeviceError, match=r"kernel 2 \(fixture_guard\) failed"):
        client.run()

    # utvm_port_reset: SYSRESETREQ reboots the board, and the host notices.
    client.write_tensor(INPUT, _input(REBOOT).tobytes())
    with pytest.raises(DeviceRebootedError):
        client.run()
    session.open()
    assert not _read_int8(client, INPUT).any()  # a fresh boot: the arena starts empty

    # utvm_port_abort: semihosting exit with the code, which QEMU returns.
    client.write_tensor(INPUT, _input(ABORT).tobytes())
    with pytest.raises(TransportClosedError):
        client.run()
    assert runner.wait(timeout=10) == 3


def test_reset_under_icount_gives_a_new_boot_nonce(device):
    """With -icount every boot runs the same instructions; the boot counter in .noinit still makes
    each boot's timer origin, and so its boot nonce, differ."""
    _runner, session = device("mps2_an386", icount_shift=0)
    client = DeviceClient(session)
    nonces = {session.boot_nonce}
    for _ in range(2):
        client.reset()
        nonces.add(session.boot_nonce)
    assert len(nonces) == 3
    assert len(client.time(number=2, repeat=3)) == 3


@pytest.mark.parametrize("board", BOARDS)
def test_aot_standalone_reports_outputs_and_exits(board, firmware, posix_reference):
    """The model runs on the baked input at boot; the report carries outputs and ticks; exit 0."""
    require_tool("qemu-system-arm")
    emulator = get_board(board).emulator
    runner = qemu.QemuProcess(firmware(board, "aot_standalone"), emulator["machine"], cpu=emulator["cpu"])
    with runner:
        text = standalone.read_report(runner.serial, timeout=20)
        assert runner.wait(timeout=10) == 0
    report = standalone.parse_report(text)
    assert (report["model"], report["status"], report["error"]) == ("fixture", 0, None)
    assert report["timer_hz"] == 25_000_000 and report["ticks"] > 0
    [output] = report["outputs"]
    assert output["name"] == "output"
    np.testing.assert_array_equal(np.frombuffer(output["data"], dtype=np.int8), posix_reference)


@pytest.fixture(scope="module")
def posix_reference(tmp_path_factory):
    """The fixture model's output for the baked input, computed by the same runtime built for this
    machine (the POSIX port) and driven over the protocol."""
    require_tool("gcc")
    exe = build_device(tmp_path_factory.mktemp("posix"))
    with ProtocolSession(SubprocessTransport([str(exe)]), timeout=10) as session:
        client = DeviceClient(session)
        client.write_tensor(INPUT, _input(STANDALONE_FIRST).tobytes())
        client.run()
        return _read_int8(client, OUTPUT)
