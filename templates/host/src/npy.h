/*
 * A minimal reader and writer for NumPy's .npy format (versions 1 and 2 on
 * read, version 1 on write), for the dtypes a model's inputs and outputs use.
 * It reads straight into, and writes straight from, caller memory (the arena),
 * so it never allocates.
 */
#ifndef UTVM_HOST_NPY_H_
#define UTVM_HOST_NPY_H_

#include <stdint.h>
#include <stdio.h>

#define NPY_MAX_DIMS 8
#define NPY_ERROR_BYTES 256

/* What a .npy header says. dtype uses DLPack's codes: 0 int, 1 uint, 2 float. */
typedef struct npy_header {
  uint8_t dtype_code;
  uint8_t dtype_bits;
  uint8_t ndim;
  int64_t shape[NPY_MAX_DIMS];
} npy_header_t;

/* Read a .npy header from `f`, leaving `f` at the first data byte.
 * Returns 0, or -1 with a message in `err` (NPY_ERROR_BYTES). */
int npy_read_header(FILE *f, npy_header_t *hdr, char *err);

/* Write a version 1 header for `hdr`. Returns 0, or -1 with a message in `err`. */
int npy_write_header(FILE *f, const npy_header_t *hdr, char *err);

/* The element count of a header's shape (1 for a scalar). */
uint64_t npy_num_elements(const npy_header_t *hdr);

/* "int8", "float32", ... or "unsupported" for the dtype in a header. */
const char *npy_dtype_name(uint8_t code, uint8_t bits);

#endif /* UTVM_HOST_NPY_H_ */
