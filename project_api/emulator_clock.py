"""What a device's clock means when the device is an emulator.

Under QEMU with ``-icount shift=N`` the guest's clock advances 2^N ns per instruction, so a time the
device measures is an instruction count, not a time of any real board. Without ``-icount`` the guest
clock follows the host's and means nothing for a real board. Every figure that comes from an
emulator carries a note saying so. A board record's ``emulator.icount_shift`` gives N; the project
option ``qemu_icount`` (default on) turns -icount off.

The template that starts the emulator and the host that shows its figures both read this, so
the arithmetic lives here once. Standard library only.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Optional

NS_PER_SECOND = 1_000_000_000


@dataclasses.dataclass(frozen=True)
class EmulatorClock:
    """The guest clock of one emulated board, under one run's options."""

    board: str
    system: str  # the emulator binary, e.g. qemu-system-arm
    icount_shift: Optional[int]  # None: the guest clock follows the host's

    @property
    def counts_instructions(self) -> bool:
        return self.icount_shift is not None

    @property
    def instructions_per_second(self) -> Optional[float]:
        """Instructions per second of guest time, or None without -icount."""
        return None if self.icount_shift is None else NS_PER_SECOND / (1 << self.icount_shift)

    def instructions(self, seconds: float) -> Optional[int]:
        """The instructions in `seconds` of guest time, or None without -icount."""
        per_second = self.instructions_per_second
        return None if per_second is None else round(seconds * per_second)

    def note(self) -> str:
        """The caveat said wherever this clock's figures are shown."""
        if self.icount_shift is None:
            return (f"{self.board} runs under {self.system}: timings follow the host's clock; "
                    "they are not real-board timings")
        return (f"{self.board} runs under {self.system} -icount shift={self.icount_shift}: figures are "
                "instruction counts, not cycles or times of a real board")


def _enabled(value: Any) -> bool:
    # Saved options are typed; an option typed at a prompt may still be text.
    if isinstance(value, str):
        return value.strip().lower() not in ("false", "0", "no")
    return bool(value)


def emulator_clock(board: Mapping[str, Any],
                   options: Optional[Mapping[str, Any]] = None) -> Optional[EmulatorClock]:
    """The clock of an emulated board record under a run's options; None for a board that is not
    emulated."""
    if board.get("kind") != "emulated" or not board.get("emulator"):
        return None
    emulator = board["emulator"]
    shift = emulator.get("icount_shift")
    if shift is not None and not _enabled((options or {}).get("qemu_icount", True)):
        shift = None
    return EmulatorClock(board=str(board.get("name")), system=str(emulator.get("system", "an emulator")),
                         icount_shift=None if shift is None else int(shift))
