"""NumPy's .npy and .npz files, read and written with the standard library.

Templates exchange arrays with the host as files numpy reads and writes (inputs baked into an
image, the files a standalone program reads) without needing numpy themselves. Only what a
model's tensors need: C-ordered arrays of the fixed-size numeric dtypes, little-endian.
"""

from __future__ import annotations

import ast
import io
import math
import struct
import zipfile
from pathlib import Path
from typing import Dict, Sequence, Tuple

_MAGIC = b"\x93NUMPY"
# numpy dtype name -> its descriptor in a .npy header, and the size of one element.
DTYPES = {
    "int8": ("|i1", 1), "uint8": ("|u1", 1), "int16": ("<i2", 2), "uint16": ("<u2", 2),
    "int32": ("<i4", 4), "uint32": ("<u4", 4), "int64": ("<i8", 8), "uint64": ("<u8", 8),
    "float16": ("<f2", 2), "float32": ("<f4", 4), "float64": ("<f8", 8), "bool": ("|b1", 1),
}
_BY_DESCR = {descr: name for name, (descr, _) in DTYPES.items()}
_BY_DESCR.update({"<i1": "int8", "<u1": "uint8", "<b1": "bool"})


class NpyError(ValueError):
    """A file that is not an .npy/.npz this module can read, or data that does not fit its header."""


def itemsize(dtype: str) -> int:
    if dtype not in DTYPES:
        raise NpyError(f"dtype {dtype!r} is not one of {', '.join(DTYPES)}")
    return DTYPES[dtype][1]


def npy_bytes(dtype: str, shape: Sequence[int], data: bytes) -> bytes:
    """An .npy file (format 1.0) holding data as an array of dtype and shape."""
    size = itemsize(dtype) * math.prod(shape)
    if len(data) != size:
        raise NpyError(
            f"{len(data)} bytes do not make a {dtype} array of shape {tuple(shape)} ({size} bytes)")
    dims = ", ".join(str(int(d)) for d in shape) + ("," if len(shape) == 1 else "")
    header = f"{{'descr': '{DTYPES[dtype][0]}', 'fortran_order': False, 'shape': ({dims}), }}"
    # The header, with the magic and length, is padded to a multiple of 64 and ends in a newline.
    padding = -(len(_MAGIC) + 4 + len(header) + 1) % 64
    header = (header + " " * padding + "\n").encode("latin1")
    return _MAGIC + b"\x01\x00" + struct.pack("<H", len(header)) + header + bytes(data)


def parse_npy(blob: bytes, where: str = ".npy") -> Tuple[str, Tuple[int, ...], bytes]:
    """(dtype, shape, data) of an .npy file's bytes."""
    if blob[:6] != _MAGIC or len(blob) < 10:
        raise NpyError(f"{where} is not an .npy file")
    major = blob[6]
    if major == 1:
        (length,), start = struct.unpack("<H", blob[8:10]), 10
    elif major in (2, 3):
        (length,), start = struct.unpack("<I", blob[8:12]), 12
    else:
        raise NpyError(f"{where}: .npy format version {major} is not supported")
    try:
        header = ast.literal_eval(blob[start:start + length].decode("latin1"))
        descr, fortran = header["descr"], header["fortran_order"]
        shape = tuple(int(d) for d in header["shape"])
    except (ValueError, SyntaxError, KeyError, TypeError):
        raise NpyError(f"{where}: the .npy header is not readable") from None
    if fortran and len(shape) > 1:
        raise NpyError(f"{where}: Fortran-ordered arrays are not supported; save it C-ordered")
    if descr not in _BY_DESCR:
        raise NpyError(f"{where}: dtype {descr!r} is not supported "
                       f"(want one of {', '.join(DTYPES)}, little-endian)")
    dtype = _BY_DESCR[descr]
    data = blob[start + length:]
    if len(data) != itemsize(dtype) * math.prod(shape):
        raise NpyError(f"{where}: holds {len(data)} bytes of data, not the {dtype} array of shape {shape} "
                       f"its header declares")
    return dtype, shape, data


def read_npz(path) -> Dict[str, Tuple[str, Tuple[int, ...], bytes]]:
    """{name: (dtype, shape, data)} of every array in an .npz file."""
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as archive:
            return {name[:-4] if name.endswith(".npy") else name: parse_npy(archive.read(name),
                                                                            f"{path}:{name}")
                    for name in archive.namelist()}
    except (OSError, zipfile.BadZipFile) as err:
        raise NpyError(f"{path} is not a readable .npz file: {err}") from None


def write_npz(path, arrays: Dict[str, Tuple[str, Sequence[int], bytes]]) -> Path:
    """Write {name: (dtype, shape, data)} as an uncompressed .npz (as numpy.savez does)."""
    path = Path(path)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for name, (dtype, shape, data) in arrays.items():
            archive.writestr(f"{name}.npy", npy_bytes(dtype, shape, data))
    path.write_bytes(buffer.getvalue())
    return path
