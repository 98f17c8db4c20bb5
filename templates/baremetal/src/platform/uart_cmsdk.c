/*
 * Arm CMSDK APB UART (MPS2 boards). Transmit polls; receive is interrupt driven into a ring
 * buffer so the core can sleep (WFI) while it waits for the host. When the ring is full the
 * receive interrupt is switched off and the byte stays in the UART, which under QEMU holds the
 * socket back: no byte is ever dropped.
 */
#include "platform.h"
#include "rx_ring.h"

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
static rx_ring_t ring = {rx_ring, RX_RING_BYTES, 0u, 0u};

void uart_init(void) {
  ring.head = ring.tail = 0u;
  /* The CMSDK UART needs a divider of at least 16. */
  UART->bauddiv = UTVM_BOARD_CLOCK_HZ / UTVM_BOARD_BAUD;
  UART->ctrl = CTRL_TX_EN | CTRL_RX_EN | CTRL_RX_INT_EN;
  NVIC_ISER(UTVM_BOARD_UART_RX_IRQ / 32u) = 1u << (UTVM_BOARD_UART_RX_IRQ % 32u);
}

/* Move received bytes into the ring; with the ring full, switch the receive interrupt off. */
static void rx_drain(void) {
  while (UART->state & STATE_RX_FULL) {
    if (rx_ring_full(&ring)) {
      UART->ctrl &= ~CTRL_RX_INT_EN;
      return;
    }
    rx_ring_put(&ring, (uint8_t)UART->data);
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

/* The UART latches its interrupt on arrival only: a byte that came while it was off raised none. */
static void rearm(void) {
  UART->ctrl |= CTRL_RX_INT_EN;
  rx_drain();
}

uint32_t uart_read(uint8_t *buf, uint32_t n) { return rx_ring_read(&ring, buf, n, rearm); }
