"""A model's inputs and outputs as the archive's metadata.json declares them, and the checks that
keep a wrong array from ever reaching the device.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

import numpy as np
from utvm.project_api.errors import UserError

Key = Union[int, str]


class SignatureError(UserError):
    """An input or output named wrongly, or an array of the wrong dtype or shape."""


@dataclasses.dataclass(frozen=True)
class TensorSpec:
    """One input or output: its position, name, plan tensor id, shape, dtype and quantization."""

    kind: str  # "input" or "output"
    index: int
    name: str
    tensor_id: int
    shape: Tuple[int, ...]
    dtype: str
    quantization: Optional[Dict[str, Any]] = None

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * np.dtype(self.dtype).itemsize

    def describe(self) -> str:
        return f"{self.dtype}[{','.join(str(d) for d in self.shape)}]"

    def to_json(self) -> Dict[str, Any]:
        return {
            "index": self.index,
            "name": self.name,
            "tensor": self.tensor_id,
            "shape": list(self.shape),
            "dtype": self.dtype,
            "quantization": self.quantization,
        }


def _describe_array(array: np.ndarray) -> str:
    return f"{array.dtype}[{','.join(str(d) for d in array.shape)}]"


def _specs(kind: str, entries: List[Mapping[str, Any]]) -> List[TensorSpec]:
    return [
        TensorSpec(
            kind=kind,
            index=i,
            name=str(e["name"]),
            tensor_id=int(e["tensor"]),
            shape=tuple(int(d) for d in e["shape"]),
            dtype=str(e["dtype"]),
            quantization=e.get("quantization"),
        )
        for i, e in enumerate(entries)
    ]


class ModelSignature:
    """The inputs and outputs of one archive, looked up by position or by name."""

    def __init__(self, metadata: Mapping[str, Any]):
        self.model_name = str(metadata.get("model_name", "model"))
        self.inputs = _specs("input", metadata["inputs"])
        self.outputs = _specs("output", metadata["outputs"])

    def _lookup(self, specs: List[TensorSpec], kind: str, key: Key) -> TensorSpec:
        if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
            if 0 <= key < len(specs):
                return specs[int(key)]
            raise SignatureError(
                f"model {self.model_name} has no {kind} {key}",
                hint=f"its {kind}s are {self._listing(specs)}",
            )
        for spec in specs:
            if spec.name == key:
                return spec
        if isinstance(key, str) and key.isdigit():
            return self._lookup(specs, kind, int(key))
        raise SignatureError(
            f"model {self.model_name} has no {kind} named {key!r}",
            hint=f"its {kind}s are {self._listing(specs)} (by name or by index)",
        )

    @staticmethod
    def _listing(specs: List[TensorSpec]) -> str:
        return ", ".join(f"{s.index}: {s.name!r} {s.describe()}" for s in specs) or "(none)"

    def input(self, key: Key) -> TensorSpec:
        """The input at position ``key`` (an int) or named ``key``."""
        return self._lookup(self.inputs, "input", key)

    def output(self, key: Key) -> TensorSpec:
        """The output at position ``key`` (an int) or named ``key``."""
        return self._lookup(self.outputs, "output", key)

    def check_input(self, key: Key, array) -> Tuple[TensorSpec, np.ndarray]:
        """The input's spec and ``array`` as contiguous memory, or a SignatureError saying what differs.

        The dtype must match exactly (no silent casts: a float array for an int8 input is almost
        always a missing quantization step); the shape must match too.
        """
        spec = self.input(key)
        array = np.asarray(array)
        if array.dtype != np.dtype(spec.dtype):
            hint = f"convert it with .astype({spec.dtype!r})"
            q = spec.quantization
            if q and array.dtype.kind == "f" and np.dtype(spec.dtype).kind in "iu":
                hint = (
                    f"quantize it first: np.round(x / {q.get('scale')} + {q.get('zero_point')})"
                    f".clip(...).astype({spec.dtype!r})"
                )
            raise SignatureError(
                f"input {spec.index} ({spec.name!r}) of model {self.model_name} needs {spec.describe()}, "
                f"got {_describe_array(array)}",
                hint=hint,
            )
        if tuple(array.shape) != spec.shape:
            hint = "reshape it" if array.size == int(np.prod(spec.shape)) else "check which input this is"
            raise SignatureError(
                f"input {spec.index} ({spec.name!r}) of model {self.model_name} needs {spec.describe()}, "
                f"got {_describe_array(array)}",
                hint=hint,
            )
        return spec, np.ascontiguousarray(array)

    def random_inputs(self, seed: int) -> Dict[str, np.ndarray]:
        """Seeded random inputs of the right dtypes and shapes, keyed by input name.

        Integers cover the whole range of their dtype; floats are uniform in [-1, 1).
        """
        rng = np.random.default_rng(seed)
        result = {}
        for spec in self.inputs:
            dtype = np.dtype(spec.dtype)
            if dtype.kind in "iu":
                info = np.iinfo(dtype)
                result[spec.name] = rng.integers(info.min, info.max, spec.shape, dtype=dtype, endpoint=True)
            elif dtype.kind == "b":
                result[spec.name] = rng.integers(0, 2, spec.shape).astype(dtype)
            else:
                result[spec.name] = rng.uniform(-1.0, 1.0, spec.shape).astype(dtype)
        return result
