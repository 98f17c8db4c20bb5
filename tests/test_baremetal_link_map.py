"""The link-map reader of the bare-metal template (utvm_baremetal.link_map) on a map in GNU ld's
layout: kept input sections per object and part, library members charged by who pulled them in,
the model-sized arena apart from the runtime, discarded and debug sections left out. The real
maps of real builds are checked in test_baremetal_models.py (parts add up to the ELF's flash).
"""

from __future__ import annotations

import sys

import pytest
from conftest import REPO_ROOT

sys.path[:0] = [str(REPO_ROOT), str(REPO_ROOT / "templates" / "baremetal")]
from utvm_baremetal import link_map  # noqa: E402

LIBC = "/usr/lib/arm-none-eabi/lib/thumb/v7-m/nofp/libc_nano.a"
LIBM = "/usr/lib/arm-none-eabi/lib/thumb/v7-m/nofp/libm.a"
MAP = f"""Archive member included to satisfy reference by file (symbol)

{LIBC}(lib_a-memcpy.o)
                              build/src/platform/startup.o (memcpy)
{LIBM}(lib_a-wf_exp.o)
                              build/generated/model/codegen/host/src/m_kernels.o (expf)
{LIBM}(lib_a-ef_exp.o)
                              {LIBM}(lib_a-wf_exp.o) (__ieee754_expf)

Discarded input sections

 .text.unused   0x00000000       0x40 build/runtime/src/commands.o

Memory Configuration

Linker script and memory map

LOAD build/src/platform/startup.o
.vectors        0x00000000       0xc0
 *(.vectors)
 .vectors       0x00000000       0xc0 build/src/platform/startup.o
                0x00000000                utvm_vector_table

.text           0x000000c0      0x400
 *(.text*)
 .text.utvm_session_poll_with_a_long_name
                0x000000c0      0x100 build/runtime/src/session.o
                0x000000c0                utvm_session_poll_with_a_long_name
 *fill*         0x000001c0        0x2
 .text.kernel   0x000001c4       0x80 build/generated/model/codegen/host/src/m_kernels.o
 .rodata.c0     0x00000244       0x90 build/generated/model/codegen/host/src/m_constants.o
 .text          0x000002d4       0x20 {LIBC}(lib_a-memcpy.o)
 .text          0x000002f4       0x30 {LIBM}(lib_a-ef_exp.o)
 .text.main     0x00000324        0x8 build/src/app/host_driven.o

.data           0x20000000        0x8 load address 0x000004c0
 .data.state    0x20000000        0x8 build/runtime/src/session.o

.bss            0x20000008      0x210 load address 0x000004c8
 .bss.rx_buf    0x20000008      0x200 build/runtime/src/session.o
 .bss.arena     0x20000208       0x10 build/runtime/src/plan.o

.stack          0x20000220     0x2000 load address 0x000004c8
 *fill*         0x20000220     0x2000

.debug_info     0x00000000     0x9501
 .debug_info    0x00000000      0x100 build/runtime/src/session.o
OUTPUT(build/firmware.elf elf32-littlearm)
"""
KINDS = {".vectors": "text", ".text": "text", ".data": "data", ".bss": "bss", ".stack": "stack"}


@pytest.fixture
def breakdown(tmp_path):
    path = tmp_path / "firmware.map"
    path.write_text(MAP)
    return link_map.read_link_map(path, KINDS)


def test_parts_hold_what_the_link_kept(breakdown):
    sizes = {name: (part.flash, part.ram) for name, part in breakdown.parts.items()}
    assert sizes == {
        "runtime": (0x100 + 0x8, 0x8 + 0x200),  # code, .data (flash image and RAM), .bss
        "platform": (0xC0, 0),
        "app": (0x8, 0),
        "C library": (0x20, 0),  # memcpy, pulled in by the startup code
        "model code": (0x80, 0),
        "model constants": (0x90, 0),
        "C library for the model": (0x30, 0),  # ef_exp, pulled in by wf_exp, pulled in by the kernels
        "model arena": (0, 0x10),
    }
    assert breakdown.flash(*link_map.NO_MODEL_PARTS) == 0x108 + 0xC0 + 0x8 + 0x20


def test_per_object_sizes_skip_discarded_and_debug_sections(breakdown):
    assert "build/runtime/src/commands.o" not in breakdown.objects
    assert breakdown.objects["build/runtime/src/session.o"].flash == 0x108


def test_not_a_map_file(tmp_path):
    path = tmp_path / "firmware.map"
    path.write_text("hello\n")
    with pytest.raises(link_map.MapError, match="not a GNU ld map file"):
        link_map.read_link_map(path, KINDS)


@pytest.mark.parametrize("path, part", [
    ("build/runtime/src/plan.o", "runtime"),
    ("build/src/platform/uart_cmsdk.o", "platform"),
    ("build/src/app/aot_standalone.o", "app"),
    ("build/generated/model/codegen/host/src/kws_constants.o", "model constants"),
    ("build/generated/model/codegen/host/src/kws_plan.o", "model code"),
    (f"{LIBC}(lib_a-memset.o)", "C library"),
    ("linker stubs", "other"),
])
def test_objects_are_sorted_into_parts(path, part):
    assert link_map.part_of(path) == part
