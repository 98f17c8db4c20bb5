/*
 * .npy header parsing and writing. The header is a Python dict literal; numpy
 * always writes the keys 'descr', 'fortran_order' and 'shape', so a small
 * scanner for those three keys is enough (no general literal parser).
 */
#include "npy.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

static const char NPY_MAGIC[6] = {'\x93', 'N', 'U', 'M', 'P', 'Y'};
/* numpy rejects headers above this size unless asked; so do we. */
#define NPY_MAX_HEADER 10000u

typedef struct {
  const char *descr;
  uint8_t code;
  uint8_t bits;
} npy_dtype_t;

/* Little-endian descriptors: '|' for one-byte types, '<' otherwise. '=' is
 * native order, accepted on read because every host this runs on is LE. */
static const npy_dtype_t DTYPES[] = {
    {"i1", 0, 8},  {"i2", 0, 16}, {"i4", 0, 32}, {"i8", 0, 64}, {"u1", 1, 8},
    {"u2", 1, 16}, {"u4", 1, 32}, {"u8", 1, 64}, {"f2", 2, 16}, {"f4", 2, 32}, {"f8", 2, 64},
};
#define NUM_DTYPES (sizeof(DTYPES) / sizeof(DTYPES[0]))

static void set_err(char *err, const char *a, const char *b) {
  snprintf(err, NPY_ERROR_BYTES, "%s%s", a, b != NULL ? b : "");
}

const char *npy_dtype_name(uint8_t code, uint8_t bits) {
  static const char *const NAMES[] = {"int8",   "int16",  "int32",   "int64",   "uint8",  "uint16",
                                      "uint32", "uint64", "float16", "float32", "float64"};
  size_t i;
  for (i = 0; i < NUM_DTYPES; ++i) {
    if (DTYPES[i].code == code && DTYPES[i].bits == bits) {
      return NAMES[i];
    }
  }
  return "unsupported";
}

uint64_t npy_num_elements(const npy_header_t *hdr) {
  uint64_t n = 1;
  uint8_t i;
  for (i = 0; i < hdr->ndim; ++i) {
    n *= (uint64_t)hdr->shape[i];
  }
  return n;
}

/* Find `'key':` in the header and return the first non-space after the colon. */
static const char *find_value(const char *text, const char *key) {
  char quoted[32];
  const char *p;
  snprintf(quoted, sizeof(quoted), "'%s'", key);
  p = strstr(text, quoted);
  if (p == NULL) {
    return NULL;
  }
  p += strlen(quoted);
  while (isspace((unsigned char)*p)) {
    ++p;
  }
  if (*p != ':') {
    return NULL;
  }
  ++p;
  while (isspace((unsigned char)*p)) {
    ++p;
  }
  return p;
}

static int parse_descr(const char *text, npy_header_t *hdr, char *err) {
  const char *v = find_value(text, "descr");
  char descr[8];
  size_t n = 0;
  size_t i;
  if (v == NULL || *v != '\'') {
    set_err(err, "header has no 'descr' string", NULL);
    return -1;
  }
  ++v;
  while (v[n] != '\'' && v[n] != '\0' && n + 1 < sizeof(descr)) {
    descr[n] = v[n];
    ++n;
  }
  descr[n] = '\0';
  if (n != 3 || (descr[0] != '<' && descr[0] != '|' && descr[0] != '=')) {
    set_err(err, "unsupported dtype descriptor (need a little-endian int, uint or float): ", descr);
    return -1;
  }
  for (i = 0; i < NUM_DTYPES; ++i) {
    if (strcmp(descr + 1, DTYPES[i].descr) == 0) {
      hdr->dtype_code = DTYPES[i].code;
      hdr->dtype_bits = DTYPES[i].bits;
      return 0;
    }
  }
  set_err(err, "unsupported dtype descriptor: ", descr);
  return -1;
}

static int parse_shape(const char *text, npy_header_t *hdr, char *err) {
  const char *v = find_value(text, "shape");
  char *end;
  if (v == NULL || *v != '(') {
    set_err(err, "header has no 'shape' tuple", NULL);
    return -1;
  }
  ++v;
  hdr->ndim = 0;
  for (;;) {
    long long dim;
    while (isspace((unsigned char)*v) || *v == ',') {
      ++v;
    }
    if (*v == ')') {
      return 0;
    }
    if (hdr->ndim == NPY_MAX_DIMS) {
      set_err(err, "array has too many dimensions", NULL);
      return -1;
    }
    dim = strtoll(v, &end, 10);
    if (end == v || dim < 0) {
      set_err(err, "malformed 'shape' in header", NULL);
      return -1;
    }
    hdr->shape[hdr->ndim++] = (int64_t)dim;
    v = end;
    while (isspace((unsigned char)*v)) {
      ++v;
    }
    if (*v != ',' && *v != ')') {
      set_err(err, "malformed 'shape' in header", NULL);
      return -1;
    }
  }
}

int npy_read_header(FILE *f, npy_header_t *hdr, char *err) {
  uint8_t pre[8];
  uint8_t len_bytes[4];
  uint32_t hlen;
  char text[NPY_MAX_HEADER + 1];
  const char *fortran;
  if (fread(pre, 1, sizeof(pre), f) != sizeof(pre) || memcmp(pre, NPY_MAGIC, sizeof(NPY_MAGIC)) != 0) {
    set_err(err, "not a .npy file (bad magic)", NULL);
    return -1;
  }
  if (pre[6] == 1) {
    if (fread(len_bytes, 1, 2, f) != 2) {
      set_err(err, "truncated .npy header", NULL);
      return -1;
    }
    hlen = (uint32_t)len_bytes[0] | ((uint32_t)len_bytes[1] << 8);
  } else if (pre[6] == 2 || pre[6] == 3) {
    if (fread(len_bytes, 1, 4, f) != 4) {
      set_err(err, "truncated .npy header", NULL);
      return -1;
    }
    hlen = (uint32_t)len_bytes[0] | ((uint32_t)len_bytes[1] << 8) | ((uint32_t)len_bytes[2] << 16) |
           ((uint32_t)len_bytes[3] << 24);
  } else {
    set_err(err, "unsupported .npy format version", NULL);
    return -1;
  }
  if (hlen > NPY_MAX_HEADER) {
    set_err(err, ".npy header is too large", NULL);
    return -1;
  }
  if (fread(text, 1, hlen, f) != hlen) {
    set_err(err, "truncated .npy header", NULL);
    return -1;
  }
  text[hlen] = '\0';
  fortran = find_value(text, "fortran_order");
  if (fortran == NULL) {
    set_err(err, "header has no 'fortran_order'", NULL);
    return -1;
  }
  if (strncmp(fortran, "False", 5) != 0) {
    set_err(err, "Fortran-ordered arrays are not supported (save with np.ascontiguousarray)", NULL);
    return -1;
  }
  if (parse_descr(text, hdr, err) != 0) {
    return -1;
  }
  return parse_shape(text, hdr, err);
}

int npy_write_header(FILE *f, const npy_header_t *hdr, char *err) {
  char dict[512];
  char header[600];
  int n;
  size_t i;
  size_t total;
  const char *descr = NULL;
  for (i = 0; i < NUM_DTYPES; ++i) {
    if (DTYPES[i].code == hdr->dtype_code && DTYPES[i].bits == hdr->dtype_bits) {
      descr = DTYPES[i].descr;
    }
  }
  if (descr == NULL) {
    set_err(err, "cannot write this dtype to .npy", NULL);
    return -1;
  }
  n = snprintf(dict, sizeof(dict), "{'descr': '%c%s', 'fortran_order': False, 'shape': (",
               hdr->dtype_bits == 8 ? '|' : '<', descr);
  for (i = 0; i < hdr->ndim; ++i) {
    n += snprintf(dict + n, sizeof(dict) - (size_t)n, "%lld,%s", (long long)hdr->shape[i],
                  i + 1 < hdr->ndim ? " " : "");
  }
  /* Python writes (n,) for one dimension and (a, b) for more. */
  if (hdr->ndim > 1) {
    --n;
  }
  n += snprintf(dict + n, sizeof(dict) - (size_t)n, "), }");
  /* magic(6) + version(2) + length(2) + dict + padding + '\n' is a multiple of 64. */
  total = 10u + (size_t)n + 1u;
  total = (total + 63u) / 64u * 64u;
  memcpy(header, NPY_MAGIC, sizeof(NPY_MAGIC));
  header[6] = 1;
  header[7] = 0;
  header[8] = (char)((total - 10u) & 0xFFu);
  header[9] = (char)(((total - 10u) >> 8) & 0xFFu);
  memcpy(header + 10, dict, (size_t)n);
  memset(header + 10 + n, ' ', total - 10u - (size_t)n);
  header[total - 1u] = '\n';
  if (fwrite(header, 1, total, f) != total) {
    set_err(err, "cannot write .npy header", NULL);
    return -1;
  }
  return 0;
}
