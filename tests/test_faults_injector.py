"""The fault injector itself, over a plain pipe: `cat` echoes what the injector lets through."""

from __future__ import annotations

import shutil

import pytest
from utvm.host_driven.fault_injection import (
    FROM_DEVICE,
    TO_DEVICE,
    Fault,
    FaultInjectingTransport,
    seeded_schedule,
)
from utvm.host_driven.transport import SubprocessTransport
from utvm.project_api.errors import IoTimeoutError, TransportClosedError

pytestmark = pytest.mark.timeout(60)
DATA = bytes(range(32, 96))


@pytest.fixture
def echo():
    """A FaultInjectingTransport around `cat` (what goes to the device comes straight back)."""
    if shutil.which("cat") is None:
        pytest.skip("cat not installed")
    transport = FaultInjectingTransport(SubprocessTransport(["cat"]), seed=7)
    yield transport
    transport.close()


def read_exactly(transport, n: int, timeout: float = 5.0) -> bytes:
    out = b""
    while len(out) < n:
        out += transport.read(n - len(out), timeout)
    return out


def test_clean_link_passes_bytes_unchanged(echo):
    echo.write(DATA, 5.0)
    assert read_exactly(echo, len(DATA)) == DATA
    assert echo.injected == []
    assert echo.offset(TO_DEVICE) == echo.offset(FROM_DEVICE) == len(DATA)


@pytest.mark.parametrize("direction", [TO_DEVICE, FROM_DEVICE])
def test_drop_removes_exactly_the_scheduled_bytes(echo, direction):
    echo.inject("drop", direction, after=3, length=2)
    echo.write(DATA, 5.0)
    assert read_exactly(echo, len(DATA) - 2) == DATA[:3] + DATA[5:]
    assert [f.kind for f in echo.injected] == ["drop"]


def test_drop_spanning_several_writes(echo):
    echo.inject("drop", TO_DEVICE, after=2, length=5)
    for i in range(0, 12, 4):
        echo.write(DATA[i : i + 4], 5.0)
    assert read_exactly(echo, 7) == DATA[:2] + DATA[7:12]
    assert not echo.pending


@pytest.mark.parametrize("direction", [TO_DEVICE, FROM_DEVICE])
def test_corrupt_changes_exactly_the_scheduled_bytes(echo, direction):
    echo.inject("corrupt", direction, after=10, length=3)
    echo.write(DATA, 5.0)
    got = read_exactly(echo, len(DATA))
    changed = [i for i in range(len(DATA)) if got[i] != DATA[i]]
    assert changed == [10, 11, 12]


def test_corrupt_with_a_chosen_pattern_across_writes(echo):
    echo.inject("corrupt", TO_DEVICE, after=3, xor=b"\x80\x01\xff")
    echo.write(DATA[:4], 5.0)
    echo.write(DATA[4:8], 5.0)
    got = read_exactly(echo, 8)
    assert bytes(a ^ b for a, b in zip(got, DATA[:8])) == b"\0\0\0\x80\x01\xff\0\0"


def test_corruption_is_reproducible_from_the_seed():
    results = []
    for seed in (1, 1, 2):
        transport = FaultInjectingTransport(SubprocessTransport(["cat"]), seed=seed)
        try:
            transport.inject("corrupt", FROM_DEVICE, after=0, length=len(DATA))
            transport.write(DATA, 5.0)
            results.append(read_exactly(transport, len(DATA)))
        finally:
            transport.close()
    assert results[0] == results[1]
    assert results[0] != results[2]


def test_delay_holds_bytes_past_a_short_deadline(echo):
    echo.inject("delay", FROM_DEVICE, after=4, delay_s=0.5)
    echo.write(DATA[:8], 5.0)
    assert read_exactly(echo, 4) == DATA[:4]
    with pytest.raises(IoTimeoutError, match="fault injector"):
        echo.read(4, 0.05)
    assert read_exactly(echo, 4, timeout=5.0) == DATA[4:8]


def test_cut_closes_the_link_with_a_clear_error(echo):
    echo.inject("cut", TO_DEVICE, after=4)
    echo.write(DATA, 5.0)
    with pytest.raises(TransportClosedError, match="link cut by the fault injector at byte 4"):
        echo.read(1, 5.0)
    with pytest.raises(TransportClosedError):
        echo.write(b"x", 1.0)


def test_hook_runs_once_when_the_stream_reaches_its_offset(echo):
    seen = []
    echo.inject("hook", TO_DEVICE, after=6, action=lambda: seen.append(echo.offset(TO_DEVICE)))
    echo.write(DATA[:4], 5.0)
    assert seen == []
    echo.write(DATA[4:16], 5.0)
    echo.write(DATA[16:], 5.0)
    assert len(seen) == 1
    assert read_exactly(echo, len(DATA)) == DATA


def test_relative_schedule_counts_from_now(echo):
    echo.write(DATA[:10], 5.0)
    read_exactly(echo, 10)
    echo.add([Fault("drop", TO_DEVICE, at=1)], relative=True)
    echo.write(DATA[10:14], 5.0)
    assert read_exactly(echo, 3) == DATA[10:11] + DATA[12:14]


def test_seeded_schedule_is_reproducible_and_in_range():
    kinds = ("drop", "corrupt", "delay")
    a = seeded_schedule(42, count=20, span=1000, start=100, kinds=kinds)
    b = seeded_schedule(42, count=20, span=1000, start=100, kinds=kinds)
    c = seeded_schedule(43, count=20, span=1000, start=100, kinds=kinds)
    assert a == b
    assert a != c
    assert all(100 <= f.at < 1100 and f.kind in kinds for f in a)
    assert {f.direction for f in a} == {TO_DEVICE, FROM_DEVICE}


def test_bad_faults_are_refused_with_the_choices():
    with pytest.raises(ValueError, match="drop, corrupt, delay, cut, hook"):
        Fault("melt", TO_DEVICE, at=0)
    with pytest.raises(ValueError, match="to_device or from_device"):
        Fault("drop", "sideways", at=0)
    with pytest.raises(ValueError, match="needs an action"):
        Fault("hook", TO_DEVICE, at=0)
