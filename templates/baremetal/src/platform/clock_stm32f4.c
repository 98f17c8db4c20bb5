/*
 * STM32F4 clock tree. The safe default keeps the core on the 16 MHz HSI oscillator it boots from,
 * with every bus undivided and no flash wait states. With the PLL (the project's `pll` option) the
 * core runs at the board's clock_hz from HSI / M x N / P, with the record's bus dividers and flash
 * wait states set first. Every wait for a ready bit is bounded: if one never comes (a faulty part, or
 * an emulator without the RCC, where reads return 0) the core stays on the HSI and clock_core_hz()
 * says so, so the timer and the baud rate stay right.
 *
 * The PLL's code is built in only when the project asks for it.
 *
 * Under QEMU (rcc_modelled = 0) the RCC is not there at all: the clock is left alone and taken as
 * UTVM_BOARD_CLOCK_HZ, the emulator's fixed core clock.
 */
#include "stm32f4.h"

/* About 15 ms at 16 MHz; a PLL locks in well under 1 ms. */
#define CLOCK_WAIT_SPINS 50000u

/* RCC_CFGR PPREx encodings: 0 undivided, 4 + k divides by 2^(k+1). */
#define PPRE(shift) ((shift) == 0u ? 0u : 3u + (shift))
#define FLASH_ACR_PRFTEN (1u << 8)
#define FLASH_ACR_ICEN (1u << 9)
#define FLASH_ACR_DCEN (1u << 10)

typedef struct {
  uint32_t hsi_hz;          /* the clock at reset */
  uint32_t target_hz;       /* the core clock the image is built for (the HSI's, the PLL's or QEMU's) */
  uint32_t use_pll;         /* run from the PLL */
  uint32_t rcc_modelled;    /* 0 under an emulator without the RCC: leave the clock alone */
  uint32_t pllcfgr;         /* PLLM, PLLN, PLLP, PLLQ; PLLSRC = HSI */
  uint32_t cfgr_prescalers; /* HPRE, PPRE1, PPRE2 for the PLL clock */
  uint32_t flash_acr;       /* wait states, prefetch and caches for the PLL clock */
  uint32_t apb_shift[2];    /* APB1 and APB2 run at the core clock >> shift (with the PLL) */
} stm32_clock_setup_t;

/* In flash, and read at run time through a volatile pointer (never folded into the code), so the
 * image carries the setup where tools can read it back (tests decode it with arm-none-eabi-objdump). */
__attribute__((used)) const stm32_clock_setup_t utvm_stm32_clock = {
    .hsi_hz = UTVM_STM32_HSI_HZ,
    .target_hz = UTVM_BOARD_CLOCK_HZ,
    .use_pll = UTVM_STM32_USE_PLL,
    .rcc_modelled = UTVM_STM32_RCC_MODELLED,
    .pllcfgr = UTVM_STM32_PLL_M | (UTVM_STM32_PLL_N << 6) | ((UTVM_STM32_PLL_P / 2u - 1u) << 16) |
               (UTVM_STM32_PLL_Q << 24),
    .cfgr_prescalers = (PPRE(UTVM_STM32_APB1_SHIFT) << 10) | (PPRE(UTVM_STM32_APB2_SHIFT) << 13),
    .flash_acr = UTVM_STM32_FLASH_LATENCY | FLASH_ACR_PRFTEN | FLASH_ACR_ICEN | FLASH_ACR_DCEN,
    .apb_shift = {UTVM_STM32_APB1_SHIFT, UTVM_STM32_APB2_SHIFT},
};

#define SETUP ((const volatile stm32_clock_setup_t *)&utvm_stm32_clock)

static uint32_t core_hz = UTVM_BOARD_CLOCK_HZ;
static uint32_t apb_hz[2] = {UTVM_BOARD_CLOCK_HZ, UTVM_BOARD_CLOCK_HZ};

static int wait_for(volatile uint32_t *reg, uint32_t mask, uint32_t want) {
  for (uint32_t spins = 0; spins < CLOCK_WAIT_SPINS; spins++) {
    if ((*reg & mask) == want) {
      return 1;
    }
  }
  return 0;
}

static int switch_to(uint32_t sw) {
  RCC_CFGR = (RCC_CFGR & ~RCC_CFGR_SW) | sw;
  return wait_for(&RCC_CFGR, RCC_CFGR_SW << RCC_CFGR_SWS_SHIFT, sw << RCC_CFGR_SWS_SHIFT);
}

/* The reset state of the clock tree: HSI, buses undivided, PLL off. Flash wait states are left as
 * they are: more than the clock needs are merely slow. */
static void use_hsi(void) {
  RCC_CR |= RCC_CR_HSION;
  (void)wait_for(&RCC_CR, RCC_CR_HSIRDY, RCC_CR_HSIRDY); /* on since reset: at once on silicon */
  (void)switch_to(RCC_CFGR_SW_HSI);
  RCC_CFGR &= ~RCC_CFGR_PRESCALERS;
  RCC_CR &= ~RCC_CR_PLLON;
  core_hz = apb_hz[0] = apb_hz[1] = SETUP->hsi_hz;
}

#if UTVM_STM32_USE_PLL
static int use_pll(void) {
  const volatile stm32_clock_setup_t *s = SETUP;
  /* Wait states first: the flash must keep up with the faster clock from its first cycle. */
  FLASH_ACR = s->flash_acr;
  if ((FLASH_ACR & FLASH_ACR_LATENCY) != (s->flash_acr & FLASH_ACR_LATENCY)) {
    return 0;
  }
  RCC_CFGR = (RCC_CFGR & ~RCC_CFGR_PRESCALERS) | s->cfgr_prescalers;
  RCC_CR &= ~RCC_CR_PLLON; /* the PLL takes a new setting only while it is off */
  if (!wait_for(&RCC_CR, RCC_CR_PLLRDY, 0u)) {
    return 0;
  }
  RCC_PLLCFGR = (RCC_PLLCFGR & ~RCC_PLLCFGR_FIELDS) | s->pllcfgr;
  RCC_CR |= RCC_CR_PLLON;
  if (!wait_for(&RCC_CR, RCC_CR_PLLRDY, RCC_CR_PLLRDY) || !switch_to(RCC_CFGR_SW_PLL)) {
    return 0;
  }
  core_hz = s->target_hz;
  apb_hz[0] = core_hz >> s->apb_shift[0];
  apb_hz[1] = core_hz >> s->apb_shift[1];
  return 1;
}
#endif

void clock_init(void) {
  const volatile stm32_clock_setup_t *s = SETUP;
  if (!s->rcc_modelled) {
    core_hz = s->target_hz;
    apb_hz[0] = core_hz >> s->apb_shift[0];
    apb_hz[1] = core_hz >> s->apb_shift[1];
    return;
  }
  use_hsi();
#if UTVM_STM32_USE_PLL
  if (s->use_pll && !use_pll()) {
    use_hsi(); /* no lock, or no switch: back to the clock that is sure to run */
  }
#endif
}

uint32_t clock_core_hz(void) { return core_hz; }

uint32_t stm32_apb_hz(uint32_t bus) { return apb_hz[bus == 2u ? 1 : 0]; }
