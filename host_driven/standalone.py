"""Run an ``aot_standalone`` project once: no session, no protocol. The project's template does it
through its ``utvm_run_standalone`` extension (a host program on .npy files, or an image that runs
on inputs baked into it), and says through ``utvm_standalone_inputs`` whether it takes inputs."""

from __future__ import annotations

from typing import Dict, Mapping, Optional

import numpy as np
from utvm.project_api.errors import UserError

from .signature import ModelSignature

RUN = "utvm_run_standalone"
INPUTS = "utvm_standalone_inputs"
DEFAULT_TIMEOUT = 600.0


def baked_inputs(project, signature: ModelSignature) -> Optional[Dict[str, np.ndarray]]:
    """The inputs baked into the project's image, by name; None when it takes inputs at run time."""
    if not project.has_extension(INPUTS):
        return None
    reply = project.call_extension(INPUTS, options={})
    if not reply.get("baked"):
        return None
    return {name: _array(signature, "input", name, data) for name,
            data in (reply.get("inputs") or {}).items()}


def _array(signature: ModelSignature, which: str, key, hex_data: str) -> np.ndarray:
    spec = signature.input(key) if which == "input" else signature.output(key)
    return np.frombuffer(bytes.fromhex(hex_data), dtype=spec.dtype).reshape(spec.shape).copy()


def run_standalone(project, signature: ModelSignature, inputs: Optional[Mapping[str, np.ndarray]] = None,
                   timeout: float = DEFAULT_TIMEOUT) -> Dict:
    """Run the project's standalone image once; returns the template's report with ``outputs`` as
    {name: array}. inputs (by name) go to a template that takes them; None for a baked image."""
    if not project.has_extension(RUN):
        raise UserError(f"{project.directory} is an aot_standalone project, but its template offers "
                        "no way to run it from utvm", hint="run the program or image it builds directly")
    given = None
    if inputs is not None:
        given = {}
        for spec in signature.inputs:
            if spec.name not in inputs:
                raise UserError(f"input {spec.name!r} is missing", hint="give every input of the model")
            _, array = signature.check_input(spec.name, inputs[spec.name])
            given[spec.name] = np.ascontiguousarray(array).tobytes().hex()
    report = project.call_extension(RUN, timeout=timeout + 30.0, options={}, inputs=given,
                                    timeout_sec=timeout)
    # By position: a firmware may print its own names for the outputs.
    outputs = {}
    for out in report.get("outputs") or []:
        index = int(out["index"])
        outputs[signature.output(index).name] = _array(signature, "output", index, out["hex"])
    report["outputs"] = outputs
    return report
