/*
 * The port: the few things the runtime needs from a platform. Each template
 * implements these in one C file (POSIX stdio, a CMSDK UART, a Zephyr UART...).
 */
#ifndef UTVM_PORT_H_
#define UTVM_PORT_H_

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Write all `n` bytes (blocking). Returns 0, or a negative value if the link is gone. */
int32_t utvm_port_write(const uint8_t *data, uint32_t n);

/* Read up to `n` bytes, blocking until at least one is available.
 * Returns the count read (>= 1), or a negative value on end of file / link error. */
int32_t utvm_port_read(uint8_t *buf, uint32_t n);

/* A free-running counter and its frequency in Hz (cycle counter, SysTick, clock_gettime). */
uint64_t utvm_port_timer_ticks(void);
uint64_t utvm_port_timer_hz(void);

/* Reboot the device (the host sees a reboot announcement afterwards). */
void utvm_port_reset(void);

/* Unrecoverable failure: stop, with a code for whoever is watching. Never returns. */
void utvm_port_abort(int32_t code);

/* A short board name reported in device info (e.g. "host", "mps2_an386"). */
const char *utvm_port_board_name(void);

#ifdef __cplusplus
}
#endif

#endif /* UTVM_PORT_H_ */
