"""The source model's layer names of each kernel, as the archive's metadata maps them.

`utvm compile` records which layers of the TFLite, ONNX or PyTorch model each kernel computes
(`source_layers` and each kernel's `layers`, see docs/model-library-format.md). Reports show
them beside the kernel names; an archive without the map gives empty names.
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence


def source_layers(metadata: Mapping[str, Any]) -> List[Dict[str, Any]]:
    """Every layer of the source model, in its own order ([] when the archive has no map)."""
    source = metadata.get("source_layers") or {}
    return list(source.get("layers") or [])


def kernel_layers(metadata: Mapping[str, Any], index: int) -> List[Dict[str, Any]]:
    """The layers kernel `index` computes, each {index, op, name, output[, module]}."""
    layers = source_layers(metadata)
    kernels = metadata["plan"]["kernels"]
    if not layers or not 0 <= index < len(kernels):
        return []
    return [layers[i] for i in kernels[index].get("layers", [])]


def output_layer(metadata: Mapping[str, Any], index: int):
    """The layer whose output tensor kernel `index` writes, or None (a partial layer, a copy)."""
    layers = source_layers(metadata)
    which = metadata["plan"]["kernels"][index].get("source_output")
    return layers[which] if layers and which is not None else None


def layer_label(layer: Mapping[str, Any]) -> str:
    """`#3 DEPTHWISE_CONV_2D functional_1/activation_3/Relu`: index, op and a short name.

    TFLite joins the names of fused operations with ';'; the first is the layer's own. A PyTorch
    node that a module's call made is named by the module's path and type, as the user wrote it:
    `#1 _native_batch_norm_legit_no_training bn (BatchNorm2d)`.
    """
    return f"#{layer['index']} {layer['op']} {_where(layer)}"


def layers_label(layers: List[Mapping[str, Any]]) -> str:
    """The labels of `layers`, joined; PyTorch nodes of one module, one after the other, name the
    module once, after the last: `#7 permute, #8 addmm fc (Linear)`."""
    parts = []
    for layer, after in zip(layers, [*layers[1:], None]):
        same_module = layer.get("module") and after is not None and _where(after) == _where(layer)
        parts.append(f"#{layer['index']} {layer['op']}" if same_module else layer_label(layer))
    return ", ".join(parts)


def call_layers(metadata: Mapping[str, Any], symbols: Sequence[str]) -> List[List[Dict[str, Any]]]:
    """The layers of each kernel call of a run that is not the archive's plan: TVM's Relax VM
    running the archive's model (a tvm_runtime project), whose calls are named by their PrimFunc.

    TVM lowers that module for its own target and may split or fuse a little differently, so the
    calls are matched with the plan's kernels by PrimFunc name, in order (a plan kernel's PrimFunc
    is the name of the first kernel that runs its C function). A call that matches none computes
    part of what the plan's unmatched kernels between its matched neighbours compute: it is given
    their layers.
    """
    kernels = metadata["plan"]["kernels"]
    if not source_layers(metadata):
        return [[] for _ in symbols]
    prim_func: Dict[str, str] = {}
    for kernel in kernels:
        prim_func.setdefault(kernel["function"], kernel["name"])
    names = [prim_func[k["function"]] for k in kernels]
    matched: List[Optional[int]] = []
    start = 0
    for symbol in symbols:
        found = next((j for j in range(start, len(names)) if names[j] == symbol), None)
        matched.append(found)
        start = start if found is None else found + 1
    result = []
    for i, found in enumerate(matched):
        if found is not None:
            indices: Sequence[int] = [found]
        else:
            low = max((m for m in matched[:i] if m is not None), default=-1) + 1
            high = min((m for m in matched[i + 1:] if m is not None), default=len(kernels))
            indices = range(low, high)
        layers = {layer["index"]: layer for j in indices for layer in kernel_layers(metadata, j)}
        result.append([layers[k] for k in sorted(layers)])
    return result


def kernel_label(metadata: Mapping[str, Any], index: int) -> str:
    """All layers of kernel `index`, labelled and joined ("" without a map)."""
    return layers_label(kernel_layers(metadata, index))


def _where(layer: Mapping[str, Any]) -> str:
    """The layer's name, or the path and type of the PyTorch module whose call made it."""
    module, kind = layer.get("module"), layer.get("module_type")
    if module:
        return f"{module} ({kind})" if kind else str(module)
    return str(layer["name"]).split(";")[0]
