"""Exact C literals for constant arrays (every value reads back bit for bit)."""

from __future__ import annotations

import numpy as np

# numpy dtype name -> (C element type, literal suffix)
C_TYPES = {
    "int8": ("int8_t", ""),
    "uint8": ("uint8_t", "u"),
    "int16": ("int16_t", ""),
    "uint16": ("uint16_t", "u"),
    "int32": ("int32_t", ""),
    "uint32": ("uint32_t", "u"),
    "int64": ("int64_t", "LL"),
    "uint64": ("uint64_t", "ULL"),
    "float32": ("float", "f"),
    "float64": ("double", ""),
    "bool": ("uint8_t", "u"),
}
VALUES_PER_LINE = 16


def c_element_type(dtype: str) -> str:
    """The C type a constant of `dtype` is stored as (other types are kept as raw 16-bit words)."""
    if dtype in C_TYPES:
        return C_TYPES[dtype][0]
    if np.dtype(_storage_dtype(dtype)).itemsize == 2:
        return "uint16_t"
    raise ValueError(f"constants of dtype {dtype} are not supported in C")


def _storage_dtype(dtype: str) -> str:
    return dtype if dtype in C_TYPES else "uint16"


def c_values(array: np.ndarray, dtype: str) -> list:
    """The elements of `array` as C literals, in memory order."""
    flat = np.ascontiguousarray(array).reshape(-1)
    if dtype not in C_TYPES:  # float16 / bfloat16: the bits, so nothing is lost
        return [f"{int(v)}u" for v in flat.view(np.uint16)]
    if dtype == "bool":
        return [f"{int(v)}u" for v in flat.astype(np.uint8)]
    if dtype in ("float32", "float64"):
        return _float_literals(flat, C_TYPES[dtype][1])
    suffix = C_TYPES[dtype][1]
    if dtype == "int64":
        low = np.iinfo(np.int64).min
        return [f"({low + 1}LL - 1LL)" if int(v) == low else f"{int(v)}{suffix}" for v in flat]
    if dtype == "int32":
        low = np.iinfo(np.int32).min
        return [f"({low + 1} - 1)" if int(v) == low else str(int(v)) for v in flat]
    return [f"{int(v)}{suffix}" for v in flat]


def _float_literals(flat: np.ndarray, suffix: str) -> list:
    """Shortest round-trip text for each value (numpy's, as `str` of the scalar), made a C literal.

    Formatting is per distinct value: weights often repeat, and formatting dominates the time to
    write a large model's constants.
    """
    if flat.size > 4096:
        values, inverse = np.unique(flat, return_inverse=True)
        if values.size * 2 > flat.size:
            values, inverse = flat, None
    else:
        values, inverse = flat, None
    texts = values.astype(str).astype(object)
    texts[np.isnan(values)] = "NAN"
    texts[np.isposinf(values)] = "INFINITY"
    texts[np.isneginf(values)] = "-INFINITY"
    finite = np.isfinite(values)
    texts[finite] = texts[finite] + suffix
    return (texts if inverse is None else texts[inverse.reshape(-1)]).tolist()


def c_array_body(array: np.ndarray, dtype: str, indent: str = "  ") -> str:
    """The initializer lines of a C array (without braces)."""
    values = c_values(array, dtype) or ["0"]
    lines = [", ".join(values[i : i + VALUES_PER_LINE]) for i in range(0, len(values), VALUES_PER_LINE)]
    return ",\n".join(indent + line for line in lines)
