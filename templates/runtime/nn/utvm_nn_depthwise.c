/*
 * Depthwise 2-D convolution (channel multiplier 1). Channel by channel, the input is copied into
 * a 16-bit plane that already holds the padding (the input zero point), so the loops over
 * outputs carry no border test. Adjacent taps along a plane row are adjacent halfwords: with the
 * DSP extension one load and one SMLAD take two taps. The plane's rows run along the longer of
 * the output's two dimensions (a tall, narrow output is read transposed), so the loops over
 * outputs are long. Outputs are summed for one plane row at a time into 32-bit accumulators,
 * then requantized in a second, tight loop.
 *
 * Weights: [C][KH][KW] int8 (TFLite's layout, channel-major). Scratch (utvm_nn_depthwise_scratch_bytes):
 * the plane (strip_rows output rows' worth of plane rows, PW int16 each) and one run of int32
 * accumulators.
 */
#include "utvm_nn_arith.h"

/* The convolution seen along its longer output dimension: "rows" of the plane are `major`. */
typedef struct {
  int32_t transposed;
  int32_t in_major, in_minor;      /* input extent along each */
  int32_t major_stride, minor_stride; /* input element strides (bytes) */
  int32_t out_major, out_minor;
  int32_t out_major_stride, out_minor_stride;
  int32_t k_major, k_minor;
  int32_t s_major, s_minor;
  int32_t d_major, d_minor;
  int32_t pad_major, pad_minor;
  int32_t pw; /* plane row length */
} view_t;

static void make_view(const utvm_nn_depthwise_t *p, view_t *v) {
  const int32_t c = p->in_c;
  v->transposed = p->out_h > p->out_w;
  if (!v->transposed) {
    v->in_major = p->in_h, v->in_minor = p->in_w;
    v->major_stride = p->in_w * c, v->minor_stride = c;
    v->out_major = p->out_h, v->out_minor = p->out_w;
    v->out_major_stride = p->out_w * c, v->out_minor_stride = c;
    v->k_major = p->k_h, v->k_minor = p->k_w;
    v->s_major = p->stride_h, v->s_minor = p->stride_w;
    v->d_major = p->dilation_h, v->d_minor = p->dilation_w;
    v->pad_major = p->pad_top, v->pad_minor = p->pad_left;
  } else {
    v->in_major = p->in_w, v->in_minor = p->in_h;
    v->major_stride = c, v->minor_stride = p->in_w * c;
    v->out_major = p->out_w, v->out_minor = p->out_h;
    v->out_major_stride = c, v->out_minor_stride = p->out_w * c;
    v->k_major = p->k_w, v->k_minor = p->k_h;
    v->s_major = p->stride_w, v->s_minor = p->stride_h;
    v->d_major = p->dilation_w, v->d_minor = p->dilation_h;
    v->pad_major = p->pad_left, v->pad_minor = p->pad_top;
  }
  v->pw = (v->out_minor - 1) * v->s_minor + (v->k_minor - 1) * v->d_minor + 1;
}

static int32_t plane_rows(const view_t *v, int32_t out_rows) {
  return (out_rows - 1) * v->s_major + (v->k_major - 1) * v->d_major + 1;
}

uint32_t utvm_nn_depthwise_scratch_bytes(const utvm_nn_depthwise_t *p) {
  view_t v;
  make_view(p, &v);
  return (uint32_t)((plane_rows(&v, p->strip_rows) * v.pw + 1) & ~1) * 2u + (uint32_t)v.out_minor * 4u;
}

/* n >= 1 values `stride` bytes apart, widened into consecutive halfwords. */
UTVM_NN_NOINLINE void copy_strided(int16_t *dst, const int8_t *src, int32_t n, int32_t stride) {
  const int32_t stride2 = 2 * stride;
  for (; n >= 2; n -= 2) {
    const int16_t a = src[0], b = src[stride];
    src += stride2;
    dst[0] = a;
    dst[1] = b;
    dst += 2;
  }
  if (n) {
    *dst = *src;
  }
}

/* Plane rows [m0, m0 + rows) of channel c (major coordinate from -pad_major), PW halfwords each
 * (minor coordinate from -pad_minor); outside the input: the zero point. */
static void fill_plane(const view_t *v, const int8_t *in, int32_t m0, int32_t rows, int16_t pad, int16_t *plane) {
  const int32_t pw = v->pw;
  const int32_t stride = v->minor_stride;
  const int32_t lo = v->pad_minor < pw ? v->pad_minor : pw;
  int32_t hi = v->pad_minor + v->in_minor;
  int32_t r, j;
  hi = hi < pw ? hi : pw;
  for (r = 0; r < rows; ++r) {
    const int32_t m = m0 + r;
    int16_t *row = plane + r * pw;
    if (m < 0 || m >= v->in_major) {
      for (j = 0; j < pw; ++j) {
        row[j] = pad;
      }
      continue;
    }
    for (j = 0; j < lo; ++j) {
      row[j] = pad;
    }
    if (hi > lo) {
      copy_strided(row + lo, in + m * v->major_stride + (lo - v->pad_minor) * stride, hi - lo, stride);
    }
    for (j = hi; j < pw; ++j) {
      row[j] = pad;
    }
  }
}

#if UTVM_NN_DSP
UTVM_NN_INLINE uint32_t pack16(int32_t lo, int32_t hi) { return (uint16_t)lo | ((uint32_t)(uint16_t)hi << 16); }

/* One two-output step over rows p, p + pw, p + 2 pw (pw in bytes); p then moves back to row 0,
 * one step on. */
#define UTVM_NN_DW_ROWS_S1                \
  "ldr %[x], [%[p]]\n\t"                  \
  "ldr %[y], [%[p], #2]\n\t"              \
  "smuad %[a0], %[k0], %[x]\n\t"          \
  "smuad %[a1], %[k0], %[y]\n\t"          \
  "ldr %[x], [%[p], #4]\n\t"              \
  "smlabb %[a0], %[x], %[k3], %[a0]\n\t"  \
  "smlatb %[a1], %[x], %[k3], %[a1]\n\t"  \
  "add %[p], %[p], %[pw]\n\t"             \
  "ldr %[x], [%[p]]\n\t"                  \
  "ldr %[y], [%[p], #2]\n\t"              \
  "smlad %[a0], %[k1], %[x], %[a0]\n\t"   \
  "smlad %[a1], %[k1], %[y], %[a1]\n\t"   \
  "ldr %[x], [%[p], #4]\n\t"              \
  "smlabt %[a0], %[x], %[k3], %[a0]\n\t"  \
  "smlatt %[a1], %[x], %[k3], %[a1]\n\t"  \
  "add %[p], %[p], %[pw]\n\t"             \
  "ldr %[x], [%[p]]\n\t"                  \
  "ldr %[y], [%[p], #2]\n\t"              \
  "smlad %[a0], %[k2], %[x], %[a0]\n\t"   \
  "smlad %[a1], %[k2], %[y], %[a1]\n\t"   \
  "ldr %[x], [%[p], #4]\n\t"              \
  "ldr %[y], %[k4]\n\t"                   \
  "smlabb %[a0], %[x], %[y], %[a0]\n\t"   \
  "smlatb %[a1], %[x], %[y], %[a1]\n\t"   \
  "strd %[a0], %[a1], [%[acc]], #8\n\t"   \
  "sub %[p], %[p], %[pw], lsl #1\n\t"   \
  "adds %[p], %[p], #4\n\t"

#define UTVM_NN_DW_ROWS_S2                \
  "ldr %[x], [%[p]]\n\t"                  \
  "ldr %[y], [%[p], #4]\n\t"              \
  "smuad %[a0], %[k0], %[x]\n\t"          \
  "smuad %[a1], %[k0], %[y]\n\t"          \
  "ldrsh %[x], [%[p], #8]\n\t"            \
  "smlabb %[a0], %[y], %[k3], %[a0]\n\t"  \
  "smlabb %[a1], %[x], %[k3], %[a1]\n\t"  \
  "add %[p], %[p], %[pw]\n\t"             \
  "ldr %[x], [%[p]]\n\t"                  \
  "ldr %[y], [%[p], #4]\n\t"              \
  "smlad %[a0], %[k1], %[x], %[a0]\n\t"   \
  "smlad %[a1], %[k1], %[y], %[a1]\n\t"   \
  "ldrsh %[x], [%[p], #8]\n\t"            \
  "smlabt %[a0], %[y], %[k3], %[a0]\n\t"  \
  "smlabt %[a1], %[x], %[k3], %[a1]\n\t"  \
  "add %[p], %[p], %[pw]\n\t"             \
  "ldr %[x], [%[p]]\n\t"                  \
  "ldr %[y], [%[p], #4]\n\t"              \
  "smlad %[a0], %[k2], %[x], %[a0]\n\t"   \
  "smlad %[a1], %[k2], %[y], %[a1]\n\t"   \
  "ldr %[x], %[k4]\n\t"                   \
  "smlabb %[a0], %[y], %[x], %[a0]\n\t"   \
  "ldrsh %[y], [%[p], #8]\n\t"            \
  "smlabb %[a1], %[y], %[x], %[a1]\n\t"   \
  "strd %[a0], %[a1], [%[acc]], #8\n\t"   \
  "sub %[p], %[p], %[pw], lsl #1\n\t"   \
  "adds %[p], %[p], #8\n\t"

/* The loop over output pairs around one step (UTVM_NN_DW_ROWS_S1 or _S2): the asm's text must
 * be a literal, so the two strides share it through the preprocessor. */
#define UTVM_NN_DW_LOOP(step)                                                                                   \
  __asm__ volatile("1:\n\t" step "subs %[n], %[n], #1\n\t"                                                     \
                   "bne 1b"                                                                                     \
                   : [p] "+r"(r0), [acc] "+r"(acc), [n] "+r"(steps), [a0] "=&r"(a0), [a1] "=&r"(a1),            \
                     [x] "=&r"(x), [y] "=&r"(y)                                                                 \
                   : [k0] "r"(k0), [k1] "r"(k1), [k2] "r"(k2), [k3] "r"(k3), [k4] "m"(k4), [pw] "r"(pw_bytes) \
                   : "cc", "memory")

/* A 3x3 kernel along plane rows r0, r0 + pw, r0 + 2 pw: n sums (without the bias), taps `s`
 * apart per output. k: (w00, w01), (w10, w11), (w20, w21) packed, (w02, w12), w22. Two outputs
 * per step share their loads (29 instructions for 18 multiply-accumulates, written out so that the
 * 12 live values stay in registers, w22 read from memory). */
static void sums_3x3(const int16_t *r0, int32_t pw, int32_t s, int32_t n, const uint32_t *k, int32_t *acc) {
  const uint32_t k0 = k[0], k1 = k[1], k2 = k[2], k3 = k[3];
  uint32_t k4 = k[4]; /* on the stack: the asm reads it from memory, sp-relative */
  const int32_t pw_bytes = pw * 2;
  int32_t steps = UTVM_NN_ASM_LOOPS && (s == 1 || s == 2) ? n >> 1 : 0;
  n -= 2 * steps;
#if UTVM_NN_ASM_LOOPS
  if (steps > 0) {
    int32_t a0, a1;
    uint32_t x, y;
    if (s == 1) {
      UTVM_NN_DW_LOOP(UTVM_NN_DW_ROWS_S1);
    } else {
      UTVM_NN_DW_LOOP(UTVM_NN_DW_ROWS_S2);
    }
  }
#else
  (void)k4;
  (void)pw_bytes;
#endif
  for (; n > 0; --n) {
    const int16_t *r1 = r0 + pw, *r2 = r0 + 2 * pw;
    int32_t a = 0;
    a = utvm_nn_smlad(k0, utvm_nn_load32(r0), a);
    a = utvm_nn_smlabb((uint32_t)(int32_t)r0[2], k3, a);
    a = utvm_nn_smlad(k1, utvm_nn_load32(r1), a);
    a = utvm_nn_smlabt((uint32_t)(int32_t)r1[2], k3, a);
    a = utvm_nn_smlad(k2, utvm_nn_load32(r2), a);
    a = utvm_nn_smlabb((uint32_t)(int32_t)r2[2], k[4], a);
    *acc++ = a;
    r0 += s;
  }
}
#undef UTVM_NN_DW_LOOP
#else
/* A 3x3 kernel along plane rows r0, r0 + pw, r0 + 2 pw: n sums, taps `s` apart per output. */
static void sums_3x3(const int16_t *r0, int32_t pw, int32_t s, int32_t n, const int32_t *k, int32_t *acc) {
  const int32_t k0 = k[0], k1 = k[1], k2 = k[2], k3 = k[3], k4 = k[4], k5 = k[5], k6 = k[6], k7 = k[7], k8 = k[8];
  const int16_t *r1 = r0 + pw;
  const int16_t *r2 = r1 + pw;
#if !UTVM_NN_THUMB2
  /* Stride 1 on CPUs with vector units: consecutive outputs read consecutive taps, an indexed loop
   * the compiler vectorizes (on a Cortex-M3 the pointer walk below is shorter). */
  int32_t x;
  if (s == 1) {
    for (x = 0; x < n; ++x) {
      acc[x] = r0[x] * k0 + r0[x + 1] * k1 + r0[x + 2] * k2 + r1[x] * k3 + r1[x + 1] * k4 + r1[x + 2] * k5 +
               r2[x] * k6 + r2[x + 1] * k7 + r2[x + 2] * k8;
    }
    return;
  }
#endif
  for (; n > 0; --n) {
    *acc++ = r0[0] * k0 + r0[1] * k1 + r0[2] * k2 + r1[0] * k3 + r1[1] * k4 + r1[2] * k5 + r2[0] * k6 +
             r2[1] * k7 + r2[2] * k8;
    r0 += s;
    r1 += s;
    r2 += s;
  }
}
#endif

/* Any kernel: w_major[km][kn] in the view's orientation. */
static void sums_any(const view_t *v, const int16_t *r0, int32_t n, const int8_t *w, int32_t *acc) {
  int32_t x, a, b;
  for (x = 0; x < n; ++x) {
    const int16_t *base = r0 + x * v->s_minor;
    int32_t sum = 0;
    for (a = 0; a < v->k_major; ++a) {
      const int16_t *row = base + a * v->d_major * v->pw;
      for (b = 0; b < v->k_minor; ++b) {
        /* w is [KH][KW]: in a transposed view the major index is kx. */
        const int8_t wk = v->transposed ? w[b * v->k_major + a] : w[a * v->k_minor + b];
        sum += row[b * v->d_minor] * wk;
      }
    }
    acc[x] = sum;
  }
}


/* Requantize n >= 1 sums plus the bias into outputs `stride` bytes apart. */
UTVM_NN_NOINLINE void store_fast(const int32_t *acc, int32_t n, int8_t *out, int32_t stride, int32_t bias,
                                 int32_t mult, int32_t r, int32_t zp) {
#if UTVM_NN_SSE2
  const __m128i vb = _mm_set1_epi32(bias);
  for (; n >= 4; n -= 4) {
    const __m128i a = _mm_add_epi32(_mm_loadu_si128((const __m128i *)(const void *)acc), vb);
    const uint32_t q = utvm_nn_rq_fast_4(a, mult, r, zp);
    out[0] = (int8_t)q;
    out[stride] = (int8_t)(q >> 8);
    out[2 * stride] = (int8_t)(q >> 16);
    out[3 * stride] = (int8_t)(q >> 24);
    out += 4 * stride;
    acc += 4;
  }
  if (n == 0) {
    return;
  }
#endif
  do {
    *out = utvm_nn_sat8(utvm_nn_rq_fast(*acc++ + bias, mult, r, zp));
    out += stride;
  } while (--n);
}

UTVM_NN_NOINLINE void store_generic(const utvm_nn_output_t *o, const int32_t *acc, int32_t n, int8_t *out,
                                    int32_t stride, int32_t bias, int32_t mult, int32_t shift) {
  for (; n > 0; --n) {
    *out = utvm_nn_output(o, *acc++ + bias, mult, shift, 0);
    out += stride;
  }
}

UTVM_NN_INLINE void store(const utvm_nn_output_t *o, const int32_t *acc, int32_t n, int8_t *out, int32_t stride,
                          int32_t bias, int32_t mult, int32_t shift, const int fast) {
  if (fast) {
    store_fast(acc, n, out, stride, bias, mult, -shift, o->output_zero_point);
  } else {
    store_generic(o, acc, n, out, stride, bias, mult, shift);
  }
}

UTVM_NN_INLINE void depthwise_run(const utvm_nn_depthwise_t *p, const int8_t *input, const int8_t *weights,
                                  const int32_t *bias, const int32_t *multiplier, const int32_t *shift,
                                  int8_t *output, void *scratch, const int fast) {
  const int32_t channels = p->in_c;
  const int32_t taps = p->k_h * p->k_w;
  const int is_3x3 = p->k_h == 3 && p->k_w == 3 && p->dilation_h == 1 && p->dilation_w == 1;
  view_t v;
  int16_t *plane = (int16_t *)scratch;
  int32_t *acc;
  int32_t n, c, m0, m;
  make_view(p, &v);
  acc = (int32_t *)(void *)(plane + ((plane_rows(&v, p->strip_rows) * v.pw + 1) & ~1));
  for (n = 0; n < p->batches; ++n) {
    const int8_t *in = input + n * p->in_h * p->in_w * channels;
    int8_t *out = output + n * p->out_h * p->out_w * channels;
    for (c = 0; c < channels; ++c) {
      const int8_t *w = weights + c * taps;
#if UTVM_NN_DSP
      /* The kernel in the view's orientation, packed for SMLAD (see sums_3x3). */
      uint32_t k[5] = {0, 0, 0, 0, 0};
      if (is_3x3) {
        const int t = v.transposed;
#define W(a, b) (t ? w[(b) * 3 + (a)] : w[(a) * 3 + (b)])
        k[0] = pack16(W(0, 0), W(0, 1));
        k[1] = pack16(W(1, 0), W(1, 1));
        k[2] = pack16(W(2, 0), W(2, 1));
        k[3] = pack16(W(0, 2), W(1, 2));
        k[4] = pack16(W(2, 2), 0);
#undef W
      }
#else
      int32_t k[9];
      if (is_3x3) {
        int32_t a, b;
        for (a = 0; a < 3; ++a) {
          for (b = 0; b < 3; ++b) {
            k[a * 3 + b] = v.transposed ? w[b * 3 + a] : w[a * 3 + b];
          }
        }
      }
#endif
      for (m0 = 0; m0 < v.out_major; m0 += p->strip_rows) {
        const int32_t rows = v.out_major - m0 < p->strip_rows ? v.out_major - m0 : p->strip_rows;
        fill_plane(&v, in + c, m0 * v.s_major - v.pad_major, plane_rows(&v, rows), (int16_t)p->input_zero_point,
                   plane);
        for (m = 0; m < rows; ++m) {
          const int16_t *r0 = plane + m * v.s_major * v.pw;
          if (is_3x3) {
            sums_3x3(r0, v.pw, v.s_minor, v.out_minor, k, acc);
          } else {
            sums_any(&v, r0, v.out_minor, w, acc);
          }
          store(&p->out, acc, v.out_minor, out + (m0 + m) * v.out_major_stride + c, v.out_minor_stride, bias[c],
                multiplier[c], shift[c], fast);
        }
      }
    }
  }
}

void utvm_nn_depthwise_s8(const utvm_nn_depthwise_t *p, const int8_t *input, const int8_t *weights,
                          const int32_t *bias, const int32_t *multiplier, const int32_t *shift, int8_t *output,
                          void *scratch) {
  if (p->out.act_min == -128 && p->out.act_max == 127 && utvm_nn_all_fast(&p->out, multiplier, shift, p->in_c)) {
    depthwise_run(p, input, weights, bias, multiplier, shift, output, scratch, 1);
  } else {
    depthwise_run(p, input, weights, bias, multiplier, shift, output, scratch, 0);
  }
}
