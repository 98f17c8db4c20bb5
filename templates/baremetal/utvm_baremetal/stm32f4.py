"""STM32F4 boards on the bare-metal template: the core clock an image runs at, and the lines of
board_config.h that the stm32f4 clock driver and the stm32f4_usart driver are built from.

The board record holds the facts (see docs/boards.md): ``clock`` (the HSI's rate, whether the
RCC exists, the PLL setting that makes ``clock_hz``), ``uart`` (USART base, bus, enable bit, pins,
alternate function) and ``mcu`` (the part's interrupt count). Standard library only: it runs when a
project is generated.
"""

from __future__ import annotations

import copy
import re
from typing import List, Tuple

from project_api.errors import UserError

CLOCK_DRIVER = "stm32f4"
_PIN = re.compile(r"^P([A-K])([0-9]{1,2})$")


def has_clock_tree(board: dict) -> bool:
    """Whether the board's image sets up its own clocks (an STM32 record with a clock entry)."""
    return bool(board.get("clock"))


def running_board(board: dict, use_pll: bool) -> dict:
    """A copy of the board record whose clock_hz is the core clock the image will run at: the
    HSI's by default, the PLL's (the record's clock_hz) with use_pll, and whatever the emulator
    fixes when it has no RCC. The copy's clock.use_pll says which; projects keep this copy, so cycle
    counts on the board are worked out from the clock it really runs at."""
    clock = board.get("clock")
    if not clock:
        if use_pll:
            raise UserError(f"board {board['name']} has no PLL setting: its core clock is fixed at "
                            f"{board.get('clock_hz')} Hz",
                            hint="leave the pll option off (it applies to the STM32 boards)")
        return board
    out = copy.deepcopy(board)
    out["clock"]["use_pll"] = bool(use_pll)
    if clock["rcc_modelled"] and not use_pll:
        out["clock_hz"] = clock["hsi_hz"]
    return out


def parse_pin(text: str) -> Tuple[int, int]:
    """'PA2' -> (0, 2): the GPIO port's index (A = 0) and the pin number."""
    match = _PIN.match(text)
    if not match or int(match.group(2)) > 15:
        raise ValueError(f"{text!r} is not an STM32 pin name (PA0 ... PK15)")
    return ord(match.group(1)) - ord("A"), int(match.group(2))


def _shift(divider: int) -> int:
    if divider not in (1, 2, 4, 8, 16):
        raise ValueError(f"bus divider {divider} is not 1, 2, 4, 8 or 16")
    return divider.bit_length() - 1


def config_lines(board: dict) -> List[str]:
    """The #define lines of board_config.h for the stm32f4 clock and USART drivers (none for a
    board without a clock tree). `board` is a running_board() copy."""
    if not has_clock_tree(board):
        return []
    clock, uart = board["clock"], board["uart"]
    if clock.get("driver") != CLOCK_DRIVER:
        raise ValueError(f"board {board['name']}: no bare-metal clock driver {clock.get('driver')!r}")
    pll = clock["pll"]
    tx_port, tx_pin = parse_pin(uart["tx"])
    rx_port, rx_pin = parse_pin(uart["rx"])
    values = [
        ("HSI_HZ", f"{clock['hsi_hz']}u", "the clock at reset"),
        ("USE_PLL", "1" if clock.get("use_pll") else "0", "the project's pll option"),
        ("RCC_MODELLED", "1" if clock["rcc_modelled"] else "0", "0: an emulator without the RCC"),
        ("PLL_M", f"{pll['m']}u", "core clock = HSI / M x N / P"),
        ("PLL_N", f"{pll['n']}u", None),
        ("PLL_P", f"{pll['p']}u", None),
        ("PLL_Q", f"{pll['q']}u", "USB / SDIO clock = HSI / M x N / Q"),
        ("APB1_SHIFT", f"{_shift(pll['apb1_div'])}u", f"APB1 = core / {pll['apb1_div']} with the PLL"),
        ("APB2_SHIFT", f"{_shift(pll['apb2_div'])}u", f"APB2 = core / {pll['apb2_div']} with the PLL"),
        ("FLASH_LATENCY", f"{pll['flash_latency']}u", "flash wait states with the PLL"),
        ("UART_BUS", "2u" if uart["bus"] == "apb2" else "1u", uart["bus"].upper()),
        ("UART_RCC_BIT", f"{uart['rcc_bit']}u", f"enable bit in RCC_{uart['bus'].upper()}ENR"),
        ("UART_TX_PORT", f"{tx_port}u", f"TX on {uart['tx']}"),
        ("UART_TX_PIN", f"{tx_pin}u", None),
        ("UART_RX_PORT", f"{rx_port}u", f"RX on {uart['rx']}"),
        ("UART_RX_PIN", f"{rx_pin}u", None),
        ("UART_AF", f"{uart['af']}u", "the pins' alternate function"),
    ]
    lines = [f"/* {board['mcu']['part']}: clock tree and USART pins "
             "(clock_stm32f4.c, uart_stm32f4_usart.c). */"]
    for name, value, why in values:
        lines.append(f"#define UTVM_STM32_{name} {value}" + (f" /* {why} */" if why else ""))
    return lines
