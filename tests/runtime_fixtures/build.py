"""Build the device runtime with the POSIX port and the fixture model, as a real compiler does."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Iterable, List, Sequence

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
RUNTIME_DIR = REPO_ROOT / "templates" / "runtime"
FIXTURE_DIR = Path(__file__).resolve().parent
STRICT_FLAGS = ["-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic"]


def runtime_files() -> dict:
    return json.loads((RUNTIME_DIR / "runtime_files.json").read_text())


# What a fast host link wants: the same defines the host template builds its device with.
FAST_LINK_DEFINES = runtime_files()["fast_link_defines"]


def runtime_sources(posix: bool = True) -> List[Path]:
    files = runtime_files()
    names = files["sources"] + (files["posix_sources"] if posix else [])
    return [RUNTIME_DIR / name for name in names]


def include_flags(posix: bool = True, model_dir: Path = FIXTURE_DIR) -> List[str]:
    """-I flags for the runtime (and POSIX port) plus the directory of utvm_model_config.h."""
    files = runtime_files()
    dirs = files["includes"] + (files["posix_includes"] if posix else [])
    return [f"-I{RUNTIME_DIR / d}" for d in dirs] + [f"-I{model_dir}"]


def require_compiler(cc: str) -> str:
    path = shutil.which(cc)
    if path is None:
        pytest.skip(f"{cc} not installed (run `make test` as root to install the toolchains)")
    return path


def compile_c(cc: str, sources: Sequence[Path], output: Path, extra: Iterable[str] = ()) -> Path:
    """Compile and link; a failure fails the test with the compiler's own output."""
    cmd = [require_compiler(cc), *STRICT_FLAGS, *extra, *map(str, sources), "-o", str(output)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    if result.returncode != 0:
        pytest.fail(f"{' '.join(cmd)} failed:\n{result.stdout}{result.stderr}")
    return output


def build_device(out_dir: Path, cc: str = "gcc", defines: Sequence[str] = (), name: str = "device") -> Path:
    """The POSIX device executable: runtime + POSIX port + fixture model."""
    out_dir.mkdir(parents=True, exist_ok=True)
    sources = runtime_sources() + [FIXTURE_DIR / "fixture_model.c"]
    flags = ["-O2", *include_flags(), *(f"-D{d}" for d in defines)]
    return compile_c(cc, sources, out_dir / name, flags)
