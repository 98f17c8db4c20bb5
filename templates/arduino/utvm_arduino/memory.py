"""What a sketch needs of a board's real memories, before anything is built.

On Arm boards constants, tables and code stay in flash, as in the bare-metal template. AVR is a
Harvard machine: whatever is not explicitly kept in flash is copied to SRAM at start-up, every
`const` table and string included. So on AVR the SRAM count is the arena, the workspace, the
runtime (its buffers, its tables and message strings, the Arduino core's serial buffers), the
model's tables (the tensor and kernel tables of `utvm_model`, their names and shapes), a reserve
for the stack, and the constants too unless the archive keeps them in flash (it does when it was
compiled for the board's AVR target: `utvm_flash.h`). Flash holds the code and the constants.

The runtime's share is measured: `build` reports the real figures from the ELF, and the allowances
below are rounded up from them (docs/arduino.md). Standard library only.
"""

from __future__ import annotations

from project_api import board_records

FLASH_HEADER = "codegen/host/include/utvm_flash.h"
# avr-gcc's __flash reaches the first 64 KiB of flash; the vectors and the core's own tables take
# some of it.
AVR_FLASH_WINDOW_BYTES = 60 * 1024
# The runtime and the Arduino core on AVR, measured on atmega2560 builds (docs/arduino.md) and
# rounded up: SRAM besides the packet buffers (about 1160 B: message strings, the CRC table, state,
# Serial's buffers), and flash (13.6 KiB without the model's kernels and constants).
AVR_RUNTIME_RAM_BYTES = 1216
AVR_RUNTIME_FLASH_BYTES = 14 * 1024
# Arm cores (mbed, SAM, RP2040) bring their own RTOS or USB stack: a coarse allowance.
ARM_RUNTIME_RAM_BYTES = 48 * 1024
ARM_RUNTIME_FLASH_BYTES = 160 * 1024
# Each kernel's code is only known once compiled: an allowance per kernel on top of the runtime's.
KERNEL_CODE_BYTES = 1024
# Sizes of the C types in the model's tables on AVR (pointers and int are 16 bits).
_AVR_TENSOR_BYTES = 18  # name*, 4 x uint8, offset, nbytes, shape*, data*
_AVR_KERNEL_BYTES = 8  # name*, fn*, num_args, args*
_AVR_MODEL_BYTES = 38


def is_avr(board: dict) -> bool:
    return str(board.get("cpu") or "").startswith(("atmega", "attiny", "atxmega"))


def max_packet(board: dict) -> int:
    """The runtime's packet limit for the board's RAM: the protocol's minimum on a 2 KiB AVR."""
    ram = board.get("ram_bytes") or 0
    if ram <= 4096:
        return 64
    return 256 if ram <= 16384 else 1024


def packet_buffers(board: dict) -> int:
    """SRAM of the runtime's receive and transmit buffers (a packet each, and the CRC)."""
    return 2 * max_packet(board) + 2


def constants_in_flash(archive) -> bool:
    """Whether the archive's C keeps its constants in flash on AVR (see model_library)."""
    return FLASH_HEADER in archive.file_names()


def model_table_bytes(metadata: dict) -> int:
    """SRAM of `utvm_model`'s tables on AVR, as model_library generates them: tensors with their
    names and shapes, kernels with their names and argument lists, the input and output lists and
    the model's name and hash."""
    plan = metadata.get("plan") or {}
    tensors = plan.get("tensors") or []
    kernels = plan.get("kernels") or []
    shapes = {tuple(t.get("shape") or ()) for t in tensors if t.get("shape")}
    total = _AVR_MODEL_BYTES + len(str(metadata.get("model_name", ""))) + 1 + len(
        str(metadata.get("model_hash", ""))) + 1
    total += sum(_AVR_TENSOR_BYTES + len(str(t.get("name", ""))) + 1 for t in tensors)
    total += sum(4 * len(shape) for shape in shapes)
    total += sum(_AVR_KERNEL_BYTES + len(str(k.get("name", ""))) + 1 + 2 * len(k.get("args") or [])
                 for k in kernels)
    total += 2 * (len(metadata.get("inputs") or []) + len(metadata.get("outputs") or []))
    return total


def footprint(board: dict, archive, stack_bytes: int) -> board_records.Footprint:
    """What the sketch of `archive` needs of `board`, split by consumer (see the module docstring)."""
    meta = archive.metadata
    kernels = len((meta.get("plan") or {}).get("kernels") or [])
    code = kernels * KERNEL_CODE_BYTES
    if not is_avr(board):
        return board_records.footprint_from_metadata(
            meta, runtime_ram=ARM_RUNTIME_RAM_BYTES + stack_bytes, runtime_flash=ARM_RUNTIME_FLASH_BYTES,
            kernel_code_bytes=code)
    fp = board_records.footprint_from_metadata(
        meta, runtime_ram=AVR_RUNTIME_RAM_BYTES + packet_buffers(board),
        runtime_flash=AVR_RUNTIME_FLASH_BYTES, kernel_code_bytes=code)
    fp.ram["runtime"] = fp.ram.pop("runtime and stack")  # the stack has its own line here
    fp.ram["model tables"] = model_table_bytes(meta)
    fp.ram["stack reserve"] = stack_bytes
    if not constants_in_flash(archive):
        # Plain const arrays: avr-gcc copies them to SRAM (and they stay in flash as the copy's source).
        for name, size in list(fp.flash.items()):
            if name.startswith(("constant ", "other constants")):
                fp.ram[name] = size
    return fp


def flash_window_problem(board: dict, archive) -> str:
    """Why flash-resident constants cannot be reached on this AVR, or ''."""
    total = int((archive.metadata.get("memory") or {}).get("constant_bytes") or 0)
    if is_avr(board) and constants_in_flash(archive) and total > AVR_FLASH_WINDOW_BYTES:
        return (f"the model's constants take {board_records.format_bytes(total)} ({total} bytes); on AVR "
                "they are read through avr-gcc's __flash, which reaches only the first 64 KiB of flash "
                f"(about {AVR_FLASH_WINDOW_BYTES} bytes are left for constants)")
    return ""
