"""The bare-metal template through the Project API: create-project (with the fit check), build (with
section sizes), flash, and the transport to a board emulated by qemu-system-arm, for both project
types.

The model is the runtime's hand-written fixture packaged as an MLF archive, so these tests need no
TVM; a TVM-compiled model runs through the same template in test_baremetal_tvm_model.py.
"""

from __future__ import annotations

import json
import os
import pathlib
import signal
import time

import numpy as np
import pytest
from conftest import require_tool
from runtime_fixtures.build import FIXTURE_DIR, build_device
from utvm.boards import board_names
from utvm.host_driven.device import DeviceClient
from utvm.host_driven.executor import Session as ModelSession
from utvm.host_driven.session import ProtocolSession
from utvm.host_driven.transport import SubprocessTransport
from utvm.model_library.archive import write_archive
from utvm.project_api.errors import UserError
from utvm.project_api.project import TemplateProject
from utvm.templates import template_path

N = 1000
INPUT, OUTPUT = 0, 3
FIXTURE_HASH = "0123456789abcdef" * 2
ARENA = 3024 + 65536


def _fixture_metadata(big_bytes: int = 65536) -> dict:
    arena_bytes = 3024 + big_bytes
    def tensor(i, name, storage, offset, nbytes, dtype="int8", **extra):
        return dict(id=i, name=name, storage=storage, offset=offset, nbytes=nbytes, shape=[nbytes],
                    dtype=dtype, **extra)

    return {
        "format_version": 1, "model_name": "fixture", "model_hash": FIXTURE_HASH, "tvm_version": "none",
        "target": {"kind": "c"}, "target_str": "c",
        "inputs": [{"name": "input", "shape": [N], "dtype": "int8", "tensor": INPUT}],
        "outputs": [{"name": "output", "shape": [N], "dtype": "int8", "tensor": OUTPUT}],
        "plan": {
            "pools": [{"name": "arena", "size_bytes": arena_bytes, "alignment": 16}],
            "tensors": [tensor(0, "input", "arena", 0, N),
                        tensor(1, "bias", "const", 0, N, symbol="bias_data"),
                        tensor(2, "sum", "arena", 1008, N), tensor(3, "output", "arena", 2016, N),
                        tensor(4, "big", "arena", 3024, big_bytes, "uint8")],
            "kernels": [{"index": 0, "name": "fixture_add", "function": "fixture_add", "args": [0, 1, 2],
                         "outputs": [2]},
                        {"index": 1, "name": "fixture_relu", "function": "fixture_relu", "args": [2, 3],
                         "outputs": [3]},
                        {"index": 2, "name": "fixture_guard", "function": "fixture_guard", "args": [0],
                         "outputs": []}],
        },
        "memory": {"arena_bytes": arena_bytes, "workspace_bytes": 1008, "constant_bytes": N,
                   "io_bytes": 2 * N, "peak_live_lower_bound_bytes": 3 * N},
    }


def _write_mlf(path, metadata: dict):
    return write_archive(path, {
        "metadata.json": json.dumps(metadata, indent=2).encode(),
        "codegen/host/src/fixture_model.c": (FIXTURE_DIR / "fixture_model.c").read_bytes(),
        "codegen/host/include/utvm_model_config.h": (FIXTURE_DIR / "utvm_model_config.h").read_bytes(),
    })


@pytest.fixture(scope="module")
def fixture_mlf(tmp_path_factory):
    return _write_mlf(tmp_path_factory.mktemp("mlf") / "fixture.tar", _fixture_metadata())


@pytest.fixture(scope="module")
def template():
    with TemplateProject.from_directory(template_path("baremetal")) as t:
        yield t


@pytest.fixture(scope="module")
def posix_output(tmp_path_factory):
    """The fixture's output for input seed 11, from the same runtime built for this machine."""
    require_tool("gcc")
    exe = build_device(tmp_path_factory.mktemp("posix"))
    with ProtocolSession(SubprocessTransport([str(exe)]), timeout=10) as session:
        client = DeviceClient(session)
        client.write_tensor(INPUT, _input().tobytes())
        client.run()
        return np.frombuffer(client.read_tensor(OUTPUT, N), dtype=np.int8)


def _input() -> np.ndarray:
    data = np.random.default_rng(11).integers(-128, 128, N, dtype=np.int8)
    data[0] = 11  # not one of the fixture's fault triggers
    return data


def _toolchain():
    require_tool("arm-none-eabi-gcc")
    require_tool("make")
    require_tool("qemu-system-arm")


def test_template_offers_the_baremetal_boards(template):
    info = template.info()
    assert info["platform_name"] == "baremetal" and info["is_template"]
    options = {o.name: o for o in template.project_options}
    assert options["board"].choices == board_names("baremetal")
    assert options["project_type"].choices == ["host_driven", "aot_standalone", "mlperftiny"]
    assert "utvm_open_direct_transport" in info["utvm_extensions"]


@pytest.mark.parametrize("board,transport", [("mps2_an386", "direct"), ("mps2_an500", "relay")])
def test_host_driven_project_end_to_end(template, fixture_mlf, posix_output, tmp_path, board, transport):
    _toolchain()
    project = template.generate_project(fixture_mlf, tmp_path / "project", {"board": board})
    with project:
        # The board is resolved once, at generate_project, and kept in the project record.
        assert project.record.board["name"] == board and project.record.board["uart"]["base"] == 0x40004000
        project.build()
        sizes = json.loads((project.directory / "build" / "sizes.json").read_text())
        assert sizes["text"] > 0 and sizes["bss"] >= ARENA and sizes["board_ram_bytes"] == 4 << 20
        project.flash()
        with ModelSession.from_project(project, transport=transport) as session:
            assert session.info.board == board and session.info.timer_hz == 25_000_000
            session.set_input("input", _input())
            session.run()
            np.testing.assert_array_equal(session.get_output("output"), posix_output)


def test_aot_standalone_project(template, fixture_mlf, posix_output, tmp_path):
    _toolchain()
    npz = tmp_path / "inputs.npz"
    np.savez(npz, input=_input())
    options = {"board": "mps2_an385", "project_type": "aot_standalone", "input_npz": str(npz)}
    with template.generate_project(fixture_mlf, tmp_path / "project", options) as project:
        project.build()
        report = project.client.call("utvm_run_standalone", {"timeout_sec": 30})
    assert (report["status"], report["exit_status"], report["error"]) == (0, 0, None)
    assert report["emulated"] and "not real-board timings" in report["note"]
    assert report["ticks"] > 0 and report["timer_hz"] == 25_000_000
    # Under -icount shift=0 a device second is 10^9 instructions.
    assert report["instructions"] == round(report["ticks"] / 25e6 * 1e9) > 0
    assert f"{report['instructions']} instructions (-icount shift=0)" in report["note"]
    [output] = report["outputs"]
    np.testing.assert_array_equal(np.frombuffer(bytes.fromhex(output["hex"]), dtype=np.int8), posix_output)


def test_model_too_big_for_the_board_is_refused_with_both_numbers(template, tmp_path):
    big = _write_mlf(tmp_path / "big.tar", _fixture_metadata(big_bytes=5 << 20))
    with pytest.raises(UserError) as info:
        template.generate_project(big, tmp_path / "project", {"board": "mps2_an385"})
    message = str(info.value)
    assert "does not fit mps2_an385" in message
    assert "of RAM, the board has 4 MiB (4194304 bytes)" in message and "arena 5.0 MiB" in message
    assert not (tmp_path / "project").exists()


def test_board_of_another_platform_is_refused(template, fixture_mlf, tmp_path):
    with pytest.raises(UserError, match="nucleo_f746zg"):
        template.generate_project(fixture_mlf, tmp_path / "project", {"board": "nucleo_f746zg"})



def _proc_state(pid: int):
    """(command name, state, parent pid) of a process, or None once it is gone."""
    try:
        stat = pathlib.Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    state, ppid = stat[stat.rindex(")") + 2:].split()[:2]
    return stat[stat.index("(") + 1:stat.rindex(")")], state, int(ppid)


def _live_qemu_children(parent: int) -> list:
    found = []
    for entry in pathlib.Path("/proc").iterdir():
        info = _proc_state(int(entry.name)) if entry.name.isdigit() else None
        if info and info[0].startswith("qemu-system") and info[2] == parent and info[1] != "Z":
            found.append(int(entry.name))
    return found


def test_killed_server_takes_qemu_with_it(template, fixture_mlf, tmp_path):
    """SIGKILL the project's server while its transport is open: QEMU must not outlive it."""
    _toolchain()
    with template.generate_project(fixture_mlf, tmp_path / "project", {"board": "mps2_an385"}) as project:
        project.build()
        project.open_transport()
        server_pid = project.client.pid
        [qemu_pid] = _live_qemu_children(server_pid)
        os.kill(server_pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while (_proc_state(qemu_pid) or ("", "Z"))[1] != "Z" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert (_proc_state(qemu_pid) or ("", "Z"))[1] == "Z", "QEMU outlived the server that started it"
