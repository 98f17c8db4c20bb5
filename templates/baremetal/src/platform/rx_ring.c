#include "rx_ring.h"

#include "platform.h"

uint32_t rx_ring_read(rx_ring_t *ring, uint8_t *buf, uint32_t n, void (*rearm)(void)) {
  uint32_t primask = irq_save();
  for (;;) {
    /* A byte that came while the interrupt was off may have raised none, so it is picked up by
     * hand here. */
    rearm();
    if (ring->head != ring->tail) {
      break;
    }
    /* Sleep with interrupts masked: a pending receive interrupt still wakes the core, and it runs
     * as soon as the mask drops, so no wake-up is lost between the check and the WFI. */
    __asm__ volatile("wfi" ::: "memory");
    irq_restore(0u);
    (void)irq_save();
  }
  uint32_t count = 0;
  while (count < n && ring->tail != ring->head) {
    buf[count++] = ring->bytes[ring->tail & (ring->size - 1u)];
    ring->tail++;
  }
  rearm();
  irq_restore(primask);
  return count;
}
