/*
 * TVM's backend symbols over one static workspace: a stack (bump) allocator
 * for TVMBackendAllocWorkspace and a bounded buffer for the last raised error.
 * No malloc, no port calls: model_library's host reference runner links this
 * file on its own.
 */
#include <stddef.h>
#include <stdint.h>

#include "utvm/backend.h"
#include "utvm/config.h"
#include "utvm/text.h"

/* TVM's prototypes (tvm/runtime/c_backend_api.h, tvm/ffi/c_api.h), declared
 * here so the runtime does not need TVM's headers. */
void *TVMBackendAllocWorkspace(int device_type, int device_id, uint64_t nbytes, int dtype_code_hint,
                               int dtype_bits_hint);
int TVMBackendFreeWorkspace(int device_type, int device_id, void *ptr);
void TVMFFIErrorSetRaisedFromCStr(const char *kind, const char *message);
void TVMFFIErrorSetRaisedFromCStrParts(const char *kind, const char **message_parts, int32_t num_parts);

static uint8_t *ws_base;
static uint32_t ws_size;
static uint32_t ws_top;  /* first free byte */
static uint32_t ws_peak;
/* Start offset of each live allocation, oldest first. A freed entry that is
 * not on top is marked and popped once everything above it is freed, so an
 * out-of-order free never corrupts the stack. */
static uint32_t alloc_start[UTVM_BACKEND_MAX_ALLOCS];
static uint8_t alloc_freed[UTVM_BACKEND_MAX_ALLOCS];
static uint32_t alloc_count;

static char last_error[UTVM_BACKEND_ERROR_BYTES];

/* text.h's builders live here: every build of the runtime links this file (the host reference
 * runner links it alone). */
void utvm_text_str(utvm_text_t *t, const char *s) {
  if (s == 0) {
    s = "(null)";
  }
  while (*s != '\0' && t->len + 1u < t->cap) {
    t->buf[t->len++] = *s++;
  }
  t->buf[t->len] = '\0';
}

void utvm_text_u32(utvm_text_t *t, uint32_t v) {
  char digits[11];
  uint32_t n = sizeof digits - 1u;
  digits[n] = '\0';
  do {
    digits[--n] = (char)('0' + v % 10u);
    v /= 10u;
  } while (v != 0u);
  utvm_text_str(t, digits + n);
}

void utvm_backend_init(uint8_t *workspace, uint32_t nbytes) {
  ws_base = workspace;
  ws_size = workspace != NULL ? nbytes : 0u;
  ws_peak = 0u;
  utvm_backend_reset();
}

void utvm_backend_reset(void) {
  ws_top = 0u;
  alloc_count = 0u;
  last_error[0] = '\0';
}

const char *utvm_backend_last_error(void) { return last_error; }

uint32_t utvm_backend_workspace_peak(void) { return ws_peak; }

static void out_of_workspace(uint64_t nbytes, const char *why) {
  utvm_text_t t;
  utvm_text_init(&t, last_error, sizeof(last_error));
  utvm_text_str(&t, "WorkspaceError: ");
  utvm_text_str(&t, why);
  utvm_text_str(&t, ": ");
  if (nbytes > 0xFFFFFFFFu) {
    utvm_text_str(&t, "more than 4294967295");
  } else {
    utvm_text_u32(&t, (uint32_t)nbytes);
  }
  utvm_text_str(&t, " bytes requested, ");
  utvm_text_u32(&t, ws_size - ws_top);
  utvm_text_str(&t, " of ");
  utvm_text_u32(&t, ws_size);
  utvm_text_str(&t, " free");
}

void *TVMBackendAllocWorkspace(int device_type, int device_id, uint64_t nbytes, int dtype_code_hint,
                               int dtype_bits_hint) {
  uint32_t start;
  uint32_t pad;
  (void)device_type;
  (void)device_id;
  (void)dtype_code_hint;
  (void)dtype_bits_hint;
  if (alloc_count >= UTVM_BACKEND_MAX_ALLOCS) {
    out_of_workspace(nbytes, "too many live allocations (raise UTVM_BACKEND_MAX_ALLOCS)");
    return NULL;
  }
  /* Align the address, not just the offset: the base may be less aligned. */
  pad = (uint32_t)((0u - ((uintptr_t)ws_base + ws_top)) & (UTVM_BACKEND_ALIGNMENT - 1u));
  if (ws_base == NULL || pad > ws_size - ws_top || nbytes > (uint64_t)(ws_size - ws_top - pad)) {
    out_of_workspace(nbytes, "out of workspace");
    return NULL;
  }
  start = ws_top + pad;
  alloc_start[alloc_count] = ws_top;
  alloc_freed[alloc_count] = 0u;
  alloc_count++;
  ws_top = start + (uint32_t)nbytes;
  if (ws_top > ws_peak) {
    ws_peak = ws_top;
  }
  return ws_base + start;
}

int TVMBackendFreeWorkspace(int device_type, int device_id, void *ptr) {
  uint32_t i;
  (void)device_type;
  (void)device_id;
  for (i = alloc_count; i > 0u; i--) {
    uint32_t k = i - 1u;
    uint32_t pad = (uint32_t)((0u - ((uintptr_t)ws_base + alloc_start[k])) & (UTVM_BACKEND_ALIGNMENT - 1u));
    if ((uint8_t *)ptr == ws_base + alloc_start[k] + pad && alloc_freed[k] == 0u) {
      alloc_freed[k] = 1u;
      while (alloc_count > 0u && alloc_freed[alloc_count - 1u] != 0u) {
        alloc_count--;
        ws_top = alloc_start[alloc_count];
      }
      return 0;
    }
  }
  TVMFFIErrorSetRaisedFromCStr("WorkspaceError", "free of a pointer that is not a live workspace allocation");
  return -1;
}

void TVMFFIErrorSetRaisedFromCStrParts(const char *kind, const char **message_parts, int32_t num_parts) {
  utvm_text_t t;
  int32_t i;
  utvm_text_init(&t, last_error, sizeof(last_error));
  utvm_text_str(&t, kind != NULL ? kind : "Error");
  utvm_text_str(&t, ": ");
  for (i = 0; message_parts != NULL && i < num_parts; i++) {
    utvm_text_str(&t, message_parts[i]);
  }
}

void TVMFFIErrorSetRaisedFromCStr(const char *kind, const char *message) {
  TVMFFIErrorSetRaisedFromCStrParts(kind, &message, 1);
}
