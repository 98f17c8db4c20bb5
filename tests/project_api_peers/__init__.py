"""Helpers for the Project API tests: hand-written spec peers, misbehaving servers, tiny archives."""

from __future__ import annotations

import io
import json
import shutil
import tarfile
from pathlib import Path

PEERS_DIR = Path(__file__).resolve().parent
REPO_ROOT = PEERS_DIR.parent.parent
EXAMPLE_TEMPLATE = REPO_ROOT / "templates" / "example"


def make_mlf(path: Path, model_name: str = "tiny") -> Path:
    """A small tar standing in for an MLF archive (the example template accepts any tar)."""
    members = {
        "metadata.json": json.dumps({"model_name": model_name, "version": 1}).encode(),
        "codegen/host/src/tiny.c": b"int tiny(void) { return 42; }\n",
    }
    with tarfile.open(path, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def copy_peer(name: str, dest: Path) -> Path:
    """A fresh copy of a peer server directory, so that what it writes lands in dest."""
    return Path(shutil.copytree(PEERS_DIR / name, dest / name, ignore=shutil.ignore_patterns("__pycache__")))


def read_calls(server_dir: Path) -> list:
    """The methods the spec server was called with, in order."""
    log = server_dir / "calls.log"
    if not log.exists():
        return []
    return [json.loads(line)["method"] for line in log.read_text().splitlines()]
