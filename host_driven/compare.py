"""How two tensors are compared in validation, and the statistics a comparison reports.

Tolerances (one rule for the whole project, documented in docs/user-guide.md):
- integer tensors (int8 and the like): every element within ``INT_ATOL`` = 1 of the reference,
  the usual bar for quantized kernels (rounding may differ by one step);
- float tensors: ``|device - reference| <= FLOAT_RTOL * |reference| + FLOAT_ATOL * scale`` for
  every element, where ``scale`` is the largest magnitude in the reference tensor, so the
  absolute term follows the tensor's own range instead of a fixed number. NaN matches only NaN.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict

import numpy as np

INT_ATOL = 1
FLOAT_RTOL = 1e-4
FLOAT_ATOL = 1e-5


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
    return (
        f"integers within {INT_ATOL}; "
        f"floats within {FLOAT_RTOL:g} x |ref| + {FLOAT_ATOL:g} x max|ref| per element"
    )


def compare(device: np.ndarray, reference: np.ndarray) -> Comparison:
    """Compare two arrays of the same shape under the tolerances above."""
    device = np.asarray(device)
    reference = np.asarray(reference)
    if device.shape != reference.shape:
        if device.size != reference.size:
            raise ValueError(f"cannot compare shapes {device.shape} and {reference.shape}")
        reference = reference.reshape(device.shape)
    if device.size == 0:
        return Comparison(0.0, 0.0, 0, 0, True)
    if device.dtype.kind in "iub" and reference.dtype.kind in "iub":
        diff = np.abs(device.astype(np.int64) - reference.astype(np.int64)).astype(np.float64)
        ref_abs = np.abs(reference.astype(np.float64))
        bad = diff > INT_ATOL
    else:
        d = device.astype(np.float64)
        r = reference.astype(np.float64)
        both_nan = np.isnan(d) & np.isnan(r)
        diff = np.where(both_nan, 0.0, np.abs(d - r))
        diff = np.where(np.isnan(diff), np.inf, diff)
        ref_abs = np.abs(np.where(np.isnan(r), 0.0, r))
        finite = ref_abs[np.isfinite(ref_abs)]
        scale = float(finite.max()) if finite.size else 0.0
        bad = diff > FLOAT_RTOL * ref_abs + FLOAT_ATOL * scale
    with np.errstate(over="ignore"):  # a difference against a zero reference: an infinite relative error
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
