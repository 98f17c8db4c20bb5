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

/* Append s ("(null)" for NULL), cut to the room left. Defined once, in backend.c: out of line,
 * as every file that writes messages calls them and a copy in each costs a Cortex-M's flash. */
void utvm_text_str(utvm_text_t *t, const char *s);

/* Append v in decimal. */
void utvm_text_u32(utvm_text_t *t, uint32_t v);

#endif /* UTVM_TEXT_H_ */
