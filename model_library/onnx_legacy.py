"""Restate old-opset ONNX operators in the form TVM's ONNX importer reads correctly.

PRelu before opset 7 applies a slope of C values along the channel axis (axis 1) of its input;
from opset 7 on, the slope broadcasts numpy-style from the right. TVM 0.27's importer reads every
PRelu the new way, so a per-channel slope of an old model lands on the last axis (and fails to
lower unless the last axis happens to have C elements too). `restate_legacy_ops` reshapes such a
slope to [C, 1, ..., 1], which says "axis 1" under the new rule: the same function, in the form
the importer understands. The model is changed in memory only.
"""

from __future__ import annotations


def default_opset(model) -> int:
    """The model's version of the default ("" or "ai.onnx") operator set."""
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return int(entry.version)
    return 0


def restate_legacy_ops(model) -> int:
    """Rewrite `model` in place as described above; return how many operators were restated."""
    if default_opset(model) >= 7:
        return 0
    import onnx
    from onnx import numpy_helper

    ranks = _ranks(model)
    initializers = {init.name: init for init in model.graph.initializer}
    restated = 0
    for node in model.graph.node:
        if node.op_type != "PRelu" or len(node.input) < 2:
            continue
        slope, rank = initializers.get(node.input[1]), ranks.get(node.input[0])
        if slope is None or rank is None or rank < 2 or len(slope.dims) != 1 or slope.dims[0] == 1:
            continue
        values = numpy_helper.to_array(slope)
        reshaped = numpy_helper.from_array(values.reshape((values.size,) + (1,) * (rank - 2)), slope.name)
        slope.CopyFrom(reshaped)
        restated += 1
    if restated:
        onnx.checker.check_model(model)
    return restated


def _ranks(model) -> dict:
    """{tensor name: rank} for every tensor whose rank ONNX's shape inference knows."""
    import onnx

    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # inference is a help here, not a requirement
        inferred = model
    graph = inferred.graph
    ranks = {}
    for value in list(graph.input) + list(graph.value_info) + list(graph.output):
        tensor_type = value.type.tensor_type
        if tensor_type.HasField("shape"):
            ranks[value.name] = len(tensor_type.shape.dim)
    return ranks
