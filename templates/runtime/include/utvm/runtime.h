/*
 * The device runtime's entry points. A platform's main() is:
 *
 *     utvm_runtime_init();
 *     utvm_runtime_serve();
 *
 * The feed/handle functions let a fuzz harness (or a port that receives bytes
 * in an interrupt) push bytes or whole packets in without utvm_port_read.
 */
#ifndef UTVM_RUNTIME_H_
#define UTVM_RUNTIME_H_

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Set up the arena, backend and framer, check the model table, then announce
 * the boot to the host (ANNOUNCE packet and a LOG line). */
void utvm_runtime_init(void);

/* Read from the port and serve requests until the link closes; returns the
 * port's negative read result. */
int32_t utvm_runtime_serve(void);

/* Push received bytes (any slicing) through the framer and the dispatcher. */
void utvm_runtime_feed(const uint8_t *data, uint32_t n);

/* Handle one unframed packet (CRC already checked and stripped). */
void utvm_runtime_handle_packet(const uint8_t *packet, uint32_t len);

/* Send a LOG packet to the host (dropped above UTVM_LOG_LEVEL). Any code on the
 * device may call it, including kernels; text longer than UTVM_LOG_MAX_TEXT is cut. */
void utvm_log(uint8_t level, const char *text);

#ifdef __cplusplus
}
#endif

#endif /* UTVM_RUNTIME_H_ */
