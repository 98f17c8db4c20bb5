/*
 * Optional host-side accelerator for host_driven/framing.py: CRC-16/CCITT-FALSE and byte escaping
 * of whole frames in one pass each. framing.py compiles this on first use and loads it with ctypes;
 * without a C compiler the pure-Python framing (binascii.crc_hqx, bytes.replace) is used, and
 * both produce the same bytes (tests/test_host_protocol_accel.py).
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define FLAG 0x7E
#define ESC 0x7D
#define XOR 0x20

/* crc_slice[k][v]: the CRC register after byte v followed by k zero bytes, from register 0. */
static uint16_t crc_slice[8][256];
static int crc_ready;

static void crc_init(void) {
  int v, k, bit;
  for (v = 0; v < 256; v++) {
    uint16_t crc = (uint16_t)(v << 8);
    for (bit = 0; bit < 8; bit++) {
      crc = (uint16_t)((crc & 0x8000u) ? (crc << 1) ^ 0x1021u : crc << 1);
    }
    crc_slice[0][v] = crc;
  }
  for (k = 1; k < 8; k++) {
    for (v = 0; v < 256; v++) {
      uint16_t prev = crc_slice[k - 1][v];
      crc_slice[k][v] = (uint16_t)((prev << 8) ^ crc_slice[0][prev >> 8]);
    }
  }
  crc_ready = 1;
}

/* Slicing by 8: the register folds into the first two bytes of each 8-byte block. */
unsigned utvm_accel_crc16(const uint8_t *p, size_t n, unsigned crc) {
  if (!crc_ready) {
    crc_init();
  }
  crc &= 0xFFFFu;
  for (; n >= 8; n -= 8, p += 8) {
    crc = crc_slice[7][p[0] ^ (crc >> 8)] ^ crc_slice[6][p[1] ^ (crc & 0xFFu)] ^ crc_slice[5][p[2]] ^
          crc_slice[4][p[3]] ^ crc_slice[3][p[4]] ^ crc_slice[2][p[5]] ^ crc_slice[1][p[6]] ^
          crc_slice[0][p[7]];
  }
  for (; n > 0; n--, p++) {
    crc = (uint16_t)((crc << 8) ^ crc_slice[0][(crc >> 8) ^ *p]);
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

static size_t escape_into(uint8_t *out, const uint8_t *p, size_t n) {
  size_t o = 0;
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

/* Unescape a frame (between FLAGs) into out (cap bytes) and check its CRC. Returns the packet's
 * length without the CRC, or -1 for an escape the sender never makes, a frame longer than cap,
 * no room for a CRC, or a CRC mismatch. */
long utvm_accel_decode(const uint8_t *p, size_t n, uint8_t *out, size_t cap) {
  size_t o = 0;
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
