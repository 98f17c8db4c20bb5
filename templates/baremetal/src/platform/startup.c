/*
 * Vector table and reset: copy .data from flash, zero .bss, turn on the FPU, call main().
 * Every external interrupt goes through one handler that dispatches on the active IRQ
 * number, so the table does not change from board to board.
 */
#include <stdint.h>

#include "platform.h"

extern uint32_t _sidata, _sdata, _edata, _sbss, _ebss, _estack;
int main(void);

void Reset_Handler(void) __attribute__((noreturn));
void SysTick_Handler(void);
static void fault_handler(void);
static void irq_handler(void);

typedef void (*vector_t)(void);

__attribute__((section(".vectors"), used)) const vector_t utvm_vector_table[16 + UTVM_BOARD_NUM_IRQ] = {
    [0] = (vector_t)(uintptr_t)&_estack,
    [1] = Reset_Handler,
    [2] = fault_handler,  /* NMI */
    [3] = fault_handler,  /* HardFault */
    [4] = fault_handler,  /* MemManage */
    [5] = fault_handler,  /* BusFault */
    [6] = fault_handler,  /* UsageFault */
    [11] = fault_handler, /* SVCall: nothing here issues SVC */
    [14] = fault_handler, /* PendSV: unused */
    [15] = SysTick_Handler,
    [16 ... 16 + UTVM_BOARD_NUM_IRQ - 1] = irq_handler,
};

static inline uint32_t active_exception(void) {
  uint32_t ipsr;
  __asm__ volatile("mrs %0, ipsr" : "=r"(ipsr));
  return ipsr & 0x1FFu;
}

static void irq_handler(void) {
  if (active_exception() - 16u == UTVM_BOARD_UART_RX_IRQ) {
    uart_isr();
  }
}

static void fault_handler(void) {
  static const uint8_t msg[] = "\r\n!utvm fault\r\n";
  uint32_t exception = active_exception();
  /* For a person watching the console; the host protocol resynchronises after it. */
  uart_write(msg, sizeof(msg) - 1u);
  platform_exit(PLATFORM_FAULT_STATUS(exception));
}

/* Kept apart from Reset_Handler so the compiler cannot hoist an FP instruction above the
 * CPACR write that makes FP instructions legal. */
__attribute__((noinline, noreturn)) static void start_c_runtime(void) {
  const uint32_t *src = &_sidata;
  for (uint32_t *dst = &_sdata; dst < &_edata;) {
    *dst++ = *src++;
  }
  /* volatile: GCC would turn this loop into a call to the C library's memset, 164 bytes of flash
   * for the sake of one loop. */
  for (volatile uint32_t *dst = &_sbss; dst < &_ebss;) {
    *dst++ = 0u;
  }
  platform_exit((uint32_t)main());
}

void Reset_Handler(void) {
#if UTVM_BOARD_HAS_FPU
  /* Full access to coprocessors 10 and 11 (the FPU). */
  SCB_CPACR |= 0xFu << 20;
  __asm__ volatile("dsb\n\tisb" ::: "memory");
#endif
  start_c_runtime();
}
