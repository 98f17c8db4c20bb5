/*
 * 2-D convolution (groups 1) as a matrix product: each pair of output pixels gathers its
 * receptive field (im2col, padding taps reading the input zero point) into 16-bit columns, once,
 * and every pair of output channels runs over them: 2 x 2 outputs per pass of K. With the DSP
 * extension a block of 4 along K costs 3 LDRD, 4 SXTB16 and 8 SMLAD for 16 multiply-accumulates.
 *
 * Weights (compile-time layout): rows in pairs, per pair blocks of 8 bytes = 4 bytes of row 2p
 * then 4 of row 2p+1, K padded with zeros to K4 (a multiple of 4); an odd last row is K4 plain
 * bytes. Columns (scratch): per block of 4 along K, pixel 0's four values then pixel 1's, as
 * int16; with the DSP extension in SXTB16's order (k0, k2, k1, k3), which matches what SXTB16
 * makes of a weight word, so neither side needs reordering at run time.
 */
#include "utvm_nn_arith.h"

#define UTVM_NN_KIND_FAST 1
#define UTVM_NN_KIND_GENERIC 0

static int32_t round4(int32_t n) { return (n + 3) & ~3; }

uint32_t utvm_nn_conv_scratch_bytes(const utvm_nn_conv_t *p) {
  uint32_t k4 = (uint32_t)round4(p->k_h * p->k_w * p->in_c);
  return 2u * k4 * 2u /* two int16 columns */ + k4 /* int8 staging */;
}

/* The receptive field of output pixel (oy, ox) as K int8 values (padding: the zero point), then
 * zeros up to K4. Returns where the K values are: the input itself for a 1x1 convolution with
 * stride 1 and no padding, else `stage`. */
static const int8_t *gather(const utvm_nn_conv_t *p, const int8_t *input, int32_t oy, int32_t ox, int8_t *stage) {
  const int32_t cin = p->in_c;
  const int32_t iy0 = oy * p->stride_h - p->pad_top;
  const int32_t ix0 = ox * p->stride_w - p->pad_left;
  const int8_t pad = (int8_t)p->input_zero_point;
  int8_t *dst = stage;
  int32_t ky, kx;
  if (p->k_h == 1 && p->k_w == 1 && iy0 >= 0 && ix0 >= 0 && iy0 < p->in_h && ix0 < p->in_w) {
    return input + ((int32_t)iy0 * p->in_w + ix0) * cin;
  }
  for (ky = 0; ky < p->k_h; ++ky) {
    const int32_t iy = iy0 + ky * p->dilation_h;
    if (iy < 0 || iy >= p->in_h) {
      memset(dst, pad, (size_t)(p->k_w * cin));
      dst += p->k_w * cin;
      continue;
    }
    if (p->dilation_w == 1) {
      /* Taps [lo, hi) of this kernel row are inside the image: one copy, the rest padding. */
      int32_t lo = ix0 < 0 ? -ix0 : 0;
      int32_t hi = p->in_w - ix0 < p->k_w ? p->in_w - ix0 : p->k_w;
      lo = lo < p->k_w ? lo : p->k_w;
      hi = hi > lo ? hi : lo;
      memset(dst, pad, (size_t)(lo * cin));
      memcpy(dst + lo * cin, input + (iy * p->in_w + ix0 + lo) * cin, (size_t)((hi - lo) * cin));
      memset(dst + hi * cin, pad, (size_t)((p->k_w - hi) * cin));
      dst += p->k_w * cin;
      continue;
    }
    for (kx = 0; kx < p->k_w; ++kx) {
      const int32_t ix = ix0 + kx * p->dilation_w;
      if (ix < 0 || ix >= p->in_w) {
        memset(dst, pad, (size_t)cin);
      } else {
        memcpy(dst, input + (iy * p->in_w + ix) * cin, (size_t)cin);
      }
      dst += cin;
    }
  }
  return stage;
}

/* K int8 values (then zeros to K4) into column slot `slot` (0 or 1) of the interleaved buffer. */
static void widen(const int8_t *src, int32_t k, int16_t *cols, int32_t slot) {
  int16_t *dst = cols + slot * 4;
  int32_t blocks = k >> 2;
  int32_t rest = k & 3;
  int32_t j;
  for (; blocks > 0; --blocks) {
#if UTVM_NN_DSP
    uint32_t word = utvm_nn_load32(src);
    utvm_nn_store32(dst, utvm_nn_sxtb16(word));
    utvm_nn_store32(dst + 2, utvm_nn_sxtb16_ror8(word));
#else
    dst[0] = src[0];
    dst[1] = src[1];
    dst[2] = src[2];
    dst[3] = src[3];
#endif
    src += 4;
    dst += 8;
  }
  if (rest) {
    int8_t tail[4] = {0, 0, 0, 0};
    for (j = 0; j < rest; ++j) {
      tail[j] = src[j];
    }
#if UTVM_NN_DSP
    dst[0] = tail[0];
    dst[1] = tail[2];
    dst[2] = tail[1];
    dst[3] = tail[3];
#else
    dst[0] = tail[0];
    dst[1] = tail[1];
    dst[2] = tail[2];
    dst[3] = tail[3];
#endif
  }
}

#if UTVM_NN_SSE2
/* Two blocks of K per pass: sign-extend 16 weight bytes, and PMADDWD both pixels' columns with
 * them as they are (pixel 0 by row 0, pixel 1 by row 1) and with their halves swapped (pixel 0 by
 * row 1, pixel 1 by row 0). Each lane holds a pair of products; the pairs are summed at the end. */
UTVM_NN_NOINLINE void dot_2x2_sse2(const int16_t *c, const int8_t *w, int32_t blocks, int32_t *acc) {
  __m128i same = _mm_setzero_si128(), cross = _mm_setzero_si128();
  int32_t s[4], x[4];
  for (; blocks >= 2; blocks -= 2) {
    const __m128i wb = _mm_loadu_si128((const __m128i *)(const void *)w);
    const __m128i w0 = _mm_srai_epi16(_mm_unpacklo_epi8(wb, wb), 8);
    const __m128i w1 = _mm_srai_epi16(_mm_unpackhi_epi8(wb, wb), 8);
    const __m128i c0 = _mm_loadu_si128((const __m128i *)(const void *)c);
    const __m128i c1 = _mm_loadu_si128((const __m128i *)(const void *)(c + 8));
    same = _mm_add_epi32(same, _mm_madd_epi16(c0, w0));
    cross = _mm_add_epi32(cross, _mm_madd_epi16(c0, _mm_shuffle_epi32(w0, _MM_SHUFFLE(1, 0, 3, 2))));
    same = _mm_add_epi32(same, _mm_madd_epi16(c1, w1));
    cross = _mm_add_epi32(cross, _mm_madd_epi16(c1, _mm_shuffle_epi32(w1, _MM_SHUFFLE(1, 0, 3, 2))));
    c += 16;
    w += 16;
  }
  if (blocks) {
    const __m128i wb = _mm_loadl_epi64((const __m128i *)(const void *)w);
    const __m128i w0 = _mm_srai_epi16(_mm_unpacklo_epi8(wb, wb), 8);
    const __m128i c0 = _mm_loadu_si128((const __m128i *)(const void *)c);
    same = _mm_add_epi32(same, _mm_madd_epi16(c0, w0));
    cross = _mm_add_epi32(cross, _mm_madd_epi16(c0, _mm_shuffle_epi32(w0, _MM_SHUFFLE(1, 0, 3, 2))));
  }
  _mm_storeu_si128((__m128i *)(void *)s, same);
  _mm_storeu_si128((__m128i *)(void *)x, cross);
  acc[0] += s[0] + s[1];
  acc[1] += x[0] + x[1];
  acc[2] += x[2] + x[3];
  acc[3] += s[2] + s[3];
}
#elif !UTVM_NN_DSP
/* Without the DSP extension (Cortex-M3, other CPUs): one tap of both pixels and both channels,
 * four loads and four multiply-accumulates. */
#define UTVM_NN_TAP_2X2(j)                    \
  do {                                        \
    const int32_t x0 = c[j], x1 = c[4 + (j)]; \
    const int32_t w0 = w[j], w1 = w[4 + (j)]; \
    a00 += x0 * w0;                           \
    a01 += x0 * w1;                           \
    a10 += x1 * w0;                           \
    a11 += x1 * w1;                           \
  } while (0)

/* Its own function, the block written out, so that the four sums, the two pointers and the four
 * operands stay in registers (inlined into the pixel loop, the sums were spilled to the stack). */
UTVM_NN_NOINLINE void dot_2x2_plain(const int16_t *c, const int8_t *w, int32_t blocks, int32_t *acc) {
  int32_t a00 = acc[0], a01 = acc[1], a10 = acc[2], a11 = acc[3];
  for (; blocks > 0; --blocks) {
    UTVM_NN_TAP_2X2(0);
    UTVM_NN_TAP_2X2(1);
    UTVM_NN_TAP_2X2(2);
    UTVM_NN_TAP_2X2(3);
    c += 8;
    w += 8;
  }
  acc[0] = a00;
  acc[1] = a01;
  acc[2] = a10;
  acc[3] = a11;
}
#undef UTVM_NN_TAP_2X2
#endif

/* Sums of 2 pixels x 2 channels over K4 (the columns hold both pixels; w two interleaved rows). */
UTVM_NN_INLINE void dot_2x2(const int16_t *cols, const int8_t *w, int32_t blocks, int32_t *acc) {
  int32_t a00 = acc[0], a01 = acc[1], a10 = acc[2], a11 = acc[3];
#if UTVM_NN_ASM_LOOPS
  /* One block: 3 LDRD, 4 SXTB16, 8 SMLAD. Written out so that the 13 live values stay in
   * registers (the compiler spills accumulators when this is inlined into the caller). */
#define UTVM_NN_BLOCK_2X2                              \
  "ldrd %[x0], %[x1], [%[c]], #8\n\t"                 \
  "ldrd %[w0], %[w1], [%[w]], #8\n\t"                 \
  "sxtb16 %[t0], %[w0]\n\t"                          \
  "sxtb16 %[w0], %[w0], ror #8\n\t"                  \
  "smlad %[a00], %[t0], %[x0], %[a00]\n\t"           \
  "smlad %[a00], %[w0], %[x1], %[a00]\n\t"           \
  "sxtb16 %[t1], %[w1]\n\t"                          \
  "sxtb16 %[w1], %[w1], ror #8\n\t"                  \
  "smlad %[a01], %[t1], %[x0], %[a01]\n\t"           \
  "smlad %[a01], %[w1], %[x1], %[a01]\n\t"           \
  "ldrd %[x0], %[x1], [%[c]], #8\n\t"                 \
  "smlad %[a10], %[t0], %[x0], %[a10]\n\t"           \
  "smlad %[a10], %[w0], %[x1], %[a10]\n\t"           \
  "smlad %[a11], %[t1], %[x0], %[a11]\n\t"           \
  "smlad %[a11], %[w1], %[x1], %[a11]\n\t"
  const int16_t *c = cols;
  int32_t pairs = blocks >> 1;
  uint32_t x0, x1, w0, w1, t0, t1;
  if (blocks & 1) {
    __asm__ volatile(UTVM_NN_BLOCK_2X2
                     : [a00] "+r"(a00), [a01] "+r"(a01), [a10] "+r"(a10), [a11] "+r"(a11), [c] "+r"(c),
                       [w] "+r"(w), [x0] "=&r"(x0), [x1] "=&r"(x1), [w0] "=&r"(w0), [w1] "=&r"(w1),
                       [t0] "=&r"(t0), [t1] "=&r"(t1)
                     :
                     : "memory");
  }
  if (pairs > 0) {
    __asm__ volatile("1:\n\t" UTVM_NN_BLOCK_2X2 UTVM_NN_BLOCK_2X2
                     "subs %[n], %[n], #1\n\t"
                     "bne 1b"
                     : [a00] "+r"(a00), [a01] "+r"(a01), [a10] "+r"(a10), [a11] "+r"(a11), [c] "+r"(c),
                       [w] "+r"(w), [n] "+r"(pairs), [x0] "=&r"(x0), [x1] "=&r"(x1), [w0] "=&r"(w0),
                       [w1] "=&r"(w1), [t0] "=&r"(t0), [t1] "=&r"(t1)
                     :
                     : "cc", "memory");
  }
#undef UTVM_NN_BLOCK_2X2
#elif UTVM_NN_DSP
  const uint32_t *c = (const uint32_t *)(const void *)cols;
  const uint32_t *wp = (const uint32_t *)(const void *)w;
  for (; blocks > 0; --blocks) {
    uint32_t w0 = wp[0], w1 = wp[1];
    uint32_t t0 = utvm_nn_sxtb16(w0), t1 = utvm_nn_sxtb16(w1);
    w0 = utvm_nn_sxtb16_ror8(w0);
    w1 = utvm_nn_sxtb16_ror8(w1);
    a00 = utvm_nn_smlad(w0, c[1], utvm_nn_smlad(t0, c[0], a00));
    a01 = utvm_nn_smlad(w1, c[1], utvm_nn_smlad(t1, c[0], a01));
    a10 = utvm_nn_smlad(w0, c[3], utvm_nn_smlad(t0, c[2], a10));
    a11 = utvm_nn_smlad(w1, c[3], utvm_nn_smlad(t1, c[2], a11));
    c += 4;
    wp += 2;
  }
#elif UTVM_NN_SSE2
  dot_2x2_sse2(cols, w, blocks, acc);
  return;
#else
  dot_2x2_plain(cols, w, blocks, acc);
  return;
#endif
  acc[0] = a00;
  acc[1] = a01;
  acc[2] = a10;
  acc[3] = a11;
}

/* Sums of `pixels` (1 or 2) pixels x 1 channel over K4, the row's K4 bytes plain. */
static void dot_1(const int16_t *cols, const int8_t *w, int32_t blocks, int32_t pixels, int32_t *acc) {
  int32_t s;
  for (s = 0; s < pixels; ++s) {
    const int16_t *c = cols + 4 * s;
    const int8_t *wp = w;
    int32_t a = acc[s];
    int32_t b;
    for (b = 0; b < blocks; ++b) {
#if UTVM_NN_DSP
      uint32_t word = utvm_nn_load32(wp);
      a = utvm_nn_smlad(utvm_nn_sxtb16(word), utvm_nn_load32(c), a);
      a = utvm_nn_smlad(utvm_nn_sxtb16_ror8(word), utvm_nn_load32(c + 2), a);
#else
      a += c[0] * wp[0] + c[1] * wp[1] + c[2] * wp[2] + c[3] * wp[3];
#endif
      c += 8;
      wp += 4;
    }
    acc[s] = a;
  }
}

UTVM_NN_INLINE void conv_run(const utvm_nn_conv_t *p, const int8_t *input, const int8_t *weights,
                             const int32_t *bias, const int32_t *multiplier, const int32_t *shift, int8_t *output,
                             void *scratch, const int kind) {
  const int32_t k = p->k_h * p->k_w * p->in_c;
  const int32_t k4 = round4(k);
  const int32_t blocks = k4 >> 2;
  const int32_t oc = p->out_c;
  const int32_t pairs = oc >> 1;
  const int32_t pixels = p->out_h * p->out_w;
  const utvm_nn_output_t *o = &p->out;
  int16_t *cols = (int16_t *)scratch;
  int8_t *stage = (int8_t *)scratch + 2 * k4 * 2;
  int32_t n, px;
  for (n = 0; n < p->batches; ++n) {
    const int8_t *in = input + n * p->in_h * p->in_w * p->in_c;
    int8_t *out = output + n * pixels * oc;
    for (px = 0; px < pixels; px += 2) {
      const int32_t count = pixels - px >= 2 ? 2 : 1;
      const int8_t *w = weights;
      int8_t *out0 = out + px * oc;
      int32_t s, c;
      for (s = 0; s < count; ++s) {
        const int32_t q = px + s;
        widen(gather(p, in, q / p->out_w, q % p->out_w, stage), k, cols, s);
      }
      if (count == 1) { /* the second column slot is read but unused: give it defined values */
        memset(stage, 0, (size_t)k4);
        widen(stage, k4, cols, 1);
      }
      for (c = 0; c < pairs; ++c) {
        const int32_t ch = 2 * c;
        int32_t acc[4];
        acc[0] = acc[2] = bias[ch];
        acc[1] = acc[3] = bias[ch + 1];
        dot_2x2(cols, w, blocks, acc);
        w += 2 * k4;
        if (kind == UTVM_NN_KIND_FAST) {
          const int32_t m0 = multiplier[ch], m1 = multiplier[ch + 1];
          const int32_t r0 = -shift[ch], r1 = -shift[ch + 1];
          const int32_t zp = o->output_zero_point;
          out0[ch] = utvm_nn_sat8(utvm_nn_rq_fast(acc[0], m0, r0, zp));
          out0[ch + 1] = utvm_nn_sat8(utvm_nn_rq_fast(acc[1], m1, r1, zp));
          if (count == 2) {
            out0[oc + ch] = utvm_nn_sat8(utvm_nn_rq_fast(acc[2], m0, r0, zp));
            out0[oc + ch + 1] = utvm_nn_sat8(utvm_nn_rq_fast(acc[3], m1, r1, zp));
          }
        } else {
          out0[ch] = utvm_nn_output(o, acc[0], multiplier[ch], shift[ch], 0);
          out0[ch + 1] = utvm_nn_output(o, acc[1], multiplier[ch + 1], shift[ch + 1], 0);
          if (count == 2) {
            out0[oc + ch] = utvm_nn_output(o, acc[2], multiplier[ch], shift[ch], 0);
            out0[oc + ch + 1] = utvm_nn_output(o, acc[3], multiplier[ch + 1], shift[ch + 1], 0);
          }
        }
      }
      if (oc & 1) {
        const int32_t ch = oc - 1;
        int32_t acc[2];
        acc[0] = acc[1] = bias[ch];
        dot_1(cols, w, blocks, count, acc);
        for (s = 0; s < count; ++s) {
          out0[s * oc + ch] = utvm_nn_output(o, acc[s], multiplier[ch], shift[ch], kind == UTVM_NN_KIND_FAST);
        }
      }
    }
  }
}

/* The compiler checked that every layer it sends here has an output stage this file handles. */
static int fast_output(const utvm_nn_output_t *o, const int32_t *multiplier, const int32_t *shift, int32_t channels) {
  return o->act_min == -128 && o->act_max == 127 && utvm_nn_all_fast(o, multiplier, shift, channels);
}

void utvm_nn_conv_s8(const utvm_nn_conv_t *p, const int8_t *input, const int8_t *weights, const int32_t *bias,
                     const int32_t *multiplier, const int32_t *shift, int8_t *output, void *scratch) {
  if (fast_output(&p->out, multiplier, shift, p->out_c)) {
    conv_run(p, input, weights, bias, multiplier, shift, output, scratch, UTVM_NN_KIND_FAST);
  } else {
    conv_run(p, input, weights, bias, multiplier, shift, output, scratch, UTVM_NN_KIND_GENERIC);
  }
}
