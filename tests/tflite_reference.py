"""The TFLite interpreter as the reference that int8 outputs are checked against.

TFLite's own kernel sets disagree with each other on int8 models: on random inputs to
ic_resnet8_int8 the default (XNNPACK) and the optimized kernels differ from the reference kernels
by up to 22 and 44. "Within 1 of the interpreter" therefore names one of them: the reference
kernels (`OpResolverType.BUILTIN_REF`), whose integer arithmetic is the one TFLite Micro runs on
microcontrollers.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Sequence

import numpy as np
import pytest


def reference_interpreter(model_path: Path):
    """An allocated ai_edge_litert Interpreter with the reference kernels, or skip without it."""
    litert = pytest.importorskip("ai_edge_litert.interpreter", reason="ai-edge-litert not installed")
    interpreter = litert.Interpreter(
        model_path=str(model_path),
        experimental_op_resolver_type=litert.OpResolverType.BUILTIN_REF,
        num_threads=1,
    )
    interpreter.allocate_tensors()
    return interpreter


def tflite_reference(model_path: Path, inputs: Sequence[np.ndarray]) -> List[np.ndarray]:
    """The reference interpreter's outputs for `inputs`, given in the model's input order."""
    interpreter = reference_interpreter(model_path)
    for detail, array in zip(interpreter.get_input_details(), inputs):
        interpreter.set_tensor(detail["index"], array)
    interpreter.invoke()
    return [interpreter.get_tensor(detail["index"]) for detail in interpreter.get_output_details()]
