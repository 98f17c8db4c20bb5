/*
 * aot_standalone: run the model once on the inputs baked into the sketch (utvm_standalone_inputs.c,
 * kept in flash), then print the report over Serial and halt. The report's lines:
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
#include <Arduino.h>
#include <string.h>

extern "C" {
#include "../include/utvm/backend.h"
#include "../include/utvm/model.h"
#include "../include/utvm/plan.h"
#include "../include/utvm/port.h"

extern const uint16_t utvm_standalone_num_inputs;
extern const uint32_t utvm_standalone_input_bytes[];
/* Copies bytes [offset, offset + n) of baked input `index` into dst (from flash on AVR). */
void utvm_standalone_input_copy(uint16_t index, uint32_t offset, uint8_t *dst, uint32_t n);
}
#include "utvm_arduino.h"

#define HEX_BYTES_PER_LINE 32u

static void put(const char *text) { utvm_port_write((const uint8_t *)text, (uint32_t)strlen(text)); }

static void put_u64(uint64_t v) {
  char digits[21];
  int n = 20;
  digits[n] = '\0';
  do {
    digits[--n] = (char)('0' + (int)(v % 10u));
    v /= 10u;
  } while (v != 0u);
  put(digits + n);
}

static void put_hex_line(const uint8_t *data, uint32_t n) {
  static const char hex[] = "0123456789abcdef";
  char line[2u + 2u * HEX_BYTES_PER_LINE + 2u];
  uint32_t k = 0;
  line[k++] = 'x';
  line[k++] = ' ';
  for (uint32_t i = 0; i < n; i++) {
    line[k++] = hex[data[i] >> 4];
    line[k++] = hex[data[i] & 0xFu];
  }
  line[k++] = '\n';
  line[k] = '\0';
  put(line);
}

static void finish(int32_t status, const char *error) {
  if (error != NULL) {
    put("status 255\nerror ");
    put(error);
    put("\n");
  }
  put("utvm-end\n");
  (void)status;
  utvm_arduino_halt();
}

void utvm_arduino_run_standalone(void) {
  utvm_plan_init();
  put("utvm-standalone ");
  put(utvm_model.name);
  put("\n");
  if (utvm_model.abi_version != UTVM_MODEL_ABI_VERSION) {
    finish(255, "the model was generated for another runtime ABI");
  }
  if (utvm_standalone_num_inputs != utvm_model.num_inputs) {
    finish(255, "the baked inputs do not match the model's inputs; regenerate the project");
  }
  uint8_t *arena = utvm_plan_arena();
  for (uint16_t i = 0; i < utvm_model.num_inputs; i++) {
    const utvm_tensor_t *t = &utvm_model.tensors[utvm_model.inputs[i]];
    if (t->storage != UTVM_STORAGE_ARENA || utvm_standalone_input_bytes[i] != t->nbytes) {
      finish(255, "a baked input's size does not match its tensor; regenerate the project");
    }
    utvm_standalone_input_copy(i, 0, arena + t->offset, t->nbytes);
  }
  uint64_t start = utvm_port_timer_ticks();
  int32_t status = utvm_plan_run();
  uint64_t ticks = utvm_port_timer_ticks() - start;
  put("status ");
  put_u64((uint64_t)status);
  put("\n");
  if (status != 0) {
    put("error kernel ");
    put(utvm_model.kernels[status - 1].name);
    put(": ");
    put(utvm_backend_last_error());
    put("\n");
  }
  put("ticks ");
  put_u64(ticks);
  put("\ntimer_hz ");
  put_u64(utvm_port_timer_hz());
  put("\n");
  for (uint16_t i = 0; status == 0 && i < utvm_model.num_outputs; i++) {
    const utvm_tensor_t *t = &utvm_model.tensors[utvm_model.outputs[i]];
    const uint8_t *data = utvm_plan_tensor_data(utvm_model.outputs[i]);
    put("output ");
    put_u64(i);
    put(" ");
    put(t->name);
    put(" ");
    put_u64(t->nbytes);
    put("\n");
    for (uint32_t done = 0; done < t->nbytes; done += HEX_BYTES_PER_LINE) {
      uint32_t n = t->nbytes - done < HEX_BYTES_PER_LINE ? t->nbytes - done : HEX_BYTES_PER_LINE;
      put_hex_line(data + done, n);
    }
  }
  finish(status, NULL);
}
