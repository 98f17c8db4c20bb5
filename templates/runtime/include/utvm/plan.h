/*
 * The AOT plan runner: the static arena and workspace (sized from the
 * generated utvm_model_config.h) and running the model or one kernel.
 */
#ifndef UTVM_PLAN_H_
#define UTVM_PLAN_H_

#include <stdint.h>

#include "utvm/model.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The arena and the compile-time sizes (UTVM_MODEL_ARENA_BYTES, UTVM_MODEL_WORKSPACE_BYTES). */
uint8_t *utvm_plan_arena(void);
uint32_t utvm_plan_arena_capacity(void);
uint32_t utvm_plan_workspace_capacity(void);

/* Hand the static workspace to the backend. */
void utvm_plan_init(void);

/* Where tensor `id`'s bytes are, or NULL for a bad id. */
const uint8_t *utvm_plan_tensor_data(uint16_t id);

/* Run every kernel in plan order. Returns 0, or the failing kernel's index + 1. */
int32_t utvm_plan_run(void);

/* Run kernel `index` alone (its inputs must already be in the arena).
 * Returns the kernel's result (0 on success). */
int32_t utvm_plan_run_kernel(uint16_t index);

#ifdef __cplusplus
}
#endif

#endif /* UTVM_PLAN_H_ */
