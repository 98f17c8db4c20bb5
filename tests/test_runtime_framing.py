"""The device runtime's framer (framing.c over escape.c), driven from Python through ctypes.

The runtime's own sources are built into a small shared library, once per escaping code path
(portable C, SSE2, AVX-512 where the CPU has it) and transmit stage size, with the stub port that
keeps what the runtime sends. The pure-Python host framing is the reference: the device's decoder
must give the same packets and bad-frame count however the stream is sliced, and never write past
its buffer; the device's sender must give the same bytes.
"""

from __future__ import annotations

import ctypes
import random

import pytest
from runtime_fixtures.build import FIXTURE_DIR, RUNTIME_DIR, compile_c, include_flags
from utvm.host_driven.framing import FrameDecoder, _encode_python

SOURCES = [RUNTIME_DIR / "src" / name for name in ("framing.c", "escape.c", "crc16.c")] + [
    FIXTURE_DIR / "stub_port.c"]
# UTVM_ESCAPE_SIMD (0 portable, 1 SSE2, 2 AVX-512 VBMI2 when the CPU has it; x86-64 only), and
# UTVM_TX_CHUNK: the default small stage, where escaping stops at a full stage often, and a big one.
VARIANTS = [(0, 64), (1, 64), (2, 64), (2, 16384)]
GUARD = 96  # bytes after the framer's buffer that must stay untouched
SENTINEL = 0xA5
STUB_WIRE_BYTES = 4096  # stub_port.h


class Framer(ctypes.Structure):
    """utvm_framer_t (templates/runtime/include/utvm/framing.h)."""

    _fields_ = [("buf", ctypes.c_void_p), ("cap", ctypes.c_uint32), ("len", ctypes.c_uint32),
                ("escaped", ctypes.c_uint8), ("dropping", ctypes.c_uint8), ("bad_frames", ctypes.c_uint32)]


PACKET_FN = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_uint32, ctypes.c_void_p)


@pytest.fixture(scope="module", params=VARIANTS, ids=lambda v: f"simd{v[0]}-tx{v[1]}")
def runtime(request, tmp_path_factory):
    simd, tx_chunk = request.param
    out = tmp_path_factory.mktemp("framer") / f"framer-{simd}-{tx_chunk}.so"
    flags = ["-O2", "-shared", "-fPIC", *include_flags(posix=False), f"-DUTVM_ESCAPE_SIMD={simd}",
             f"-DUTVM_TX_CHUNK={tx_chunk}"]
    lib = ctypes.CDLL(str(compile_c("gcc", SOURCES, out, flags)))
    lib.utvm_framer_init.argtypes = [ctypes.POINTER(Framer), ctypes.c_void_p, ctypes.c_uint32]
    lib.utvm_framer_feed.argtypes = [ctypes.POINTER(Framer), ctypes.c_char_p, ctypes.c_uint32, PACKET_FN,
                                     ctypes.c_void_p]
    lib.utvm_frame_send.argtypes = [ctypes.c_char_p, ctypes.c_uint32, ctypes.c_char_p, ctypes.c_uint32]
    lib.utvm_frame_send.restype = ctypes.c_int32
    return lib


class DeviceDecoder:
    """The C framer with a buffer of max_packet + CRC bytes, followed by guard bytes."""

    def __init__(self, lib, max_packet: int):
        self.lib = lib
        self.cap = max_packet + 2
        self.memory = ctypes.create_string_buffer(bytes([SENTINEL]) * (self.cap + GUARD), self.cap + GUARD)
        self.framer = Framer()
        self.packets = []
        self._callback = PACKET_FN(lambda p, n, _ctx: self.packets.append(ctypes.string_at(p, n)))
        lib.utvm_framer_init(ctypes.byref(self.framer), self.memory, self.cap)

    def feed(self, data: bytes) -> None:
        self.lib.utvm_framer_feed(ctypes.byref(self.framer), data, len(data), self._callback, None)
        assert self.memory.raw[self.cap:] == bytes([SENTINEL]) * GUARD, "the framer wrote past its buffer"


def _python_decode(wire: bytes, max_packet: int):
    decoder = FrameDecoder(max_packet, accel=False)
    return decoder.feed(wire), decoder.bad_frames


def _device_decode(lib, slices, max_packet: int):
    decoder = DeviceDecoder(lib, max_packet)
    for part in slices:
        decoder.feed(part)
    return decoder.packets, decoder.framer.bad_frames


def _special_heavy(rng: random.Random, size: int, share: float) -> bytes:
    return bytes(rng.choice(b"\x7d\x7e") if rng.random() < share else rng.randrange(256) for _ in range(size))


def _stream(rng: random.Random):
    """Frames of every kind of packet, with garbage, bad escapes, a cut frame and oversized frames."""
    packets = [b"x", bytes(range(256)), b"\x7d" * 70, b"\x7e" * 65, _special_heavy(rng, 300, 0.3),
               _special_heavy(rng, 200, 1 / 64), bytes(rng.randrange(256) for _ in range(100))]
    wire = b"\x00\x7d\x7d\x13" + b"".join(_encode_python(p) for p in packets)
    wire += b"\x7e" + bytes(40) + b"\x7d\x41" + bytes(40) + b"\x7e"  # a bad escape mid-frame
    wire += b"\x7e\x7d\x7e"  # ESC right before a FLAG
    wire += _encode_python(b"cut short")[:6]  # its closing FLAG lost: ends at the next FLAG
    wire += _encode_python(bytes(600))  # over the limit, plain bytes
    wire += _encode_python(b"\x7e" * 400)  # over the limit, all escapes
    wire += b"\x7e\x7e" + _encode_python(b"last")
    return packets, wire


MAX_PACKET = 300


def test_device_decoder_matches_python_on_a_mixed_stream(runtime):
    packets, wire = _stream(random.Random(1))
    expected = _python_decode(wire, MAX_PACKET)
    assert expected[0][-1] == b"last" and expected[1] >= 6  # the reference saw the bad frames
    assert _device_decode(runtime, [wire], MAX_PACKET) == expected
    assert _device_decode(runtime, [wire[i:i + 1] for i in range(len(wire))], MAX_PACKET) == expected
    rng = random.Random(2)
    at, slices = 0, []
    while at < len(wire):
        step = rng.randrange(1, 80)
        slices.append(wire[at:at + step])
        at += step
    assert _device_decode(runtime, slices, MAX_PACKET) == expected


def test_a_slice_may_end_anywhere_in_a_frame(runtime):
    """Split at every position: mid-run, right after an ESC (which stays pending), at a FLAG."""
    rng = random.Random(3)
    packet = bytes(rng.randrange(256) for _ in range(150)) + b"\x7d\x7e" * 20 + bytes(60) + b"\x7e"
    wire = _encode_python(b"before") + _encode_python(packet) + _encode_python(b"after")
    assert wire.count(b"\x7d") > 40
    for cut in range(len(wire) + 1):
        got = _device_decode(runtime, [wire[:cut], wire[cut:]], MAX_PACKET)
        assert got == ([b"before", packet, b"after"], 0), cut


def test_bad_escapes_and_oversized_frames_are_dropped_wherever_they_fall(runtime):
    rng = random.Random(4)
    packet = bytes(rng.randrange(256) for _ in range(200))
    frame = _encode_python(packet)[1:-1]
    good = _encode_python(b"ok")
    for at in range(0, 140):
        for bad in (b"\x7d\x41", b"\x7d\x7d", b"\x7d\x00"):
            wire = b"\x7e" + frame[:at] + bad + frame[at:] + good
            for cut in (None, at + 1 + len(bad) // 2):  # whole, or cut between ESC and its partner
                slices = [wire] if cut is None else [wire[:cut], wire[cut:]]
                assert _device_decode(runtime, slices, MAX_PACKET) == ([b"ok"], 1), (at, bad, cut)
    # An escape the sender never makes, ESC 0x41, whose unescaped form (0x61) the CRC covers: only
    # the escape check can refuse it.
    plain = bytes(rng.randrange(0x7d) for _ in range(200))  # no escapes: wire offset = packet offset
    for at in range(0, 140):
        forged = plain[:at] + b"\x61" + plain[at + 1:]
        wire = _encode_python(forged)
        wire = wire[:1 + at] + b"\x7d\x41" + wire[2 + at:]
        assert _python_decode(wire + good, MAX_PACKET) == ([b"ok"], 1)
        assert _device_decode(runtime, [wire + good], MAX_PACKET) == ([b"ok"], 1), at
    # Frames that outgrow the buffer by one byte at every alignment, plain or escaped at the end.
    for size in range(MAX_PACKET - 70, MAX_PACKET + 3):
        for tail in (b"", b"\x7e", b"\x7d\x7d"):
            body = bytes(rng.randrange(0x7d) for _ in range(size)) + tail
            wire = _encode_python(body) + good
            expected = ([body, b"ok"], 0) if len(body) <= MAX_PACKET else ([b"ok"], 1)
            assert _device_decode(runtime, [wire], MAX_PACKET) == expected, (size, tail)
            assert _python_decode(wire, MAX_PACKET) == expected


def _sent(lib, head: bytes, body: bytes) -> bytes:
    length = ctypes.c_uint32.in_dll(lib, "stub_port_wire_len")
    length.value = 0
    assert lib.utvm_frame_send(head, len(head), body or None, len(body)) == 0
    return ctypes.string_at(ctypes.addressof(ctypes.c_uint8.in_dll(lib, "stub_port_wire")), length.value)


def test_device_sender_gives_the_python_frames(runtime):
    rng = random.Random(5)
    cases = [(b"", b""), (b"h", b""), (b"\x7e", b"\x7d"), (bytes(8), b"\x7e" * 900),
             (bytes(8), b"\x7d" * 901)]
    for size in list(range(0, 140)) + [255, 256, 1000, 1900]:
        cases.append((bytes(rng.randrange(256) for _ in range(8)), _special_heavy(rng, size, 1 / 64)))
    for size in range(0, 70):  # a special byte at every place of a block, and at the stage's end
        cases.append((b"", bytes(size) + b"\x7e" + bytes(70 - size)))
    for head, body in cases:
        assert len(_encode_python(head + body)) <= STUB_WIRE_BYTES
        assert _sent(runtime, head, body) == _encode_python(head + body), (len(head), len(body))
