/*
 * A tiny hand-written model for the fuzzer: an int8 input, a const weight, two
 * kernels (add, then a scale that takes workspace and can raise an error) and
 * an output. It exercises every path of the model tables the runtime walks:
 * arena and const tensors, kernel arguments, workspace, kernel errors.
 */
#include <stddef.h>
#include <stdint.h>

#include "utvm/model.h"
#include "utvm_model_config.h"

void *TVMBackendAllocWorkspace(int device_type, int device_id, uint64_t nbytes, int dtype_code_hint,
                               int dtype_bits_hint);
int TVMBackendFreeWorkspace(int device_type, int device_id, void *ptr);
void TVMFFIErrorSetRaisedFromCStr(const char *kind, const char *message);

#define N 16

static const int32_t shape[2] = {1, N};
static const int8_t weight[N] = {1, -2, 3, -4, 5, -6, 7, -8, 9, -10, 11, -12, 13, -14, 15, -16};

enum { T_INPUT, T_WEIGHT, T_HIDDEN, T_OUTPUT };

static const utvm_tensor_t tensors[] = {
    {"input", UTVM_STORAGE_ARENA, 0, 8, 2, 0, N, shape, NULL},
    {"weight", UTVM_STORAGE_CONST, 0, 8, 2, 0, N, shape, weight},
    {"hidden", UTVM_STORAGE_ARENA, 0, 8, 2, 16, N, shape, NULL},
    {"output", UTVM_STORAGE_ARENA, 0, 8, 2, 32, N, shape, NULL},
};

static int32_t add(uint8_t *arena) {
  const int8_t *in = (const int8_t *)(arena + 0);
  int8_t *out = (int8_t *)(arena + 16);
  int i;
  for (i = 0; i < N; i++) {
    out[i] = (int8_t)(in[i] + weight[i]);
  }
  return 0;
}

/* Doubles `hidden` through a workspace buffer; refuses hidden[0] == 127 so the
 * kernel-error path is reachable from input bytes. */
static int32_t scale(uint8_t *arena) {
  const int8_t *in = (const int8_t *)(arena + 16);
  int8_t *out = (int8_t *)(arena + 32);
  int8_t *tmp = (int8_t *)TVMBackendAllocWorkspace(1, 0, N, 0, 8);
  int i;
  if (tmp == NULL) {
    return -1;
  }
  if (in[0] == 127) {
    TVMFFIErrorSetRaisedFromCStr("ValueError", "hidden[0] is 127");
    TVMBackendFreeWorkspace(1, 0, tmp);
    return -1;
  }
  for (i = 0; i < N; i++) {
    tmp[i] = (int8_t)(in[i] * 2);
  }
  for (i = 0; i < N; i++) {
    out[i] = tmp[i];
  }
  return TVMBackendFreeWorkspace(1, 0, tmp);
}

static const uint16_t add_args[] = {T_INPUT, T_WEIGHT, T_HIDDEN};
static const uint16_t scale_args[] = {T_HIDDEN, T_OUTPUT};
static const utvm_kernel_t kernels[] = {
    {"add", add, 3, add_args},
    {"scale", scale, 2, scale_args},
};
static const uint16_t inputs[] = {T_INPUT};
static const uint16_t outputs[] = {T_OUTPUT};

const utvm_model_t utvm_model = {
    UTVM_MODEL_ABI_VERSION,
    "fuzz_fixture",
    "0000000000000000000000000000000000000000000000000000000000000000",
    UTVM_MODEL_ARENA_BYTES,
    UTVM_MODEL_ARENA_ALIGNMENT,
    UTVM_MODEL_WORKSPACE_BYTES,
    4,
    tensors,
    1,
    inputs,
    1,
    outputs,
    2,
    kernels,
    NULL,
};
