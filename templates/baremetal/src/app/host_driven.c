/* host_driven: the device runtime serving the host over the UART. */
#include "platform.h"
#include "utvm/runtime.h"

int main(void) {
  platform_init();
  utvm_runtime_init();
  /* Serves until the link reports an error, which a UART never does. */
  return (int)utvm_runtime_serve();
}
