"""The uplink: publishes committed batches oldest-first with QoS 1, in a bounded in-flight
window, deletes each from the buffer on its PUBACK, and keeps the agent status topic."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any, Callable

from agent import __version__
from agent.core.backoff import Backoff
from agent.buffer.store import Buffer, Row
from agent.publish.commands import CommandSink
from agent.config.models import AgentIdentity, MqttConfig
from agent.config.tls import tls_context
from agent.publish.connection import MqttConnection, MqttRefused, parse_url
from agent.core.topics import status_topic
from agent.publish.state import StateCache
from structlog.typing import FilteringBoundLogger as Log
from agent.runtime.metrics import Metrics


STATUS_EVERY = 30.0  # seconds between refreshes of the retained status (health summary)




class Uplink:
    """Owns the broker connection; one instance per agent, run under supervision."""

    def __init__(self, cfg: MqttConfig, identity: AgentIdentity, buffer: Buffer,
                 state: StateCache, metrics: Metrics, log: Log, password: str | None,
                 config_root: Path) -> None:
        self._cfg, self._identity, self._buffer, self._state = cfg, identity, buffer, state
        self._metrics, self._log, self._password = metrics, log, password
        # Brokers in the order they are tried: after a failed connect, the next one.
        self._servers = [(url, *parse_url(url)) for url in (cfg.url, *cfg.more_urls)]
        self._server = 0
        self._tls = tls_context(
            cfg.tls, config_root,
            lambda problem: log.warning("TLS file needs attention", problem=problem),
        ) if any(s[3] for s in self._servers) or cfg.tls else None
        self._last_error = ""  # of the last failed connect, logged again when it changes
        self._protocol = "5" if cfg.protocol in ("auto", "5") else "3.1.1"
        self.status_topic = status_topic(cfg.topic_prefix, identity.site, identity.id)
        self._wake = asyncio.Event()
        self._conn: MqttConnection | None = None
        self._inflight: dict[int, tuple[int, int]] = {}  # mid -> (buffer row id, sampled_ns)
        self._acked: list[int] = []
        self._cursor = 0
        self._other: set[int] = set()  # mids of status and state messages in flight
        self._window = cfg.max_inflight  # per connection: also capped by the broker
        self._status_mid: int | None = None
        self._status_acked = asyncio.Event()
        self.connected = False
        self._closing = False
        # The agent's health facts, published with the retained status (set by the agent).
        self.summary: Callable[[], dict[str, Any]] | None = None
        self.commands: CommandSink | None = None  # write commands: see attach_commands

    def notify(self) -> None:
        """New batches were committed."""
        self._wake.set()

    def _status(self, online: bool) -> bytes:
        status: dict[str, Any] = {"agent": self._identity.id,
                                  "status": "online" if online else "offline",
                                  "version": __version__, "ts": time.time_ns()}
        if online and self.summary is not None:
            status["health"] = self.summary()
        return json.dumps(status, separators=(",", ":")).encode()

    async def run(self) -> None:
        """Connect, pump, reconnect with capped backoff and jitter; forever."""
        backoff = Backoff(self._cfg.reconnect_min, self._cfg.reconnect_max)
        while True:
            url, host, port, _ = self._servers[self._server]
            conn = MqttConnection(
                self._cfg.client_id or f"edge-agent-{self._identity.id}", self._protocol,
                await self._will(), self._cfg.username, self._password,
                self._tls, self._cfg.max_inflight + 16, self._on_ack, self._on_lost,
                self._on_callback_error, self._cfg.max_packet_size)
            try:
                await conn.connect(host, port, self._cfg.keepalive)
            except MqttRefused as exc:
                if exc.unsupported_protocol and self._cfg.protocol == "auto" and self._protocol == "5":
                    self._log.warning("broker refused MQTT 5, falling back to 3.1.1")
                    self._protocol = "3.1.1"
                    continue
                await self._retry_later(backoff, exc)
                continue
            except (OSError, asyncio.TimeoutError) as exc:
                await self._retry_later(backoff, exc)
                continue
            backoff.reset()
            self._conn, self.connected = conn, True
            self._metrics.uplink_connected.set(1)
            self._metrics.uplink_reconnects.inc()
            self._log.info("connected to broker", url=url, protocol=self._protocol,
                           tls=conn.tls_version)
            self._last_error = ""
            try:
                await self._pump(conn)
            finally:
                self._conn, self.connected = None, False
                self._metrics.uplink_connected.set(0)
                self._inflight.clear()
                self._metrics.uplink_inflight.set(0)
                conn.close()
            if self._closing:
                return
            self._log.warning("broker connection lost; reconnecting", url=url)
            await asyncio.sleep(backoff.next())

    async def _will(self) -> tuple[str, bytes, bool]:
        """The Last Will of the next connection: (topic, payload, retain)."""
        return self.status_topic, self._status(False), True

    async def _retry_later(self, backoff: Backoff, exc: BaseException) -> None:
        url = self._servers[self._server][0]
        self._server = (self._server + 1) % len(self._servers)
        delay = backoff.next() if self._server == 0 else 0.0  # a round of them, then wait
        error = str(exc) or repr(exc)
        # A TLS or credentials refusal needs a person, not a retry: say so at error level.
        # Repeats of one failure go to debug; a different failure is logged again.
        fix = getattr(exc, "config_problem", False)
        log = (self._log.debug if backoff.attempts > 1 and error == self._last_error
               else self._log.error if fix else self._log.warning)
        self._last_error = error
        log("cannot connect to broker", url=url, error=error, retry_in_s=round(delay, 2))
        await asyncio.sleep(delay)

    def _on_ack(self, mid: int, ok: bool) -> None:
        if mid in self._other:
            self._other.discard(mid)
            if mid == self._status_mid:
                self._status_acked.set()
            self._wake.set()
            return
        entry = self._inflight.pop(mid, None)
        if entry is None:
            return  # a state message, or a batch of a connection already given up
        row_id, sampled_ns = entry
        if ok:
            self._acked.append(row_id)
            self._metrics.uplink_acked.inc()
            self._metrics.uplink_delivery.observe(max(0, time.time_ns() - sampled_ns) / 1e9)
        else:
            # Not deleted: it goes again after the reconnect this forces.
            self._metrics.uplink_rejected.inc()
            self._log.error("broker rejected a batch; will retry after reconnect", row=row_id)
            if self._conn is not None:
                self._conn.close()
                self._on_lost()
        self._metrics.uplink_inflight.set(len(self._inflight))
        self._wake.set()

    def _on_lost(self) -> None:
        self._wake.set()

    def _on_callback_error(self, where: str, exc: BaseException) -> None:
        # A bug or hostile input reached a client callback: the message is dropped (or, in
        # paho's reading or writing, the connection); the agent goes on.
        self._metrics.callback_errors.labels(where).inc()
        self._log.error("MQTT callback failed: dropped", where=where,
                        error=f"{type(exc).__name__}: {str(exc)[:200]}")

    async def _pump(self, conn: MqttConnection) -> None:
        """One connection: open the session, then publish committed batches oldest first
        within the in-flight window until the connection ends."""
        self._window = min(self._cfg.max_inflight, conn.receive_maximum)
        self._other.clear()
        tasks = await self._open_session(conn)
        if tasks is None:
            return
        self._cursor = 0  # everything up to here was published on this connection
        try:
            while conn.is_connected:
                self._wake.clear()
                if self._acked:
                    self._buffer.ack(self._acked)
                    self._acked = []
                if not await self._between_batches(conn):
                    return
                room = self._room()
                # Only ask the buffer when a commit brought something new: acks alone do not.
                if room > 0 and self._buffer.committed_id > self._cursor:
                    rows, upto = await self._buffer.fetch_upto(self._cursor, room)
                    if not conn.is_connected:
                        break
                    try:
                        for row in rows:
                            self._publish_row(conn, row)
                            self._cursor = row.id
                    except ConnectionError:
                        break  # lost between fetch and publish; unacked rows go again later
                    if len(rows) < room:
                        self._cursor = max(self._cursor, upto)
                    if rows:
                        self._metrics.uplink_published.inc(len(rows))
                        self._metrics.uplink_inflight.set(len(self._inflight))
                        continue  # there may be more right away
                await self._idle()
        finally:
            for task in tasks:
                task.cancel()
            if self._acked:
                self._buffer.ack(self._acked)
                self._acked = []

    async def _open_session(self, conn: MqttConnection) -> list[asyncio.Task[None]] | None:
        """What a new connection starts with: the online status, the retained state and
        the command subscription (tasks to cancel when it ends); None: nothing to pump."""
        self._status_mid = conn.publish(self.status_topic, self._status(True), retain=True)
        self._other.add(self._status_mid)
        self._state.mark_all_dirty()
        tasks = [asyncio.create_task(self._publish_state(conn), name="state-topic")]
        commands = self._subscribe_commands(conn)
        return tasks + ([commands] if commands is not None else [])

    async def _between_batches(self, conn: MqttConnection) -> bool:
        """Work ahead of the backlog (command replies); False ends the connection."""
        if self.commands is not None:
            self._send_replies(conn)
        return True

    def _publish_row(self, conn: MqttConnection, row: Row) -> None:
        """One committed batch, QoS 1, deleted from the buffer on its PUBACK."""
        mid = conn.publish(row.topic, row.payload)
        self._inflight[mid] = (row.id, row.sampled_ns)

    async def _idle(self) -> None:
        """Until something happens: a commit, an ack, a command reply."""
        await self._wake.wait()

    # -- write commands (agent/writeback/commands.py): subscription and replies only ----------------

    def attach_commands(self, hub: CommandSink) -> None:
        """Receive write commands for `hub` (when it is enabled) and publish its replies."""
        self.commands = hub
        hub.on_reply = self.notify

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

    def _send_replies(self, conn: MqttConnection) -> None:
        # Replies go out directly, QoS 1, not retained, ahead of the telemetry backlog and
        # within the in-flight window; never through the buffer (see agent/writeback/commands.py).
        hub = self.commands
        assert hub is not None
        while self._room() > 0:
            reply = hub.take_reply()
            if reply is None:
                return
            try:
                self._other.add(conn.publish(reply[0], reply[1], qos=1, retain=False))
            except ConnectionError:
                hub.put_back(reply)  # published after the reconnect
                return

    def _room(self) -> int:
        """QoS 1 messages that may still go out unacknowledged on this connection."""
        return self._window - len(self._inflight) - len(self._other)

    async def _publish_state(self, conn: MqttConnection) -> None:
        # Retained last value of every signal, for twins; latest wins, so never buffered.
        # It shares the in-flight window with telemetry and only takes what is free.
        next_status = time.monotonic() + STATUS_EVERY
        while conn.is_connected:
            for topic, payload in self._state.take_dirty(self._room() // 2):
                if not conn.is_connected:
                    return
                self._other.add(conn.publish(topic, payload, qos=1, retain=True))
                await asyncio.sleep(0)  # one machine at a time: polls due meanwhile go first
            if time.monotonic() >= next_status and self._room() > 0:
                # The retained status carries the health summary: keep it current.
                next_status = time.monotonic() + STATUS_EVERY
                self._status_mid = conn.publish(self.status_topic, self._status(True), retain=True)
                self._other.add(self._status_mid)
            await asyncio.sleep(self._cfg.state_interval)

    async def drain(self, grace: float) -> bool:
        """Wait up to `grace` seconds until every committed batch is acknowledged (call
        after the buffer's last flush)."""
        deadline = time.monotonic() + grace
        while self.connected and time.monotonic() < deadline:
            if (self._cursor >= self._buffer.committed_id and not self._inflight
                    and not self._acked):
                return True
            self._wake.set()
            await asyncio.sleep(0.02)
        return False

    async def close(self) -> None:
        """Publish the retained offline status and disconnect cleanly."""
        self._closing = True
        conn = self._conn
        if conn is None or not conn.is_connected:
            return
        self._status_acked.clear()
        try:
            self._status_mid = conn.publish(self.status_topic, self._status(False), retain=True)
            self._other.add(self._status_mid)
            async with asyncio.timeout(2.0):
                await self._status_acked.wait()
        except (ConnectionError, TimeoutError):
            pass
        await conn.disconnect()
