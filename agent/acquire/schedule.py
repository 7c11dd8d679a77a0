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
        interval, start = self._intervals[group], self._start
        k_next = self._k[group] + 1
        # The first deadline strictly after `now`; the division only guesses, since float
        # rounding can put it one step off either way, and the comparisons settle it.
        k = max(k_next, math.floor((now - start) / interval) + 1)
        while start + k * interval <= now:
            k += 1
        while k > k_next and start + (k - 1) * interval > now:
            k -= 1
        self._k[group] = k
        return k - k_next
