"""The optional C framing accelerator gives exactly the bytes and packets of the pure-Python path."""

from __future__ import annotations

import binascii
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
