/*
 * Byte escaping of the frames (see docs/host-driven-protocol.md, "Framing"): FLAG (0x7E) and
 * ESC (0x7D) travel as ESC, byte ^ 0x20; no other byte is escaped. One implementation for both
 * ends of the link: the device runtime uses it to frame and unframe packets, and the host's
 * framing accelerator compiles this same code. Portable C99, no allocation, nothing from the port.
 *
 * Both functions work on cursors: *written is where the next output byte goes in out[0..room),
 * *taken the next input byte of in[0..n); both advance. A stream can be (un)escaped slice by
 * slice, or into a buffer that is emptied between calls.
 */
#ifndef UTVM_ESCAPE_H_
#define UTVM_ESCAPE_H_

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Why utvm_unescape stopped. */
#define UTVM_UNESCAPE_END 0  /* all input taken (it may end in an ESC: see `escaped`) */
#define UTVM_UNESCAPE_FLAG 1 /* at a FLAG, in[*taken], which is not taken */
#define UTVM_UNESCAPE_FULL 2 /* out[0..room) is full and another byte is due (in[*taken], or the
                              * partner of an ESC taken just before: see `escaped`) */
#define UTVM_UNESCAPE_BAD 3  /* an escape the sender never makes; the cursors are somewhere before the
                              * next FLAG, out's bytes since the last FLAG are unspecified */

/* Escapes in[*taken..n) into out[*written..room), as far as whole escaped bytes fit (2 * n bytes of
 * room always take it all). Writes never go past out[room - 1], though they may touch bytes beyond
 * the final cursor. */
void utvm_escape(uint8_t *out, uint32_t room, uint32_t *written, const uint8_t *in, uint32_t n,
                 uint32_t *taken);

/* Unescapes in[*taken..n) into out[*written..room) up to the first FLAG. *escaped says that the
 * byte before in[*taken] was an ESC still waiting for its partner (0 at the start of a frame), and
 * is left saying the same of the last byte taken. Returns a UTVM_UNESCAPE_* code. Writes never go
 * past out[room - 1], though they may touch out[*written..room) beyond the final cursor. */
int utvm_unescape(uint8_t *out, uint32_t room, uint32_t *written, const uint8_t *in, uint32_t n,
                  uint32_t *taken, uint8_t *escaped);

#ifdef __cplusplus
}
#endif

#endif /* UTVM_ESCAPE_H_ */
