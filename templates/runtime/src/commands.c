/*
 * The command set: every argument is checked against the model table before
 * any memory is touched, and every failure becomes an error reply with a
 * message that names the tensor or kernel and the numbers involved.
 */
#include "utvm/commands.h"

#include <stddef.h>
#include <string.h>

#include "utvm/backend.h"
#include "utvm/config.h"
#include "utvm/model.h"
#include "utvm/plan.h"
#include "utvm/port.h"
#include "utvm/protocol.h"

/* Non-empty when the model table cannot be served; returned for model commands. */
static const char *model_problem;

int32_t utvm_commands_init(void) {
  const utvm_model_t *m = &utvm_model;
  uint16_t i;
  model_problem = NULL;
  utvm_plan_init();
  if (m->abi_version != UTVM_MODEL_ABI_VERSION) {
    model_problem = "model ABI version differs from the runtime's";
  } else if (m->arena_bytes > utvm_plan_arena_capacity()) {
    model_problem = "model arena is larger than UTVM_MODEL_ARENA_BYTES";
  } else if (m->workspace_bytes > utvm_plan_workspace_capacity()) {
    model_problem = "model workspace is larger than UTVM_MODEL_WORKSPACE_BYTES";
  } else {
    for (i = 0; i < m->num_tensors; i++) {
      const utvm_tensor_t *t = &m->tensors[i];
      if (t->storage == UTVM_STORAGE_CONST ? t->data == NULL
                                           : (t->offset > m->arena_bytes ||
                                              t->nbytes > m->arena_bytes - t->offset)) {
        model_problem = "model tensor table points outside the arena";
      }
    }
  }
  return model_problem == NULL ? 0 : -1;
}

utvm_text_t *utvm_reply_fail(utvm_reply_t *r, uint8_t code) {
  r->status = code;
  r->buf[0] = code;
  r->tail = NULL;
  r->tail_len = 0;
  utvm_text_init(&r->text, (char *)r->buf + 1, r->cap - 1u);
  r->len = 0;
  return &r->text;
}

/* "tensor 3 (conv_out)": what every message calls a tensor or kernel. */
static void name_item(utvm_text_t *t, const char *kind, uint16_t index, const char *name) {
  utvm_text_str(t, kind);
  utvm_text_str(t, " ");
  utvm_text_u32(t, index);
  if (name != NULL) {
    utvm_text_str(t, " (");
    utvm_text_str(t, name);
    utvm_text_str(t, ")");
  }
}

static void name_tensor(utvm_text_t *t, uint16_t id) {
  name_item(t, "tensor", id, id < utvm_model.num_tensors ? utvm_model.tensors[id].name : NULL);
}

/* Also called with what a generated AOT entry point returned, so checked too. */
static void name_kernel(utvm_text_t *t, uint16_t index) {
  name_item(t, "kernel", index, index < utvm_model.num_kernels ? utvm_model.kernels[index].name : NULL);
}

static int32_t check_len(utvm_reply_t *r, uint8_t cmd, uint32_t got, uint32_t want, uint8_t at_least) {
  utvm_text_t *t;
  if (got == want || (at_least && got > want)) {
    return 0;
  }
  t = utvm_reply_fail(r, UTVM_ERR_BAD_LENGTH);
  utvm_text_str(t, "command ");
  utvm_text_u32(t, cmd);
  utvm_text_str(t, " takes ");
  utvm_text_u32(t, want);
  utvm_text_str(t, at_least ? " or more argument bytes, got " : " argument bytes, got ");
  utvm_text_u32(t, got);
  return -1;
}

/* Room for `n` more payload bytes? */
static int32_t check_room(utvm_reply_t *r, uint32_t n) {
  utvm_text_t *t;
  if (n <= r->cap - r->len) {
    return 0;
  }
  t = utvm_reply_fail(r, UTVM_ERR_TOO_LARGE);
  utvm_text_str(t, "reply of ");
  utvm_text_u32(t, r->len + n);
  utvm_text_str(t, " bytes does not fit the negotiated packet payload of ");
  utvm_text_u32(t, r->cap);
  utvm_text_str(t, " bytes");
  return -1;
}

/* A record reply (INFO, TENSOR_INFO, KERNEL_INFO): the record is written byte by byte, and only
 * its bytes from `skip` on that fit the packet land in the reply. The host asks again from where
 * the reply ended until a reply comes back short, so a record of any size crosses any packet. */
typedef struct {
  utvm_reply_t *r;
  uint32_t skip; /* record bytes before the reply's first */
  uint32_t pos;  /* record bytes written so far */
} record_t;

static void rec_bytes(record_t *w, const uint8_t *p, uint32_t n) {
  for (; n > 0u; n--, w->pos++) {
    if (w->pos >= w->skip && w->pos - w->skip < w->r->cap) {
      w->r->buf[w->pos - w->skip] = *p;
    }
    p++;
  }
}

/* `nbytes` (at most 4) bytes of v, little-endian. */
static void rec_le(record_t *w, uint32_t v, uint32_t nbytes) {
  uint8_t b[4];
  utvm_put_u32(b, v);
  rec_bytes(w, b, nbytes);
}

static void rec_u16_list(record_t *w, const uint16_t *ids, uint16_t n) {
  uint16_t i;
  for (i = 0; i < n; i++) {
    rec_le(w, ids[i], 2);
  }
}

/* A string and its NUL. */
static void rec_string(record_t *w, const char *s) {
  if (s == NULL) {
    s = "";
  }
  do {
    rec_le(w, (uint8_t)*s, 1);
  } while (*s++ != '\0');
}

/* The record's reply: its bytes from `skip` on, as many as fit (none from past its end). */
static void rec_end(record_t *w) {
  uint32_t left = w->skip < w->pos ? w->pos - w->skip : 0u;
  w->r->len = left < w->r->cap ? left : w->r->cap;
}

/* A record command's arguments: `fixed` bytes, then optionally the u32 record offset to start at. */
static int32_t record_args(utvm_reply_t *r, uint8_t cmd, const uint8_t *args, uint32_t args_len, uint32_t fixed,
                           uint32_t *skip) {
  if (args_len == fixed + UTVM_RECORD_OFFSET_BYTES) {
    *skip = utvm_get_u32(args + fixed);
    return 0;
  }
  *skip = 0;
  return check_len(r, cmd, args_len, fixed, 0);
}

static int32_t check_model(utvm_reply_t *r) {
  if (model_problem == NULL) {
    return 0;
  }
  utvm_text_str(utvm_reply_fail(r, UTVM_ERR_MODEL_MISMATCH), model_problem);
  utvm_text_str(&r->text, "; regenerate the project");
  return -1;
}

/* Is index < count? Else a `code` error: "kernel 7 does not exist; the model has 3 kernels". */
static int32_t check_index(utvm_reply_t *r, uint8_t code, const char *kind, uint16_t index, uint16_t count) {
  utvm_text_t *t;
  if (index < count) {
    return 0;
  }
  t = utvm_reply_fail(r, code);
  name_item(t, kind, index, NULL);
  utvm_text_str(t, " does not exist; the model has ");
  utvm_text_u32(t, count);
  utvm_text_str(t, " ");
  utvm_text_str(t, kind);
  utvm_text_str(t, "s");
  return -1;
}

static int32_t check_tensor(utvm_reply_t *r, uint16_t id) {
  return check_index(r, UTVM_ERR_BAD_TENSOR, "tensor", id, utvm_model.num_tensors);
}

static int32_t check_kernel(utvm_reply_t *r, uint16_t index) {
  return check_index(r, UTVM_ERR_BAD_KERNEL, "kernel", index, utvm_model.num_kernels);
}

/* Is [offset, offset + len) inside the tensor (and the whole transfer too)? */
static int32_t check_span(utvm_reply_t *r, uint16_t id, const char *what, uint32_t offset, uint32_t len,
                          uint32_t total) {
  uint32_t nbytes = utvm_model.tensors[id].nbytes;
  utvm_text_t *t;
  if (total > nbytes) {
    offset = 0;
    len = total;
  } else if (offset <= nbytes && len <= nbytes - offset) {
    return 0;
  }
  t = utvm_reply_fail(r, UTVM_ERR_OUT_OF_BOUNDS);
  name_tensor(t, id);
  utvm_text_str(t, " ");
  utvm_text_str(t, what);
  utvm_text_str(t, " of ");
  utvm_text_u32(t, len);
  utvm_text_str(t, " bytes at offset ");
  utvm_text_u32(t, offset);
  utvm_text_str(t, " exceeds its ");
  utvm_text_u32(t, nbytes);
  utvm_text_str(t, " bytes");
  if (len > utvm_model.arena_bytes) {
    utvm_text_str(t, " and the whole arena of ");
    utvm_text_u32(t, utvm_model.arena_bytes);
  }
  return -1;
}

static void kernel_failed(utvm_reply_t *r, uint16_t index) {
  utvm_text_t *t = utvm_reply_fail(r, UTVM_ERR_KERNEL_FAILED);
  const char *why = utvm_backend_last_error();
  name_kernel(t, index);
  utvm_text_str(t, " failed: ");
  utvm_text_str(t, why[0] != '\0' ? why : "it returned an error without a message");
}

static void cmd_info(record_t *w) {
  const utvm_model_t *m = &utvm_model;
  uint8_t p[UTVM_INFO_FIXED_BYTES];
  utvm_put_u32(p + 0, UTVM_RUNTIME_VERSION);
  utvm_put_u32(p + 4, m->arena_bytes);
  utvm_put_u32(p + 8, m->workspace_bytes);
  utvm_put_u32(p + 12, utvm_backend_workspace_peak());
  utvm_put_u32(p + 16, UTVM_MAX_PACKET);
  utvm_put_u64(p + 20, utvm_port_timer_hz());
  utvm_put_u16(p + 28, m->num_tensors);
  utvm_put_u16(p + 30, m->num_kernels);
  utvm_put_u16(p + 32, m->num_inputs);
  utvm_put_u16(p + 34, m->num_outputs);
  utvm_put_u16(p + 36, UTVM_RX_WINDOW);
  p[38] = (uint8_t)m->abi_version;
  p[39] = UTVM_PROTOCOL_VERSION;
  rec_bytes(w, p, sizeof p);
  rec_u16_list(w, m->inputs, m->num_inputs);
  rec_u16_list(w, m->outputs, m->num_outputs);
  rec_string(w, m->name);
  rec_string(w, m->hash);
  rec_string(w, utvm_port_board_name());
}

static void cmd_tensor_info(record_t *w, uint16_t id) {
  const utvm_tensor_t *t = &utvm_model.tensors[id];
  uint8_t p[12];
  uint32_t i;
  p[0] = t->storage;
  p[1] = t->dtype_code;
  p[2] = t->dtype_bits;
  p[3] = t->ndim;
  utvm_put_u32(p + 4, t->offset);
  utvm_put_u32(p + 8, t->nbytes);
  rec_bytes(w, p, sizeof p);
  for (i = 0; i < t->ndim; i++) {
    rec_le(w, (uint32_t)t->shape[i], 4);
  }
  rec_string(w, t->name);
}

static void cmd_kernel_info(record_t *w, uint16_t index) {
  const utvm_kernel_t *k = &utvm_model.kernels[index];
  rec_le(w, k->num_args, 2);
  rec_u16_list(w, k->args, k->num_args);
  rec_string(w, k->name);
}

/* INFO, TENSOR_INFO (u16 id) or KERNEL_INFO (u16 index), each with an optional record offset. */
static void cmd_record(utvm_reply_t *r, uint8_t cmd, const uint8_t *args, uint32_t args_len) {
  uint32_t fixed = cmd == UTVM_CMD_INFO ? 0u : 2u;
  uint16_t id = fixed != 0u && args_len >= fixed ? utvm_get_u16(args) : 0u;
  record_t w;
  w.r = r;
  w.pos = 0;
  if (check_model(r) != 0 || record_args(r, cmd, args, args_len, fixed, &w.skip) != 0) {
    return;
  }
  if (cmd == UTVM_CMD_INFO) {
    cmd_info(&w);
  } else if (cmd == UTVM_CMD_TENSOR_INFO) {
    if (check_tensor(r, id) != 0) {
      return;
    }
    cmd_tensor_info(&w, id);
  } else {
    if (check_kernel(r, id) != 0) {
      return;
    }
    cmd_kernel_info(&w, id);
  }
  rec_end(&w);
}

static void cmd_write(utvm_reply_t *r, const uint8_t *args, uint32_t args_len) {
  uint16_t id = utvm_get_u16(args);
  uint32_t offset = utvm_get_u32(args + 4);
  uint32_t len = args_len - UTVM_WRITE_ARGS_BYTES;
  if (check_tensor(r, id) != 0) {
    return;
  }
  if (utvm_model.tensors[id].storage == UTVM_STORAGE_CONST) {
    name_tensor(utvm_reply_fail(r, UTVM_ERR_READ_ONLY), id);
    utvm_text_str(&r->text, " is a constant and cannot be written");
    return;
  }
  if (check_span(r, id, "write", offset, len, utvm_get_u32(args + 8)) != 0) {
    return;
  }
  memcpy(utvm_plan_arena() + utvm_model.tensors[id].offset + offset, args + UTVM_WRITE_ARGS_BYTES, len);
}

static void cmd_read(utvm_reply_t *r, const uint8_t *args) {
  uint16_t id = utvm_get_u16(args);
  uint32_t offset = utvm_get_u32(args + 4);
  uint32_t len = utvm_get_u32(args + 8);
  if (check_tensor(r, id) != 0 || check_span(r, id, "read", offset, len, utvm_get_u32(args + 12)) != 0 ||
      check_room(r, len) != 0) {
    return;
  }
#ifdef UTVM_CONST_COPY
  if (utvm_model.tensors[id].storage == UTVM_STORAGE_CONST) {
    UTVM_CONST_COPY(r->buf, utvm_plan_tensor_data(id) + offset, len); /* not a RAM address */
    r->len = len;
    return;
  }
#endif
  r->tail = utvm_plan_tensor_data(id) + offset;
  r->tail_len = len;
}

/* CRC-32 (IEEE 802.3, as zlib's crc32). The host checks whole tensors with it once its link has
 * shown noise, which a frame's CRC-16 might miss. A bit at a time, with no table, unless the CRC
 * tables are built in anyway (UTVM_CRC_TABLE >= 1, fast links): then a nibble at a time. */
static uint32_t crc32_of(const uint8_t *p, uint32_t n) {
#if UTVM_CRC_TABLE >= 1
  static const uint32_t table[16] = {
      0x00000000u, 0x1DB71064u, 0x3B6E20C8u, 0x26D930ACu, 0x76DC4190u, 0x6B6B51F4u, 0x4DB26158u, 0x5005713Cu,
      0xEDB88320u, 0xF00F9344u, 0xD6D6A3E8u, 0xCB61B38Cu, 0x9B64C2B0u, 0x86D3D2D4u, 0xA00AE278u, 0xBDBDF21Cu};
#endif
  uint32_t crc = 0xFFFFFFFFu;
  uint32_t i;
  for (i = 0; i < n; i++) {
    crc ^= p[i];
#if UTVM_CRC_TABLE >= 1
    crc = (crc >> 4) ^ table[crc & 15u];
    crc = (crc >> 4) ^ table[crc & 15u];
#else
    {
      int k;
      for (k = 0; k < 8; k++) {
        crc = (crc >> 1) ^ (0xEDB88320u & (0u - (crc & 1u)));
      }
    }
#endif
  }
  return crc ^ 0xFFFFFFFFu;
}

static void cmd_checksum(utvm_reply_t *r, const uint8_t *args) {
  uint16_t id = utvm_get_u16(args);
  uint32_t offset = utvm_get_u32(args + 4);
  uint32_t len = utvm_get_u32(args + 8);
  if (check_tensor(r, id) != 0 || check_span(r, id, "checksum", offset, len, len) != 0 || check_room(r, 4) != 0) {
    return;
  }
  utvm_put_u32(r->buf, crc32_of(utvm_plan_tensor_data(id) + offset, len));
  r->len = 4;
}

/* Run the model (kernel == UTVM_TIME_WHOLE_MODEL) or one kernel; 0 on success. */
static int32_t run_target(utvm_reply_t *r, uint16_t kernel) {
  int32_t rc;
  if (kernel == UTVM_TIME_WHOLE_MODEL) {
    rc = utvm_plan_run();
    if (rc != 0) {
      kernel_failed(r, (uint16_t)(rc - 1));
    }
  } else {
    rc = utvm_plan_run_kernel(kernel);
    if (rc != 0) {
      kernel_failed(r, kernel);
    }
  }
  return rc;
}

/* The timer ticks one TIME request may take (UTVM_TIME_LIMIT_MS). No 64-bit division: on a
 * Cortex-M that would link libgcc's, most of a kilobyte. */
static uint64_t time_limit_ticks(void) {
  uint64_t hz = utvm_port_timer_hz();
  uint32_t per_ms = (hz > 0xFFFFFFFFu ? 0xFFFFFFFFu : (uint32_t)hz) / 1000u;
  return (uint64_t)(per_ms != 0u ? per_ms : 1u) * UTVM_TIME_LIMIT_MS;
}

/* Is it past `deadline` (in timer ticks)? */
static int time_up(uint64_t deadline) {
  return utvm_port_timer_ticks() > deadline;
}

/* A TIME that asks for too many calls, or ran out of time after `done` of `calls`. */
static void time_refused(utvm_reply_t *r, uint32_t number, uint32_t repeat, uint32_t done) {
  utvm_text_t *t = utvm_reply_fail(r, UTVM_ERR_TOO_LARGE);
  utvm_text_str(t, "TIME of ");
  utvm_text_u32(t, number);
  utvm_text_str(t, " x ");
  utvm_text_u32(t, repeat);
  if (done == 0u) {
    utvm_text_str(t, " calls exceeds ");
    utvm_text_u32(t, UTVM_TIME_MAX_CALLS);
  } else {
    utvm_text_str(t, " calls stopped after ");
    utvm_text_u32(t, done);
    utvm_text_str(t, ": UTVM_TIME_LIMIT_MS is ");
    utvm_text_u32(t, UTVM_TIME_LIMIT_MS);
  }
}

static void cmd_time(utvm_reply_t *r, uint16_t kernel, uint32_t number, uint32_t repeat) {
  uint32_t calls;
  uint32_t done = 0;
  uint64_t deadline;
  uint32_t i;
  uint32_t n;
  if (kernel != UTVM_TIME_WHOLE_MODEL && check_kernel(r, kernel) != 0) {
    return;
  }
  if (number == 0u || repeat == 0u) {
    utvm_text_str(utvm_reply_fail(r, UTVM_ERR_BAD_ARGUMENT), "number and repeat must both be at least 1");
    return;
  }
  if (repeat > r->cap / 8u) {
    utvm_text_t *t = utvm_reply_fail(r, UTVM_ERR_TOO_LARGE);
    utvm_text_str(t, "repeat ");
    utvm_text_u32(t, repeat);
    utvm_text_str(t, " needs more than the ");
    utvm_text_u32(t, r->cap / 8u);
    utvm_text_str(t, " tick counts a packet holds");
    return;
  }
  if (number > UTVM_TIME_MAX_CALLS / repeat) { /* number x repeat > UTVM_TIME_MAX_CALLS */
    time_refused(r, number, repeat, 0);
    return;
  }
  calls = number * repeat;
  deadline = utvm_port_timer_ticks() + time_limit_ticks();
  for (i = 0; i < repeat; i++) {
    uint64_t start = utvm_port_timer_ticks();
    for (n = 0; n < number; n++) {
      if (run_target(r, kernel) != 0) {
        return;
      }
      /* The clock is read inside the timed calls only every 64th call, so it barely shows in them. */
      if ((++done & 63u) == 0u && done < calls && time_up(deadline)) {
        time_refused(r, number, repeat, done);
        return;
      }
    }
    utvm_put_u64(r->buf + 8u * i, utvm_port_timer_ticks() - start);
    if (done < calls && time_up(deadline)) {
      time_refused(r, number, repeat, done);
      return;
    }
  }
  r->len = 8u * repeat;
}

void utvm_reply_start(utvm_reply_t *r, uint8_t *buf, uint32_t cap) {
  r->buf = buf;
  r->cap = cap;
  r->len = 0;
  r->tail = NULL;
  r->tail_len = 0;
  r->status = UTVM_OK;
  r->reset_after = 0;
}

void utvm_commands_dispatch(uint8_t cmd, const uint8_t *args, uint32_t args_len, utvm_reply_t *r) {
  switch (cmd) {
    case UTVM_CMD_PING:
      if (check_room(r, args_len) == 0) {
        memcpy(r->buf, args, args_len);
        r->len = args_len;
      }
      break;
    case UTVM_CMD_INFO:
    case UTVM_CMD_TENSOR_INFO:
    case UTVM_CMD_KERNEL_INFO:
      cmd_record(r, cmd, args, args_len);
      break;
    case UTVM_CMD_WRITE:
      if (check_model(r) == 0 && check_len(r, cmd, args_len, UTVM_WRITE_ARGS_BYTES, 1) == 0) {
        cmd_write(r, args, args_len);
      }
      break;
    case UTVM_CMD_READ:
      if (check_model(r) == 0 && check_len(r, cmd, args_len, UTVM_READ_ARGS_BYTES, 0) == 0) {
        cmd_read(r, args);
      }
      break;
    case UTVM_CMD_CHECKSUM:
      if (check_model(r) == 0 && check_len(r, cmd, args_len, UTVM_CHECKSUM_ARGS_BYTES, 0) == 0) {
        cmd_checksum(r, args);
      }
      break;
    case UTVM_CMD_RUN:
    case UTVM_CMD_RUN_KERNEL:
      /* RUN_KERNEL's index is checked here: cmd_time reads 0xFFFF as "the whole model". */
      if (check_model(r) == 0 && check_len(r, cmd, args_len, cmd == UTVM_CMD_RUN ? 0u : 2u, 0) == 0 &&
          (cmd == UTVM_CMD_RUN || check_kernel(r, utvm_get_u16(args)) == 0)) {
        cmd_time(r, cmd == UTVM_CMD_RUN ? UTVM_TIME_WHOLE_MODEL : utvm_get_u16(args), 1, 1);
      }
      break;
    case UTVM_CMD_TIME:
      if (check_model(r) == 0 && check_len(r, cmd, args_len, UTVM_TIME_ARGS_BYTES, 0) == 0) {
        cmd_time(r, utvm_get_u16(args), utvm_get_u32(args + 4), utvm_get_u32(args + 8));
      }
      break;
    case UTVM_CMD_RESET:
      if (check_len(r, cmd, args_len, 0, 0) == 0) {
        r->reset_after = 1;
      }
      break;
    default: {
      utvm_text_t *t = utvm_reply_fail(r, UTVM_ERR_UNKNOWN_COMMAND);
      utvm_text_str(t, "unknown command ");
      utvm_text_u32(t, cmd);
      break;
    }
  }
}
