"""What the Zephyr template needs to know about each board's Zephyr port, beyond utvm's board record.

Facts from each board's files in Zephyr 4.x (boards/<vendor>/<board>/): the UART that Zephyr makes
the console (the one wired to the board's USB serial bridge, or QEMU's first UART), the core clock
Zephyr's devicetree configures (which can differ from the chip's rating in utvm's record), the west
modules (HALs) the board needs, and the runners its board.cmake gives `west flash`. Zephyr's own
QEMU run target uses the machine and CPU of the record's emulator.
"""

from __future__ import annotations

import dataclasses
from typing import Dict, Optional, Tuple

# West projects every Cortex-M build needs: CMSIS (6 for Zephyr 4.x's core headers, and the older
# one some SoC code still includes) and picolibc (the C library, built from source when the
# toolchain lacks it, as with gnuarmemb).
COMMON_MODULES = ("cmsis", "cmsis_6", "picolibc")


@dataclasses.dataclass(frozen=True)
class ZephyrBoard:
    """One board as Zephyr 4.x describes it."""

    target: str  # the board target given to `west build -b`
    uart_label: str  # devicetree label of the console UART, which utvm takes over
    core_clock_hz: Optional[int]  # the clock Zephyr's board devicetree sets up (None: as in the record)
    modules: Tuple[str, ...]  # west projects beyond COMMON_MODULES
    # `west flash` runners of the board (its board.cmake), in the order utvm tries them: tools a
    # package manager installs first.
    runners: Tuple[str, ...] = ()

    @property
    def file_stem(self) -> str:
        """The name of the board's files in an application's boards/ folder: the board target with
        its qualifiers joined by underscores (nrf5340dk/nrf5340/cpuapp -> nrf5340dk_nrf5340_cpuapp)."""
        return self.target.replace("/", "_")


ZEPHYR_BOARDS: Dict[str, ZephyrBoard] = {
    # STM32F746ZG Nucleo: ST-LINK VCP on USART3; Zephyr runs the PLL at 192 MHz (48 MHz for USB).
    "nucleo_f746zg": ZephyrBoard("nucleo_f746zg", "usart3", 192_000_000, ("hal_stm32",),
                                 ("openocd", "stm32cubeprogrammer", "jlink")),
    # 32F746G-DISCO: ST-LINK VCP on USART1; PLL at 216 MHz.
    "stm32f746g_disco": ZephyrBoard("stm32f746g_disco", "usart1", 216_000_000, ("hal_stm32",),
                                    ("openocd", "stm32cubeprogrammer", "jlink")),
    # STM32L4R5ZI Nucleo: ST-LINK VCP on LPUART1; Zephyr's PLL gives 80 MHz (the chip does 120).
    "nucleo_l4r5zi": ZephyrBoard("nucleo_l4r5zi", "lpuart1", 80_000_000, ("hal_stm32",),
                                 ("openocd", "stm32cubeprogrammer", "jlink")),
    # nRF5340 DK application core: J-Link VCOM on UART0.
    "nrf5340dk": ZephyrBoard("nrf5340dk/nrf5340/cpuapp", "uart0", None, ("hal_nordic",),
                             ("nrfutil", "nrfjprog", "jlink")),
    # MIMXRT1050-EVK: OpenSDA VCOM on LPUART1.
    "mimxrt1050_evk": ZephyrBoard("mimxrt1050_evk", "lpuart1", None, ("hal_nxp",),
                                  ("pyocd", "jlink", "linkserver")),
    # Zephyr's QEMU Cortex-M3 (TI LM3S6965): console on UART0.
    "qemu_cortex_m3": ZephyrBoard("qemu_cortex_m3", "uart0", None, ()),
    # Arm MPS2 AN385 under QEMU: CMSDK UART0.
    "mps2_an385": ZephyrBoard("mps2/an385", "uart0", None, ()),
}

# The fit check's share for Zephyr itself, an estimate (the real sizes come from the ELF at build).
# RAM: kernel objects and driver data (~3 KiB), the interrupt stack (CONFIG_ISR_STACK_SIZE, 2048 by
# default), the idle thread's stack (~0.3 KiB) and the UART receive ring. Flash: the kernel, the
# board's clock, pin and UART drivers and the C library parts they use.
KERNEL_RAM_ESTIMATE_BYTES = 6 * 1024
KERNEL_FLASH_ESTIMATE_BYTES = 24 * 1024


def zephyr_board(record: dict) -> ZephyrBoard:
    """The Zephyr facts of a utvm board record (one whose platforms include zephyr)."""
    name = record["name"]
    if name not in ZEPHYR_BOARDS:
        raise KeyError(f"the Zephyr template has no facts for board {name}")
    facts = ZEPHYR_BOARDS[name]
    if record.get("zephyr_board") != facts.target:
        raise ValueError(f"board {name}: the database names Zephyr board {record.get('zephyr_board')!r}, "
                         f"the template knows it as {facts.target!r}")
    return facts
