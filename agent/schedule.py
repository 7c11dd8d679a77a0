"""Drift-free poll deadlines: the k-th poll of a group is due at start + k * interval."""

from __future__ import annotations

import math


class PollSchedule:
    """Deadlines of every poll group of one machine, on the monotonic clock."""

    def __init__(self, intervals: dict[str, float], start: float) -> None:
        self._intervals = dict(intervals)
        self._start = start
        self._k = {group: 0 for group in intervals}

    def next_due(self) -> tuple[float, str]:
        """(deadline, group) of the earliest pending poll."""
        return min((self._start + self._k[g] * self._intervals[g], g) for g in self._k)

    def advance(self, group: str, now: float) -> int:
        """Move `group` to its next deadline after `now`; returns the deadlines skipped
        (overruns): a late poll is never queued up, it is counted and dropped."""
        interval = self._intervals[group]
        k_next = self._k[group] + 1
        k_now = math.floor((now - self._start) / interval) + 1
        skipped = max(0, k_now - k_next)
        self._k[group] = max(k_next, k_now)
        return skipped
