/*
 * The AOT plan runner over one static arena and one static workspace, both
 * sized by the generated utvm_model_config.h. No malloc.
 */
#include "utvm/plan.h"

#include <stddef.h>

#include "utvm/backend.h"
#include "utvm_model_config.h"

/* Zero-length arrays are not C99: keep at least one byte. */
#define UTVM_AT_LEAST_ONE(n) ((n) > 0 ? (n) : 1)
#define UTVM_WORKSPACE_ALIGNMENT 16

static uint8_t arena[UTVM_AT_LEAST_ONE(UTVM_MODEL_ARENA_BYTES)]
    __attribute__((aligned(UTVM_MODEL_ARENA_ALIGNMENT)));
static uint8_t workspace[UTVM_AT_LEAST_ONE(UTVM_MODEL_WORKSPACE_BYTES)]
    __attribute__((aligned(UTVM_WORKSPACE_ALIGNMENT)));

uint8_t *utvm_plan_arena(void) { return arena; }

uint32_t utvm_plan_arena_capacity(void) { return (uint32_t)UTVM_MODEL_ARENA_BYTES; }

uint32_t utvm_plan_workspace_capacity(void) { return (uint32_t)UTVM_MODEL_WORKSPACE_BYTES; }

void utvm_plan_init(void) { utvm_backend_init(workspace, (uint32_t)UTVM_MODEL_WORKSPACE_BYTES); }

const uint8_t *utvm_plan_tensor_data(uint16_t id) {
  const utvm_tensor_t *t;
  if (id >= utvm_model.num_tensors) {
    return NULL;
  }
  t = &utvm_model.tensors[id];
  return t->storage == UTVM_STORAGE_CONST ? (const uint8_t *)t->data : arena + t->offset;
}

int32_t utvm_plan_run_kernel(uint16_t index) {
  utvm_backend_reset();
  return utvm_model.kernels[index].fn(arena);
}

int32_t utvm_plan_run(void) {
  uint16_t i;
  utvm_backend_reset();
  if (utvm_model.run != NULL) {
    return utvm_model.run(arena);
  }
  for (i = 0; i < utvm_model.num_kernels; i++) {
    if (utvm_model.kernels[i].fn(arena) != 0) {
      return (int32_t)i + 1;
    }
  }
  return 0;
}
