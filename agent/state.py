"""Last value of every signal per machine, for the retained `state` topic."""

from __future__ import annotations

import json
from typing import Sequence

from agent.encoding import reading_map
from agent.model import Reading


class StateCache:
    """Collects the latest reading per signal; hands out machines that changed."""

    def __init__(self, agent_id: str) -> None:
        self._agent = agent_id
        self._latest: dict[str, tuple[str, dict[str, Reading]]] = {}
        self._dirty: set[str] = set()

    def update(self, machine: str, topic: str, readings: Sequence[Reading]) -> None:
        entry = self._latest.get(machine)
        if entry is None:
            entry = self._latest[machine] = (topic, {})
        signals = entry[1]
        for r in readings:
            signals[r.signal] = r
        self._dirty.add(machine)

    def mark_all_dirty(self) -> None:
        self._dirty.update(self._latest)

    def take_dirty(self, limit: int) -> list[tuple[str, bytes]]:
        """(topic, payload) of up to `limit` machines whose state changed since they were
        last taken; the others stay pending."""
        out: list[tuple[str, bytes]] = []
        for machine in sorted(self._dirty)[:max(0, limit)]:
            self._dirty.discard(machine)
            topic, signals = self._latest[machine]
            payload = {"agent": self._agent, "machine": machine,
                       "signals": {name: reading_map(r) for name, r in signals.items()}}
            out.append((topic, json.dumps(payload, separators=(",", ":"), allow_nan=False).encode()))
        return out
