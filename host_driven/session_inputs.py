"""What every session does with inputs before the device sees them, whatever reaches the device
(utvm's protocol, or TVM RPC): set several at once, keep host copies, refuse to run without all."""

from __future__ import annotations

from typing import Any, Dict, Iterable, Mapping

import numpy as np

from .signature import Key, ModelSignature, SignatureError


def require_inputs(signature: ModelSignature, given: Iterable[str]) -> None:
    """SignatureError naming the inputs of the model that are not among `given` names."""
    have = set(given)
    missing = [s.name for s in signature.inputs if s.name not in have]
    if missing:
        raise SignatureError(
            f"input(s) {', '.join(repr(m) for m in missing)} of model {signature.model_name} are not set",
            hint="call set_input(name, array) for every input before running",
        )


class SessionInputs:
    """set_inputs and inputs for a session whose set_input keeps host copies in ``_inputs``."""

    _inputs: Dict[str, np.ndarray]

    def set_input(self, key: Key, array) -> None:  # pragma: no cover - every session defines it
        raise NotImplementedError

    def set_inputs(self, inputs: Mapping[Key, Any]) -> None:
        """set_input for each (name or position, array)."""
        for key, array in inputs.items():
            self.set_input(key, array)

    @property
    def inputs(self) -> Dict[str, np.ndarray]:
        """The inputs set so far, by name (host-side copies)."""
        return dict(self._inputs)
