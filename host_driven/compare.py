"""How two tensors are compared in validation, and the statistics a comparison reports.

The rule is the compile-time check's, ``model_library/tolerance.py`` (one rule for the whole
project, documented in docs/user-guide.md): 8- and 16-bit integers within 1 of the reference,
other integers equal, floats within 1e-4 of the reference tensor's largest magnitude, NaN only
where the reference has NaN.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict

import numpy as np
from utvm.model_library.tolerance import TOLERANCE_TEXT, differences


@dataclasses.dataclass(frozen=True)
class Comparison:
    """How one device tensor compares with its reference."""

    max_abs: float
    max_rel: float
    mismatches: int
    size: int
    passed: bool

    def to_json(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)


def tolerance_text() -> str:
    """The rule in words, as reports state it."""
    return TOLERANCE_TEXT


def compare(device: np.ndarray, reference: np.ndarray) -> Comparison:
    """Compare two arrays of the same shape under the rule above."""
    device = np.asarray(device)
    reference = np.asarray(reference)
    if device.shape != reference.shape:
        if device.size != reference.size:
            raise ValueError(f"cannot compare shapes {device.shape} and {reference.shape}")
        reference = reference.reshape(device.shape)
    if device.size == 0:
        return Comparison(0.0, 0.0, 0, 0, True)
    diff, _, bad = differences(device, reference)
    r = reference.astype(np.float64)
    ref_abs = np.abs(np.where(np.isnan(r), 0.0, r))
    with np.errstate(over="ignore", invalid="ignore"):  # against a zero reference: an infinite relative error
        rel = diff / np.maximum(ref_abs, np.finfo(np.float64).tiny)
    rel = np.where(diff == 0, 0.0, rel)
    mismatches = int(np.count_nonzero(bad))
    return Comparison(
        max_abs=float(diff.max()),
        max_rel=float(rel.max()),
        mismatches=mismatches,
        size=int(device.size),
        passed=mismatches == 0,
    )
