/* utvm/port.h for bare-metal Cortex-M, over platform.h. */
#include "utvm/port.h"

#include "platform.h"

void platform_init(void) {
  clock_init(); /* first: the UART's baud divider and the timer's rate follow the clock */
  uart_init();
  timer_init();
  __asm__ volatile("cpsie i" ::: "memory");
}

int32_t utvm_port_write(const uint8_t *data, uint32_t n) {
  uart_write(data, n);
  return 0;
}

int32_t utvm_port_read(uint8_t *buf, uint32_t n) {
  if (n == 0u) {
    return 0;
  }
  return (int32_t)uart_read(buf, n);
}

uint64_t utvm_port_timer_ticks(void) { return timer_ticks(); }

uint64_t utvm_port_timer_hz(void) { return timer_hz(); }

void utvm_port_reset(void) {
  __asm__ volatile("dsb" ::: "memory");
  SCB_AIRCR = (0x05FAu << 16) | (1u << 2); /* VECTKEY | SYSRESETREQ */
  __asm__ volatile("dsb" ::: "memory");
  for (;;) {
  }
}

void platform_exit(uint32_t status) {
  (void)irq_save();
#if UTVM_BOARD_SEMIHOSTING
  semihost_exit(status);
#else
  (void)status;
  for (;;) {
    __asm__ volatile("wfi");
  }
#endif
}

void utvm_port_abort(int32_t code) {
  /* Exit statuses are 8 bits; anything that would read as success or wrap becomes 255. */
  platform_exit((code > 0 && code < 256) ? (uint32_t)code : 255u);
}

const char *utvm_port_board_name(void) { return UTVM_BOARD_NAME; }
