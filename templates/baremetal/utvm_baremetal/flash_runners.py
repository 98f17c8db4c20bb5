"""Flash runners, one class per tool (as Zephyr's west does): pyOCD, OpenOCD, and QEMU for emulated
boards. The board record lists the runners that can flash it, most preferred first; the first whose
tool is on PATH is used, and when none is, the error names each tool and how to install it.

Standard library only: generated projects carry this file.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Type

FLASH_TIMEOUT_SEC = 120.0


class RunnerError(RuntimeError):
    """Flashing failed, or no runner can flash this board."""


class ToolNotFoundError(RunnerError):
    """The runner's program is not on PATH."""


class FlashRunner:
    """Base class: find the tool, build its command line, run it with a deadline."""

    name = ""
    tool = ""
    install_hint = ""

    def __init__(self, board: dict, serial_number: Optional[str] = None):
        self.board = board
        self.serial_number = serial_number

    @classmethod
    def available(cls) -> bool:
        return shutil.which(cls.tool) is not None

    def tool_path(self) -> str:
        path = shutil.which(self.tool)
        if path is None:
            raise ToolNotFoundError(f"{self.tool} not found on PATH; it is needed to flash "
                                    f"{self.board['name']} with the {self.name} runner. "
                                    f"Install it: {self.install_hint}")
        return path

    def command(self, image: Path) -> List[str]:
        """The command that writes image to the board."""
        raise NotImplementedError

    def flash(self, image: Path, timeout: float = FLASH_TIMEOUT_SEC) -> None:
        """Write image to the board; raise RunnerError with the tool's output when it fails."""
        image = Path(image)
        if not image.is_file():
            raise RunnerError(f"firmware image {image} does not exist; build the project first")
        cmd = self.command(image)
        try:
            result = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                                    timeout=timeout)
        except subprocess.TimeoutExpired:
            raise RunnerError(f"{self.tool} did not finish within {timeout:.0f} s: {' '.join(cmd)}") from None
        if result.returncode != 0:
            tail = (result.stdout + result.stderr)[-2000:]
            raise RunnerError(f"{self.tool} failed with status {result.returncode}: {' '.join(cmd)}\n{tail}")


class PyOcdRunner(FlashRunner):
    name = "pyocd"
    tool = "pyocd"
    install_hint = "`pip install pyocd` (a CMSIS-Pack may be needed: `pyocd pack install <target>`)"

    def command(self, image: Path) -> List[str]:
        cmd = [self.tool_path(), "flash"]
        if self.board.get("pyocd_target"):
            cmd += ["--target", self.board["pyocd_target"]]
        if self.serial_number:
            cmd += ["--uid", self.serial_number]
        return cmd + [str(image)]


class OpenOcdRunner(FlashRunner):
    name = "openocd"
    tool = "openocd"
    install_hint = "Debian/Ubuntu: `sudo apt-get install openocd`; others: https://openocd.org"

    def command(self, image: Path) -> List[str]:
        configs = self.board.get("openocd") or []
        if not configs:
            raise RunnerError(f"board {self.board['name']} has no OpenOCD configuration in its record")
        cmd = [self.tool_path()]
        for cfg in configs:
            cmd += ["-f", cfg]
        if self.serial_number:
            cmd += ["-c", f"adapter serial {self.serial_number}"]
        # OpenOCD's Tcl wants forward slashes, even on Windows.
        return cmd + ["-c", f"program {image.as_posix()} verify reset exit"]


class QemuRunner(FlashRunner):
    """"Flashing" an emulated board checks the emulator is there and that the image is a loadable
    ELF; the image is handed to QEMU when the transport opens."""

    name = "qemu"
    install_hint = "Debian/Ubuntu: `sudo apt-get install qemu-system-arm`"

    @property
    def tool(self) -> str:  # type: ignore[override]
        return (self.board.get("emulator") or {}).get("system", "qemu-system-arm")

    @classmethod
    def available(cls) -> bool:
        return True  # checked per board in flash(), where the emulator binary is known

    def command(self, image: Path) -> List[str]:
        return [self.tool_path(), "-M", self.board["emulator"]["machine"], "-kernel", str(image)]

    def flash(self, image: Path, timeout: float = FLASH_TIMEOUT_SEC) -> None:
        image = Path(image)
        if not image.is_file():
            raise RunnerError(f"firmware image {image} does not exist; build the project first")
        self.tool_path()
        with open(image, "rb") as f:
            header = f.read(20)
        # ELF, 32-bit, little-endian, machine EM_ARM (40).
        if header[:4] != b"\x7fELF" or header[4] != 1 or header[5] != 1 or header[18:20] != b"\x28\x00":
            raise RunnerError(f"{image} is not a 32-bit little-endian Arm ELF image")


RUNNERS: Dict[str, Type[FlashRunner]] = {r.name: r for r in (PyOcdRunner, OpenOcdRunner, QemuRunner)}


def select_runner(board: dict, preferred: Optional[str] = None, serial_number: Optional[str] = None,
                  runners: Sequence[str] = ()) -> FlashRunner:
    """The runner to flash board with: `preferred` if given, else the first of the board's
    flash_runners that this template implements and whose tool is installed."""
    names = [preferred] if preferred else list(runners or board.get("flash_runners") or [])
    supported = [n for n in names if n in RUNNERS]
    if not supported:
        raise RunnerError(f"no flash runner of this template can flash {board['name']} (it lists "
                          f"{', '.join(names) or 'none'}; this template has {', '.join(RUNNERS)})")
    for name in supported:
        if RUNNERS[name].available():
            return RUNNERS[name](board, serial_number=serial_number)
    missing = "; ".join(f"{RUNNERS[n].tool} ({RUNNERS[n].install_hint})" for n in supported)
    raise ToolNotFoundError(f"none of the tools that can flash {board['name']} is on PATH: {missing}")
