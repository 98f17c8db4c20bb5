"""Facts from Zephyr's sources that the Zephyr template's tests check generated projects against, as
data (no Zephyr tree can be had where the tests run).

Taken on 2026-12-03 from Zephyr's repository (zephyrproject-rtos/zephyr) as held by a public code
index: board devicetrees of the hardware model v2 layout (Zephyr 3.7 and later; the index's newest
release notes are 4.5's) and the Kconfig symbols of Zephyr 4.x. A label or symbol that a generated
file uses and that is not listed here fails the tests: either the file is wrong, or these facts need
to be taken again from a newer Zephyr, with the date above updated.
"""

from __future__ import annotations

TAKEN_ON = "2026-12-03"
ZEPHYR_SERIES = "4.x"

# Devicetree labels each board has, by utvm board name: those its board .dts (or the board-level
# .dtsi it includes) defines or references. Each is a real label of the board's devicetree; the SoC
# .dtsi files define many more, which are not listed. "console" is the chosen zephyr,console.
BOARD_LABELS = {
    "nucleo_f746zg": {
        "source": "boards/st/nucleo_f746zg/nucleo_f746zg.dts",
        "console": "usart3",
        "labels": [
            "adc1", "backup_sram", "blue_led", "can1", "clk_hse", "clk_lsi", "dac1", "die_temp", "dma2",
            "dtcm", "flash0", "gpiob", "gpioc", "gpiod", "green_led", "i2c1", "i2c2", "iwdg", "leds", "mac",
            "pll", "pwm1", "rcc", "red_led", "rng", "rtc", "spi1", "sram0", "timers1", "usart2", "usart3",
            "usart3_rx_pd9", "usart3_tx_pd8", "usart6", "usbotg_fs", "user_button", "vbat", "vref",
            "zephyr_udc0",
        ],
    },
    "stm32f746g_disco": {
        "source": "boards/st/stm32f746g_disco/stm32f746g_disco.dts",
        "console": "usart1",
        "labels": [
            "clk_hse", "clk_lsi", "dtcm", "eth_phy", "ext_memory", "flash0", "fmc", "ft5336", "gpioa",
            "gpioi", "green_led_1", "i2c1", "i2c3", "ltdc", "mac", "mdio", "n25q128a1", "pll", "pllsai",
            "pwm3", "quadspi", "rcc", "rtc", "sdmmc1", "sdram1", "slot1_partition", "spi2", "sram0",
            "storage_partition", "timers3", "usart1", "usart1_rx_pb7", "usart1_tx_pa9", "usart6", "usbotg_fs",
            "user_button", "zephyr_udc0",
        ],
    },
    "nucleo_l4r5zi": {
        "source": "boards/st/nucleo_l4r5zi/nucleo_l4r5zi.dts",
        "console": "lpuart1",
        "labels": [
            "adc1", "blue_led_0", "clk_hsi", "clk_hsi48", "clk_lsi", "die_temp", "flash0", "gpiob", "gpioc",
            "gpiod", "green_led_0", "i2c1", "leds", "lpuart1", "lpuart1_rx_pg8", "lpuart1_tx_pg7", "pll",
            "pwm1", "pwm2", "pwmleds", "rcc", "red_led_0", "red_pwm_led", "rtc", "spi1", "spi2", "spi3",
            "sram0", "storage_partition", "timers1", "timers2", "usart1", "usart2", "usart3", "usbotg_fs",
            "user_button", "vbat", "vref", "zephyr_udc0",
        ],
    },
    "nrf5340dk": {
        "source": "boards/nordic/nrf5340dk/nrf5340_cpuapp_common.dtsi (nrf5340dk/nrf5340/cpuapp)",
        "console": "uart0",
        "labels": [
            "adc", "arduino_adc", "arduino_header", "arduino_i2c", "arduino_serial", "arduino_spi",
            "bt_hci_ipc0", "gpio0", "gpio1", "gpio_fwd", "gpiote", "i2c1", "ieee802154", "ipc0", "lfxo",
            "mx25r64", "nfct", "pwm0", "pwm_led0", "qspi", "spi4", "uart0", "uart0_default", "uart0_sleep",
            "uart1", "usbd", "vregh", "vregmain", "vregradio", "wdt0", "zephyr_udc0",
        ],
    },
    "mimxrt1050_evk": {
        "source": "boards/nxp/mimxrt1050_evk/mimxrt1050_evk.dtsi",
        "console": "lpuart1",
        "labels": [
            "adc1", "arduino_header", "arduino_serial", "dtcm", "edma0", "enet_mac", "enet_mdio",
            "enet_ptp_clock", "fxos8700", "gpio1", "gpio2", "gpio3", "gpio5", "gpt_hw_timer", "green_led",
            "itcm", "lcdif", "lpi2c1", "lpspi1", "lpspi3", "lpuart1", "lpuart3", "nxp_i2c_touch_fpc",
            "nxp_parallel_lcd_connector", "nxp_touch_i2c", "phy", "pinmux_lpuart1", "pinmux_lpuart1_sleep",
            "pxp", "sdram0", "systick", "usb1", "usbh1", "usbh2", "usbphy1", "usbphy2", "usdhc1",
            "user_button", "wdog0", "zephyr_lcdif", "zephyr_udc0", "zephyr_uhc0", "zephyr_uhc1",
        ],
    },
    "qemu_cortex_m3": {
        "source": "boards/qemu/cortex_m3/qemu_cortex_m3.dts",
        "console": "uart0",
        "labels": [
            "bt_hci_uart", "eth", "flash0", "gpio0", "gpio1", "gpio2", "gpio3", "gpio4", "gpio5", "gpio6",
            "slip0", "sram0", "uart0", "uart1", "uart2",
        ],
    },
    "mps2_an385": {
        "source": "boards/arm/mps2/mps2_an385.dts (mps2/an385)",
        "console": "uart0",
        "labels": [
            "dtimer0", "eth0", "flash0", "gpio0", "gpio1", "gpio2", "gpio3", "gpio_button", "gpio_led0",
            "gpio_misc", "i2c_audio_conf", "i2c_shield0", "i2c_shield1", "i2c_touch", "led_0", "led_1",
            "nvic", "sram0", "sysclk", "timer0", "timer1", "uart0", "uart1", "uart2", "uart3", "uart4",
            "user_button_0", "user_button_1", "wdog0",
        ],
    },
}

# Kconfig symbols of Zephyr 4.x that an application's prj.conf or board fragment may set, with
# their types: the serial, console, logging, kernel-stack, optimisation, FPU, C-library and timing
# options around what utvm's application uses.
KCONFIG_SYMBOLS = {
    "ASSERT": "bool",
    "BOOT_BANNER": "bool",
    "CBPRINTF_COMPLETE": "bool",
    "CBPRINTF_FULL_INTEGRAL": "bool",
    "CBPRINTF_NANO": "bool",
    "CBPRINTF_REDUCED_INTEGRAL": "bool",
    "CONSOLE": "bool",
    "CORTEX_M_DWT": "bool",
    "CPP": "bool",
    "DEBUG_OPTIMIZATIONS": "bool",
    "FPU": "bool",
    "FP_HARDABI": "bool",
    "FP_SOFTABI": "bool",
    "GPIO": "bool",
    "HEAP_MEM_POOL_SIZE": "int",
    "HW_STACK_PROTECTION": "bool",
    "IDLE_STACK_SIZE": "int",
    "ISR_STACK_SIZE": "int",
    "LOG": "bool",
    "LOG_MODE_MINIMAL": "bool",
    "MAIN_STACK_SIZE": "int",
    "NEWLIB_LIBC": "bool",
    "NO_OPTIMIZATIONS": "bool",
    "PICOLIBC": "bool",
    "PRINTK": "bool",
    "REBOOT": "bool",
    "REQUIRES_FULL_LIBC": "bool",
    "RING_BUFFER": "bool",
    "SEMIHOST": "bool",
    "SERIAL": "bool",
    "SIZE_OPTIMIZATIONS": "bool",
    "SPEED_OPTIMIZATIONS": "bool",
    "STDOUT_CONSOLE": "bool",
    "SYS_CLOCK_HW_CYCLES_PER_SEC": "int",
    "SYS_CLOCK_TICKS_PER_SEC": "int",
    "SYSTEM_WORKQUEUE_STACK_SIZE": "int",
    "THREAD_NAME": "bool",
    "TIMER_HAS_64BIT_CYCLE_COUNTER": "bool",
    "TIMING_FUNCTIONS": "bool",
    "UART_ASYNC_API": "bool",
    "UART_CONSOLE": "bool",
    "UART_INTERRUPT_DRIVEN": "bool",
    "UART_LINE_CTRL": "bool",
    "UART_USE_RUNTIME_CONFIGURE": "bool",
}
