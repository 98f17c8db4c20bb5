"""The source model's layer names of each kernel, as the archive's metadata maps them.

`utvm compile` records which layers of the TFLite, ONNX or PyTorch model each kernel computes
(`source_layers` and each kernel's `layers`, see docs/model-library-format.md). Reports show
them beside the kernel names; an archive without the map gives empty names.
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping


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


def kernel_label(metadata: Mapping[str, Any], index: int) -> str:
    """All layers of kernel `index`, labelled and joined ("" without a map)."""
    return layers_label(kernel_layers(metadata, index))


def _where(layer: Mapping[str, Any]) -> str:
    """The layer's name, or the path and type of the PyTorch module whose call made it."""
    module, kind = layer.get("module"), layer.get("module_type")
    if module:
        return f"{module} ({kind})" if kind else str(module)
    return str(layer["name"]).split(";")[0]
