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
    """A small, well-formed MLF archive made without TVM: one 4-byte tensor that is both the input
    and the output, no kernel. Enough for templates that read an archive but build no model."""
    tensor = {"id": 0, "name": "x", "storage": "arena", "offset": 0, "nbytes": 4, "shape": [1],
              "dtype": "float32"}
    metadata = {
        "format_version": 1, "model_name": model_name, "model_hash": "0" * 64, "tvm_version": "none",
        "target": {"kind": "c"}, "target_str": "c",
        "inputs": [{"name": "x", "shape": [1], "dtype": "float32", "tensor": 0}],
        "outputs": [{"name": "x", "shape": [1], "dtype": "float32", "tensor": 0}],
        "plan": {"pools": [], "tensors": [tensor], "kernels": []},
        "memory": {"arena_bytes": 4, "workspace_bytes": 0, "constant_bytes": 0, "io_bytes": 4,
                   "peak_live_lower_bound_bytes": 4},
    }
    members = {
        "metadata.json": json.dumps(metadata).encode(),
        "codegen/host/src/tiny.c": b"int tiny(void) { return 42; }\n",
        "codegen/host/include/utvm_model_config.h": b"#define UTVM_MODEL_ARENA_BYTES 4\n",
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
