/*
 * What the sketch's setup() and loop() call: the utvm port for Arduino (utvm_port_arduino.cpp).
 * Generated projects keep this file in src/utvm/port/.
 */
#ifndef UTVM_ARDUINO_H_
#define UTVM_ARDUINO_H_

#include <stdint.h>

/* Open Serial at the board's baud rate and start the cycle timer. */
void utvm_arduino_begin(void);

/* host_driven: set up the runtime (it announces itself to the host), then serve the host. */
void utvm_arduino_serve(void);

/* aot_standalone: run the model once on the baked-in inputs and print the report. */
void utvm_arduino_run_standalone(void);

/* Stop for good: under simavr, interrupts off and asleep ends the simulation. */
void utvm_arduino_halt(void);

#endif /* UTVM_ARDUINO_H_ */
