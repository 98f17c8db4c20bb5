/*
 * The receive ring every UART driver keeps: its interrupt handler puts bytes in, uart_read takes
 * them out, sleeping (WFI) while there are none. A driver whose ring fills switches its receive
 * interrupt off and leaves the byte in the UART; its rearm function switches the interrupt back on
 * and moves what waits in the UART into the ring.
 */
#ifndef UTVM_BAREMETAL_RX_RING_H_
#define UTVM_BAREMETAL_RX_RING_H_

#include <stdint.h>

typedef struct {
  volatile uint8_t *bytes;
  uint32_t size;          /* a power of two */
  volatile uint32_t head; /* written by the interrupt handler */
  volatile uint32_t tail; /* written by rx_ring_read */
} rx_ring_t;

static inline int rx_ring_full(const rx_ring_t *ring) { return ring->head - ring->tail == ring->size; }

static inline void rx_ring_put(rx_ring_t *ring, uint8_t byte) {
  ring->bytes[ring->head & (ring->size - 1u)] = byte;
  ring->head++;
}

/* Wait until the ring holds a byte, then take up to n; rearm runs with interrupts masked, before
 * each wait and after taking. */
uint32_t rx_ring_read(rx_ring_t *ring, uint8_t *buf, uint32_t n, void (*rearm)(void));

#endif /* UTVM_BAREMETAL_RX_RING_H_ */
