"""Cycle detection and per-cycle features: one record per machine cycle (a stroke, a
shot, a part), from a counter, a state edge or a device event."""

from __future__ import annotations

from typing import Any, Mapping

from agent.config.derive import CycleConfig
from agent.acquire.derive.counters import NS, Unwrapper
from agent.acquire.derive.execution import matches

CYCLE = "machine.cycle"


class _Window:
    """One feature's view of the current cycle: its value at the start, extremes, area."""

    __slots__ = ("start", "lo", "hi", "area", "value", "since", "opened")

    def __init__(self) -> None:
        self.open(None, 0)

    def open(self, value: Any, ts: int) -> None:
        self.start = self.value = value
        numeric = _numeric(value)
        self.lo = self.hi = value if numeric else None
        self.area = 0.0
        self.since = self.opened = ts

    def add(self, value: Any, ts: int) -> None:
        if _numeric(self.value) and ts > self.since:
            self.area += self.value * (ts - self.since)
        if _numeric(value):
            self.lo = value if self.lo is None else min(self.lo, value)
            self.hi = value if self.hi is None else max(self.hi, value)
        self.value, self.since = value, ts

    def result(self, take: str, end: int) -> Any:
        if take == "end":
            return self.value
        if take == "start":
            return self.start
        if take == "max":
            return self.hi
        if take == "min":
            return self.lo
        if take == "delta":
            if _numeric(self.value) and _numeric(self.start):
                return _tidy(self.value - self.start)
            return None
        # mean, weighted by how long each value held
        span = end - self.opened
        if not _numeric(self.value):
            return None
        area = self.area + self.value * max(0, end - self.since)
        return _tidy(area / span) if span > 0 else self.value


class CycleDetector:
    """Turns the readings and events of one machine into cycle records."""

    def __init__(self, config: CycleConfig) -> None:
        trigger = config.trigger
        self._counter = trigger.counter
        self._unwrap = Unwrapper(trigger.rollover)
        self._edge = trigger.signal
        self._to = (trigger.to if isinstance(trigger.to, list) else [trigger.to])
        self._event = trigger.event
        self._features = list(config.features.items())
        self._windows = {f.signal: _Window() for _, f in self._features if f.signal is not None}
        self.inputs = frozenset(
            [n for n in (self._counter, self._edge) if n is not None] + list(self._windows))
        self._edge_value: Any = None
        self._number = 0  # for edge and event triggers: cycles since the agent started
        self._start: int | None = None  # when the current cycle began; None: not seen

    def update(self, name: str, value: Any, ts: int) -> None:
        """A feature signal's new value (None while bad)."""
        window = self._windows.get(name)
        if window is not None:
            window.add(value, ts)

    def check(self, latest: Mapping[str, Any], ts: int) -> dict[str, Any] | None:
        """After a step's readings: the record of a cycle that just ended, if one did."""
        if self._counter is not None:
            raw = latest.get(self._counter)
            if type(raw) is not int and not (type(raw) is float and raw.is_integer()):
                return None
            raw = int(raw)
            if raw == self._unwrap.raw:
                return None
            step = self._unwrap.step(raw)
            if not step:  # the first value, or a reset to 0
                self._restart(ts)
                return None
            return self._close(raw, ts, step)
        if self._edge is not None:
            value = latest.get(self._edge)
            before, self._edge_value = self._edge_value, value
            if value is None or value == before or not matches(value, self._to):
                return None
            if before is None:  # first value after a start or an outage: a baseline
                self._restart(ts)
                return None
            self._number += 1
            return self._close(self._number, ts, 1)
        return None

    def on_event(self, source: str, fields: Mapping[str, Any], ts: int) -> dict[str, Any] | None:
        """A device event; the record of the cycle it ends, if it is the trigger."""
        if source != self._event:
            return None
        self._number += 1
        return self._close(self._number, ts, 1, fields)

    def _restart(self, ts: int) -> None:
        self._start = None
        for window in self._windows.values():
            window.open(window.value, ts)

    def _close(self, number: int, end: int, count: int,
               fields: Mapping[str, Any] | None = None) -> dict[str, Any]:
        features = {}
        for key, feature in self._features:
            if feature.field is not None:
                features[key] = (fields or {}).get(feature.field)
            else:
                features[key] = self._windows[feature.signal].result(  # type: ignore[index]
                    feature.take, end)
        start = self._start
        record: dict[str, Any] = {
            "cycle": number, "start": start, "end": end,
            "cycle_time": None if start is None else round((end - start) / NS, 3),
        }
        if count > 1:  # cycles that ended while nobody looked: one record stands for them
            record["missed"] = count - 1
        record["features"] = features
        self._start = end
        for window in self._windows.values():
            window.open(window.value, end)
        return {"event": CYCLE, "ts": end, "fields": record}


def _numeric(value: Any) -> bool:
    return type(value) is int or type(value) is float


def _tidy(value: float) -> float:
    return round(value, 9)
