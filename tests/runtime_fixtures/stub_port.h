/* The stub port's capture of everything the runtime wrote. */
#ifndef STUB_PORT_H_
#define STUB_PORT_H_

#include <stdint.h>

#define STUB_PORT_WIRE_BYTES 4096

extern uint8_t stub_port_wire[STUB_PORT_WIRE_BYTES];
extern uint32_t stub_port_wire_len;

#endif
