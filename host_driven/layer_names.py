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

    TFLite joins the names of fused operations with ';'; the first is the layer's own.
    """
    name = layer.get("module") or str(layer["name"]).split(";")[0]
    return f"#{layer['index']} {layer['op']} {name}"


def kernel_label(metadata: Mapping[str, Any], index: int) -> str:
    """All layers of kernel `index`, labelled and joined ("" without a map)."""
    return ", ".join(layer_label(layer) for layer in kernel_layers(metadata, index))
