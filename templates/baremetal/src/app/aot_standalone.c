/*
 * aot_standalone: run the model once on the inputs baked into the image (standalone_inputs.c),
 * print the status, the timer ticks of the run and every output (hex) over the UART, then exit:
 * through semihosting under QEMU, whose exit status is then 0 for success.
 *
 *   utvm-standalone <model>
 *   status <0 | failing kernel + 1>
 *   [error <text>]
 *   ticks <n>
 *   timer_hz <hz>
 *   output <index> <name> <nbytes>
 *   x <up to 32 bytes in hex>        (as many lines as the output needs)
 *   utvm-end
 */
#include <stdint.h>
#include <string.h>

#include "console.h"
#include "platform.h"
#include "utvm/backend.h"
#include "utvm/model.h"
#include "utvm/plan.h"
#include "utvm/port.h"

extern const uint16_t utvm_standalone_num_inputs;
extern const uint8_t *const utvm_standalone_input_data[];
extern const uint32_t utvm_standalone_input_bytes[];

#define HEX_BYTES_PER_LINE 32u

static void put_hex_line(const uint8_t *data, uint32_t n) {
  static const char hex[] = "0123456789abcdef";
  char line[2u + 2u * HEX_BYTES_PER_LINE + 1u];
  uint32_t k = 0;
  line[k++] = 'x';
  line[k++] = ' ';
  for (uint32_t i = 0; i < n; i++) {
    line[k++] = hex[data[i] >> 4];
    line[k++] = hex[data[i] & 0xFu];
  }
  line[k++] = '\n';
  utvm_port_write((const uint8_t *)line, k);
}

static int fail(const char *what) {
  console_put("status 255\nerror ");
  console_put(what);
  console_put("\nutvm-end\n");
  return 2;
}

int main(void) {
  platform_init();
  utvm_plan_init();
  console_put("utvm-standalone ");
  console_put(utvm_model.name);
  console_put("\n");
  if (utvm_model.abi_version != UTVM_MODEL_ABI_VERSION) {
    return fail("the model was generated for another runtime ABI");
  }
  if (utvm_standalone_num_inputs != utvm_model.num_inputs) {
    return fail("the baked inputs do not match the model's inputs; regenerate the project");
  }
  uint8_t *arena = utvm_plan_arena();
  for (uint16_t i = 0; i < utvm_model.num_inputs; i++) {
    const utvm_tensor_t *t = &utvm_model.tensors[utvm_model.inputs[i]];
    if (t->storage != UTVM_STORAGE_ARENA || utvm_standalone_input_bytes[i] != t->nbytes) {
      return fail("a baked input's size does not match its tensor; regenerate the project");
    }
    memcpy(arena + t->offset, utvm_standalone_input_data[i], t->nbytes);
  }
  uint64_t start = utvm_port_timer_ticks();
  int32_t status = utvm_plan_run();
  uint64_t ticks = utvm_port_timer_ticks() - start;
  console_put("status ");
  console_put_u64((uint64_t)status);
  console_put("\n");
  if (status != 0) {
    console_put("error kernel ");
    console_put(utvm_model.kernels[status - 1].name);
    console_put(": ");
    console_put(utvm_backend_last_error());
    console_put("\n");
  }
  console_put("ticks ");
  console_put_u64(ticks);
  console_put("\ntimer_hz ");
  console_put_u64(utvm_port_timer_hz());
  console_put("\n");
  for (uint16_t i = 0; status == 0 && i < utvm_model.num_outputs; i++) {
    const utvm_tensor_t *t = &utvm_model.tensors[utvm_model.outputs[i]];
    const uint8_t *data = utvm_plan_tensor_data(utvm_model.outputs[i]);
    console_put("output ");
    console_put_u64(i);
    console_put(" ");
    console_put(t->name);
    console_put(" ");
    console_put_u64(t->nbytes);
    console_put("\n");
    for (uint32_t done = 0; done < t->nbytes; done += HEX_BYTES_PER_LINE) {
      uint32_t n = t->nbytes - done < HEX_BYTES_PER_LINE ? t->nbytes - done : HEX_BYTES_PER_LINE;
      put_hex_line(data + done, n);
    }
  }
  console_put("utvm-end\n");
  return status == 0 ? 0 : 1;
}
