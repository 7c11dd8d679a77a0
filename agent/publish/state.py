"""The twin state of every machine, for its retained `state` topic: the last value, quality
and timestamp of every signal (derived ones included) and the last cycle.

A machine is republished only when something in it changed (a value, a quality, a cycle),
never because a poll repeated what was already known; each signal's `ts` is when it took
its current value.
"""

from __future__ import annotations

import json
import time
from typing import Any, Iterable, Sequence

from agent.core.encoding import reading_map
from agent.core.model import UNCERTAIN, Reading

NO_DATA = "no_data_yet"


class _Twin:
    __slots__ = ("topic", "signals", "cycle")

    def __init__(self, topic: str) -> None:
        self.topic = topic
        self.signals: dict[str, Reading] = {}
        self.cycle: dict[str, Any] | None = None


class StateCache:
    """Collects the latest reading per signal; hands out machines that changed."""

    def __init__(self, agent_id: str) -> None:
        self._agent = agent_id
        self._twins: dict[str, _Twin] = {}
        self._dirty: set[str] = set()
        # State topics of machines no longer configured: an empty retained message clears
        # each from the broker, so no twin sees a removed machine forever.
        self._cleared: set[str] = set()

    def register(self, machine: str, topic: str, signals: Iterable[tuple[str, str | None]]) -> None:
        """Every signal of a machine (name, unit), so the state lists all of them from the
        start: `uncertain` with reason no_data_yet until a first value arrives."""
        old = self._twins.get(machine)
        twin = self._twins[machine] = _Twin(topic)
        # A machine restarted by a reload keeps what is known of the signals it still has.
        known = old.signals if old is not None and old.topic == topic else {}
        now = time.time_ns()
        for name, unit in signals:
            last = known.get(name)
            twin.signals[name] = (last if last is not None and last.unit == unit
                                  else Reading(name, None, unit, UNCERTAIN, NO_DATA, now))

    def update(self, machine: str, readings: Sequence[Reading]) -> None:
        """Readings of a registered machine; only changes mark it for publishing."""
        twin = self._twins.get(machine)
        if twin is None:
            return
        signals = twin.signals
        changed = False
        for r in readings:
            last = signals.get(r.signal)
            if (last is None or last.value != r.value or last.quality != r.quality
                    or last.reason != r.reason or type(last.value) is not type(r.value)):
                signals[r.signal] = r
                changed = True
        if changed:
            self._dirty.add(machine)

    def cycle(self, machine: str, record: dict[str, Any]) -> None:
        """The machine's last cycle record."""
        twin = self._twins.get(machine)
        if twin is not None and twin.cycle is not record:
            twin.cycle = record
            self._dirty.add(machine)

    def forget(self, machine: str) -> str | None:
        """A machine no longer configured: its retained state is cleared (the topic)."""
        twin = self._twins.pop(machine, None)
        self._dirty.discard(machine)
        if twin is None:
            return None
        self._cleared.add(twin.topic)
        return twin.topic

    def signals(self, machine: str) -> list[Reading]:
        """The last reading of every signal of a machine, in config order."""
        twin = self._twins.get(machine)
        return list(twin.signals.values()) if twin is not None else []

    def mark_all_dirty(self) -> None:
        self._dirty.update(self._twins)

    def take_dirty(self, limit: int) -> list[tuple[str, bytes]]:
        """(topic, payload) of up to `limit` machines whose state changed since they were
        last taken (an empty payload clears a removed machine's); the others stay pending."""
        out: list[tuple[str, bytes]] = []
        while self._cleared and len(out) < limit:
            out.append((self._cleared.pop(), b""))
        for machine in sorted(self._dirty)[:max(0, limit - len(out))]:
            self._dirty.discard(machine)
            twin = self._twins[machine]
            payload: dict[str, Any] = {
                "agent": self._agent, "machine": machine,
                "signals": {name: reading_map(r) for name, r in twin.signals.items()}}
            if twin.cycle is not None:
                payload["cycle"] = twin.cycle
            out.append((twin.topic, json.dumps(payload, separators=(",", ":"),
                                               allow_nan=False).encode()))
        return out
