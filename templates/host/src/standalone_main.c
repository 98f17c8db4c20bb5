/*
 * aot_standalone: run the model once on inputs read from .npy files and write
 * each output to OUTDIR/output_<i>.npy. No host session, no protocol: just the
 * generated AOT entry point over a static arena.
 *
 *   model_standalone [--repeat N] IN0.npy [IN1.npy ...] -o OUTDIR
 */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "npy.h"
#include "utvm/backend.h"
#include "utvm/model.h"
#include "utvm_model_config.h"

/* +1 keeps the arrays legal C when a model needs no arena or workspace. */
static uint8_t arena[UTVM_MODEL_ARENA_BYTES + 1] __attribute__((aligned(UTVM_MODEL_ARENA_ALIGNMENT)));
static uint8_t workspace[UTVM_MODEL_WORKSPACE_BYTES + 1] __attribute__((aligned(16)));

static int fail(const char *what, const char *detail) {
  fprintf(stderr, "error: %s%s\n", what, detail != NULL ? detail : "");
  return 2;
}

static void describe_tensor(const utvm_tensor_t *t, char *out, size_t cap) {
  int n = snprintf(out, cap, "%s[", npy_dtype_name(t->dtype_code, t->dtype_bits));
  uint8_t i;
  for (i = 0; i < t->ndim && (size_t)n < cap; ++i) {
    n += snprintf(out + n, cap - (size_t)n, "%s%ld", i ? "," : "", (long)t->shape[i]);
  }
  if ((size_t)n < cap) {
    snprintf(out + n, cap - (size_t)n, "]");
  }
}

static int load_input(uint16_t index, const char *path) {
  const utvm_tensor_t *t = &utvm_model.tensors[utvm_model.inputs[index]];
  npy_header_t hdr;
  char err[NPY_ERROR_BYTES];
  char expected[128];
  char got[128];
  FILE *f = fopen(path, "rb");
  uint8_t i;
  int same;
  if (f == NULL) {
    fprintf(stderr, "error: cannot open input %u file %s: %s\n", index, path, strerror(errno));
    return 2;
  }
  if (npy_read_header(f, &hdr, err) != 0) {
    fclose(f);
    fprintf(stderr, "error: input %u file %s: %s\n", index, path, err);
    return 2;
  }
  same = hdr.dtype_code == t->dtype_code && hdr.dtype_bits == t->dtype_bits && hdr.ndim == t->ndim;
  for (i = 0; same && i < t->ndim; ++i) {
    same = hdr.shape[i] == (int64_t)t->shape[i];
  }
  if (!same) {
    describe_tensor(t, expected, sizeof(expected));
    snprintf(got, sizeof(got), "%s with %u dimensions", npy_dtype_name(hdr.dtype_code, hdr.dtype_bits),
             (unsigned)hdr.ndim);
    if (hdr.ndim == t->ndim) {
      utvm_tensor_t shown = *t;
      int32_t dims[NPY_MAX_DIMS];
      for (i = 0; i < hdr.ndim; ++i) {
        dims[i] = (int32_t)hdr.shape[i];
      }
      shown.dtype_code = hdr.dtype_code;
      shown.dtype_bits = hdr.dtype_bits;
      shown.shape = dims;
      describe_tensor(&shown, got, sizeof(got));
    }
    fclose(f);
    fprintf(stderr, "error: input %u (%s) needs %s but %s holds %s\n", index, t->name, expected, path, got);
    return 2;
  }
  if (fread(arena + t->offset, 1, t->nbytes, f) != t->nbytes) {
    fclose(f);
    fprintf(stderr, "error: input %u file %s is truncated (need %lu data bytes)\n", index, path,
            (unsigned long)t->nbytes);
    return 2;
  }
  fclose(f);
  return 0;
}

static int save_output(uint16_t index, const char *outdir) {
  const utvm_tensor_t *t = &utvm_model.tensors[utvm_model.outputs[index]];
  npy_header_t hdr;
  char err[NPY_ERROR_BYTES];
  char path[4096];
  FILE *f;
  uint8_t i;
  hdr.dtype_code = t->dtype_code;
  hdr.dtype_bits = t->dtype_bits;
  hdr.ndim = t->ndim;
  for (i = 0; i < t->ndim && i < NPY_MAX_DIMS; ++i) {
    hdr.shape[i] = t->shape[i];
  }
  snprintf(path, sizeof(path), "%s/output_%u.npy", outdir, (unsigned)index);
  f = fopen(path, "wb");
  if (f == NULL) {
    fprintf(stderr, "error: cannot write %s: %s\n", path, strerror(errno));
    return 2;
  }
  if (npy_write_header(f, &hdr, err) != 0 || fwrite(arena + t->offset, 1, t->nbytes, f) != t->nbytes) {
    fclose(f);
    fprintf(stderr, "error: cannot write %s\n", path);
    return 2;
  }
  if (fclose(f) != 0) {
    fprintf(stderr, "error: cannot write %s: %s\n", path, strerror(errno));
    return 2;
  }
  printf("output %u (%s) -> %s\n", (unsigned)index, t->name, path);
  return 0;
}

static double now_seconds(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

int main(int argc, char **argv) {
  const char *inputs[256];
  const char *outdir = NULL;
  uint16_t num_inputs = 0;
  long repeat = 1;
  long r;
  int i;
  double start;
  if (utvm_model.abi_version != UTVM_MODEL_ABI_VERSION) {
    return fail("the model was generated for another runtime ABI version", NULL);
  }
  for (i = 1; i < argc; ++i) {
    if (strcmp(argv[i], "-o") == 0 && i + 1 < argc) {
      outdir = argv[++i];
    } else if (strcmp(argv[i], "--repeat") == 0 && i + 1 < argc) {
      repeat = strtol(argv[++i], NULL, 10);
      if (repeat < 1) {
        return fail("--repeat needs a positive count", NULL);
      }
    } else if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
      printf("usage: %s [--repeat N] IN0.npy [IN1.npy ...] -o OUTDIR\n", argv[0]);
      printf("model %s (%s): %u input(s), %u output(s)\n", utvm_model.name, utvm_model.hash,
             (unsigned)utvm_model.num_inputs, (unsigned)utvm_model.num_outputs);
      return 0;
    } else if (num_inputs < 256u) {
      inputs[num_inputs++] = argv[i];
    }
  }
  if (outdir == NULL) {
    fprintf(stderr, "usage: %s [--repeat N] IN0.npy [IN1.npy ...] -o OUTDIR\n", argv[0]);
    return 2;
  }
  if (num_inputs != utvm_model.num_inputs) {
    fprintf(stderr, "error: model %s takes %u input file(s), %u given\n", utvm_model.name,
            (unsigned)utvm_model.num_inputs, (unsigned)num_inputs);
    return 2;
  }
  for (i = 0; i < num_inputs; ++i) {
    if (load_input((uint16_t)i, inputs[i]) != 0) {
      return 2;
    }
  }
  if (mkdir(outdir, 0777) != 0 && errno != EEXIST) {
    fprintf(stderr, "error: cannot create %s: %s\n", outdir, strerror(errno));
    return 2;
  }
  utvm_backend_init(workspace, UTVM_MODEL_WORKSPACE_BYTES);
  start = now_seconds();
  for (r = 0; r < repeat; ++r) {
    int32_t rc;
    utvm_backend_reset();
    rc = utvm_model.run(arena);
    if (rc != 0) {
      fprintf(stderr, "error: kernel %ld (%s) failed: %s\n", (long)(rc - 1),
              utvm_model.kernels[rc - 1].name, utvm_backend_last_error());
      return 1;
    }
  }
  fprintf(stderr, "ran %s %ld time(s), %.3f us per run\n", utvm_model.name, repeat,
          (now_seconds() - start) * 1e6 / (double)repeat);
  for (i = 0; i < utvm_model.num_outputs; ++i) {
    if (save_output((uint16_t)i, outdir) != 0) {
      return 2;
    }
  }
  return 0;
}
