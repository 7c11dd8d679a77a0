"""Wires the data flow of DESIGN.md: machines -> normalize -> buffer -> uplink."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from agent.buffer import Buffer, buffer_path
from agent.config.loader import LoadedConfig
from agent.encoding import PayloadCodec
from agent.logs import get_logger
from agent.machine import MachineRunner, topic_base
from agent.metrics import Metrics
from agent.state import StateCache
from agent.supervise import supervise
from agent.uplink import Uplink, read_password


class Agent:
    """One running agent; `run()` returns after a graceful stop."""

    def __init__(self, config: LoadedConfig, state_dir: Path | None = None) -> None:
        self.config = config
        self.failed = False  # set when a fatal error, not a stop request, ended the run
        self.metrics = Metrics()
        self.log = get_logger(agent=config.agent.agent.id)
        cfg = config.agent
        self.password = read_password(cfg.mqtt, config.root)
        self.state = StateCache(cfg.agent.id)
        codec = PayloadCodec(cfg.agent.id, cfg.mqtt.encoding)
        self.buffer = Buffer(
            buffer_path(config.root, cfg.buffer.path, state_dir), cfg.buffer.max_bytes,
            cfg.buffer.commit_interval, codec,
            get_logger(component="buffer"), self.metrics)
        self.uplink = Uplink(cfg.mqtt, cfg.agent, self.buffer, self.state, self.metrics,
                             get_logger(component="uplink"), self.password, config.root)
        # Connections machines share (a serial bus with several units), by the drivers' keys.
        self.shared: dict[str, Any] = {}
        self.metrics.watch_buses(self.shared)
        self.machines = [
            MachineRunner(m, topic_base(cfg.mqtt.topic_prefix, cfg.agent.site, m.model),
                          self.buffer.append, codec, self.state, self.metrics,
                          get_logger(machine=m.id), self.shared)
            for m in config.machines if m.model.enabled
        ]

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
                self.metrics.serve(cfg.metrics.listen)
            except OSError as exc:
                self.log.error("cannot serve metrics", listen=cfg.metrics.listen, error=str(exc))
        self.log.info("agent started", machines=len(self.machines), buffer=str(self.buffer.path),
                      epoch=self.buffer.epoch)
        uplink_task = asyncio.create_task(
            supervise("uplink", self.uplink.run, self.log), name="uplink")
        machine_tasks = [
            asyncio.create_task(supervise(f"machine:{r.id}", r.run, self.log.bind(machine=r.id)),
                                name=f"machine:{r.id}")
            for r in self.machines
        ]
        await stop.wait()
        self.log.info("stopping")
        await _cancel(machine_tasks)
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
