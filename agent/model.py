"""Hot-path records: a normalized reading and a batch (one poll of one machine)."""

from __future__ import annotations

from dataclasses import dataclass

from drivers.base import Value

GOOD, UNCERTAIN, BAD = "good", "uncertain", "bad"


@dataclass(slots=True)
class Reading:
    """One value of one canonical signal, with its quality and source timestamp (ns, UTC)."""

    signal: str
    value: Value
    unit: str | None
    quality: str
    reason: str | None
    ts: int


@dataclass(slots=True)
class Batch:
    """The readings one poll of one machine produced; seq is given when committed."""

    machine: str
    topic: str
    readings: list[Reading]
