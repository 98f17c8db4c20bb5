"""Fixtures shared by the whole suite: where the repo and the reference models are."""

from __future__ import annotations

import os
import shutil
import signal
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
# ../shared/models sits beside the checkout in CI and on developer machines; tests skip without it.
SHARED_MODELS = REPO_ROOT.parent / "shared" / "models"

# A suite started in the background of a non-interactive shell (`make test &`, nohup, some CI
# runners) inherits SIGINT ignored, and every process it starts would too: the tests that press
# Ctrl-C on `utvm` (or on a host driving a device) would then wait out their deadlines. Python's own
# handler here means the children start with SIGINT at its default, as from a terminal.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

# A CI log that asks for progress lines (UTVM_PROGRESS=1) must not change what the tests see: they
# run utvm through pipes, where it prints no progress lines unless a test forces them itself.
os.environ.pop("UTVM_PROGRESS", None)


def shared_model_path(name: str) -> Path:
    """Path of a reference model in ../shared/models, or skip the test saying why."""
    path = SHARED_MODELS / name
    if not path.is_file():
        pytest.skip(f"reference model {name} not found in {SHARED_MODELS} (../shared/models is absent)")
    return path


def require_tool(name: str) -> str:
    """Path of a command-line tool on PATH, or skip the test saying which one is missing."""
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} not installed (run `make test` as root to install the toolchains)")
    return path


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def shared_models() -> Path:
    if not SHARED_MODELS.is_dir():
        pytest.skip(f"{SHARED_MODELS} is absent; the reference-model tests need ../shared/models")
    return SHARED_MODELS
