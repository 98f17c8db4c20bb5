/*
 * The session layer: boot announcement, the HELLO/WELCOME handshake, request
 * checks (session id, sequence number), replay of the last reply when the host
 * retries, answers to QUERY (what was answered last), and LOG packets. Owns the
 * receive and transmit buffers.
 */
#include <stddef.h>
#include <string.h>

#include "utvm/commands.h"
#include "utvm/config.h"
#include "utvm/framing.h"
#include "utvm/model.h"
#include "utvm/port.h"
#include "utvm/protocol.h"
#include "utvm/runtime.h"
#include "utvm/text.h"

static utvm_framer_t framer;
static uint8_t rx_buf[UTVM_MAX_PACKET + UTVM_FRAME_CRC_BYTES];
/* The last reply stays here until the next request, so a retry can replay it. */
static uint8_t tx_buf[UTVM_MAX_PACKET];
static uint32_t tx_len;
static const uint8_t *tx_tail;
static uint32_t tx_tail_len;
static uint8_t tx_cmd;
static uint16_t tx_seq;
static uint8_t tx_valid;

static uint32_t boot_nonce;
static uint32_t session_id; /* 0: no session */
static uint32_t packet_limit;
static uint32_t nonce_count;

/* A 32-bit mixer (murmur3's finaliser): nonces from weak entropy (timer, counter). */
static uint32_t mix32(uint32_t x) {
  x ^= x >> 16;
  x *= 0x85EBCA6Bu;
  x ^= x >> 13;
  x *= 0xC2B2AE35u;
  x ^= x >> 16;
  return x;
}

static uint32_t fresh_nonce(uint32_t salt) {
  uint64_t ticks = utvm_port_timer_ticks();
  uint32_t n = mix32(salt ^ mix32((uint32_t)ticks ^ mix32((uint32_t)(ticks >> 32) + ++nonce_count)));
  return n != 0u ? n : 1u;
}

void utvm_log(uint8_t level, const char *text) {
  uint8_t head[2];
  uint32_t n = 0;
  if (level > UTVM_LOG_LEVEL || text == NULL) {
    return;
  }
  while (n < UTVM_LOG_MAX_TEXT && text[n] != '\0') {
    n++;
  }
  head[0] = UTVM_PKT_LOG;
  head[1] = level;
  (void)utvm_frame_send(head, sizeof(head), (const uint8_t *)text, n);
}

static void send_header(uint8_t kind, uint8_t cmd, uint16_t seq, uint32_t session) {
  tx_buf[0] = kind;
  tx_buf[1] = cmd;
  utvm_put_u16(tx_buf + 2, seq);
  utvm_put_u32(tx_buf + 4, session);
}

static void handle_hello(const uint8_t *p, uint32_t len) {
  uint32_t host_limit;
  if (len < UTVM_HELLO_BYTES) {
    return;
  }
  host_limit = utvm_get_u32(p + 8);
  packet_limit = host_limit < UTVM_MAX_PACKET ? host_limit : UTVM_MAX_PACKET;
  tx_valid = 0;
  /* A version or packet size this runtime cannot serve: answer with no session. */
  if (p[1] != UTVM_PROTOCOL_VERSION || packet_limit < UTVM_MIN_PACKET) {
    session_id = 0;
    packet_limit = UTVM_MIN_PACKET;
  } else {
    session_id = fresh_nonce(utvm_get_u32(p + 4) ^ boot_nonce);
  }
  tx_buf[0] = UTVM_PKT_WELCOME;
  tx_buf[1] = UTVM_PROTOCOL_VERSION;
  utvm_put_u16(tx_buf + 2, UTVM_RX_WINDOW);
  memcpy(tx_buf + 4, p + 4, 4); /* the host's nonce, echoed */
  utvm_put_u32(tx_buf + 8, session_id);
  utvm_put_u32(tx_buf + 12, UTVM_MAX_PACKET);
  utvm_put_u32(tx_buf + 16, boot_nonce);
  (void)utvm_frame_send(tx_buf, UTVM_WELCOME_BYTES, NULL, 0);
}

static void handle_request(const uint8_t *p, uint32_t len) {
  utvm_reply_t reply;
  uint8_t cmd;
  uint16_t seq;
  uint32_t session;
  if (len < UTVM_MSG_HEADER_BYTES) {
    return; /* no sequence number to answer to */
  }
  cmd = p[1];
  seq = utvm_get_u16(p + 2);
  session = utvm_get_u32(p + 4);
  /* A retry of the request just answered: replay, never execute twice. */
  if (tx_valid && session == session_id && seq == tx_seq && cmd == tx_cmd) {
    (void)utvm_frame_send(tx_buf, tx_len, tx_tail, tx_tail_len);
    return;
  }
  utvm_reply_start(&reply, tx_buf + UTVM_MSG_HEADER_BYTES, packet_limit - UTVM_MSG_HEADER_BYTES);
  if (session_id == 0u || session != session_id) {
    utvm_text_str(utvm_reply_fail(&reply, UTVM_ERR_BAD_SESSION),
                  "unknown session (device rebooted or another host)");
    tx_valid = 0;
  } else {
    utvm_commands_dispatch(cmd, p + UTVM_MSG_HEADER_BYTES, len - UTVM_MSG_HEADER_BYTES, &reply);
    tx_valid = 1;
  }
  send_header(reply.status == UTVM_OK ? UTVM_PKT_REPLY_OK : UTVM_PKT_REPLY_ERR, cmd, seq, session);
  tx_len = UTVM_MSG_HEADER_BYTES + utvm_reply_len(&reply);
  tx_tail = reply.tail;
  tx_tail_len = reply.tail_len;
  tx_cmd = cmd;
  tx_seq = seq;
  (void)utvm_frame_send(tx_buf, tx_len, tx_tail, tx_tail_len);
  if (reply.reset_after) {
    utvm_port_reset();
  }
}

/* What the device answered last, for a host that heard nothing back: from a separate buffer, so
 * the kept reply stays as it is for the replay of a resent request. */
static void handle_query(const uint8_t *p, uint32_t len) {
  uint8_t state[UTVM_STATE_BYTES];
  if (len < UTVM_QUERY_BYTES) {
    return;
  }
  state[0] = UTVM_PKT_STATE;
  state[1] = tx_cmd; /* with tx_seq, meaningful only with the KEPT flag */
  state[2] = p[2];   /* the probe id, echoed */
  state[3] = p[3];
  utvm_put_u32(state + 4, session_id);
  utvm_put_u16(state + 8, tx_seq);
  state[10] = tx_valid ? UTVM_STATE_KEPT : 0u;
  state[11] = 0;
  (void)utvm_frame_send(state, UTVM_STATE_BYTES, NULL, 0);
}

void utvm_runtime_handle_packet(const uint8_t *packet, uint32_t len) {
  if (len == 0u) {
    return;
  }
  if (packet[0] == UTVM_PKT_HELLO) {
    handle_hello(packet, len);
  } else if (packet[0] == UTVM_PKT_REQUEST) {
    handle_request(packet, len);
  } else if (packet[0] == UTVM_PKT_QUERY) {
    handle_query(packet, len);
  }
  /* Anything else (a device packet echoed back, an unknown kind) is ignored. */
}

static void on_packet(const uint8_t *packet, uint32_t len, void *ctx) {
  (void)ctx;
  utvm_runtime_handle_packet(packet, len);
}

void utvm_runtime_feed(const uint8_t *data, uint32_t n) { utvm_framer_feed(&framer, data, n, on_packet, NULL); }

void utvm_runtime_init(void) {
  uint8_t announce[UTVM_ANNOUNCE_BYTES];
  char line[UTVM_LOG_MAX_TEXT + 1];
  utvm_text_t t;
  int32_t model_ok;
  utvm_framer_init(&framer, rx_buf, sizeof(rx_buf));
  session_id = 0;
  tx_valid = 0;
  packet_limit = UTVM_MIN_PACKET;
  model_ok = utvm_commands_init();
  boot_nonce = fresh_nonce((uint32_t)(uintptr_t)&announce);
  announce[0] = UTVM_PKT_ANNOUNCE;
  announce[1] = UTVM_PROTOCOL_VERSION;
  announce[2] = 0; /* reason: boot */
  announce[3] = 0;
  utvm_put_u32(announce + 4, boot_nonce);
  (void)utvm_frame_send(announce, sizeof(announce), NULL, 0);
  utvm_text_init(&t, line, sizeof(line));
  utvm_text_str(&t, model_ok == 0 ? "utvm runtime ready: model " : "utvm runtime: cannot serve model ");
  utvm_text_str(&t, utvm_model.name);
  utvm_text_str(&t, " on ");
  utvm_text_str(&t, utvm_port_board_name());
  utvm_log(model_ok == 0 ? UTVM_LOG_INFO : UTVM_LOG_ERROR, line);
}

int32_t utvm_runtime_serve(void) {
  static uint8_t chunk[UTVM_RX_CHUNK];
  for (;;) {
    int32_t n = utvm_port_read(chunk, sizeof(chunk));
    if (n < 0) {
      return n;
    }
    utvm_runtime_feed(chunk, (uint32_t)n);
  }
}
