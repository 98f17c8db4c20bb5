/* Packet framing: the resynchronising decoder and the framed sender, over escape.c and crc16.c. */
#include "utvm/framing.h"

#include "utvm/config.h"
#include "utvm/escape.h"
#include "utvm/port.h"
#include "utvm/protocol.h"

void utvm_framer_init(utvm_framer_t *f, uint8_t *buf, uint32_t cap) {
  f->buf = buf;
  f->cap = cap;
  f->len = 0;
  f->escaped = 0;
  f->dropping = 0;
  f->bad_frames = 0;
}

static void end_frame(utvm_framer_t *f, utvm_packet_fn_t on_packet, void *ctx) {
  if (f->dropping || f->escaped) {
    f->bad_frames++;
  } else if (f->len > 0) {
    /* A CRC over data followed by its own big-endian CRC leaves 0. */
    if (f->len > UTVM_FRAME_CRC_BYTES && utvm_crc16(0xFFFFu, f->buf, f->len) == 0u) {
      on_packet(f->buf, f->len - UTVM_FRAME_CRC_BYTES, ctx);
    } else {
      f->bad_frames++;
    }
  }
  f->len = 0;
  f->escaped = 0;
  f->dropping = 0;
}

void utvm_framer_feed(utvm_framer_t *f, const uint8_t *data, uint32_t n, utvm_packet_fn_t on_packet,
                      void *ctx) {
  uint32_t i = 0;
  while (i < n) {
    if (f->dropping) {
      /* skip to the next FLAG */
      while (i < n && data[i] != UTVM_FRAME_FLAG) {
        i++;
      }
    } else {
      /* Unescape up to the next FLAG into the frame; an ESC ending the slice stays pending. */
      int why = utvm_unescape(f->buf, f->cap, &f->len, data, n, &i, &f->escaped);
      if (why == UTVM_UNESCAPE_FULL || why == UTVM_UNESCAPE_BAD) {
        f->dropping = 1; /* an oversized frame, or an escape the sender never makes */
        continue;
      }
    }
    if (i < n) {
      i++; /* at a FLAG */
      end_frame(f, on_packet, ctx);
    }
  }
}

typedef struct {
  uint8_t buf[UTVM_TX_CHUNK];
  uint32_t len;
  int32_t err;
} tx_stage_t;

static void stage_flush(tx_stage_t *s) {
  if (s->len > 0 && s->err == 0) {
    s->err = utvm_port_write(s->buf, s->len);
  }
  s->len = 0;
}

static void stage_raw(tx_stage_t *s, uint8_t b) {
  if (s->len >= UTVM_TX_CHUNK) {
    stage_flush(s);
  }
  s->buf[s->len++] = b;
}

static void stage_escaped(tx_stage_t *s, const uint8_t *data, uint32_t n) {
  uint32_t i = 0;
  for (;;) {
    utvm_escape(s->buf, UTVM_TX_CHUNK, &s->len, data, n, &i);
    if (i == n) {
      break;
    }
    stage_flush(s); /* the stage is full */
  }
}

int32_t utvm_frame_send(const uint8_t *head, uint32_t head_len, const uint8_t *body, uint32_t body_len) {
  tx_stage_t s;
  uint8_t crc_bytes[UTVM_FRAME_CRC_BYTES];
  uint16_t crc = utvm_crc16(0xFFFFu, head, head_len);
  crc = utvm_crc16(crc, body, body_len);
  crc_bytes[0] = (uint8_t)(crc >> 8);
  crc_bytes[1] = (uint8_t)crc;
  s.len = 0;
  s.err = 0;
  stage_raw(&s, UTVM_FRAME_FLAG);
  stage_escaped(&s, head, head_len);
  stage_escaped(&s, body, body_len);
  stage_escaped(&s, crc_bytes, UTVM_FRAME_CRC_BYTES);
  stage_raw(&s, UTVM_FRAME_FLAG);
  stage_flush(&s);
  return s.err;
}
