"""When two answers for the same tensor count as the same: the rule of the compile-time check.

- Integer tensors of 8 or 16 bits (quantized data): every element within 1. Two correct
  implementations of a requantization may round a half step differently.
- Other integers and booleans (indices, shapes, masks): equal.
- Floats: every element within `FLOAT_RTOL` (1e-4) times the largest magnitude in the reference
  tensor. The error of a float sum grows with the magnitudes of its terms, not of its result, and
  a convolution's output element can cancel to near zero while its terms are large: a bound
  relative to each element would call two correct answers different there, while one relative to
  the tensor's scale does not. NaN matches NaN; an infinity matches the same infinity.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

FLOAT_RTOL = 1e-4
QUANTIZED_ATOL = 1
TOLERANCE_TEXT = (
    f"8- and 16-bit integers within {QUANTIZED_ATOL}; other integers equal; "
    f"floats within {FLOAT_RTOL:g} x max|reference| of the tensor"
)


@dataclass(frozen=True)
class Mismatch:
    """The first element of `got` outside the tolerance of `want`, and how far off the worst is."""

    index: tuple
    got: object
    want: object
    tolerance: float
    max_difference: float
    count: int

    def describe(self, got_label: str, want_label: str) -> str:
        at = "[" + ", ".join(str(i) for i in self.index) + "]"
        return (
            f"at {at}: {got_label} {_value(self.got)}, {want_label} {_value(self.want)} "
            f"({self.count} elements differ by more than {self.tolerance:.3g}; the largest by "
            f"{self.max_difference:.3g})"
        )


def tolerance_for(dtype, want: np.ndarray) -> float:
    """The largest difference allowed for any element of a tensor whose right answer is `want`."""
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        finite = np.abs(want[np.isfinite(want)].astype(np.float64))
        return FLOAT_RTOL * (float(finite.max()) if finite.size else 0.0)
    if dtype.kind in "iu" and dtype.itemsize <= 2:
        return float(QUANTIZED_ATOL)
    return 0.0


def differences(got, want) -> tuple:
    """(|got - want| per element as float64, the tolerance, the elements beyond it): NaN against
    NaN and an infinity against the same one differ by 0; any other NaN or infinity by inf."""
    got, want = np.asarray(got), np.asarray(want)
    tolerance = tolerance_for(got.dtype if got.dtype.kind == want.dtype.kind else want.dtype, want)
    g, w = got.astype(np.float64), want.astype(np.float64)
    same = (g == w) | (np.isnan(g) & np.isnan(w))
    with np.errstate(invalid="ignore"):  # inf - inf: a NaN, counted as a difference below
        diff = np.where(same, 0.0, np.abs(g - w))
    diff = np.where(np.isnan(diff), np.inf, diff)
    return diff, tolerance, diff > tolerance


def first_mismatch(got, want) -> Mismatch | None:
    """None if `got` matches `want` under the rule above, else where and how it does not."""
    got, want = np.asarray(got), np.asarray(want)
    if got.shape != want.shape:
        if got.size != want.size:
            raise ValueError(f"cannot compare shapes {list(got.shape)} and {list(want.shape)}")
        want = want.reshape(got.shape)
    if got.size == 0:
        return None
    diff, tolerance, bad = differences(got, want)
    count = int(np.count_nonzero(bad))
    if not count:
        return None
    index = tuple(int(i) for i in np.argwhere(bad)[0])
    return Mismatch(index, got[index].item(), want[index].item(), tolerance, float(diff.max()), count)


def _value(value) -> str:
    return f"{value:.7g}" if isinstance(value, float) else str(value)
