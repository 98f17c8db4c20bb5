/*
 * A port for builds with no link: writes are kept in `stub_port_wire` (the
 * last STUB_PORT_WIRE_BYTES at most), reads report end of file, the timer is
 * stopped. Used by the C checks and the Cortex-M code-size build.
 */
#include <string.h>

#include "stub_port.h"
#include "utvm/port.h"

uint8_t stub_port_wire[STUB_PORT_WIRE_BYTES];
uint32_t stub_port_wire_len;

int32_t utvm_port_write(const uint8_t *data, uint32_t n) {
  if (n > STUB_PORT_WIRE_BYTES - stub_port_wire_len) {
    return -1;
  }
  memcpy(stub_port_wire + stub_port_wire_len, data, n);
  stub_port_wire_len += n;
  return 0;
}

int32_t utvm_port_read(uint8_t *buf, uint32_t n) {
  (void)buf;
  (void)n;
  return -1;
}

uint64_t utvm_port_timer_ticks(void) { return 0; }
uint64_t utvm_port_timer_hz(void) { return 1; }
void utvm_port_reset(void) {}

void utvm_port_abort(int32_t code) {
  (void)code;
  for (;;) {
  }
}

const char *utvm_port_board_name(void) { return "stub"; }
