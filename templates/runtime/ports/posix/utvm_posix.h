/* POSIX port extras: main() hands argv over so utvm_port_reset can re-exec, and starts the
 * watch that ends the device when its host is gone. */
#ifndef UTVM_POSIX_H_
#define UTVM_POSIX_H_

/* Exit code when utvm_port_reset cannot re-execute the program. */
#define UTVM_POSIX_EXIT_RESET_FAILED 70

/* Exit code when the host is gone (nobody reads stdout any more): nothing failed. */
#define UTVM_POSIX_EXIT_HOST_GONE 0

void utvm_posix_set_argv(char **argv);

/* Start a thread that exits the process (UTVM_POSIX_EXIT_HOST_GONE) once stdout has no reader,
 * so a device busy in a long kernel or TIME never outlives its host. */
void utvm_posix_watch_host(void);

#endif /* UTVM_POSIX_H_ */
