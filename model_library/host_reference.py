"""The host reference runner: the archive's own C, built for this machine and driven from Python.

The archive's sources are compiled together with the device runtime's backend
(templates/runtime/src/backend.c) into a shared library, once per distinct source set (cached in
the temp folder), loaded with ctypes, and run over an arena that Python owns. What gets checked
is the archive itself, not a separate build. The per-kernel calls (`run_kernel`, `read_tensor`,
`write_tensor`) are what layer-by-layer validation uses: run kernel i here and on the device on
the same inputs, and compare.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
from importlib import resources
from pathlib import Path

import numpy as np
from utvm.project_api.mlf import INCLUDE_DIR

from .errors import KernelError
from .library import ModelLibrary, load

COMPILE_TIMEOUT_S = 600
# -Bsymbolic: bind the backend symbols to our own definitions, not to libtvm's copies that an
# importing process (anything that imported tvm) already has loaded globally.
DEFAULT_CFLAGS = ("-O2", "-std=c99", "-fPIC", "-shared", "-Wl,-Bsymbolic")
_STORAGE_CONST = 1


class _Tensor(ctypes.Structure):
    _fields_ = [
        ("name", ctypes.c_char_p),
        ("storage", ctypes.c_uint8),
        ("dtype_code", ctypes.c_uint8),
        ("dtype_bits", ctypes.c_uint8),
        ("ndim", ctypes.c_uint8),
        ("offset", ctypes.c_uint32),
        ("nbytes", ctypes.c_uint32),
        ("shape", ctypes.POINTER(ctypes.c_int32)),
        ("data", ctypes.c_void_p),
    ]


_KernelFn = ctypes.CFUNCTYPE(ctypes.c_int32, ctypes.c_void_p)


class _Kernel(ctypes.Structure):
    _fields_ = [
        ("name", ctypes.c_char_p),
        ("fn", _KernelFn),
        ("num_args", ctypes.c_uint16),
        ("args", ctypes.POINTER(ctypes.c_uint16)),
    ]


class _Model(ctypes.Structure):
    _fields_ = [
        ("abi_version", ctypes.c_uint32),
        ("name", ctypes.c_char_p),
        ("hash", ctypes.c_char_p),
        ("arena_bytes", ctypes.c_uint32),
        ("arena_alignment", ctypes.c_uint32),
        ("workspace_bytes", ctypes.c_uint32),
        ("num_tensors", ctypes.c_uint16),
        ("tensors", ctypes.POINTER(_Tensor)),
        ("num_inputs", ctypes.c_uint16),
        ("inputs", ctypes.POINTER(ctypes.c_uint16)),
        ("num_outputs", ctypes.c_uint16),
        ("outputs", ctypes.POINTER(ctypes.c_uint16)),
        ("num_kernels", ctypes.c_uint16),
        ("kernels", ctypes.POINTER(_Kernel)),
        ("run", _KernelFn),
    ]


def runtime_dir() -> Path:
    """The device runtime shipped in utvm.templates (include/ and src/)."""
    return Path(str(resources.files("utvm.templates") / "runtime"))


def build_shared_library(
    library: ModelLibrary, cc: str | None = None, cflags=DEFAULT_CFLAGS, cache_dir: Path | None = None
) -> Path:
    """Compile the archive's C and the runtime backend into a shared library (cached); return its path."""
    cc = cc or os.environ.get("CC") or "cc"
    if shutil.which(cc) is None:
        raise FileNotFoundError(f"C compiler {cc!r} not found; the host reference runner needs one (set CC)")
    runtime = runtime_dir()
    backend = runtime / "src" / "backend.c"
    if not backend.is_file():
        raise FileNotFoundError(f"runtime backend {backend} is missing")
    digest = hashlib.sha256()
    for part in [cc, *cflags]:
        digest.update(part.encode() + b"\0")
    for name in library.file_names():
        if name.startswith("codegen/"):
            digest.update(name.encode() + b"\0" + library.read(name))
    for path in sorted([backend, *(runtime / "include").rglob("*.h")]):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    cache = Path(
        cache_dir or os.environ.get("UTVM_CACHE_DIR") or Path(tempfile.gettempdir()) / "utvm-host-reference"
    )
    target = cache / digest.hexdigest()[:32] / f"lib{library.name}.so"
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="utvm-hostref-", dir=target.parent) as tmp:
        src_root = library.extract(Path(tmp) / "mlf")
        sources = [str(src_root / name) for name in library.source_files()] + [str(backend)]
        out = Path(tmp) / target.name
        command = [
            cc,
            *cflags,
            "-I",
            str(src_root / INCLUDE_DIR),
            "-I",
            str(runtime / "include"),
            *sources,
            "-o",
            str(out),
            "-lm",
        ]
        result = subprocess.run(command, capture_output=True, text=True, timeout=COMPILE_TIMEOUT_S)
        if result.returncode != 0:
            raise RuntimeError(
                f"compiling {library.path} for the host failed:\n{' '.join(command)}\n{result.stderr[-4000:]}"
            )
        os.replace(out, target)
    return target


class HostReference:
    """Run an archive's generated C on the host, whole or kernel by kernel."""

    def __init__(self, model_library, cc: str | None = None, cflags=DEFAULT_CFLAGS):
        self.library = model_library if isinstance(model_library, ModelLibrary) else load(model_library)
        self.lib_path = build_shared_library(self.library, cc, cflags)
        self._dll = ctypes.CDLL(str(self.lib_path), mode=getattr(os, "RTLD_LOCAL", 0))
        self._model = _Model.in_dll(self._dll, "utvm_model")
        self._check_tables()
        memory = self.library.memory
        alignment = max(int(self._model.arena_alignment), 16)
        self._arena_raw, self.arena = _aligned_buffer(memory["arena_bytes"], alignment)
        self._ws_raw, self.workspace = _aligned_buffer(memory["workspace_bytes"], 16)
        self._init = self._dll.utvm_backend_init
        self._init.argtypes = [ctypes.c_void_p, ctypes.c_uint32]
        self._reset = self._dll.utvm_backend_reset
        self._last_error = self._dll.utvm_backend_last_error
        self._last_error.restype = ctypes.c_char_p
        self._peak = self._dll.utvm_backend_workspace_peak
        self._peak.restype = ctypes.c_uint32

    def _check_tables(self) -> None:
        m, meta = self._model, self.library.metadata
        expected = {
            "model_hash": (m.hash.decode(), meta["model_hash"]),
            "arena_bytes": (m.arena_bytes, meta["memory"]["arena_bytes"]),
            "tensors": (m.num_tensors, len(self.library.tensors)),
            "kernels": (m.num_kernels, len(self.library.kernels)),
        }
        wrong = {k: v for k, v in expected.items() if v[0] != v[1]}
        if wrong:
            raise RuntimeError(f"{self.library.path}: the C tables disagree with metadata.json: {wrong}")
        for i, tensor in enumerate(self.library.tensors):
            c = m.tensors[i]
            if c.nbytes != tensor["nbytes"] or (
                tensor["storage"] == "arena" and c.offset != tensor["offset"]
            ):
                raise RuntimeError(f"{self.library.path}: tensor {i} differs between C and metadata.json")

    # ---------------------------------------------------------------- tensors

    def _tensor(self, tensor_id: int) -> dict:
        tensors = self.library.tensors
        if not 0 <= tensor_id < len(tensors):
            raise IndexError(f"tensor id {tensor_id} out of range (the plan has {len(tensors)} tensors)")
        return tensors[tensor_id]

    def read_tensor(self, tensor_id: int) -> np.ndarray:
        """A copy of tensor `tensor_id`'s current contents."""
        t = self._tensor(tensor_id)
        if t["storage"] == "arena":
            raw = self.arena[t["offset"] : t["offset"] + t["nbytes"]].copy()
        else:
            raw = np.frombuffer(ctypes.string_at(self._model.tensors[tensor_id].data, t["nbytes"]), np.uint8)
        return raw.view(_np_dtype(t["dtype"])).reshape(t["shape"])

    def write_tensor(self, tensor_id: int, array) -> None:
        """Overwrite arena tensor `tensor_id` (its dtype and element count must match)."""
        t = self._tensor(tensor_id)
        if t["storage"] != "arena":
            raise ValueError(f"tensor {tensor_id} ({t['name']}) is a constant; it cannot be written")
        data = _coerce(array, t, f"tensor {tensor_id} ({t['name']})")
        self.arena[t["offset"] : t["offset"] + t["nbytes"]] = data.view(np.uint8).reshape(-1)

    def set_input(self, key, array) -> None:
        """Write input `key` (name or index)."""
        self.write_tensor(self.library.find_io("input", key)["tensor"], array)

    def get_output(self, key) -> np.ndarray:
        """Read output `key` (name or index) after `run()`."""
        return self.read_tensor(self.library.find_io("output", key)["tensor"])

    # ---------------------------------------------------------------- running

    def run(self) -> None:
        """Run every kernel in plan order (the archive's AOT entry point)."""
        self._begin()
        status = self._model.run(self._arena_address())
        if status != 0:
            self._fail(status - 1)

    def run_kernel(self, index: int) -> None:
        """Run kernel `index` alone on the arena's current contents."""
        if not 0 <= index < self._model.num_kernels:
            raise IndexError(
                f"kernel index {index} out of range (the plan has {self._model.num_kernels} kernels)"
            )
        self._begin()
        if self._model.kernels[index].fn(self._arena_address()) != 0:
            self._fail(index)

    @property
    def workspace_peak(self) -> int:
        """Workspace high-water mark of the last run, as the backend measured it."""
        return int(self._peak())

    def _begin(self) -> None:
        # The backend's state is global to the shared library, which other instances may share.
        self._init(self.workspace.ctypes.data if self.workspace.size else None, self.workspace.size)
        self._reset()

    def _arena_address(self):
        return ctypes.c_void_p(self.arena.ctypes.data)

    def _fail(self, index: int):
        detail = (self._last_error() or b"").decode("utf-8", "replace")
        raise KernelError(index, self.library.kernels[index]["name"], detail)

    def close(self) -> None:
        """Drop the arena and the library handle (the OS keeps the code mapped while cached)."""
        self._dll = self._model = None
        self.arena = self.workspace = self._arena_raw = self._ws_raw = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _aligned_buffer(size: int, alignment: int):
    raw = np.zeros(size + alignment, dtype=np.uint8)
    start = (-raw.ctypes.data) % alignment
    return raw, raw[start : start + size]


def _np_dtype(dtype: str):
    return np.dtype(dtype)


def _coerce(array, tensor: dict, what: str) -> np.ndarray:
    """`array` as the tensor's dtype: floats may be rounded; integers must keep their values."""
    expected = _np_dtype(tensor["dtype"])
    data = np.asarray(array)
    if data.dtype != expected:
        exact = data.dtype.kind in "iub" and np.array_equal(data.astype(expected), data)
        if not (exact or (data.dtype.kind == "f" and expected.kind == "f")):
            raise TypeError(f"{what} holds {expected}, not {data.dtype}")
        data = data.astype(expected)
    if data.size != int(np.prod(tensor["shape"], dtype=np.int64)):
        raise ValueError(f"{what} has shape {tensor['shape']}; got {list(data.shape)}")
    return np.ascontiguousarray(data)
