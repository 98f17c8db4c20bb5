/*
 * Arm CMSDK APB UART (MPS2 boards). Transmit polls; receive is interrupt driven into a ring
 * buffer so the core can sleep (WFI) while it waits for the host. When the ring is full the
 * receive interrupt is switched off and the byte stays in the UART, which under QEMU holds the
 * socket back: no byte is ever dropped.
 */
#include "platform.h"

typedef struct {
  volatile uint32_t data;
  volatile uint32_t state;
  volatile uint32_t ctrl;
  volatile uint32_t intstatus; /* write 1 to clear */
  volatile uint32_t bauddiv;
} cmsdk_uart_t;

#define UART ((cmsdk_uart_t *)(uintptr_t)UTVM_BOARD_UART_BASE)

#define STATE_TX_FULL (1u << 0)
#define STATE_RX_FULL (1u << 1)
#define CTRL_TX_EN (1u << 0)
#define CTRL_RX_EN (1u << 1)
#define CTRL_RX_INT_EN (1u << 3)
#define INT_RX (1u << 1)

#define RX_RING_BYTES 256u /* a power of two */

static volatile uint8_t rx_ring[RX_RING_BYTES];
static volatile uint32_t rx_head; /* written by the ISR */
static volatile uint32_t rx_tail; /* written by uart_read */

void uart_init(void) {
  rx_head = rx_tail = 0u;
  /* The CMSDK UART needs a divider of at least 16. */
  UART->bauddiv = UTVM_BOARD_CLOCK_HZ / UTVM_BOARD_BAUD;
  UART->ctrl = CTRL_TX_EN | CTRL_RX_EN | CTRL_RX_INT_EN;
  NVIC_ISER(UTVM_BOARD_UART_RX_IRQ / 32u) = 1u << (UTVM_BOARD_UART_RX_IRQ % 32u);
}

/* Move received bytes into the ring; with the ring full, switch the receive interrupt off. */
static void rx_drain(void) {
  while (UART->state & STATE_RX_FULL) {
    if (rx_head - rx_tail == RX_RING_BYTES) {
      UART->ctrl &= ~CTRL_RX_INT_EN;
      return;
    }
    rx_ring[rx_head % RX_RING_BYTES] = (uint8_t)UART->data;
    rx_head++;
  }
}

void uart_isr(void) {
  /* Clear first: a byte landing after the last RXFULL check raises the interrupt again. */
  UART->intstatus = INT_RX;
  rx_drain();
}

void uart_write(const uint8_t *data, uint32_t n) {
  for (uint32_t i = 0; i < n; i++) {
    while (UART->state & STATE_TX_FULL) {
    }
    UART->data = data[i];
  }
}

uint32_t uart_read(uint8_t *buf, uint32_t n) {
  uint32_t primask = irq_save();
  for (;;) {
    /* A byte that came while the interrupt was off raised no interrupt (the UART latches the
     * interrupt on arrival only), so turn it back on and pick such a byte up by hand. */
    UART->ctrl |= CTRL_RX_INT_EN;
    rx_drain();
    if (rx_head != rx_tail) {
      break;
    }
    /* Sleep with interrupts masked: a pending RX interrupt still wakes the core, and it runs
     * as soon as the mask drops, so no wake-up is lost between the check and the WFI. */
    __asm__ volatile("wfi" ::: "memory");
    irq_restore(0u);
    (void)irq_save();
  }
  uint32_t count = 0;
  while (count < n && rx_tail != rx_head) {
    buf[count++] = rx_ring[rx_tail % RX_RING_BYTES];
    rx_tail++;
  }
  UART->ctrl |= CTRL_RX_INT_EN;
  rx_drain();
  irq_restore(primask);
  return count;
}
