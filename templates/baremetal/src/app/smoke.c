/*
 * The shape of an aot_standalone run without a model: print over the UART, report the
 * cycle count of some work, then leave through semihosting with a known status (QEMU
 * returns it as its exit status).
 */
#include <stdint.h>

#include "console.h"
#include "platform.h"
#include "utvm/port.h"

#define SMOKE_EXIT_STATUS 0u

int main(void) {
  platform_init();
  console_put("utvm smoke on ");
  console_put(utvm_port_board_name());
  console_put("\n");
  uint64_t start = utvm_port_timer_ticks();
  volatile uint32_t acc = 0;
  for (uint32_t i = 0; i < 1000u; i++) {
    acc += i * i;
  }
  uint64_t cycles = utvm_port_timer_ticks() - start;
  console_put("sum ");
  console_put_u64(acc);
  console_put("\ncycles ");
  console_put_u64(cycles);
  console_put("\n");
  platform_exit(SMOKE_EXIT_STATUS);
}
