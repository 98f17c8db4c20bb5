"""Model-latency peers on the host CPU: the TFLite interpreter (one thread) and TVM's LLVM build.

Both run the same .tflite file on the same seeded random input as the utvm host device.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from .timing import per_call_seconds


def _tflite_interpreter(model: Path):
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    # TFLite's optimized built-in kernels, without the default XNNPACK delegate.
    interp = Interpreter(model_path=str(model), num_threads=1,
                         experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    interp.allocate_tensors()
    return interp


def random_inputs(model: Path, seed: int) -> list[np.ndarray]:
    """One seeded random array per model input, in the model's input order."""
    rng = np.random.default_rng(seed)
    arrays = []
    for detail in _tflite_interpreter(model).get_input_details():
        dtype = np.dtype(detail["dtype"])
        shape = tuple(int(d) for d in detail["shape"])
        if dtype.kind in "iu":
            info = np.iinfo(dtype)
            arrays.append(rng.integers(info.min, info.max, size=shape, endpoint=True).astype(dtype))
        else:
            arrays.append(rng.standard_normal(shape).astype(dtype))
    return arrays


def tflite(model: Path, inputs: list[np.ndarray], *, number: int, repeat: int):
    """(seconds per inference, outputs) with the TFLite interpreter on one thread."""
    interp = _tflite_interpreter(model)
    for detail, array in zip(interp.get_input_details(), inputs):
        interp.set_tensor(detail["index"], array)
    seconds = per_call_seconds(interp.invoke, number=number, repeat=repeat)
    outputs = [interp.get_tensor(d["index"]).copy() for d in interp.get_output_details()]
    return seconds, outputs


def build_tvm_llvm(model: Path):
    """TVM's Relax VM executable for the model, built for the `llvm` target with bound params."""
    import tflite as tflite_schema
    import tvm
    from tvm import relax
    from tvm.relax.frontend.tflite import from_tflite

    mod = from_tflite(tflite_schema.Model.GetRootAsModel(model.read_bytes(), 0))
    mod, params = relax.frontend.detach_params(mod)
    num_input = int(mod["main"].attrs["num_input"])
    bindings = {p.name_hint: t for p, t in zip(mod["main"].params[num_input:], params["main"])}
    mod = relax.transform.BindParams("main", bindings)(mod)
    return tvm.compile(mod, target="llvm")


def tvm_llvm(model: Path, inputs: list[np.ndarray], *, number: int, repeat: int):
    """(seconds per inference, outputs, build seconds) for TVM's LLVM build, timed by TVM itself."""
    import tvm
    from tvm import relax

    start = time.perf_counter()
    executable = build_tvm_llvm(model)
    build_s = time.perf_counter() - start
    dev = tvm.cpu()
    vm = relax.VirtualMachine(executable, dev)
    args = [tvm.runtime.tensor(a, dev) for a in inputs]
    result = vm["main"](*args)
    results = [result] if hasattr(result, "numpy") else list(result)
    outputs = [r.numpy() for r in results]
    timer = vm.time_evaluator("main", dev, number=number, repeat=repeat, min_repeat_ms=0)
    return float(np.median(timer(*args).results)), outputs, build_s


def max_abs_diff(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    """Largest element difference between two output lists (as float64)."""
    return max(float(np.max(np.abs(x.astype(np.float64) - y.astype(np.float64)))) for x, y in zip(a, b))
