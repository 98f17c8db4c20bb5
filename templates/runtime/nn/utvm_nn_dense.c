/*
 * Fully connected: each output is a dot product of the input row with a weight row. Rows go four
 * at a time, so each word of input (four values) is loaded and widened once for four rows.
 *
 * Weights (compile-time layout): rows in fours, per four blocks of 16 bytes = 4 bytes of each
 * row along K, K padded with zeros to K4 (a multiple of 4); the last M % 4 rows K4 plain bytes each.
 */
#include "utvm_nn_arith.h"

#if UTVM_NN_DSP
/* Two rows' words (w0 for row a, w1 for row b) times the block's four inputs (xe, xo). */
#define UTVM_NN_TWO_ROWS(a, b)         \
  UTVM_NN_LDRD_IA(w0, w1, wp);         \
  t = utvm_nn_sxtb16(w0);              \
  w0 = utvm_nn_sxtb16_ror8(w0);        \
  a = utvm_nn_smlad(t, xe, a);         \
  a = utvm_nn_smlad(w0, xo, a);        \
  t = utvm_nn_sxtb16(w1);              \
  w1 = utvm_nn_sxtb16_ror8(w1);        \
  b = utvm_nn_smlad(t, xe, b);         \
  b = utvm_nn_smlad(w1, xo, b)
#endif

static void dot_4(const int8_t *x, int32_t k, const int8_t *w, int32_t *acc) {
  int32_t a0 = acc[0], a1 = acc[1], a2 = acc[2], a3 = acc[3];
  int32_t blocks = k >> 2;
  int32_t rest = k & 3;
  int32_t j;
#if UTVM_NN_DSP
  const uint32_t *wp = (const uint32_t *)(const void *)w;
  for (; blocks > 0; --blocks) {
    const uint32_t xw = utvm_nn_load32(x);
    const uint32_t xe = utvm_nn_sxtb16(xw), xo = utvm_nn_sxtb16_ror8(xw);
    uint32_t w0, w1, t;
    x += 4;
    UTVM_NN_TWO_ROWS(a0, a1);
    UTVM_NN_TWO_ROWS(a2, a3);
  }
  w = (const int8_t *)(const void *)wp;
#elif UTVM_NN_SSE2
  /* A block's 16 weight bytes widened to two vectors (rows 0 and 1, rows 2 and 3), each PMADDWD
   * with the block's four inputs twice over: lanes hold pairs of products, summed at the end. */
  __m128i s01 = _mm_setzero_si128(), s23 = _mm_setzero_si128();
  int32_t s[8];
  for (; blocks > 0; --blocks) {
    const __m128i wb = _mm_loadu_si128((const __m128i *)(const void *)w);
    __m128i xv = _mm_cvtsi32_si128((int)utvm_nn_load32(x));
    xv = _mm_srai_epi16(_mm_unpacklo_epi8(xv, xv), 8);
    xv = _mm_unpacklo_epi64(xv, xv);
    s01 = _mm_add_epi32(s01, _mm_madd_epi16(_mm_srai_epi16(_mm_unpacklo_epi8(wb, wb), 8), xv));
    s23 = _mm_add_epi32(s23, _mm_madd_epi16(_mm_srai_epi16(_mm_unpackhi_epi8(wb, wb), 8), xv));
    x += 4;
    w += 16;
  }
  _mm_storeu_si128((__m128i *)(void *)s, s01);
  _mm_storeu_si128((__m128i *)(void *)(s + 4), s23);
  a0 += s[0] + s[1];
  a1 += s[2] + s[3];
  a2 += s[4] + s[5];
  a3 += s[6] + s[7];
#else
  for (; blocks > 0; --blocks) {
    const int32_t x0 = x[0], x1 = x[1], x2 = x[2], x3 = x[3];
    a0 += x0 * w[0] + x1 * w[1] + x2 * w[2] + x3 * w[3];
    a1 += x0 * w[4] + x1 * w[5] + x2 * w[6] + x3 * w[7];
    a2 += x0 * w[8] + x1 * w[9] + x2 * w[10] + x3 * w[11];
    a3 += x0 * w[12] + x1 * w[13] + x2 * w[14] + x3 * w[15];
    x += 4;
    w += 16;
  }
#endif
  for (j = 0; j < rest; ++j) {
    const int32_t xj = x[j];
    a0 += xj * w[j];
    a1 += xj * w[4 + j];
    a2 += xj * w[8 + j];
    a3 += xj * w[12 + j];
  }
  acc[0] = a0;
  acc[1] = a1;
  acc[2] = a2;
  acc[3] = a3;
}
#undef UTVM_NN_TWO_ROWS

static int32_t dot_1(const int8_t *x, int32_t k, const int8_t *w, int32_t acc) {
  int32_t j = 0;
#if UTVM_NN_DSP
  for (; j + 4 <= k; j += 4) {
    const uint32_t xw = utvm_nn_load32(x + j), ww = utvm_nn_load32(w + j);
    acc = utvm_nn_smlad(utvm_nn_sxtb16(ww), utvm_nn_sxtb16(xw), acc);
    acc = utvm_nn_smlad(utvm_nn_sxtb16_ror8(ww), utvm_nn_sxtb16_ror8(xw), acc);
  }
#endif
  for (; j < k; ++j) {
    acc += x[j] * w[j];
  }
  return acc;
}

void utvm_nn_dense_s8(const utvm_nn_dense_t *p, const int8_t *input, const int8_t *weights, const int32_t *bias,
                      const int32_t *multiplier, const int32_t *shift, int8_t *output) {
  const int32_t k = p->k;
  const int32_t k4 = (k + 3) & ~3;
  const int32_t quads = p->m >> 2;
  const utvm_nn_output_t *o = &p->out;
  int32_t n, q, r;
  for (n = 0; n < p->batches; ++n) {
    const int8_t *x = input + n * k;
    int8_t *out = output + n * p->m;
    const int8_t *w = weights;
    for (q = 0; q < quads; ++q) {
      int32_t acc[4];
      const int32_t m = 4 * q;
      acc[0] = bias[m];
      acc[1] = bias[m + 1];
      acc[2] = bias[m + 2];
      acc[3] = bias[m + 3];
      dot_4(x, k, w, acc);
      w += 4 * k4;
      for (r = 0; r < 4; ++r) {
        out[m + r] = utvm_nn_output(o, acc[r], multiplier[m + r], shift[m + r], 0);
      }
    }
    for (r = 4 * quads; r < p->m; ++r) {
      out[r] = utvm_nn_output(o, dot_1(x, k, w, bias[r]), multiplier[r], shift[r], 0);
      w += k4;
    }
  }
}
