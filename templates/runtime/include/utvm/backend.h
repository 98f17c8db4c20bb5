/*
 * The backend: the symbols that TVM's generated C calls (workspace allocation,
 * error reporting), implemented over one static workspace with no malloc.
 * The runtime and model_library's host reference runner both link src/backend.c.
 */
#ifndef UTVM_BACKEND_H_
#define UTVM_BACKEND_H_

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Give the backend its workspace region (sized from the model's workspace_bytes). */
void utvm_backend_init(uint8_t *workspace, uint32_t nbytes);

/* Release every workspace allocation and clear the last error (before each run). */
void utvm_backend_reset(void);

/* The last error a kernel raised, NUL-terminated ("" when none). */
const char *utvm_backend_last_error(void);

/* High-water mark of the workspace since init, in bytes. */
uint32_t utvm_backend_workspace_peak(void);

#ifdef __cplusplus
}
#endif

#endif /* UTVM_BACKEND_H_ */
