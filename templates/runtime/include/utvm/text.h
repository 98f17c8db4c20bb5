/*
 * A bounded string builder for error and log messages, so the runtime needs
 * neither snprintf (large on MCUs) nor malloc. Appends past the capacity are
 * dropped; the buffer is always NUL-terminated.
 */
#ifndef UTVM_TEXT_H_
#define UTVM_TEXT_H_

#include <stdint.h>

typedef struct utvm_text {
  char *buf;
  uint32_t cap; /* bytes in buf, NUL included; >= 1 */
  uint32_t len; /* characters written, excluding the NUL */
} utvm_text_t;

static inline void utvm_text_init(utvm_text_t *t, char *buf, uint32_t cap) {
  t->buf = buf;
  t->cap = cap;
  t->len = 0;
  buf[0] = '\0';
}

static inline void utvm_text_str(utvm_text_t *t, const char *s) {
  if (s == 0) {
    s = "(null)";
  }
  while (*s != '\0' && t->len + 1u < t->cap) {
    t->buf[t->len++] = *s++;
  }
  t->buf[t->len] = '\0';
}

static inline void utvm_text_u32(utvm_text_t *t, uint32_t v) {
  char digits[10];
  char one[2];
  uint32_t n = 0;
  do {
    digits[n++] = (char)('0' + v % 10u);
    v /= 10u;
  } while (v != 0u);
  one[1] = '\0';
  while (n > 0u) {
    one[0] = digits[--n];
    utvm_text_str(t, one);
  }
}

#endif /* UTVM_TEXT_H_ */
