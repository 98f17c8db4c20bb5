"""The host's protocol table (host_driven/protocol.py) against the device's (runtime protocol.h).

Both ends carry the wire constants of docs/host-driven-protocol.md. Every constant of protocol.h
must have its Python twin with the same value, and every Python constant its C twin, so a change
on one side alone fails here.
"""

from __future__ import annotations

import re
from pathlib import Path

from utvm.host_driven import framing
from utvm.host_driven import protocol as P

RUNTIME = Path(__file__).resolve().parent.parent / "templates" / "runtime"
HEADER = RUNTIME / "include" / "utvm" / "protocol.h"
CONFIG = RUNTIME / "include" / "utvm" / "config.h"

# Struct layouts: protocol.h gives their sizes as UTVM_<NAME>_BYTES.
LAYOUTS = {
    "HELLO": P.HELLO, "WELCOME": P.WELCOME, "ANNOUNCE": P.ANNOUNCE, "MSG_HEADER": P.HEADER,
    "QUERY": P.QUERY, "STATE": P.STATE,
    "WRITE_ARGS": P.WRITE_ARGS, "READ_ARGS": P.READ_ARGS, "TIME_ARGS": P.TIME_ARGS,
    "CHECKSUM_ARGS": P.CHECKSUM_ARGS,
    "INFO_FIXED": P.INFO_FIXED, "TENSOR_INFO_FIXED": P.TENSOR_INFO_FIXED, "RECORD_OFFSET": P.RECORD_OFFSET,
}
# The framing bytes, which framing.py keeps as its own constants.
FRAMING = {"FRAME_FLAG": framing.FLAG[0], "FRAME_ESC": framing.ESC[0], "FRAME_XOR": 0x20,
           "FRAME_CRC_BYTES": framing.CRC_BYTES}
# Device-only names: the success status, the runtime's own version and the log levels' C names
# (compared with LOG_LEVELS below).
C_ONLY = {"OK", "RUNTIME_VERSION", "LOG_ERROR", "LOG_WARN", "LOG_INFO", "LOG_DEBUG"}


def c_constants() -> dict:
    """NAME (without UTVM_) -> value, for every #define and enum member of protocol.h."""
    text = re.sub(r"/\*.*?\*/", "", HEADER.read_text(), flags=re.S)
    found = {}
    for name, value in re.findall(r"#define\s+UTVM_(\w+)\s+(0x[0-9A-Fa-f]+|\d+)u?\b", text):
        found[name] = int(value, 0)
    for body in re.findall(r"enum\s+\w+\s*\{(.*?)\}", text, flags=re.S):
        for name, value in re.findall(r"UTVM_(\w+)\s*=\s*(0x[0-9A-Fa-f]+|\d+)", body):
            found[name] = int(value, 0)
    return found


def python_twin(name: str):
    """The value protocol.py (or framing.py) gives the C constant UTVM_<name>, or None."""
    if name in FRAMING:
        return FRAMING[name]
    if name.endswith("_BYTES") and name[:-len("_BYTES")] in LAYOUTS:
        return LAYOUTS[name[:-len("_BYTES")]].size
    return getattr(P, name, None) if isinstance(getattr(P, name, None), int) else None


def test_every_device_constant_has_its_host_twin():
    constants = c_constants()
    assert len(constants) > 40, f"protocol.h parsed to only {sorted(constants)}"
    differ = {name: (value, python_twin(name)) for name, value in constants.items()
              if name not in C_ONLY and python_twin(name) != value}
    assert not differ, f"protocol.h and protocol.py disagree (C value, Python value): {differ}"


def test_every_host_constant_has_its_device_twin():
    constants = c_constants()
    python_names = [n for n, v in vars(P).items() if n.isupper() and type(v) is int]
    python_names += [f"{name}_BYTES" for name in LAYOUTS]
    # MAX_PACKET is the runtime's compile-time ceiling (config.h), not a wire constant.
    missing = [n for n in python_names if n != "MAX_PACKET" and n not in constants]
    assert not missing, f"protocol.py has no counterpart in protocol.h for {missing}"


def test_names_and_levels_cover_every_command_and_status():
    assert set(P.COMMAND_NAMES) == {v for n, v in vars(P).items() if n.startswith("CMD_")}
    assert all(P.COMMAND_NAMES[getattr(P, f"CMD_{n}")] == n for n in P.COMMAND_NAMES.values())
    assert set(P.STATUS_NAMES) == {v for n, v in vars(P).items() if n.startswith("ERR_")}
    assert all(P.STATUS_NAMES[getattr(P, f"ERR_{n}")] == n for n in P.STATUS_NAMES.values())
    constants = c_constants()
    levels = {constants[f"LOG_{n}"]: level for n, level in
              (("ERROR", 40), ("WARN", 30), ("INFO", 20), ("DEBUG", 10))}
    assert P.LOG_LEVELS == levels


def test_the_largest_packet_is_the_same_on_both_ends():
    text = CONFIG.read_text()
    ceiling = re.search(r"#if UTVM_MAX_PACKET > (\d+)", text)
    floor = re.search(r"#if UTVM_MAX_PACKET < (\d+)", text)
    assert ceiling and int(ceiling.group(1)) == P.MAX_PACKET
    assert floor and int(floor.group(1)) == P.MIN_PACKET == c_constants()["MIN_PACKET"]


def test_protocol_h_names_its_twin_and_this_check():
    text = HEADER.read_text()
    assert "host_driven/protocol.py" in text and "tests/test_protocol_tables.py" in text
