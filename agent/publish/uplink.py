"""The uplink: one broker connection at a time (brokers tried in turn, reconnects with capped
backoff and jitter), committed batches published oldest first within a bounded in-flight
window and deleted from the buffer once acknowledged.

What goes on the wire is the profile's business: a `Profile` (agent/publish/uns.py,
agent/publish/sparkplug/session.py) is a strategy the uplink calls at each step of a
connection, and it reaches the connection's bookkeeping only through the uplink's public
methods (publish_row, skip_row, publish_other, acked, room, wait, notify, next_server).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Protocol

from structlog.typing import FilteringBoundLogger as Log

from agent.buffer.store import Buffer, Row
from agent.config.models import AgentIdentity, MqttConfig
from agent.config.tls import tls_context
from agent.core.backoff import Backoff
from agent.publish.commands import CommandSink
from agent.publish.connection import MqttConnection, MqttRefused, parse_url
from agent.runtime.metrics import Metrics


class Profile(Protocol):
    """One payload contract's use of a broker connection."""

    commands: CommandSink | None  # write commands, when the agent takes them

    async def will(self) -> tuple[str, bytes, bool]:
        """The Last Will of the next connection: (topic, payload, retain)."""

    async def open(self, link: Uplink, conn: MqttConnection) -> list[asyncio.Task[None]] | None:
        """A new connection: subscriptions, births, status (tasks to cancel when it ends);
        None: nothing to publish on it."""

    async def between_batches(self, link: Uplink, conn: MqttConnection) -> bool:
        """Work ahead of the backlog; False ends the connection."""

    def publish(self, link: Uplink, conn: MqttConnection, row: Row) -> None:
        """One committed batch, through link.publish_row or link.skip_row."""

    async def idle(self, link: Uplink) -> None:
        """Until there may be something to do."""

    async def goodbye(self, link: Uplink, conn: MqttConnection) -> None:
        """A graceful stop: the last words, then disconnect."""


class Uplink:
    """Owns the broker connection; one instance per agent, run under supervision."""

    def __init__(self, cfg: MqttConfig, identity: AgentIdentity, buffer: Buffer,
                 profile: Profile, metrics: Metrics, log: Log, password: str | None,
                 config_root: Path) -> None:
        self._cfg, self._identity, self._buffer = cfg, identity, buffer
        self.profile = profile
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
        self._wake = asyncio.Event()
        self._conn: MqttConnection | None = None
        self._inflight: dict[int, tuple[int, int]] = {}  # mid -> (buffer row id, sampled_ns)
        self._acked: list[int] = []
        self._cursor = 0
        self._other: set[int] = set()  # mids of messages that are not batches, in flight
        self._waiters: dict[int, asyncio.Future[bool]] = {}  # mid -> who waits for its ack
        self._window = cfg.max_inflight  # per connection: also capped by the broker
        self.connected = False
        self._closing = False

    def notify(self) -> None:
        """Something to do: new batches were committed, a reply or a command is waiting."""
        self._wake.set()

    # -- what profiles use ----------------------------------------------------------------

    @property
    def committed_id(self) -> int:
        """The highest buffer row id committed so far."""
        return self._buffer.committed_id

    def publish_row(self, conn: MqttConnection, topic: str, payload: bytes, row: Row,
                    qos: int = 1) -> None:
        """A batch on the wire: deleted from the buffer once the broker acknowledges it
        (QoS 1) or once written (QoS 0). ConnectionError when the connection is gone."""
        mid = conn.publish(topic, payload, qos=qos)
        self._inflight[mid] = (row.id, row.sampled_ns)

    def skip_row(self, row: Row) -> None:
        """A batch with nothing to publish: deleted from the buffer as if acknowledged."""
        self._acked.append(row.id)

    def publish_other(self, conn: MqttConnection, topic: str, payload: bytes, qos: int = 1,
                      retain: bool = False) -> int:
        """A message that is not a batch (status, state, a reply), counted in the in-flight
        window until acknowledged; its mid."""
        mid = conn.publish(topic, payload, qos=qos, retain=retain)
        if qos:
            self._other.add(mid)
        return mid

    async def acked(self, mid: int, timeout: float) -> bool:
        """Whether the message `mid` of publish_other is acknowledged within `timeout` s."""
        if mid not in self._other:
            return True
        waiter: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._waiters[mid] = waiter
        try:
            async with asyncio.timeout(timeout):
                return await waiter
        except TimeoutError:
            return False
        finally:
            self._waiters.pop(mid, None)

    def room(self) -> int:
        """QoS 1 messages that may still go out unacknowledged on this connection."""
        return self._window - len(self._inflight) - len(self._other)

    async def wait(self, timeout: float | None = None, fresh: bool = False) -> None:
        """Until notify() (a commit, an ack, a reply), or `timeout` seconds; `fresh`: a
        notify from before this call does not count."""
        if fresh:
            self._wake.clear()
        if timeout is None:
            await self._wake.wait()
            return
        try:
            async with asyncio.timeout(timeout):
                await self._wake.wait()
        except TimeoutError:
            pass

    def next_server(self) -> None:
        """After this connection, try the next broker of the list."""
        self._server = (self._server + 1) % len(self._servers)

    # -- the connection loop ----------------------------------------------------------------

    async def run(self) -> None:
        """Connect, pump, reconnect with capped backoff and jitter; forever."""
        backoff = Backoff(self._cfg.reconnect_min, self._cfg.reconnect_max)
        while True:
            url, host, port, _ = self._servers[self._server]
            conn = MqttConnection(
                self._cfg.client_id or f"edge-agent-{self._identity.id}", self._protocol,
                await self.profile.will(), self._cfg.username, self._password,
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

    async def _retry_later(self, backoff: Backoff, exc: BaseException) -> None:
        url = self._servers[self._server][0]
        self.next_server()
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
            waiter = self._waiters.get(mid)
            if waiter is not None and not waiter.done():
                waiter.set_result(ok)
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
        for waiter in self._waiters.values():  # no ack will come on this connection
            if not waiter.done():
                waiter.set_result(False)
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
        profile = self.profile
        tasks = await profile.open(self, conn)
        if tasks is None:
            return
        self._cursor = 0  # everything up to here was published on this connection
        try:
            while conn.is_connected:
                self._wake.clear()
                if self._acked:
                    self._buffer.ack(self._acked)
                    self._acked = []
                if not await profile.between_batches(self, conn):
                    return
                room = self.room()
                # Only ask the buffer when a commit brought something new: acks alone do not.
                if room > 0 and self._buffer.committed_id > self._cursor:
                    rows, upto = await self._buffer.fetch_upto(self._cursor, room)
                    if not conn.is_connected:
                        break
                    try:
                        for row in rows:
                            profile.publish(self, conn, row)
                            self._cursor = row.id
                    except ConnectionError:
                        break  # lost between fetch and publish; unacked rows go again later
                    if len(rows) < room:
                        self._cursor = max(self._cursor, upto)
                    if rows:
                        self._metrics.uplink_published.inc(len(rows))
                        self._metrics.uplink_inflight.set(len(self._inflight))
                        continue  # there may be more right away
                await profile.idle(self)
        finally:
            for task in tasks:
                task.cancel()
            if self._acked:
                self._buffer.ack(self._acked)
                self._acked = []

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
        """A graceful stop: the profile's last words, then disconnect."""
        self._closing = True
        conn = self._conn
        if conn is None or not conn.is_connected:
            return
        await self.profile.goodbye(self, conn)
