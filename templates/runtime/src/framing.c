/* Packet framing: CRC-16/CCITT-FALSE, escaping, and a resynchronising decoder. */
#include "utvm/framing.h"

#include <string.h>

#include "utvm/config.h"
#include "utvm/port.h"
#include "utvm/protocol.h"

#ifdef __SSE2__
#include <emmintrin.h>
#endif

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

static int is_special(uint8_t b) { return b == UTVM_FRAME_FLAG || b == UTVM_FRAME_ESC; }

/* Length of the leading run of data[0..n) with neither FLAG nor ESC. Whole machine words are
 * skipped while none of their bytes is in 0x7C..0x7F (a superset of the two), several bytes per
 * step on any core; the byte loop finds the exact end. */
static uint32_t plain_run(const uint8_t *data, uint32_t n) {
  const uintptr_t ones = (uintptr_t)-1 / 0xFFu;
  uint32_t i = 0;
#ifdef __SSE2__
  /* x86-64 always has SSE2: 16 bytes a step, exactly. */
  const __m128i flag = _mm_set1_epi8((char)UTVM_FRAME_FLAG);
  const __m128i esc = _mm_set1_epi8((char)UTVM_FRAME_ESC);
  for (; i + 16u <= n; i += 16u) {
    __m128i v = _mm_loadu_si128((const __m128i *)(const void *)(data + i));
    unsigned mask = (unsigned)_mm_movemask_epi8(_mm_or_si128(_mm_cmpeq_epi8(v, flag), _mm_cmpeq_epi8(v, esc)));
    if (mask != 0u) {
      return i + (uint32_t)__builtin_ctz(mask);
    }
  }
#endif
  for (; i + sizeof(uintptr_t) <= n; i += (uint32_t)sizeof(uintptr_t)) {
    uintptr_t w;
    memcpy(&w, data + i, sizeof(w));
    w = (w & (ones * 0xFCu)) ^ (ones * 0x7Cu);
    if (((w - ones) & ~w & (ones * 0x80u)) != 0u) {
      break;
    }
  }
  while (i < n && !is_special(data[i])) {
    i++;
  }
  return i;
}

void utvm_framer_feed(utvm_framer_t *f, const uint8_t *data, uint32_t n, utvm_packet_fn_t on_packet,
                      void *ctx) {
  uint32_t i = 0;
  while (i < n) {
    uint8_t b = data[i];
    if (!f->escaped && !f->dropping && !is_special(b)) {
      /* Fast path: copy the run of plain bytes up to the next FLAG/ESC at once. */
      uint32_t run = i + 1 + plain_run(data + i + 1, n - i - 1);
      uint32_t room = f->cap - f->len;
      if (run - i > room) {
        f->dropping = 1;
      } else {
        memcpy(f->buf + f->len, data + i, run - i);
        f->len += run - i;
      }
      i = run;
      continue;
    }
    i++;
    if (b == UTVM_FRAME_FLAG) {
      end_frame(f, on_packet, ctx);
    } else if (f->dropping) {
      /* skip to the next FLAG */
    } else if (b == UTVM_FRAME_ESC && !f->escaped) {
      f->escaped = 1;
    } else if (f->escaped && (b == (UTVM_FRAME_FLAG ^ UTVM_FRAME_XOR) || b == (UTVM_FRAME_ESC ^ UTVM_FRAME_XOR))) {
      f->escaped = 0;
      if (f->len >= f->cap) {
        f->dropping = 1;
      } else {
        f->buf[f->len++] = (uint8_t)(b ^ UTVM_FRAME_XOR);
      }
    } else {
      f->dropping = 1; /* only FLAG and ESC are ever escaped */
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
  while (i < n) {
    if (is_special(data[i])) {
      stage_raw(s, UTVM_FRAME_ESC);
      stage_raw(s, (uint8_t)(data[i] ^ UTVM_FRAME_XOR));
      i++;
    } else {
      /* Copy the run of plain bytes that fits the stage in one go. */
      uint32_t run = i + 1;
      uint32_t room;
      if (s->len >= UTVM_TX_CHUNK) {
        stage_flush(s);
      }
      room = UTVM_TX_CHUNK - s->len;
      run += plain_run(data + run, (n - run < room - 1u) ? n - run : room - 1u);
      memcpy(s->buf + s->len, data + i, run - i);
      s->len += run - i;
      i = run;
    }
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
