"""Section sizes and the largest symbols of a 32-bit ELF image, read with the standard library.

Sizes follow `size`'s Berkeley split: text is allocated read-only (code, constants, vectors),
data is allocated writable with contents (RAM, with a copy in flash), bss is allocated writable
without contents. The reserved stack section is reported on its own.
"""

from __future__ import annotations

import dataclasses
import struct
from pathlib import Path
from typing import Dict, List, Tuple

_SHF_WRITE, _SHF_ALLOC = 0x1, 0x2
_SHT_SYMTAB, _SHT_NOBITS = 2, 8
_STT_OBJECT, _STT_FUNC = 1, 2
STACK_SECTION = ".stack"


class ElfError(ValueError):
    """Not a 32-bit little-endian ELF file."""


@dataclasses.dataclass
class ElfSizes:
    text: int
    data: int
    bss: int
    stack: int
    sections: Dict[str, int]
    section_kinds: Dict[str, str]  # allocated section -> "text" | "data" | "bss" | "stack"
    largest_symbols: List[Tuple[str, str, int]]  # (name, "text" | "data" | "bss", bytes)

    @property
    def flash_bytes(self) -> int:
        return self.text + self.data

    @property
    def ram_bytes(self) -> int:
        return self.data + self.bss + self.stack

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _section_kind(flags: int, sh_type: int) -> str:
    if not flags & _SHF_ALLOC:
        return ""
    if not flags & _SHF_WRITE:
        return "text"
    return "bss" if sh_type == _SHT_NOBITS else "data"


def read_elf_sizes(path, top: int = 10) -> ElfSizes:
    """Sizes of the image at path, and its `top` largest functions and objects."""
    blob = Path(path).read_bytes()
    if blob[:4] != b"\x7fELF" or blob[4] != 1 or blob[5] != 1:
        raise ElfError(f"{path} is not a 32-bit little-endian ELF file")
    shoff, = struct.unpack_from("<I", blob, 0x20)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", blob, 0x2E)
    headers = [struct.unpack_from("<IIIIIIIIII", blob, shoff + i * shentsize) for i in range(shnum)]
    names_off = headers[shstrndx][4]

    def cstr(offset: int) -> str:
        return blob[offset:blob.index(b"\0", offset)].decode("utf-8", "replace")

    totals = {"text": 0, "data": 0, "bss": 0, "stack": 0}
    sections: Dict[str, int] = {}
    section_kinds: Dict[str, str] = {}
    kinds: List[str] = []
    for name_off, sh_type, flags, _addr, _off, size, *_ in headers:
        name = cstr(names_off + name_off)
        kind = _section_kind(flags, sh_type)
        kinds.append(kind)
        if kind:
            kind = "stack" if name == STACK_SECTION else kind
            totals[kind] += size
            sections[name] = size
            section_kinds[name] = kind
    symbols = {}  # by address: aliases (__aeabi_dadd / __adddf3) are one consumer
    for sh_type, link, offset, size, entsize in ((h[1], h[6], h[4], h[5], h[9]) for h in headers):
        if sh_type != _SHT_SYMTAB:
            continue
        strtab = headers[link][4]
        for pos in range(offset, offset + size, entsize or 16):
            st_name, value, st_size, st_info, _other, st_shndx = struct.unpack_from("<IIIBBH", blob, pos)
            wanted = (st_info & 0xF) in (_STT_OBJECT, _STT_FUNC) and st_shndx < len(kinds)
            if st_size and wanted and kinds[st_shndx]:
                name = cstr(strtab + st_name)
                if value not in symbols or name < symbols[value][0]:
                    symbols[value] = (name, kinds[st_shndx], st_size)
    largest = sorted(symbols.values(), key=lambda s: (-s[2], s[0]))[:top]
    return ElfSizes(sections=sections, section_kinds=section_kinds, largest_symbols=largest, **totals)
