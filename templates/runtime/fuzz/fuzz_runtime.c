/*
 * libFuzzer harness for the device runtime's parser: the framer, the session
 * layer and the command dispatcher, linked with the fixture model fuzz_model.c.
 *
 * The first input byte picks the entry point (mod 3):
 *   0 wire:     the rest goes through utvm_runtime_feed, as bytes off the wire.
 *   1 session:  a session is opened with a HELLO (byte 1 sets the host's packet
 *               limit); the rest is records [u16 len][cmd][args...], each sent
 *               as a correctly framed REQUEST of the live session, so mutations
 *               reach the dispatcher instead of dying at the CRC check.
 *   2 dispatch: byte 1 is the command, byte 2 sets the reply capacity, the rest
 *               are its arguments, given to utvm_commands_dispatch directly in
 *               buffers of exactly that size (ASan sees any overrun).
 *
 * Whatever the device sends is decoded by a second framer and checked: every
 * frame has a good CRC, a known kind and fits the packet limit; every reply
 * answers the request just sent. A violation aborts, which libFuzzer reports.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "utvm/commands.h"
#include "utvm/config.h"
#include "utvm/framing.h"
#include "utvm/port.h"
#include "utvm/protocol.h"
#include "utvm/runtime.h"

#define CHECK(cond) \
  do {              \
    if (!(cond)) {  \
      abort();      \
    }               \
  } while (0)

/* ---- the fake port: device output is decoded and checked ---------------- */

static utvm_framer_t out_framer;
static uint8_t out_buf[UTVM_MAX_PACKET + UTVM_FRAME_CRC_BYTES + 1];
static uint32_t session_id;     /* from the last WELCOME */
static uint32_t reply_limit;    /* largest packet the device may send now */
static int32_t expect_cmd = -1; /* the request awaiting its reply, or -1 */
static uint16_t expect_seq;
static uint32_t replies;
static uint64_t ticks;
static int reboot_requested;

static void check_device_packet(const uint8_t *p, uint32_t len, void *ctx) {
  (void)ctx;
  CHECK(len >= 1u && len <= UTVM_MAX_PACKET);
  switch (p[0]) {
    case UTVM_PKT_WELCOME:
      CHECK(len == UTVM_WELCOME_BYTES);
      session_id = utvm_get_u32(p + 8);
      break;
    case UTVM_PKT_ANNOUNCE:
      CHECK(len == UTVM_ANNOUNCE_BYTES);
      break;
    case UTVM_PKT_LOG:
      CHECK(len >= 2u && len <= 2u + UTVM_LOG_MAX_TEXT);
      break;
    case UTVM_PKT_STATE:
      CHECK(len == UTVM_STATE_BYTES);
      break;
    case UTVM_PKT_REPLY_OK:
    case UTVM_PKT_REPLY_ERR:
      CHECK(len >= UTVM_MSG_HEADER_BYTES && len <= reply_limit);
      CHECK(p[0] == UTVM_PKT_REPLY_OK || len > UTVM_MSG_HEADER_BYTES); /* an error carries its code */
      if (expect_cmd >= 0) {
        CHECK(p[1] == (uint8_t)expect_cmd && utvm_get_u16(p + 2) == expect_seq);
      }
      replies++;
      break;
    default:
      CHECK(0);
  }
}

int32_t utvm_port_write(const uint8_t *data, uint32_t n) {
  utvm_framer_feed(&out_framer, data, n, check_device_packet, NULL);
  return 0;
}

int32_t utvm_port_read(uint8_t *buf, uint32_t n) {
  (void)buf;
  (void)n;
  return -1;
}

uint64_t utvm_port_timer_ticks(void) { return ticks += 7u; }

uint64_t utvm_port_timer_hz(void) { return 1000000u; }

/* The runtime calls this after sending a RESET reply; the harness reboots the
 * runtime once the current feed returns. */
void utvm_port_reset(void) { reboot_requested = 1; }

static void reboot_if_requested(void) {
  if (reboot_requested) {
    reboot_requested = 0;
    session_id = 0;
    utvm_runtime_init();
  }
}

void utvm_port_abort(int32_t code) {
  (void)code;
  abort();
}

const char *utvm_port_board_name(void) { return "fuzz"; }

/* ---- host side: frame packets the way the host does ---------------------- */

static uint32_t put_escaped(uint8_t *out, const uint8_t *data, uint32_t n) {
  uint32_t i;
  uint32_t k = 0;
  for (i = 0; i < n; i++) {
    if (data[i] == UTVM_FRAME_FLAG || data[i] == UTVM_FRAME_ESC) {
      out[k++] = UTVM_FRAME_ESC;
      out[k++] = (uint8_t)(data[i] ^ UTVM_FRAME_XOR);
    } else {
      out[k++] = data[i];
    }
  }
  return k;
}

/* TIME runs the model number x repeat times, as asked, up to UTVM_TIME_MAX_CALLS calls: still
 * seconds per input. Keep the fuzzer's requests short, but let the ones the device must refuse
 * (more than UTVM_TIME_MAX_CALLS calls) through as they are. */
#define FUZZ_MAX_TIME_NUMBER 16u

static void bound_time_args(uint8_t cmd, uint8_t *args, uint32_t len) {
  uint32_t number;
  if (cmd != UTVM_CMD_TIME || len < UTVM_TIME_ARGS_BYTES) {
    return;
  }
  number = utvm_get_u32(args + 4);
  if (number > FUZZ_MAX_TIME_NUMBER && (uint64_t)number * utvm_get_u32(args + 8) <= UTVM_TIME_MAX_CALLS) {
    utvm_put_u32(args + 4, FUZZ_MAX_TIME_NUMBER);
  }
}

/* Frame `packet` and feed it to the runtime. */
static void send_framed(const uint8_t *packet, uint32_t n) {
  uint8_t *wire = malloc(2u * n + 8u);
  uint8_t crc_be[2];
  uint16_t crc = utvm_crc16(0xFFFFu, packet, n);
  uint32_t k = 0;
  CHECK(wire != NULL);
  crc_be[0] = (uint8_t)(crc >> 8);
  crc_be[1] = (uint8_t)crc;
  wire[k++] = UTVM_FRAME_FLAG;
  k += put_escaped(wire + k, packet, n);
  k += put_escaped(wire + k, crc_be, 2);
  wire[k++] = UTVM_FRAME_FLAG;
  utvm_runtime_feed(wire, k);
  free(wire);
}

static void fuzz_session(const uint8_t *data, size_t size) {
  uint8_t hello[UTVM_HELLO_BYTES] = {UTVM_PKT_HELLO, UTVM_PROTOCOL_VERSION, 0, 0, 0x11, 0x22, 0x33, 0x44};
  uint32_t host_limit = UTVM_MIN_PACKET + 2u * (size > 0 ? data[0] : 0u);
  uint16_t seq = 0;
  size_t pos = 1;
  utvm_put_u32(hello + 8, host_limit);
  session_id = 0;
  send_framed(hello, sizeof(hello));
  CHECK(session_id != 0u); /* a valid HELLO always gets a session */
  reply_limit = host_limit < UTVM_MAX_PACKET ? host_limit : UTVM_MAX_PACKET;
  while (pos + 3u <= size) {
    uint32_t len = utvm_get_u16(data + pos);
    uint32_t before = replies;
    uint8_t *packet;
    pos += 2u;
    if (len == 0u || len > size - pos) {
      len = (uint32_t)(size - pos);
    }
    packet = malloc(UTVM_MSG_HEADER_BYTES + len);
    CHECK(packet != NULL);
    packet[0] = UTVM_PKT_REQUEST;
    packet[1] = data[pos];
    utvm_put_u16(packet + 2, ++seq);
    utvm_put_u32(packet + 4, session_id);
    memcpy(packet + UTVM_MSG_HEADER_BYTES, data + pos + 1u, len - 1u);
    bound_time_args(packet[1], packet + UTVM_MSG_HEADER_BYTES, len - 1u);
    expect_cmd = data[pos];
    expect_seq = seq;
    send_framed(packet, UTVM_MSG_HEADER_BYTES + len - 1u);
    free(packet);
    reboot_if_requested();
    /* Every request of a live session that fits the device's buffer gets exactly
     * one reply; a longer frame is dropped by the framer (the host retries). */
    CHECK(replies == before + (UTVM_MSG_HEADER_BYTES + len - 1u <= UTVM_MAX_PACKET ? 1u : 0u));
    expect_cmd = -1;
    pos += len;
  }
}

static void fuzz_dispatch(const uint8_t *data, size_t size) {
  utvm_reply_t reply;
  uint8_t *buf;
  uint8_t *args;
  uint32_t args_len;
  uint32_t cap;
  uint32_t len;
  if (size < 2u) {
    return;
  }
  args_len = (uint32_t)(size - 2u);
  args = malloc(args_len + 1u); /* exactly the arguments (+1: malloc(0) may return NULL) */
  CHECK(args != NULL);
  memcpy(args, data + 2, args_len);
  bound_time_args(data[0], args, args_len);
  cap = UTVM_MIN_PACKET - UTVM_MSG_HEADER_BYTES + 2u * data[1];
  if (cap > UTVM_MAX_PACKET - UTVM_MSG_HEADER_BYTES) {
    cap = UTVM_MAX_PACKET - UTVM_MSG_HEADER_BYTES;
  }
  buf = malloc(cap);
  CHECK(buf != NULL);
  utvm_reply_start(&reply, buf, cap);
  utvm_commands_dispatch(data[0], args, args_len, &reply);
  len = utvm_reply_len(&reply);
  CHECK(len <= cap);
  CHECK(reply.status == UTVM_OK || (len >= 1u && buf[0] == reply.status));
  CHECK(reply.tail_len == 0u || (reply.tail != NULL && reply.status == UTVM_OK));
  CHECK(len + reply.tail_len <= cap);
  free(args);
  free(buf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size == 0u) {
    return 0;
  }
  utvm_framer_init(&out_framer, out_buf, sizeof(out_buf));
  reply_limit = UTVM_MAX_PACKET;
  expect_cmd = -1;
  reboot_requested = 0;
  utvm_runtime_init();
  switch (data[0] % 3u) {
    case 0:
      utvm_runtime_feed(data + 1, (uint32_t)(size - 1u));
      reboot_if_requested();
      break;
    case 1:
      fuzz_session(data + 1, size - 1u);
      break;
    default:
      fuzz_dispatch(data + 1, size - 1u);
      break;
  }
  return 0;
}
