/*
 * The MLPerf Tiny DUT protocol (see mlperftiny.h): command assembly, the commands, and the
 * benchmark's input and result conventions over the model table and the AOT plan.
 */
#include "mlperftiny.h"

#include <stddef.h>
#include <string.h>

#include "utvm/backend.h"
#include "utvm/model.h"
#include "utvm/plan.h"
#include "utvm/port.h"
#include "utvm_mlperf_config.h"

#define FIRMWARE_VERSION "ULPMark for tinyML Firmware V0.0.1"
#define DEFAULT_INFERENCES 1u
#define DEFAULT_WARMUPS 10u
#define BUFFER_BYTES_PER_LINE 8u
#define MICROS_PER_SECOND 1000000u
#define FLOAT_DECIMALS 6
/* From here on, a value is printed in scientific notation (it has no 6 exact decimals anyway). */
#define FLOAT_FIXED_LIMIT 1e12f

static char command[UTVM_MLPERF_CMD_MAX + 1u];
static uint32_t command_len;
static uint8_t command_overflow;

/* The input file, as the runner loads it ("db load N", then "db <hex>" chunks). */
static uint8_t input_file[UTVM_MLPERF_INPUT_BYTES];
static uint32_t input_expected; /* N of the last "db load N"; 0 before any */
static uint32_t input_loaded;

static uint8_t have_results;
static uint64_t start_ticks;

/* ---- output: whole lines, each written to the port at its end ---------------------------- */

static char out_buf[96];
static uint32_t out_len;

static void out_flush(void) {
  if (out_len > 0u) {
    (void)utvm_port_write((const uint8_t *)out_buf, out_len);
    out_len = 0;
  }
}

static void out_char(char c) {
  if (out_len == sizeof(out_buf)) {
    out_flush();
  }
  out_buf[out_len++] = c;
}

static void out_str(const char *s) {
  while (*s != '\0') {
    out_char(*s++);
  }
}

static void out_end_line(void) {
  out_char('\r');
  out_char('\n');
  out_flush();
}

static void out_line(const char *s) {
  out_str(s);
  out_end_line();
}

static void out_u64(uint64_t value) {
  char digits[21];
  int i = (int)sizeof(digits);
  do {
    digits[--i] = (char)('0' + (int)(value % 10u));
    value /= 10u;
  } while (value != 0u);
  while (i < (int)sizeof(digits)) {
    out_char(digits[i++]);
  }
}

static void out_fraction(uint64_t fraction) {
  char digits[FLOAT_DECIMALS];
  for (int i = FLOAT_DECIMALS - 1; i >= 0; i--) {
    digits[i] = (char)('0' + (int)(fraction % 10u));
    fraction /= 10u;
  }
  for (int i = 0; i < FLOAT_DECIMALS; i++) {
    out_char(digits[i]);
  }
}

/* A finite float >= 0 below 2^63 with FLOAT_DECIMALS decimals, rounded half up from its exact
 * binary value: integer arithmetic on its bits, so no double (soft-float on most Cortex-M). */
static void out_fixed(float v) {
  const uint64_t scale = 1000000u; /* 10^FLOAT_DECIMALS */
  uint32_t bits;
  memcpy(&bits, &v, sizeof(bits));
  int32_t exponent = (int32_t)((bits >> 23) & 0xFFu);
  uint64_t mantissa = bits & 0x7FFFFFu;
  if (exponent == 0) {
    exponent = 1; /* subnormal */
  } else {
    mantissa |= 0x800000u;
  }
  int32_t shift = exponent - 150; /* v = mantissa * 2^shift */
  uint64_t whole, fraction = 0;
  if (shift >= 0) {
    whole = mantissa << shift;
  } else if (shift > -45) {
    /* fraction bits * 10^6 stays below 2^64 for up to 44 fraction bits */
    uint32_t n = (uint32_t)-shift;
    whole = mantissa >> n;
    fraction = ((mantissa & ((1ull << n) - 1u)) * scale + (1ull << (n - 1u))) >> n;
    if (fraction == scale) {
      whole++;
      fraction = 0;
    }
  } else {
    whole = 0; /* below 2^-21: rounds to 0.000000 */
  }
  out_u64(whole);
  out_char('.');
  out_fraction(fraction);
}

/* A float with six decimals, in scientific notation from FLOAT_FIXED_LIMIT on; nan and inf as
 * Python's float() reads them. */
static void out_float(float v) {
  int exponent = 0;
  if (v != v) {
    out_str("nan");
    return;
  }
  if (v < 0.0f) {
    out_char('-');
    v = -v;
  }
  if (v > 3.4028235e38f) {
    out_str("inf");
    return;
  }
  if (v >= FLOAT_FIXED_LIMIT) {
    while (v >= 10.0f) {
      v /= 10.0f;
      exponent++;
    }
  }
  out_fixed(v);
  if (exponent != 0) {
    out_str("e+");
    out_u64((uint64_t)exponent);
  }
}

/* An error line; text is our own, detail (possibly from the host) is shown printable-only. */
static void out_error(const char *text, const char *detail) {
  out_str("e-[");
  out_str(text);
  if (detail != NULL) {
    for (; *detail != '\0'; detail++) {
      char c = *detail;
      out_char((c == '[' || c == ']' || c < 0x20 || c > 0x7e) ? '?' : c);
    }
  }
  out_char(']');
  out_end_line();
}

/* ---- parsing ------------------------------------------------------------------------------ */

static int is_space(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; }

/* The next space-separated token of *cursor (NUL-terminated in place), or NULL. */
static char *next_token(char **cursor) {
  char *p = *cursor;
  while (*p != '\0' && is_space(*p)) {
    p++;
  }
  if (*p == '\0') {
    *cursor = p;
    return NULL;
  }
  char *token = p;
  while (*p != '\0' && !is_space(*p)) {
    p++;
  }
  if (*p != '\0') {
    *p++ = '\0';
  }
  *cursor = p;
  return token;
}

/* A decimal uint32; 0 when token is not one (digits only, no overflow). */
static int parse_u32(const char *token, uint32_t *out) {
  uint64_t value = 0;
  if (*token == '\0') {
    return 0;
  }
  for (; *token != '\0'; token++) {
    if (*token < '0' || *token > '9') {
      return 0;
    }
    value = value * 10u + (uint64_t)(*token - '0');
    if (value > 0xFFFFFFFFu) {
      return 0;
    }
  }
  *out = (uint32_t)value;
  return 1;
}

static int hex_digit(char c) {
  if (c >= '0' && c <= '9') {
    return c - '0';
  }
  if (c >= 'a' && c <= 'f') {
    return c - 'a' + 10;
  }
  if (c >= 'A' && c <= 'F') {
    return c - 'A' + 10;
  }
  return -1;
}

/* ---- time --------------------------------------------------------------------------------- */

static uint64_t micros_since_start(void) {
  uint64_t hz = utvm_port_timer_hz();
  uint64_t ticks = utvm_port_timer_ticks() - start_ticks;
  return (ticks / hz) * MICROS_PER_SECOND + ((ticks % hz) * MICROS_PER_SECOND) / hz;
}

static void out_timestamp(void) {
  out_str("m-lap-us-");
  out_u64(micros_since_start());
  out_end_line();
}

/* ---- the model ---------------------------------------------------------------------------- */

static const utvm_tensor_t *input_tensor(void) { return &utvm_model.tensors[utvm_model.inputs[0]]; }

static const utvm_tensor_t *output_tensor(void) { return &utvm_model.tensors[utvm_model.outputs[0]]; }

#define NEEDS_INPUT_FLOATS                                                                      \
  (UTVM_MLPERF_INPUT_CONVERSION == UTVM_MLPERF_INPUT_QUANTIZE_F32 ||                            \
   UTVM_MLPERF_RESULT == UTVM_MLPERF_RESULT_ANOMALY_MSE)

#if NEEDS_INPUT_FLOATS
/* Element i of the input file as a float (little-endian float32, whatever the core's order). */
static float input_file_float(uint32_t i) {
  const uint8_t *b = &input_file[4u * i];
  uint32_t bits = (uint32_t)b[0] | ((uint32_t)b[1] << 8) | ((uint32_t)b[2] << 16) | ((uint32_t)b[3] << 24);
  float value;
  memcpy(&value, &bits, sizeof(value));
  return value;
}
#endif

#if UTVM_MLPERF_INPUT_CONVERSION == UTVM_MLPERF_INPUT_QUANTIZE_F32
/* As TFLite Micro's reference DUTs quantize: round(value / scale) + zero point, clamped. */
static int8_t quantize(float value) {
  float r = value / UTVM_MLPERF_INPUT_SCALE;
  int32_t q;
  if (!(r > -1000.0f)) { /* NaN lands here too */
    return -128;
  }
  if (r > 1000.0f) {
    return 127;
  }
  q = (int32_t)(r < 0.0f ? r - 0.5f : r + 0.5f) + UTVM_MLPERF_INPUT_ZERO_POINT; /* half away from zero */
  return (int8_t)(q < -128 ? -128 : (q > 127 ? 127 : q));
}
#endif

/* The input tensor's size in bytes that the configured conversion needs. */
static uint32_t converted_input_bytes(void) {
#if UTVM_MLPERF_INPUT_CONVERSION == UTVM_MLPERF_INPUT_QUANTIZE_F32
  return UTVM_MLPERF_INPUT_BYTES / 4u;
#else
  return UTVM_MLPERF_INPUT_BYTES;
#endif
}

/* Copy the loaded file into the model's input tensor, converted. */
static void load_input_tensor(void) {
  uint8_t *dest = utvm_plan_arena() + input_tensor()->offset;
  uint32_t n = converted_input_bytes();
  for (uint32_t i = 0; i < n; i++) {
#if UTVM_MLPERF_INPUT_CONVERSION == UTVM_MLPERF_INPUT_U8_TO_I8
    dest[i] = (uint8_t)(input_file[i] ^ 0x80u); /* (int8_t)(u - 128), without the casts */
#elif UTVM_MLPERF_INPUT_CONVERSION == UTVM_MLPERF_INPUT_QUANTIZE_F32
    dest[i] = (uint8_t)quantize(input_file_float(i));
#else
    dest[i] = input_file[i];
#endif
  }
}

/* Output element i as a float. */
static float output_value(const uint8_t *data, uint32_t i) {
#if UTVM_MLPERF_OUTPUT_TYPE == UTVM_MLPERF_OUTPUT_F32
  float value;
  memcpy(&value, data + 4u * i, sizeof(value));
  return value;
#elif UTVM_MLPERF_OUTPUT_TYPE == UTVM_MLPERF_OUTPUT_U8
  return (float)((int32_t)data[i] - UTVM_MLPERF_OUTPUT_ZERO_POINT) * UTVM_MLPERF_OUTPUT_SCALE;
#else
  return (float)((int32_t)(int8_t)data[i] - UTVM_MLPERF_OUTPUT_ZERO_POINT) * UTVM_MLPERF_OUTPUT_SCALE;
#endif
}

static uint32_t output_count(void) {
  uint32_t nbytes = output_tensor()->nbytes;
  return UTVM_MLPERF_OUTPUT_TYPE == UTVM_MLPERF_OUTPUT_F32 ? nbytes / 4u : nbytes;
}

/* Whether the compiled model is the one the configuration was generated for. */
static int model_matches(void) {
  return utvm_model.abi_version == UTVM_MODEL_ABI_VERSION && utvm_model.num_inputs == 1u &&
         utvm_model.num_outputs == 1u && input_tensor()->storage == UTVM_STORAGE_ARENA &&
         input_tensor()->nbytes == converted_input_bytes();
}

/* One inference; on failure, the error line and 0. */
static int run_once(void) {
  int32_t status = utvm_plan_run();
  if (status == 0) {
    return 1;
  }
  out_str("e-[Inference failed in kernel ");
  out_str(utvm_model.kernels[status - 1].name);
  out_str(": ");
  out_str(utvm_backend_last_error());
  out_char(']');
  out_end_line();
  return 0;
}

static void print_results(void) {
  const uint8_t *data = utvm_plan_tensor_data(utvm_model.outputs[0]);
  uint32_t count = output_count();
  out_str("m-results-[");
#if UTVM_MLPERF_RESULT == UTVM_MLPERF_RESULT_ANOMALY_MSE
  float sum = 0.0f;
  if (count > UTVM_MLPERF_INPUT_BYTES / 4u) {
    count = UTVM_MLPERF_INPUT_BYTES / 4u; /* the generator makes them equal; never read past the file */
  }
  for (uint32_t i = 0; i < count; i++) {
    float diff = output_value(data, i) - input_file_float(i);
    sum += diff * diff;
  }
  out_float(count > 0u ? sum / (float)count : 0.0f);
#else
  for (uint32_t i = 0; i < count; i++) {
    if (i > 0u) {
      out_char(',');
    }
    out_float(output_value(data, i));
  }
#endif
  out_char(']');
  out_end_line();
}

/* ---- commands ----------------------------------------------------------------------------- */

static void cmd_profile(void) {
  out_line("m-profile-[" FIRMWARE_VERSION "]");
  out_line("m-model-[" UTVM_MLPERF_MODEL_ID "]");
}

static void cmd_help(void) {
  out_line(FIRMWARE_VERSION);
  out_line("help         : this list");
  out_line("name         : the name of the device");
  out_line("profile      : the firmware version and the benchmark");
  out_line("timestamp    : the device time, in microseconds");
  out_line("db load N    : expect an input file of N bytes");
  out_line("db HH[HH]*   : bytes of the input file, in hex");
  out_line("db print     : the loaded bytes, in hex");
  out_line("infer N [W]  : W warmup inferences (default 10), then N timed ones (default 1)");
  out_line("results      : the results of the last inference");
  if (UTVM_MLPERF_NOTE[0] != '\0') {
    out_line("note: " UTVM_MLPERF_NOTE);
  }
}

static void cmd_db_load(char **cursor) {
  char *count = next_token(cursor);
  uint32_t n = 0;
  if (count == NULL) {
    out_error("Command 'db load' needs a byte count", NULL);
    return;
  }
  if (!parse_u32(count, &n) || n == 0u) {
    out_error("db load needs a byte count above 0, not ", count);
    return;
  }
  input_loaded = 0;
  input_expected = 0;
  if (n > UTVM_MLPERF_INPUT_BYTES) {
    out_error("db load: this model's input file is at most " UTVM_MLPERF_INPUT_BYTES_TEXT " bytes, not ",
              count);
    return;
  }
  input_expected = n;
  out_str("m-[Expecting ");
  out_u64(n);
  out_str(" bytes]");
  out_end_line();
}

static void cmd_db_print(void) {
  for (uint32_t i = 0; i < input_loaded; i += BUFFER_BYTES_PER_LINE) {
    static const char hex[] = "0123456789abcdef";
    out_str("m-buffer-");
    for (uint32_t k = i; k < input_loaded && k < i + BUFFER_BYTES_PER_LINE; k++) {
      if (k > i) {
        out_char('-');
      }
      out_char(hex[input_file[k] >> 4]);
      out_char(hex[input_file[k] & 0xFu]);
    }
    out_end_line();
  }
}

static void cmd_db_bytes(const char *digits) {
  uint32_t length = (uint32_t)strlen(digits);
  if (input_expected == 0u) {
    out_error("No input file expected: send 'db load N' first", NULL);
    return;
  }
  if (input_loaded == input_expected) {
    out_error("All bytes of the input file are loaded: send 'db load N' for another", NULL);
    return;
  }
  if (length % 2u != 0u) {
    out_error("Odd number of hex digits: ", digits);
    return;
  }
  for (uint32_t i = 0; i < length; i++) {
    if (hex_digit(digits[i]) < 0) {
      out_error("Invalid hex digits: ", digits);
      return;
    }
  }
  /* Digits past the file's end are ignored, as the runner's last chunk may be padded. */
  for (uint32_t i = 0; i < length && input_loaded < input_expected; i += 2u) {
    input_file[input_loaded++] = (uint8_t)((hex_digit(digits[i]) << 4) | hex_digit(digits[i + 1u]));
  }
  if (input_loaded == input_expected) {
    out_line("m-load-done");
  }
}

static void cmd_db(char **cursor) {
  char *sub = next_token(cursor);
  if (sub == NULL) {
    out_error("Command 'db' needs a subcommand: load N, print, or hex bytes", NULL);
  } else if (strcmp(sub, "load") == 0) {
    cmd_db_load(cursor);
  } else if (strcmp(sub, "print") == 0) {
    cmd_db_print();
  } else {
    cmd_db_bytes(sub);
  }
}

static void cmd_infer(char **cursor) {
  char *token = next_token(cursor);
  uint32_t inferences = DEFAULT_INFERENCES;
  uint32_t warmups = DEFAULT_WARMUPS;
  if (token != NULL && (!parse_u32(token, &inferences) || inferences == 0u)) {
    out_error("Inference iterations must be a whole number above 0, not ", token);
    return;
  }
  token = token != NULL ? next_token(cursor) : NULL;
  if (token != NULL && !parse_u32(token, &warmups)) {
    out_error("Inference warmups must be a whole number, not ", token);
    return;
  }
  if (!model_matches()) {
    out_error("The model does not match this firmware's MLPerf Tiny configuration; generate the project again",
              NULL);
    return;
  }
  if (input_expected != UTVM_MLPERF_INPUT_BYTES || input_loaded != input_expected) {
    out_error("No input loaded: send 'db load " UTVM_MLPERF_INPUT_BYTES_TEXT "' and its bytes first", NULL);
    return;
  }
  have_results = 0;
  load_input_tensor();
  out_str("m-warmup-start-");
  out_u64(warmups);
  out_end_line();
  for (uint32_t i = 0; i < warmups; i++) {
    if (!run_once()) {
      return;
    }
  }
  out_line("m-warmup-done");
  out_str("m-infer-start-");
  out_u64(inferences);
  out_end_line();
  out_timestamp();
  for (uint32_t i = 0; i < inferences; i++) {
    if (!run_once()) {
      return;
    }
  }
  out_timestamp();
  out_line("m-infer-done");
  have_results = 1;
  print_results();
}

static void dispatch(char *line) {
  char *cursor = line;
  char *name = next_token(&cursor);
  if (name == NULL) {
    /* An empty command (a lone '%', which flushes a half-sent one) only gets "m-ready". */
  } else if (strcmp(name, "name") == 0) {
    out_line("m-name-dut-[" UTVM_MLPERF_DUT_NAME "]");
  } else if (strcmp(name, "profile") == 0) {
    cmd_profile();
  } else if (strcmp(name, "help") == 0) {
    cmd_help();
  } else if (strcmp(name, "timestamp") == 0) {
    out_timestamp();
  } else if (strcmp(name, "db") == 0) {
    cmd_db(&cursor);
  } else if (strcmp(name, "infer") == 0) {
    cmd_infer(&cursor);
  } else if (strcmp(name, "results") == 0) {
    if (have_results) {
      print_results();
    } else {
      out_error("No results yet: run 'infer N W' first", NULL);
    }
  } else {
    out_error("Unknown command: ", name);
  }
  out_line("m-ready");
}

/* ---- entry points ------------------------------------------------------------------------- */

void utvm_mlperf_start(void) {
  command_len = 0;
  command_overflow = 0;
  input_expected = input_loaded = 0;
  have_results = 0;
  start_ticks = utvm_port_timer_ticks();
  out_line("m-timestamp-mode-performance");
  if (UTVM_MLPERF_NOTE[0] != '\0') {
    out_line("m-utvm-note-[" UTVM_MLPERF_NOTE "]");
  }
  out_line("m-init-done");
  out_line("m-ready");
}

void utvm_mlperf_feed(const uint8_t *data, uint32_t n) {
  for (uint32_t i = 0; i < n; i++) {
    char c = (char)data[i];
    if (c == '%') {
      command[command_len] = '\0';
      if (command_overflow) {
        out_error("Command too long: at most 80 characters before the '%'", NULL);
        out_line("m-ready");
      } else {
        dispatch(command);
      }
      command_len = 0;
      command_overflow = 0;
    } else if (command_len == UTVM_MLPERF_CMD_MAX) {
      command_overflow = 1;
    } else {
      /* Control bytes (a NUL included) separate tokens like spaces. */
      command[command_len++] = (data[i] < 0x20u || data[i] == 0x7Fu) ? ' ' : c;
    }
  }
}

int32_t utvm_mlperf_serve(void) {
  uint8_t buf[64];
  utvm_mlperf_start();
  for (;;) {
    int32_t n = utvm_port_read(buf, (uint32_t)sizeof(buf));
    if (n < 0) {
      return n;
    }
    utvm_mlperf_feed(buf, (uint32_t)n);
  }
}
