"""What templates share for aot_standalone images (bare-metal Cortex-M, Arduino): the inputs they
bake in, and the report they print over their UART. The firmware prints, one per line:

    utvm-standalone <model>
    status <0 | failing kernel + 1>
    [error <text>]
    ticks <n>
    timer_hz <hz>
    output <index> <name> <nbytes>
    x <up to 32 bytes in hex>        (as many lines as the output needs)
    utvm-end

Standard library only (pyserial when a port is read): generated projects carry this module.
"""

from __future__ import annotations

import random
import struct
import time
from typing import Dict, List, Tuple

from . import npy
from .errors import UserError

END_LINE = "utvm-end"


class StandaloneError(RuntimeError):
    """The firmware's report is missing or malformed."""


def _seeded_bytes(rng: random.Random, dtype: str, count: int) -> bytes:
    """count elements of dtype: uniform over an integer type's range, standard normal for floats."""
    if dtype.startswith("float"):
        fmt = {"float16": "<e", "float32": "<f", "float64": "<d"}[dtype]
        return b"".join(struct.pack(fmt, rng.gauss(0.0, 1.0)) for _ in range(count))
    return rng.randbytes(npy.itemsize(dtype) * count)


def baked_inputs(archive, npz_path: str = "") -> Dict[str, Tuple[str, tuple, bytes]]:
    """{name: (dtype, shape, bytes)} of the inputs an image bakes in, in the model's input order:
    the arrays of npz_path (checked against the model), or seeded random ones (seed 0)."""
    given = npy.read_npz(npz_path) if npz_path else {}
    rng = random.Random(0)
    arrays = {}
    for entry in archive.inputs:
        name, dtype, shape = entry["name"], entry["dtype"], tuple(entry["shape"])
        count = 1
        for d in shape:
            count *= d
        if not npz_path:
            arrays[name] = (dtype, shape, _seeded_bytes(rng, dtype, count))
            continue
        if name not in given:
            raise UserError(f"{npz_path} has no array named {name!r}",
                            hint=f"it has: {', '.join(given) or 'none'}")
        got_dtype, got_shape, data = given[name]
        if got_dtype != dtype or len(data) != npy.itemsize(dtype) * count:
            raise UserError(f"input {name!r} in {npz_path} is {got_dtype} {list(got_shape)}; the model takes "
                            f"{dtype} {list(shape)}", hint="save it with that dtype and size")
        arrays[name] = (dtype, shape, data)
    return arrays


def baked_inputs_reply(npz_path, project_type: str) -> Dict:
    """What the ``utvm_standalone_inputs`` extension answers: the inputs baked into an aot_standalone
    image (saved at npz_path when the project was generated), by name, as hex."""
    if project_type != "aot_standalone":
        return {"baked": False, "inputs": None}
    arrays = npy.read_npz(npz_path)
    return {"baked": True, "inputs": {name: data.hex() for name, (_, _, data) in arrays.items()}}


def read_report(port, timeout: float) -> str:
    """Read the firmware's UART output (a pyserial port) until the report's end line, end of file
    (the emulator exited) or the deadline, whichever comes first; returns the text."""
    import serial

    deadline = time.monotonic() + timeout
    data = bytearray()
    while END_LINE.encode() not in data and time.monotonic() < deadline:
        port.timeout = max(0.01, min(1.0, deadline - time.monotonic()))
        try:
            # One byte at a time: pyserial drops what a larger read gathered if the peer then closes.
            data += port.read(1)
        except serial.SerialException:
            break
    return data.decode("utf-8", "replace")


def parse_report(text: str) -> Dict:
    """The firmware's report as {"model", "status", "error", "ticks", "timer_hz", "outputs":
    [{"index", "name", "data" (bytes)}]}. Raises StandaloneError when it is cut short or garbled."""
    lines = [line.strip() for line in text.replace("\r", "").split("\n")]
    try:
        first = next(i for i, line in enumerate(lines) if line.startswith("utvm-standalone "))
    except StopIteration:
        raise StandaloneError(f"no utvm-standalone report in the output:\n{text[-2000:]}") from None
    report: Dict = {"model": lines[first].split(" ", 1)[1], "error": None, "outputs": []}
    outputs: List[Dict] = report["outputs"]
    for line in lines[first + 1:]:
        key, _, value = line.partition(" ")
        if key == END_LINE:
            break
        if key in ("status", "ticks", "timer_hz"):
            report[key] = int(value)
        elif key == "error":
            report["error"] = value
        elif key == "output":
            index, name, nbytes = value.split(" ")
            outputs.append({"index": int(index), "name": name, "nbytes": int(nbytes), "data": bytearray()})
        elif key == "x" and outputs:
            outputs[-1]["data"] += bytes.fromhex(value)
    else:
        raise StandaloneError(f"the report ended without {END_LINE!r}:\n{text[-2000:]}")
    for out in outputs:
        if len(out["data"]) != out.pop("nbytes"):
            raise StandaloneError(f"output {out['name']} is cut short in the report")
        out["data"] = bytes(out["data"])
    if "status" not in report:
        raise StandaloneError(f"the report has no status line:\n{text[-2000:]}")
    return report
