"""The uns profile (the default): each buffered batch is published as it was encoded when
it was collected, QoS 1, on its machine's telemetry or event topic; beside it the retained
twin state of every machine, the agent's retained status (online/offline as Last Will,
version, health), and the write-command subscription with its replies.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any, Callable

from structlog.typing import FilteringBoundLogger as Log

from agent import __version__
from agent.buffer.store import Row
from agent.config.models import AgentIdentity, MqttConfig
from agent.core.topics import status_topic
from agent.publish.commands import CommandSink
from agent.publish.connection import MqttConnection
from agent.publish.state import StateCache
from agent.publish.uplink import Uplink

STATUS_EVERY = 30.0  # seconds between refreshes of the retained status (health summary)


class UnsProfile:
    """Topics {prefix}/{site}/{area}/{line}/{machine}/... and the agent's status topic."""

    def __init__(self, cfg: MqttConfig, identity: AgentIdentity, state: StateCache,
                 log: Log) -> None:
        self._cfg, self._identity, self._state, self._log = cfg, identity, state, log
        self.status_topic = status_topic(cfg.topic_prefix, identity.site, identity.id)
        # The agent's health facts, published with the retained status (set by the agent).
        self.summary: Callable[[], dict[str, Any]] | None = None
        self.commands: CommandSink | None = None

    def _status(self, online: bool, stamped: bool = True) -> bytes:
        status: dict[str, Any] = {"agent": self._identity.id,
                                  "status": "online" if online else "offline",
                                  "version": __version__}
        if stamped:
            status["ts"] = time.time_ns()
        if online and self.summary is not None:
            status["health"] = self.summary()
        return json.dumps(status, separators=(",", ":")).encode()

    def _machines_down(self) -> Any:
        return None if self.summary is None else self.summary().get("machines_down")

    async def will(self) -> tuple[str, bytes, bool]:
        # No ts: the Will is made when the connection opens, but published when it is lost;
        # any time in it would be older than the online status it replaces.
        return self.status_topic, self._status(False, stamped=False), True

    async def open(self, link: Uplink, conn: MqttConnection) -> list[asyncio.Task[None]] | None:
        """The online status, the retained state and the command subscription."""
        link.publish_other(conn, self.status_topic, self._status(True), retain=True)
        self._state.mark_all_dirty()
        tasks = [asyncio.create_task(self._publish_state(link, conn), name="state-topic")]
        commands = self._subscribe_commands(conn)
        return tasks + ([commands] if commands is not None else [])

    async def between_batches(self, link: Uplink, conn: MqttConnection) -> bool:
        if self.commands is not None:
            self._send_replies(link, conn)
        return True

    def publish(self, link: Uplink, conn: MqttConnection, row: Row) -> None:
        link.publish_row(conn, row.topic, row.payload, row)

    async def idle(self, link: Uplink) -> None:
        await link.wait()

    async def goodbye(self, link: Uplink, conn: MqttConnection) -> None:
        """The retained offline status, then a clean DISCONNECT (the Will is discarded)."""
        try:
            mid = link.publish_other(conn, self.status_topic, self._status(False), retain=True)
            await link.acked(mid, 2.0)
        except ConnectionError:
            pass
        await conn.disconnect()

    # -- write commands (agent/writeback/commands.py): subscription and replies only -------

    def _subscribe_commands(self, conn: MqttConnection) -> asyncio.Task[None] | None:
        # On every connection (each starts clean, with no subscription and no queued
        # command: a command sent while the agent was away is never executed late).
        hub = self.commands
        if hub is None or not hub.enabled:
            return None

        async def subscribe() -> None:
            try:
                granted = await conn.subscribe(hub.subscription, 1, hub.submit, live_only=True)
            except (ConnectionError, TimeoutError) as exc:
                self._log.warning("cannot subscribe to write commands", topic=hub.subscription,
                                  error=str(exc) or type(exc).__name__)
                return
            if granted:
                self._log.info("subscribed to write commands", topic=hub.subscription)
            else:
                self._log.error("the broker refused the write command subscription (ACL?)",
                                topic=hub.subscription)
        return asyncio.create_task(subscribe(), name="write-commands")

    def _send_replies(self, link: Uplink, conn: MqttConnection) -> None:
        # Replies go out directly, QoS 1, not retained, ahead of the telemetry backlog and
        # within the in-flight window; never through the buffer.
        hub = self.commands
        assert hub is not None
        while link.room() > 0:
            reply = hub.take_reply()
            if reply is None:
                return
            try:
                link.publish_other(conn, reply[0], reply[1])
            except ConnectionError:
                hub.put_back(reply)  # published after the reconnect
                return

    async def _publish_state(self, link: Uplink, conn: MqttConnection) -> None:
        # Retained last value of every signal, for twins; latest wins, so never buffered.
        # It shares the in-flight window with telemetry and only takes what is free.
        next_status = time.monotonic() + STATUS_EVERY
        down = self._machines_down()  # as the online status published at open said
        while conn.is_connected:
            for topic, payload in self._state.take_dirty(link.room() // 2):
                if not conn.is_connected:
                    return
                link.publish_other(conn, topic, payload, retain=True)
                await asyncio.sleep(0)  # one machine at a time: polls due meanwhile go first
            # The retained status carries the health summary: refreshed when a machine goes
            # up or down (the first poll round included), else now and then.
            now_down = self._machines_down()
            if (time.monotonic() >= next_status or now_down != down) and link.room() > 0:
                next_status, down = time.monotonic() + STATUS_EVERY, now_down
                link.publish_other(conn, self.status_topic, self._status(True), retain=True)
            await asyncio.sleep(self._cfg.state_interval)
