"""Turn a failure inside TVM's importers into one line that names the model's operator.

TVM's importers fail with whatever the failing converter raised: an AssertionError, a TypeError
about bytes, "unknown dtype object". The operator they were converting is still in the
traceback's frames (the TFLite importer's `convert_op_to_relax` loop, the ONNX importer's
`_construct_nodes` loop), so `run_importer` reads it from there and says which operator of the
model failed. Models that TVM cannot import for a reason we can see before it starts (a TFLite
custom operator, ONNX string tensors) are refused up front by `check_tflite_operators` and
`check_onnx_tensors`, naming the operator.
"""

from __future__ import annotations

import contextlib
import io
import traceback

from .errors import ModelError

# Frames of TVM 0.27's importers that hold the operator being converted: (function, locals).
_TFLITE_LOOP = "convert_op_to_relax"
_ONNX_LOOP = "_construct_nodes"
# Custom operators TVM's TFLite importer maps to a builtin one.
_KNOWN_CUSTOM = {b"TFLite_Detection_PostProcess"}
# ONNX operators whose output shape is given by the values of these inputs (by position).
_SHAPE_INPUTS = {
    "Expand": (1,),
    "Reshape": (1,),
    "ConstantOfShape": (0,),
    "Tile": (1,),
    "Range": (0, 1, 2),
    "Slice": (1, 2, 3, 4),
    "Pad": (1,),
    "Resize": (2, 3),
    "Upsample": (1,),
    "TopK": (1,),
    "OneHot": (1,),
    "Split": (1,),
    "Squeeze": (1,),
    "Unsqueeze": (1,),
}


def run_importer(label, frontend: str, convert):
    """Run `convert()` (a TVM importer call); raise ModelError naming the operator on failure."""
    import tvm

    try:
        # The ONNX importer prints "Error converting operator ..." before re-raising; the
        # message below says the same in one line.
        with contextlib.redirect_stdout(io.StringIO()):
            return convert()
    except tvm.error.OpNotImplemented as err:
        raise ModelError(
            f"{label}: operator not supported by TVM's {frontend} importer: {first_line(err)}",
            hint="replace the operator in the model, or compile with a TVM that implements it",
        ) from None
    except Exception as err:
        where = failing_operator(err.__traceback__)
        raise ModelError(
            f"{label}: TVM's {frontend} importer failed{where}: {type(err).__name__}: {first_line(err)}",
            hint="the operator is outside what this TVM's importer handles; replace it in the model",
        ) from None


def failing_operator(tb) -> str:
    """" at operator NAME (...)" for the operator an importer was converting, or ""."""
    found = ""
    for frame, _ in traceback.walk_tb(tb):
        local = frame.f_locals
        if frame.f_code.co_name == _TFLITE_LOOP and "op_idx" in local:
            name = local.get("op_code_str") or "?"
            found = f" at operator {local['op_idx']} ({name})"
        elif frame.f_code.co_name == _ONNX_LOOP and "op_name" in local:
            node = local.get("node")
            node_name = getattr(node, "name", "") or ""
            found = f" at operator {local['op_name']}" + (f" (node {node_name!r})" if node_name else "")
    return found


def first_line(err: Exception) -> str:
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    informative = [line for line in lines if "not supported" in line or "Operator" in line]
    return (informative or lines or [type(err).__name__])[0]


def check_tflite_operators(model, label) -> None:
    """Refuse, naming the operator, what TVM 0.27's TFLite importer fails on without saying why.

    - Custom operators: the importer only says that one exists.
    - DEQUANTIZE of float16 weights that DENSIFY makes from sparse weights: the importer reads a
      float16 DEQUANTIZE input as a constant buffer, finds none (DENSIFY's output is computed)
      and fails with "a bytes-like object is required, not 'int'".
    """
    import tflite

    graph = model.Subgraphs(0)
    custom, made_by_densify = [], set()
    for index in range(graph.OperatorsLength()):
        op = graph.Operators(index)
        code = model.OperatorCodes(op.OpcodeIndex())
        builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
        if builtin == tflite.BuiltinOperator.CUSTOM and code.CustomCode() not in _KNOWN_CUSTOM:
            name = (code.CustomCode() or b"?").decode("utf-8", "replace")
            if name not in custom:
                custom.append(name)
        elif builtin == tflite.BuiltinOperator.DENSIFY:
            made_by_densify.update(int(t) for t in op.OutputsAsNumpy())
        elif builtin == tflite.BuiltinOperator.DEQUANTIZE and op.InputsLength():
            source = int(op.Inputs(0))
            if source in made_by_densify and graph.Tensors(source).Type() == tflite.TensorType.FLOAT16:
                raise ModelError(
                    f"{label}: operator {index} (DEQUANTIZE) takes float16 weights that DENSIFY makes "
                    "from sparse weights; TVM's TFLite importer reads a float16 DEQUANTIZE input only "
                    "from a constant buffer",
                    hint="export the model with dense weights (no sparsity) and no float16 quantization",
                )
    if custom:
        raise ModelError(
            f"{label}: TFLite custom operator(s) {', '.join(custom)} (registered by the application "
            "that made the model, not part of TFLite) are not supported by TVM's TFLite importer",
            hint="export the model without custom operators",
        )


def check_onnx_tensors(model, label) -> None:
    """Refuse, naming the operator, ONNX models that cannot have a static C form.

    - String tensors: TVM has no string type.
    - An output shape given at run time: an operator such as Expand or Reshape whose shape input
      is a model input (not a constant) has an output shape known only when the model runs.
    """
    import onnx

    initializers = {init.name for init in model.graph.initializer}
    runtime_inputs = {v.name for v in model.graph.input if v.name not in initializers}
    for node in model.graph.node:
        for position in _SHAPE_INPUTS.get(node.op_type, ()):
            if position < len(node.input) and node.input[position] in runtime_inputs:
                named = f" (node {node.name!r})" if node.name else ""
                raise ModelError(
                    f"{label}: operator {node.op_type}{named} takes its output shape from input "
                    f"{node.input[position]!r}, a value known only at run time; utvm compiles "
                    "models with static shapes",
                    hint=f"make {node.input[position]!r} a constant (an initializer) in the model",
                )

    string = onnx.TensorProto.STRING
    values = list(model.graph.input) + list(model.graph.output) + list(model.graph.value_info)
    names = {v.name for v in values if v.type.tensor_type.elem_type == string}
    if not names:
        return
    ops = []
    for node in model.graph.node:
        if names & (set(node.input) | set(node.output)) and node.op_type not in ops:
            ops.append(node.op_type)
    raise ModelError(
        f"{label}: operator {', '.join(ops) or '(none)'} works on string tensors "
        f"({', '.join(sorted(names))}); utvm compiles numeric models only",
        hint="keep string processing outside the compiled model",
    )
