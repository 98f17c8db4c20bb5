"""Who takes the flash and the RAM of a linked image: the GNU ld map file, read per input object.

The map lists every input section the linker kept (after --gc-sections) with its size and the
object it came from, so the bytes of each part of the firmware (the device runtime, the platform
layer, the app, the model's code and constants, the C library) are exact, as linked. The C
library's members are split by who pulled them in (following the chain of archive members the
map records): those the model's code needs, and those the rest of the firmware needs.

Standard library only: it runs in generated projects.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Tuple

RUNTIME, PLATFORM, APP = "runtime", "platform", "app"
MODEL_CODE, MODEL_CONSTANTS, MODEL_ARENA = "model code", "model constants", "model arena"
LIBRARY, MODEL_LIBRARY = "C library", "C library for the model"
OTHER = "other"
PARTS = (RUNTIME, PLATFORM, APP, LIBRARY, MODEL_CODE, MODEL_CONSTANTS, MODEL_LIBRARY, MODEL_ARENA, OTHER)
_MODEL_PARTS = (MODEL_CODE, MODEL_CONSTANTS, MODEL_ARENA)
# The firmware without a model: the device runtime and what it runs on.
NO_MODEL_PARTS = (RUNTIME, PLATFORM, APP, LIBRARY)

# The runtime's arena and workspace are sized by the model (plan.c); they are the model's RAM.
_MODEL_SIZED_SECTIONS = (".bss.arena", ".bss.workspace")
_ARCHIVE_MEMBER = re.compile(r"^(?P<archive>\S+\.a)\((?P<member>[^)]+)\)$")
# " .text.name  0xADDRESS  0xSIZE  object" (the name may stand alone on the line before).
_INPUT_LINE = re.compile(
    r"^ (?P<name>\S+)?\s+0x(?P<address>[0-9a-fA-F]+)\s+0x(?P<size>[0-9a-fA-F]+)\s+(?P<file>\S.*)$"
)
_OUTPUT_LINE = re.compile(r"^(?P<name>\.\S+)(?:\s+0x[0-9a-fA-F]+\s+0x[0-9a-fA-F]+.*)?$")


class MapError(ValueError):
    """The file is not a GNU ld map file (no memory map section)."""


@dataclasses.dataclass
class PartSizes:
    """Bytes of one part of the image: flash (code, constants, .data's load image) and RAM."""

    flash: int = 0
    ram: int = 0


@dataclasses.dataclass
class LinkBreakdown:
    """Flash and RAM per part, and which output sections were counted as what."""

    parts: Dict[str, PartSizes]
    objects: Dict[str, PartSizes]  # per input object, as named in the map

    def flash(self, *parts: str) -> int:
        return sum(self.parts[p].flash for p in parts if p in self.parts)

    def ram(self, *parts: str) -> int:
        return sum(self.parts[p].ram for p in parts if p in self.parts)

    def to_dict(self) -> dict:
        return {name: dataclasses.asdict(size) for name, size in self.parts.items()}


def part_of(obj: str) -> str:
    """The part an input object belongs to, from its path in a generated project's build."""
    path = obj.replace("\\", "/")
    if _ARCHIVE_MEMBER.match(path):
        return LIBRARY
    if "/runtime/src/" in f"/{path}":
        return RUNTIME
    if "/src/platform/" in f"/{path}":
        return PLATFORM
    if "/src/app/" in f"/{path}":
        return APP
    if "/generated/" in f"/{path}":
        return MODEL_CONSTANTS if path.endswith("_constants.o") else MODEL_CODE
    return OTHER


def _archive_requesters(lines: List[str]) -> Dict[str, str]:
    """{archive member: the file whose reference pulled it in}, from the map's first section."""
    out: Dict[str, str] = {}
    member: Optional[str] = None
    for line in lines:
        if line.startswith("Discarded input sections") or line.startswith("Memory Configuration"):
            break
        if not line.strip():
            continue
        if not line[0].isspace():
            member = line.strip() if _ARCHIVE_MEMBER.match(line.strip()) else None
        elif member is not None:
            requester = line.strip().rsplit(" (", 1)[0]
            out.setdefault(member, requester)
            member = None
    return out


def _library_part(member: str, requesters: Dict[str, str]) -> str:
    """Whether a library member is there for the model: the part at the start of its chain of requests."""
    obj, seen = member, set()
    while _ARCHIVE_MEMBER.match(obj) and obj in requesters and obj not in seen:
        seen.add(obj)
        obj = requesters[obj]
    return MODEL_LIBRARY if part_of(obj) in _MODEL_PARTS else LIBRARY


def _input_sections(lines: Iterable[str]) -> Iterable[Tuple[str, str, int, str]]:
    """(output section, input section, size, object) for every kept input section of the memory map.

    Merged string sections (.rodata.*.str1.1) are listed at their size before the merge, at the
    address of the string they merged into: only the bytes past what earlier sections covered count.
    """
    output = ""
    covered = 0  # the end of the bytes already counted in this output section
    pending: Optional[str] = None  # an input section name whose address and size are on the next line
    for line in lines:
        if not line.strip():
            continue
        if not line[0].isspace():
            match = _OUTPUT_LINE.match(line)
            output = match.group("name") if match else ""
            pending = None
            covered = 0
            continue
        if line.startswith(" ") and not line.startswith("  ") and len(line.split()) == 1:
            pending = line.strip()
            continue
        match = _INPUT_LINE.match(line)
        if match is None:
            pending = None
            continue
        name = match.group("name") or pending
        pending = None
        if name is None or name.startswith("*") and name != "*fill*":
            continue
        start, size = int(match.group("address"), 16), int(match.group("size"), 16)
        if name != "*fill*" and size:
            size = max(0, start + size - max(start, covered))
            covered = max(covered, start + int(match.group("size"), 16))
        yield output, name, size, match.group("file").strip()


def read_link_map(path, section_kinds: Dict[str, str]) -> LinkBreakdown:
    """Flash and RAM per part of the image whose map file is at path.

    section_kinds maps each allocated output section to "text", "data", "bss" or "stack" (from the
    ELF, see elf_sizes): text counts as flash, data as both flash (its load image) and RAM, bss as
    RAM. The stack and padding between input sections are not charged to any part.
    """
    lines = Path(path).read_text(encoding="utf-8", errors="replace").splitlines()
    try:
        start = lines.index("Linker script and memory map")
    except ValueError:
        raise MapError(f"{path} is not a GNU ld map file (no 'Linker script and memory map')") from None
    requesters = _archive_requesters(lines[:start])
    parts = {p: PartSizes() for p in PARTS}
    objects: Dict[str, PartSizes] = {}
    for output, name, size, obj in _input_sections(lines[start + 1:]):
        kind = section_kinds.get(output, "")
        if name == "*fill*" or not size or kind not in ("text", "data", "bss"):
            continue
        part = part_of(obj)
        if part == LIBRARY:
            part = _library_part(obj, requesters)
        elif part == RUNTIME and name in _MODEL_SIZED_SECTIONS:
            part = MODEL_ARENA
        for record in (parts[part], objects.setdefault(obj, PartSizes())):
            record.flash += size if kind in ("text", "data") else 0
            record.ram += size if kind in ("data", "bss") else 0
    return LinkBreakdown(parts={p: s for p, s in parts.items() if s.flash or s.ram}, objects=objects)
