"""The wheel a user installs carries every file a generated project needs."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile

import pytest
from conftest import REPO_ROOT, require_tool


def _tracked(*folders: str) -> set:
    result = subprocess.run(["git", "ls-files", *folders], cwd=REPO_ROOT, capture_output=True, text=True,
                            timeout=60)
    if result.returncode != 0:
        pytest.skip(f"not a git checkout ({result.stderr.strip()}); the wheel is compared with git's files")
    return set(result.stdout.split())


def test_the_wheel_ships_every_file_of_every_package(tmp_path):
    require_tool("git")
    tracked = _tracked("templates", "boards", "host_driven", "project_api", "model_library", "farm")
    # Built from a clean copy of the tracked files: setuptools reuses a build/ folder in the checkout,
    # whose leftovers would hide a file the package list forgets.
    source = tmp_path / "src"
    for name in _tracked("."):
        if (REPO_ROOT / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO_ROOT / name, source / name)
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
         str(tmp_path / "dist"), str(source)],
        capture_output=True, text=True, timeout=600,
    )
    assert build.returncode == 0, build.stderr
    [wheel] = (tmp_path / "dist").glob("utvm-*.whl")
    with zipfile.ZipFile(wheel) as z:
        shipped = {name[len("utvm/"):] for name in z.namelist() if name.startswith("utvm/")}
    missing = sorted(tracked - shipped)
    assert not missing, f"the wheel leaves out {len(missing)} files, e.g. {missing[:5]}"
