/*
 * Packet framing: FLAG-delimited, byte-escaped packets ending in a big-endian
 * CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF) of the unescaped packet.
 * The decoder is fed any byte slices and resynchronises on the next FLAG
 * after garbage, lost bytes or an oversized frame.
 */
#ifndef UTVM_FRAMING_H_
#define UTVM_FRAMING_H_

#include <stdint.h>

#include "utvm/crc16.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Called with each packet whose CRC checked out (CRC stripped). */
typedef void (*utvm_packet_fn_t)(const uint8_t *packet, uint32_t len, void *ctx);

typedef struct utvm_framer {
  uint8_t *buf;      /* unescaped bytes of the frame being received */
  uint32_t cap;      /* capacity of buf: max packet + CRC bytes */
  uint32_t len;
  uint8_t escaped;   /* the previous byte was ESC */
  uint8_t dropping;  /* frame is bad (overflow/bad escape): skip to next FLAG */
  uint32_t bad_frames; /* frames dropped for CRC, escape or size errors */
} utvm_framer_t;

void utvm_framer_init(utvm_framer_t *f, uint8_t *buf, uint32_t cap);

/* Decode bytes; calls on_packet for each complete, valid packet. */
void utvm_framer_feed(utvm_framer_t *f, const uint8_t *data, uint32_t n, utvm_packet_fn_t on_packet,
                      void *ctx);

/* Frame and send one packet made of two parts (either may be empty), e.g. a
 * header in RAM and tensor bytes straight from the arena. Returns 0, or the
 * port's negative error. */
int32_t utvm_frame_send(const uint8_t *head, uint32_t head_len, const uint8_t *body, uint32_t body_len);

#ifdef __cplusplus
}
#endif

#endif /* UTVM_FRAMING_H_ */
