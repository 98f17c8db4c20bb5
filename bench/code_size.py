"""The device runtime's code size without a model: `size` of its objects, per toolchain.

Every C file in templates/runtime/src is compiled (no port, no model) against an empty model
configuration; flash is text + data, RAM is data + bss (the packet buffers, no arena).
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

RUNTIME = Path(__file__).resolve().parent.parent / "templates" / "runtime"
DEADLINE_S = 120.0
EMPTY_MODEL_CONFIG = """\
#define UTVM_MODEL_ARENA_BYTES 0
#define UTVM_MODEL_ARENA_ALIGNMENT 16
#define UTVM_MODEL_WORKSPACE_BYTES 0
"""
TOOLCHAINS = {
    "host gcc": ("gcc", "size", ["-Os"]),
    "Cortex-M3 arm-none-eabi-gcc": ("arm-none-eabi-gcc", "arm-none-eabi-size",
                                    ["-Os", "-mcpu=cortex-m3", "-mthumb"]),
}


def object_sizes(cc: str, size_tool: str, flags: list[str]) -> dict:
    """Compile the runtime sources with `cc` and sum `size`'s text, data and bss over the objects."""
    sources = sorted((RUNTIME / "src").glob("*.c"))
    if not sources:
        raise RuntimeError(f"no runtime sources in {RUNTIME / 'src'}")
    with tempfile.TemporaryDirectory(prefix="utvm-bench-size-") as tmp:
        tmp_path = Path(tmp)
        (tmp_path / "utvm_model_config.h").write_text(EMPTY_MODEL_CONFIG)
        objects = []
        for src in sources:
            obj = tmp_path / (src.stem + ".o")
            includes = [f"-I{RUNTIME / 'include'}", f"-I{tmp_path}"]
            cmd = [cc, *flags, "-std=c99", *includes, "-c", str(src), "-o", str(obj)]
            subprocess.run(cmd, check=True, timeout=DEADLINE_S, capture_output=True)
            objects.append(str(obj))
        out = subprocess.run([size_tool, *objects], check=True, timeout=DEADLINE_S, capture_output=True,
                             text=True).stdout
    totals = {"text": 0, "data": 0, "bss": 0}
    for line in out.splitlines()[1:]:
        text, data, bss = (int(x) for x in line.split()[:3])
        totals["text"] += text
        totals["data"] += data
        totals["bss"] += bss
    return {**totals, "flags": " ".join(flags), "objects": len(objects)}


def measure() -> dict:
    """Sizes for each toolchain on PATH; a missing one is left out with its reason."""
    results = {}
    missing = []
    for name, (cc, size_tool, flags) in TOOLCHAINS.items():
        if shutil.which(cc) is None or shutil.which(size_tool) is None:
            missing.append(f"{cc} not installed")
            continue
        results[name] = object_sizes(cc, size_tool, flags)
    if not results:
        raise RuntimeError("; ".join(missing))
    return results
