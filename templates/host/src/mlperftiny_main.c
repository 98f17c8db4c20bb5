/*
 * mlperftiny: the MLPerf Tiny runner's device under test on stdin/stdout. The project's server
 * puts it on a pseudo-terminal (`utvm pty`), since the runner opens a serial device by path.
 */
#define _POSIX_C_SOURCE 200809L

#include <signal.h>

#include "mlperftiny.h"
#include "utvm/plan.h"
#include "utvm_posix.h"

int main(int argc, char **argv) {
  (void)argc;
  utvm_posix_set_argv(argv);
  /* A runner that went away ends serve() through a write error, not a signal. */
  signal(SIGPIPE, SIG_IGN);
  utvm_plan_init();
  /* Serves until stdin closes. */
  (void)utvm_mlperf_serve();
  return 0;
}
