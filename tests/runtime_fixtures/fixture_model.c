/*
 * A hand-written model for the runtime tests, shaped like model_library's
 * output: input int8[1000] -> fixture_add (+ a const bias, saturating, through
 * a workspace buffer) -> fixture_relu -> output, then fixture_guard, which
 * turns special values of input[0] into faults:
 *   127: raises an error through TVMFFIErrorSetRaisedFromCStr and fails
 *   126: aborts the device (utvm_port_abort(3))
 *   125: reboots the device (utvm_port_reset)
 *   124: sends a device log line
 *   123: keeps the device busy for input[1] x 10 ms (its own clock), as a slow kernel does
 * Tensor 4 ("big", uint8) is touched by no kernel: it is there for large transfers.
 */
#include <stddef.h>
#include <stdint.h>

#include "utvm/model.h"
#include "utvm/port.h"
#include "utvm/protocol.h"
#include "utvm/runtime.h"
#include "utvm_model_config.h"

void *TVMBackendAllocWorkspace(int device_type, int device_id, uint64_t nbytes, int dtype_code_hint,
                               int dtype_bits_hint);
int TVMBackendFreeWorkspace(int device_type, int device_id, void *ptr);
void TVMFFIErrorSetRaisedFromCStr(const char *kind, const char *message);

#define OFF_INPUT 0
#define OFF_SUM 1008
#define OFF_OUTPUT 2016

static const int8_t bias_data[FIXTURE_N] = {
#define B10(x) (x), (x) + 1, (x) - 1, (x) + 2, (x) - 2, (x) + 3, (x) - 3, (x) + 4, (x) - 4, (x) + 5
#define B100(x) B10(x), B10(x + 1), B10(x + 2), B10(x + 3), B10(x + 4), B10(x - 1), B10(x - 2), B10(x - 3), \
                B10(x - 4), B10(x - 5)
    B100(0), B100(10), B100(-10), B100(20), B100(-20), B100(40), B100(-40), B100(60), B100(-60), B100(0)
#undef B100
#undef B10
};

static const int32_t shape_n[1] = {FIXTURE_N};
static const int32_t shape_big[1] = {FIXTURE_BIG_BYTES};

static const utvm_tensor_t tensors[UTVM_MODEL_NUM_TENSORS] = {
    {"input", UTVM_STORAGE_ARENA, 0, 8, 1, OFF_INPUT, FIXTURE_N, shape_n, NULL},
    {"bias", UTVM_STORAGE_CONST, 0, 8, 1, 0, FIXTURE_N, shape_n, bias_data},
    {"sum", UTVM_STORAGE_ARENA, 0, 8, 1, OFF_SUM, FIXTURE_N, shape_n, NULL},
    {"output", UTVM_STORAGE_ARENA, 0, 8, 1, OFF_OUTPUT, FIXTURE_N, shape_n, NULL},
    {"big", UTVM_STORAGE_ARENA, 1, 8, 1, FIXTURE_BIG_OFFSET, FIXTURE_BIG_BYTES, shape_big, NULL},
};

static int32_t fixture_add(uint8_t *arena) {
  const int8_t *in = (const int8_t *)(arena + OFF_INPUT);
  int8_t *sum = (int8_t *)(arena + OFF_SUM);
  int8_t *scratch = (int8_t *)TVMBackendAllocWorkspace(1, 0, FIXTURE_N, 0, 8);
  int i;
  if (scratch == NULL) {
    return -1;
  }
  for (i = 0; i < FIXTURE_N; i++) {
    int v = in[i] + bias_data[i];
    scratch[i] = (int8_t)(v > 127 ? 127 : (v < -128 ? -128 : v));
  }
  for (i = 0; i < FIXTURE_N; i++) {
    sum[i] = scratch[i];
  }
  return TVMBackendFreeWorkspace(1, 0, scratch);
}

static int32_t fixture_relu(uint8_t *arena) {
  const int8_t *sum = (const int8_t *)(arena + OFF_SUM);
  int8_t *out = (int8_t *)(arena + OFF_OUTPUT);
  int i;
  for (i = 0; i < FIXTURE_N; i++) {
    out[i] = sum[i] > 0 ? sum[i] : 0;
  }
  return 0;
}

static int32_t fixture_guard(uint8_t *arena) {
  switch ((int8_t)arena[OFF_INPUT]) {
    case 127:
      TVMFFIErrorSetRaisedFromCStr("ValueError", "input[0] is 127, the fixture's failure trigger");
      return -1;
    case 126:
      utvm_port_abort(3);
      return -1;
    case 125:
      utvm_port_reset();
      return -1;
    case 124:
      utvm_log(UTVM_LOG_INFO, "fixture_guard saw 124");
      return 0;
    case 123: {
      uint64_t start = utvm_port_timer_ticks();
      uint64_t busy = utvm_port_timer_hz() / 100u * arena[OFF_INPUT + 1];
      while (utvm_port_timer_ticks() - start < busy) {
      }
      return 0;
    }
    default:
      return 0;
  }
}

static const uint16_t add_args[3] = {0, 1, 2};
static const uint16_t relu_args[2] = {2, 3};
static const uint16_t guard_args[1] = {0};

static const utvm_kernel_t kernels[UTVM_MODEL_NUM_KERNELS] = {
    {"fixture_add", fixture_add, 3, add_args},
    {"fixture_relu", fixture_relu, 2, relu_args},
    {"fixture_guard", fixture_guard, 1, guard_args},
};

static const uint16_t inputs[1] = {0};
static const uint16_t outputs[1] = {3};

const utvm_model_t utvm_model = {
    UTVM_MODEL_ABI_VERSION,
    "fixture",
    "0123456789abcdef0123456789abcdef",
    UTVM_MODEL_ARENA_BYTES,
    UTVM_MODEL_ARENA_ALIGNMENT,
    UTVM_MODEL_WORKSPACE_BYTES,
    UTVM_MODEL_NUM_TENSORS,
    tensors,
    1,
    inputs,
    1,
    outputs,
    UTVM_MODEL_NUM_KERNELS,
    kernels,
    NULL, /* no AOT entry point: the runtime walks the kernel table */
};
