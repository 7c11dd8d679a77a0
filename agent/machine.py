"""One machine: its own task, its own connection, its poll groups on drift-free deadlines.

A slow, dead or misbehaving device only ever delays its own task.
"""

from __future__ import annotations

import asyncio
import time
import zlib
from typing import Any, Callable

from agent.backoff import Backoff
from agent.config.loader import MachineConfig
from agent.encoding import PayloadCodec
from agent.model import Batch
from agent.normalize import GroupNormalizer
from agent.schedule import PollSchedule
from agent.state import StateCache
from drivers.base import COMM_FAILURE, RawSample

RECONNECT_MIN, RECONNECT_MAX = 0.5, 30.0


def topic_base(prefix: str, site: str, machine: Any) -> str:
    """{prefix}/{site}/{area}/{line}/{machine} of DESIGN.md's uns profile."""
    return f"{prefix}/{site}/{machine.area}/{machine.line}/{machine.id}"


class MachineRunner:
    """Polls one machine forever; run it under supervision."""

    def __init__(self, machine: MachineConfig, base_topic: str,
                 sink: Callable[[Batch], bool], codec: PayloadCodec, state: StateCache,
                 metrics: Any,
                 log: Any) -> None:
        self.machine = machine
        self.id = machine.id
        self._telemetry_topic = base_topic + "/telemetry"
        self._state_topic = base_topic + "/state"
        self._sink, self._codec, self._state, self._log = sink, codec, state, log
        self._groups = machine.signals_by_group()
        self._intervals = {g: machine.model.poll[g] for g in self._groups}
        self._metrics = metrics
        self.connected = False

    async def run(self) -> None:
        model = self.machine.model
        driver = self.machine.spec.factory(model.connection, self._groups)
        normalizers = {g: GroupNormalizer(s) for g, s in self._groups.items()}
        m = self._metrics
        polls = {g: m.polls.labels(self.id, g) for g in self._groups}
        overruns = {g: m.overruns.labels(self.id, g) for g in self._groups}
        readings_total = m.readings.labels(self.id)
        requests = m.requests.labels(self.id)
        request_counts = {g: driver.request_count(g) for g in self._groups}
        duration, lateness = m.poll_duration.labels(self.id), m.poll_lateness.labels(self.id)
        link = m.machine_connected.labels(self.id)
        bad_counters: dict[str, Any] = {}

        loop = asyncio.get_running_loop()
        # Spread machines over the shortest interval so they do not all poll at once.
        phase = (zlib.crc32(self.id.encode()) % 1000) / 1000 * min(min(self._intervals.values()), 1.0)
        schedule = PollSchedule(self._intervals, loop.time() + phase)
        backoff = Backoff(RECONNECT_MIN, RECONNECT_MAX)
        reconnect_at = 0.0
        last_error: str | None = None
        try:
            while True:
                deadline, group = schedule.next_due()
                delay = deadline - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                started = loop.time()
                lateness.observe(max(0.0, started - deadline))

                if not driver.connected and started >= reconnect_at:
                    try:
                        await driver.connect()
                    except (OSError, asyncio.TimeoutError, ConnectionError) as exc:
                        wait = backoff.next()
                        reconnect_at = loop.time() + wait
                        error = str(exc) or type(exc).__name__
                        if error != last_error:
                            self._log.warning("cannot connect to device", error=error,
                                              retry_in_s=round(wait, 2))
                            last_error = error
                    else:
                        self._log.info("connected to device")
                        last_error = None
                if driver.connected:
                    requests.inc(request_counts[group])
                    samples = await driver.read(group)
                    if not driver.connected:
                        reconnect_at = loop.time() + backoff.next()
                        self._log.warning("device connection lost")
                else:
                    bad = RawSample(None, time.time_ns(), "bad", COMM_FAILURE)
                    samples = [bad] * len(self._groups[group])
                if self.connected != driver.connected:
                    self.connected = driver.connected
                    link.set(1 if self.connected else 0)

                readings = normalizers[group].apply(samples)
                good = False
                for r in readings:
                    if r.reason is None:
                        good = True
                    else:
                        counter = bad_counters.get(r.reason)
                        if counter is None:
                            counter = bad_counters[r.reason] = m.bad_readings.labels(self.id, r.reason)
                        counter.inc()
                if good:
                    backoff.reset()
                if readings:
                    body = self._codec.readings(readings)
                    self._sink(Batch(self.id, self._telemetry_topic, body, len(readings)))
                    self._state.update(self.id, self._state_topic, readings)
                    readings_total.inc(len(readings))

                finished = loop.time()
                duration.observe(finished - started)
                polls[group].inc()
                skipped = schedule.advance(group, finished)
                if skipped:
                    overruns[group].inc(skipped)
        finally:
            await driver.close()
            link.set(0)
