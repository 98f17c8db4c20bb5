/* Byte escaping and unescaping of the frames (utvm/escape.h), on its own so that the host's framing
 * accelerator compiles this same file: one implementation on both ends of the link.
 *
 * Portable C finds runs of plain bytes a machine word at a time. On x86-64, SSE2 (always there)
 * scans 16 bytes a step and stops at each FLAG or ESC; where the CPU has AVX-512 VBMI2 (checked at
 * run time), a special byte costs no branch at all: the escape is a byte expansion (vpexpandb)
 * steered by the special bytes' mask, the unescape a compression (vpcompressb). (With random data one
 * byte in 128 is special: a loop that stops at each one mispredicts a branch every ~128 bytes.) */
#include "utvm/escape.h"

#include <string.h>

#include "utvm/config.h"
#include "utvm/protocol.h"

/* UTVM_ESCAPE_SIMD (config.h) picks the paths compiled in. */
#if UTVM_ESCAPE_SIMD >= 1 && defined(__x86_64__) && defined(__SSE2__) && defined(__GNUC__)
#define ESCAPE_SSE2 1
#if UTVM_ESCAPE_SIMD >= 2
#define ESCAPE_VBMI2 1
#endif
#endif

#define FLAG UTVM_FRAME_FLAG
#define ESC UTVM_FRAME_ESC
#define XOR UTVM_FRAME_XOR

static int is_special(uint8_t b) { return b == FLAG || b == ESC; }

/* Length of the leading run of data[0..n) with neither FLAG nor ESC. Whole machine words are
 * skipped while none of their bytes is in 0x7C..0x7F (a superset of the two); the byte loop finds
 * the exact end. */
static uint32_t plain_run(const uint8_t *data, uint32_t n) {
  const uintptr_t ones = (uintptr_t)-1 / 0xFFu;
  uint32_t i = 0;
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

static void escape_portable(uint8_t *out, uint32_t room, uint32_t *written, const uint8_t *in, uint32_t n,
                            uint32_t *taken) {
  uint32_t o = *written;
  uint32_t i = *taken;
  while (i < n) {
    uint32_t run = plain_run(in + i, (n - i < room - o) ? n - i : room - o);
    memcpy(out + o, in + i, run);
    o += run;
    i += run;
    if (i == n || room - o < 2u || !is_special(in[i])) {
      break; /* done, or out of room */
    }
    out[o++] = ESC;
    out[o++] = (uint8_t)(in[i++] ^ XOR);
  }
  *written = o;
  *taken = i;
}

static int unescape_portable(uint8_t *out, uint32_t room, uint32_t *written, const uint8_t *in, uint32_t n,
                             uint32_t *taken, uint8_t *escaped) {
  uint32_t o = *written;
  uint32_t i = *taken;
  int why = UTVM_UNESCAPE_END;
  while (i < n) {
    uint8_t b = in[i];
    if (b == FLAG) {
      why = UTVM_UNESCAPE_FLAG;
      break;
    }
    if (*escaped) {
      if (b != (FLAG ^ XOR) && b != (ESC ^ XOR)) {
        why = UTVM_UNESCAPE_BAD; /* only FLAG and ESC are ever escaped */
        break;
      }
      if (o >= room) {
        why = UTVM_UNESCAPE_FULL;
        break;
      }
      out[o++] = (uint8_t)(b ^ XOR);
      *escaped = 0;
      i++;
    } else if (b == ESC) {
      *escaped = 1;
      i++;
    } else {
      /* A run of plain bytes at once (at least b, unless out is full). */
      uint32_t run = plain_run(in + i, (n - i < room - o) ? n - i : room - o);
      if (run == 0u) {
        why = UTVM_UNESCAPE_FULL;
        break;
      }
      memcpy(out + o, in + i, run);
      o += run;
      i += run;
    }
  }
  *written = o;
  *taken = i;
  return why;
}

#ifdef ESCAPE_SSE2
#include <emmintrin.h>

/* 16 bytes a step, while 17 are left (an escape found is whole) and out has room for 18: the block
 * is stored whole, then cut at its first FLAG or ESC, if any, which is escaped, or unescaped; the
 * next block starts after it. Unescaping stops at anything but a good escape (a FLAG, a bad
 * escape), for the portable code. */
static inline void blocks_sse2(uint8_t *out, uint32_t room, uint32_t *written, const uint8_t *in, uint32_t n,
                               uint32_t *taken, int unescaping) {
  uint8_t *o = out + *written;
  const uint8_t *p = in + *taken;
  if (n - *taken >= 17u && room - *written >= 18u) {
    const uint8_t *p_end = in + n - 17u; /* the last block start with 17 bytes left */
    const uint8_t *o_end = out + room - 18u;
    while (p <= p_end && o <= o_end) {
      __m128i v = _mm_loadu_si128((const __m128i *)(const void *)p);
      unsigned mask = (unsigned)_mm_movemask_epi8(_mm_or_si128(_mm_cmpeq_epi8(v, _mm_set1_epi8((char)ESC)),
                                                               _mm_cmpeq_epi8(v, _mm_set1_epi8((char)FLAG))));
      unsigned k = mask == 0u ? 16u : (unsigned)__builtin_ctz(mask);
      _mm_storeu_si128((__m128i *)(void *)o, v);
      o += k;
      p += k;
      if (k == 16u) {
        continue;
      }
      if (!unescaping) {
        *o++ = ESC;
        *o++ = (uint8_t)(*p++ ^ XOR);
      } else if (p[0] == ESC && (uint8_t)(p[1] - (ESC ^ XOR)) <= 1u) { /* 0x5D, 0x5E */
        *o++ = (uint8_t)(p[1] ^ XOR);
        p += 2;
      } else {
        break;
      }
    }
  }
  *written = (uint32_t)(o - out);
  *taken = (uint32_t)(p - in);
}
#endif

#ifdef ESCAPE_VBMI2
#include <immintrin.h>

#define WIDE __attribute__((target("avx512f,avx512bw,avx512vl,avx512vbmi2,bmi2,popcnt")))
#define EVEN_BITS 0x5555555555555555ull
#define ODD_BITS 0xAAAAAAAAAAAAAAAAull

static int8_t wide_ok = -1;

static int wide_available(void) {
  if (wide_ok < 0) {
    __builtin_cpu_init();
    wide_ok = (int8_t)(__builtin_cpu_supports("avx512vbmi2") && __builtin_cpu_supports("avx512bw") &&
                       __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("bmi2") &&
                       __builtin_cpu_supports("popcnt"));
  }
  return wide_ok;
}

/* The low `bits` bits set (bits <= 64). */
static uint64_t low_bits(uint32_t bits) { return bits >= 64u ? ~0ull : (1ull << bits) - 1u; }

/* Stores the first `count` bytes of v at out: all 64 when out has room, else just those. */
WIDE static void store_wide(uint8_t *out, uint32_t room_left, uint32_t count, __m512i v) {
  if (room_left >= 64u) {
    _mm512_storeu_si512((void *)out, v);
  } else {
    _mm512_mask_storeu_epi8((void *)out, low_bits(count), v);
  }
}

/* The escaped form of the 32 bytes v, whose FLAGs and ESCs are `special`: each input byte has two
 * output slots, an ESC slot (bit 2i of `slots`, kept only for a special byte) and a data slot (bit
 * 2i + 1); extracting the slots kept (pext) says which output bytes are data, and vpexpandb spreads
 * the data bytes (specials already ^ XOR) over those and leaves ESC in the rest. */
WIDE static __m512i escape32(__m256i v, __mmask32 special) {
  uint64_t slots = _pdep_u64(special, EVEN_BITS) | ODD_BITS;
  /* FLAG and ESC minus XOR are FLAG ^ XOR and ESC ^ XOR. */
  __m256i data = _mm256_mask_sub_epi8(v, special, v, _mm256_set1_epi8((char)XOR));
  return _mm512_mask_expand_epi8(_mm512_set1_epi8((char)ESC), _pext_u64(ODD_BITS, slots),
                                 _mm512_castsi256_si512(data));
}

/* FLAG and ESC are ESC + 0 and ESC + 1: one unsigned compare finds both. */
WIDE static __mmask32 special32(__m256i v) {
  return _mm256_cmple_epu8_mask(_mm256_sub_epi8(v, _mm256_set1_epi8((char)ESC)), _mm256_set1_epi8(1));
}

/* 32 bytes a step, with no branch on the special bytes; the last few by masked loads and stores.
 * Stops when out might not hold a step's result: the portable code finishes exactly. */
WIDE static void escape_wide(uint8_t *out, uint32_t room, uint32_t *written, const uint8_t *in, uint32_t n,
                             uint32_t *taken) {
  uint8_t *o = out + *written;
  const uint8_t *p = in + *taken;
  const uint8_t *end = in + n;
  while (end - p >= 64 && out + room - o >= 128) {
    /* two steps a round: fewer loop tests */
    __m256i a = _mm256_loadu_si256((const __m256i *)(const void *)p);
    __m256i b = _mm256_loadu_si256((const __m256i *)(const void *)(p + 32));
    __mmask32 special_a = special32(a);
    __mmask32 special_b = special32(b);
    _mm512_storeu_si512((void *)o, escape32(a, special_a));
    o += 32u + (uint32_t)__builtin_popcount(special_a);
    _mm512_storeu_si512((void *)o, escape32(b, special_b));
    o += 32u + (uint32_t)__builtin_popcount(special_b);
    p += 64;
  }
  if (end - p >= 32 && out + room - o >= 64) {
    __m256i v = _mm256_loadu_si256((const __m256i *)(const void *)p);
    __mmask32 special = special32(v);
    _mm512_storeu_si512((void *)o, escape32(v, special));
    o += 32u + (uint32_t)__builtin_popcount(special);
    p += 32;
  }
  if (p < end && end - p < 32) {
    uint32_t len = (uint32_t)(end - p);
    __m256i v = _mm256_maskz_loadu_epi8((__mmask32)low_bits(len), p);
    __mmask32 special = special32(v) & (__mmask32)low_bits(len);
    uint32_t count = len + (uint32_t)__builtin_popcount(special);
    if (count <= (uint32_t)(out + room - o)) {
      _mm512_mask_storeu_epi8((void *)o, low_bits(count), escape32(v, special));
      o += count;
      p += len;
    }
  }
  *written = (uint32_t)(o - out);
  *taken = (uint32_t)(p - in);
}

/* 64 bytes a step (fewer at the end or before a FLAG, by masks): vpcompressb drops the ESCs, and the
 * byte after each (the first of this step when an ESC ended the last) gets its XOR back; those must
 * be FLAG ^ XOR or ESC ^ XOR. Returns a UTVM_UNESCAPE_* code, or -1 when out might not hold a step's
 * result, for the portable code to finish exactly. */
WIDE static int unescape_wide(uint8_t *out, uint32_t room, uint32_t *written, const uint8_t *in, uint32_t n,
                              uint32_t *taken, uint8_t *escaped) {
  const __m512i flag = _mm512_set1_epi8((char)FLAG);
  const __m512i esc = _mm512_set1_epi8((char)ESC);
  const __m512i xor_bit = _mm512_set1_epi8((char)XOR);
  const __m512i escaped_esc = _mm512_set1_epi8((char)(ESC ^ XOR));
  const __m512i one = _mm512_set1_epi8(1);
  uint32_t o = *written;
  uint32_t i = *taken;
  uint64_t carry = *escaped;
  int why = UTVM_UNESCAPE_END;
  /* Whole steps with no FLAG and no bad escape; the general step below takes the rest. */
  while (n - i >= 64u && room - o >= 64u) {
    __m512i v = _mm512_loadu_si512((const void *)(in + i));
    uint64_t escs = _mm512_cmpeq_epi8_mask(v, esc);
    uint64_t partners = (escs << 1) | carry;
    /* partners must be ESC ^ XOR (0x5D) or FLAG ^ XOR (0x5E) */
    uint64_t bad = partners & ~_mm512_cmple_epu8_mask(_mm512_sub_epi8(v, escaped_esc), one);
    if ((_mm512_cmpeq_epi8_mask(v, flag) | bad) != 0u) {
      break;
    }
    __m512i data = _mm512_mask_add_epi8(v, partners, v, xor_bit); /* 0x5D, 0x5E + XOR: ESC, FLAG */
    _mm512_storeu_si512((void *)(out + o), _mm512_maskz_compress_epi8(~escs, data));
    o += 64u - (uint32_t)__builtin_popcountll(escs);
    carry = escs >> 63;
    i += 64u;
  }
  while (i < n) {
    uint32_t len = n - i < 64u ? n - i : 64u;
    uint64_t valid = low_bits(len);
    __m512i v = _mm512_maskz_loadu_epi8(valid, in + i);
    uint64_t flags = _mm512_cmpeq_epi8_mask(v, flag) & valid;
    uint64_t escs;
    uint64_t partners;
    uint64_t keep;
    uint32_t count;
    if (flags != 0u) {
      why = UTVM_UNESCAPE_FLAG; /* this step ends before it */
      len = (uint32_t)__builtin_ctzll(flags);
      valid = low_bits(len);
    }
    escs = _mm512_cmpeq_epi8_mask(v, esc) & valid;
    partners = ((escs << 1) | carry) & valid; /* an ESC in the last place carries over */
    keep = valid & ~escs;
    count = (uint32_t)__builtin_popcountll(keep);
    if ((partners & ~_mm512_cmple_epu8_mask(_mm512_sub_epi8(v, escaped_esc), one)) != 0u) {
      why = UTVM_UNESCAPE_BAD;
      break;
    }
    if (count > room - o) {
      why = -1;
      break;
    }
    store_wide(out + o, room - o, count,
               _mm512_maskz_compress_epi8(keep, _mm512_mask_add_epi8(v, partners, v, xor_bit)));
    o += count;
    if (len > 0u) {
      carry = (escs >> (len - 1u)) & 1u;
    }
    i += len;
    if (why != UTVM_UNESCAPE_END) {
      break;
    }
  }
  *written = o;
  *taken = i;
  *escaped = (uint8_t)carry;
  return why;
}
#endif

void utvm_escape(uint8_t *out, uint32_t room, uint32_t *written, const uint8_t *in, uint32_t n,
                 uint32_t *taken) {
  if (*taken >= n) {
    return; /* nothing to do (in may be NULL) */
  }
#ifdef ESCAPE_VBMI2
  if (wide_available()) {
    escape_wide(out, room, written, in, n, taken);
  }
#endif
#ifdef ESCAPE_SSE2
  blocks_sse2(out, room, written, in, n, taken, 0);
#endif
  escape_portable(out, room, written, in, n, taken); /* the tail, or up to a nearly full out */
}

int utvm_unescape(uint8_t *out, uint32_t room, uint32_t *written, const uint8_t *in, uint32_t n,
                  uint32_t *taken, uint8_t *escaped) {
  if (*taken >= n) {
    return UTVM_UNESCAPE_END; /* nothing to do (in may be NULL) */
  }
#ifdef ESCAPE_VBMI2
  if (wide_available()) {
    int why = unescape_wide(out, room, written, in, n, taken, escaped);
    return why >= 0 ? why : unescape_portable(out, room, written, in, n, taken, escaped);
  }
#endif
#ifdef ESCAPE_SSE2
  /* Blocks while they go, then up to 16 bytes (a FLAG, a bad escape, the tail) the portable way,
   * and back. */
  for (;;) {
    uint32_t stop;
    int why;
    if (!*escaped) {
      blocks_sse2(out, room, written, in, n, taken, 1);
    }
    stop = (n - *taken > 16u) ? *taken + 16u : n;
    why = unescape_portable(out, room, written, in, stop, taken, escaped);
    if (why != UTVM_UNESCAPE_END || *taken == n) {
      return why;
    }
  }
#else
  return unescape_portable(out, room, written, in, n, taken, escaped);
#endif
}
