/*
 * Arithmetic shared by utvm's int8 kernels (internal to the library): requantization, the
 * output stage, and the DSP extension's packed 16-bit operations with portable equivalents.
 */
#ifndef UTVM_NN_ARITH_H_
#define UTVM_NN_ARITH_H_

#include <stdint.h>
#include <string.h>

#include "utvm_nn.h"

#if defined(__GNUC__) || defined(__clang__)
#define UTVM_NN_INLINE static inline __attribute__((always_inline))
/* A loop kept in its own function, so that it gets the registers to itself. */
#define UTVM_NN_NOINLINE static __attribute__((noinline))
#else
#define UTVM_NN_INLINE static inline
#define UTVM_NN_NOINLINE static
#endif

/* Thumb-2 cores (Cortex-M3 and up, and A/R in Thumb state): SMULL, ADC with shifted operands,
 * SSAT. The DSP extension adds SXTB16 and SMLAD. */
#if (defined(__GNUC__) || defined(__clang__)) && defined(__thumb2__)
#define UTVM_NN_THUMB2 1
#else
#define UTVM_NN_THUMB2 0
#endif
#if UTVM_NN_THUMB2 && defined(__ARM_FEATURE_DSP) && __ARM_FEATURE_DSP
#define UTVM_NN_DSP 1
#else
#define UTVM_NN_DSP 0
#endif
/* x86-64 (SSE2 is part of its baseline): the inner products take PMADDWD, eight 16-bit products
 * summed in pairs per instruction, which is what SMLAD does two at a time on Arm. */
#if !UTVM_NN_DSP && defined(__SSE2__) && !defined(UTVM_NN_NO_SIMD)
#define UTVM_NN_SSE2 1
#include <emmintrin.h>
#else
#define UTVM_NN_SSE2 0
#endif
/* Inner loops written as assembly need the registers an optimizing build leaves free (13 to 14);
 * an unoptimized build (-O0) keeps more for itself and takes the C versions. */
#if UTVM_NN_DSP && defined(__OPTIMIZE__)
#define UTVM_NN_ASM_LOOPS 1
#else
#define UTVM_NN_ASM_LOOPS 0
#endif

/* ---- loads of four bytes or two halfwords from any address ------------------------------- */

UTVM_NN_INLINE uint32_t utvm_nn_load32(const void *p) {
  uint32_t v;
  memcpy(&v, p, sizeof v); /* one LDR where the CPU reads unaligned words (Cortex-M3 and up) */
  return v;
}

UTVM_NN_INLINE void utvm_nn_store32(void *p, uint32_t v) { memcpy(p, &v, sizeof v); }

#if UTVM_NN_DSP
/* (b0, b2) and (b1, b3) of a word's bytes, sign-extended into 16-bit halves. */
UTVM_NN_INLINE uint32_t utvm_nn_sxtb16(uint32_t x) {
  uint32_t r;
  __asm__("sxtb16 %0, %1" : "=r"(r) : "r"(x));
  return r;
}
UTVM_NN_INLINE uint32_t utvm_nn_sxtb16_ror8(uint32_t x) {
  uint32_t r;
  __asm__("sxtb16 %0, %1, ror #8" : "=r"(r) : "r"(x));
  return r;
}
/* acc + lo(a) * lo(b) + hi(a) * hi(b), 16-bit signed halves. */
UTVM_NN_INLINE int32_t utvm_nn_smlad(uint32_t a, uint32_t b, int32_t acc) {
  int32_t r;
  __asm__("smlad %0, %1, %2, %3" : "=r"(r) : "r"(a), "r"(b), "r"(acc));
  return r;
}
/* acc + one 16-bit half of a times one of b: SMLA<x><y>, x and y B(ottom) or T(op). */
#define UTVM_NN_SMLAXY(name, insn)                                         \
  UTVM_NN_INLINE int32_t name(uint32_t a, uint32_t b, int32_t acc) {      \
    int32_t r;                                                             \
    __asm__(insn " %0, %1, %2, %3" : "=r"(r) : "r"(a), "r"(b), "r"(acc)); \
    return r;                                                              \
  }
UTVM_NN_SMLAXY(utvm_nn_smlabb, "smlabb")
UTVM_NN_SMLAXY(utvm_nn_smlabt, "smlabt")
UTVM_NN_SMLAXY(utvm_nn_smlatb, "smlatb")
UTVM_NN_SMLAXY(utvm_nn_smlatt, "smlatt")
/* Two words loaded with one LDRD, the pointer advanced by 8 (it must be 4-byte aligned). */
#define UTVM_NN_LDRD_IA(lo, hi, ptr) __asm__("ldrd %0, %1, [%2], #8" : "=r"(lo), "=r"(hi), "+r"(ptr) : : "memory")
#endif

/* ---- requantization ------------------------------------------------------------------------ */

/* The exact reference: TFLite's MultiplyByQuantizedMultiplier as utvm's integer kernels define
 * it (integer_kernels.requantize), in 64-bit arithmetic, for any shift. */
static inline int32_t utvm_nn_requantize_ref(int32_t acc, int32_t multiplier, int32_t shift, int32_t rounding) {
  if (rounding == UTVM_NN_ROUND_SINGLE) {
    int32_t total = 31 - shift;
    int64_t product = (int64_t)acc * multiplier + ((int64_t)1 << (total - 1));
    return (int32_t)(product >> total);
  } else {
    int32_t left = shift > 0 ? shift : 0;
    int32_t right = shift > 0 ? 0 : -shift;
    int64_t product = (int64_t)((uint64_t)(int64_t)acc << left) * multiplier;
    int64_t high = (product + ((int64_t)1 << 30)) >> 31;
    int64_t half = (((int64_t)1 << right) - 1) >> 1;
    int64_t up = (high >= 0 && right > 0) ? 1 : 0;
    return (int32_t)((high + half + up) >> right);
  }
}

/* The fast path: "double" rounding with a right shift r >= 1 (a real multiplier below one half,
 * which is nearly every layer), plus the output zero point. SaturatingRoundingDoublingHighMul is
 * (acc * m + 2^30) >> 31 (no saturation: m > 0); RoundingDivideByPOT(x, r) rounds halves away
 * from zero, which is (t >> r) + bit r-1 of t with t = x - (x < 0). On Thumb-2 that is SMULL,
 * then the carry out of each shift does the rounding: six instructions with the zero point. */
UTVM_NN_INLINE int32_t utvm_nn_rq_fast(int32_t acc, int32_t multiplier, int32_t r, int32_t zero_point) {
#if UTVM_NN_THUMB2
  int32_t hi, lo;
  __asm__("smull %1, %0, %2, %3\n\t"
          "lsrs %1, %1, #31\n\t"
          "adc %0, %1, %0, lsl #1\n\t"
          "add %0, %0, %0, asr #31\n\t"
          "asrs %0, %0, %4\n\t"
          "adc %0, %0, %5"
          : "=&r"(hi), "=&r"(lo)
          : "r"(acc), "r"(multiplier), "r"(r), "r"(zero_point)
          : "cc");
  return hi;
#else
  int64_t product = (int64_t)acc * multiplier;
  int32_t high = (int32_t)((product + ((int64_t)1 << 30)) >> 31);
  int32_t t = high + (high >> 31);
  return (t >> r) + ((t >> (r - 1)) & 1) + zero_point;
#endif
}

#if UTVM_NN_SSE2
/* utvm_nn_rq_fast of four sums with one channel's constants (m > 0, r >= 1), saturated to int8
 * in the four low bytes. SSE2 multiplies unsigned 32-bit lanes only (PMULUDQ, lanes 0 and 2): a
 * negative sum's product then comes out 2^32 * m too large, which is taken off its high half. */
UTVM_NN_INLINE uint32_t utvm_nn_rq_fast_4(__m128i a, int32_t multiplier, int32_t r, int32_t zero_point) {
  const __m128i high_half = _mm_set_epi32(-1, 0, -1, 0);
  const __m128i half = _mm_set_epi32(0, 1 << 30, 0, 1 << 30);
  const __m128i m = _mm_set1_epi32(multiplier);
  const __m128i fix = _mm_and_si128(_mm_srai_epi32(a, 31), m);
  __m128i even = _mm_mul_epu32(a, m);
  __m128i odd = _mm_mul_epu32(_mm_srli_epi64(a, 32), m);
  __m128i high, t, q;
  even = _mm_sub_epi64(even, _mm_slli_epi64(fix, 32));
  odd = _mm_sub_epi64(odd, _mm_and_si128(fix, high_half));
  even = _mm_srli_epi64(_mm_add_epi64(even, half), 31);
  odd = _mm_srli_epi64(_mm_add_epi64(odd, half), 31);
  high = _mm_or_si128(_mm_andnot_si128(high_half, even), _mm_slli_epi64(odd, 32));
  /* RoundingDivideByPOT: (t >> r) + bit r-1 of t */
  t = _mm_add_epi32(high, _mm_srai_epi32(high, 31));
  q = _mm_add_epi32(_mm_sra_epi32(t, _mm_cvtsi32_si128(r)),
                    _mm_and_si128(_mm_sra_epi32(t, _mm_cvtsi32_si128(r - 1)), _mm_set1_epi32(1)));
  q = _mm_add_epi32(q, _mm_set1_epi32(zero_point));
  q = _mm_packs_epi32(q, q);
  return (uint32_t)_mm_cvtsi128_si32(_mm_packs_epi16(q, q));
}
#endif

/* Saturate to int8 (SSAT on Thumb-2). */
UTVM_NN_INLINE int8_t utvm_nn_sat8(int32_t v) {
#if UTVM_NN_THUMB2
  __asm__("ssat %0, #8, %0" : "+r"(v));
  return (int8_t)v;
#else
  return (int8_t)(v < -128 ? -128 : (v > 127 ? 127 : v));
#endif
}

/* Clamp to [lo, hi] within int8's range, and narrow. */
UTVM_NN_INLINE int8_t utvm_nn_clamp8(int32_t v, int32_t lo, int32_t hi) {
#if UTVM_NN_THUMB2
  __asm__("ssat %0, #8, %0" : "+r"(v));
#endif
  v = v < lo ? lo : v;
  v = v > hi ? hi : v;
  return (int8_t)v;
}

/* Per-channel constants of the output stage. `fast` says every channel takes utvm_nn_rq_fast
 * (double rounding, shift <= -1); the compiler checks it, the kernels check it again. */
UTVM_NN_INLINE int32_t utvm_nn_all_fast(const utvm_nn_output_t *o, const int32_t *multiplier, const int32_t *shift,
                                        int32_t channels) {
  int32_t c;
  if (o->rounding != UTVM_NN_ROUND_DOUBLE) {
    return 0;
  }
  for (c = 0; c < channels; ++c) {
    if (shift[c] >= 0 || multiplier[c] < 0) {
      return 0;
    }
  }
  return 1;
}

/* One output: acc (with bias') requantized, offset, clamped. */
UTVM_NN_INLINE int8_t utvm_nn_output(const utvm_nn_output_t *o, int32_t acc, int32_t multiplier, int32_t shift,
                                     int fast) {
  int32_t v;
  if (fast) {
    v = utvm_nn_rq_fast(acc, multiplier, -shift, o->output_zero_point);
  } else {
    v = utvm_nn_requantize_ref(acc, multiplier, shift, o->rounding) + o->output_zero_point;
  }
  return utvm_nn_clamp8(v, o->act_min, o->act_max);
}

#endif /* UTVM_NN_ARITH_H_ */
