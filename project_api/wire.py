"""The Project API's wire protocol, version 1, shared by the client and the server base.

One JSON-RPC 2.0 object per line over a pair of pipes; params by name; byte payloads in base85.
Which params each method takes, the error codes, and the file names a client looks for are
defined here once (see docs/project-api.md). Standard library only.
"""

from __future__ import annotations

import base64
from typing import Any, Dict, Tuple

PROTOCOL_VERSION = 1

# What the client launches in a template or project directory, and the optional launcher script.
SERVER_SCRIPT = "microtvm_api_server.py"
LAUNCH_SCRIPT = "launch_microtvm_api_server.sh"
# Methods a handler adds beyond version 1 must start with this prefix.
EXTENSION_PREFIX = "utvm_"
# Longest message either side accepts (a 16 MiB write_transport is about 21 MB of base85).
MAX_MESSAGE_BYTES = 64 << 20

# Largest read a request may ask for, and the longest wait it may name (a day): beyond them a number
# is a mistake or an attack, and is refused as an invalid param rather than overflowing somewhere.
MAX_READ_BYTES = 16 << 20
MAX_TIMEOUT_SEC = 86400.0

# The version-1 methods that take project options.
OPTION_METHODS = ("generate_project", "build", "flash", "open_transport")


class ErrorCode:
    """JSON-RPC 2.0 error codes used by the protocol."""

    PARSE_ERROR = -32700
    INVALID_REQUEST = -32600
    METHOD_NOT_FOUND = -32601
    INVALID_PARAMS = -32602
    INTERNAL_ERROR = -32603
    SERVER_ERROR = -32000


# Params of the version-1 methods: name -> (accepted JSON types, required).
_NUMBER = (int, float, type(None))
METHOD_PARAMS: Dict[str, Dict[str, Tuple[Tuple[type, ...], bool]]] = {
    # Some microTVM clients sent no tvm_version; accept that.
    "server_info_query": {"tvm_version": ((str, type(None)), False)},
    "generate_project": {
        "model_library_format_path": ((str,), True),
        "standalone_crt_dir": ((str, type(None)), False),
        "project_dir": ((str,), True),
        "options": ((dict,), True),
    },
    "build": {"options": ((dict,), True)},
    "flash": {"options": ((dict,), True)},
    "open_transport": {"options": ((dict,), True)},
    "close_transport": {},
    "read_transport": {"n": ((int,), True), "timeout_sec": (_NUMBER, False)},
    "write_transport": {"data": ((str,), True), "timeout_sec": (_NUMBER, False)},
}


def param_problem(method: str, params: Dict[str, Any]) -> str:
    """What is wrong with a version-1 request's params, or "" when they are sound."""
    spec = METHOD_PARAMS[method]
    unknown = sorted(set(params) - set(spec))
    if unknown:
        return f"{method}: unknown params {unknown}"
    for name, (types, required) in spec.items():
        if name not in params:
            if required:
                return f"{method}: missing param {name!r}"
            continue
        value = params[name]
        # bool is an int in Python but not a number in this protocol.
        if isinstance(value, bool) or not isinstance(value, types):
            return (f"{method}: param {name!r} must be {'/'.join(t.__name__ for t in types)}, "
                    f"not {type(value).__name__}")
    if method == "read_transport" and not 0 < params["n"] <= MAX_READ_BYTES:
        return f"read_transport: n must be between 1 and {MAX_READ_BYTES}"
    timeout = params.get("timeout_sec")
    if timeout is not None and not 0 <= timeout <= MAX_TIMEOUT_SEC:
        return f"{method}: timeout_sec must be between 0 and {MAX_TIMEOUT_SEC:g}"
    return ""


# Base85 with the RFC 1924 alphabet, producing exactly what base64.b85encode does. The standard
# library codec takes seconds for a 16 MiB payload, so large payloads use numpy when it is there.
_ALPHABET = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz!#$%&()*+-;<=>?@^_`{|}~"
# Below this size numpy's import and set-up cost more than they save.
_NUMPY_THRESHOLD = 64 << 10


def _numpy_for(size: int):
    # Optional: the floor must run on a bare Python, where the standard codec is used.
    if size < _NUMPY_THRESHOLD:
        return None
    try:
        import numpy
    except ImportError:
        return None
    return numpy


def b85encode(data: bytes) -> str:
    """Base85-encode data without padding, exactly as base64.b85encode(data) does."""
    np = _numpy_for(len(data))
    if np is None:
        return base64.b85encode(data).decode("ascii")
    padding = -len(data) % 4
    words = np.frombuffer(bytes(data) + b"\0" * padding, dtype=">u4").astype(np.uint64)
    digits = np.empty((words.size, 5), dtype=np.uint8)
    for position in range(4, -1, -1):
        digits[:, position] = words % 85
        words //= 85
    text = np.frombuffer(_ALPHABET, dtype=np.uint8)[digits].tobytes()
    return text[: len(text) - padding].decode("ascii")


def b85decode(text: str) -> bytes:
    """Decode base85 text as base64.b85decode does; raises ValueError on a bad character or hunk."""
    np = _numpy_for(len(text))
    if np is None:
        return base64.b85decode(text)
    raw = text.encode("ascii") if isinstance(text, str) else bytes(text)
    padding = -len(raw) % 5
    table = np.full(256, 255, dtype=np.uint8)
    table[np.frombuffer(_ALPHABET, dtype=np.uint8)] = np.arange(85, dtype=np.uint8)
    digits = table[np.frombuffer(raw + b"~" * padding, dtype=np.uint8)].reshape(-1, 5)
    if (digits == 255).any():
        bad = int(np.argmax(digits.reshape(-1) == 255))
        raise ValueError(f"bad base85 character at position {bad}")
    acc = np.zeros(digits.shape[0], dtype=np.uint64)
    for position in range(5):
        acc = acc * 85 + digits[:, position]
    if (acc > 0xFFFFFFFF).any():
        hunk = int(np.argmax(acc > 0xFFFFFFFF))
        raise ValueError(f"base85 overflow in hunk starting at byte {hunk * 5}")
    result = acc.astype(">u4").tobytes()
    return result[: len(result) - padding]
