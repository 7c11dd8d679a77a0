"""Our readings as Sparkplug metrics: a datatype fixed per metric by its birth, aliases
unique across the node and its devices, quality as the metric's `Quality` property."""

from __future__ import annotations

import json
import math
from typing import Any

from agent.signals import vocabulary
from agent.core.model import GOOD, UNCERTAIN, Reading
from agent.publish.sparkplug.codec import Metric
from agent.publish.sparkplug.datatypes import DataType, datatype_of

# Sparkplug 3.0 quality codes (the only valid ones): an uncertain reading keeps its value
# and is published as STALE.
QUALITY_GOOD, QUALITY_STALE, QUALITY_BAD = 192, 500, 0
EVENTS = "Events"  # a device's event records (cycles, alarms), one JSON text per record

_BY_TERM_TYPE = {"number": DataType.Double, "integer": DataType.Int64,
                 "boolean": DataType.Boolean, "string": DataType.String,
                 "enum": DataType.String}


class Catalog:
    """Datatype and alias of every metric born in this session."""

    def __init__(self, aliases: bool) -> None:
        self._use_aliases = aliases
        self._entries: dict[tuple[str | None, str], tuple[DataType, int | None]] = {}
        self._next_alias = 1
        self._last: dict[tuple[str | None, str], tuple[Any, str]] = {}  # value, quality sent

    def entry(self, device: str | None, name: str, value: Any) -> tuple[DataType, int | None]:
        """The metric's datatype and alias, fixed the first time it is seen."""
        key = (device, name)
        known = self._entries.get(key)
        if known is None:
            known = (_datatype(name, value), self._alias())
            self._entries[key] = known
        return known

    def name_of(self, device: str | None, alias: int | None) -> str | None:
        """The metric name behind an alias of `device` (commands may use aliases)."""
        if alias is None:
            return None
        return next((name for (dev, name), (_, a) in self._entries.items()
                     if dev == device and a == alias), None)

    def _alias(self) -> int | None:
        if not self._use_aliases:
            return None
        alias, self._next_alias = self._next_alias, self._next_alias + 1
        return alias

    def changed(self, device: str | None, name: str, value: Any, quality: str) -> bool:
        """Whether live data has news of this metric: a value or quality other than the
        last one sent (data carries changed metrics only)."""
        last = self._last.get((device, name))
        return last is None or last[1] != quality or last[0] != value \
            or type(last[0]) is not type(value)

    def metric(self, device: str | None, name: str, value: Any, ts_ms: int | None, *,
               birth: bool = False, historical: bool = False,
               quality: str = GOOD) -> Metric:
        """One metric of a birth (name and alias) or of data (the alias alone, if any)."""
        datatype, alias = self.entry(device, name, value)
        if not historical:
            self._last[(device, name)] = (value, quality)
        properties = None
        if quality != GOOD:
            code = QUALITY_STALE if quality == UNCERTAIN else QUALITY_BAD
            properties = {"Quality": (DataType.Int32, code)}
        return Metric(name if birth or alias is None else None, coerce(value, datatype),
                      datatype, ts_ms, alias, historical, properties)

    def reading(self, device: str, r: Reading, *, birth: bool = False,
                historical: bool = False) -> Metric:
        """A reading as a metric: value, source time in ms, quality."""
        return self.metric(device, r.signal, r.value, r.ts // 1_000_000, birth=birth,
                           historical=historical, quality=r.quality)


def _datatype(name: str, value: Any) -> DataType:
    if name == EVENTS:
        return DataType.String
    term = vocabulary.lookup(name)
    if term is not None and term.type in _BY_TERM_TYPE:
        return _BY_TERM_TYPE[term.type]
    found = datatype_of(value)
    return DataType.String if found == DataType.Unknown else found


def coerce(value: Any, datatype: DataType) -> Any:
    """`value` in the metric's datatype; None (is_null) when it cannot be."""
    if value is None:
        return None
    if datatype == DataType.Double:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return None
        return float(value)
    if datatype in (DataType.Int64, DataType.UInt64):
        if isinstance(value, float) and math.isfinite(value) and value.is_integer():
            return int(value)
        return value if isinstance(value, int) and not isinstance(value, bool) else None
    if datatype == DataType.Boolean:
        return value if isinstance(value, bool) else None
    if datatype == DataType.String:
        return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
    return value


def event_text(record: dict[str, Any]) -> str:
    """One event record as the text of the Events metric."""
    return json.dumps(record, separators=(",", ":"), allow_nan=False, default=str)
