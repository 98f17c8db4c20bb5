#include "console.h"

#include <string.h>

#include "utvm/port.h"

void console_put(const char *text) { utvm_port_write((const uint8_t *)text, (uint32_t)strlen(text)); }

void console_put_u64(uint64_t value) {
  char digits[21];
  int i = (int)sizeof(digits) - 1;
  digits[i] = '\0';
  do {
    digits[--i] = (char)('0' + (int)(value % 10u));
    value /= 10u;
  } while (value != 0u);
  console_put(&digits[i]);
}
