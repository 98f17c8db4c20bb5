/*
 * Arm semihosting: the BKPT 0xAB call that a debugger or QEMU
 * (-semihosting-config enable=on,target=native) services. Without one attached, BKPT
 * locks the core up, so only boards that set UTVM_BOARD_SEMIHOSTING call this.
 */
#include "platform.h"

#define SYS_EXIT 0x18u
#define SYS_EXIT_EXTENDED 0x20u
#define ADP_STOPPED_APPLICATION_EXIT 0x20026u
#define ADP_STOPPED_RUNTIME_ERROR_UNKNOWN 0x20023u

static uint32_t semihost_call(uint32_t op, const void *arg) {
  register uint32_t r0 __asm__("r0") = op;
  register const void *r1 __asm__("r1") = arg;
  __asm__ volatile("bkpt 0xAB" : "+r"(r0) : "r"(r1) : "memory");
  return r0;
}

void semihost_exit(uint32_t status) {
  /* SYS_EXIT_EXTENDED carries the status; plain SYS_EXIT (the fallback when the host does
   * not know the extended call) can only say success or failure. */
  const uint32_t block[2] = {ADP_STOPPED_APPLICATION_EXIT, status};
  semihost_call(SYS_EXIT_EXTENDED, block);
  semihost_call(SYS_EXIT, (const void *)(uintptr_t)(status == 0u ? ADP_STOPPED_APPLICATION_EXIT
                                                                  : ADP_STOPPED_RUNTIME_ERROR_UNKNOWN));
  for (;;) {
  }
}
