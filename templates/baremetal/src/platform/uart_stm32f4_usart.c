/*
 * STM32F4 USART (the SR / DR / BRR / CR1 register set of the F1, F2, F4 and L1 families), on the
 * pins and alternate function the board record names (the ST-LINK virtual COM port on a Nucleo).
 * Transmit polls; receive is interrupt driven into a ring buffer so the core can sleep (WFI) while
 * it waits for the host.
 *
 * When the ring is full the USART's interrupt is masked in the NVIC and the byte stays in DR: the
 * NVIC's mask holds whatever the USART (or QEMU's model of it) does with its line while RXNE stays
 * set. Under QEMU a byte left in DR holds the socket back, so nothing is lost; a physical USART has
 * no flow control on the virtual COM port and would overrun, but the host sends one request at a
 * time and the runtime takes bytes as they come.
 */
#include "rx_ring.h"
#include "stm32f4.h"

typedef struct {
  volatile uint32_t sr;
  volatile uint32_t dr;
  volatile uint32_t brr;
  volatile uint32_t cr1;
  volatile uint32_t cr2;
  volatile uint32_t cr3;
} stm32_usart_t;

#define SR_RXNE (1u << 5)
#define SR_TXE (1u << 7)
#define CR1_RE (1u << 2)
#define CR1_TE (1u << 3)
#define CR1_RXNEIE (1u << 5)
#define CR1_UE (1u << 13)

#define GPIO_MODE_AF 0x2u
#define GPIO_SPEED_FAST 0x2u
#define GPIO_PULL_NONE 0x0u
#define GPIO_PULL_UP 0x1u

typedef struct {
  uint32_t base;    /* the USART's registers */
  uint32_t bus;     /* 1: APB1, 2: APB2 (its clock, and the RCC register that enables it) */
  uint32_t rcc_bit; /* its enable bit in RCC_APB1ENR / RCC_APB2ENR */
  uint32_t baud;
  uint32_t tx_port, tx_pin; /* GPIO port (A = 0) and pin of TX */
  uint32_t rx_port, rx_pin;
  uint32_t af;              /* the pins' alternate function */
} stm32_usart_setup_t;

/* In flash, and read at run time through a volatile pointer (never folded into the code), so the
 * image carries the setup where tools can read it back (tests decode it with arm-none-eabi-objdump). */
__attribute__((used)) const stm32_usart_setup_t utvm_stm32_usart = {
    .base = UTVM_BOARD_UART_BASE,
    .bus = UTVM_STM32_UART_BUS,
    .rcc_bit = UTVM_STM32_UART_RCC_BIT,
    .baud = UTVM_BOARD_BAUD,
    .tx_port = UTVM_STM32_UART_TX_PORT,
    .tx_pin = UTVM_STM32_UART_TX_PIN,
    .rx_port = UTVM_STM32_UART_RX_PORT,
    .rx_pin = UTVM_STM32_UART_RX_PIN,
    .af = UTVM_STM32_UART_AF,
};

#define SETUP ((const volatile stm32_usart_setup_t *)&utvm_stm32_usart)
#define USART ((stm32_usart_t *)(uintptr_t)SETUP->base)
#define IRQ_BANK (UTVM_BOARD_UART_RX_IRQ / 32u)
#define IRQ_BIT (1u << (UTVM_BOARD_UART_RX_IRQ % 32u))

#define RX_RING_BYTES 1024u /* a power of two; twice UTVM_MAX_PACKET's default */

static volatile uint8_t rx_ring[RX_RING_BYTES];
static rx_ring_t ring = {rx_ring, RX_RING_BYTES, 0u, 0u};

static void set_field(volatile uint32_t *reg, uint32_t shift, uint32_t width_mask, uint32_t value) {
  *reg = (*reg & ~(width_mask << shift)) | (value << shift);
}

/* One pin to its alternate function. The port's clock first; the mode last, once the function
 * is chosen, so the pin never drives the wrong signal. */
static void pin_to_af(uint32_t port, uint32_t pin, uint32_t af, uint32_t pull) {
  RCC_AHB1ENR |= 1u << port;
  (void)RCC_AHB1ENR; /* the port's registers answer two bus cycles after its clock is on */
  set_field(&GPIO_AFR(port, pin), 4u * (pin % 8u), 0xFu, af);
  set_field(&GPIO_OSPEEDR(port), 2u * pin, 0x3u, GPIO_SPEED_FAST);
  set_field(&GPIO_PUPDR(port), 2u * pin, 0x3u, pull);
  set_field(&GPIO_MODER(port), 2u * pin, 0x3u, GPIO_MODE_AF);
}

void uart_init(void) {
  const volatile stm32_usart_setup_t *s = SETUP;
  ring.head = ring.tail = 0u;
  pin_to_af(s->tx_port, s->tx_pin, s->af, GPIO_PULL_NONE);
  pin_to_af(s->rx_port, s->rx_pin, s->af, GPIO_PULL_UP); /* an unplugged line idles high */
  if (s->bus == 2u) {
    RCC_APB2ENR |= 1u << s->rcc_bit;
    (void)RCC_APB2ENR;
  } else {
    RCC_APB1ENR |= 1u << s->rcc_bit;
    (void)RCC_APB1ENR;
  }
  USART->cr1 = 0u;
  USART->cr2 = 0u; /* one stop bit */
  USART->cr3 = 0u; /* no hardware flow control */
  /* Oversampling by 16: BRR is the bus clock over the baud rate, rounded. */
  uint32_t apb = stm32_apb_hz(s->bus);
  USART->brr = (apb + s->baud / 2u) / s->baud;
  USART->cr1 = CR1_UE | CR1_TE | CR1_RE | CR1_RXNEIE;
  NVIC_ISER(IRQ_BANK) = IRQ_BIT;
}

/* Move received bytes into the ring; with the ring full, mask the interrupt. */
static void rx_drain(void) {
  while (USART->sr & SR_RXNE) {
    if (rx_ring_full(&ring)) {
      NVIC_ICER(IRQ_BANK) = IRQ_BIT;
      return;
    }
    /* Reading SR then DR also clears an overrun or framing error. */
    rx_ring_put(&ring, (uint8_t)USART->dr);
  }
}

void uart_isr(void) { rx_drain(); }

void uart_write(const uint8_t *data, uint32_t n) {
  for (uint32_t i = 0; i < n; i++) {
    while (!(USART->sr & SR_TXE)) {
    }
    USART->dr = data[i];
  }
}

/* A byte waiting in DR keeps the interrupt pending: unmasked, it runs once interrupts are on. */
static void rearm(void) {
  NVIC_ISER(IRQ_BANK) = IRQ_BIT;
  rx_drain();
}

uint32_t uart_read(uint8_t *buf, uint32_t n) { return rx_ring_read(&ring, buf, n, rearm); }
