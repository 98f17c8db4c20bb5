"""Static offset planning of the arena, and the lower bound it is measured against.

Each buffer is live over an inclusive range of kernel steps. Two buffers may share bytes only
if their ranges do not overlap. The lower bound on the arena for a given kernel order is the
largest sum of live bytes at any one step; no placement can beat it.

Placement first runs greedy first-fit (as TFLite Micro's planner does) in a few buffer orders.
If that does not reach the bound, a bounded search tries to fit every buffer under a capacity
starting at the bound: buffers in execution order, each placed as low or as high as it fits
(placing neighbours at opposite ends is what a chain of alternating sizes needs). The smallest
arena found wins; everything is deterministic.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LiveBuffer:
    """`size` bytes needed from step `first` through step `last` (inclusive)."""

    key: int
    size: int
    first: int
    last: int


def align_up(value: int, alignment: int) -> int:
    return -(-value // alignment) * alignment


def peak_live_bytes(buffers: list) -> int:
    """The largest total size of buffers live at the same step (the arena's lower bound)."""
    if not buffers:
        return 0
    events = {}
    for b in buffers:
        events[b.first] = events.get(b.first, 0) + b.size
        events[b.last + 1] = events.get(b.last + 1, 0) - b.size
    live = peak = 0
    for step in sorted(events):
        live += events[step]
        peak = max(peak, live)
    return peak


def plan_offsets(buffers: list, alignment: int = 16) -> tuple:
    """Place every buffer at an aligned offset; return ({key: offset}, arena size in bytes)."""
    if not buffers:
        return {}, 0
    orders = (
        lambda b: (-b.size, b.first, b.key),  # biggest first (TFLite Micro's greedy planner)
        lambda b: (-(b.last - b.first), -b.size, b.key),  # longest-lived first
        lambda b: (-b.size * (b.last - b.first + 1), b.key),  # largest area first
        lambda b: (b.first, -b.size, b.key),  # in execution order
    )
    best = None
    for order in orders:
        offsets, size = _first_fit(sorted(buffers, key=order), alignment)
        if best is None or size < best[1]:
            best = (offsets, size)
    aligned = [LiveBuffer(b.key, align_up(b.size, alignment), b.first, b.last) for b in buffers]
    bound = align_up(peak_live_bytes(aligned), alignment)
    budget = [SEARCH_BUDGET]
    capacity = bound
    while capacity < best[1] and budget[0] > 0 and len(buffers) <= SEARCH_MAX_BUFFERS:
        found = _fit_under(buffers, capacity, alignment, budget)
        if found is not None:
            return found, capacity
        capacity = align_up(capacity + max(alignment, capacity // 100), alignment)
    return best


SEARCH_BUDGET = 20000  # placements tried in total; a few tens of milliseconds
SEARCH_MAX_BUFFERS = 400  # the search recurses once per buffer


def _fit_under(buffers: list, capacity: int, alignment: int, budget: list):
    """Offsets placing every buffer inside `capacity` bytes, or None (or out of budget)."""
    order = sorted(buffers, key=lambda b: (b.first, -b.size, b.key))
    placed: list = []

    def candidates(buf) -> list:
        busy = sorted(
            (off, end) for off, end, other in placed if not (other.last < buf.first or buf.last < other.first)
        )
        gaps, start = [], 0
        for off, end in busy:
            if off > start:
                gaps.append((start, off))
            start = max(start, align_up(end, alignment))
        gaps.append((start, capacity))
        fits = [(lo, hi) for lo, hi in gaps if hi - lo >= buf.size]
        if not fits:
            return []
        low = fits[0][0]
        high_lo, high_hi = fits[-1]
        high = (high_hi - buf.size) // alignment * alignment
        options = [low]
        if high >= high_lo and high != low:
            options.append(high)
        return options

    def place(index: int) -> bool:
        if index == len(order):
            return True
        buf = order[index]
        for offset in candidates(buf):
            budget[0] -= 1
            if budget[0] < 0:
                return False
            placed.append((offset, offset + buf.size, buf))
            if place(index + 1):
                return True
            placed.pop()
        return False

    if not place(0):
        return None
    return {buf.key: off for off, _, buf in placed}


def _first_fit(ordered: list, alignment: int) -> tuple:
    placed = []  # (offset, end, buffer)
    offsets = {}
    for buf in ordered:
        conflicts = sorted(
            (off, end) for off, end, other in placed if not (other.last < buf.first or buf.last < other.first)
        )
        offset = 0
        for start, end in conflicts:
            if offset + buf.size <= start:
                break
            offset = max(offset, align_up(end, alignment))
        placed.append((offset, offset + buf.size, buf))
        offsets[buf.key] = offset
    arena = max(end for _, end, _ in placed)
    return offsets, align_up(arena, alignment)


def check_plan(buffers: list, offsets: dict, arena: int, alignment: int) -> None:
    """Raise if two buffers live at the same time overlap, or one is misaligned or out of the arena."""
    for i, a in enumerate(buffers):
        oa = offsets[a.key]
        if oa % alignment or oa + a.size > arena:
            raise AssertionError(
                f"buffer {a.key} at {oa}+{a.size} is misaligned or outside the arena {arena}"
            )
        for b in buffers[i + 1 :]:
            ob = offsets[b.key]
            time_overlap = not (a.last < b.first or b.last < a.first)
            space_overlap = oa < ob + b.size and ob < oa + a.size
            if time_overlap and space_overlap and a.size and b.size:
                raise AssertionError(f"buffers {a.key} and {b.key} are live together and overlap")
