"""What the Sparkplug profile buffers: each poll encoded once, when it is collected, as a
compact record the session publishes from (agent/app.py's FanOut encodes with it, the
buffer frames it).

A record is the buffer's msgpack frame ({agent, machine, epoch, seq, readings|events}, so
`buffer stats` and `buffer recover` read it like any batch) around arrays of tuples:
readings as [signal, value, quality, ts_ns], events as [text of the Events metric, ts_ns].
Publishing reads it with one msgpack unpack: no JSON, no map per reading, no topic to parse
for the device. Which metrics go into a DDATA (only those that changed since the last one
sent), their aliases and the historical flag depend on the session, so the protobuf is made
when publishing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import msgpack

from agent.core.encoding import PayloadCodec, decode
from agent.core.model import Reading
from agent.publish.sparkplug.metrics import event_text

ReadingTuple = tuple[str, Any, str, int]  # signal, value, quality, ts_ns
EventTuple = tuple[str, int]  # text, ts_ns


class SparkplugRecords:
    """The batch codec of the Sparkplug profile (readings, events, frame)."""

    def __init__(self, agent_id: str) -> None:
        self._frame = PayloadCodec(agent_id, "msgpack").frame

    def readings(self, readings: Sequence[Reading]) -> bytes:
        return msgpack.packb([(r.signal, r.value, r.quality, r.ts) for r in readings])  # type: ignore[no-any-return]

    def events(self, records: Sequence[Mapping[str, Any]]) -> bytes:
        return msgpack.packb([(event_text(dict(rec)), int(rec.get("ts") or 0))  # type: ignore[no-any-return]
                              for rec in records])

    def frame(self, machine: str, epoch: str, seq: int, body: bytes,
              key: str = "readings") -> bytes:
        return self._frame(machine, epoch, seq, body, key)


def read(payload: bytes) -> tuple[str, list[ReadingTuple], list[EventTuple]]:
    """(machine, readings, events) of a buffered batch. A batch buffered under the uns profile
    (JSON or msgpack maps, before a switch of profile) reads the same. ValueError if it is
    none of these."""
    try:
        doc = decode(payload)
        machine = doc["machine"]
        readings = [tuple(r) if isinstance(r, list) else
                    (r["signal"], r.get("value"), r.get("quality", "good"), int(r["ts"]))
                    for r in doc.get("readings") or []]
        events = [tuple(e) if isinstance(e, list) else (event_text(e), int(e.get("ts") or 0))
                  for e in doc.get("events") or []]
    except (ValueError, KeyError, TypeError, AttributeError, msgpack.UnpackException) as exc:
        raise ValueError(f"not a buffered batch: {exc}") from None
    if not isinstance(machine, str):
        raise ValueError("not a buffered batch: no machine")
    return machine, readings, events
