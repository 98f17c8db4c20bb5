/*
 * Element-wise add and average pooling.
 *
 * Add: TFLite rescales each input ((x - zp) << 20, times its multiplier) before adding; that is a
 * function of the int8 value alone, so the compiler tabulates it (256 int32 per input, indexed
 * by the value as an unsigned byte) and the kernel does two loads, an add and one requantization
 * per element.
 *
 * Average pooling: sums over the window's valid taps, divided by their count with TFLite's
 * rounding (halves away from zero, C's truncating division).
 */
#include "utvm_nn_arith.h"

void utvm_nn_add_s8(const utvm_nn_add_t *p, const int8_t *a, const int8_t *b, const int32_t *table_a,
                    const int32_t *table_b, int8_t *output) {
  const utvm_nn_output_t *o = &p->out;
  const int32_t count = p->count;
  const int32_t mult = p->multiplier;
  const int32_t shift = p->shift;
  int32_t i;
  if (o->rounding == UTVM_NN_ROUND_DOUBLE && shift < 0 && mult >= 0 && o->act_min == -128 && o->act_max == 127) {
    const int32_t r = -shift;
    const int32_t zp = o->output_zero_point;
    for (i = 0; i < count; ++i) {
      const int32_t sum = table_a[(uint8_t)a[i]] + table_b[(uint8_t)b[i]];
      output[i] = utvm_nn_sat8(utvm_nn_rq_fast(sum, mult, r, zp));
    }
    return;
  }
  for (i = 0; i < count; ++i) {
    const int32_t sum = table_a[(uint8_t)a[i]] + table_b[(uint8_t)b[i]];
    output[i] = utvm_nn_output(o, sum, mult, shift, 0);
  }
}

#if UTVM_NN_SSE2
/* The mean of 16 sums over `count` taps, rounded half away from zero, clamped. */
static int8_t *pool_outputs_16(const int32_t *s, int32_t count, const utvm_nn_avg_pool_t *p, int8_t *output) {
  const int32_t half = count / 2;
  int32_t l;
  for (l = 0; l < 16; ++l) {
    int32_t v = count > 0 ? (s[l] > 0 ? (s[l] + half) / count : (s[l] - half) / count) : 0;
    v = v < p->act_min ? p->act_min : v;
    v = v > p->act_max ? p->act_max : v;
    *output++ = (int8_t)v;
  }
  return output;
}
#endif

void utvm_nn_avg_pool_s8(const utvm_nn_avg_pool_t *p, const int8_t *input, int8_t *output) {
  const int32_t channels = p->channels;
  int32_t n, oy, ox, c, y, x;
  for (n = 0; n < p->batches; ++n) {
    const int8_t *in = input + n * p->in_h * p->in_w * channels;
    for (oy = 0; oy < p->out_h; ++oy) {
      const int32_t y0 = oy * p->stride_h - p->pad_top;
      const int32_t ylo = y0 > 0 ? y0 : 0;
      const int32_t yhi = y0 + p->pool_h < p->in_h ? y0 + p->pool_h : p->in_h;
      for (ox = 0; ox < p->out_w; ++ox) {
        const int32_t x0 = ox * p->stride_w - p->pad_left;
        const int32_t xlo = x0 > 0 ? x0 : 0;
        const int32_t xhi = x0 + p->pool_w < p->in_w ? x0 + p->pool_w : p->in_w;
        const int32_t count = (yhi - ylo) * (xhi - xlo);
        const int32_t half = count / 2;
        c = 0;
#if UTVM_NN_SSE2
        /* sixteen channels a pass: a fixed-length loop the compiler turns into SSE2 adds */
        for (; c + 16 <= channels; c += 16) {
          int32_t s[16] = {0};
          int32_t l;
          for (y = ylo; y < yhi; ++y) {
            const int8_t *px = in + (y * p->in_w + xlo) * channels + c;
            for (x = xlo; x < xhi; ++x) {
              for (l = 0; l < 16; ++l) {
                s[l] += px[l];
              }
              px += channels;
            }
          }
          output = pool_outputs_16(s, count, p, output);
        }
#endif
        for (; c < channels; c += 4) {
          const int32_t lanes = channels - c < 4 ? channels - c : 4;
          int32_t s[4] = {0, 0, 0, 0};
          int32_t l;
          for (y = ylo; y < yhi; ++y) {
            const int8_t *px = in + (y * p->in_w + xlo) * channels + c;
            for (x = xlo; x < xhi; ++x) {
              if (lanes == 4) {
                s[0] += px[0];
                s[1] += px[1];
                s[2] += px[2];
                s[3] += px[3];
              } else {
                for (l = 0; l < lanes; ++l) {
                  s[l] += px[l];
                }
              }
              px += channels;
            }
          }
          for (l = 0; l < lanes; ++l) {
            int32_t v = count > 0 ? (s[l] > 0 ? (s[l] + half) / count : (s[l] - half) / count) : 0;
            v = v < p->act_min ? p->act_min : v;
            v = v > p->act_max ? p->act_max : v;
            *output++ = (int8_t)v;
          }
        }
      }
    }
  }
}
