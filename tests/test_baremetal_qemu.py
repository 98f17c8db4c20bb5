"""The bare-metal Cortex-M platform layer, built with arm-none-eabi-gcc and run under qemu-system-arm on
mps2-an385 (M3), mps2-an386 (M4F), mps2-an500 (M7) and netduinoplus2 (STM32F405: the STM32F4 USART
and clock drivers): startup, UART both ways, timer, FPU, reset, faults and semihosting exit, plus the
QEMU runner's promise that no QEMU outlives its owner.

Emulated timings are not real-board timings; nothing here asserts a duration.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from conftest import REPO_ROOT, require_tool
from utvm.boards import get_board
from utvm.project_api import qemu

TEMPLATE_DIR = REPO_ROOT / "templates" / "baremetal"
# The template's helpers import the floor as `project_api`, as they do inside a generated project.
sys.path[:0] = [str(REPO_ROOT), str(TEMPLATE_DIR)]
from utvm_baremetal import render  # noqa: E402

BOARDS = ["mps2_an385", "mps2_an386", "mps2_an500", "netduinoplus2"]
SMOKE_SUM = sum(i * i for i in range(1000))


@pytest.fixture(scope="module")
def build_firmware(tmp_path_factory):
    """build_firmware(board, app) -> ELF path, built once per module with the real toolchain."""
    require_tool("arm-none-eabi-gcc")
    require_tool("make")
    root = tmp_path_factory.mktemp("baremetal")
    built = {}

    def build(board: str, app: str) -> Path:
        if (board, app) not in built:
            project = root / f"{board}-{app}"
            render.write_firmware_tree(project, get_board(board).to_dict(), app,
                                       REPO_ROOT / "templates" / "runtime" / "include")
            result = subprocess.run(["make", "-s"], cwd=project, capture_output=True, text=True, timeout=180)
            assert result.returncode == 0, result.stdout + result.stderr
            built[(board, app)] = project / "build" / "firmware.elf"
        return built[(board, app)]

    return build


def _runner(board: str, elf: Path) -> qemu.QemuProcess:
    require_tool("qemu-system-arm")
    emulator = get_board(board).emulator
    return qemu.QemuProcess(elf, emulator["machine"], cpu=emulator["cpu"], system=emulator["system"])


def _read_line(port, timeout: float = 10.0) -> bytes:
    port.timeout = timeout  # a deadline, not a timing check: a loaded CI machine may be slow
    line = port.readline()
    assert line.endswith(b"\n"), f"timed out waiting for a line, got {line!r}"
    return line


def _qemu_children() -> list:
    """PIDs of live (not zombie) qemu-system-* processes whose parent is this process."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1:stat.rindex(")")]
        state, ppid = stat[stat.rindex(")") + 2:].split()[:2]
        if comm.startswith("qemu-system") and int(ppid) == os.getpid() and state != "Z":
            out.append(int(entry.name))
    return out


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def _boot_line(board: str) -> bytes:
    # QEMU's DWT reads zero, so every emulated board times with SysTick at its core clock.
    return f"BOOT {board} systick {get_board(board).clock_hz}\n".encode()


@pytest.mark.parametrize("board", BOARDS)
def test_selftest_firmware(board, build_firmware):
    runner = _runner(board, build_firmware(board, "selftest"))
    with runner:
        port = runner.serial
        assert _read_line(port) == _boot_line(board)

        # Eight echo commands in one write: more than the receive ring (256 bytes on the CMSDK UART,
        # 1 KiB on the STM32 USART), so the firmware's flow control (the receive interrupt off while
        # the ring is full) is exercised; nothing is lost.
        rng = random.Random(board)
        payloads = [bytes(rng.randrange(256) for _ in range(255)) for _ in range(8)]
        port.write(b"".join(b"E" + bytes([len(p)]) + p for p in payloads))
        port.timeout = 10.0
        for p in payloads:
            assert port.read(1 + len(p)) == b"e" + bytes(~b & 0xFF for b in reversed(p))

        port.write(b"T")
        ticks = [int(t) for t in _read_line(port).split()[1:]]
        assert len(ticks) == 4 and ticks == sorted(set(ticks))

        # Runs until the timer passes a 24-bit SysTick wrap; a broken 64-bit extension never gets there.
        port.write(b"W")
        start, end = (int(t) for t in _read_line(port).split()[1:])
        assert end - start > 1 << 24

        port.write(b"F")
        assert _read_line(port) == b"F 4875\n"

        port.write(b"R")
        assert _read_line(port) == _boot_line(board)

        port.write(b"X\x07")
        assert runner.wait(timeout=10) == 7
    assert runner.poll() is None and not _qemu_children()


@pytest.mark.parametrize("board", BOARDS)
def test_smoke_firmware_prints_and_exits(board, build_firmware):
    runner = _runner(board, build_firmware(board, "smoke"))
    with runner:
        lines = [_read_line(runner.serial) for _ in range(3)]
        assert runner.wait(timeout=10) == 0
    assert lines[0] == f"utvm smoke on {board}\n".encode()
    assert lines[1] == f"sum {SMOKE_SUM}\n".encode()
    assert lines[2].startswith(b"cycles ") and int(lines[2].split()[1]) > 0


def test_fault_exits_with_128_plus_exception(build_firmware):
    runner = _runner("mps2_an386", build_firmware("mps2_an386", "selftest"))
    with runner:
        _read_line(runner.serial)
        runner.serial.write(b"U")
        assert b"utvm fault" in _read_line(runner.serial) + _read_line(runner.serial)
        assert runner.wait(timeout=10) == 128 + 3  # escalated to HardFault


def test_icount_mode_runs(build_firmware):
    """With -icount the guest clock follows instructions; the firmware must still boot and time."""
    require_tool("qemu-system-arm")
    runner = qemu.QemuProcess(build_firmware("mps2_an385", "selftest"), "mps2-an385", icount_shift=0)
    with runner:
        _read_line(runner.serial)
        runner.serial.write(b"T")
        ticks = [int(t) for t in _read_line(runner.serial).split()[1:]]
        assert ticks == sorted(set(ticks))


def test_no_orphan_when_the_owner_is_killed(build_firmware, tmp_path):
    """SIGKILL the Python process that started QEMU: the kernel must take QEMU down with it."""
    require_tool("qemu-system-arm")
    elf = build_firmware("mps2_an385", "selftest")
    script = tmp_path / "owner.py"
    script.write_text(textwrap.dedent(f"""
        import sys, time
        from utvm.project_api.qemu import QemuProcess
        runner = QemuProcess({str(elf)!r}, "mps2-an385")
        runner.start()
        print(runner.pid, flush=True)
        time.sleep(60)
    """))
    owner = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        qemu_pid = int(owner.stdout.readline())
        assert _alive(qemu_pid)
        owner.send_signal(signal.SIGKILL)
        owner.wait(timeout=10)
        deadline = time.monotonic() + 10
        while _alive(qemu_pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(qemu_pid), "QEMU outlived the process that started it"
    finally:
        owner.kill()
        owner.wait(timeout=10)


def test_error_paths_leave_no_qemu(build_firmware, tmp_path):
    require_tool("qemu-system-arm")
    with pytest.raises(qemu.QemuError, match="does not exist"):
        qemu.QemuProcess(tmp_path / "missing.elf", "mps2-an385").start()

    garbage = tmp_path / "garbage.elf"
    garbage.write_bytes(b"not an image")
    with pytest.raises(qemu.QemuError, match="is not an ELF image"):
        qemu.QemuProcess(garbage, "mps2-an385").start()

    elf = build_firmware("mps2_an385", "selftest")
    with pytest.raises(qemu.QemuError, match="(?s)QEMU exited with status 1 .*unsupported machine type"):
        qemu.QemuProcess(elf, "mps2-an999").start(timeout=10)
    assert not _qemu_children()

    with pytest.raises(qemu.QemuError, match="not found on PATH"):
        qemu.QemuProcess(elf, "mps2-an385", system="qemu-system-nonexistent").start()

    runner = qemu.QemuProcess(elf, "mps2-an385")
    with pytest.raises(RuntimeError, match="boom"), runner:
        pid = runner.pid
        assert _alive(pid)
        raise RuntimeError("boom")
    assert not _alive(pid) and not _qemu_children()

    # A guest that never exits: wait() gives up at its deadline and stops QEMU.
    runner = qemu.QemuProcess(elf, "mps2-an385")
    runner.start()
    with pytest.raises(qemu.QemuError, match="did not exit within"):
        runner.wait(timeout=0.5)
    assert runner.poll() is None and not _qemu_children()


def test_elf_sizes_match_arm_none_eabi_size(build_firmware):
    from utvm.project_api.elf_sizes import read_elf_sizes

    size_tool = require_tool("arm-none-eabi-size")
    elf = build_firmware("mps2_an386", "selftest")
    out = subprocess.run([size_tool, str(elf)], capture_output=True, text=True, check=True, timeout=30).stdout
    text, data, bss = (int(v) for v in out.splitlines()[1].split()[:3])
    sizes = read_elf_sizes(elf)
    assert (sizes.text, sizes.data, sizes.bss + sizes.stack) == (text, data, bss)
    assert sizes.stack == render.DEFAULT_STACK_BYTES
    names = [name for name, _kind, _size in sizes.largest_symbols]
    assert "main" in names and ("rx_ring", "bss", 256) in sizes.largest_symbols


def test_ram_overflow_fails_the_link(tmp_path):
    """The linker script comes from the board's memory sizes: a stack that cannot fit is a link error."""
    require_tool("arm-none-eabi-gcc")
    board = get_board("mps2_an385").to_dict()
    board["memory"]["ram"]["length"] = 4096
    render.write_firmware_tree(tmp_path, board, "smoke", REPO_ROOT / "templates" / "runtime" / "include",
                               stack_bytes=8192)
    result = subprocess.run(["make", "-s"], cwd=tmp_path, capture_output=True, text=True, timeout=180)
    assert result.returncode != 0
    assert "region `RAM' overflowed" in result.stderr
