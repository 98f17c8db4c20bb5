"""`compile()`: a model in, a Model Library Format archive out.

Steps: import the model -> lower it with Relax -> extract the static plan -> place the arena ->
generate the kernels with TVM's C code generator -> generate constants, plan and AOT entry ->
write metadata.json and the tar (atomically, byte-identical for the same input and options).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
from pathlib import Path
from typing import Any, Callable

from utvm.templates import TEMPLATES_DIR

from . import c_sources, flash_constants, layer_map, metadata, tvm_interface
from .archive import check_output, write_archive
from .c_names import c_identifier
from .check import check_archive
from .errors import ModelError
from .frontends import MAX_TENSOR_BYTES, import_model, require_model_file
from .integer_ops import rewrite_integer_ops
from .kernel_codegen import SUPPORT_HEADER, KernelSources, generate_kernels
from .library import from_files
from .library_calls import library_enabled, library_files, prototype, route_to_library, wrapper_source
from .lowering import lower, prim_funcs_in
from .memory_planner import LiveBuffer, check_plan, peak_live_bytes, plan_offsets
from .plan import ExecutionPlan, extract_plan, live_ranges
from .source_runtimes import RUNTIME_NAMES, SourceModel
from .targets import is_generic_target, parse_target, target_string, tvm_target
from .workspace_schedule import minimize_workspace

DEFAULT_ALIGNMENT = 16
# The options the metadata records (what the archive was compiled with).
_RECORDED_OPTIONS = ("alignment", "preserve_inputs", "integer_ops", "rounding", "kernel_library")
# The runtime backend aligns every workspace allocation to 16 bytes (UTVM_BACKEND_ALIGNMENT).
BACKEND_ALIGNMENT = 16
_KNOWN_OPTIONS = (
    "alignment", "preserve_inputs", "integer_ops", "rounding", "kernel_library", "example_inputs", "progress",
)


def compile_model(
    model: Any,
    output: str | Path,
    target: Any = "c",
    *,
    fmt: str | None = None,
    model_name: str | None = None,
    input_shapes: dict | None = None,
    check: bool = True,
    **options,
) -> Path:
    """Compile `model` into the MLF archive `output` and return its path.

    `model` is a model file (TFLite, ONNX, Relax JSON / TVMScript, torch.export archive), a Relax
    IRModule, or a torch ExportedProgram / nn.Module (pass `example_inputs=`). `target` is "c",
    a CPU such as "cortex-m4", "c -mcpu=cortex-m4", or a dict {"kind": "c", "mcpu": ...}. `fmt`
    forces the format; `input_shapes` pins input shapes ({name: [dims]}).

    Options: `alignment` (bytes, default 16) for arena tensors and constants; `preserve_inputs`
    (default False) keeps inputs intact through a run, so a run can be repeated without writing
    them again (by default an input's bytes are free once the last kernel reading it has run,
    and the host writes inputs again before a run that needs them); `integer_ops` (default True)
    runs quantized operators as integer kernels with TFLite's arithmetic instead of TVM's float
    emulation; `rounding` ("single" / "double") forces their requantization rounding (default: as
    TFLite's reference kernel for each operator); `kernel_library` (default: on Arm Cortex-M
    targets, see library_calls.library_enabled) runs the int8 kernels utvm's runtime library has
    (convolution, depthwise convolution, fully connected, add, average pooling) instead of TVM's
    generated C for them;
    `progress`, a callable taking one line of text.

    `check` (default True) runs the archive's C on this machine before the archive is written and
    compares it, kernel by kernel and output by output, with TVM's LLVM build of the same module
    and with the model's own framework where it is installed (see `check.py`); it needs a C
    compiler and costs a few seconds. Raises ModelError (a UserError) for a model that cannot be
    compiled, and CheckError (one) for an archive that would give wrong answers; nothing is
    written at `output` then.
    """
    unknown = sorted(set(options) - set(_KNOWN_OPTIONS))
    if unknown:
        raise ModelError(
            f"unknown compile option(s) {', '.join(unknown)}", hint=f"known: {', '.join(_KNOWN_OPTIONS)}"
        )
    alignment = int(options.get("alignment", DEFAULT_ALIGNMENT))
    if alignment <= 0 or alignment & (alignment - 1):
        raise ModelError(f"alignment must be a power of two, not {alignment}")
    preserve_inputs = bool(options.get("preserve_inputs", False))
    progress: Callable[[str], None] = options.get("progress") or (lambda line: None)
    if isinstance(model, (str, os.PathLike)):
        require_model_file(Path(model))  # before TVM is imported: a typo should cost no seconds
    check_output(output)  # likewise: an archive that could not be written is refused before the work
    target_dict = parse_target(target)
    tvm_target(target_dict)  # TVM's own check of the options, before any work is done

    progress("importing the model")
    imported = import_model(model, fmt, input_shapes, model_name, options.get("example_inputs"))
    integer_ops = bool(options.get("integer_ops", True))
    rounding = options.get("rounding")
    count = _apply_integer_ops(imported, integer_ops, rounding)
    if count:
        progress(f"{count} quantized operators use integer kernels")
    progress(f"lowering {imported.name} with Relax")
    trace: dict = {}  # which bindings each kernel computes, for the layer map
    lowered = lower(imported.mod, target_dict, imported.label, trace)
    plan = extract_plan(lowered, imported.label, imported.output_names)
    kernel_library = bool(options.get("kernel_library", library_enabled(target_dict)))
    routed = route_to_library(plan, prim_funcs_in(lowered)) if kernel_library and integer_ops else {}
    if routed:
        count = sum(k.prim_func in routed for k in plan.kernels)
        progress(f"{count} kernels call utvm's int8 kernel library")

    name = imported.name
    prefix = f"utvm_{name}"
    settings = {
        "alignment": alignment,
        "preserve_inputs": preserve_inputs,
        "integer_ops": integer_ops,
        "rounding": rounding,
        "kernel_library": kernel_library,
        "input_shapes": input_shapes or {},
    }
    model_hash = _model_hash(imported, target_dict, settings)
    _assign_symbols(plan, prefix)

    progress(f"generating C for {len(plan.kernels)} kernels")
    check_funcs = {**plan.copy_funcs, **{n: lib.check_func for n, lib in routed.items()}}
    funcs = {**prim_funcs_in(lowered), **check_funcs}
    # Kernels may share code: one C function per PrimFunc.
    by_symbol = {k.function: funcs[k.prim_func] for k in plan.kernels if k.prim_func not in routed}
    wrappers = {k.function: routed[k.prim_func] for k in plan.kernels if k.prim_func in routed}
    kernels_h = f"{name}_kernels.h"
    ws_alignment = max(alignment, BACKEND_ALIGNMENT)
    sources = _tvm_kernels(by_symbol, target_dict, kernels_h, ws_alignment, imported.label)
    prototypes = list(dict.fromkeys(sources.prototypes.values()))
    prototypes += [prototype(symbol, lib) for symbol, lib in wrappers.items()]
    memory = _place_arena(plan, alignment, preserve_inputs)
    memory["workspace_bytes"] = max(sources.workspace.values(), default=0)
    for what in ("arena_bytes", "workspace_bytes", "constant_bytes"):
        if memory[what] > MAX_TENSOR_BYTES:
            raise ModelError(f"{imported.label}: the plan needs {memory[what]:,} bytes of {what[:-6]}; "
                             f"utvm's plan addresses at most {MAX_TENSOR_BYTES:,}",
                             hint="no board has room for this; check the model's shapes")

    meta = _metadata(imported, plan, memory, target_dict, model_hash, alignment, settings)
    meta.update(tvm_interface.tvm_metadata(meta))  # TVM's keys beside utvm's, for microTVM's templates
    files = {
        metadata.METADATA_FILE: metadata.dumps(meta),
        f"codegen/host/src/{name}_kernels.c": sources.source.encode(),
        f"codegen/host/src/{name}_constants.c": c_sources.constants_source(name, plan, alignment).encode(),
        f"codegen/host/src/{name}_plan.c": c_sources.plan_source(name, prefix, kernels_h, plan).encode(),
        f"codegen/host/include/{kernels_h}": c_sources.kernels_header(name, kernels_h, prototypes).encode(),
        "codegen/host/include/utvm_model_config.h": c_sources.config_header(
            name, model_hash, memory, plan, alignment, max(alignment, BACKEND_ALIGNMENT)
        ).encode(),
        "codegen/host/include/" + c_sources.support_header()[0]: c_sources.support_header()[1].encode(),
        # The plan's C includes utvm/model.h; the archive carries it so that any build can take the C.
        "codegen/host/include/utvm/model.h": (TEMPLATES_DIR / "runtime/include/utvm/model.h").read_bytes(),
        "codegen/host/include/" + tvm_interface.HEADER: tvm_interface.interface_header(meta).encode(),
        "codegen/host/src/" + tvm_interface.SOURCE: tvm_interface.interface_source(meta).encode(),
        "src/relax.txt": lowered.script().encode(),
    }
    if wrappers:
        files[f"codegen/host/src/{name}_library_calls.c"] = wrapper_source(name, kernels_h, wrappers).encode()
        files.update(library_files(routed))
    if imported.layers is not None:
        layer_map.annotate(meta, plan, imported.layers, trace, imported.digest, files, model)
        files[metadata.METADATA_FILE] = metadata.dumps(meta)
    if flash_constants.is_avr_target(target_dict):
        files = flash_constants.place_constants_in_flash(files, name, plan)
    # The check runs the C that ships (for an AVR target, the flash-constant rewrite, whose macros
    # are empty for the host compiler).
    if check:
        source = None
        if imported.fmt in RUNTIME_NAMES:
            source = SourceModel(imported.fmt, model, options.get("example_inputs"))
        library = from_files(Path(output), files)
        kernel_funcs = [k.prim_func for k in plan.kernels]
        report = check_archive(library, lowered, kernel_funcs, check_funcs, source, imported.label, progress)
        progress(report.summary())
    progress("writing the archive")
    return write_archive(Path(output), files)


def _tvm_kernels(by_symbol: dict, target: dict, kernels_h: str, ws_alignment: int, label: str
                 ) -> KernelSources:
    """TVM's C for the kernels the library does not run (a stub file when there are none)."""
    if not by_symbol:
        stub = (f'#include "{SUPPORT_HEADER}"\n#include "{kernels_h}"\n\n'
                "/* Every kernel of this model calls utvm's kernel library. */\n"
                "typedef int utvm_no_tvm_kernels_t;\n")
        return KernelSources(stub, {}, {})
    try:
        vector_unit = is_generic_target(target)
        return generate_kernels(
            {symbol: minimize_workspace(func, vector_unit) for symbol, func in by_symbol.items()},
            target,
            kernels_h,
            workspace_alignment=ws_alignment,
        )
    except Exception as err:
        first = next((line for line in str(err).splitlines() if line.strip()), type(err).__name__)
        raise ModelError(f"{label}: TVM could not generate C for the kernels: {first}") from None


def _apply_integer_ops(imported, integer_ops: bool, rounding) -> int:
    if not integer_ops:
        return 0
    try:
        imported.mod, count = rewrite_integer_ops(imported.mod, rounding)
    except ValueError as err:
        raise ModelError(str(err)) from None
    return count


def relax_module(
    model: Any,
    *,
    fmt: str | None = None,
    input_shapes: dict | None = None,
    integer_ops: bool = True,
    rounding: str | None = None,
    example_inputs=None,
):
    """The Relax module `compile` lowers for `model` (imported, quantized operators rewritten).

    Build it with `tvm.compile(mod, target="llvm")` and run it in `tvm.relax.VirtualMachine` to
    get TVM's own answer for the very module the archive was generated from.
    """
    imported = import_model(model, fmt, input_shapes, None, example_inputs)
    _apply_integer_ops(imported, integer_ops, rounding)
    return imported.mod


def _assign_symbols(plan: ExecutionPlan, prefix: str) -> None:
    taken: set = set()
    symbols: dict = {}  # kernels that run the same PrimFunc share its C function
    for kernel in plan.kernels:
        if kernel.prim_func not in symbols:
            symbols[kernel.prim_func] = c_identifier(f"{prefix}_{kernel.prim_func}", taken)
        kernel.function = symbols[kernel.prim_func]
    count = 0
    for tensor in plan.tensors:
        if tensor.storage == "const" and tensor.root == tensor.id:
            tensor.symbol = f"{prefix}_c{count}"
            count += 1
    for tensor in plan.tensors:
        tensor.symbol = plan.tensors[tensor.root].symbol


def _place_arena(plan: ExecutionPlan, alignment: int, preserve_inputs: bool) -> dict:
    ranges = live_ranges(plan, preserve_inputs)
    buffers = [
        LiveBuffer(root, plan.tensors[root].nbytes, first, last)
        for root, (first, last) in sorted(ranges.items())
    ]
    offsets, arena = plan_offsets(buffers, alignment)
    check_plan(buffers, offsets, arena, alignment)
    for tensor in plan.tensors:
        if tensor.storage == "arena":
            tensor.offset = offsets[tensor.root]
    lower_bound = peak_live_bytes(buffers)
    io_ids = set(plan.inputs) | set(plan.outputs)
    return {
        "arena_bytes": arena,
        "constant_bytes": sum(t.nbytes for t in plan.tensors if t.storage == "const" and t.root == t.id),
        "io_bytes": sum(plan.tensors[i].nbytes for i in io_ids),
        "peak_live_lower_bound_bytes": lower_bound,
        "arena_to_lower_bound": round(arena / lower_bound, 4) if lower_bound else 1.0,
    }


def _model_hash(imported, target: dict, settings: dict) -> str:
    import tvm

    from . import __name__ as package

    record = {
        "model": imported.digest,
        "format": imported.fmt,
        "name": imported.name,
        "target": target,
        "settings": settings,
        "tvm": tvm.__version__,
        "format_version": metadata.FORMAT_VERSION,
        "generator": package,
    }
    return hashlib.sha256(json.dumps(record, sort_keys=True, default=str).encode()).hexdigest()


def _io_entries(plan: ExecutionPlan, ids: list, infos: list, default: str) -> list:
    entries = []
    for i, tid in enumerate(ids):
        tensor = plan.tensors[tid]
        info = infos[i] if i < len(infos) else {}
        entries.append(
            {
                "name": info.get("name") or (tensor.name if default == "input" else f"output_{i}"),
                "shape": list(tensor.shape),
                "dtype": tensor.dtype,
                "tensor": tid,
                "quantization": info.get("quantization"),
            }
        )
    return entries


def _metadata(
    imported, plan: ExecutionPlan, memory: dict, target: dict, model_hash: str, alignment: int, settings: dict
) -> dict:
    import tvm

    inputs = [{"name": i.name, "quantization": i.quantization} for i in imported.inputs]
    outputs = [
        {"name": n, "quantization": q}
        for n, q in itertools.zip_longest(imported.output_names, imported.output_quantization)
    ]
    tensors = []
    for t in plan.tensors:
        entry = {
            "id": t.id,
            "name": t.name,
            "storage": t.storage,
            "offset": t.offset if t.storage == "arena" else 0,
            "nbytes": t.nbytes,
            "shape": list(t.shape),
            "dtype": t.dtype,
        }
        if t.root != t.id:
            entry["view_of"] = t.root
        if t.storage == "const":
            entry["symbol"] = t.symbol
        tensors.append(entry)
    return {
        "format_version": metadata.FORMAT_VERSION,
        "model_name": imported.name,
        "model_hash": model_hash,
        "source_format": imported.fmt,
        "tvm_version": tvm.__version__,
        "target": target,
        "target_str": target_string(target),
        "options": {k: settings[k] for k in _RECORDED_OPTIONS},
        "inputs": _io_entries(plan, plan.inputs, inputs, "input"),
        "outputs": _io_entries(plan, plan.outputs, outputs, "output"),
        "plan": {
            "pools": [
                {"name": "arena", "size_bytes": memory["arena_bytes"], "alignment": alignment},
                {"name": "workspace", "size_bytes": memory["workspace_bytes"], "alignment": alignment},
                {"name": "constants", "size_bytes": memory["constant_bytes"], "alignment": alignment},
            ],
            "tensors": tensors,
            "kernels": [
                {
                    "index": k.index,
                    "name": k.name,
                    "function": k.function,
                    "args": k.args,
                    "outputs": k.outputs,
                }
                for k in plan.kernels
            ],
        },
        "memory": memory,
    }
