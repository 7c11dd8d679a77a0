"""One machine: its own task, its own connection, its poll groups on drift-free deadlines.

A slow, dead or misbehaving device only ever delays its own task.
"""

from __future__ import annotations

import asyncio
import math
import time
import zlib
from typing import Any

import structlog
from structlog.typing import FilteringBoundLogger as Log

from agent.acquire.derive.engine import Derivations
from agent.acquire.derive.store import CounterStore
from agent.acquire.normalize import GroupNormalizer
from agent.acquire.output import MachineOutput
from agent.acquire.schedule import PollSchedule
from agent.config.loader import MachineConfig
from agent.core.backoff import Backoff
from agent.core.model import Reading
from agent.runtime.metrics import Metrics
from drivers.base import COMM_FAILURE, DeviceEvent, Driver, RawSample, bad_sample

RECONNECT_MIN, RECONNECT_MAX = 0.5, 30.0



class MachineRunner:
    """Polls one machine forever and hands what it reads to `output`; run it under
    supervision."""

    def __init__(self, machine: MachineConfig, output: MachineOutput, metrics: Metrics, log: Log,
                 shared: dict[str, Any], counters: CounterStore | None = None) -> None:
        self.machine = machine
        self.id = machine.id
        self._output, self._log = output, log
        self._groups = machine.signals_by_group()
        self._intervals = {g: machine.model.poll[g] for g in self._groups}
        self._metrics = metrics
        self._shared = shared
        self.connected = False  # the device link, as of the last poll
        self._counters = counters  # derived counters that survive a restart

    async def run(self) -> None:
        # Lines that drivers and libraries log from this task (and the tasks it starts)
        # carry the machine id.
        structlog.contextvars.bind_contextvars(machine=self.id)
        driver = self.machine.spec.factory(self.machine.model.connection, self._groups,
                                           self._intervals, self._shared)
        derivations = Derivations(self.machine.model.derive, self._counters.view(self.id)
                                  if self._counters is not None else None)
        normalizers = {g: GroupNormalizer(s, derivations.watched) for g, s in self._groups.items()}
        output = self._output
        # Write commands run between polls, in this task (agent/writeback/), when enabled.
        inbox = output.started(self.machine, [
            *((s.name, s.transform()[0]) for signals in self._groups.values() for s in signals),
            *derivations.published], self._groups)
        meter = _MachineMeters(self._metrics, self.id, self._groups, driver)
        if hasattr(driver, "request_observer"):  # drivers that time their requests
            driver.request_observer = self._metrics.request_seconds.labels(
                self.id, self.machine.spec.protocol).observe
        link = _Link(driver, self._log)
        loop = asyncio.get_running_loop()
        # Spread machines over the shortest interval so they do not all poll at once.
        phase = (zlib.crc32(self.id.encode()) % 1000) / 1000 * min(min(self._intervals.values()), 1.0)
        schedule = PollSchedule(self._intervals, loop.time() + phase)
        try:
            while True:
                deadline, group = schedule.next_due()
                delay = deadline - loop.time()
                if inbox is not None:
                    await inbox.serve(deadline, driver)  # write commands until the poll is due
                elif delay > 0:
                    await asyncio.sleep(delay)
                started, sampled_ns = loop.time(), time.time_ns()
                meter.lateness.observe(max(0.0, started - deadline))

                events: list[DeviceEvent] = []
                drained = None
                if await link.ready(started):
                    drained = await driver.drain(group)
                    if drained is None:
                        meter.requests.inc(meter.request_counts[group])
                        samples = await driver.read(group)
                        link.check(samples)
                        readings = normalizers[group].apply(samples)
                    else:
                        link.check([sample for _, sample in drained.samples])
                        readings = normalizers[group].apply_sparse(drained.samples)
                        events = drained.events
                else:
                    bad = bad_sample(COMM_FAILURE)
                    readings = normalizers[group].apply([bad] * len(self._groups[group]))
                self.connected = driver.connected
                meter.link.set(1 if self.connected else 0)
                derived, records = derivations.step(normalizers[group].taps, events,
                                                    self.connected, sampled_ns,
                                                    push=drained is not None)
                readings.extend(derived)

                if readings:
                    meter.count(readings)
                    output.readings(self.id, readings, sampled_ns)
                if events or records:
                    records[:0] = [event_record(e) for e in events]
                    output.events(self.id, records, sampled_ns, derivations.last_cycle)

                finished = loop.time()
                meter.duration.observe(finished - started)
                meter.polls[group].inc()
                meter.last_poll.set(time.time())
                skipped = schedule.advance(group, finished)
                if skipped:
                    meter.overruns[group].inc(skipped)
        finally:
            if inbox is not None:
                inbox.close()  # commands still waiting are refused
            await driver.close()
            self.connected = False
            meter.link.set(0)


def event_record(event: DeviceEvent) -> dict[str, Any]:
    """The wire form of one device event: its source, time and fields (JSON-safe)."""
    fields = {name: (None if isinstance(v, float) and not math.isfinite(v) else v)
              for name, v in event.fields.items()}
    return {"event": event.source, "ts": event.ts_ns, "fields": fields}


class _Link:
    """Connection upkeep of one machine: reconnect with capped backoff and jitter, and log
    state changes once rather than on every poll."""

    def __init__(self, driver: Driver, log: Log) -> None:
        self._driver, self._log = driver, log
        self._backoff = Backoff(RECONNECT_MIN, RECONNECT_MAX)
        self._retry_at = 0.0
        self._last_error: str | None = None
        self._up = False

    async def ready(self, now: float) -> bool:
        """Connected, after a reconnect attempt if one is due."""
        if self._driver.connected:
            return True
        if self._up:  # dropped between polls (e.g. the server restarted): say so once
            self._up = False
            self._log.warning("device connection lost")
        if now < self._retry_at:
            return False
        try:
            await self._driver.connect()
        except (OSError, TimeoutError, ConnectionError) as exc:
            wait = self._backoff.next()
            self._retry_at = asyncio.get_running_loop().time() + wait
            error = str(exc) or type(exc).__name__
            if error != self._last_error:
                self._log.warning("cannot connect to device", error=error, retry_in_s=round(wait, 2))
                self._last_error = error
            return False
        self._log.info("connected to device")
        self._last_error = None
        self._up = True
        return True

    def check(self, samples: list[RawSample]) -> None:
        """After a read: a good value resets the backoff; a lost link schedules a retry."""
        if not self._driver.connected:
            self._up = False
            wait = self._backoff.next()
            self._retry_at = asyncio.get_running_loop().time() + wait
            reason = next((s.reason for s in samples if s.reason), None)
            self._log.warning("device connection lost", reason=reason, retry_in_s=round(wait, 2))
        elif any(s.reason is None for s in samples):
            self._backoff.reset()


class _MachineMeters:
    """The metric children of one machine, resolved once."""

    def __init__(self, metrics: Metrics, machine: str, groups: dict[str, list[Any]],
                 driver: Driver) -> None:
        self._m = m = metrics
        self._machine = machine
        self.polls = {g: m.polls.labels(machine, g) for g in groups}
        self.overruns = {g: m.overruns.labels(machine, g) for g in groups}
        self.readings = m.readings.labels(machine)
        self.requests = m.requests.labels(machine)
        self.request_counts = {g: driver.request_count(g) for g in groups}
        self.duration = m.poll_duration.labels(machine)
        self.lateness = m.poll_lateness.labels(machine)
        self.link = m.machine_connected.labels(machine)
        self.last_poll = m.last_poll.labels(machine)
        self._bad: dict[str, Any] = {}

    def count(self, readings: list[Reading]) -> None:
        self.readings.inc(len(readings))
        for r in readings:
            if r.reason is not None:
                counter = self._bad.get(r.reason)
                if counter is None:
                    counter = self._bad[r.reason] = self._m.bad_readings.labels(self._machine, r.reason)
                counter.inc()
