"""Capped exponential backoff with jitter (agent/core/backoff.py)."""

from __future__ import annotations

import random

import pytest

from agent.core.backoff import Backoff


class FixedRng:
    """A stand-in for random.Random that always draws the same number."""

    def __init__(self, value: float) -> None:
        self.value = value

    def random(self) -> float:
        return self.value


def _nominal(initial: float, maximum: float, attempt: int) -> float:
    return min(maximum, initial * 2 ** attempt)


def test_delays_lie_in_upper_half_of_a_doubling_capped_delay() -> None:
    b = Backoff(0.5, 30.0, random.Random(1234))
    for attempt in range(40):
        d = _nominal(0.5, 30.0, attempt)
        delay = b.next()
        assert d / 2 <= delay <= d, (attempt, delay, d)
    # 0.5 * 2**6 = 32 > 30: from the 7th attempt on the delay stays capped.
    assert _nominal(0.5, 30.0, 6) == 30.0


def test_bounds_are_reached_by_extreme_draws() -> None:
    low = Backoff(1.0, 8.0, FixedRng(0.0))  # type: ignore[arg-type]
    assert [low.next() for _ in range(6)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    high = Backoff(1.0, 8.0, FixedRng(1.0))  # type: ignore[arg-type]
    assert [high.next() for _ in range(6)] == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    mid = Backoff(1.0, 8.0, FixedRng(0.5))  # type: ignore[arg-type]
    assert [mid.next() for _ in range(5)] == [0.75, 1.5, 3.0, 6.0, 6.0]


def test_same_seed_same_delays_and_jitter_spreads_them() -> None:
    a = Backoff(0.1, 10.0, random.Random(7))
    b = Backoff(0.1, 10.0, random.Random(7))
    seq_a = [a.next() for _ in range(20)]
    assert seq_a == [b.next() for _ in range(20)]
    c = Backoff(0.1, 10.0, random.Random(8))
    assert seq_a != [c.next() for _ in range(20)]
    # Capped phase: all drawn from [5, 10], not all equal (that is the point of jitter).
    capped = seq_a[10:]
    assert all(5.0 <= x <= 10.0 for x in capped)
    assert len(set(capped)) > 1


def test_attempts_counts_and_reset_starts_over() -> None:
    b = Backoff(1.0, 60.0, FixedRng(1.0))  # type: ignore[arg-type]
    assert b.attempts == 0
    assert [b.next() for _ in range(4)] == [1.0, 2.0, 4.0, 8.0]
    assert b.attempts == 4
    b.reset()
    assert b.attempts == 0
    assert b.next() == 1.0
    assert b.attempts == 1
    assert b.next() == 2.0


def test_maximum_below_initial_is_raised_to_initial() -> None:
    b = Backoff(5.0, 1.0, FixedRng(1.0))  # type: ignore[arg-type]
    assert [b.next() for _ in range(3)] == [5.0, 5.0, 5.0]


def test_many_attempts_do_not_overflow_and_stay_capped() -> None:
    b = Backoff(0.001, 30.0, FixedRng(1.0))  # type: ignore[arg-type]
    delays = [b.next() for _ in range(10_000)]
    assert delays[-1] == 30.0
    assert max(delays) == 30.0
    assert b.attempts == 10_000
    # Non-decreasing on a fixed draw: doubling, then flat at the cap.
    assert delays == sorted(delays)


def test_default_rng_still_within_bounds() -> None:
    b = Backoff(0.25, 2.0)
    for attempt in range(12):
        d = _nominal(0.25, 2.0, attempt)
        assert d / 2 <= b.next() <= d


@pytest.mark.parametrize("initial,maximum", [(0.5, 30.0), (2.0, 2.0), (0.01, 0.05)])
def test_first_delay_is_within_initial(initial: float, maximum: float) -> None:
    b = Backoff(initial, maximum, random.Random(0))
    assert initial / 2 <= b.next() <= initial
