/*
 * utvm/port.h on Zephyr 4.x.
 *
 * Link: the UART named by the devicetree's chosen `utvm,uart` (each board's overlay points it at the
 * console UART). Bytes arrive through the interrupt-driven API into a ring buffer and wake the reader
 * with a semaphore; bytes leave through uart_poll_out. The ring holds the largest framed request
 * twice over (every byte escaped, plus flags and CRC), so at the protocol's packet size nothing is
 * lost while the runtime is busy with the previous packet: the host sends one request at a time.
 *
 * Timer: the kernel's cycle counter. k_cycle_get_64 where the system timer has 64 bits; elsewhere
 * k_cycle_get_32 extended to 64 bits by counting its wraps, which a kernel timer checks several
 * times per wrap period so that none is missed however long a model runs. The frequency is the
 * kernel's, sys_clock_hw_cycles_per_sec(). (Converting to nanoseconds on the device with
 * k_cyc_to_ns_floor64 would overflow its 64-bit intermediate after minutes of uptime on a fast
 * core; the host divides instead.)
 *
 * Reset: sys_reboot(SYS_REBOOT_COLD). A boot counter kept in RAM that survives the reset shifts the
 * timer's origin on each boot, so a rebooted board never repeats the boot nonce the host checks.
 */
#include <stdbool.h>

#include <zephyr/device.h>
#include <zephyr/devicetree.h>
#include <zephyr/drivers/uart.h>
#include <zephyr/kernel.h>
#include <zephyr/sys/reboot.h>
#include <zephyr/sys/ring_buffer.h>

#include "utvm/config.h"
#include "utvm/port.h"
#include "utvm_zephyr.h"

#if !DT_HAS_CHOSEN(utvm_uart)
#error "the devicetree has no chosen utvm,uart; the board's overlay in boards/ sets it"
#endif

#ifndef UTVM_BOARD_NAME
#define UTVM_BOARD_NAME CONFIG_BOARD
#endif

/* Largest frame on the wire: FLAG, packet and 2-byte CRC with every byte escaped, FLAG. */
#define UTVM_ZEPHYR_MAX_FRAME (2u * (UTVM_MAX_PACKET + 2u) + 2u)
#define UTVM_ZEPHYR_RX_RING (2u * UTVM_ZEPHYR_MAX_FRAME)

static const struct device *const uart = DEVICE_DT_GET(DT_CHOSEN(utvm_uart));

RING_BUF_DECLARE(rx_ring, UTVM_ZEPHYR_RX_RING);
static K_SEM_DEFINE(rx_ready, 0, 1);
static volatile uint32_t rx_dropped;

static void uart_isr(const struct device *dev, void *user_data) {
  ARG_UNUSED(user_data);
  if (uart_irq_update(dev) <= 0 || uart_irq_rx_ready(dev) <= 0) {
    return;
  }
  bool received = false;
  for (;;) {
    uint8_t *room;
    uint32_t space = ring_buf_put_claim(&rx_ring, &room, UTVM_ZEPHYR_RX_RING);
    if (space == 0u) {
      /* Full: empty the FIFO so the interrupt clears; the framer resynchronises on what follows. */
      uint8_t scrap[16];
      int n = uart_fifo_read(dev, scrap, sizeof(scrap));
      if (n <= 0) {
        break;
      }
      rx_dropped += (uint32_t)n;
      continue;
    }
    int n = uart_fifo_read(dev, room, (int)space);
    (void)ring_buf_put_finish(&rx_ring, n > 0 ? (uint32_t)n : 0u);
    if (n <= 0) {
      break;
    }
    received = true;
  }
  if (received) {
    k_sem_give(&rx_ready);
  }
}

/* ---- timer ---- */

/* Survives sys_reboot (not zeroed at boot): counts boots to shift the timer's origin. */
static __noinit uint32_t boot_magic;
static __noinit uint32_t boot_count;
#define BOOT_MAGIC 0x7574766du /* "utvm" */

#ifndef CONFIG_TIMER_HAS_64BIT_CYCLE_COUNTER
static struct k_spinlock cycle_lock;
static uint32_t cycle_last;
static uint64_t cycle_high;

static uint64_t cycles64(void) {
  k_spinlock_key_t key = k_spin_lock(&cycle_lock);
  uint32_t now = k_cycle_get_32();
  if (now < cycle_last) {
    cycle_high += (uint64_t)1 << 32;
  }
  cycle_last = now;
  uint64_t value = cycle_high | now;
  k_spin_unlock(&cycle_lock, key);
  return value;
}

static void wrap_watch(struct k_timer *timer) {
  ARG_UNUSED(timer);
  (void)cycles64();
}

static K_TIMER_DEFINE(wrap_timer, wrap_watch, NULL);
#else
static uint64_t cycles64(void) { return k_cycle_get_64(); }
#endif

/* ---- utvm/port.h ---- */

int utvm_zephyr_init(void) {
  if (boot_magic != BOOT_MAGIC) {
    boot_magic = BOOT_MAGIC;
    boot_count = 0u;
  }
  boot_count++;
#ifndef CONFIG_TIMER_HAS_64BIT_CYCLE_COUNTER
  /* Four looks per wrap of the 32-bit counter (at least one a second). */
  uint64_t wrap_ms = ((uint64_t)1000u << 32) / (uint64_t)sys_clock_hw_cycles_per_sec();
  uint64_t period_ms = wrap_ms / 4u;
  if (period_ms == 0u || period_ms > 1000u) {
    period_ms = period_ms == 0u ? 1u : 1000u;
  }
  k_timer_start(&wrap_timer, K_MSEC(period_ms), K_MSEC(period_ms));
#endif
  if (!device_is_ready(uart)) {
    return -ENODEV;
  }
  uart_irq_rx_disable(uart);
  uart_irq_tx_disable(uart);
  int err = uart_irq_callback_user_data_set(uart, uart_isr, NULL);
  if (err != 0) {
    return err;
  }
  uart_irq_rx_enable(uart);
  return 0;
}

uint32_t utvm_zephyr_rx_dropped(void) { return rx_dropped; }

int32_t utvm_port_write(const uint8_t *data, uint32_t n) {
  for (uint32_t i = 0; i < n; i++) {
    uart_poll_out(uart, data[i]);
  }
  return 0;
}

int32_t utvm_port_read(uint8_t *buf, uint32_t n) {
  if (n == 0u) {
    return 0;
  }
  for (;;) {
    /* The ring's consumer side, kept apart from the receive interrupt (its producer). */
    unsigned int key = irq_lock();
    uint32_t got = ring_buf_get(&rx_ring, buf, n);
    irq_unlock(key);
    if (got > 0u) {
      return (int32_t)got;
    }
    (void)k_sem_take(&rx_ready, K_FOREVER);
  }
}

uint64_t utvm_port_timer_ticks(void) { return cycles64() + ((uint64_t)boot_count << 40); }

uint64_t utvm_port_timer_hz(void) { return (uint64_t)sys_clock_hw_cycles_per_sec(); }

void utvm_port_reset(void) {
  /* The reply to RESET left through uart_poll_out, which returns once each byte is in the UART. */
  k_busy_wait(2000);
  sys_reboot(SYS_REBOOT_COLD);
}

void utvm_port_abort(int32_t code) {
  ARG_UNUSED(code);
  /* Stop here; a host watching the link sees it fall silent, a debugger sees where. */
  (void)irq_lock();
  for (;;) {
  }
}

const char *utvm_port_board_name(void) { return UTVM_BOARD_NAME; }
