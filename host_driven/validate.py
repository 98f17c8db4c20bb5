"""Layer-by-layer validation: run the plan on the device one kernel at a time, read every
intermediate tensor back, and compare it with a reference.

The default reference is model_library's HostReference: the archive's own C built for this
machine and run kernel by kernel from the same inputs. With ``isolate`` (the default), each
device result is copied into the reference before the next kernel runs, so every kernel is
judged on exactly the inputs the device gave it and an early small difference cannot make a
later, correct kernel look wrong. A user reference is a mapping of expected tensors (keyed by
output name, plan tensor name or tensor id) or a callable that takes the inputs (by name) and
returns such a mapping.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Union

import numpy as np
from utvm.project_api.errors import UserError

from .compare import Comparison, compare, tolerance_text
from .layer_names import kernel_layers, layers_label

Reference = Union[None, Mapping[Any, Any], Callable[[Dict[str, np.ndarray]], Mapping[Any, Any]]]


@dataclasses.dataclass(frozen=True)
class TensorCheck:
    """One kernel output tensor compared with its reference."""

    kernel_index: int
    kernel_name: str
    tensor_id: int
    tensor_name: str
    dtype: str
    shape: List[int]
    comparison: Comparison
    layers: List[Dict[str, Any]] = dataclasses.field(default_factory=list)  # source layers of the kernel

    @property
    def passed(self) -> bool:
        return self.comparison.passed

    @property
    def layer_label(self) -> str:
        return layers_label(self.layers)

    def to_json(self) -> Dict[str, Any]:
        data = dataclasses.asdict(self)
        data["comparison"] = self.comparison.to_json()
        data["passed"] = self.passed
        return data


@dataclasses.dataclass(frozen=True)
class ValidationReport:
    """Every check in plan order, the first that failed (None when all passed), and how it was run."""

    checks: List[TensorCheck]
    reference: str
    isolated: bool
    tolerance: str
    notes: List[str] = dataclasses.field(default_factory=list)  # kernels not compared, and why

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    @property
    def first_failure(self) -> Optional[TensorCheck]:
        return next((c for c in self.checks if not c.passed), None)

    def verdict(self) -> str:
        """One line: PASS, or the first diverging kernel with its error statistics."""
        first = self.first_failure
        if first is None:
            kernels = len(self.kernels_checked())
            return f"PASS: {len(self.checks)} tensors of {kernels} kernels match the {self.reference}"
        c = first.comparison
        where = f"kernel {first.kernel_index} ({first.kernel_name}) is the first to diverge"
        if first.layers:
            where = (f"layer {first.layer_label} is the first to diverge, "
                     f"in kernel {first.kernel_index} ({first.kernel_name})")
        return (
            f"FAIL: {where}: "
            f"tensor {first.tensor_id} ({first.tensor_name}) has {c.mismatches} of {c.size} elements "
            f"out of tolerance, max abs error {c.max_abs:.6g}, max rel error {c.max_rel:.6g} "
            f"(tolerance: {self.tolerance})"
        )

    def kernels_checked(self) -> List[int]:
        return sorted({c.kernel_index for c in self.checks})

    def table(self) -> str:
        width = max([len(c.kernel_name) for c in self.checks] + [6])
        lines = [
            f"{'#':>4}  {'kernel':<{width}}  {'tensor':>6}  {'max abs':>10}  {'max rel':>10}  {'bad':>8}  "
            "ok   layers"
        ]
        for check in self.checks:
            c = check.comparison
            lines.append(
                f"{check.kernel_index:>4}  {check.kernel_name:<{width}}  {check.tensor_id:>6}  "
                f"{c.max_abs:>10.4g}  {c.max_rel:>10.4g}  {c.mismatches:>8}  "
                f"{'yes' if c.passed else 'NO ':<3}  {check.layer_label}".rstrip()
            )
        return "\n".join(lines)

    def to_json(self) -> Dict[str, Any]:
        first = self.first_failure
        return {
            "passed": self.passed,
            "verdict": self.verdict(),
            "reference": self.reference,
            "isolated": self.isolated,
            "tolerance": self.tolerance,
            "first_failure": first.to_json() if first else None,
            "checks": [c.to_json() for c in self.checks],
            "notes": list(self.notes),
        }


def _expected_by_tensor(
    expected: Mapping[Any, Any], tensors: Sequence[Mapping[str, Any]], outputs: Sequence[Mapping[str, Any]]
) -> Dict[int, np.ndarray]:
    """A user's expected tensors, keyed by tensor id (from output names, tensor names or ids)."""
    by_output = {o["name"]: int(o["tensor"]) for o in outputs}
    by_name = {t["name"]: int(t["id"]) for t in tensors}
    result = {}
    for key, value in expected.items():
        if isinstance(key, (int, np.integer)) and not isinstance(key, bool) and 0 <= key < len(tensors):
            tensor_id = int(key)
        elif key in by_output:
            tensor_id = by_output[key]
        elif key in by_name:
            tensor_id = by_name[key]
        else:
            raise UserError(
                f"the reference names a tensor the model does not have: {key!r}",
                hint=f"use output names ({', '.join(by_output)}), plan tensor names or tensor ids",
            )
        result[tensor_id] = np.asarray(value)
    return result


def _check(
    kernel_index: int, kernel_name: str, spec: Mapping[str, Any], device_value, ref_value, layers=()
) -> TensorCheck:
    return TensorCheck(
        kernel_index=kernel_index,
        kernel_name=kernel_name,
        tensor_id=int(spec["id"]),
        tensor_name=str(spec["name"]),
        dtype=str(spec["dtype"]),
        shape=list(spec["shape"]),
        comparison=compare(device_value, ref_value),
        layers=list(layers),
    )


def validate_layers(
    session,
    inputs: Mapping[str, np.ndarray],
    reference: Reference = None,
    isolate: bool = True,
    on_kernel: Optional[Callable[[int, str], None]] = None,
) -> ValidationReport:
    """Run ``session``'s plan kernel by kernel and compare with ``reference``.

    ``session`` is a :class:`utvm.host_driven.Session` whose device already holds ``inputs``
    (by name); the reference runs from the same ``inputs``.
    ``on_kernel(index, name)`` is called before each kernel runs (for progress).
    """
    library = session.library
    kernels = library.kernels
    tensors = library.tensors

    host = None
    expected: Dict[int, np.ndarray] = {}
    if reference is None:
        from utvm.model_library import HostReference

        host = HostReference(library)
        for name, array in inputs.items():
            host.set_input(name, array)
        label = "host reference (the archive's C built for this machine)"
    else:
        given = reference(dict(inputs)) if callable(reference) else reference
        if not isinstance(given, Mapping):
            raise UserError(
                f"the reference gave a {type(given).__name__}, not a mapping of expected tensors",
                hint="return {output or tensor name: array}",
            )
        expected = _expected_by_tensor(given, tensors, library.outputs)
        label = "given reference"
        isolate = False

    checks: List[TensorCheck] = []
    try:
        for kernel in kernels:
            index, name = int(kernel["index"]), str(kernel["name"])
            if on_kernel is not None:
                on_kernel(index, name)
            session.run_kernel(index)
            if host is not None:
                host.run_kernel(index)
            for tensor_id in kernel["outputs"]:
                if host is None and tensor_id not in expected:
                    continue
                device_value = session.read_plan_tensor(tensor_id)
                ref_value = host.read_tensor(tensor_id) if host is not None else expected[tensor_id]
                layers = kernel_layers(library.metadata, index)
                checks.append(_check(index, name, tensors[tensor_id], device_value, ref_value, layers))
                if isolate and host is not None and not np.array_equal(device_value, ref_value):
                    host.write_tensor(tensor_id, device_value)
        # Expected tensors no kernel writes (e.g. an output that is a view): compare at the end.
        compared = {c.tensor_id for c in checks}
        for tensor_id in sorted(set(expected) - compared):
            device_value = session.read_plan_tensor(tensor_id)
            checks.append(
                _check(
                    len(kernels),
                    "(after the last kernel)",
                    tensors[tensor_id],
                    device_value,
                    expected[tensor_id],
                )
            )
    finally:
        if host is not None:
            host.close()
    session.note_inputs_consumed()
    return ValidationReport(checks=checks, reference=label, isolated=isolate, tolerance=tolerance_text())
