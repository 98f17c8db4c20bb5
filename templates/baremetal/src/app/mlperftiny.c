/* mlperftiny: the MLPerf Tiny runner's device under test, on the UART. */
#include "mlperftiny.h"
#include "platform.h"
#include "utvm/plan.h"

int main(void) {
  platform_init();
  utvm_plan_init();
  /* Serves until the link reports an error, which a UART never does. */
  return (int)utvm_mlperf_serve();
}
