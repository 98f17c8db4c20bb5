"""Load the optional C framing accelerator (``_framing_accel.c``), compiling it on first use.

The shared library is built with the host's C compiler (``$CC``, else ``cc``), together with the
device runtime's own CRC and byte escaping (``templates/runtime/src/crc16.c``, ``escape.c``), into a
cache folder (``$UTVM_CACHE_DIR``, else ``$XDG_CACHE_HOME/utvm`` or ``~/.cache/utvm``), named by a
hash of the sources, the runtime's headers, the flags and the Python platform, and loaded with
ctypes. Anything that goes wrong (no compiler, a read-only cache, a non-POSIX platform) leaves
``load()`` returning None, and framing.py keeps its pure-Python path, which gives the same bytes.
``UTVM_FRAMING_ACCEL=0`` turns the accelerator off.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import shutil
import subprocess
import sysconfig
import tempfile
from pathlib import Path
from typing import Optional, Sequence

_LOG = logging.getLogger(__name__)
SOURCE = Path(__file__).with_name("_framing_accel.c")
# The single-request fast path over a pipe pair (pipe_call.py), in the same library.
PIPE_CALL_SOURCE = Path(__file__).with_name("_pipe_call.c")
_RUNTIME = Path(__file__).resolve().parent.parent / "templates" / "runtime"
# The runtime's CRC and escaping, built with their fastest options (the same ones the POSIX device
# uses); the runtime's headers are part of the cache key too.
RUNTIME_SOURCES = [_RUNTIME / "src" / "crc16.c", _RUNTIME / "src" / "escape.c"]
CFLAGS = ["-O2", "-shared", "-fPIC", f"-I{_RUNTIME / 'include'}", "-DUTVM_CRC_TABLE=2", "-DUTVM_CRC_CLMUL=1"]
ENV_SWITCH = "UTVM_FRAMING_ACCEL"
COMPILE_TIMEOUT_SEC = 60.0

_loaded = False
_lib: Optional[ctypes.CDLL] = None


def cache_dir() -> Path:
    """Where compiled accelerators are kept."""
    if os.environ.get("UTVM_CACHE_DIR"):
        return Path(os.environ["UTVM_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "utvm"


def compile_library(target: Path, defines: Sequence[str] = ()) -> None:
    """Build the accelerator at ``target``; ``defines`` (``NAME=VALUE``) go on top of CFLAGS, e.g.
    ``UTVM_ESCAPE_SIMD=0`` for a test of the runtime's portable escaping."""
    compiler = os.environ.get("CC") or "cc"
    if shutil.which(compiler) is None:
        raise OSError(f"no C compiler ({compiler})")
    target.parent.mkdir(parents=True, exist_ok=True)
    # Build beside the target and rename: concurrent processes never load a half-written file.
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
    os.close(fd)
    try:
        subprocess.run([compiler, *CFLAGS, *(f"-D{d}" for d in defines), "-o", tmp, str(SOURCE),
                        str(PIPE_CALL_SOURCE), *map(str, RUNTIME_SOURCES)],
                       check=True, capture_output=True, timeout=COMPILE_TIMEOUT_SEC)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def bind(lib: ctypes.CDLL) -> ctypes.CDLL:
    """Declare the C signatures of a loaded accelerator; returns it."""
    lib.utvm_accel_crc16.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint]
    lib.utvm_accel_crc16.restype = ctypes.c_uint
    lib.utvm_accel_encode.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_char_p, ctypes.c_size_t,
                                      ctypes.c_void_p]
    lib.utvm_accel_encode.restype = ctypes.c_size_t
    lib.utvm_accel_encode_many.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
    lib.utvm_accel_encode_many.restype = ctypes.c_size_t
    lib.utvm_accel_decode.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_void_p, ctypes.c_size_t]
    lib.utvm_accel_decode.restype = ctypes.c_long
    lib.utvm_accel_decode_all.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p, ctypes.c_size_t,
                                          ctypes.c_size_t, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
    lib.utvm_accel_decode_all.restype = ctypes.c_long
    size, ptr = ctypes.c_size_t, ctypes.c_void_p
    lib.utvm_accel_encode_chunks.argtypes = [ptr, size, size, size, ctypes.c_uint, size, size, size, ptr,
                                             size, ptr, ptr]
    lib.utvm_accel_encode_chunks.restype = size
    lib.utvm_accel_take_chunks.argtypes = [ptr, size, ptr, ctypes.c_uint, size, size, size, size, ptr, ptr,
                                           ptr]
    lib.utvm_accel_take_chunks.restype = ctypes.c_long
    from . import pipe_call

    pipe_call.bind(lib)
    return lib


def load() -> Optional[ctypes.CDLL]:
    """The accelerator library, or None when it is switched off or cannot be built."""
    global _loaded, _lib
    if _loaded:
        return _lib
    _loaded = True
    if os.environ.get(ENV_SWITCH, "1") == "0" or os.name != "posix":
        return None
    try:
        headers = sorted((_RUNTIME / "include" / "utvm").glob("*.h"))
        key = (b"".join(p.read_bytes() for p in [SOURCE, PIPE_CALL_SOURCE, *RUNTIME_SOURCES, *headers])
               + " ".join(CFLAGS[3:]).encode())
        tag = hashlib.sha256(key + (sysconfig.get_platform() or "").encode()).hexdigest()[:16]
        target = cache_dir() / f"framing-accel-{tag}.so"
        if not target.is_file():
            compile_library(target)
        _lib = bind(ctypes.CDLL(str(target)))
    except (OSError, subprocess.SubprocessError, AttributeError) as err:
        _LOG.debug("framing accelerator not available, using pure Python: %s", err)
        _lib = None
    return _lib
