"""All derivations of one machine, fed each poll: derived readings and event records."""

from __future__ import annotations

from typing import Any, Iterable, Sequence

from agent.acquire.derive.counters import NS, MonotonicCount, RateMeter
from agent.acquire.derive.cycles import CycleDetector
from agent.acquire.derive.execution import ExecutionMapper
from agent.acquire.derive.store import CounterView
from agent.config.derive import AVAILABILITY, AVAILABLE, EXECUTION, UNAVAILABLE, DeriveConfig
from agent.core.model import BAD, GOOD, Quality, Reading
from agent.signals import vocabulary
from drivers.base import COMM_FAILURE, DeviceEvent

INPUTS_BAD = "inputs_bad"  # a derived value whose signals have no good value


class _Published:
    """Report by exception for one derived value: on change, and once per heartbeat."""

    __slots__ = ("name", "unit", "value", "quality", "sent")

    def __init__(self, name: str) -> None:
        self.name = name
        self.unit = published_unit(name)
        self.value: Any = None
        self.quality: Quality | None = None
        self.sent = 0

    def offer(self, value: Any, ts: int, heartbeat: int, out: list[Reading],
              reason: str | None = None) -> None:
        """None is a bad value, for `reason` (that of the inputs, when they have one)."""
        quality: Quality = GOOD if value is not None else BAD
        if value == self.value and quality == self.quality and ts - self.sent < heartbeat:
            return
        self.value, self.quality, self.sent = value, quality, ts
        out.append(Reading(self.name, value, self.unit, quality,
                           None if value is not None else reason or INPUTS_BAD, ts))


class Derivations:
    """Machine state, cycles, rates and counters of one machine."""

    def __init__(self, config: DeriveConfig, store: CounterView | None = None) -> None:
        self._heartbeat = int(config.heartbeat * NS)
        self._availability = _Published(AVAILABILITY) if config.availability else None
        self._execution = ExecutionMapper(config.execution) if config.execution else None
        self._execution_out = _Published(EXECUTION)
        self._cycles = CycleDetector(config.cycle) if config.cycle else None
        self._rates = [(_Published(name), RateMeter(rate.window, rate.rollover), rate.counter)
                       for name, rate in config.rates.items()]
        # Why a rate's counter has no good value now (None: it has one): a rate is only as
        # good as its input, and a stopped device is not a machine running at 0 a minute.
        self._rate_inputs: dict[str, str | None] = {signal: None for _, _, signal in self._rates}
        self._store = store
        self._counters = [(_Published(name), MonotonicCount(
            c.rollover, store.get(name) if store is not None else None), c.counter)
            for name, c in config.counters.items()]
        # Per counter signal, what it feeds: looked up once per reading.
        self._meters: dict[str, list[RateMeter]] = {}
        for _, meter, signal in self._rates:
            self._meters.setdefault(signal, []).append(meter)
        self._counts: dict[str, list[tuple[_Published, MonotonicCount]]] = {}
        for published, count, signal in self._counters:
            self._counts.setdefault(signal, []).append((published, count))
        watched = set(self._meters) | set(self._counts)
        if self._execution is not None:
            watched |= self._execution.inputs
        if self._cycles is not None:
            watched |= self._cycles.inputs
        self.watched = frozenset(watched)
        self.published = [(p.name, p.unit) for p in (
            *([self._availability] if self._availability else []),
            *([self._execution_out] if self._execution else []),
            *(p for p, _, _ in self._rates), *(p for p, _, _ in self._counters))]
        self._latest: dict[str, Any] = {}
        self.last_cycle: dict[str, Any] | None = None

    def step(self, taps: Sequence[Reading], events: Sequence[DeviceEvent], connected: bool,
             ts: int, push: bool) -> tuple[list[Reading], list[dict[str, Any]]]:
        """One poll: the watched readings before report by exception (`taps`), the device
        events, whether the device answers. A push group's readings are taken in arrival
        order, one instant at a time; a polled group's as one snapshot."""
        out: list[Reading] = []
        records: list[dict[str, Any]] = []
        steps: Iterable[tuple[int, Sequence[Reading]]] = (
            _instants(taps) if push else [(ts, taps)] if taps else [])
        pending = sorted(events, key=lambda e: e.ts_ns)
        for instant, readings in steps:
            while pending and pending[0].ts_ns < instant:
                self._event(pending.pop(0), records)
            self._readings(readings, instant, out, records)
        for event in pending:
            self._event(event, records)
        if self._availability is not None:
            self._availability.offer(AVAILABLE if connected else UNAVAILABLE, ts,
                                     self._heartbeat, out)
        for published, meter, signal in self._rates:
            bad_input = self._rate_inputs[signal]
            if bad_input is not None or not connected:
                published.offer(None, ts, self._heartbeat, out, bad_input or COMM_FAILURE)
                continue
            rate = meter.rate(ts)
            if rate is not None:  # unknown until a second increment: nothing to say yet
                published.offer(rate, ts, self._heartbeat, out)
        return out, records

    def _readings(self, readings: Sequence[Reading], ts: int, out: list[Reading],
                  records: list[dict[str, Any]]) -> None:
        latest = self._latest
        cycles = self._cycles
        for r in readings:
            value = r.value if r.quality != BAD else None
            before = latest.get(r.signal)
            latest[r.signal] = value
            resets = self._resets(r.signal)
            if cycles is not None:
                cycles.update(r.signal, value, r.ts)
            meters = self._meters.get(r.signal)
            if meters is not None:
                good = _integral(value)
                was_bad = self._rate_inputs[r.signal] is not None
                self._rate_inputs[r.signal] = None if good else r.reason or INPUTS_BAD
                for meter in meters:
                    if good:
                        if was_bad:
                            meter.rebase()
                        meter.update(int(value), r.ts)  # type: ignore[arg-type]
            for published, count in self._counts.get(r.signal, ()):
                total = count.update(int(value)) if _integral(value) else None  # type: ignore[arg-type]
                published.offer(total, r.ts, self._heartbeat, out, r.reason)
                if total is not None and self._store is not None:
                    self._store.put(published.name, count.raw, total)  # type: ignore[arg-type]
            if resets is not None and self._resets(r.signal) != resets:
                # Counted as a reset, not as strokes: said once, on the event stream.
                records.append({"event": "counter.reset", "ts": r.ts,
                                "fields": {"signal": r.signal, "from": before, "to": value}})
        if cycles is not None:
            record = cycles.check(latest, ts)
            if record is not None:
                self._cycle(record, records)
        execution = self._execution
        # Evaluated when one of its inputs was read: never from inputs not read yet.
        if execution is not None and any(r.signal in execution.inputs for r in readings):
            state = execution.evaluate(latest)
            before = self._execution_out.value
            reason = next((r.reason for r in readings
                           if r.signal in execution.inputs and r.quality == BAD), None)
            self._execution_out.offer(state, ts, self._heartbeat, out, reason)
            if state is not None and state != before:
                records.append({"event": "machine.execution", "ts": ts,
                                "fields": {"from": before, "to": state}})

    def _resets(self, signal: str) -> int | None:
        """How often the counter `signal` dropped without wrapping; None: not a counter."""
        meters, counts = self._meters.get(signal), self._counts.get(signal)
        if meters is None and counts is None:
            return None
        return max([m.resets for m in meters or ()] + [c.resets for _, c in counts or ()])

    def _event(self, event: DeviceEvent, records: list[dict[str, Any]]) -> None:
        if self._cycles is not None:
            record = self._cycles.on_event(event.source, event.fields, event.ts_ns)
            if record is not None:
                self._cycle(record, records)

    def _cycle(self, record: dict[str, Any], records: list[dict[str, Any]]) -> None:
        self.last_cycle = record["fields"]
        records.append(record)


def published_unit(name: str) -> str | None:
    """The unit a derived value is published in: the vocabulary's."""
    term = vocabulary.lookup(name)
    return term.unit if term is not None else None


def _instants(readings: Sequence[Reading]) -> Iterable[tuple[int, Sequence[Reading]]]:
    """Runs of readings that share a timestamp (one device event, one notification)."""
    start = 0
    for i in range(1, len(readings) + 1):
        if i == len(readings) or readings[i].ts != readings[start].ts:
            yield readings[start].ts, readings[start:i]
            start = i


def _integral(value: Any) -> bool:
    return type(value) is int or (type(value) is float and value.is_integer())
