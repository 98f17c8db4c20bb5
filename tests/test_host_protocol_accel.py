"""The optional C framing accelerator gives exactly the bytes and packets of the pure-Python path."""

from __future__ import annotations

import binascii
import ctypes
import random

import pytest
from utvm.host_driven import _framing_accel, framing
from utvm.host_driven.framing import FrameDecoder, FrameEncoder


@pytest.fixture(scope="module")
def lib():
    loaded = _framing_accel.load()
    if loaded is None:
        pytest.skip("framing accelerator not built: no C compiler (cc / $CC) or UTVM_FRAMING_ACCEL=0")
    return loaded


def _packets(rng: random.Random):
    """Sizes around the accelerator's threshold and word boundaries, plain to escape-dense bytes."""
    for size in (1, 7, 8, 9, 255, 256, 257, 1000, 4093):
        for specials in (0.0, 0.01, 0.5, 1.0):
            yield bytes(rng.choice(b"\x7d\x7e") if rng.random() < specials else rng.randrange(256)
                        for _ in range(size))


def test_crc_matches_crc_hqx(lib):
    rng = random.Random(1)
    # Short runs take the table; from 64 bytes on, carry-less multiplication folds 64 and 16 bytes
    # a step where the CPU has it, and the table takes the tail.
    for size in list(range(0, 40)) + list(range(60, 200)) + [4093, 4095]:
        data = bytes(rng.randrange(256) for _ in range(size))
        for start in (0xFFFF, 0x1D0F, rng.randrange(0x10000)):
            assert lib.utvm_accel_crc16(data, size, start) == binascii.crc_hqx(data, start)


def test_encode_gives_the_same_frames(lib):
    rng = random.Random(2)
    packets = list(_packets(rng))
    for packet in packets:
        assert framing.encode(packet) == framing._encode_python(packet), len(packet)
    big = [p for p in packets if len(p) >= framing.ACCEL_MIN_BYTES]
    assert FrameEncoder().encode_many(big) == FrameEncoder(accel=False).encode_many(big)


def test_decode_gives_the_same_packets_and_counts(lib):
    rng = random.Random(3)
    packets = list(_packets(rng))
    wire = bytearray(b"".join(framing._encode_python(p) for p in packets))
    # Corrupt some bytes, cut some frames short, add a bad escape and an oversized frame.
    for _ in range(20):
        wire[rng.randrange(len(wire))] ^= 1 << rng.randrange(8)
    wire += b"\x7e" + bytes(300) + b"\x7d\x41" + bytes(10) + b"\x7e"
    wire += b"\x7e" + bytes(9000) + b"\x7e"
    wire = bytes(wire)
    results = []
    for accel in (True, False):
        decoder = FrameDecoder(4093, accel=accel)
        got = []
        at = 0
        while at < len(wire):  # uneven slices, as reads deliver them
            step = rng.randrange(1, 6000)
            got += decoder.feed(wire[at:at + step])
            at += step
        results.append((got, decoder.bad_frames))
    assert results[0] == results[1]
    assert results[0][1] >= 3  # the corrupted frames and the two bad ones were all dropped


def test_decode_checks_escapes_anywhere_in_a_block(lib):
    """A bad or cut escape is refused wherever it falls relative to the 16-byte steps."""
    rng = random.Random(4)
    for size in (300, 301, 317, 4093):
        packet = bytes(rng.randrange(256) for _ in range(size))
        frame = framing._encode_python(packet)[1:-1]
        for at in range(0, 40):
            for bad in (b"\x7d\x41", b"\x7d", b"\x7d\x7d"):
                corrupt = frame[:at] + bad + frame[at:]
                for accel in (True, False):
                    decoder = FrameDecoder(4093, accel=accel)
                    assert decoder.feed(b"\x7e" + corrupt + b"\x7e") == [], (size, at, bad, accel)
                    assert decoder.bad_frames == 1


# ---- every escaping code path of the runtime (escape.c), through the accelerator -------------------

ESCAPE_LEVELS = (0, 1, 2)  # UTVM_ESCAPE_SIMD: portable C, SSE2, AVX-512 VBMI2 (where the CPU has it)
GUARD = 64
SENTINEL = 0xA5


@pytest.fixture(scope="module")
def variants(lib, tmp_path_factory):
    """The accelerator built with each of the runtime's escaping code paths (level 2 runs as level 1
    on a CPU without AVX-512 VBMI2)."""
    folder = tmp_path_factory.mktemp("accel")
    built = {}
    for level in ESCAPE_LEVELS:
        target = folder / f"accel-{level}.so"
        _framing_accel.compile_library(target, [f"UTVM_ESCAPE_SIMD={level}"])
        built[level] = _framing_accel.bind(ctypes.CDLL(str(target)))
    return built


@pytest.fixture(params=ESCAPE_LEVELS, ids=lambda level: f"simd{level}")
def variant(request, variants, monkeypatch):
    """One code path, also behind framing.py's encoder and decoders."""
    chosen = variants[request.param]
    monkeypatch.setattr(_framing_accel, "load", lambda: chosen)
    return chosen


def _with_specials(rng: random.Random, size: int, share: float) -> bytes:
    return bytes(rng.choice(b"\x7d\x7e") if rng.random() < share else rng.randrange(256) for _ in range(size))


def _plain(rng: random.Random, size: int) -> bytes:
    return bytes(rng.randrange(0x7C) for _ in range(size))


def _adversarial(rng: random.Random):
    """Special bytes where block steps meet them: at every place of a 64-byte block, in pairs across
    block boundaries, ending a block, all of them; and every length up to 200."""
    for size in range(0, 201):
        yield bytes(rng.randrange(256) for _ in range(size))
        yield _plain(rng, size)
    for byte in (b"\x7e", b"\x7d"):
        for size in (1, 2, 15, 16, 17, 31, 32, 33, 63, 64, 65, 127, 128, 129, 200, 4093):
            yield byte * size
    yield b"\x7d\x7e" * 100
    for at in range(0, 130):
        base = _plain(rng, 192)
        for special in (b"\x7e", b"\x7d", b"\x7d\x7d", b"\x7e\x7d", b"\x7d\x7e\x7d"):
            yield base[:at] + special + base[at + len(special):]
    for size in (16, 17, 31, 32, 33, 63, 64, 65, 96, 128, 129):  # ESC as the last byte of a block
        yield _plain(rng, size - 1) + b"\x7d"
        yield _plain(rng, size - 1) + b"\x7d" + _plain(rng, 40)
    for share in (1 / 128, 1 / 16, 0.5):
        yield _with_specials(rng, 4093, share)
    yield bytes(rng.randrange(256) for _ in range(70000))


@pytest.fixture(scope="module")
def adversarial():
    return list(_adversarial(random.Random(10)))


def _encode_with(lib, head: bytes, body: bytes) -> bytes:
    out = ctypes.create_string_buffer(2 * (len(head) + len(body) + 2) + 2)
    n = lib.utvm_accel_encode(head, len(head), body or None, len(body), out)
    return out.raw[:n]


def _decode_with(lib, frame: bytes, cap: int):
    out = ctypes.create_string_buffer(cap + GUARD)
    ctypes.memset(out, SENTINEL, cap + GUARD)
    n = lib.utvm_accel_decode(frame, len(frame), out, cap)
    assert out.raw[cap:] == bytes([SENTINEL]) * GUARD, "decode wrote past its buffer"
    return None if n < 0 else out.raw[:n]


def test_every_path_escapes_like_python(variant, adversarial):
    rng = random.Random(11)
    for packet in adversarial:
        expected = framing._encode_python(packet)
        assert _encode_with(variant, packet, b"") == expected, len(packet)
        cut = rng.randrange(len(packet) + 1)
        assert _encode_with(variant, packet[:cut], packet[cut:]) == expected, (len(packet), cut)


def test_every_path_unescapes_like_python(variant, adversarial):
    for packet in adversarial:
        frame = framing._encode_python(packet)[1:-1]
        # A packet has at least one byte besides its CRC.
        assert _decode_with(variant, frame, len(packet) + 2) == (packet or None), len(packet)
        assert _decode_with(variant, frame, len(packet) + 1) is None  # one byte over the buffer
        assert _decode_with(variant, frame + b"\x7d", len(packet) + 4) is None  # ends in ESC
        if packet:
            at = len(packet) // 2
            bad = framing._encode_python(packet[:at] + b"\x61" + packet[at + 1:])[1:-1]
            escaped_before = packet[:at].count(0x7D) + packet[:at].count(0x7E)
            bad = bad[:at + escaped_before] + b"\x7d\x41" + bad[at + escaped_before + 1:]
            assert _decode_with(variant, bad, len(packet) + 2) is None, len(packet)  # CRC good, escape bad


def _sliced(wire: bytes, rng: random.Random, largest: int):
    at = 0
    while at < len(wire):
        step = rng.randrange(1, largest)
        yield wire[at:at + step]
        at += step


def test_every_path_decodes_a_stream_like_python(variant, adversarial):
    """framing.py's decoder over this code path (bulk slices go to utvm_accel_decode_all)."""
    rng = random.Random(12)
    packets = [p for p in adversarial if 0 < len(p) <= 4093]
    wire = bytearray(b"".join(framing._encode_python(p) for p in packets))
    for _ in range(30):
        wire[rng.randrange(len(wire))] ^= 1 << rng.randrange(8)
    wire += b"\x7e" + bytes(300) + b"\x7d\x41" + bytes(10) + b"\x7e" + b"\x7e" + bytes(9000) + b"\x7e"
    wire = bytes(wire)
    expected = FrameDecoder(4093, accel=False).feed(wire)
    for largest in (200, 70000):
        decoder = FrameDecoder(4093)
        assert decoder._lib is variant
        got = [p for part in _sliced(wire, rng, largest) for p in decoder.feed(part)]
        assert got == expected
    reference = FrameDecoder(4093, accel=False)
    reference.feed(wire)
    assert decoder.bad_frames == reference.bad_frames >= 30


def test_decode_all_reports_each_frame(variant):
    rng = random.Random(13)
    packets = [bytes(rng.randrange(256) for _ in range(rng.randrange(1, 300))) for _ in range(40)]
    frames = [framing._encode_python(p) for p in packets]
    frames[5] = frames[5][:10] + b"\x7d\x41" + frames[5][10:]  # bad escape
    frames[9] = framing._encode_python(bytes(400))  # over max_crc
    frames[20] = frames[20][:-3] + bytes([frames[20][-3] ^ 1]) + frames[20][-2:]  # bad CRC
    cut = frames[0][:-5]
    stream = b"".join(frames)[1:] + b"\x7e\x7e" + cut  # empty frames, then one cut short
    out = ctypes.create_string_buffer(70000)
    spans = (ctypes.c_long * 128)()
    used = ctypes.c_size_t()
    count = variant.utvm_accel_decode_all(stream, len(stream), out, len(out), 302, spans, 128,
                                          ctypes.byref(used))
    assert count == 40
    assert used.value == len(stream) - (len(cut) - 1)  # up to and including the last FLAG
    for i, packet in enumerate(packets):
        offset, length = spans[2 * i], spans[2 * i + 1]
        if i in (5, 9, 20):
            assert (offset, length) == (-1, 0), i
        else:
            assert out.raw[offset:offset + length] == packet, i
    # At most max_spans frames a call, and never more than out may hold.
    assert variant.utvm_accel_decode_all(stream, len(stream), out, len(out), 302, spans, 7,
                                         ctypes.byref(used)) == 7
    assert used.value == sum(len(f) for f in frames[:7]) - 1
    assert variant.utvm_accel_decode_all(stream, len(stream), out, 302 * 3, 302, spans, 128,
                                         ctypes.byref(used)) >= 3


HEADER = bytes([0x11, 0x11, 0, 0, 0x78, 0x56, 0x34, 0x12])  # REPLY_OK, READ, seq, session


def _reply(seq: int, body: bytes) -> bytes:
    return framing._encode_python(HEADER[:2] + bytes([seq & 0xFF, (seq >> 8) & 0xFF]) + HEADER[4:] + body)


def _take(lib, stream: bytes, seq: int, chunk: int, total: int, count: int, result):
    used = ctypes.c_size_t()
    bad = ctypes.c_int()
    got = lib.utvm_accel_take_chunks(stream, len(stream), HEADER, seq, 0, chunk, total, count, result,
                                     ctypes.byref(used), ctypes.byref(bad))
    return got, used.value, bad.value


def _result(total: int):
    buffer = ctypes.create_string_buffer(total + GUARD)
    ctypes.memset(buffer, SENTINEL, total + GUARD)
    return buffer


def test_take_chunks_unescapes_replies_into_place(variant):
    rng = random.Random(14)
    chunk, total = 300, 1000  # four replies, the last one 100 bytes
    data = _with_specials(rng, total, 0.1)
    seq = 0x7D7C  # the sequence numbers need escapes too (0x7D7D, 0x7D7E)
    replies = [_reply(seq + i, data[i * chunk:(i + 1) * chunk]) for i in range(4)]
    stream = b"".join(replies)
    result = _result(total)
    assert _take(variant, stream, seq, chunk, total, 4, result) == (4, len(stream) - 1, 0)
    assert result.raw[:total] == data and result.raw[total:] == bytes([SENTINEL]) * GUARD
    # Cut anywhere: the whole replies before the cut are taken, and the rest waits (not bad).
    for cut in range(1, len(stream)):
        result = _result(total)
        whole = sum(1 for end in range(1, 5) if len(b"".join(replies[:end])) - 1 < cut)
        got, used, bad = _take(variant, stream[:cut], seq, chunk, total, 4, result)
        assert (got, bad) == (whole, 0), cut
        assert used == (len(b"".join(replies[:whole])) - 1 if whole else 0), cut
        assert result.raw[:whole * chunk] == data[:whole * chunk]
        assert result.raw[total:] == bytes([SENTINEL]) * GUARD


def test_take_chunks_stops_at_a_wrong_reply_without_writing_past_its_chunk(variant):
    rng = random.Random(15)
    chunk, total = 300, 1000
    data = bytes(rng.randrange(256) for _ in range(total))
    good = [_reply(1 + i, data[i * chunk:(i + 1) * chunk]) for i in range(4)]
    wrong = {
        "seq": _reply(9, data[600:900]),
        "longer": _reply(3, data[600:900] + b"\x7e" * 40),
        "shorter": _reply(3, data[600:899]),
        "crc": good[2][:-4] + bytes([good[2][-4] ^ 0x10]) + good[2][-3:],
        "escape": good[2][:50] + b"\x7d\x41" + good[2][51:],
        "error": framing._encode_python(bytes([0x12, 0x11, 3, 0]) + HEADER[4:] + b"\x05 no such tensor"),
    }
    for name, third in wrong.items():
        stream = good[0] + good[1] + third + good[3]
        result = _result(total)
        got, used, bad = _take(variant, stream, 1, chunk, total, 4, result)
        assert (got, used, bad) == (2, len(good[0] + good[1]) - 1, 1), name
        assert result.raw[:600] == data[:600]
        assert result.raw[900:] == bytes([SENTINEL]) * 100 + bytes([SENTINEL]) * GUARD, name
    # The last, shorter chunk: a reply longer than it never writes past the result.
    stream = good[0] + good[1] + good[2] + _reply(4, data[900:] + b"\x7d" * 200)
    result = _result(total)
    assert _take(variant, stream, 1, chunk, total, 4, result)[::2] == (3, 1)
    assert result.raw[total:] == bytes([SENTINEL]) * GUARD
    # Not at a FLAG: for the session's decoder to sort out.
    assert _take(variant, b"\x00" + good[0], 1, chunk, total, 4, _result(total))[::2] == (0, 1)
