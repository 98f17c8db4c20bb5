/*
 * The utvm device runtime's port for Arduino (utvm/port.h): the link is Serial at the board's baud
 * rate; the timer counts CPU cycles on AVR (Timer1 without a prescaler, extended to 64 bits by its
 * overflow interrupt) and microseconds elsewhere (micros(), extended past its 32-bit wrap).
 * Reset is the watchdog on AVR and the core's system reset on Arm.
 */
#include <Arduino.h>

extern "C" {
#include "../include/utvm/port.h"
#include "../include/utvm/runtime.h"
}
#include "utvm_arduino.h"
#include "utvm_port_config.h"

#if defined(__AVR__)
#include <avr/interrupt.h>
#include <avr/sleep.h>
#include <avr/wdt.h>
#endif

/* Counts boots (garbage at power-on, which is fine): each boot starts the clock at a different
 * origin, so a simulator's identical boots still give the runtime different boot nonces. */
#if defined(__AVR__)
__attribute__((section(".noinit"))) static uint32_t boot_count;
#else
static uint32_t boot_count;
#endif
static uint64_t clock_origin;

#if defined(__AVR__)
/* The watchdog stays armed across the reset it caused: turn it off before anything else runs. */
extern "C" void utvm_arduino_watchdog_off(void) __attribute__((naked, used, section(".init3")));
extern "C" void utvm_arduino_watchdog_off(void) {
  MCUSR = 0;
  wdt_disable();
}

static volatile uint32_t timer_wraps;

ISR(TIMER1_OVF_vect) { timer_wraps++; }

static void timer_begin(void) {
  TCCR1A = 0;
  TCCR1B = 0;
  TCNT1 = 0;
  TIFR1 = _BV(TOV1);
  TIMSK1 = _BV(TOIE1);
  TCCR1B = _BV(CS10); /* the CPU clock, undivided: one tick per cycle */
}

static uint64_t timer_now(void) {
  uint8_t sreg = SREG;
  cli();
  uint16_t count = TCNT1;
  uint32_t wraps = timer_wraps;
  /* An overflow not yet serviced: the count wrapped after the interrupts went off. */
  if ((TIFR1 & _BV(TOV1)) != 0 && count < 0x8000u) {
    wraps++;
  }
  SREG = sreg;
  return ((uint64_t)wraps << 16) | count;
}

static uint64_t timer_hz(void) { return F_CPU; }

/* Nothing to do until a byte arrives. The core is not put to sleep: qemu-system-avr never wakes it
 * again, and under simavr a sleeping core only slows the simulation down to real time. */
static void idle(void) {}
#else
static uint32_t micros_last;
static uint32_t micros_wraps;

static void timer_begin(void) {
  micros_last = micros();
  micros_wraps = 0;
}

static uint64_t timer_now(void) {
  noInterrupts();
  uint32_t now = micros();
  if (now < micros_last) {
    micros_wraps++;
  }
  micros_last = now;
  uint64_t ticks = ((uint64_t)micros_wraps << 32) | now;
  interrupts();
  return ticks;
}

static uint64_t timer_hz(void) { return 1000000u; }

static void idle(void) { yield(); }
#endif

void utvm_arduino_begin(void) {
  Serial.begin(UTVM_ARDUINO_BAUD);
  timer_begin();
  boot_count++;
  clock_origin = (uint64_t)(boot_count & 0xFFFFu) << 40;
}

void utvm_arduino_serve(void) {
  utvm_runtime_init();
  for (;;) {
    utvm_runtime_serve();
  }
}

void utvm_arduino_halt(void) {
  Serial.flush();
#if defined(__AVR__)
  cli();
  set_sleep_mode(SLEEP_MODE_PWR_DOWN);
  sleep_enable();
  for (;;) {
    sleep_cpu();
  }
#else
  noInterrupts();
  for (;;) {
  }
#endif
}

extern "C" int32_t utvm_port_write(const uint8_t *data, uint32_t n) {
  while (n > 0u) {
    size_t sent = Serial.write(data, n > 0x7FFFu ? 0x7FFFu : (size_t)n);
    data += sent;
    n -= (uint32_t)sent;
  }
  return 0;
}

extern "C" int32_t utvm_port_read(uint8_t *buf, uint32_t n) {
  uint32_t got = 0;
  if (n == 0u) {
    return 0;
  }
  while (Serial.available() <= 0) {
    idle();
  }
  while (got < n && Serial.available() > 0) {
    buf[got++] = (uint8_t)Serial.read();
  }
  return (int32_t)got;
}

extern "C" uint64_t utvm_port_timer_ticks(void) { return clock_origin + timer_now(); }

extern "C" uint64_t utvm_port_timer_hz(void) { return timer_hz(); }

extern "C" void utvm_port_reset(void) {
  Serial.flush();
#if defined(__AVR__)
  cli();
  wdt_enable(WDTO_15MS);
  for (;;) {
  }
#elif defined(ARDUINO_ARCH_RP2040)
  rp2040.reboot();
#else
  NVIC_SystemReset(); /* CMSIS, on the Arm cores (mbed, SAM) */
#endif
}

extern "C" void utvm_port_abort(int32_t code) {
  (void)code;
  utvm_arduino_halt();
}

extern "C" const char *utvm_port_board_name(void) { return UTVM_ARDUINO_BOARD; }
