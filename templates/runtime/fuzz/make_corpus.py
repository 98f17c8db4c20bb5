"""Write the fuzzer's seed corpus: valid packets of every command, in each of the harness's modes.

    python make_corpus.py corpus

The layouts follow templates/runtime/include/utvm/protocol.h and the input format described at
the top of fuzz_runtime.c (first byte: 0 wire, 1 session, 2 dispatch). The fixture model
(fuzz_model.c) has tensors 0 input, 1 weight (const), 2 hidden, 3 output (16 bytes each) and
kernels 0 add, 1 scale.
"""

from __future__ import annotations

import binascii
import struct
import sys
from pathlib import Path

FLAG, ESC, XOR = 0x7E, 0x7D, 0x20
HELLO, QUERY, REQUEST = 0x01, 0x05, 0x10
PING, INFO, TENSOR_INFO, KERNEL_INFO = 0x01, 0x02, 0x03, 0x04
WRITE, READ, CHECKSUM, RUN, RUN_KERNEL, TIME, RESET = 0x10, 0x11, 0x12, 0x20, 0x21, 0x22, 0x30
MODE_WIRE, MODE_SESSION, MODE_DISPATCH = 0, 1, 2
TENSOR_BYTES = 16

# (name, command, argument bytes): every command with good arguments, then typical bad ones.
COMMANDS = [
    ("ping", PING, b"hello"),
    ("info", INFO, b""),
    *((f"tensor_info_{i}", TENSOR_INFO, struct.pack("<H", i)) for i in range(4)),
    *((f"kernel_info_{i}", KERNEL_INFO, struct.pack("<H", i)) for i in range(2)),
    ("write_input", WRITE, struct.pack("<HHII", 0, 0, 0, TENSOR_BYTES) + bytes(range(TENSOR_BYTES))),
    ("write_chunk", WRITE, struct.pack("<HHII", 0, 0, 8, TENSOR_BYTES) + b"\x7e\x7d" * 4),
    # FLAG and ESC at every offset of a 16- and 64-byte block, both ways (the reply echoes them)
    ("ping_escapes", PING, bytes(range(0x70, 0x80)) * 5 + b"\x7d" * 3 + b"\x7e\x7d\x41" * 20),
    ("read_output", READ, struct.pack("<HHIII", 3, 0, 0, TENSOR_BYTES, TENSOR_BYTES)),
    ("read_weight", READ, struct.pack("<HHIII", 1, 0, 4, 8, TENSOR_BYTES)),
    ("checksum_input", CHECKSUM, struct.pack("<HHII", 0, 0, 0, TENSOR_BYTES)),
    ("checksum_out_of_bounds", CHECKSUM, struct.pack("<HHII", 3, 0, 8, 0xFFFFFFFC)),
    ("run", RUN, b""),
    *((f"run_kernel_{i}", RUN_KERNEL, struct.pack("<H", i)) for i in range(2)),
    ("time_model", TIME, struct.pack("<HHII", 0xFFFF, 0, 2, 3)),
    ("time_kernel", TIME, struct.pack("<HHII", 1, 0, 1, 2)),
    ("reset", RESET, b""),
    ("bad_command", 0x7F, b""),
    ("bad_tensor", READ, struct.pack("<HHIII", 99, 0, 0, 4, 4)),
    ("write_const", WRITE, struct.pack("<HHII", 1, 0, 0, 4) + b"\0" * 4),
    ("write_too_large", WRITE, struct.pack("<HHII", 0, 0, 0, 1 << 20) + b"\0" * 4),
    ("read_out_of_bounds", READ, struct.pack("<HHIII", 3, 0, 12, 8, TENSOR_BYTES)),
    ("bad_length", INFO, b"\0"),
    ("time_zero", TIME, struct.pack("<HHII", 0xFFFF, 0, 0, 0)),
    ("time_huge_repeat", TIME, struct.pack("<HHII", 0xFFFF, 0, 1, 10000)),
    ("time_absurd_count", TIME, struct.pack("<HHII", 0xFFFF, 0, 0xFFFFFFFF, 1)),
    # Records read from an offset (the next packet's worth), and from past their end.
    ("info_from_offset", INFO, struct.pack("<I", 40)),
    ("info_past_end", INFO, struct.pack("<I", 0xFFFFFFF0)),
    ("tensor_info_from_offset", TENSOR_INFO, struct.pack("<HI", 2, 12)),
    ("kernel_info_from_offset", KERNEL_INFO, struct.pack("<HI", 1, 3)),
]


def frame(packet: bytes) -> bytes:
    """FLAG, the escaped packet and its big-endian CRC-16/CCITT-FALSE, FLAG."""
    body = packet + struct.pack(">H", binascii.crc_hqx(packet, 0xFFFF))
    escaped = bytearray()
    for b in body:
        escaped += bytes([ESC, b ^ XOR]) if b in (FLAG, ESC) else bytes([b])
    return bytes([FLAG]) + bytes(escaped) + bytes([FLAG])


def hello(nonce: int = 0x44332211, limit: int = 512) -> bytes:
    return struct.pack("<BBHII", HELLO, 1, 0, nonce, limit)


def request(cmd: int, args: bytes, seq: int = 1, session: int = 0) -> bytes:
    return struct.pack("<BBHI", REQUEST, cmd, seq, session) + args


def session_record(cmd: int, args: bytes) -> bytes:
    return struct.pack("<H", 1 + len(args)) + bytes([cmd]) + args


def seeds() -> dict[str, bytes]:
    """File name -> seed input."""
    out = {}
    for name, cmd, args in COMMANDS:
        out[f"session_{name}"] = bytes([MODE_SESSION, 224]) + session_record(cmd, args)
        out[f"dispatch_{name}"] = bytes([MODE_DISPATCH, cmd, 224]) + args
    # A whole inference in one session: write, run, read, time.
    flow = [c for c in COMMANDS if c[0] in ("write_input", "run", "read_output", "time_model", "info")]
    out["session_inference"] = bytes([MODE_SESSION, 224]) + b"".join(session_record(c, a) for _, c, a in flow)
    out["session_small_packets"] = bytes([MODE_SESSION, 0]) + session_record(INFO, b"")
    # Wire mode: the framer and session layer on their own.
    out["wire_hello"] = bytes([MODE_WIRE]) + frame(hello())
    out["wire_hello_bad_version"] = bytes([MODE_WIRE]) + frame(struct.pack("<BBHII", HELLO, 9, 0, 1, 512))
    out["wire_hello_tiny_limit"] = bytes([MODE_WIRE]) + frame(hello(limit=8))
    out["wire_request_no_session"] = bytes([MODE_WIRE]) + frame(request(PING, b"x"))
    out["wire_garbage_then_hello"] = bytes([MODE_WIRE]) + b"\x00\x7d\x7d\xff\x7e\x12" + frame(hello())
    out["wire_bad_crc"] = bytes([MODE_WIRE]) + frame(hello())[:-2] + b"\x00\x7e"
    out["wire_oversized"] = bytes([MODE_WIRE, FLAG]) + b"\x55" * 600 + bytes([FLAG]) + frame(hello())
    # Oversized by escaped bytes: the framer's buffer fills up in the middle of escapes.
    out["wire_oversized_escapes"] = bytes([MODE_WIRE, FLAG]) + b"\x7d\x5e" * 600 + frame(hello())
    out["wire_bad_escape"] = bytes([MODE_WIRE, FLAG]) + b"\x7d\x41" + frame(hello())[1:]
    # QUERY before any session, then after a request (the STATE names it), and a short one.
    out["wire_query"] = bytes([MODE_WIRE]) + frame(struct.pack("<BBH", QUERY, 0, 7)) + frame(hello()) + frame(
        request(PING, b"q")) + frame(struct.pack("<BBH", QUERY, 0, 8)) + frame(bytes([QUERY, 0]))
    out["wire_hello_then_requests"] = bytes([MODE_WIRE]) + frame(hello()) + b"".join(
        frame(request(c, a, seq=i + 1)) for i, (_, c, a) in enumerate(COMMANDS[:8])
    )
    return out


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python make_corpus.py CORPUS_DIR", file=sys.stderr)
        return 2
    folder = Path(argv[0])
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in sorted(seeds().items()):
        (folder / name).write_bytes(data)
    print(f"wrote {len(seeds())} seeds to {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
