/*
 * The bare-metal Cortex-M platform layer: one UART, one timer, semihosting and reset.
 * port.c builds utvm/port.h on top of it; apps call platform_init() first thing in main().
 */
#ifndef UTVM_BAREMETAL_PLATFORM_H_
#define UTVM_BAREMETAL_PLATFORM_H_

#include <stdint.h>

#include "board_config.h"

/* Bring up the clocks, the UART and the timer (the FPU, when there is one, is on before main). */
void platform_init(void);

/* Clock tree (clock_<driver>.c, chosen by the board record's clock.driver; clock_fixed.c when it
 * has none): set up the core and bus clocks, then the core clock they run at. */
void clock_init(void);
uint32_t clock_core_hz(void);

/* UART (uart_<driver>.c). Reads block until at least one byte is there. */
void uart_init(void);
void uart_write(const uint8_t *data, uint32_t n);
uint32_t uart_read(uint8_t *buf, uint32_t n);
void uart_isr(void);

/* Timer (timer.c): DWT cycle counter where it counts, else SysTick extended to 64 bits. */
void timer_init(void);
uint64_t timer_ticks(void);
uint64_t timer_hz(void);
const char *timer_source(void); /* "dwt" or "systick" */

/* Semihosting (semihost.c): ask the debugger or emulator to end the program with a status. */
void semihost_exit(uint32_t status) __attribute__((noreturn));

/* Stop the program with an exit status: through semihosting on boards that have it (QEMU
 * returns the status), else by parking the core. */
void platform_exit(uint32_t status) __attribute__((noreturn));

/* Exception-number-based exit statuses, like a shell's 128 + signal. */
#define PLATFORM_FAULT_STATUS(exception) (128u + (uint32_t)(exception))

/* Interrupt masking that nests. */
static inline uint32_t irq_save(void) {
  uint32_t primask;
  __asm__ volatile("mrs %0, primask\n\tcpsid i" : "=r"(primask)::"memory");
  return primask;
}

static inline void irq_restore(uint32_t primask) {
  __asm__ volatile("msr primask, %0" ::"r"(primask) : "memory");
}

#define REG32(addr) (*(volatile uint32_t *)(uintptr_t)(addr))

/* System control block and NVIC registers (Armv7-M / Armv8-M Mainline). */
#define SCB_ICSR REG32(0xE000ED04u)
#define SCB_AIRCR REG32(0xE000ED0Cu)
#define SCB_CPACR REG32(0xE000ED88u)
#define SCB_DEMCR REG32(0xE000EDFCu)
#define NVIC_ISER(n) REG32(0xE000E100u + 4u * (n))
#define NVIC_ICER(n) REG32(0xE000E180u + 4u * (n))

#endif /* UTVM_BAREMETAL_PLATFORM_H_ */
