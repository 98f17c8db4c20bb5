"""How a sketch reaches a physical Arduino board: `arduino-cli upload` for any board, avrdude (through
the board's bootloader) for AVR boards when arduino-cli is absent. Each runner takes its arguments
from the board record's `runners` entry of its name, as the floor's runners do, and the serial port
the board was found on (by USB VID:PID and serial number; see project_api.usb_discovery).

Standard library only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional, Type

from project_api.flash_runners import FlashRunner, RunnerCaps, RunnerConfig, RunnerError


class _PortRunner(FlashRunner):
    """A runner that writes through the board's serial port (its bootloader)."""

    caps = RunnerCaps(serial_number=True, reset=True)
    port: Optional[str] = None
    fqbn: Optional[str] = None

    def _port(self) -> str:
        if not self.port:
            raise RunnerError(f"no serial port of {self.config.board} to upload through")
        return self.port


class ArduinoCliRunner(_PortRunner):
    """`arduino-cli upload`: the core's own upload tool and settings for the board's FQBN."""

    name = "arduino-cli"
    tool = "arduino-cli"
    install_hint = "https://arduino.github.io/arduino-cli (then `arduino-cli core install <core>`)"

    def command(self) -> List[str]:
        image = Path(self.config.image)
        return [self.tool_path(), "upload", "--fqbn", str(self.fqbn), "--port", self._port(),
                "--input-dir", str(image.parent), str(image.parent.parent)]


class AvrdudeRunner(_PortRunner):
    """avrdude through the bootloader; args: ``part`` (avrdude's -p), ``programmer`` (-c: arduino for
    optiboot, wiring for the Mega's stk500v2 bootloader), ``baud`` (the bootloader's rate)."""

    name = "avrdude"
    tool = "avrdude"
    install_hint = "Debian/Ubuntu: `sudo apt-get install avrdude`"

    def command(self) -> List[str]:
        for key in ("part", "programmer", "baud"):
            if not self.args.get(key):
                raise RunnerError(f"board {self.config.board} names no avrdude {key}")
        hex_image = Path(self.config.image).with_suffix(".hex")
        return [self.tool_path(), "-p", str(self.args["part"]), "-c", str(self.args["programmer"]),
                "-P", self._port(), "-b", str(self.args["baud"]), "-D",
                "-U", f"flash:w:{hex_image}:i"]


RUNNERS: Dict[str, Type[FlashRunner]] = {r.name: r for r in (ArduinoCliRunner, AvrdudeRunner)}


def bound_runners(port: Optional[str], fqbn: str) -> Dict[str, Type[FlashRunner]]:
    """The runners, each bound to the board's port and FQBN (select_runner instantiates them)."""
    return {name: type(cls.__name__, (cls,), {"port": port, "fqbn": fqbn}) for name, cls in RUNNERS.items()}


def physical_config(board: dict, image: Path, serial_number: Optional[str]) -> RunnerConfig:
    return RunnerConfig(board=board["name"], image=image, serial_number=serial_number)
