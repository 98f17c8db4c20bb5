"""The ``mlperftiny`` project type: firmware that the MLPerf Tiny runner drives over a serial port.

The device side of the runner's protocol is portable C in the runtime
(``templates/runtime/apps/mlperftiny``); this module is what a template needs around it: the
benchmarks the runner knows, the check that a model fits one, and the generated C header that
tells the firmware how the benchmark's input files map onto the model's input and how its output
becomes the result vector; and for the server, the project option naming the benchmark and the
device's boot before a pseudo-terminal (pty_bridge) is handed out. The runner's input files are,
per benchmark:

| id | benchmark | one input file |
|---|---|---|
| kws01 | keyword spotting | 490 int8 (49 x 10 MFCC) |
| vww01 | visual wake words | 96 x 96 x 3 uint8 RGB |
| ic01 | image classification (CIFAR-10) | 32 x 32 x 3 uint8 RGB |
| ad01 | anomaly detection | 640 little-endian float32 |

uint8 pixels go to an int8 model as ``pixel - 128``; float32 features go to an int8 model
quantized with its input's scale and zero point. The results are the dequantized outputs, or for
ad01 the mean squared difference between the dequantized output and the input.

Standard library only: generated projects carry this module.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any, Callable, Dict, List, Mapping, Optional

from .errors import IoTimeoutError, ServerError, UserError
from .options import ProjectOption
from .pty_bridge import PtyBridge

PROJECT_TYPE = "mlperftiny"
# The project_type option's help for this type, in every template that offers it.
TYPE_HELP = "mlperftiny: the MLPerf Tiny runner's device under test (needs mlperf_model)"
CONFIG_HEADER = "utvm_mlperf_config.h"
# The runtime's files for this project type (runtime_files.json keys mlperftiny_sources/_includes).
RUNTIME_PART = "mlperftiny"
# The runtime's own sources an mlperftiny image builds besides the app: no session, only the plan.
PLAN_SOURCES = ("src/backend.c", "src/plan.c")
MODEL_ID_OPTION = "mlperf_model"
# The runner reads the device name with the pattern m-name-dut-[NAME]: no brackets, one line.
_NAME_FORBIDDEN = set('[]"\\')


@dataclasses.dataclass(frozen=True)
class Benchmark:
    """One benchmark the runner knows: what one of its input files holds."""

    model_id: str
    task: str
    file_dtype: str  # "int8", "uint8" or "float32"
    file_elements: int

    @property
    def file_bytes(self) -> int:
        return self.file_elements * (4 if self.file_dtype == "float32" else 1)


BENCHMARKS = {b.model_id: b for b in (
    Benchmark("kws01", "keyword spotting", "int8", 49 * 10),
    Benchmark("vww01", "visual wake words", "uint8", 96 * 96 * 3),
    Benchmark("ic01", "image classification", "uint8", 32 * 32 * 3),
    Benchmark("ad01", "anomaly detection", "float32", 640),
)}
MODEL_IDS = tuple(BENCHMARKS)

# (input file dtype, model input dtype) -> how the firmware converts (mlperftiny.h)
_CONVERSIONS = {
    ("int8", "int8"): "UTVM_MLPERF_INPUT_COPY",
    ("uint8", "uint8"): "UTVM_MLPERF_INPUT_COPY",
    ("uint8", "int8"): "UTVM_MLPERF_INPUT_U8_TO_I8",
    ("float32", "float32"): "UTVM_MLPERF_INPUT_COPY",
    ("float32", "int8"): "UTVM_MLPERF_INPUT_QUANTIZE_F32",
}
_OUTPUT_TYPES = {"int8": "UTVM_MLPERF_OUTPUT_I8", "uint8": "UTVM_MLPERF_OUTPUT_U8",
                 "float32": "UTVM_MLPERF_OUTPUT_F32"}


def model_option() -> ProjectOption:
    """The option that names the benchmark of an mlperftiny project."""
    return ProjectOption(MODEL_ID_OPTION, type="str", choices=list(MODEL_IDS), optional=["generate_project"],
                         help="mlperftiny: the benchmark the model is for (the runner picks its test by it)")


def chosen_model_id(options: Mapping[str, Any]) -> str:
    """The benchmark of an mlperftiny project's options; UserError when it is not given."""
    given = options.get(MODEL_ID_OPTION)
    if not given:
        raise UserError("project_type=mlperftiny needs the benchmark the model is for",
                        hint=f"add -o {MODEL_ID_OPTION}= one of {', '.join(MODEL_IDS)}")
    return given


def input_file_bytes(options: Mapping[str, Any]) -> int:
    """The size of the firmware's input buffer: one of the benchmark's input files."""
    return BENCHMARKS[chosen_model_id(options)].file_bytes


def runtime_sources(files: Mapping[str, Any]) -> List[str]:
    """The runtime's sources (relative to it) an mlperftiny image builds, from runtime_files.json."""
    return [*PLAN_SOURCES, *files[f"{RUNTIME_PART}_sources"]]


def _elements(shape) -> int:
    count = 1
    for d in shape:
        count *= int(d)
    return count


def _describe(entry: Mapping[str, Any]) -> str:
    return f"{entry['dtype']}{list(entry['shape'])}"


def _quantization(entry: Mapping[str, Any], what: str, model_id: str):
    """(scale, zero point) of a quantized input or output, checked."""
    q = entry.get("quantization") or {}
    scale, zero_point = q.get("scale"), q.get("zero_point")
    if not isinstance(scale, (int, float)) or not math.isfinite(scale) or scale <= 0 \
            or not isinstance(zero_point, int):
        raise UserError(f"{model_id}: the model's {what} {entry['name']!r} is {entry['dtype']} without a "
                        "quantization scale and zero point, so its values cannot be converted",
                        hint="compile a model whose quantized tensors carry their parameters (TFLite int8)")
    return float(scale), zero_point


def dut_config(metadata: Mapping[str, Any], model_id: str, dut_name: str, note: str = "") -> Dict[str, str]:
    """The C macros of the firmware's configuration header, for a model's archive metadata and a
    benchmark; UserError (one line, and a hint) when the model does not fit the benchmark."""
    if model_id not in BENCHMARKS:
        raise UserError(f"unknown MLPerf Tiny model id {model_id!r}",
                        hint=f"give -o {MODEL_ID_OPTION}= one of {', '.join(MODEL_IDS)}")
    bench = BENCHMARKS[model_id]
    inputs, outputs = metadata.get("inputs") or [], metadata.get("outputs") or []
    if len(inputs) != 1 or len(outputs) != 1:
        raise UserError(f"{model_id}: the runner feeds one input and reads one output; this model has "
                        f"{len(inputs)} inputs and {len(outputs)} outputs",
                        hint="compile the benchmark's single-input, single-output model")
    given, result = inputs[0], outputs[0]
    if _elements(given["shape"]) != bench.file_elements:
        raise UserError(f"{model_id}: the model's input is {_describe(given)} ({_elements(given['shape'])} "
                        f"values); the runner's {bench.task} input files hold {bench.file_elements} "
                        f"{bench.file_dtype} values", hint=f"is this the {model_id} model?")
    conversion = _CONVERSIONS.get((bench.file_dtype, given["dtype"]))
    if conversion is None:
        raise UserError(f"{model_id}: the runner's input files hold {bench.file_dtype} values, which do not "
                        f"go to a {given['dtype']} input", hint=f"use the benchmark's int8 model, or its "
                        f"{bench.file_dtype} one")
    if not (metadata.get("options") or {}).get("preserve_inputs", True):
        raise UserError("the runner times N inferences on one loaded input, but this archive lets the "
                        "model overwrite its input",
                        hint="compile it with `utvm compile --keep-inputs` (preserve_inputs=True), or give "
                        "`utvm create-project` the model file, which keeps them for this project type")
    in_scale, in_zero = (1.0, 0)
    if conversion == "UTVM_MLPERF_INPUT_QUANTIZE_F32":
        in_scale, in_zero = _quantization(given, "input", model_id)
    output_type = _OUTPUT_TYPES.get(result["dtype"])
    if output_type is None:
        raise UserError(f"{model_id}: the model's output is {_describe(result)}; the firmware reports "
                        "int8, uint8 or float32 outputs", hint="compile the benchmark's int8 or float model")
    out_scale, out_zero = (1.0, 0)
    if result["dtype"] != "float32":
        out_scale, out_zero = _quantization(result, "output", model_id)
    kind = "UTVM_MLPERF_RESULT_SCORES"
    if model_id == "ad01":
        kind = "UTVM_MLPERF_RESULT_ANOMALY_MSE"
        if _elements(result["shape"]) != bench.file_elements:
            raise UserError(f"ad01: the anomaly score compares output and input, but the output is "
                            f"{_describe(result)}", hint="use the benchmark's autoencoder model")
    return {
        "UTVM_MLPERF_MODEL_ID": _c_string(model_id),
        "UTVM_MLPERF_DUT_NAME": _c_string(_clean_name(dut_name)),
        "UTVM_MLPERF_NOTE": _c_string(_clean_name(note)),
        "UTVM_MLPERF_INPUT_BYTES": f"{bench.file_bytes}u",
        "UTVM_MLPERF_INPUT_BYTES_TEXT": _c_string(str(bench.file_bytes)),
        "UTVM_MLPERF_INPUT_CONVERSION": conversion,
        "UTVM_MLPERF_INPUT_SCALE": _c_float(in_scale),
        "UTVM_MLPERF_INPUT_ZERO_POINT": f"({int(in_zero)})",
        "UTVM_MLPERF_OUTPUT_TYPE": output_type,
        "UTVM_MLPERF_OUTPUT_SCALE": _c_float(out_scale),
        "UTVM_MLPERF_OUTPUT_ZERO_POINT": f"({int(out_zero)})",
        "UTVM_MLPERF_RESULT": kind,
    }


def board_config(metadata: Mapping[str, Any], options: Mapping[str, Any], board: Mapping[str, Any]) \
        -> Dict[str, str]:
    """dut_config for a project's options and board record: the device is named for the board, and
    an emulated board's firmware says with its lap times that they are QEMU's guest time."""
    emulated = board.get("kind") == "emulated"
    note = (f"{board['name']} is emulated by QEMU: m-lap-us is guest time, which under -icount counts "
            "instructions; it is not a real-board time") if emulated else ""
    return dut_config(metadata, chosen_model_id(options), dut_name(board["name"], emulated), note)


def _clean_name(text: str) -> str:
    return "".join(" " if (c in _NAME_FORBIDDEN or not c.isprintable()) else c for c in str(text)).strip()


def _c_string(text: str) -> str:
    return '"' + text + '"'  # _clean_name and the fixed ids leave nothing to escape


def _c_float(value: float) -> str:
    return f"({float(value)!r}f)"


def config_header(config: Mapping[str, str], model_name: Optional[str] = None) -> str:
    """The text of utvm_mlperf_config.h for a dut_config() result."""
    lines = ["/* Generated by utvm: the MLPerf Tiny configuration of this firmware"
             + (f" for model {_clean_name(model_name).replace('*/', '* /')}" if model_name else "") + ". */",
             "#ifndef UTVM_MLPERF_CONFIG_H_", "#define UTVM_MLPERF_CONFIG_H_", "",
             '#include "mlperftiny.h"', ""]
    lines += [f"#define {name} {value}" for name, value in config.items()]
    lines += ["", "#endif /* UTVM_MLPERF_CONFIG_H_ */", ""]
    return "\n".join(lines)


def dut_name(board_name: str, emulated: bool) -> str:
    """The name the firmware answers to `name%` with: utvm and the board, marked when emulated."""
    return f"utvm {board_name}" + (" (emulated)" if emulated else "")


# How long a device may take to print its boot lines (QEMU under -icount included).
BOOT_TIMEOUT_SEC = 30.0
READY_LINE = b"m-ready\r\n"


class DeviceBootError(ServerError):
    """The device did not print its boot lines."""


def read_boot_lines(read: Callable[[int, float], bytes], timeout: float = BOOT_TIMEOUT_SEC) -> str:
    """Read the device's boot lines, up to and including m-ready, with a Project API handler's
    read_transport; returns them. Taken before a runner may open the device, so that the first
    reply it reads is the one to its first command, not the boot lines."""
    data = b""
    deadline = time.monotonic() + timeout
    while READY_LINE not in data:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise DeviceBootError(f"the device printed no {READY_LINE.decode()} within {timeout:g} s of "
                                  f"starting; it said: {data[-300:]!r}")
        try:
            data += read(256, min(remaining, 1.0))
        except IoTimeoutError:
            pass
    return data.decode("ascii", "replace")


def bridge_device(read: Callable[[int, float], bytes], write: Callable[[bytes, float], None],
                  name: str) -> PtyBridge:
    """Take a just-started device's boot lines, then put it behind a new pseudo-terminal (started;
    its path is ``.path``). read and write are the handler's read_transport and write_transport."""
    read_boot_lines(read)
    bridge = PtyBridge(read, write, name=name)
    bridge.start()
    return bridge
