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
    """One poll of one machine: its readings already encoded; seq is given at commit."""

    machine: str
    topic: str
    body: bytes  # the encoded readings array
    count: int  # readings in it
    sampled_ns: int  # when the poll began (UTC ns): the start of its delivery latency
