/* Text over the port's byte channel, for the apps that print (no printf: nothing pulls in stdio). */
#ifndef UTVM_BAREMETAL_CONSOLE_H_
#define UTVM_BAREMETAL_CONSOLE_H_

#include <stdint.h>

void console_put(const char *text);
void console_put_u64(uint64_t value); /* decimal */

#endif /* UTVM_BAREMETAL_CONSOLE_H_ */
