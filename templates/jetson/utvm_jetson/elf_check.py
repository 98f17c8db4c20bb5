"""Check that a built file is what the board runs: a 64-bit little-endian AArch64 ELF program or
shared library. A file built by the wrong compiler fails here, at build, rather than on the board.

Standard library only: generated projects carry this module.
"""

from __future__ import annotations

import struct

from project_api.errors import BuildError

EM_AARCH64 = 183
ET_EXEC, ET_DYN = 2, 3


def elf_header(path) -> tuple:
    """(ELF class, data encoding, e_type, e_machine) of the file at path; BuildError if not ELF."""
    with open(path, "rb") as f:
        head = f.read(20)
    if len(head) < 20 or head[:4] != b"\x7fELF":
        raise BuildError(f"{path} is not an ELF file")
    e_type, e_machine = struct.unpack_from("<HH" if head[5] == 1 else ">HH", head, 16)
    return head[4], head[5], e_type, e_machine


def require_aarch64(path, executable: bool) -> None:
    """BuildError unless path is an AArch64 Linux program (executable) or shared library."""
    elf_class, encoding, e_type, machine = elf_header(path)
    if elf_class != 2 or encoding != 1 or machine != EM_AARCH64:
        raise BuildError(f"{path} is not a 64-bit AArch64 ELF file (machine {machine}); "
                         "was it built with the aarch64 cross compiler?")
    # A static-pie or PIE program is ET_DYN too; a shared library never ET_EXEC.
    wanted = (ET_EXEC, ET_DYN) if executable else (ET_DYN,)
    if e_type not in wanted:
        raise BuildError(f"{path} is an ELF file of type {e_type}, not a "
                         f"{'program' if executable else 'shared library'}")
