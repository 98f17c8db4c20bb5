"""The STM32F4 port of the bare-metal template: the Nucleo boards users own, and their emulated twin.

- `utvm create-project baremetal MODEL p -o board=nucleo_f446re && utvm build p` makes an image whose
  vector table, clock setup and USART pins match the part, read back with arm-none-eabi-objdump;
  PLL builds of the F446RE and the F401RE too. The part's facts are written here from ST's
  reference manuals and the Nucleo user manual, not taken from the board database.
- Clock setup ends even when the RCC never answers (QEMU's STM32F405 leaves it out): an image built
  as for silicon boots under QEMU on the HSI, its waits bounded.
- A model that fits an F446RE (128 KiB of SRAM) but not an F401RE (96 KiB) is refused on the F401RE
  at create-project, with both numbers.
- `utvm flash` names the runner it uses, or what to install; with no board attached `utvm run`
  names the USB id it looked for and the ports it found.

The models on netduinoplus2 (STM32F405 under QEMU, the same USART and clock drivers) are in
test_baremetal_models.py; its platform layer in test_baremetal_qemu.py.
"""

from __future__ import annotations

import json
import os
import re
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO_ROOT, require_tool
from host_driven_helpers import CLI
from model_builders import make_small_tflite
from utvm.boards import get_board
from utvm.project_api import qemu

TEMPLATE_DIR = REPO_ROOT / "templates" / "baremetal"
sys.path[:0] = [str(REPO_ROOT), str(TEMPLATE_DIR)]
from utvm_baremetal import render, stm32f4  # noqa: E402

RUNTIME_INCLUDE = REPO_ROOT / "templates" / "runtime" / "include"
HSI_HZ = 16_000_000
# Per part: interrupt lines in its vector table, top of its main SRAM, its core clock from
# HSI / 8 x 168 / P and its bus dividers and flash wait states there (RM0390, RM0368), and the
# ST-LINK virtual COM port of its Nucleo board: USART2 (APB1, RCC_APB1ENR bit 17, interrupt 38)
# on PA2 / PA3, alternate function 7 (UM1724).
PARTS = {
    "nucleo_f446re": {"irqs": 97, "sram_top": 0x20020000, "pll_hz": 168_000_000, "pll_p": 2,
                      "apb1_div": 4, "apb2_div": 2, "flash_latency": 5},
    "nucleo_f401re": {"irqs": 85, "sram_top": 0x20018000, "pll_hz": 84_000_000, "pll_p": 4,
                      "apb1_div": 2, "apb2_div": 1, "flash_latency": 2},
}
USART2 = {"base": 0x40004400, "bus": 1, "rcc_bit": 17, "irq": 38, "tx": (0, 2), "rx": (0, 3), "af": 7}


def cli(*args, env=None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, timeout=timeout, env=env)


@pytest.fixture(scope="module")
def toolchain():
    for tool in ("arm-none-eabi-gcc", "arm-none-eabi-objdump", "make"):
        require_tool(tool)


@pytest.fixture(scope="module")
def f446_project(toolchain, tmp_path_factory):
    """The issue's commands: create-project for nucleo_f446re from a model file, then build."""
    workdir = tmp_path_factory.mktemp("f446")
    model = make_small_tflite(workdir / "small.tflite")
    project = workdir / "p"
    created = cli("create-project", "baremetal", model, project, "-o", "board=nucleo_f446re")
    assert created.returncode == 0, created.stdout + created.stderr
    built = cli("build", project)
    assert built.returncode == 0, built.stdout + built.stderr
    return project


def _render_and_build(tmp_path: Path, board: dict, app: str = "selftest") -> Path:
    render.write_firmware_tree(tmp_path, board, app, RUNTIME_INCLUDE)
    result = subprocess.run(["make", "-s"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    return tmp_path / "build" / "firmware.elf"


class Image:
    """An ELF read back with arm-none-eabi-objdump: its symbols, sections and bytes."""

    def __init__(self, elf: Path):
        self.elf = elf
        self.symbols = {}
        for line in self._objdump("-t").splitlines():
            # "080001d0 g     F .text  00000098 clock_init"
            fields = line.split()
            if len(fields) >= 5 and re.fullmatch(r"[0-9a-f]{8}", fields[0]) and re.fullmatch(
                    r"[0-9a-f]{8}", fields[-2]):
                self.symbols[fields[-1]] = (int(fields[0], 16), int(fields[-2], 16))
        self.sections = {}
        for line in self._objdump("-h").splitlines():
            # "  0 .vectors      000001c4  08000000  08000000  00010000  2**2"
            fields = line.split()
            if len(fields) >= 6 and fields[0].isdigit():
                self.sections[fields[1]] = (int(fields[3], 16), int(fields[2], 16))

    def _objdump(self, *args: str) -> str:
        return subprocess.run(["arm-none-eabi-objdump", *args, str(self.elf)], capture_output=True,
                              text=True, check=True, timeout=60).stdout

    def read(self, address: int, size: int) -> bytes:
        out = self._objdump("-s", f"--start-address={address:#x}", f"--stop-address={address + size:#x}")
        data = bytearray()
        for line in out.splitlines():
            # " 8000000 00000220 a9050008 ..  ascii", four bytes per group, in memory order
            match = re.match(r"^ ([0-9a-f]+) ((?:[0-9a-f]{2,8} ?){1,4})", line)
            if match:
                data += bytes.fromhex(match.group(2).replace(" ", ""))
        assert len(data) == size, f"read {len(data)} of {size} bytes at {address:#x}"
        return bytes(data)

    def words(self, symbol: str) -> tuple:
        address, size = self.symbols[symbol]
        return struct.unpack(f"<{size // 4}I", self.read(address, size))

    def disassembly(self, function: str) -> str:
        address, size = self.symbols[function]
        return self._objdump("-d", f"--start-address={address:#x}", f"--stop-address={address + size:#x}")


def _check_vector_table(image: Image, part: dict) -> None:
    address, size = image.sections[".vectors"]
    assert address == 0x08000000, "the vector table must start the flash, where the part boots from"
    assert size == 4 * (16 + part["irqs"]), "one vector per exception and per interrupt line of the part"
    table = struct.unpack(f"<{size // 4}I", image.read(address, size))
    assert table[0] == part["sram_top"], "initial stack pointer: the top of the part's main SRAM"
    assert table[1] == image.symbols["Reset_Handler"][0] | 1
    assert table[15] == image.symbols["SysTick_Handler"][0] | 1
    irq_handler = image.symbols["irq_handler"][0] | 1
    assert table[16 + USART2["irq"]] == irq_handler, "USART2's interrupt reaches the UART's handler"
    assert set(table[16:]) == {irq_handler}


def _check_usart(image: Image) -> None:
    base, bus, rcc_bit, baud, tx_port, tx_pin, rx_port, rx_pin, af = image.words("utvm_stm32_usart")
    assert (base, bus, rcc_bit, baud) == (USART2["base"], USART2["bus"], USART2["rcc_bit"], 115200)
    assert ((tx_port, tx_pin), (rx_port, rx_pin), af) == (USART2["tx"], USART2["rx"], USART2["af"])
    # The driver reads its setup from this descriptor: its address is in uart_init's literal pool.
    assert f".word\t0x{image.symbols['utvm_stm32_usart'][0]:08x}" in image.disassembly("uart_init")


def _check_clock(image: Image, part: dict, use_pll: bool) -> None:
    hsi, target, pll_on, rcc_modelled, pllcfgr, prescalers, flash_acr, apb1_shift, apb2_shift = \
        image.words("utvm_stm32_clock")
    assert (hsi, pll_on, rcc_modelled) == (HSI_HZ, int(use_pll), 1)
    assert target == (part["pll_hz"] if use_pll else HSI_HZ)
    # RCC_PLLCFGR: PLLM [5:0], PLLN [14:6], PLLP [17:16] (P = 2 x (field + 1)), PLLSRC [22] (0: HSI),
    # PLLQ [27:24]
    m, n = pllcfgr & 0x3F, (pllcfgr >> 6) & 0x1FF
    p, source, q = 2 * (((pllcfgr >> 16) & 3) + 1), (pllcfgr >> 22) & 1, (pllcfgr >> 24) & 0xF
    assert (m, n, p, source, q) == (8, 168, part["pll_p"], 0, 7)
    assert HSI_HZ // m * n // p == part["pll_hz"] and HSI_HZ // m * n // q == 48_000_000  # USB's 48 MHz
    # RCC_CFGR PPRE1 [12:10], PPRE2 [15:13]: 0 undivided, 4 + k divides by 2^(k+1); HPRE [7:4] 0
    codes = ((prescalers >> 10) & 7, (prescalers >> 13) & 7)
    dividers = [1 if code < 4 else 2 << (code - 4) for code in codes]
    assert dividers == [part["apb1_div"], part["apb2_div"]] and prescalers & 0xF0 == 0
    assert (1 << apb1_shift, 1 << apb2_shift) == (part["apb1_div"], part["apb2_div"])
    assert part["pll_hz"] // part["apb1_div"] <= 45_000_000  # APB1's limit on the F4 parts
    assert flash_acr & 0xF == part["flash_latency"] and flash_acr & 0x700 == 0x700  # prefetch, I and D cache
    assert f".word\t0x{image.symbols['utvm_stm32_clock'][0]:08x}" in image.disassembly("clock_init")


def test_f446re_image_from_the_cli_matches_the_part(f446_project):
    image = Image(f446_project / "build" / "firmware.elf")
    _check_vector_table(image, PARTS["nucleo_f446re"])
    _check_clock(image, PARTS["nucleo_f446re"], use_pll=False)
    _check_usart(image)
    # The project keeps the clock its image runs at, for cycle counts on the board.
    record = json.loads((f446_project / "utvm-project.json").read_text())
    assert record["board"]["clock_hz"] == HSI_HZ and record["board"]["clock"]["use_pll"] is False


@pytest.mark.parametrize("board", sorted(PARTS))
def test_pll_images_match_the_part(board, toolchain, tmp_path):
    elf = _render_and_build(tmp_path, stm32f4.running_board(get_board(board).to_dict(), use_pll=True))
    image = Image(elf)
    _check_vector_table(image, PARTS[board])
    _check_clock(image, PARTS[board], use_pll=True)
    _check_usart(image)


def test_clock_waits_end_when_the_rcc_never_answers(toolchain, tmp_path):
    """An image built as for silicon (RCC present, PLL on), run where the RCC reads 0 (QEMU's STM32F405):
    HSIRDY and PLLRDY never come, the waits end, and the core stays on the HSI, saying so."""
    require_tool("qemu-system-arm")
    board = get_board("netduinoplus2").to_dict()
    board["clock"]["rcc_modelled"] = True
    board = stm32f4.running_board(board, use_pll=True)
    assert board["clock_hz"] == 168_000_000
    elf = _render_and_build(tmp_path, board)
    with qemu.QemuProcess(elf, "netduinoplus2") as runner:
        port = runner.serial
        port.timeout = 30  # a deadline, not a timing check
        assert port.readline() == f"BOOT netduinoplus2 systick {HSI_HZ}\n".encode()
        port.write(b"E\x03abc")
        assert port.read(4) == b"e" + bytes(~b & 0xFF for b in b"cba")


def test_a_model_that_fits_the_f446re_is_refused_on_the_f401re(toolchain, tmp_path):
    """A float32 Relu over 12,800 values: 100 KiB of arena (input and output), so about 111 KiB of
    RAM with the runtime and the stack: in the F446RE's 128 KiB, not in the F401RE's 96 KiB."""
    onnx = pytest.importorskip("onnx", reason="onnx not installed")
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "wide",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 12800])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 12800])])
    model = tmp_path / "wide.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(model))
    archive = tmp_path / "wide.tar"
    compiled = cli("compile", model, "-o", archive, "--target", json.dumps(get_board("nucleo_f401re").target))
    assert compiled.returncode == 0, compiled.stderr

    refused = cli("create-project", "baremetal", archive, tmp_path / "f401", "-o", "board=nucleo_f401re")
    assert refused.returncode == 2, refused.stdout + refused.stderr
    found = re.search(r"the model does not fit nucleo_f401re: needs [\d.]+ KiB \((\d+) bytes\) of RAM, the "
                      r"board has 96 KiB \(98304 bytes\); largest: arena 100 KiB", refused.stderr)
    assert found and 98304 < int(found.group(1)) < 131072, refused.stderr
    assert not (tmp_path / "f401").exists()

    created = cli("create-project", "baremetal", archive, tmp_path / "f446", "-o", "board=nucleo_f446re")
    assert created.returncode == 0, created.stderr
    built = cli("build", tmp_path / "f446")  # and the linker agrees that it fits
    assert built.returncode == 0, built.stdout + built.stderr
    assert re.search(r"RAM \d+ of 131072 B", built.stdout + built.stderr), built.stdout + built.stderr


def _path_without(*tools: str) -> str:
    """PATH with no directory that holds any of the tools."""
    dirs = os.environ.get("PATH", "").split(os.pathsep)
    return os.pathsep.join(d for d in dirs
                           if d and not any(os.path.exists(os.path.join(d, t)) for t in tools))


def test_flash_without_a_runner_says_what_to_install(f446_project):
    env = dict(os.environ, PATH=_path_without("openocd", "pyocd"))
    result = cli("flash", f446_project, env=env, timeout=120)
    assert result.returncode == 2, result.stdout + result.stderr
    assert ("none of the tools that can flash nucleo_f446re is on PATH: openocd (Debian/Ubuntu: `sudo "
            "apt-get install openocd`" in result.stderr), result.stderr
    assert "pyocd (`pip install pyocd`" in result.stderr and result.stderr.count("hint:") == 1


def test_flash_names_its_runner(f446_project):
    openocd = require_tool("openocd")
    result = cli("flash", f446_project, timeout=180)
    elf = f446_project / "build" / "firmware.elf"
    assert (f"baremetal: flashing build/firmware.elf onto nucleo_f446re with openocd: {openocd} -f "
            f"board/st_nucleo_f4.cfg -c 'program {elf} verify reset exit'") in result.stderr, result.stderr
    if result.returncode != 0:  # no ST-LINK here (with one attached, the board is flashed)
        assert "openocd could not flash nucleo_f446re" in result.stderr, result.stderr
        assert "hint: is the board plugged in (USB id 0483:374b)" in result.stderr


def test_run_with_no_board_attached_names_what_it_looked_for(f446_project):
    serial_tools = pytest.importorskip("serial.tools.list_ports", reason="pyserial not installed")
    ports = list(serial_tools.comports())
    if any((p.vid, p.pid) == (0x0483, 0x374B) for p in ports):
        pytest.skip("an ST-LINK virtual COM port is attached")
    result = cli("run", f446_project, timeout=120)  # the deadline: it must answer, not wait for a board
    assert result.returncode == 2, result.stdout + result.stderr
    seen = "; ".join(p.device for p in ports) or "none"
    found = re.search(r"no serial port of nucleo_f446re found \(USB id 0483:374b\); serial ports present: "
                      r"(.*?)\. Is the board plugged in", result.stderr)
    assert found, result.stderr
    assert all(device in found.group(1) for device in seen.split("; ")), (seen, found.group(1))
    assert "hint: plug the board in, or name its port with -o serial_port=..." in result.stderr


def test_pll_is_refused_on_a_board_with_a_fixed_clock():
    # The template's helpers raise the floor's UserError as the template imports it (project_api).
    with pytest.raises(Exception, match="board mps2_an386 has no PLL setting") as refused:
        stm32f4.running_board(get_board("mps2_an386").to_dict(), use_pll=True)
    assert type(refused.value).__name__ == "UserError"
    # The emulated twin has no RCC: its clock is QEMU's, whatever the option says.
    twin = get_board("netduinoplus2").to_dict()
    assert stm32f4.running_board(twin, use_pll=False)["clock_hz"] == 168_000_000
