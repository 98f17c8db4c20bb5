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
    model_problem = "model ABI version differs from the runtime's; regenerate the project";
  } else if (m->arena_bytes > utvm_plan_arena_capacity()) {
    model_problem = "model arena is larger than UTVM_MODEL_ARENA_BYTES; regenerate the project";
  } else if (m->workspace_bytes > utvm_plan_workspace_capacity()) {
    model_problem = "model workspace is larger than UTVM_MODEL_WORKSPACE_BYTES; regenerate the project";
  } else {
    for (i = 0; i < m->num_tensors; i++) {
      const utvm_tensor_t *t = &m->tensors[i];
      if (t->storage == UTVM_STORAGE_CONST ? t->data == NULL
                                           : (t->offset > m->arena_bytes ||
                                              t->nbytes > m->arena_bytes - t->offset)) {
        model_problem = "model tensor table points outside the arena; regenerate the project";
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

static void put_u16_list(utvm_reply_t *r, const uint16_t *ids, uint16_t n) {
  uint16_t i;
  for (i = 0; i < n; i++) {
    utvm_put_u16(r->buf + r->len, ids[i]);
    r->len += 2u;
  }
}

/* Append a NUL-terminated string, cut to the room left (skipped when none). */
static void put_string(utvm_reply_t *r, const char *s) {
  utvm_text_t t;
  if (r->len < r->cap) {
    utvm_text_init(&t, (char *)r->buf + r->len, r->cap - r->len);
    utvm_text_str(&t, s);
    r->len += t.len + 1u;
  }
}

static int32_t check_model(utvm_reply_t *r) {
  if (model_problem == NULL) {
    return 0;
  }
  utvm_text_str(utvm_reply_fail(r, UTVM_ERR_MODEL_MISMATCH), model_problem);
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

static void cmd_info(utvm_reply_t *r) {
  const utvm_model_t *m = &utvm_model;
  uint8_t *p = r->buf;
  if (check_room(r, UTVM_INFO_FIXED_BYTES + 2u * ((uint32_t)m->num_inputs + m->num_outputs)) != 0) {
    return;
  }
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
  r->len = UTVM_INFO_FIXED_BYTES;
  put_u16_list(r, m->inputs, m->num_inputs);
  put_u16_list(r, m->outputs, m->num_outputs);
  put_string(r, m->name);
  put_string(r, m->hash);
  put_string(r, utvm_port_board_name());
}

static void cmd_tensor_info(utvm_reply_t *r, uint16_t id) {
  const utvm_tensor_t *t;
  uint32_t i;
  if (check_tensor(r, id) != 0) {
    return;
  }
  t = &utvm_model.tensors[id];
  if (check_room(r, 12u + 4u * t->ndim) != 0) {
    return;
  }
  r->buf[0] = t->storage;
  r->buf[1] = t->dtype_code;
  r->buf[2] = t->dtype_bits;
  r->buf[3] = t->ndim;
  utvm_put_u32(r->buf + 4, t->offset);
  utvm_put_u32(r->buf + 8, t->nbytes);
  r->len = 12;
  for (i = 0; i < t->ndim; i++) {
    utvm_put_u32(r->buf + r->len, (uint32_t)t->shape[i]);
    r->len += 4u;
  }
  put_string(r, t->name);
}

static void cmd_kernel_info(utvm_reply_t *r, uint16_t index) {
  const utvm_kernel_t *k;
  if (check_kernel(r, index) != 0) {
    return;
  }
  k = &utvm_model.kernels[index];
  if (check_room(r, 2u + 2u * (uint32_t)k->num_args) != 0) { /* 16-bit int: no wrap */
    return;
  }
  utvm_put_u16(r->buf, k->num_args);
  r->len = 2;
  put_u16_list(r, k->args, k->num_args);
  put_string(r, k->name);
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

static void cmd_time(utvm_reply_t *r, uint16_t kernel, uint32_t number, uint32_t repeat) {
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
  for (i = 0; i < repeat; i++) {
    uint64_t start = utvm_port_timer_ticks();
    for (n = 0; n < number; n++) {
      if (run_target(r, kernel) != 0) {
        return;
      }
    }
    utvm_put_u64(r->buf + 8u * i, utvm_port_timer_ticks() - start);
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
      if (check_model(r) == 0 && check_len(r, cmd, args_len, 0, 0) == 0) {
        cmd_info(r);
      }
      break;
    case UTVM_CMD_TENSOR_INFO:
      if (check_model(r) == 0 && check_len(r, cmd, args_len, 2, 0) == 0) {
        cmd_tensor_info(r, utvm_get_u16(args));
      }
      break;
    case UTVM_CMD_KERNEL_INFO:
      if (check_model(r) == 0 && check_len(r, cmd, args_len, 2, 0) == 0) {
        cmd_kernel_info(r, utvm_get_u16(args));
      }
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
