"""Drift-free poll deadlines (agent/acquire/schedule.py): deadline k == start + k * interval."""

from __future__ import annotations

import math

import pytest

from agent.acquire.schedule import PollSchedule


def test_first_deadline_is_start() -> None:
    s = PollSchedule({"fast": 0.1}, 500.0)
    assert s.next_due() == (500.0, "fast")


@pytest.mark.parametrize("start", [0.0, 1000.0, 12345.678901])
def test_deadlines_do_not_drift_over_10000_polls(start: float) -> None:
    interval = 0.1
    s = PollSchedule({"fast": interval}, start)
    for k in range(10_000):
        deadline, group = s.next_due()
        assert group == "fast"
        # Exactly start + k * interval: computed, never accumulated.
        assert deadline == start + k * interval, k
        # The poll ran a little late (but within its interval): nothing is skipped.
        assert s.advance("fast", deadline + 0.013) == 0
    assert s.next_due()[0] == start + 10_000 * interval


def test_advance_at_own_deadline_moves_to_the_next_one() -> None:
    s = PollSchedule({"g": 0.25}, 100.0)
    for k in range(1, 50):
        deadline, _ = s.next_due()
        assert s.advance("g", deadline) == 0
        assert s.next_due() == (100.0 + k * 0.25, "g")


def test_groups_interleave_in_deadline_order() -> None:
    start = 10.0
    s = PollSchedule({"fast": 0.25, "slow": 1.0, "mid": 0.5}, start)
    seen = []
    while True:
        deadline, group = s.next_due()
        if deadline > start + 2.0:
            break
        seen.append((deadline, group))
        assert s.advance(group, deadline) == 0
    expected = sorted(
        [(start + k * 0.25, "fast") for k in range(9)]
        + [(start + k * 0.5, "mid") for k in range(5)]
        + [(start + k * 1.0, "slow") for k in range(3)])
    assert seen == expected
    # Ties at the same instant come out in group-name order, each exactly once.
    assert seen[:3] == [(10.0, "fast"), (10.0, "mid"), (10.0, "slow")]


def test_one_late_group_does_not_move_the_others() -> None:
    s = PollSchedule({"fast": 0.5, "slow": 4.0}, 0.0)
    assert s.next_due() == (0.0, "fast")
    s.advance("fast", 0.0)
    assert s.next_due() == (0.0, "slow")
    # The slow group's poll took 3.2 s: only the slow group's schedule is affected.
    assert s.advance("slow", 3.2) == 0
    assert s.next_due() == (0.5, "fast")
    # The fast poll due at 0.5 only ran now (it waited for the slow one): 1.0 .. 3.0 missed.
    assert s.advance("fast", 3.2) == 5
    assert s.next_due() == (3.5, "fast")
    s.advance("fast", 3.5)
    s.advance("fast", 4.0)
    assert s.next_due() == (4.0, "slow")


@pytest.mark.parametrize("now,skipped,next_deadline", [
    (0.0, 0, 1.0),     # on time
    (0.999, 0, 1.0),   # late, but before the next deadline
    (1.0, 1, 2.0),     # exactly on the next deadline: "after now", so deadline 1 is skipped
    (1.5, 1, 2.0),
    (3.5, 3, 4.0),     # deadlines 1, 2, 3 missed
    (4.0, 4, 5.0),
    (1000.25, 1000, 1001.0),
])
def test_late_poll_counts_missed_deadlines(now: float, skipped: int, next_deadline: float) -> None:
    s = PollSchedule({"g": 1.0}, 0.0)
    assert s.advance("g", now) == skipped
    deadline, _ = s.next_due()
    assert deadline == next_deadline
    assert deadline > now


def test_late_poll_with_binary_exact_fraction_boundaries() -> None:
    start, interval = 7.0, 0.125
    s = PollSchedule({"g": interval}, start)
    # Poll 0 finished exactly at deadline 8.
    assert s.advance("g", start + 8 * interval) == 8
    assert s.next_due()[0] == start + 9 * interval
    # Then poll 9 finished just before deadline 12.
    assert s.advance("g", math.nextafter(start + 12 * interval, 0.0)) == 2
    assert s.next_due()[0] == start + 12 * interval


def test_early_advance_never_goes_backwards() -> None:
    s = PollSchedule({"g": 2.0}, 100.0)
    # A clock read before the deadline (e.g. a poll that started early) still advances by one.
    assert s.advance("g", 50.0) == 0
    assert s.next_due() == (102.0, "g")
    assert s.advance("g", 101.0) == 0
    assert s.next_due() == (104.0, "g")


def test_late_polls_never_schedule_in_the_past_on_typical_clocks() -> None:
    # A loop.time()-like start and millisecond intervals; the poll ends at random-ish times.
    for interval in (0.1, 0.05, 0.2, 1.0, 0.25):
        start = 86_400.123456
        s = PollSchedule({"g": interval}, start)
        now = start
        for i in range(2000):
            now += interval * (0.3 + (i * 7919 % 31) / 10)  # 0.3 .. 3.3 intervals later
            previous = s.next_due()[0]
            skipped = s.advance("g", now)
            deadline, _ = s.next_due()
            assert deadline >= now, (interval, i)
            assert deadline > previous
            # Every deadline between the previous one and the new one was counted as skipped.
            assert round((deadline - previous) / interval) == skipped + 1


def test_unknown_group_is_an_error() -> None:
    s = PollSchedule({"g": 1.0}, 0.0)
    with pytest.raises(KeyError):
        s.advance("nope", 1.0)


def test_late_poll_never_schedules_a_deadline_that_already_passed() -> None:
    start, interval = 988.225694, 0.333  # a loop.time()-like start, a 333 ms poll group
    s = PollSchedule({"g": interval}, start)
    deadline_7929 = start + 7929 * interval      # 3628.5826939999997
    now = 3628.582694                              # one ulp after that deadline
    assert now == math.nextafter(deadline_7929, math.inf)
    skipped = s.advance("g", now)
    deadline, _ = s.next_due()
    # Expected: deadlines 1..7929 are all in the past -> 7929 skipped, next is 7930.
    # Actual: skipped == 7928 and next_due() == deadline 7929 == 3628.5826939999997 < now.
    assert deadline > now
    assert skipped == 7929
    assert deadline == start + 7930 * interval


def test_exact_boundary_is_the_same_for_inexact_intervals() -> None:
    start, interval = 1000.0, 0.1
    s = PollSchedule({"g": interval}, start)
    now = start + 3 * interval  # exactly deadline 3 (1000.3)
    skipped = s.advance("g", now)
    deadline, _ = s.next_due()
    # As for interval 1.0 (test_late_poll_counts_missed_deadlines, now=1.0): the next deadline
    # is after now and the deadline at now counts as skipped.
    # Actual: skipped == 2 and next_due() == 1000.3 == now.
    assert deadline > now
    assert (skipped, deadline) == (3, start + 4 * interval)
