"""Hot-path records: a normalized reading and a batch (one poll of one machine)."""

from __future__ import annotations

from dataclasses import dataclass

from drivers.base import BAD, GOOD, UNCERTAIN, Quality, Value

__all__ = ["BAD", "GOOD", "UNCERTAIN", "Batch", "Quality", "Reading", "event_stream"]


@dataclass(slots=True)
class Reading:
    """One value of one canonical signal, with its quality and source timestamp (ns, UTC)."""

    signal: str
    value: Value
    unit: str | None
    quality: Quality
    reason: str | None
    ts: int


@dataclass(slots=True)
class Batch:
    """One poll of one machine: its readings already encoded; seq is given at commit.

    A machine's events travel as batches too, in a stream of their own (`stream`, with its
    own gap-free seq) under the payload field `events` instead of `readings`."""

    machine: str
    topic: str
    body: bytes  # the encoded readings (or events) array
    count: int  # readings (or events) in it
    sampled_ns: int  # when the poll began (UTC ns): the start of its delivery latency
    stream: str | None = None  # seq series; None: the machine's telemetry
    key: str = "readings"  # payload field that holds `body`


def event_stream(machine: str) -> str:
    """The seq series of a machine's events."""
    return f"{machine}/event"
