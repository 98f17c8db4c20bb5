"""Wire constants of the host-driven protocol, mirroring templates/runtime/include/utvm/protocol.h.

docs/host-driven-protocol.md is the spec of record; change both sides together.
"""

from __future__ import annotations

import struct

PROTOCOL_VERSION = 1
# Smallest packet limit a session may negotiate (bytes, CRC excluded).
MIN_PACKET = 64
# CRC-16/CCITT detects every 1-, 2- and 3-bit error only while the data it covers is at most
# 32751 bits (4093 bytes); beyond that two flips 32767 bits apart cancel out. No packet is larger.
MAX_PACKET = 4093

# Packet kinds (first byte of every packet).
PKT_HELLO = 0x01
PKT_WELCOME = 0x02
PKT_ANNOUNCE = 0x03
PKT_LOG = 0x04
PKT_QUERY = 0x05
PKT_STATE = 0x06
PKT_REQUEST = 0x10
PKT_REPLY_OK = 0x11
PKT_REPLY_ERR = 0x12

# HELLO: kind, version, u16 reserved, u32 host nonce, u32 host max packet.
HELLO = struct.Struct("<BBHII")
# WELCOME: kind, version, u16 rx window, u32 host nonce, u32 session id, u32 device max packet,
# u32 boot nonce.
WELCOME = struct.Struct("<BBHIIII")
# ANNOUNCE: kind, version, reason, reserved, u32 boot nonce.
ANNOUNCE = struct.Struct("<BBBBI")
# REQUEST / REPLY header: kind, command, u16 sequence number, u32 session id.
HEADER = struct.Struct("<BBHI")
# QUERY ("what did you answer last?"): kind, reserved, u16 probe id. The device answers STATE
# without touching its kept reply, so a retry after it is still replayed.
QUERY = struct.Struct("<BBH")
# STATE: kind, last command, u16 probe id (echoed), u32 session id, u16 last seq, u8 flags, reserved.
STATE = struct.Struct("<BBHIHBB")
STATE_KEPT = 0x01  # flags: a reply is kept (the last command and seq are meaningful)

# Commands.
CMD_PING = 0x01
CMD_INFO = 0x02
CMD_TENSOR_INFO = 0x03
CMD_KERNEL_INFO = 0x04
CMD_WRITE = 0x10
CMD_READ = 0x11
CMD_CHECKSUM = 0x12
CMD_RUN = 0x20
CMD_RUN_KERNEL = 0x21
CMD_TIME = 0x22
CMD_RESET = 0x30

COMMAND_NAMES = {
    CMD_PING: "PING",
    CMD_INFO: "INFO",
    CMD_TENSOR_INFO: "TENSOR_INFO",
    CMD_KERNEL_INFO: "KERNEL_INFO",
    CMD_WRITE: "WRITE",
    CMD_READ: "READ",
    CMD_CHECKSUM: "CHECKSUM",
    CMD_RUN: "RUN",
    CMD_RUN_KERNEL: "RUN_KERNEL",
    CMD_TIME: "TIME",
    CMD_RESET: "RESET",
}

# Command arguments.
WRITE_ARGS = struct.Struct("<HHII")  # tensor, flags, offset, total; data follows
READ_ARGS = struct.Struct("<HHIII")  # tensor, flags, offset, nbytes, total
CHECKSUM_ARGS = struct.Struct("<HHII")  # tensor, flags, offset, nbytes; the reply is their u32 CRC-32
TIME_ARGS = struct.Struct("<HHII")  # kernel (TIME_WHOLE_MODEL = the model), flags, number, repeat
TIME_WHOLE_MODEL = 0xFFFF
# The most calls (number x repeat) one TIME request may make: beyond, the device refuses
# (TOO_LARGE) rather than stay deaf for hours.
TIME_MAX_CALLS = 1 << 24
# INFO, TENSOR_INFO and KERNEL_INFO reply with a record: its bytes from 0, or from this u32 offset
# after the command's arguments, as many as fit the packet. A shorter reply ends the record.
RECORD_OFFSET = struct.Struct("<I")
# INFO's fixed part; input ids, output ids and three NUL-terminated strings follow.
INFO_FIXED = struct.Struct("<IIIIIQHHHHHBB")
# TENSOR_INFO's fixed part; i32 shape[ndim] and the NUL-terminated name follow.
TENSOR_INFO_FIXED = struct.Struct("<BBBBII")

# Status codes of REPLY_ERR.
ERR_UNKNOWN_COMMAND = 1
ERR_BAD_LENGTH = 2
ERR_BAD_TENSOR = 3
ERR_OUT_OF_BOUNDS = 4
ERR_READ_ONLY = 5
ERR_BAD_KERNEL = 6
ERR_KERNEL_FAILED = 7
ERR_TOO_LARGE = 8
ERR_BAD_SESSION = 9
ERR_MODEL_MISMATCH = 10
ERR_BAD_ARGUMENT = 11

STATUS_NAMES = {
    ERR_UNKNOWN_COMMAND: "UNKNOWN_COMMAND",
    ERR_BAD_LENGTH: "BAD_LENGTH",
    ERR_BAD_TENSOR: "BAD_TENSOR",
    ERR_OUT_OF_BOUNDS: "OUT_OF_BOUNDS",
    ERR_READ_ONLY: "READ_ONLY",
    ERR_BAD_KERNEL: "BAD_KERNEL",
    ERR_KERNEL_FAILED: "KERNEL_FAILED",
    ERR_TOO_LARGE: "TOO_LARGE",
    ERR_BAD_SESSION: "BAD_SESSION",
    ERR_MODEL_MISMATCH: "MODEL_MISMATCH",
    ERR_BAD_ARGUMENT: "BAD_ARGUMENT",
}

# Device log levels (LOG packets) and their Python logging levels.
LOG_LEVELS = {1: 40, 2: 30, 3: 20, 4: 10}
