"""The one place that wires the stages of docs/architecture.md: machine runners
(agent/acquire) -> one fan-out -> the buffer (agent/buffer), the twin state and write-back
(agent/writeback) -> the uplink of the configured profile (agent/publish); runtime services
(health, metrics, systemd) around them."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from structlog.typing import FilteringBoundLogger as Log

from agent.acquire.derive.store import CounterStore
from agent.acquire.output import CommandInbox
from agent.acquire.runner import MachineRunner
from agent.buffer.store import Buffer, buffer_path
from agent.config.files import mqtt_password
from agent.config.loader import ConfigInvalid, LoadedConfig, MachineConfig, load_config
from agent.config.models import AgentFile
from agent.core.encoding import BatchCodec, PayloadCodec
from agent.core.model import Batch, Reading, event_stream
from agent.core.supervise import supervise
from agent.core.topics import topic_base
from agent.publish.state import StateCache
from agent.publish.uns import UnsProfile
from agent.publish.uplink import Profile, Uplink
from agent.runtime.health import Health
from agent.runtime.http_server import listen_is_loopback
from agent.runtime.logs import get_logger
from agent.runtime.metrics import Metrics
from agent.runtime.sd_notify import ServiceNotify
from agent.writeback.commands import CommandHub
from drivers.registry import DRIVERS


class FanOut:
    """Where every runner's results go (agent/acquire/output.py MachineOutput): encoded once
    into a batch for the buffer, and into the twin state; write-back's inbox for a runner."""

    def __init__(self, cfg: AgentFile, buffer: Buffer, codec: BatchCodec, state: StateCache,
                 commands: CommandHub) -> None:
        self._prefix, self._site = cfg.mqtt.topic_prefix, cfg.agent.site
        self._append, self._codec, self._state, self._commands = (
            buffer.append, codec, state, commands)
        self._topics: dict[str, tuple[str, str]] = {}  # machine -> (telemetry, event) topic

    def started(self, machine: MachineConfig, signals: Sequence[tuple[str, str | None]],
                groups: Mapping[str, Sequence[Any]]) -> CommandInbox | None:
        base = topic_base(self._prefix, self._site, machine.model)
        self._topics[machine.id] = (base + "/telemetry", base + "/event")
        self._state.register(machine.id, base + "/state", signals)
        hub = self._commands
        return hub.attach(machine, groups) if hub.enabled else None

    def readings(self, machine: str, readings: list[Reading], sampled_ns: int) -> None:
        self._append(Batch(machine, self._topics[machine][0], self._codec.readings(readings),
                           len(readings), sampled_ns))
        self._state.update(machine, readings)

    def events(self, machine: str, records: list[dict[str, Any]], sampled_ns: int,
               cycle: dict[str, Any] | None) -> None:
        self._append(Batch(machine, self._topics[machine][1], self._codec.events(records),
                           len(records), sampled_ns, event_stream(machine), "events"))
        if cycle is not None:
            self._state.cycle(machine, cycle)


class Agent:
    """One running agent; `run()` returns after a graceful stop."""

    def __init__(self, config: LoadedConfig, state_dir: Path | None = None) -> None:
        self.config = config
        self.failed = False  # set when a fatal error, not a stop request, ended the run
        self.metrics = Metrics()
        self.log = get_logger(agent=config.agent.agent.id)
        cfg = config.agent
        # Before the event loop: the one blocking read of the password (SecretError, a
        # ValueError, stops the start with exit code 2).
        self.password = mqtt_password(cfg.mqtt, config.root).read()
        self.state = StateCache(cfg.agent.id)
        # Each profile's batches are encoded once, as that profile publishes them.
        codec: BatchCodec = PayloadCodec(cfg.agent.id, cfg.mqtt.encoding)
        if cfg.mqtt.profile == "sparkplug":
            from agent.publish.sparkplug.record import SparkplugRecords
            codec = SparkplugRecords(cfg.agent.id)
        self.buffer = Buffer(
            buffer_path(config.root, cfg.buffer.path, state_dir), cfg.buffer.max_bytes,
            cfg.buffer.commit_interval, codec,
            get_logger(component="buffer"), self.metrics, owner=cfg.agent.id)
        log = get_logger(component="uplink")
        profile = self._profile(self.buffer.path.parent, log)
        self.uplink = Uplink(cfg.mqtt, cfg.agent, self.buffer, profile, self.metrics, log,
                             self.password, config.root)
        self.counters = CounterStore(self.buffer.path.parent / "counters.json")
        # Write-back commands (off unless write.enabled): routed from the uplink to machines.
        self.commands = CommandHub(cfg, self.metrics, get_logger(component="write"))
        profile.commands = self.commands
        self.commands.on_reply = self.uplink.notify
        # Connections machines share (a serial bus with several units), by the drivers' keys.
        self.shared: dict[str, Any] = {}
        self.metrics.watch_buses(self.shared)
        self.output = FanOut(cfg, self.buffer, codec, self.state, self.commands)
        self.machines = [self._runner(m) for m in config.machines if m.model.enabled]
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._reload = asyncio.Event()
        self.health = Health(self.metrics, self.buffer, self.uplink,
                             lambda: [(r.id, r.connected) for r in self.machines])
        if isinstance(profile, UnsProfile):
            profile.summary = self.health.facts  # the retained status carries them

    def _profile(self, state_dir: Path, log: Log) -> Profile:
        """The payload contract of mqtt.profile."""
        cfg = self.config.agent
        sparkplug = cfg.mqtt.sparkplug
        if cfg.mqtt.profile == "sparkplug" and sparkplug is not None:
            from agent.publish.sparkplug.session import SparkplugProfile
            return SparkplugProfile(sparkplug, cfg.agent, self.state, self.metrics, log,
                                    state_dir, lambda: [r.id for r in self.machines])
        return UnsProfile(cfg.mqtt, cfg.agent, self.state, log)

    def _runner(self, machine: MachineConfig) -> MachineRunner:
        return MachineRunner(machine, self.output, self.metrics, get_logger(machine=machine.id),
                             self.shared, counters=self.counters)

    def _start(self, runner: MachineRunner) -> None:
        self._tasks[runner.id] = asyncio.create_task(
            supervise(f"machine:{runner.id}", runner.run, self.log.bind(machine=runner.id)),
            name=f"machine:{runner.id}")

    def request_reload(self) -> None:
        """SIGHUP: read the config folder again at the next opportunity."""
        self._reload.set()

    async def _apply_reload(self) -> None:
        """Unchanged machines keep polling without a gap; changed ones restart; removed ones
        stop; new ones start. An invalid config changes nothing: every error is logged."""
        self._reload.clear()
        root = self.config.root
        try:
            new = await asyncio.to_thread(load_config, root, DRIVERS)
        except ConfigInvalid as exc:
            for error in exc.errors:
                self.log.error("reload refused: config error", error=str(error))
            self.log.error("reload refused: keeping the running config", errors=len(exc.errors))
            return
        except OSError as exc:
            self.log.error("reload refused: cannot read the config", error=str(exc))
            return
        if new.agent != self.config.agent:
            self.log.warning("agent.yaml changed: machines are reloaded, the rest (MQTT, "
                             "buffer, metrics, logging) applies at the next restart")
        old = {r.id: r for r in self.machines}
        wanted = {m.id: m for m in new.machines if m.model.enabled}
        kept, started, stopped = [], [], []
        for machine_id, runner in old.items():
            machine = wanted.get(machine_id)
            if machine is not None and machine.digest == runner.machine.digest:
                kept.append(runner)
                continue
            await _cancel([self._tasks.pop(machine_id)])
            stopped.append(machine_id)
        runners = list(kept)
        for machine_id, machine in wanted.items():
            if machine_id in old and old[machine_id] in kept:
                continue
            runner = self._runner(machine)
            runners.append(runner)
            self._start(runner)
            started.append(machine_id)
        for machine_id in sorted(set(stopped) - set(started)):
            topic = self.state.forget(machine_id)
            if topic is not None:
                self.log.info("machine removed: its retained state is cleared",
                              machine=machine_id, topic=topic)
        self.machines = runners
        self.config = LoadedConfig(root, self.config.agent, list(new.machines))
        self.log.info("config reloaded", unchanged=len(kept), started=sorted(started),
                      stopped=sorted(set(stopped) - set(started)),
                      restarted=sorted(set(stopped) & set(started)))

    async def run(self, stop: asyncio.Event) -> None:
        """Run until `stop` is set, then stop polling, commit, drain, go offline."""
        cfg = self.config.agent

        def buffer_failed(exc: BaseException) -> None:
            self.failed = True
            stop.set()
        self.buffer.on_fatal = buffer_failed
        self.buffer.on_commit = self.uplink.notify
        await self.buffer.open()
        if cfg.metrics.listen:
            try:
                self.metrics.serve(cfg.metrics.listen, self.health.facts)
            except OSError as exc:
                self.log.error("cannot serve metrics", listen=cfg.metrics.listen, error=str(exc))
            else:
                if not listen_is_loopback(cfg.metrics.listen):
                    self.log.warning("/metrics and /healthz have no authentication: anyone who "
                                     "can reach this address can read them",
                                     listen=cfg.metrics.listen)
        self.log.info("agent started", machines=len(self.machines), buffer=str(self.buffer.path),
                      epoch=self.buffer.epoch)
        uplink_task = asyncio.create_task(
            supervise("uplink", self.uplink.run, self.log), name="uplink")
        health_task = asyncio.create_task(
            supervise("health", self.health.watch_loop, self.log), name="health")
        await self.counters.open(self.log)
        counters_task = asyncio.create_task(
            supervise("counters", self.counters.keep, self.log), name="counters")
        for runner in self.machines:
            self._start(runner)
        systemd = ServiceNotify.started(self)  # READY=1, then STATUS= and watchdog pings
        stopping = asyncio.create_task(stop.wait())
        while not stop.is_set():
            reloading = asyncio.create_task(self._reload.wait())
            await asyncio.wait({stopping, reloading}, return_when=asyncio.FIRST_COMPLETED)
            reloading.cancel()
            if self._reload.is_set() and not stop.is_set():
                await self._apply_reload()
        systemd.stopping()  # STOPPING=1
        self.log.info("stopping")
        await _cancel([health_task, counters_task, *self._tasks.values()])
        await self.counters.flush()
        if not self.buffer.alive:
            await _cancel([uplink_task])
            await self.buffer.close()
            self.log.error("stopped: the buffer failed")
            return
        await self.buffer.flush()
        drained = await self.uplink.drain(cfg.shutdown_grace)
        await self.uplink.close()
        await _cancel([uplink_task])
        stats = await self.buffer.stats()
        await self.buffer.close()
        self.log.info("stopped", backlog_batches=stats.batches, drained=drained)


async def _cancel(tasks: list[asyncio.Task[Any]]) -> None:
    """Cancel and wait; cancel again any task that swallowed the first request (a library
    may catch CancelledError), so a stop never hangs on one of them."""
    pending = {t for t in tasks if not t.done()}
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=1.0)
