"""The host-side tools of the bare-metal template that need no hardware to test: flash-runner
selection and command lines and serial-port discovery (the floor's, which every template with
physical boards uses) through pyserial's `comports()`, probe enumeration through a pyusb backend
object, and the rendering of the firmware tree from a board record.

Runners are exercised with stand-in executables on PATH that record their arguments: the code under
test is how a runner is chosen, what it runs, and how failures are reported, not OpenOCD itself.
"""

from __future__ import annotations

import array
import os
import stat
import sys
import types
from pathlib import Path

import pytest
import serial.tools.list_ports
import usb.backend
from conftest import REPO_ROOT
from serial.tools.list_ports_common import ListPortInfo
from utvm.boards import get_board
from utvm.project_api import flash_runners
from utvm.project_api import usb_discovery as discovery

# The template's helpers import the floor as `project_api`, as they do inside a generated project.
sys.path[:0] = [str(REPO_ROOT), str(REPO_ROOT / "templates" / "baremetal")]
from utvm_baremetal import render  # noqa: E402

F746 = get_board("nucleo_f746zg").to_dict()


def _runner(board, image="firmware.elf", serial_number=None, preferred=None):
    config = flash_runners.RunnerConfig(board=board["name"], image=Path(image), serial_number=serial_number,
                                        emulator=board.get("emulator"))
    return flash_runners.select_runner(board, config, preferred)


# ---- flash runners ----------------------------------------------------------------------------

def _fake_tool(bin_dir: Path, name: str, status: int = 0, output: str = "") -> Path:
    """An executable that appends its arguments (one per line) to <name>.args and exits with status."""
    log = bin_dir / f"{name}.args"
    script = bin_dir / name
    script.write_text(f"#!{sys.executable}\nimport sys\n"
                      f"open({str(log)!r}, 'a').write('\\n'.join(sys.argv[1:]) + '\\n')\n"
                      f"print({output!r})\nsys.exit({status})\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return log


@pytest.fixture
def bin_dir(tmp_path, monkeypatch):
    path = tmp_path / "bin"
    path.mkdir()
    monkeypatch.setenv("PATH", str(path))
    return path


def test_no_tool_installed_names_each_and_how_to_install(bin_dir):
    with pytest.raises(flash_runners.ToolNotFoundError) as info:
        _runner(F746)
    message = str(info.value)
    assert "openocd (Debian/Ubuntu: `sudo apt-get install openocd`" in message
    assert "pyocd (`pip install pyocd`" in message


def test_board_record_order_picks_the_runner(bin_dir, tmp_path):
    _fake_tool(bin_dir, "pyocd")
    assert _runner(F746).name == "pyocd"  # openocd preferred but missing
    _fake_tool(bin_dir, "openocd")
    assert _runner(F746).name == "openocd"
    assert _runner(F746, preferred="pyocd").name == "pyocd"


def test_openocd_command_and_serial_number(bin_dir, tmp_path):
    log = _fake_tool(bin_dir, "openocd")
    image = tmp_path / "firmware.elf"
    image.write_bytes(b"\x7fELF")
    _runner(F746, image, serial_number="066DFF49").flash()
    assert log.read_text().splitlines() == [
        "-f", "interface/stlink.cfg", "-f", "target/stm32f7x.cfg", "-c", "adapter serial 066DFF49",
        "-c", f"program {image.as_posix()} verify reset exit",
    ]


def test_pyocd_command(bin_dir, tmp_path):
    log = _fake_tool(bin_dir, "pyocd")
    image = tmp_path / "firmware.elf"
    image.write_bytes(b"\x7fELF")
    # Each runner takes its own arguments from the record's runners entry of its name.
    board = dict(F746, runners={"openocd": {"configs": []}, "pyocd": {"target": "stm32f746zgtx"}})
    _runner(board, image, preferred="pyocd", serial_number="0670FF").flash()
    assert log.read_text().split() == ["flash", "--target", "stm32f746zgtx", "--uid", "0670FF", str(image)]


def test_failing_tool_reports_its_output(bin_dir, tmp_path):
    _fake_tool(bin_dir, "openocd", status=1, output="Error: open failed")
    image = tmp_path / "firmware.elf"
    image.write_bytes(b"\x7fELF")
    with pytest.raises(flash_runners.RunnerError, match="(?s)openocd failed with status 1.*open failed"):
        _runner(F746, image).flash()
    with pytest.raises(flash_runners.RunnerError, match="does not exist; build the project first"):
        _runner(F746, tmp_path / "missing.elf").flash()


def test_board_without_a_runner_of_this_template(bin_dir):
    with pytest.raises(flash_runners.RunnerError, match="no flash runner of this template can flash ardu"):
        _runner(get_board("arduino_uno").to_dict())


def test_qemu_runner_checks_the_emulator_and_the_image(bin_dir, tmp_path):
    board = get_board("mps2_an385").to_dict()
    image = tmp_path / "firmware.elf"
    runner = _runner(board, image)
    assert runner.name == "qemu"
    image.write_bytes(b"\x7fELF\x01\x01" + bytes(12) + b"\x28\x00")
    with pytest.raises(flash_runners.ToolNotFoundError, match="qemu-system-arm not found on PATH"):
        runner.flash()
    _fake_tool(bin_dir, "qemu-system-arm")
    runner.flash()
    image.write_bytes(b"\x7fELF\x02\x01" + bytes(12) + b"\xb7\x00")  # a 64-bit AArch64 ELF
    with pytest.raises(flash_runners.RunnerError, match="not a 32-bit little-endian Arm ELF"):
        runner.flash()


# ---- serial ports (pyserial's comports) -------------------------------------------------------

def _port(device, vid=None, pid=None, serial_number=None, description="n/a"):
    info = ListPortInfo(device, skip_link_detection=True)
    info.vid, info.pid, info.serial_number, info.description = vid, pid, serial_number, description
    return info


@pytest.fixture
def ports(monkeypatch):
    present = []
    monkeypatch.setattr(serial.tools.list_ports, "comports", lambda *a, **k: list(present))
    return present


def test_serial_port_found_by_vid_pid(ports):
    ports += [_port("/dev/ttyS0"), _port("/dev/ttyACM0", 0x0483, 0x374B, "066DFF49", "STM32 STLink")]
    assert discovery.find_serial_port(F746["usb_vid_pid"], board="nucleo_f746zg") == "/dev/ttyACM0"


def test_two_boards_need_a_serial_number(ports):
    ports += [_port("/dev/ttyACM0", 0x0483, 0x374B, "AAA"), _port("/dev/ttyACM1", 0x0483, 0x374B, "BBB")]
    with pytest.raises(discovery.DiscoveryError) as info:
        discovery.find_serial_port(["0483:374b"], board="nucleo_f746zg")
    message = str(info.value)
    assert "2 serial ports match nucleo_f746zg" in message
    assert "/dev/ttyACM0 (0483:374b, serial AAA" in message
    assert "/dev/ttyACM1 (0483:374b, serial BBB" in message
    assert "-o serial_number=" in message
    assert discovery.find_serial_port(["0483:374b"], serial_number="BBB") == "/dev/ttyACM1"


def test_no_matching_port_lists_what_is_there(ports):
    ports += [_port("/dev/ttyUSB0", 0x1A86, 0x7523, None, "USB Serial")]
    with pytest.raises(discovery.DiscoveryError) as info:
        discovery.find_serial_port(["0483:374b"], board="nucleo_f746zg")
    assert "no serial port of nucleo_f746zg found (USB id 0483:374b)" in str(info.value)
    assert "/dev/ttyUSB0 (1a86:7523" in str(info.value)
    with pytest.raises(discovery.DiscoveryError, match="serial number XYZ"):
        discovery.find_serial_port(["1a86:7523"], serial_number="XYZ")


# ---- debug probes (a pyusb backend) -----------------------------------------------------------

class _UsbBackend(usb.backend.IBackend):
    """A pyusb backend serving fixed device descriptors and string descriptors."""

    def __init__(self, devices):
        self.devices = devices  # dicts: vid, pid, serial (or None), bus, address

    def enumerate_devices(self):
        return iter(self.devices)

    def get_device_descriptor(self, dev):
        return types.SimpleNamespace(
            bLength=18, bDescriptorType=1, bcdUSB=0x200, bDeviceClass=0, bDeviceSubClass=0, bDeviceProtocol=0,
            bMaxPacketSize0=64, idVendor=dev["vid"], idProduct=dev["pid"], bcdDevice=0x100, iManufacturer=0,
            iProduct=0, iSerialNumber=3 if dev["serial"] else 0, bNumConfigurations=1, bus=dev["bus"],
            address=dev["address"], port_number=None, port_numbers=None, speed=None)

    def open_device(self, dev):
        return dev

    def close_device(self, handle):
        pass

    def ctrl_transfer(self, handle, bmRequestType, bRequest, wValue, wIndex, data_or_wLength, timeout):
        if wValue & 0xFF == 0:
            payload = bytes([4, 3, 0x09, 0x04])  # supported languages: en-US
        else:
            text = handle["serial"].encode("utf-16-le")
            payload = bytes([2 + len(text), 3]) + text
        n = min(len(data_or_wLength), len(payload))
        data_or_wLength[:n] = array.array("B", payload[:n])
        return n


def _usb(vid, pid, serial, address):
    return {"vid": vid, "pid": pid, "serial": serial, "bus": 1, "address": address}


def test_probes_enumerated_with_serial_numbers():
    backend = _UsbBackend([_usb(0x0483, 0x374B, "066DFF49", 5), _usb(0x046D, 0xC52B, None, 6),
                           _usb(0x0483, 0x374E, "003A00", 7)])
    probes = discovery.list_probes(["0483:374b", "0483:374e"], backend=backend)
    assert [(p.vid_pid, p.serial_number, p.address) for p in probes] == [
        ("0483:374b", "066DFF49", 5), ("0483:374e", "003A00", 7)]


def test_probe_selection_by_serial_number():
    backend = _UsbBackend([_usb(0x0483, 0x374B, "AAA", 5), _usb(0x0483, 0x374B, "BBB", 6)])
    with pytest.raises(discovery.DiscoveryError, match="2 debug probes match nucleo_f746zg.*AAA.*BBB"):
        discovery.select_probe(["0483:374b"], board="nucleo_f746zg", backend=backend)
    assert discovery.select_probe(["0483:374b"], serial_number="BBB", backend=backend).address == 6
    with pytest.raises(discovery.DiscoveryError, match="no debug probe of nucleo_f746zg"):
        discovery.select_probe(["0483:374b"], serial_number="CCC", board="nucleo_f746zg", backend=backend)


# ---- rendering from the board record ----------------------------------------------------------

RUNTIME_INCLUDE = REPO_ROOT / "templates" / "runtime" / "include"


@pytest.mark.parametrize("name,flags", [
    ("mps2_an385", "-mcpu=cortex-m3 -mthumb -mfloat-abi=soft"),
    ("mps2_an386", "-mcpu=cortex-m4 -mthumb -mfloat-abi=hard -mfpu=fpv4-sp-d16"),
    ("mps2_an500", "-mcpu=cortex-m7 -mthumb -mfloat-abi=hard -mfpu=fpv5-d16"),
])
def test_rendered_tree_follows_the_board(tmp_path, name, flags):
    board = get_board(name).to_dict()
    render.write_firmware_tree(tmp_path, board, "smoke", RUNTIME_INCLUDE)
    assert f"ARCH_FLAGS := {flags}\n" in (tmp_path / "Makefile").read_text()
    linker = (tmp_path / "linker.ld").read_text()
    assert "FLASH (rx)  : ORIGIN = 0x00000000, LENGTH = 4194304" in linker
    assert "RAM   (rwx) : ORIGIN = 0x20000000, LENGTH = 4194304" in linker
    config = (tmp_path / "include" / "board_config.h").read_text()
    assert f'#define UTVM_BOARD_NAME "{name}"' in config
    assert f"#define UTVM_BOARD_HAS_FPU {1 if board['fpu'] else 0}" in config
    assert "#define UTVM_BOARD_SEMIHOSTING 1" in config  # emulated
    assert sorted(os.listdir(tmp_path / "src" / "app")) == ["smoke.c"]


def test_unknown_uart_driver_is_refused(tmp_path):
    board = dict(get_board("mps2_an385").to_dict(), uart={"driver": "pl011", "base": 0x1000, "rx_irq": 1})
    with pytest.raises(ValueError, match="no bare-metal UART driver 'pl011'"):
        render.write_firmware_tree(tmp_path, board, "smoke", RUNTIME_INCLUDE)
