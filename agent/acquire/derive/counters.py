"""Device counters: unwrapping a counter that rolls over, and a rate per minute from one."""

from __future__ import annotations

from collections import deque

NS = 1_000_000_000


class Unwrapper:
    """Turns a device counter into steps of a monotonic count.

    With `rollover`, a drop from the top quarter of the range into the bottom quarter is a
    wrap. Any other drop is a reset (an operator zeroed it, a new job started, the device
    restarted from an older saved value): it adds nothing, is counted in `resets`, and
    counting goes on from the new value. Taking the new value itself as the step would turn
    a device that restarts a few counts back into millions of strokes in one poll.
    """

    __slots__ = ("rollover", "raw", "resets")

    def __init__(self, rollover: int | None) -> None:
        self.rollover = rollover
        self.raw: int | None = None
        self.resets = 0

    def step(self, raw: int) -> int | None:
        """Counts added since the previous value; None for the first value (a baseline)."""
        last, self.raw = self.raw, raw
        if last is None:
            return None
        if raw >= last:
            return raw - last
        top = self.rollover
        if top is not None and last >= top * 3 // 4 and raw < top // 4:
            return raw + top - last
        self.resets += 1
        return 0


class MonotonicCount:
    """A count that only goes up, from a device counter that may wrap or be reset."""

    __slots__ = ("_unwrap", "total")

    def __init__(self, rollover: int | None, saved: tuple[int, int] | None = None) -> None:
        self._unwrap = Unwrapper(rollover)
        self.total: int | None = None
        if saved is not None:  # (device value, total) from before a restart
            self._unwrap.raw, self.total = saved

    @property
    def raw(self) -> int | None:
        """The last device value."""
        return self._unwrap.raw

    @property
    def resets(self) -> int:
        """Drops of the device counter that were not wraps."""
        return self._unwrap.resets

    def update(self, raw: int) -> int:
        """The count after this device value (the first value is taken as it is)."""
        step = self._unwrap.step(raw)
        self.total = raw if self.total is None or step is None else self.total + step
        return self.total


class RateMeter:
    """Increments per minute of a counter, averaged over the increments within `window`.

    Unknown (None) until two increments were seen; 0 once no increment came for twice the
    recent interval (at least one second) or for a whole window.
    """

    def __init__(self, window_s: float, rollover: int | None) -> None:
        self._window = int(window_s * NS)
        self._unwrap = Unwrapper(rollover)
        self._total = 0
        self._marks: deque[tuple[int, int]] = deque()  # (ts, total) at each increment
        self._since: int | None = None  # first value seen

    @property
    def resets(self) -> int:
        """Drops of the device counter that were not wraps."""
        return self._unwrap.resets

    def rebase(self) -> None:
        """The counter could not be read for a while: forget what came before, so that a
        rate after the gap is not averaged over it (the next value is a new baseline)."""
        self._marks.clear()
        self._unwrap.raw = None
        self._since = None

    def update(self, raw: int, ts: int) -> None:
        """Feed one counter value read at `ts` (ns)."""
        step = self._unwrap.step(raw)
        if step is None:
            self._since = ts
        elif step > 0:
            self._total += step
            self._marks.append((ts, self._total))
        while len(self._marks) > 2 and self._marks[0][0] < ts - self._window:
            self._marks.popleft()

    def rate(self, now: int) -> float | None:
        """Per minute as of `now` (ns)."""
        marks = self._marks
        if len(marks) >= 2:
            (t0, n0), (t1, n1) = marks[0], marks[-1]
            interval = (t1 - t0) / (n1 - n0)
            if now - t1 > max(2 * interval, NS) or now - t1 > self._window:
                return 0.0
            return round((n1 - n0) * 60 * NS / (t1 - t0), 3)
        last = marks[-1][0] if marks else self._since
        if last is not None and now - last > self._window:
            return 0.0
        return None
