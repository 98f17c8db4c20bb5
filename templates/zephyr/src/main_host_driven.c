/* host_driven: utvm's runtime serves the host over the board's UART. */
#include <zephyr/kernel.h>

#include "utvm/port.h"
#include "utvm/runtime.h"
#include "utvm_zephyr.h"

int main(void) {
  if (utvm_zephyr_init() != 0) {
    utvm_port_abort(1);
  }
  utvm_runtime_init();
  /* A UART never reports the link closed, so this serves until reset. */
  return (int)utvm_runtime_serve();
}
