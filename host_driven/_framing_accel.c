/*
 * Optional host-side accelerator for host_driven/framing.py: CRC-16/CCITT-FALSE and byte escaping
 * of whole frames in one pass each, batches of frames in one call. framing.py compiles this on first use and loads it with ctypes;
 * without a C compiler the pure-Python framing (binascii.crc_hqx, bytes.replace) is used, and
 * both produce the same bytes (tests/test_host_protocol_accel.py).
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "utvm/crc16.h"

#define FLAG 0x7E
#define ESC 0x7D
#define XOR 0x20

/* The checksum is the device runtime's own (templates/runtime/src/crc16.c, compiled into this
 * library with its fastest options), so the two ends cannot disagree. */
unsigned utvm_accel_crc16(const uint8_t *p, size_t n, unsigned crc) {
  crc &= 0xFFFFu;
  while (n > 0) {  /* utvm_crc16 takes 32-bit lengths */
    uint32_t part = n > 0x40000000u ? 0x40000000u : (uint32_t)n;
    crc = utvm_crc16((uint16_t)crc, p, part);
    p += part;
    n -= part;
  }
  return crc;
}

/* Length of the leading run of p[0..n) holding neither FLAG nor ESC. */
static size_t plain_run(const uint8_t *p, size_t n) {
  const uint64_t ones = 0x0101010101010101ull;
  size_t i = 0;
  /* A word is skipped whole when none of its bytes is in 0x7C..0x7F (a superset of FLAG, ESC). */
  for (; i + 8 <= n; i += 8) {
    uint64_t w;
    uint64_t x;
    memcpy(&w, p + i, 8);
    x = (w & (ones * 0xFC)) ^ (ones * 0x7C);
    if (((x - ones) & ~x & (ones * 0x80)) != 0) {
      break;
    }
  }
  while (i < n && p[i] != FLAG && p[i] != ESC) {
    i++;
  }
  return i;
}

#ifdef __SSE2__
#include <emmintrin.h>

/* Stores p[0..16) at out whole; returns the index of its first FLAG or ESC, or 16 for none. */
static size_t copy_plain16(uint8_t *out, const uint8_t *p) {
  __m128i v = _mm_loadu_si128((const __m128i *)(const void *)p);
  unsigned mask = (unsigned)_mm_movemask_epi8(
      _mm_or_si128(_mm_cmpeq_epi8(v, _mm_set1_epi8(FLAG)), _mm_cmpeq_epi8(v, _mm_set1_epi8(ESC))));
  _mm_storeu_si128((__m128i *)(void *)out, v);
  return mask == 0 ? 16 : (size_t)__builtin_ctz(mask);
}
#endif

/* out has room for 2 * n bytes. */
static size_t escape_into(uint8_t *out, const uint8_t *p, size_t n) {
  size_t o = 0;
#ifdef __SSE2__
  /* 16 bytes a step: store the block whole, then cut it at its first FLAG/ESC, if any (while 16
   * bytes of input are left, the room left is at least 32 bytes). */
  while (n >= 16) {
    size_t k = copy_plain16(out + o, p);
    o += k;
    p += k;
    n -= k;
    if (k < 16) {
      out[o++] = ESC;
      out[o++] = (uint8_t)(*p++ ^ XOR);
      n--;
    }
  }
#endif
  while (n > 0) {
    size_t run = plain_run(p, n);
    memcpy(out + o, p, run);
    o += run;
    p += run;
    n -= run;
    if (n > 0) {
      out[o++] = ESC;
      out[o++] = (uint8_t)(*p++ ^ XOR);
      n--;
    }
  }
  return o;
}

/* FLAG escape(head || body || crc16_be) FLAG into out, which holds 2 * (head_n + body_n + 2) + 2
 * bytes; returns the frame's length. */
size_t utvm_accel_encode(const uint8_t *head, size_t head_n, const uint8_t *body, size_t body_n,
                         uint8_t *out) {
  uint8_t crc_be[2];
  unsigned crc = utvm_accel_crc16(body, body_n, utvm_accel_crc16(head, head_n, 0xFFFFu));
  size_t o = 0;
  crc_be[0] = (uint8_t)(crc >> 8);
  crc_be[1] = (uint8_t)crc;
  out[o++] = FLAG;
  o += escape_into(out + o, head, head_n);
  o += escape_into(out + o, body, body_n);
  o += escape_into(out + o, crc_be, 2);
  out[o++] = FLAG;
  return o;
}

/* The frames of count packets back to back into out (room as for utvm_accel_encode, summed);
 * returns their length. */
size_t utvm_accel_encode_many(const uint8_t *const *packets, const size_t *lens, size_t count, uint8_t *out) {
  size_t o = 0;
  size_t i;
  for (i = 0; i < count; i++) {
    o += utvm_accel_encode(packets[i], lens[i], NULL, 0, out + o);
  }
  return o;
}

/* Unescape a frame (between FLAGs) into out (cap bytes) and check its CRC. Returns the packet's
 * length without the CRC, or -1 for an escape the sender never makes, a frame longer than cap,
 * no room for a CRC, or a CRC mismatch. */
long utvm_accel_decode(const uint8_t *p, size_t n, uint8_t *out, size_t cap) {
  size_t o = 0;
#ifdef __SSE2__
  /* As in escape_into; an escape found in a block is complete, as 17 bytes were left. */
  while (n >= 17 && cap - o >= 16) {
    size_t k = copy_plain16(out + o, p);
    o += k;
    p += k;
    n -= k;
    if (k < 16) {
      if (p[0] != ESC || (p[1] != (FLAG ^ XOR) && p[1] != (ESC ^ XOR))) {
        return -1;
      }
      out[o++] = (uint8_t)(p[1] ^ XOR);
      p += 2;
      n -= 2;
    }
  }
#endif
  while (n > 0) {
    size_t run = plain_run(p, n);
    if (run > cap - o) {
      return -1;
    }
    memcpy(out + o, p, run);
    o += run;
    p += run;
    n -= run;
    if (n > 0) {
      /* Only ESC may stop a run here (the caller split at FLAG), and only before FLAG/ESC ^ XOR. */
      if (p[0] != ESC || n < 2 || (p[1] != (FLAG ^ XOR) && p[1] != (ESC ^ XOR)) || o >= cap) {
        return -1;
      }
      out[o++] = (uint8_t)(p[1] ^ XOR);
      p += 2;
      n -= 2;
    }
  }
  if (o <= 2 || utvm_accel_crc16(out, o, 0xFFFFu) != 0) {
    return -1;
  }
  return (long)(o - 2);
}

/* Decodes the frames of p[0..n), which starts just after a FLAG, up to its last FLAG: each
 * non-empty frame's packet goes to out (out_cap bytes) back to back, and spans[2 i], spans[2 i + 1]
 * get its offset there and its length without the CRC, or -1 and 0 for a frame decode refuses or
 * longer than max_crc bytes unescaped. Stops after max_spans frames or when out might not hold the
 * next one; returns the frames decoded and sets *used to the bytes consumed (up to and including
 * the last FLAG taken). */
long utvm_accel_decode_all(const uint8_t *p, size_t n, uint8_t *out, size_t out_cap, size_t max_crc,
                           long *spans, size_t max_spans, size_t *used) {
  size_t at = 0;
  size_t o = 0;
  size_t count = 0;
  while (count < max_spans) {
    const uint8_t *end = memchr(p + at, FLAG, n - at);
    size_t len;
    long got;
    if (end == NULL) {
      break;
    }
    len = (size_t)(end - (p + at));
    if (len > 0) {
      if (out_cap - o < max_crc) {
        break;
      }
      got = utvm_accel_decode(p + at, len, out + o, max_crc);
      spans[2 * count] = got < 0 ? -1 : (long)o;
      spans[2 * count + 1] = got < 0 ? 0 : got;
      if (got >= 0) {
        o += (size_t)got;
      }
      count++;
    }
    at += len + 1;
  }
  *used = at;
  return (long)count;
}

/* Frames count requests of a chunked transfer back to back into out (room as for
 * utvm_accel_encode, summed): request i is tmpl (tmpl_n <= 64 bytes: header and arguments) with
 * seq + i at byte 2 (u16 LE), offset + i * chunk at offset_at (u32 LE) and the chunk's length at
 * length_at (u32 LE), either left alone when 0, followed by the chunk of data when data is not
 * NULL. The chunk of request i is data[offset + i * chunk ..], at most chunk bytes, and stops at
 * total. ends[i] gets the end of frame i in out; returns the frames' total length. */
size_t utvm_accel_encode_chunks(const uint8_t *tmpl, size_t tmpl_n, size_t offset_at, size_t length_at,
                                unsigned seq, size_t offset, size_t chunk, size_t total, const uint8_t *data,
                                size_t count, uint8_t *out, size_t *ends) {
  uint8_t head[64];
  size_t o = 0;
  size_t i;
  memcpy(head, tmpl, tmpl_n);
  for (i = 0; i < count; i++, offset += chunk) {
    size_t n = total > offset ? total - offset : 0;
    unsigned s = (seq + (unsigned)i) & 0xFFFFu;
    uint32_t v = (uint32_t)offset;
    if (n > chunk) {
      n = chunk;
    }
    head[2] = (uint8_t)s;
    head[3] = (uint8_t)(s >> 8);
    if (offset_at != 0) {
      memcpy(head + offset_at, &v, 4); /* little-endian hosts only: framing.py checks */
    }
    if (length_at != 0) {
      v = (uint32_t)n;
      memcpy(head + length_at, &v, 4);
    }
    o += utvm_accel_encode(head, tmpl_n, data != NULL ? data + offset : NULL, data != NULL ? n : 0, out + o);
    ends[i] = o;
  }
  return o;
}

/* Takes the replies of a chunked READ from p[0..n) (which starts at a FLAG) in order: reply i must
 * be the 8-byte header hdr with seq + i at byte 2, followed by the chunk of request i (as in
 * utvm_accel_encode_chunks), which goes to result + offset + i * chunk; scratch holds cap bytes
 * (the negotiated packet and its CRC). Stops at the first frame that is not the next reply
 * (*bad = 1) or is incomplete (*bad = 0); returns the replies taken and sets *used to the bytes
 * consumed, which always end just before a FLAG or at n. */
long utvm_accel_take_chunks(const uint8_t *p, size_t n, const uint8_t *hdr, unsigned seq, size_t offset,
                            size_t chunk, size_t total, size_t count, uint8_t *result, uint8_t *scratch,
                            size_t cap, size_t *used, int *bad) {
  size_t at = 0;
  size_t i = 0;
  *bad = 0;
  while (i < count) {
    const uint8_t *end;
    size_t start = at;
    size_t want = total > offset ? total - offset : 0;
    unsigned s = (seq + (unsigned)i) & 0xFFFFu;
    long got;
    while (at < n && p[at] == FLAG) {
      at++;
    }
    if (at == n) {
      at = start; /* keep the FLAG: the next slice continues the stream */
      break;
    }
    if (at == start) { /* not at a FLAG: the caller's decoder must sort it out */
      *bad = 1;
      break;
    }
    end = memchr(p + at, FLAG, n - at);
    if (end == NULL) {
      at = start;
      break;
    }
    if (want > chunk) {
      want = chunk;
    }
    got = utvm_accel_decode(p + at, (size_t)(end - (p + at)), scratch, cap);
    if (got != (long)(8 + want) || memcmp(scratch, hdr, 2) != 0 || scratch[2] != (uint8_t)s ||
        scratch[3] != (uint8_t)(s >> 8) || memcmp(scratch + 4, hdr + 4, 4) != 0) {
      at = start;
      *bad = 1;
      break;
    }
    memcpy(result + offset, scratch + 8, want);
    offset += chunk;
    at = (size_t)(end - p);
    i++;
  }
  *used = at;
  return (long)i;
}
