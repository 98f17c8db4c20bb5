"""A description of the machine a benchmark ran on, printed as the report's header."""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo (or platform.processor() elsewhere)."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def describe() -> dict[str, str]:
    """CPU, core count, OS, Python, TVM and load: what a reader needs to compare figures."""
    try:
        import tvm

        tvm_version = tvm.__version__
    except ImportError:
        tvm_version = "not installed"
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    return {
        "cpu": cpu_model(),
        "cores": str(os.cpu_count()),
        "os": platform.platform(),
        "python": sys.version.split()[0],
        "tvm": tvm_version,
        "load average (1/5/15 min)": " ".join(f"{x:.2f}" for x in load),
    }
