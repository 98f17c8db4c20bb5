/* POSIX port extras: main() hands argv over so utvm_port_reset can re-exec. */
#ifndef UTVM_POSIX_H_
#define UTVM_POSIX_H_

/* Exit code when utvm_port_reset cannot re-execute the program. */
#define UTVM_POSIX_EXIT_RESET_FAILED 70

void utvm_posix_set_argv(char **argv);

#endif /* UTVM_POSIX_H_ */
