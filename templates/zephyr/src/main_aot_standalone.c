/*
 * aot_standalone: run the model once on the inputs baked into the image (standalone_inputs.c) and
 * print the report utvm reads (project_api/standalone_report.py has its format) over the UART, then
 * stop. The text is formatted with the kernel's snprintk and sent through the port.
 */
#include <stdarg.h>
#include <string.h>

#include <zephyr/kernel.h>
#include <zephyr/sys/printk.h>

#include "utvm/backend.h"
#include "utvm/model.h"
#include "utvm/plan.h"
#include "utvm/port.h"
#include "utvm_zephyr.h"

extern const uint16_t utvm_standalone_num_inputs;
extern const uint8_t *const utvm_standalone_input_data[];
extern const uint32_t utvm_standalone_input_bytes[];

static void say(const char *format, ...) {
  char line[160];
  va_list args;
  va_start(args, format);
  int n = vsnprintk(line, sizeof(line), format, args);
  va_end(args);
  if (n > 0) {
    utvm_port_write((const uint8_t *)line, n < (int)sizeof(line) ? (uint32_t)n : sizeof(line) - 1u);
  }
}

static int report_failure(const char *why) {
  say("status 255\nerror %s\nutvm-end\n", why);
  return 2;
}

static void report_output(uint16_t index) {
  static const char digits[] = "0123456789abcdef";
  const utvm_tensor_t *t = &utvm_model.tensors[utvm_model.outputs[index]];
  const uint8_t *data = utvm_plan_tensor_data(utvm_model.outputs[index]);
  say("output %u %s %u\n", (unsigned)index, t->name, (unsigned)t->nbytes);
  char hex[2u + 64u + 1u];
  for (uint32_t at = 0; at < t->nbytes;) {
    uint32_t k = 0;
    hex[k++] = 'x';
    hex[k++] = ' ';
    for (uint32_t end = at + 32u < t->nbytes ? at + 32u : t->nbytes; at < end; at++) {
      hex[k++] = digits[data[at] >> 4];
      hex[k++] = digits[data[at] & 0xFu];
    }
    hex[k++] = '\n';
    utvm_port_write((const uint8_t *)hex, k);
  }
}

int main(void) {
  if (utvm_zephyr_init() != 0) {
    utvm_port_abort(1);
  }
  utvm_plan_init();
  say("utvm-standalone %s\n", utvm_model.name);
  if (utvm_model.abi_version != UTVM_MODEL_ABI_VERSION) {
    return report_failure("the model was generated for another runtime ABI");
  }
  if (utvm_standalone_num_inputs != utvm_model.num_inputs) {
    return report_failure("the baked inputs do not match the model's inputs; regenerate the project");
  }
  uint8_t *arena = utvm_plan_arena();
  for (uint16_t i = 0; i < utvm_model.num_inputs; i++) {
    const utvm_tensor_t *t = &utvm_model.tensors[utvm_model.inputs[i]];
    if (t->storage != UTVM_STORAGE_ARENA || utvm_standalone_input_bytes[i] != t->nbytes) {
      return report_failure("a baked input's size does not match its tensor; regenerate the project");
    }
    memcpy(arena + t->offset, utvm_standalone_input_data[i], t->nbytes);
  }
  uint64_t start = utvm_port_timer_ticks();
  int32_t status = utvm_plan_run();
  uint64_t ticks = utvm_port_timer_ticks() - start;
  say("status %d\n", (int)status);
  if (status != 0) {
    say("error kernel %s: %s\n", utvm_model.kernels[status - 1].name, utvm_backend_last_error());
  }
  say("ticks %llu\ntimer_hz %llu\n", (unsigned long long)ticks, (unsigned long long)utvm_port_timer_hz());
  for (uint16_t i = 0; status == 0 && i < utvm_model.num_outputs; i++) {
    report_output(i);
  }
  say("utvm-end\n");
  return status == 0 ? 0 : 1;
}
