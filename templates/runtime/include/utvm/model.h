/*
 * The interface between a compiled model and the device runtime.
 *
 * model_library generates one C file per model that defines `utvm_model` (and the
 * kernels it points at). The runtime never knows a model's shapes or kernels at
 * compile time; it only walks these tables, so one runtime serves every model.
 * All tables are `const` so they live in flash.
 */
#ifndef UTVM_MODEL_H_
#define UTVM_MODEL_H_

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Bumped when a field below changes meaning; the runtime refuses a mismatch. */
#define UTVM_MODEL_ABI_VERSION 1u

/* Where a tensor's bytes live. */
enum utvm_storage {
  UTVM_STORAGE_ARENA = 0, /* at `offset` inside the caller's arena (RAM) */
  UTVM_STORAGE_CONST = 1  /* at `data`, a const array (flash) */
};

/* Element types use DLPack's codes: 0 int, 1 uint, 2 float, 4 bfloat. */
typedef struct utvm_tensor {
  const char *name;       /* as in metadata.json plan.tensors[i].name */
  uint8_t storage;        /* enum utvm_storage */
  uint8_t dtype_code;
  uint8_t dtype_bits;
  uint8_t ndim;
  uint32_t offset;        /* byte offset into the arena (ARENA only) */
  uint32_t nbytes;
  const int32_t *shape;   /* ndim entries */
  const void *data;       /* CONST only; NULL for ARENA */
} utvm_tensor_t;

/* A generated wrapper that binds one kernel's arguments to arena/const addresses
 * and calls it. Returns 0 on success; non-zero means the kernel reported an
 * error through the backend (see utvm/backend.h). */
typedef int32_t (*utvm_kernel_fn_t)(uint8_t *arena);

typedef struct utvm_kernel {
  const char *name;       /* as in metadata.json plan.kernels[i].name */
  utvm_kernel_fn_t fn;
  uint16_t num_args;
  const uint16_t *args;   /* tensor ids, in the kernel's argument order */
} utvm_kernel_t;

typedef struct utvm_model {
  uint32_t abi_version;   /* UTVM_MODEL_ABI_VERSION */
  const char *name;
  const char *hash;       /* hex digest, the same as metadata.json "model_hash" */
  uint32_t arena_bytes;
  uint32_t arena_alignment;
  uint32_t workspace_bytes;
  uint16_t num_tensors;
  const utvm_tensor_t *tensors;
  uint16_t num_inputs;
  const uint16_t *inputs;   /* tensor ids */
  uint16_t num_outputs;
  const uint16_t *outputs;  /* tensor ids */
  uint16_t num_kernels;
  const utvm_kernel_t *kernels;
  /* AOT entry point: every kernel in plan order. Returns the index of the
   * failing kernel + 1, or 0 on success. */
  int32_t (*run)(uint8_t *arena);
} utvm_model_t;

/* Defined by the generated model source. */
extern const utvm_model_t utvm_model;

#ifdef __cplusplus
}
#endif

#endif /* UTVM_MODEL_H_ */
