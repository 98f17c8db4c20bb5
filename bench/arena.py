"""The arena section: utvm's arena (default plan, and with the inputs kept) against TFLite Micro's
activation plan for the same model, as the `tflite-micro` package's `print_allocations` reports it
("Arena allocation head": the non-persistent tensors, planned by its greedy memory planner).
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
from pathlib import Path

# Run in a child: TFLite Micro prints from C++ straight to the process's stdout/stderr.
_TFLM_SCRIPT = """
import sys
from tflite_micro.python.tflite_micro import runtime
interpreter = runtime.Interpreter.from_file(sys.argv[1], arena_size=16 << 20)
interpreter.print_allocations()
"""
_HEAD = re.compile(r"Arena allocation head (\d+) bytes")


def tflite_micro_plan(model: Path) -> int:
    """TFLite Micro's activation plan for `model`, in bytes."""
    result = subprocess.run([sys.executable, "-c", _TFLM_SCRIPT, str(model)], capture_output=True, text=True,
                            timeout=300)
    match = _HEAD.search(result.stdout + result.stderr)
    if match is None:
        raise RuntimeError(f"tflite-micro printed no arena plan (is the tflite-micro package installed?): "
                           f"{(result.stderr or result.stdout)[-300:]}")
    return int(match.group(1))


def utvm_arena(model: Path) -> dict:
    """utvm's arena and its lower bound, by default and with `preserve_inputs=True`."""
    from utvm.model_library import compile_model, load

    out = {}
    with tempfile.TemporaryDirectory(prefix="utvm-bench-arena-") as tmp:
        for label, keep in (("default", False), ("keep_inputs", True)):
            archive = compile_model(model, Path(tmp) / f"{label}.tar", preserve_inputs=keep, check=False)
            memory = load(archive).memory
            out[label] = {"arena": memory["arena_bytes"],
                          "lower_bound": memory["peak_live_lower_bound_bytes"]}
    return out


def measure(model: Path) -> dict:
    row = utvm_arena(model)
    row["tflite_micro"] = tflite_micro_plan(model)
    return row
