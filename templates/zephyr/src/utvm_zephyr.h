/* The Zephyr port of utvm's runtime (utvm/port.h): what the application's main needs besides it. */
#ifndef UTVM_ZEPHYR_H_
#define UTVM_ZEPHYR_H_

#include <stdint.h>

/* Take over the devicetree's `utvm,uart` (receive interrupt into a ring buffer) and start the
 * timer's wrap watch. Returns 0, or a negative errno when the UART is not ready. */
int utvm_zephyr_init(void);

/* Bytes the receive ring dropped because it was full (0 while the host keeps to one request at a
 * time, which the ring is sized for). */
uint32_t utvm_zephyr_rx_dropped(void);

#endif /* UTVM_ZEPHYR_H_ */
