/* Boards whose core clock is fixed from power-on (the MPS2 FPGA images): nothing to set up. */
#include "platform.h"

void clock_init(void) {}

uint32_t clock_core_hz(void) { return UTVM_BOARD_CLOCK_HZ; }
