"""Find what `west build` needs: west, a Zephyr 4.x tree, a toolchain (the Zephyr SDK, or the GNU Arm
Embedded toolchain), CMake and Ninja. Each one that is missing is one UserError naming what to
install and the option to set, raised before any tool runs.

Standard library only.
"""

from __future__ import annotations

import dataclasses
import glob
import importlib.util
import os
import pathlib
import re
import shutil
import subprocess
import sys
from typing import Dict, List

from project_api.errors import UserError

MIN_ZEPHYR = (4, 0)
# The release the generated west.yml pins and docs/zephyr.md installs.
ZEPHYR_REVISION = "v4.4.0"
MIN_CMAKE = (3, 20)
TOOLCHAINS = ("zephyr", "gnuarmemb")
DOCS = "docs/zephyr.md in utvm's repository"
INSTALL_ZEPHYR = (f"install Zephyr {MIN_ZEPHYR[0]}.x: `west init -m "
                  f"https://github.com/zephyrproject-rtos/zephyr --mr {ZEPHYR_REVISION} ~/zephyrproject && "
                  "cd ~/zephyrproject && west update`, then give "
                  f"-o zephyr_base=~/zephyrproject/zephyr (or set ZEPHYR_BASE); see {DOCS}")
# Where the Zephyr SDK's installer puts it (its documented locations), newest version first.
_SDK_GLOBS = ("~/zephyr-sdk-*", "~/.local/zephyr-sdk-*", "~/.local/opt/zephyr-sdk-*", "~/bin/zephyr-sdk-*",
              "/opt/zephyr-sdk-*", "/usr/zephyr-sdk-*", "/usr/local/zephyr-sdk-*")


@dataclasses.dataclass(frozen=True)
class BuildEnvironment:
    """Everything `west build` needs, found and checked."""

    west: List[str]  # the west command, as argv
    zephyr_base: pathlib.Path
    zephyr_version: tuple
    env: Dict[str, str]  # variables to add to the environment of west build and flash


def west_command(west_cmd: str) -> List[str]:
    """The west command line: the option's words, else `west` on PATH, else this Python's west module."""
    if west_cmd:
        words = west_cmd.split()
        if shutil.which(words[0]) is None and not os.path.isfile(words[0]):
            raise UserError(f"west_cmd {west_cmd!r}: {words[0]} is not found",
                            hint="give the west program, e.g. -o west_cmd=west or "
                                 f"-o west_cmd='{sys.executable} -m west'")
        return words
    if shutil.which("west"):
        return ["west"]
    if importlib.util.find_spec("west") is None:
        raise UserError("west, Zephyr's meta-tool, is not installed",
                        hint="`pip install west`, or give its path with -o west_cmd=...")
    return [sys.executable, "-m", "west"]


def zephyr_version(base: pathlib.Path) -> tuple:
    """(major, minor, patch) from a Zephyr tree's VERSION file."""
    text = (base / "VERSION").read_text(encoding="utf-8", errors="replace")
    fields = dict(re.findall(r"^\s*(VERSION_MAJOR|VERSION_MINOR|PATCHLEVEL)\s*=\s*(\d+)", text, re.M))
    try:
        return int(fields["VERSION_MAJOR"]), int(fields["VERSION_MINOR"]), int(fields.get("PATCHLEVEL", 0))
    except KeyError:
        raise UserError(f"{base / 'VERSION'} does not say which Zephyr this is",
                        hint=INSTALL_ZEPHYR) from None


def find_zephyr_base(option: str) -> pathlib.Path:
    """The Zephyr tree: the zephyr_base option, else $ZEPHYR_BASE; checked to be a Zephyr 4.x tree."""
    given = option or os.environ.get("ZEPHYR_BASE", "")
    if not given:
        raise UserError("no Zephyr tree: the zephyr_base option is not set and ZEPHYR_BASE is empty",
                        hint=INSTALL_ZEPHYR)
    base = pathlib.Path(given).expanduser()
    source = "zephyr_base" if option else "ZEPHYR_BASE"
    if not base.is_dir():
        raise UserError(f"no Zephyr tree at {base} ({source})", hint=INSTALL_ZEPHYR)
    if not (base / "VERSION").is_file() or not (base / "share" / "zephyr-package").is_dir():
        raise UserError(f"{base} ({source}) is not a Zephyr tree: it has no VERSION and share/zephyr-package",
                        hint="point it at the zephyr folder of a west workspace; " + INSTALL_ZEPHYR)
    version = zephyr_version(base)
    if version[:2] < MIN_ZEPHYR:
        raise UserError(f"{base} is Zephyr {'.'.join(map(str, version))}; this template is written for "
                        f"Zephyr {MIN_ZEPHYR[0]}.x (board names of the hardware model v2, its UART API)",
                        hint=INSTALL_ZEPHYR)
    return base


def find_zephyr_sdk(option: str) -> pathlib.Path:
    """The Zephyr SDK: the zephyr_sdk option, $ZEPHYR_SDK_INSTALL_DIR, or its installer's locations."""
    given = option or os.environ.get("ZEPHYR_SDK_INSTALL_DIR", "")
    candidates = [pathlib.Path(given).expanduser()] if given else [
        pathlib.Path(p) for pattern in _SDK_GLOBS
        for p in sorted(glob.glob(os.path.expanduser(pattern)), reverse=True)]
    for sdk in candidates:
        if (sdk / "sdk_version").is_file():
            return sdk
    where = f"{given} has no sdk_version file" if given else "none in " + ", ".join(_SDK_GLOBS)
    raise UserError(f"no Zephyr SDK found ({where})",
                    hint="install it with `west sdk install -t arm-zephyr-eabi` from the Zephyr tree, and "
                         "give -o zephyr_sdk=PATH if it is elsewhere; or build with the GNU Arm Embedded "
                         "toolchain: -o toolchain=gnuarmemb (Debian: apt-get install gcc-arm-none-eabi)")


def find_gnuarmemb(option: str) -> pathlib.Path:
    """The GNU Arm Embedded toolchain's prefix: the gnuarmemb_path option, else arm-none-eabi-gcc's."""
    if option:
        prefix = pathlib.Path(option).expanduser()
    else:
        gcc = shutil.which("arm-none-eabi-gcc")
        if gcc is None:
            raise UserError("toolchain=gnuarmemb, and arm-none-eabi-gcc is not on PATH",
                            hint="install it (Debian: apt-get install gcc-arm-none-eabi), or give its folder "
                                 "with -o gnuarmemb_path=PREFIX (the one holding bin/arm-none-eabi-gcc)")
        prefix = pathlib.Path(gcc).resolve().parent.parent
    if not (prefix / "bin" / "arm-none-eabi-gcc").is_file():
        raise UserError(f"gnuarmemb_path {prefix} has no bin/arm-none-eabi-gcc",
                        hint="give the toolchain's prefix with -o gnuarmemb_path=PREFIX")
    return prefix


def _check_cmake_and_ninja() -> None:
    cmake = shutil.which("cmake")
    if cmake is None:
        raise UserError("cmake is not on PATH; Zephyr builds with CMake",
                        hint=f"install CMake {'.'.join(map(str, MIN_CMAKE))} or newer (newer Zephyr releases "
                             "need more; `pip install cmake` has the latest)")
    out = subprocess.run([cmake, "--version"], capture_output=True, text=True, timeout=30).stdout
    found = re.search(r"(\d+)\.(\d+)", out)
    if found and (int(found[1]), int(found[2])) < MIN_CMAKE:
        raise UserError(f"CMake {found[0]} is too old for Zephyr 4.x",
                        hint=f"install CMake {'.'.join(map(str, MIN_CMAKE))} or newer (`pip install cmake`)")
    if shutil.which("ninja") is None:
        raise UserError("ninja is not on PATH; west build uses Ninja",
                        hint="install it (Debian: apt-get install ninja-build, or `pip install ninja`)")


def build_environment(options: dict) -> BuildEnvironment:
    """Find and check everything `west build` needs, from the project's options; UserError otherwise."""
    west = west_command(options.get("west_cmd") or "")
    base = find_zephyr_base(options.get("zephyr_base") or "")
    env = {"ZEPHYR_BASE": str(base)}
    if options.get("toolchain", "zephyr") == "gnuarmemb":
        env.update(ZEPHYR_TOOLCHAIN_VARIANT="gnuarmemb",
                   GNUARMEMB_TOOLCHAIN_PATH=str(find_gnuarmemb(options.get("gnuarmemb_path") or "")))
    else:
        env.update(ZEPHYR_TOOLCHAIN_VARIANT="zephyr",
                   ZEPHYR_SDK_INSTALL_DIR=str(find_zephyr_sdk(options.get("zephyr_sdk") or "")))
    _check_cmake_and_ninja()
    return BuildEnvironment(west=west, zephyr_base=base, zephyr_version=zephyr_version(base), env=env)


def flash_environment(options: dict) -> BuildEnvironment:
    """What `west flash` needs: west and the Zephyr tree (its runners live there)."""
    west = west_command(options.get("west_cmd") or "")
    base = find_zephyr_base(options.get("zephyr_base") or "")
    return BuildEnvironment(west=west, zephyr_base=base, zephyr_version=zephyr_version(base),
                            env={"ZEPHYR_BASE": str(base)})
