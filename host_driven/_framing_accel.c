/*
 * Optional host-side accelerator for host_driven/framing.py: framing and unframing of whole frames,
 * batches of frames in one call. The CRC-16/CCITT-FALSE and the byte escaping are the device
 * runtime's own (templates/runtime/src/crc16.c and escape.c, compiled into this library with their
 * fastest options), so the two ends cannot disagree. framing.py compiles this on first use and
 * loads it with ctypes; without a C compiler the pure-Python framing (binascii.crc_hqx,
 * bytes.replace) is used, and both produce the same bytes (tests/test_host_protocol_accel.py).
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "utvm/crc16.h"
#include "utvm/escape.h"

#define FLAG 0x7E
/* Parts of at most this many bytes go to the runtime's code, which takes 32-bit lengths. */
#define PART 0x40000000u

unsigned utvm_accel_crc16(const uint8_t *p, size_t n, unsigned crc) {
  crc &= 0xFFFFu;
  while (n > 0) {
    uint32_t part = n > PART ? PART : (uint32_t)n;
    crc = utvm_crc16((uint16_t)crc, p, part);
    p += part;
    n -= part;
  }
  return crc;
}

/* out has room for 2 * n bytes. */
static size_t escape_into(uint8_t *out, const uint8_t *p, size_t n) {
  size_t o = 0;
  while (n > 0) {
    uint32_t part = n > PART ? PART : (uint32_t)n;
    uint32_t written = 0;
    uint32_t taken = 0;
    utvm_escape(out + o, 2u * part, &written, p, part, &taken);
    o += written;
    p += part;
    n -= part;
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

/* The packet's length without its CRC for a frame that unescaped (into out[0..len)) up to a closing
 * FLAG, no ESC pending, holds more than a CRC and checks; else -1. */
static long checked(int why, uint8_t escaped, const uint8_t *out, uint32_t len) {
  if (why != UTVM_UNESCAPE_FLAG || escaped || len <= 2u || utvm_accel_crc16(out, len, 0xFFFFu) != 0) {
    return -1;
  }
  return (long)len - 2;
}

/* Where the frame whose unescaping stopped at p[taken] (for `why`) ends: the index of its closing
 * FLAG, or -1 when p[0..n) holds none yet. */
static long frame_end(const uint8_t *p, size_t n, size_t taken, int why) {
  const uint8_t *flag;
  if (why == UTVM_UNESCAPE_FLAG) {
    return (long)taken;
  }
  flag = memchr(p + taken, FLAG, n - taken);
  return flag == NULL ? -1 : (long)(flag - p);
}

/* Unescape a frame (between FLAGs) into out (cap bytes) and check its CRC. Returns the packet's
 * length without the CRC, or -1 for an escape the sender never makes, a frame longer than cap,
 * no room for a CRC, or a CRC mismatch. */
long utvm_accel_decode(const uint8_t *p, size_t n, uint8_t *out, size_t cap) {
  uint32_t written = 0;
  uint32_t taken = 0;
  uint8_t escaped = 0;
  int why;
  if (cap > PART) {
    cap = PART;
  }
  if (n > 2 * cap) {
    return -1; /* it would unescape to more than cap bytes (and n fits 32 bits from here on) */
  }
  why = utvm_unescape(out, (uint32_t)cap, &written, p, (uint32_t)n, &taken, &escaped);
  /* The caller split the stream at FLAGs: the frame ends at n, as if at one. */
  return checked(why == UTVM_UNESCAPE_END ? UTVM_UNESCAPE_FLAG : UTVM_UNESCAPE_BAD, escaped, out, written);
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
  if (max_crc > PART) {
    max_crc = PART;
  }
  while (count < max_spans && at < n) {
    size_t left = n - at;
    uint32_t written = 0;
    uint32_t taken = 0;
    uint8_t escaped = 0;
    int why;
    long end;
    long got;
    if (p[at] == FLAG) {
      at++; /* two FLAGs in a row: an empty frame, skipped */
      continue;
    }
    if (out_cap - o < max_crc) {
      break;
    }
    /* One pass: unescaping stops at the frame's closing FLAG. */
    why = utvm_unescape(out + o, (uint32_t)max_crc, &written, p + at, left > PART ? PART : (uint32_t)left,
                        &taken, &escaped);
    end = frame_end(p + at, left, taken, why);
    if (end < 0) {
      break; /* incomplete */
    }
    got = checked(why, escaped, out + o, written);
    spans[2 * count] = got < 0 ? -1 : (long)o;
    spans[2 * count + 1] = got < 0 ? 0 : got;
    if (got >= 0) {
      o += (size_t)got;
    }
    count++;
    at += (size_t)end + 1;
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

/* Unescapes the frame at p[0..n) (just after a FLAG) as a reply of 8 header bytes into head, want
 * bytes into body and a CRC, stopping as soon as it is longer. Returns the index of its closing
 * FLAG, or -1 when p[0..n) holds none yet; *ok says whether it had exactly that length and a good
 * CRC. */
static long reply_at(const uint8_t *p, size_t n, uint8_t head[8], uint8_t *body, uint32_t want, int *ok) {
  uint8_t crc_be[2];
  uint32_t head_n = 0;
  uint32_t body_n = 0;
  uint32_t crc_n = 0;
  uint32_t taken = 0;
  uint32_t lim = n > PART ? PART : (uint32_t)n;
  uint8_t escaped = 0;
  int why = utvm_unescape(head, 8, &head_n, p, lim, &taken, &escaped);
  if (why == UTVM_UNESCAPE_FULL) {
    why = utvm_unescape(body, want, &body_n, p, lim, &taken, &escaped);
  }
  if (why == UTVM_UNESCAPE_FULL) {
    why = utvm_unescape(crc_be, 2, &crc_n, p, lim, &taken, &escaped);
  }
  /* Two CRC bytes were reached only once head and body were full. */
  *ok = why == UTVM_UNESCAPE_FLAG && !escaped && crc_n == 2u &&
        utvm_accel_crc16(crc_be, 2, utvm_accel_crc16(body, want, utvm_accel_crc16(head, 8, 0xFFFFu))) == 0;
  return frame_end(p, n, taken, why);
}

/* Takes the replies of a chunked READ from p[0..n) (which starts at a FLAG) in order: reply i must
 * be the 8-byte header hdr with seq + i at byte 2, followed by the chunk of request i (as in
 * utvm_accel_encode_chunks), which is unescaped straight to result + offset + i * chunk (never past
 * the chunk; a reply found bad may have written there already). Stops at the first frame that is
 * not the next reply (*bad = 1) or is incomplete (*bad = 0); returns the replies taken and sets
 * *used to the bytes consumed, which always end just before a FLAG or at n. */
long utvm_accel_take_chunks(const uint8_t *p, size_t n, const uint8_t *hdr, unsigned seq, size_t offset,
                            size_t chunk, size_t total, size_t count, uint8_t *result, size_t *used, int *bad) {
  size_t at = 0;
  size_t i = 0;
  *bad = 0;
  while (i < count) {
    uint8_t head[8];
    size_t start = at;
    size_t want = total > offset ? total - offset : 0;
    unsigned s = (seq + (unsigned)i) & 0xFFFFu;
    long end;
    int ok;
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
    if (want > chunk) {
      want = chunk;
    }
    end = reply_at(p + at, n - at, head, result + offset, (uint32_t)want, &ok);
    if (end < 0) {
      at = start;
      break;
    }
    if (!ok || memcmp(head, hdr, 2) != 0 || head[2] != (uint8_t)s || head[3] != (uint8_t)(s >> 8) ||
        memcmp(head + 4, hdr + 4, 4) != 0) {
      at = start;
      *bad = 1;
      break;
    }
    offset += chunk;
    at += (size_t)end;
    i++;
  }
  *used = at;
  return (long)i;
}
