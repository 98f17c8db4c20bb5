/* A POSIX device: serve the host over stdin/stdout until it closes the pipe. */
#define _POSIX_C_SOURCE 200809L

#include <signal.h>

#include "utvm/runtime.h"
#include "utvm_posix.h"

int main(int argc, char **argv) {
  (void)argc;
  utvm_posix_set_argv(argv);
  /* A host that went away must end serve() through a write error, not a signal; while the
   * device is busy, the watch ends it. */
  signal(SIGPIPE, SIG_IGN);
  utvm_posix_watch_host();
  utvm_runtime_init();
  utvm_runtime_serve();
  return 0;
}
