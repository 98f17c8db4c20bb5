/*
 * The command dispatcher, below the session layer: one request's command byte
 * and arguments in, one reply out. Exposed so a fuzz harness can call it
 * directly with arbitrary arguments.
 */
#ifndef UTVM_COMMANDS_H_
#define UTVM_COMMANDS_H_

#include <stdint.h>

#include "utvm/text.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct utvm_reply {
  uint8_t *buf;          /* reply payload (after the 8-byte header) */
  uint32_t cap;          /* bytes the payload may use: negotiated packet - header; >= 2 */
  uint32_t len;          /* payload bytes written to buf (OK replies) */
  const uint8_t *tail;   /* sent after buf without copying (tensor bytes), or NULL */
  uint32_t tail_len;
  uint8_t status;        /* enum utvm_status; non-zero: buf holds code + message */
  uint8_t reset_after;   /* reboot once the reply is sent */
  utvm_text_t text;      /* builds the error message after the code byte */
} utvm_reply_t;

/* Check the model table against the generated config (sizes, ABI, bounds) and
 * hand the workspace to the backend. Returns 0 when the model can be served. */
int32_t utvm_commands_init(void);

/* Make `reply` an empty OK reply writing into buf[0..cap). */
void utvm_reply_start(utvm_reply_t *reply, uint8_t *buf, uint32_t cap);

/* Turn `reply` into an error with `code`; append the message to the text returned. */
utvm_text_t *utvm_reply_fail(utvm_reply_t *reply, uint8_t code);

/* Payload bytes to send in buf: the data of an OK reply, or code + message. */
static inline uint32_t utvm_reply_len(const utvm_reply_t *reply) {
  return reply->status != 0u ? 1u + reply->text.len : reply->len;
}

/* Execute one command into a reply set up by utvm_reply_start. */
void utvm_commands_dispatch(uint8_t cmd, const uint8_t *args, uint32_t args_len, utvm_reply_t *reply);

#ifdef __cplusplus
}
#endif

#endif /* UTVM_COMMANDS_H_ */
