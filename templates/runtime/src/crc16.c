/* CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF), on its own so that the host's framing
 * accelerator compiles this same file: one implementation of the checksum on both ends.
 * UTVM_CRC_TABLE picks the size/speed trade-off (config.h); UTVM_CRC_CLMUL adds carry-less
 * multiplication on x86-64 CPUs that have it. */
#include "utvm/crc16.h"

#include "utvm/config.h"

#if UTVM_CRC_TABLE >= 1
/* crc_byte[i]: the CRC register after shifting byte i through it (poly 0x1021). */
static const uint16_t crc_byte[256] = {
    0x0000, 0x1021, 0x2042, 0x3063, 0x4084, 0x50A5, 0x60C6, 0x70E7,
    0x8108, 0x9129, 0xA14A, 0xB16B, 0xC18C, 0xD1AD, 0xE1CE, 0xF1EF,
    0x1231, 0x0210, 0x3273, 0x2252, 0x52B5, 0x4294, 0x72F7, 0x62D6,
    0x9339, 0x8318, 0xB37B, 0xA35A, 0xD3BD, 0xC39C, 0xF3FF, 0xE3DE,
    0x2462, 0x3443, 0x0420, 0x1401, 0x64E6, 0x74C7, 0x44A4, 0x5485,
    0xA56A, 0xB54B, 0x8528, 0x9509, 0xE5EE, 0xF5CF, 0xC5AC, 0xD58D,
    0x3653, 0x2672, 0x1611, 0x0630, 0x76D7, 0x66F6, 0x5695, 0x46B4,
    0xB75B, 0xA77A, 0x9719, 0x8738, 0xF7DF, 0xE7FE, 0xD79D, 0xC7BC,
    0x48C4, 0x58E5, 0x6886, 0x78A7, 0x0840, 0x1861, 0x2802, 0x3823,
    0xC9CC, 0xD9ED, 0xE98E, 0xF9AF, 0x8948, 0x9969, 0xA90A, 0xB92B,
    0x5AF5, 0x4AD4, 0x7AB7, 0x6A96, 0x1A71, 0x0A50, 0x3A33, 0x2A12,
    0xDBFD, 0xCBDC, 0xFBBF, 0xEB9E, 0x9B79, 0x8B58, 0xBB3B, 0xAB1A,
    0x6CA6, 0x7C87, 0x4CE4, 0x5CC5, 0x2C22, 0x3C03, 0x0C60, 0x1C41,
    0xEDAE, 0xFD8F, 0xCDEC, 0xDDCD, 0xAD2A, 0xBD0B, 0x8D68, 0x9D49,
    0x7E97, 0x6EB6, 0x5ED5, 0x4EF4, 0x3E13, 0x2E32, 0x1E51, 0x0E70,
    0xFF9F, 0xEFBE, 0xDFDD, 0xCFFC, 0xBF1B, 0xAF3A, 0x9F59, 0x8F78,
    0x9188, 0x81A9, 0xB1CA, 0xA1EB, 0xD10C, 0xC12D, 0xF14E, 0xE16F,
    0x1080, 0x00A1, 0x30C2, 0x20E3, 0x5004, 0x4025, 0x7046, 0x6067,
    0x83B9, 0x9398, 0xA3FB, 0xB3DA, 0xC33D, 0xD31C, 0xE37F, 0xF35E,
    0x02B1, 0x1290, 0x22F3, 0x32D2, 0x4235, 0x5214, 0x6277, 0x7256,
    0xB5EA, 0xA5CB, 0x95A8, 0x8589, 0xF56E, 0xE54F, 0xD52C, 0xC50D,
    0x34E2, 0x24C3, 0x14A0, 0x0481, 0x7466, 0x6447, 0x5424, 0x4405,
    0xA7DB, 0xB7FA, 0x8799, 0x97B8, 0xE75F, 0xF77E, 0xC71D, 0xD73C,
    0x26D3, 0x36F2, 0x0691, 0x16B0, 0x6657, 0x7676, 0x4615, 0x5634,
    0xD94C, 0xC96D, 0xF90E, 0xE92F, 0x99C8, 0x89E9, 0xB98A, 0xA9AB,
    0x5844, 0x4865, 0x7806, 0x6827, 0x18C0, 0x08E1, 0x3882, 0x28A3,
    0xCB7D, 0xDB5C, 0xEB3F, 0xFB1E, 0x8BF9, 0x9BD8, 0xABBB, 0xBB9A,
    0x4A75, 0x5A54, 0x6A37, 0x7A16, 0x0AF1, 0x1AD0, 0x2AB3, 0x3A92,
    0xFD2E, 0xED0F, 0xDD6C, 0xCD4D, 0xBDAA, 0xAD8B, 0x9DE8, 0x8DC9,
    0x7C26, 0x6C07, 0x5C64, 0x4C45, 0x3CA2, 0x2C83, 0x1CE0, 0x0CC1,
    0xEF1F, 0xFF3E, 0xCF5D, 0xDF7C, 0xAF9B, 0xBFBA, 0x8FD9, 0x9FF8,
    0x6E17, 0x7E36, 0x4E55, 0x5E74, 0x2E93, 0x3EB2, 0x0ED1, 0x1EF0,
};

#if UTVM_CRC_TABLE >= 2
/* Slicing by 8 (fast links): crc_slice[k - 1][v] is the register after byte v and k zero bytes,
 * from 0. The register folds into the first two bytes of each 8-byte block, and the eight
 * lookups are independent, instead of a chain of one lookup per byte. Built on first use (3.5 KiB
 * of RAM), from crc_byte. */
static uint16_t crc_slice[7][256];
static uint8_t crc_slice_ready;

static void crc_slice_init(void) {
  uint32_t k;
  uint32_t v;
  for (v = 0; v < 256u; v++) {
    uint16_t crc = crc_byte[v];
    for (k = 0; k < 7u; k++) {
      crc = (uint16_t)((crc << 8) ^ crc_byte[crc >> 8]);
      crc_slice[k][v] = crc;
    }
  }
  crc_slice_ready = 1;
}
#endif

static uint16_t crc16_table(uint16_t crc, const uint8_t *data, uint32_t n) {
  uint32_t i = 0;
#if UTVM_CRC_TABLE >= 2
  if (!crc_slice_ready) {
    crc_slice_init();
  }
  for (; i + 8u <= n; i += 8u) {
    const uint8_t *p = data + i;
    crc = (uint16_t)(crc_slice[6][p[0] ^ (crc >> 8)] ^ crc_slice[5][p[1] ^ (crc & 0xFFu)] ^
                     crc_slice[4][p[2]] ^ crc_slice[3][p[3]] ^ crc_slice[2][p[4]] ^ crc_slice[1][p[5]] ^
                     crc_slice[0][p[6]] ^ crc_byte[p[7]]);
  }
#endif
  for (; i < n; i++) {
    crc = (uint16_t)((crc << 8) ^ crc_byte[(crc >> 8) ^ data[i]]);
  }
  return crc;
}

#if UTVM_CRC_CLMUL && defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define CLMUL_MIN 64u

/* Carry-less multiplication folding (PCLMULQDQ, SSSE3 for the byte reversal), when the CPU has
 * it: the data is a polynomial over GF(2), first byte on top. 128-bit lanes are folded forward by
 * multiplying their halves by x^(d+64) and x^d mod P, which keeps them congruent mod P; the last
 * lane and the tail then go through the table. clmul_k: x^192, x^128, x^576, x^512 mod P. */
static uint64_t clmul_k[4];
static int8_t clmul_ok = -1;

static uint64_t xpow_mod_p(unsigned k) {
  uint32_t r = 1;
  while (k-- > 0u) {
    r <<= 1;
    if (r & 0x10000u) {
      r ^= 0x11021u;
    }
  }
  return r;
}

static void clmul_init(void) {
  __builtin_cpu_init();
  clmul_ok = (int8_t)(__builtin_cpu_supports("pclmul") && __builtin_cpu_supports("ssse3"));
  clmul_k[0] = xpow_mod_p(192);
  clmul_k[1] = xpow_mod_p(128);
  clmul_k[2] = xpow_mod_p(576);
  clmul_k[3] = xpow_mod_p(512);
}

__attribute__((target("pclmul,ssse3"))) static __m128i clmul_fold(__m128i a, __m128i k) {
  return _mm_xor_si128(_mm_clmulepi64_si128(a, k, 0x11), _mm_clmulepi64_si128(a, k, 0x00));
}

__attribute__((target("pclmul,ssse3"))) static __m128i clmul_load(const uint8_t *p) {
  const __m128i reverse = _mm_set_epi8(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  return _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(const void *)p), reverse);
}

/* Folds p[0..n) (n >= CLMUL_MIN, register crc) into 16 bytes with the same CRC from register 0,
 * written to lane; returns how many bytes of the tail are left for the table. */
__attribute__((target("pclmul,ssse3"))) static uint32_t clmul_fold_all(const uint8_t *p, uint32_t n,
                                                                       uint16_t crc, uint8_t lane[16]) {
  const __m128i reverse = _mm_set_epi8(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  const __m128i k128 = _mm_set_epi64x((long long)clmul_k[0], (long long)clmul_k[1]);
  const __m128i k512 = _mm_set_epi64x((long long)clmul_k[2], (long long)clmul_k[3]);
  /* A starting register is the same as zero xored into the first two bytes. */
  __m128i a = _mm_xor_si128(clmul_load(p), _mm_set_epi64x((long long)((uint64_t)crc << 48), 0));
  __m128i b = clmul_load(p + 16);
  __m128i c = clmul_load(p + 32);
  __m128i d = clmul_load(p + 48);
  for (p += 64, n -= 64u; n >= 64u; n -= 64u, p += 64) {
    a = _mm_xor_si128(clmul_fold(a, k512), clmul_load(p));
    b = _mm_xor_si128(clmul_fold(b, k512), clmul_load(p + 16));
    c = _mm_xor_si128(clmul_fold(c, k512), clmul_load(p + 32));
    d = _mm_xor_si128(clmul_fold(d, k512), clmul_load(p + 48));
  }
  a = _mm_xor_si128(clmul_fold(a, k128), b);
  a = _mm_xor_si128(clmul_fold(a, k128), c);
  a = _mm_xor_si128(clmul_fold(a, k128), d);
  for (; n >= 16u; n -= 16u, p += 16) {
    a = _mm_xor_si128(clmul_fold(a, k128), clmul_load(p));
  }
  _mm_storeu_si128((__m128i *)(void *)lane, _mm_shuffle_epi8(a, reverse));
  return n;
}

uint16_t utvm_crc16(uint16_t crc, const uint8_t *data, uint32_t n) {
  if (clmul_ok < 0) {
    clmul_init();
  }
  if (clmul_ok && n >= CLMUL_MIN) {
    uint8_t lane[16];
    uint32_t rest = clmul_fold_all(data, n, crc, lane);
    return crc16_table(crc16_table(0u, lane, 16u), data + n - rest, rest);
  }
  return crc16_table(crc, data, n);
}
#else
uint16_t utvm_crc16(uint16_t crc, const uint8_t *data, uint32_t n) { return crc16_table(crc, data, n); }
#endif
#else
/* A nibble table: 32 bytes of flash, two lookups per byte. */
static const uint16_t crc_nibble[16] = {0x0000, 0x1021, 0x2042, 0x3063, 0x4084, 0x50A5, 0x60C6, 0x70E7,
                                        0x8108, 0x9129, 0xA14A, 0xB16B, 0xC18C, 0xD1AD, 0xE1CE, 0xF1EF};

uint16_t utvm_crc16(uint16_t crc, const uint8_t *data, uint32_t n) {
  uint32_t i;
  for (i = 0; i < n; i++) {
    crc = (uint16_t)(crc ^ ((uint16_t)data[i] << 8));
    crc = (uint16_t)((crc << 4) ^ crc_nibble[crc >> 12]);
    crc = (uint16_t)((crc << 4) ^ crc_nibble[crc >> 12]);
  }
  return crc;
}
#endif
