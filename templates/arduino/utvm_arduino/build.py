"""Build a sketch with Arduino's tools, and report what the image takes of the board.

- arduino-cli, when it is on PATH or named with `-o arduino_cli_cmd=`: `arduino-cli compile --fqbn
  <FQBN> --build-path build <sketch>`, for any board whose core arduino-cli has installed;
- otherwise, for AVR boards, Debian's `arduino-builder` with `arduino-core-avr` (its hardware folder
  is /usr/share/arduino/hardware; arduino-builder's own platform.txt, in /usr/share/arduino-builder,
  says where ctags is). Debian's core does not compile with its gcc-avr 5.4 as shipped: WString.cpp
  wants DECIMAL_DIG (ArduinoCore-avr#633), which `-prefs compiler.cpp.extra_flags=...` supplies.

Both tools print what the image uses ("Sketch uses ... bytes", "Global variables use ..."); the
report adds where the model's constants ended up and the largest symbols. Standard library only.
"""

from __future__ import annotations

import shlex
import shutil
from pathlib import Path
from typing import List, Optional

from project_api import elf_sizes

DEBIAN_HARDWARE = "/usr/share/arduino/hardware"
DEBIAN_BUILDER_DIR = "/usr/share/arduino-builder"
DECIMAL_DIG_FIX = "compiler.cpp.extra_flags=-DDECIMAL_DIG=__DECIMAL_DIG__"
BUILD_DIR = "build"


class BuildToolMissing(RuntimeError):
    """Neither arduino-cli nor (for an AVR board) arduino-builder can build the sketch."""


def cli_command(cli: str, fqbn: str, sketch_dir: Path, build_path: str = BUILD_DIR) -> List[str]:
    return [cli, "compile", "--fqbn", fqbn, "--build-path", build_path, str(sketch_dir)]


def builder_command(builder: str, fqbn: str, ino: str, build_path: str) -> List[str]:
    """arduino-builder's command line; it wants an absolute build path."""
    return [builder, "-compile", "-hardware", DEBIAN_HARDWARE, "-hardware", DEBIAN_BUILDER_DIR,
            "-tools", DEBIAN_BUILDER_DIR, "-fqbn", fqbn, "-build-path", build_path,
            "-prefs", DECIMAL_DIG_FIX, ino]


def readme_commands(fqbn: str, sketch: str) -> dict:
    """The build commands the sketch's README shows, to run from the sketch folder."""
    cli = " ".join(shlex.quote(a) for a in cli_command("arduino-cli", fqbn, Path(".")))
    argv = builder_command("arduino-builder", fqbn, f"{sketch}.ino", "@@")
    builder = " ".join(shlex.quote(a) for a in argv)
    return {"cli_build": cli, "builder_build": "mkdir -p build && " + builder.replace("@@", '"$PWD/build"')}


def choose_command(sketch_dir: Path, board: dict, arduino_cli_cmd: Optional[str]) -> List[str]:
    """The command that builds the sketch into sketch_dir/build (see the module docstring)."""
    fqbn = board["arduino_fqbn"]
    build = sketch_dir / BUILD_DIR
    cli = arduino_cli_cmd or shutil.which("arduino-cli")
    if arduino_cli_cmd and shutil.which(arduino_cli_cmd) is None:
        raise BuildToolMissing(f"arduino_cli_cmd {arduino_cli_cmd!r} is not an executable on PATH")
    if cli:
        return cli_command(cli, fqbn, sketch_dir, str(build))
    if not fqbn.startswith("arduino:avr:"):
        raise BuildToolMissing(
            f"arduino-cli is not on PATH; it is needed to build for {board['name']} ({fqbn}). Install it "
            "(https://arduino.github.io/arduino-cli) and its core, or name it with -o arduino_cli_cmd=PATH")
    builder = shutil.which("arduino-builder")
    if builder is None or not Path(DEBIAN_HARDWARE, "arduino", "avr").is_dir():
        raise BuildToolMissing(
            "neither arduino-cli nor Debian's arduino-builder with the AVR core is installed; install "
            "arduino-cli, or (Debian/Ubuntu) `sudo apt-get install arduino-builder arduino-core-avr`")
    return builder_command(builder, fqbn, str(sketch_dir / f"{sketch_dir.name}.ino"), str(build.resolve()))


def elf_path(sketch_dir: Path) -> Path:
    """Where both tools leave the image."""
    return sketch_dir / BUILD_DIR / f"{sketch_dir.name}.ino.elf"


def size_report(elf: Path, board: dict, constant_symbols: List[str]) -> (dict, List[str]):
    """(build/sizes.json's record, the lines `build` prints): flash and RAM of the image against the
    board, where each model constant lives (flash or RAM), and the largest symbols."""
    sizes = elf_sizes.read_elf_sizes(elf, top=1 << 20)
    by_name = {name: (kind, size) for name, kind, size in sizes.largest_symbols}
    in_flash = sum(size for name in constant_symbols for kind, size in [by_name.get(name, ("", 0))]
                   if kind == "text")
    in_ram = sum(size for name in constant_symbols for kind, size in [by_name.get(name, ("", 0))]
                 if kind in ("data", "bss"))
    ram = sizes.data + sizes.bss
    record = {"text": sizes.text, "data": sizes.data, "bss": sizes.bss, "flash_bytes": sizes.flash_bytes,
              "ram_bytes": ram, "board_flash_bytes": board.get("flash_bytes"),
              "board_ram_bytes": board.get("ram_bytes"), "constants_in_flash_bytes": in_flash,
              "constants_in_ram_bytes": in_ram, "largest": sizes.largest_symbols[:10]}
    top = ", ".join(f"{name} {size} B ({'flash' if kind == 'text' else 'RAM'})"
                    for name, kind, size in sizes.largest_symbols[:5])
    left = (board["ram_bytes"] - ram) if board.get("ram_bytes") else None
    stack = f", {left} B left for the stack" if left is not None else ""
    lines = [
        f"{elf.name}: flash {sizes.flash_bytes} of {board.get('flash_bytes') or '-'} B (code and constants "
        f"{sizes.text} B, initial values of RAM data {sizes.data} B); RAM {ram} of "
        f"{board.get('ram_bytes') or '-'} B (.data {sizes.data} B, .bss {sizes.bss} B){stack}",
        f"model constants: {in_flash} B in flash, {in_ram} B in RAM",
        f"largest: {top}",
    ]
    return record, lines
