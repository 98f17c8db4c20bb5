"""The compile-time check: does the archive give the answers TVM and the model's framework give?

`compile(..., check=True)` (the default) runs it before the archive is written:
1. The archive's C is built for this machine (`HostReference`) and TVM builds the same lowered
   Relax module for LLVM. Both run on one seeded random input.
2. Kernel by kernel: each kernel runs in C, and its LLVM twin runs on exactly the inputs the C
   kernel saw; the first kernel whose output differs is named, with the element and both values.
   This finds faults in utvm's C path (scheduling, kernel code generation) where they happen.
3. Whole model: the archive's outputs against the LLVM build's run of `main` in TVM's virtual
   machine. Kernels that all match but outputs that differ put the fault in the plan (tensor
   placement or wiring).
4. Where the model's framework is installed (TFLite interpreter, ONNX Runtime, PyTorch), the
   archive's outputs against its outputs, which no TVM code touched: this catches faults in TVM's
   importers, which both builds share.
The tolerance is `tolerance.py`'s. A failure raises `CheckError` (a ModelError) and nothing is
written. The report says what was compared and how long it took.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from .errors import KernelError, ModelError
from .host_reference import HostReference
from .source_runtimes import SourceModel, Unavailable, run_source
from .tolerance import first_mismatch

SEED = 0
LLVM_TARGET = {"kind": "llvm", "opt-level": 1}
TVM_LABEL = "TVM's LLVM build"
C_LABEL = "the archive's C"


class CheckError(ModelError):
    """The archive's answers differ from TVM's own build or from the model's framework."""


@dataclass
class CheckReport:
    """What the check compared and how long it took."""

    seconds: float = 0.0
    kernels: int = 0
    outputs: int = 0
    references: list = field(default_factory=list)  # what the outputs were compared with
    skipped: list = field(default_factory=list)  # references that could not run, and why

    def summary(self) -> str:
        compared = " and ".join(self.references) or "nothing"
        kernels, outputs = _count(self.kernels, "kernel"), _count(self.outputs, "output")
        line = f"check passed in {self.seconds:.1f}s: {kernels} and {outputs} of the archive's C"
        line += f" match {compared}"
        if self.skipped:
            line += " (not compared: " + "; ".join(self.skipped) + ")"
        return line


def random_inputs(inputs: list, seed: int = SEED) -> list:
    """One seeded random array per input entry ({shape, dtype}): valid data for most models.

    Floats are uniform in [-1, 1); 8- and 16-bit integers (quantized data) span their range;
    wider integers are 0 or 1, because they are usually indices or sizes, and an index out of
    range would make a kernel read outside its tensor.
    """
    rng = np.random.default_rng(seed)
    arrays = []
    for entry in inputs:
        dtype, shape = np.dtype(entry["dtype"]), tuple(entry["shape"])
        if dtype.kind == "f":
            arrays.append(rng.uniform(-1.0, 1.0, shape).astype(dtype))
        elif dtype.kind == "b":
            arrays.append(rng.integers(0, 2, shape).astype(dtype))
        elif dtype.itemsize <= 2:
            info = np.iinfo(dtype)
            arrays.append(rng.integers(int(info.min), int(info.max) + 1, shape).astype(dtype))
        else:
            arrays.append(rng.integers(0, 2, shape).astype(dtype))
    return arrays


def check_archive(
    library,
    lowered,
    kernel_funcs: list,
    extra_funcs: dict,
    source: SourceModel | None,
    label: str,
    progress: Callable[[str], None] | None = None,
    seed: int = SEED,
) -> CheckReport:
    """Compare `library` (a loaded archive) with TVM's LLVM build of `lowered` and with `source`.

    `kernel_funcs[i]` names the PrimFunc in `lowered` (or in `extra_funcs`) that kernel i runs.
    Raise CheckError on a difference beyond the tolerance; return the report otherwise.
    """
    progress = progress or (lambda line: None)
    start = time.monotonic()
    report = CheckReport(kernels=len(library.kernels), outputs=len(library.outputs))
    if shutil.which(os.environ.get("CC") or "cc") is None:  # the compiler HostReference uses
        progress("note: check skipped: no C compiler on this machine to build the archive's C (set CC)")
        report.skipped.append("no C compiler")
        return report
    progress("checking the archive: its C against TVM's LLVM build on a seeded random input")
    try:
        host = HostReference(library)
    except RuntimeError as err:  # the C does not compile: that is a fault in the archive
        raise CheckError(f"{label}: the archive's C does not compile: {_last_error(err)}") from None
    inputs = random_inputs(library.inputs, seed)
    with host:
        for i, array in enumerate(inputs):
            host.set_input(i, array)
        vm, kernels = _llvm_build(lowered, kernel_funcs, extra_funcs)
        _check_kernels(host, library, kernels, label)
        ours = [host.get_output(i) for i in range(len(library.outputs))]
    tvm_outputs = _run_vm(vm, inputs)
    _compare_outputs(library, ours, tvm_outputs, label, TVM_LABEL, _plan_fault_note())
    report.references.append(TVM_LABEL)
    if source is not None:
        try:
            framework = run_source(source, inputs)
        except Unavailable as why:
            report.skipped.append(str(why))
        else:
            note = _importer_note(source, tvm_outputs, framework)
            _compare_outputs(library, ours, framework, label, source.runtime_name, note)
            report.references.append(source.runtime_name)
    report.seconds = time.monotonic() - start
    return report


def _llvm_build(lowered, kernel_funcs: list, extra_funcs: dict):
    """TVM's LLVM build of `lowered`: its VM, and each kernel's function from the same library."""
    import tvm
    from tvm import relax

    # LLVM's -O1: half the build time of its default -O3 and the same arithmetic (no fast-math at
    # any level); the kernels run once, so their speed matters less than the build's.
    executable = tvm.compile(lowered, target=tvm.target.Target(LLVM_TARGET))
    functions = {}
    for name in dict.fromkeys(kernel_funcs):
        try:
            functions[name] = executable.mod.get_function(name, True)  # True: look in its imports
        except AttributeError:
            pass
    missing = [n for n in dict.fromkeys(kernel_funcs) if n not in functions]
    if missing:  # output copies, and any kernel TVM's pipeline renamed: build those on their own
        from .lowering import prim_funcs_in

        pool = {**prim_funcs_in(lowered), **extra_funcs}
        module = tvm.IRModule({tvm.ir.GlobalVar(n): pool[n].with_attr("global_symbol", n) for n in missing})
        built = tvm.compile(module, target=tvm.target.Target(LLVM_TARGET))
        functions.update({n: built[n] for n in missing})
    vm = relax.VirtualMachine(executable, tvm.cpu())
    return vm, [functions[name] for name in kernel_funcs]


def _check_kernels(host: HostReference, library, kernels: list, label: str) -> None:
    """Run each kernel in C and in LLVM on the C's own inputs; fail at the first that differs."""
    import tvm

    for index, (kernel, function) in enumerate(zip(library.kernels, kernels)):
        outputs = set(kernel["outputs"])
        arguments = [host.read_tensor(t) for t in kernel["args"] if t not in outputs]
        try:
            host.run_kernel(index)
        except KernelError as err:
            raise CheckError(f"{label}: the archive's C fails: {err}") from None
        tensors = [tvm.runtime.tensor(np.require(a, requirements="C")) for a in arguments]
        results = []
        for t in kernel["outputs"]:
            spec = library.tensors[t]
            results.append(tvm.runtime.empty(tuple(spec["shape"]), spec["dtype"]))
        function(*tensors, *results)
        for t, result in zip(kernel["outputs"], results):
            mismatch = first_mismatch(host.read_tensor(t), result.numpy())
            if mismatch is not None:
                name = library.tensors[t]["name"]
                raise CheckError(
                    f"{label}: kernel {index} ({kernel['name']}) is wrong in the archive's C: its output "
                    f"{name} {mismatch.describe(C_LABEL, TVM_LABEL)} on the same inputs",
                    hint="this is a fault in utvm's C path; please report it with the model "
                    "(--no-check writes the archive anyway)",
                )


def _run_vm(vm, inputs: list) -> list:
    import tvm

    result = vm["main"](*[tvm.runtime.tensor(a) for a in inputs])
    leaves, stack = [], [result]
    while stack:
        value = stack.pop(0)
        if hasattr(value, "numpy"):
            leaves.append(value.numpy())
        else:
            stack[:0] = list(value)
    return leaves


def _compare_outputs(library, ours: list, theirs: list, label: str, reference: str, note: str) -> None:
    if len(theirs) != len(ours):
        raise CheckError(
            f"{label}: the archive has {len(ours)} outputs and {reference} gives {len(theirs)}",
            hint="the model's outputs were not imported as its framework defines them",
        )
    for i, (got, want) in enumerate(zip(ours, theirs)):
        name = library.outputs[i]["name"]
        if got.size != np.asarray(want).size:
            raise CheckError(
                f"{label}: output {i} ({name}) has shape {list(got.shape)} in the archive and "
                f"{list(np.shape(want))} in {reference}"
            )
        mismatch = first_mismatch(got, want)
        if mismatch is not None:
            raise CheckError(
                f"{label}: output {i} ({name}) differs from {reference} "
                f"{mismatch.describe(C_LABEL, reference)}{note}",
                hint="the archive would give wrong answers; --no-check writes it anyway",
            )


def _plan_fault_note() -> str:
    return "; every kernel matched on its own, so the fault is in the plan (tensor placement or wiring)"


def _importer_note(source: SourceModel, tvm_outputs: list, framework: list) -> str:
    agree = len(tvm_outputs) == len(framework) and all(
        first_mismatch(t, f) is None for t, f in zip(tvm_outputs, framework)
    )
    if agree:
        return f"; {TVM_LABEL} agrees with {source.runtime_name}, so the fault is in utvm"
    return f"; {TVM_LABEL} gives the archive's answer, so the fault is in TVM's {source.format_name} importer"


def _last_error(err: Exception) -> str:
    lines = [line for line in str(err).splitlines() if "error" in line]
    return (lines or str(err).splitlines() or [type(err).__name__])[0].strip()


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")
