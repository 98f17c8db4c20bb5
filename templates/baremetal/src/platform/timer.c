/*
 * The runtime's clock. The DWT cycle counter is used where it counts (real Cortex-M3/M4/M7
 * silicon); QEMU's DWT reads as zero, so there the SysTick down-counter is extended to
 * 64 bits by counting its wraps in the SysTick interrupt. Both tick at the core clock.
 * Under QEMU without -icount the SysTick follows the host's clock, and for a moment after each
 * wrap it reads 0 until the emulator services it: readings stay monotonic but are not exact.
 */
#include "platform.h"

#define SYST_CSR REG32(0xE000E010u)
#define SYST_RVR REG32(0xE000E014u)
#define SYST_CVR REG32(0xE000E018u)
#define SYST_CSR_ENABLE (1u << 0)
#define SYST_CSR_TICKINT (1u << 1)
#define SYST_CSR_CLKSOURCE_CPU (1u << 2)
#define SYST_RELOAD 0x00FFFFFFu
#define ICSR_PENDSTSET (1u << 26)

#define DWT_CTRL REG32(0xE0001000u)
#define DWT_CYCCNT REG32(0xE0001004u)
#define DEMCR_TRCENA (1u << 24)
#define DWT_CTRL_CYCCNTENA (1u << 0)

/* Counts boots (garbage at power-on, which is fine): each boot starts the clock at a different
 * origin, so a device under a deterministic emulator (QEMU -icount) never repeats the timer
 * readings, and with them the runtime's boot nonce, from one boot to the next. */
__attribute__((section(".noinit"))) static uint32_t boot_count;
#define BOOT_ORIGIN_SHIFT 40 /* 2^40 ticks: hours at any core clock */

static uint64_t origin;
static volatile uint32_t systick_wraps;
static uint32_t use_dwt;
static uint32_t dwt_last;
static uint32_t dwt_high;

static uint32_t dwt_start(void) {
#if defined(__ARM_ARCH_7M__) || defined(__ARM_ARCH_7EM__) || defined(__ARM_ARCH_8M_MAIN__)
  SCB_DEMCR |= DEMCR_TRCENA;
  DWT_CYCCNT = 0u;
  DWT_CTRL |= DWT_CTRL_CYCCNTENA;
  uint32_t first = DWT_CYCCNT;
  for (volatile uint32_t i = 0; i < 64u; i++) {
  }
  return DWT_CYCCNT != first;
#else
  return 0u; /* no cycle counter on Armv6-M / Armv8-M Baseline */
#endif
}

void timer_init(void) {
  boot_count++;
  origin = (uint64_t)(boot_count & 0xFFFFu) << BOOT_ORIGIN_SHIFT;
  systick_wraps = 0u;
  dwt_last = dwt_high = 0u;
  SYST_RVR = SYST_RELOAD;
  SYST_CVR = 0u;
  SYST_CSR = SYST_CSR_ENABLE | SYST_CSR_TICKINT | SYST_CSR_CLKSOURCE_CPU;
  /* Started from 0, the counter reloads on the next tick on silicon, but under QEMU only once
   * the emulator's main loop gets round to it (milliseconds); until then it reads 0 and time
   * would stand still. Wait for the reload, boundedly. */
  for (uint32_t spins = 0; spins < (1u << 26) && SYST_CVR == 0u; spins++) {
  }
  use_dwt = dwt_start();
}

uint64_t timer_ticks(void) {
  uint32_t primask = irq_save();
  uint64_t ticks;
  if (use_dwt) {
    /* The SysTick interrupt samples this often enough (every 2^24 cycles) to see each wrap. */
    uint32_t now = DWT_CYCCNT;
    if (now < dwt_last) {
      dwt_high++;
    }
    dwt_last = now;
    ticks = ((uint64_t)dwt_high << 32) | now;
  } else {
    uint32_t wraps = systick_wraps;
    uint32_t value = SYST_CVR;
    if (SCB_ICSR & ICSR_PENDSTSET) {
      /* Wrapped after interrupts were masked: count it and read past the wrap. */
      wraps++;
      value = SYST_CVR;
    }
    ticks = (uint64_t)wraps * (SYST_RELOAD + 1u) + (SYST_RELOAD - value);
  }
  irq_restore(primask);
  return origin + ticks;
}

void SysTick_Handler(void) {
  systick_wraps++;
  if (use_dwt) {
    (void)timer_ticks();
  }
}

uint64_t timer_hz(void) { return clock_core_hz(); }

const char *timer_source(void) { return use_dwt ? "dwt" : "systick"; }
