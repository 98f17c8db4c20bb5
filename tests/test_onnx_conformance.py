"""ONNX's own backend test models, every one, through utvm: right, or refused naming the operator.

The `onnx` package ships 140 small models with reference inputs and outputs under
onnx/backend/test/data/{pytorch-converted,pytorch-operator,simple}. Each is compiled with the
compile-time check on (against TVM's LLVM build and ONNX Runtime), its archive's C is run on the
model's reference inputs by the host reference runner (the archive's own C built for this
machine, as a device runs it), and its outputs are compared with the reference outputs. A model
that utvm refuses must be refused with one line naming the operator (or the input) at fault, and
the refusals are pinned below, so that one more is a visible change. docs/conformance.md gives
the counts.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from utvm.model_library import HostReference, UserError, compile_model, load
from utvm.model_library.tolerance import first_mismatch

onnx = pytest.importorskip("onnx", reason="the onnx package ships the backend test models")
from onnx import numpy_helper  # noqa: E402

DATA = Path(onnx.__file__).parent / "backend" / "test" / "data"
SUITES = ("pytorch-converted", "pytorch-operator", "simple")
MODELS = sorted(p.parent for suite in SUITES for p in (DATA / suite).glob("*/model.onnx"))

# model -> what its one-line refusal must say. Strings are outside what utvm compiles; the rest are
# TVM 0.27 importer limits (named) or a wrong answer of its importer that the check catches.
REFUSED = {
    "test_operator_index": "TVM's ONNX importer failed at operator Slice",
    "test_expand_shape_model1": "operator Expand (node 'test') takes its output shape from input 'shape'",
    "test_expand_shape_model2": "operator Expand (node 'test') takes its output shape from input 'shape'",
    "test_expand_shape_model3": "operator Expand (node 'test') takes its output shape from input 'shape'",
    "test_expand_shape_model4": "operator Expand (node 'test') takes its output shape from input 'shape'",
    "test_gradient_of_add": "not supported for frontend ONNX: Gradient",
    "test_gradient_of_add_and_mul": "not supported for frontend ONNX: Gradient",
    "test_sequence_model3": "differs from ONNX Runtime",
    "test_sequence_model6": "TVM's ONNX importer failed at operator SequenceLength",
    "test_sequence_model8": "input 'X' has a dynamic shape",
    **{
        name: "operator StringNormalizer works on string tensors"
        for name in (
            "test_strnorm_model_monday_casesensintive_lower",
            "test_strnorm_model_monday_casesensintive_nochangecase",
            "test_strnorm_model_monday_casesensintive_upper",
            "test_strnorm_model_monday_empty_output",
            "test_strnorm_model_monday_insensintive_upper_twodim",
            "test_strnorm_model_nostopwords_nochangecase",
        )
    },
}


def _tensors(folder: Path, prefix: str) -> list:
    files = sorted(folder.glob(f"{prefix}_*.pb"), key=lambda p: int(p.stem.split("_")[1]))
    return [numpy_helper.to_array(onnx.load_tensor(str(f))) for f in files]


def test_the_suite_is_all_there():
    assert len(MODELS) == 140, f"onnx ships {len(MODELS)} backend test models here, not 140"
    assert set(REFUSED) <= {m.name for m in MODELS}
    assert len(REFUSED) < 20


@pytest.mark.parametrize("model_dir", MODELS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_backend_model(model_dir, tmp_path):
    try:
        archive = compile_model(model_dir / "model.onnx", tmp_path / "model.tar")
    except UserError as refusal:
        message = refusal.message  # the one line; the hint is apart
        assert "\n" not in message, message
        assert model_dir.name in REFUSED, f"refused: {message}"
        assert REFUSED[model_dir.name] in message
        return
    assert model_dir.name not in REFUSED, "it compiles now: update REFUSED and docs/conformance.md"
    data = model_dir / "test_data_set_0"
    inputs, expected = _tensors(data, "input"), _tensors(data, "output")
    library = load(archive)
    assert len(library.inputs) == len(inputs) and len(library.outputs) == len(expected)
    with HostReference(library) as host:
        for i, array in enumerate(inputs):
            host.set_input(i, array)
        host.run()
        for i, want in enumerate(expected):
            got = host.get_output(i)
            mismatch = first_mismatch(got, np.asarray(want).astype(got.dtype, copy=False))
            assert mismatch is None, f"output {i} " + mismatch.describe("utvm", "the reference")
