"""What decides whether an inbound command may run at all, before any of its content is
looked at: its age, whether it was seen before, and whether its sender is within its rate.

Commands come from a broker anyone on the plant network may publish to. A retained or
replayed message must never run twice or late, and a flood must never take the event loop
or the uplink's window from polling.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from datetime import datetime

# Unix times in ns are >= 1e17 from 1973 on; in ms, 1e11..1e14 spans 1973..5138. Between
# the two nothing is a plausible time, so the unit is never guessed wrong.
_NS_FROM, _MS_FROM, _MS_UNTIL = 1e17, 1e11, 1e14
TS_HELP = ("ts must be the time the command was sent: Unix time in nanoseconds or "
           "milliseconds, or an RFC 3339 text with a zone (2026-12-04T15:03:43.120Z)")


def sent_ns(value: object) -> int:
    """A command's `ts` as Unix nanoseconds; ValueError (with TS_HELP) when it is none."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        if value >= _NS_FROM:
            return int(value)
        if _MS_FROM <= value < _MS_UNTIL:
            return int(value * 1_000_000)
    elif isinstance(value, str) and len(value) <= 40:
        try:
            stamp = datetime.fromisoformat(value)
        except ValueError:
            pass
        else:
            if stamp.tzinfo is not None:
                return int(stamp.timestamp() * 1e9)
    raise ValueError(TS_HELP)


def age_problem(sent: int, max_age: float, now_ns: int | None = None) -> str | None:
    """Why a command sent at `sent` (Unix ns) is too old or from too far ahead; None if fresh."""
    now = time.time_ns() if now_ns is None else now_ns
    age = (now - sent) / 1e9
    if age > max_age:
        return (f"sent {age:.1f} s ago; commands older than write.max_age ({max_age:g} s) "
                "are never executed")
    if -age > max_age:
        return (f"sent {-age:.1f} s in the future: the sender's clock is off by more than "
                f"write.max_age ({max_age:g} s)")
    return None


class TokenBucket:
    """`rate` tokens a second up to `burst`; take() says whether there were enough."""

    __slots__ = ("_rate", "_burst", "_tokens", "_at", "_clock")

    def __init__(self, rate: float, burst: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._rate, self._burst, self._clock = rate, burst, clock
        self._tokens = burst
        self._at = clock()

    def take(self, count: float = 1.0) -> bool:
        now = self._clock()
        self._tokens = min(self._burst, self._tokens + (now - self._at) * self._rate)
        self._at = now
        if self._tokens < count:
            return False
        self._tokens -= count
        return True


class SeenRecently:
    """Keys seen within the last `window` seconds, at most `limit` of them (oldest go first).

    With commands older than max_age refused anyway, a window of twice max_age (past and
    future clock skew) is all a replay can use; the per-machine rate bounds how many keys
    can arrive in it, `limit` bounds the memory even so.
    """

    def __init__(self, window: float, limit: int = 100_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._window, self._limit, self._clock = window, limit, clock
        self._seen: OrderedDict[Hashable, float] = OrderedDict()

    def first_time(self, key: Hashable) -> bool:
        """True the first time `key` comes within the window; remembers it."""
        now = self._clock()
        seen = self._seen
        while seen:
            oldest, at = next(iter(seen.items()))
            if now - at <= self._window and len(seen) < self._limit:
                break
            del seen[oldest]
        if key in seen:
            return False
        seen[key] = now
        return True
