"""Build the disk of the emulated Jetson: an arm64 Debian root with Python and TVM's runtime, which
``qemu-aarch64 -L ROOT`` runs programs in.

    python -m utvm.templates.jetson.utvm_jetson.arm64_root DIR [--mirror URL] [--wheels DIR]

then ``utvm create-project jetson MODEL proj -o board=qemu_aarch64 -o project_type=tvm_runtime
-o qemu_root=DIR``. Steps:

1. ``mmdebstrap --variant=extract --architectures=arm64 --include=python3,libstdc++6`` (the smallest
   variant: the packages and their dependencies unpacked, no maintainer script run, so no arm64
   code has to run while building; about 80 MB);
2. ``pip download --platform manylinux_2_28_aarch64 --only-binary=:all:`` of the aarch64 wheels of
   apache-tvm, apache-tvm-ffi, numpy and their dependencies, at the versions utvm is tested with;
3. the wheels unpacked into the root's ``/usr/lib/python3/dist-packages``, without TVM's compiler
   library (240 MB): a board needs only the runtime, as on a real Jetson;
4. one import of TVM under qemu-aarch64, which checks the root and leaves its byte code compiled.

The root is built beside DIR and renamed into place, so a half-built root is never used; a stamp
(``etc/utvm-arm64-root.json``) records what went in, and a root whose stamp differs is rebuilt. A
lock file keeps two builds of the same DIR from racing. mmdebstrap needs root (or unprivileged
user namespaces) and the Debian mirror; pip needs PyPI.

Standard library only.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from typing import Callable, Optional

SUITE = "bookworm"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
DEBIAN_PACKAGES = ("python3", "libstdc++6")
# bookworm's python3; the wheels are chosen for it.
PYTHON_VERSION = "3.11"
WHEEL_PLATFORM = "manylinux_2_28_aarch64"
TVM_VERSION = "0.27.0.post1"
# The versions utvm is tested with on the host (pyproject.toml and its resolved dependencies).
WHEELS = (f"apache-tvm=={TVM_VERSION}", "apache-tvm-ffi==0.1.15.post2", "numpy==2.4.6", "ml_dtypes==0.7.0",
          "typing_extensions==4.16.0")
SITE_PACKAGES = "usr/lib/python3/dist-packages"
PYTHON = "usr/bin/python3"
STAMP = "etc/utvm-arm64-root.json"
# TVM's compiler library, which a board does not need (the runtime library stays).
COMPILER_LIBRARY = "tvm/lib/libtvm_compiler.so"
# Importing TVM's runtime under qemu-aarch64 takes 15 to 30 s on a 2-core machine.
IMPORT_CHECK_TIMEOUT_SEC = 300
MMDEBSTRAP_TIMEOUT_SEC = 1200
PIP_TIMEOUT_SEC = 1200
# The environment a board process runs TVM with: only the runtime library is loaded.
BOARD_ENV = {"TVM_USE_RUNTIME_LIB": "1"}


class RootBuildError(RuntimeError):
    """A step of the build failed; the message names the step and its output."""


def recipe() -> dict:
    """What a root is made of; a root is rebuilt when its stamp records anything else."""
    return {"suite": SUITE, "debian_packages": list(DEBIAN_PACKAGES), "python": PYTHON_VERSION,
            "platform": WHEEL_PLATFORM, "wheels": list(WHEELS), "without": [COMPILER_LIBRARY]}


def root_name() -> str:
    """A directory name keyed by the TVM version and the recipe, e.g. arm64-root-0.27.0.post1-1a2b3c4d."""
    digest = hashlib.sha256(json.dumps(recipe(), sort_keys=True).encode()).hexdigest()[:8]
    return f"arm64-root-{TVM_VERSION}-{digest}"


def is_ready(root) -> bool:
    """True when root is a finished root of the current recipe."""
    try:
        stamp = json.loads((pathlib.Path(root) / STAMP).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return stamp.get("recipe") == recipe()


def python_in(root) -> pathlib.Path:
    """The root's python3 (an aarch64 program: run it under qemu-aarch64 -L root)."""
    return pathlib.Path(root) / PYTHON


def _run(command, step: str, timeout: float, progress, env=None) -> None:
    progress(f"{step}: {' '.join(str(c) for c in command[:6])}{' ...' if len(command) > 6 else ''}")
    try:
        result = subprocess.run([str(c) for c in command], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, timeout=timeout, env=env)
    except FileNotFoundError as err:
        raise RootBuildError(f"{step}: {err.filename} is not installed") from None
    except subprocess.TimeoutExpired:
        raise RootBuildError(f"{step}: did not finish within {timeout:g} s") from None
    if result.returncode != 0:
        tail = "\n".join(result.stdout.decode("utf-8", "replace").strip().splitlines()[-15:])
        raise RootBuildError(f"{step} failed with exit code {result.returncode}:\n{tail}")


def download_wheels(wheel_dir, progress=print) -> list:
    """The aarch64 wheels of WHEELS in wheel_dir (pip skips those already there)."""
    wheel_dir = pathlib.Path(wheel_dir)
    wheel_dir.mkdir(parents=True, exist_ok=True)
    _run([sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
          "--only-binary=:all:", "--platform", WHEEL_PLATFORM, "--python-version", PYTHON_VERSION,
          "--implementation", "cp", "--dest", wheel_dir, *WHEELS],
         "downloading the aarch64 wheels (about 115 MB)", PIP_TIMEOUT_SEC, progress)
    wheels = sorted(wheel_dir.glob("*.whl"))
    wanted = {spec.split("==")[0].replace("-", "_").lower() for spec in WHEELS}
    found = {w.name.split("-")[0].lower() for w in wheels}
    if not wanted <= found:
        raise RootBuildError(f"pip left no wheel for {', '.join(sorted(wanted - found))} in {wheel_dir}")
    return [w for w in wheels if w.name.split("-")[0].lower() in wanted]


def _unpack(wheels, site: pathlib.Path) -> None:
    site.mkdir(parents=True, exist_ok=True)
    for wheel in wheels:
        with zipfile.ZipFile(wheel) as archive:
            archive.extractall(site)
    (site / COMPILER_LIBRARY).unlink(missing_ok=True)


def _check_import(root: pathlib.Path, progress) -> None:
    qemu = shutil.which("qemu-aarch64")
    if qemu is None:
        raise RootBuildError("qemu-aarch64 is not installed (Debian: apt-get install qemu-user)")
    env = dict(os.environ, **BOARD_ENV)
    _run([qemu, "-L", root, python_in(root), "-c", "import tvm, tvm.rpc, tvm.runtime.vm, numpy"],
         "checking: import TVM's runtime under qemu-aarch64 (takes about 20 s)", IMPORT_CHECK_TIMEOUT_SEC,
         progress, env=env)


def build_root(dest, wheel_dir=None, mirror: str = DEFAULT_MIRROR,
               progress: Callable[[str], None] = print) -> pathlib.Path:
    """Build the root at dest (replacing an outdated one); returns dest."""
    dest = pathlib.Path(dest).resolve()
    started = time.monotonic()

    def say(text: str) -> None:
        progress(f"[arm64 root {time.monotonic() - started:5.0f}s] {text}")

    if shutil.which("mmdebstrap") is None:
        raise RootBuildError("mmdebstrap is not installed (Debian: apt-get install mmdebstrap)")
    dest.parent.mkdir(parents=True, exist_ok=True)
    work = pathlib.Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        wheels = download_wheels(wheel_dir or work / "wheels", say)
        staging = work / "root"
        _run(["mmdebstrap", "--variant=extract", "--architectures=arm64",
              f"--include={','.join(DEBIAN_PACKAGES)}", SUITE, staging, mirror],
             f"unpacking Debian {SUITE} arm64 ({', '.join(DEBIAN_PACKAGES)}) with mmdebstrap",
             MMDEBSTRAP_TIMEOUT_SEC, say)
        say(f"unpacking {len(wheels)} wheels into /{SITE_PACKAGES}")
        _unpack(wheels, staging / SITE_PACKAGES)
        _check_import(staging, say)
        (staging / STAMP).write_text(json.dumps({"recipe": recipe()}, indent=2) + "\n", encoding="utf-8")
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(staging, dest)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    say(f"ready: {dest}")
    return dest


def ensure_root(dest, wheel_dir=None, mirror: str = DEFAULT_MIRROR,
                progress: Callable[[str], None] = print) -> pathlib.Path:
    """dest when it already holds a root of this recipe, else build it there (one build at a time)."""
    dest = pathlib.Path(dest).resolve()
    if is_ready(dest):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    with open(dest.parent / f".{dest.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be building it right now
        if not is_ready(dest):
            build_root(dest, wheel_dir, mirror, progress)
    return dest


def main(argv: Optional[list] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m utvm.templates.jetson.utvm_jetson.arm64_root",
        description="Build an arm64 Debian root with Python and TVM's runtime, for the emulated Jetson "
                    "(qemu_aarch64) to run tvm_runtime projects in.")
    parser.add_argument("root", help="directory of the root (rebuilt only when missing or outdated)")
    parser.add_argument("--mirror", default=DEFAULT_MIRROR, help=f"Debian mirror (default {DEFAULT_MIRROR})")
    parser.add_argument("--wheels", help="keep the downloaded wheels in this directory (default: not kept)")
    args = parser.parse_args(argv)
    try:
        root = ensure_root(args.root, args.wheels, args.mirror, progress=lambda line: print(line, flush=True))
    except RootBuildError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"{root} is ready: use -o qemu_root={root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
