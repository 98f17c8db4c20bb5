/*
 * Wire constants of the host-driven protocol (docs/host-driven-protocol.md is
 * the spec of record; host_driven/session.py and device.py mirror these) and
 * little-endian field helpers that work on any alignment and byte order.
 */
#ifndef UTVM_PROTOCOL_H_
#define UTVM_PROTOCOL_H_

#include <stdint.h>

#define UTVM_PROTOCOL_VERSION 1u
/* Runtime version reported by INFO: major << 16 | minor << 8 | patch. */
#define UTVM_RUNTIME_VERSION 0x000100u

/* Framing bytes (HDLC-style). */
#define UTVM_FRAME_FLAG 0x7Eu
#define UTVM_FRAME_ESC 0x7Du
#define UTVM_FRAME_XOR 0x20u
#define UTVM_FRAME_CRC_BYTES 2u
/* Smallest packet limit a session may negotiate (bytes, CRC excluded). */
#define UTVM_MIN_PACKET 64u

/* Packet kinds: the first byte of every packet. */
enum utvm_packet_kind {
  UTVM_PKT_HELLO = 0x01,     /* host -> device: open a session */
  UTVM_PKT_WELCOME = 0x02,   /* device -> host: answer to HELLO */
  UTVM_PKT_ANNOUNCE = 0x03,  /* device -> host: unsolicited, after every boot */
  UTVM_PKT_LOG = 0x04,       /* device -> host: a log line, at any time */
  UTVM_PKT_REQUEST = 0x10,   /* host -> device: a command */
  UTVM_PKT_REPLY_OK = 0x11,  /* device -> host: the command's result */
  UTVM_PKT_REPLY_ERR = 0x12  /* device -> host: status code + message */
};

#define UTVM_HELLO_BYTES 12u
#define UTVM_WELCOME_BYTES 20u
#define UTVM_ANNOUNCE_BYTES 8u
/* REQUEST and REPLY headers: kind, cmd, u16 seq, u32 session. */
#define UTVM_MSG_HEADER_BYTES 8u

enum utvm_command {
  UTVM_CMD_PING = 0x01,
  UTVM_CMD_INFO = 0x02,
  UTVM_CMD_TENSOR_INFO = 0x03,
  UTVM_CMD_KERNEL_INFO = 0x04,
  UTVM_CMD_WRITE = 0x10,
  UTVM_CMD_READ = 0x11,
  UTVM_CMD_RUN = 0x20,
  UTVM_CMD_RUN_KERNEL = 0x21,
  UTVM_CMD_TIME = 0x22,
  UTVM_CMD_RESET = 0x30
};

#define UTVM_WRITE_ARGS_BYTES 12u /* u16 tensor, u16 flags, u32 offset, u32 total; data follows */
#define UTVM_READ_ARGS_BYTES 16u  /* u16 tensor, u16 flags, u32 offset, u32 nbytes, u32 total */
#define UTVM_TIME_ARGS_BYTES 12u  /* u16 kernel (0xFFFF = model), u16 flags, u32 number, u32 repeat */
#define UTVM_INFO_FIXED_BYTES 40u
#define UTVM_TIME_WHOLE_MODEL 0xFFFFu

/* Status codes carried by REPLY_ERR. */
enum utvm_status {
  UTVM_OK = 0,
  UTVM_ERR_UNKNOWN_COMMAND = 1,
  UTVM_ERR_BAD_LENGTH = 2,
  UTVM_ERR_BAD_TENSOR = 3,
  UTVM_ERR_OUT_OF_BOUNDS = 4,
  UTVM_ERR_READ_ONLY = 5,
  UTVM_ERR_BAD_KERNEL = 6,
  UTVM_ERR_KERNEL_FAILED = 7,
  UTVM_ERR_TOO_LARGE = 8,
  UTVM_ERR_BAD_SESSION = 9,
  UTVM_ERR_MODEL_MISMATCH = 10,
  UTVM_ERR_BAD_ARGUMENT = 11
};

enum utvm_log_level {
  UTVM_LOG_ERROR = 1,
  UTVM_LOG_WARN = 2,
  UTVM_LOG_INFO = 3,
  UTVM_LOG_DEBUG = 4
};

/* The high byte is shifted as an unsigned value: with a 16-bit int (AVR), p[1] << 8 overflows int. */
static inline uint16_t utvm_get_u16(const uint8_t *p) { return (uint16_t)(p[0] | ((uint16_t)p[1] << 8)); }

static inline uint32_t utvm_get_u32(const uint8_t *p) {
  return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

static inline void utvm_put_u16(uint8_t *p, uint32_t v) {
  p[0] = (uint8_t)v;
  p[1] = (uint8_t)(v >> 8);
}

static inline void utvm_put_u32(uint8_t *p, uint32_t v) {
  utvm_put_u16(p, v);
  utvm_put_u16(p + 2, v >> 16);
}

static inline void utvm_put_u64(uint8_t *p, uint64_t v) {
  utvm_put_u32(p, (uint32_t)v);
  utvm_put_u32(p + 4, (uint32_t)(v >> 32));
}

#endif /* UTVM_PROTOCOL_H_ */
