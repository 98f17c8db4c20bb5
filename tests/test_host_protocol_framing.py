"""Host-side framing: round trips, escapes, CRC checks and resynchronisation."""

from __future__ import annotations

import binascii
import random

import pytest
from utvm.host_driven.framing import FLAG, FrameDecoder, crc16, encode


def _decode_all(wire: bytes, max_packet: int = 1024, slices=None):
    decoder = FrameDecoder(max_packet)
    packets = []
    if slices is None:
        packets += decoder.feed(wire)
    else:
        at = 0
        for size in slices:
            packets += decoder.feed(wire[at:at + size])
            at += size
        packets += decoder.feed(wire[at:])
    return packets, decoder


def test_crc_is_ccitt_false():
    assert crc16(b"123456789") == 0x29B1
    assert crc16(b"123456789") == binascii.crc_hqx(b"123456789", 0xFFFF)


@pytest.mark.parametrize("packet", [
    bytes(range(256)),
    b"\x7e" * 300,  # dense escapes take the replace path
    b"\x7d\x5e\x7d\x5d\x7e\x5e",  # bytes that look like escapes once unescaped
    b"x",
    bytes(1000),
])
def test_round_trip(packet):
    wire = encode(packet)
    assert wire[:1] == FLAG and wire[-1:] == FLAG
    assert FLAG not in wire[1:-1]
    packets, decoder = _decode_all(wire)
    assert packets == [packet]
    assert decoder.bad_frames == 0


def test_any_slicing_gives_the_same_packets():
    rng = random.Random(7)
    packets = [bytes(rng.randrange(256) for _ in range(rng.randrange(1, 400))) for _ in range(20)]
    wire = b"".join(encode(p) for p in packets)
    one_by_one, _ = _decode_all(wire, slices=[1] * len(wire))
    assert one_by_one == packets
    random_slices, _ = _decode_all(wire, slices=[rng.randrange(1, 50) for _ in range(len(wire) // 10)])
    assert random_slices == packets


def test_crc_mismatch_is_dropped_and_counted():
    good = encode(b"hello world")
    corrupted = bytearray(good)
    corrupted[3] ^= 0x04
    packets, decoder = _decode_all(bytes(corrupted) + good)
    assert packets == [b"hello world"]
    assert decoder.bad_frames == 1


def test_resync_after_garbage_and_lost_bytes():
    first, second = encode(b"first packet"), encode(b"second packet")
    garbage = bytes(random.Random(1).randrange(256) for _ in range(500))
    truncated = first[: len(first) // 2]  # bytes lost mid-frame, including its closing FLAG
    packets, decoder = _decode_all(garbage + truncated + second + first)
    assert packets == [b"second packet", b"first packet"]
    assert decoder.bad_frames >= 2


def test_invalid_escape_is_dropped():
    bad = FLAG + b"\x7d\x41abc" + FLAG
    packets, decoder = _decode_all(bad + encode(b"ok"))
    assert packets == [b"ok"]
    assert decoder.bad_frames == 1


def test_oversized_frame_is_dropped_then_decoding_resumes():
    big = encode(bytes(5000))
    packets, decoder = _decode_all(big + encode(b"small"), max_packet=100, slices=[64] * 80)
    assert packets == [b"small"]
    assert decoder.bad_frames == 1


def test_empty_frames_are_ignored():
    packets, decoder = _decode_all(FLAG * 5 + encode(b"a") + FLAG * 3)
    assert packets == [b"a"]
    assert decoder.bad_frames == 0
