"""A noisy link: bytes flipped, dropped, duplicated and swapped at random, both ways, at a fixed
byte-error rate. The session shrinks its packets until they get through, as a link layer does,
and every answer is still exact.

The device is the runtime's POSIX port with the fixture model, built for a fast link (4093-byte
packets, 32 in flight), behind a NoisyTransport (host_driven/fault_injection.py).
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from runtime_fixtures.build import FAST_LINK_DEFINES, build_device
from utvm.host_driven import protocol as P
from utvm.host_driven.device import DeviceClient
from utvm.host_driven.fault_injection import ByteNoise, NoisyTransport
from utvm.host_driven.session import ProtocolSession
from utvm.host_driven.transport import SubprocessTransport

INPUT, BIAS, OUTPUT, BIG = 0, 1, 3, 4
N = 1000

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def device_exe(tmp_path_factory):
    return build_device(tmp_path_factory.mktemp("noisy-device"), defines=FAST_LINK_DEFINES)


def _expected_output(inp: np.ndarray, bias: np.ndarray) -> np.ndarray:
    total = np.clip(inp.astype(np.int16) + bias.astype(np.int16), -128, 127)
    return np.maximum(total, 0).astype(np.int8)


@pytest.mark.parametrize("rate, seed", [(1e-2, 1), (1e-2, 2), (1e-3, 3)])
def test_a_noisy_link_still_gives_exact_answers(device_exe, rate, seed):
    transport = NoisyTransport(SubprocessTransport([str(device_exe)]), rate, seed=seed)
    with ProtocolSession(transport, timeout=1.0) as session:
        client = DeviceClient(session)
        info = client.info()
        assert info.model_hash == "0123456789abcdef" * 2 and info.board == "host"
        bias = np.frombuffer(client.read_tensor(BIAS, N), dtype=np.int8)
        rng = np.random.default_rng(seed)
        for _ in range(2):
            inp = rng.integers(-128, 128, N, dtype=np.int8)
            inp[0] = 0  # not one of the fixture's trigger values
            client.write_tensor(INPUT, inp.tobytes())
            assert client.run() > 0
            out = np.frombuffer(client.read_tensor(OUTPUT, N), dtype=np.int8)
            np.testing.assert_array_equal(out, _expected_output(inp, bias))
        data = os.urandom(4096)
        client.write_tensor(BIG, data)
        assert client.read_tensor(BIG, len(data)) == data
        link = session.link
        assert link.frames_corrupted > 0 and 0 < link.frame_error_rate < 1
        if rate >= 1e-2:  # 4093-byte packets never get through at 1e-2: the session shrank them
            assert link.packet_shrinks > 0
            assert link.packet_bytes < link.negotiated_packet_bytes == P.MAX_PACKET
        assert link.as_dict()["packet_bytes"] == session.max_packet


def test_byte_noise_spoils_at_its_rate_and_repeats_from_its_seed():
    data = os.urandom(200_000)
    noise = ByteNoise(1e-2, seed=5)
    spoilt = noise(data[:1234]) + noise(data[1234:])
    assert 1600 < noise.errors < 2400  # 2000 expected
    again = ByteNoise(1e-2, seed=5)
    assert again(data[:1234]) + again(data[1234:]) == spoilt
    assert ByteNoise(0.0)(data) == data
    flips = ByteNoise(1e-2, seed=6, kinds=["flip"])
    flipped = flips(data)
    assert len(flipped) == len(data)
    assert sum(bin(a ^ b).count("1") for a, b in zip(data, flipped)) == flips.errors
    assert len(ByteNoise(1e-2, seed=7, kinds=["drop"])(data)) < len(data)
    with pytest.raises(ValueError, match="unknown noise kinds"):
        ByteNoise(0.1, kinds=["melt"])
