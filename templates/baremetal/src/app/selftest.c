/*
 * A firmware that exercises the port without the runtime, for the emulator tests.
 * On boot it prints "BOOT <board> <timer source> <timer hz>\n", then serves one-byte commands:
 *   'E' n b[n]  -> 'e' then the n bytes reversed and inverted (UART both ways, partial reads)
 *   'T'         -> "T t0 t1 t2 t3\n", timer readings around busy loops (monotonic, 64-bit)
 *   'W'         -> "W start end\n" once the timer has run past a 24-bit SysTick wrap, reading it
 *                  all the while ("W BAD\n" if it ever went backwards)
 *   'F'         -> "F <1000 * (1.5 * 2.25 + 1.5)>\n", computed with the FPU when there is one
 *   'U'         -> execute an undefined instruction (the fault handler exits with 128 + 3)
 *   'R'         -> reset (the board prints BOOT again)
 *   'X' status  -> utvm_port_abort(status), which exits QEMU through semihosting
 */
#include <stdint.h>

#include "console.h"
#include "platform.h"
#include "utvm/port.h"

static uint8_t get_byte(void) {
  uint8_t b;
  while (utvm_port_read(&b, 1) < 1) {
  }
  return b;
}

static void echo(void) {
  uint8_t buf[255];
  uint32_t n = get_byte(), got = 0;
  while (got < n) {
    int32_t r = utvm_port_read(buf + got, n - got);
    if (r < 1) {
      utvm_port_abort(3);
    }
    got += (uint32_t)r;
  }
  uint8_t out[256];
  out[0] = 'e';
  for (uint32_t i = 0; i < n; i++) {
    out[1u + i] = (uint8_t)~buf[n - 1u - i];
  }
  utvm_port_write(out, n + 1u);
}

static void timer_report(void) {
  console_put("T");
  for (int k = 0; k < 4; k++) {
    console_put(" ");
    console_put_u64(utvm_port_timer_ticks());
    for (volatile uint32_t i = 0; i < 20000u; i++) {
    }
  }
  console_put("\n");
}

static void wrap_check(void) {
  uint64_t start = utvm_port_timer_ticks(), prev = start, now;
  do {
    now = utvm_port_timer_ticks();
    if (now < prev) {
      console_put("W BAD\n");
      return;
    }
    prev = now;
  } while (now - start < (1ull << 24) + 1000u);
  console_put("W ");
  console_put_u64(start);
  console_put(" ");
  console_put_u64(now);
  console_put("\n");
}

static void fpu_report(void) {
  volatile float a = 1.5f, b = 2.25f;
  float c = a * b + a;
  volatile double d = (double)c * 1000.0;
  console_put("F ");
  console_put_u64((uint64_t)d);
  console_put("\n");
}

int main(void) {
  platform_init();
  console_put("BOOT ");
  console_put(utvm_port_board_name());
  console_put(" ");
  console_put(timer_source());
  console_put(" ");
  console_put_u64(utvm_port_timer_hz());
  console_put("\n");
  for (;;) {
    switch (get_byte()) {
      case 'E': echo(); break;
      case 'T': timer_report(); break;
      case 'W': wrap_check(); break;
      case 'F': fpu_report(); break;
      case 'U': __asm__ volatile("udf #0"); break;
      case 'R': utvm_port_reset(); break;
      case 'X': utvm_port_abort((int32_t)get_byte()); break;
      default: console_put("?\n"); break;
    }
  }
}
