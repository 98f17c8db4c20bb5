"""Flash runners, one class per tool, shaped as Zephyr's west runners are.

- :class:`RunnerCaps` says what a runner can do (flash, pick one of several probes by serial
  number, reset).
- :class:`RunnerConfig` carries what the build made and which board it is for, apart from any
  tool's own arguments.
- Each runner takes its own arguments from the board record's ``runners`` entry of its name
  (``{"openocd": {"configs": [...]}, "pyocd": {"target": ...}}``); it never reads the whole record.

The board record lists its runners most preferred first; :func:`select_runner` takes the first
whose tool is on PATH, and when none is, the error names each tool and how to install it. A
template registers the runners it supports: pyOCD and OpenOCD (physical Cortex-M boards) and QEMU
(emulated boards) are here; a template adds its own (avrdude, ssh...) beside them.

Standard library only: generated projects carry this file.
"""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Type

FLASH_TIMEOUT_SEC = 120.0


class RunnerError(RuntimeError):
    """Flashing failed, or no runner can flash this board."""


class ToolNotFoundError(RunnerError):
    """The runner's program is not on PATH."""


@dataclasses.dataclass(frozen=True)
class RunnerCaps:
    """What a runner can do."""

    flash: bool = True
    serial_number: bool = False  # can choose one of several attached probes by serial number
    reset: bool = False


@dataclasses.dataclass(frozen=True)
class RunnerConfig:
    """The build's artifacts and the board they are for; no tool's own arguments."""

    board: str
    image: Path  # the image to write (an ELF for these runners)
    serial_number: Optional[str] = None
    emulator: Optional[Mapping[str, Any]] = None  # the board record's emulator, for emulated boards


class FlashRunner:
    """Base class: find the tool, build its command line, run it with a deadline."""

    name = ""
    tool = ""
    install_hint = ""
    caps = RunnerCaps()

    def __init__(self, config: RunnerConfig, args: Optional[Mapping[str, Any]] = None):
        self.config = config
        self.args = dict(args or {})

    @classmethod
    def available(cls, config: RunnerConfig) -> bool:
        return shutil.which(cls.tool) is not None

    def tool_path(self) -> str:
        path = shutil.which(self.tool)
        if path is None:
            raise ToolNotFoundError(f"{self.tool} not found on PATH; it is needed to flash "
                                    f"{self.config.board} with the {self.name} runner. "
                                    f"Install it: {self.install_hint}")
        return path

    def command(self) -> List[str]:
        """The command that writes the image to the board."""
        raise NotImplementedError

    def describe(self) -> str:
        """One line for the user: the runner and the command it runs."""
        return f"{self.name}: {' '.join(self.command())}"

    def _check_image(self) -> Path:
        image = Path(self.config.image)
        if not image.is_file():
            raise RunnerError(f"firmware image {image} does not exist; build the project first")
        return image

    def flash(self, timeout: float = FLASH_TIMEOUT_SEC) -> None:
        """Write the image to the board; raise RunnerError with the tool's output when it fails."""
        self._check_image()
        cmd = self.command()
        try:
            result = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                                    timeout=timeout)
        except subprocess.TimeoutExpired:
            raise RunnerError(f"{self.tool} did not finish within {timeout:.0f} s: {' '.join(cmd)}") from None
        if result.returncode != 0:
            tail = (result.stdout + result.stderr)[-2000:]
            raise RunnerError(f"{self.tool} failed with status {result.returncode}: {' '.join(cmd)}\n{tail}")


class PyOcdRunner(FlashRunner):
    """pyOCD; args: ``target`` (pyOCD's target name; a CMSIS-Pack may provide it)."""

    name = "pyocd"
    tool = "pyocd"
    install_hint = "`pip install pyocd` (a CMSIS-Pack may be needed: `pyocd pack install <target>`)"
    caps = RunnerCaps(serial_number=True, reset=True)

    def command(self) -> List[str]:
        cmd = [self.tool_path(), "flash"]
        if self.args.get("target"):
            cmd += ["--target", str(self.args["target"])]
        if self.config.serial_number:
            cmd += ["--uid", self.config.serial_number]
        return cmd + [str(self.config.image)]


class OpenOcdRunner(FlashRunner):
    """OpenOCD; args: ``configs`` (the ``-f`` configuration files, interface then target)."""

    name = "openocd"
    tool = "openocd"
    install_hint = "Debian/Ubuntu: `sudo apt-get install openocd`; others: https://openocd.org"
    caps = RunnerCaps(serial_number=True, reset=True)

    def command(self) -> List[str]:
        configs = self.args.get("configs") or []
        if not configs:
            raise RunnerError(
                f"board {self.config.board} names no OpenOCD configuration for its openocd runner")
        cmd = [self.tool_path()]
        for cfg in configs:
            cmd += ["-f", str(cfg)]
        if self.config.serial_number:
            cmd += ["-c", f"adapter serial {self.config.serial_number}"]
        # OpenOCD's Tcl wants forward slashes, even on Windows.
        return cmd + ["-c", f"program {Path(self.config.image).as_posix()} verify reset exit"]


class QemuRunner(FlashRunner):
    """"Flashing" an emulated board checks that the emulator is there and that the image is an ELF
    for its machine; QEMU loads the image when the transport opens."""

    name = "qemu"
    install_hint = "Debian/Ubuntu: `sudo apt-get install qemu-system-arm` (qemu-system-misc for AVR)"
    # ELF e_machine of the images each QEMU system loads.
    _MACHINES = {"qemu-system-arm": (40, "32-bit little-endian Arm"), "qemu-system-avr": (83, "AVR")}

    @property
    def tool(self) -> str:  # type: ignore[override]
        return str((self.config.emulator or {}).get("system", "qemu-system-arm"))

    @classmethod
    def available(cls, config: RunnerConfig) -> bool:
        return True  # checked in flash(), which names the emulator binary when it is missing

    def command(self) -> List[str]:
        machine = (self.config.emulator or {}).get("machine")
        return [self.tool_path()] + (["-M", str(machine)] if machine else []) + ["-kernel",
                                                                                 str(self.config.image)]

    def flash(self, timeout: float = FLASH_TIMEOUT_SEC) -> None:
        image = self._check_image()
        self.tool_path()
        with open(image, "rb") as f:
            header = f.read(20)
        machine, what = self._MACHINES.get(self.tool, (None, "ELF"))
        if header[:4] != b"\x7fELF" or header[5] != 1 or (
                machine is not None and (header[4] != 1 or int.from_bytes(header[18:20],
                                                                          "little") != machine)):
            raise RunnerError(f"{image} is not a {what} ELF image")


RUNNERS: Dict[str, Type[FlashRunner]] = {r.name: r for r in (PyOcdRunner, OpenOcdRunner, QemuRunner)}


def select_runner(board: Mapping[str, Any], config: RunnerConfig, preferred: Optional[str] = None,
                  implemented: Optional[Mapping[str, Type[FlashRunner]]] = None) -> FlashRunner:
    """The runner to flash a board record with: `preferred` if given, else the first of the board's
    runners that the template implements (default: RUNNERS) and whose tool is installed."""
    implemented = RUNNERS if implemented is None else implemented
    listed: Dict[str, Any] = dict(board.get("runners") or {})
    names: Sequence[str] = [preferred] if preferred else list(listed)
    supported = [n for n in names if n in implemented]
    if not supported:
        raise RunnerError(f"no flash runner of this template can flash {board.get('name')} (it lists "
                          f"{', '.join(names) or 'none'}; this template has {', '.join(implemented)})")
    for name in supported:
        if implemented[name].available(config):
            return implemented[name](config, listed.get(name))
    missing = "; ".join(f"{implemented[n].tool or n} ({implemented[n].install_hint})" for n in supported)
    raise ToolNotFoundError(f"none of the tools that can flash {board.get('name')} is on PATH: {missing}")
