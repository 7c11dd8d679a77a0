"""The Sparkplug B 3.0 edge-node session: the uplink profile of `mqtt.profile: sparkplug`.

The agent is one edge node and each machine one device. Per connection: a Will (NDEATH
with the session's bdSeq, QoS 1, not retained); if a primary host is configured, births
only once it says it is online; NBIRTH (seq 0) and a DBIRTH per live machine with every
metric's current value; then the buffer's batches oldest first as DDATA, those committed
before the births flagged is_historical. A machine's availability in its own data drives
its DDEATH and its DBIRTH, so the lifecycle stays in order with the data replayed.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from pathlib import Path
from typing import Callable

from structlog.typing import FilteringBoundLogger as Log

from agent.buffer.store import Row
from agent.config.derive import AVAILABILITY, UNAVAILABLE
from agent.config.models import AgentIdentity, SparkplugConfig
from agent.core.admission import age_problem
from agent.core.topics import Topics, state_topic
from agent.publish.commands import CommandSink
from agent.publish.connection import MqttConnection
from agent.publish.sparkplug.bdseq import BdSeq
from agent.publish.sparkplug.codec import Metric, encode
from agent.publish.sparkplug.codec import decode as decode_payload
from agent.publish.sparkplug.datatypes import DataType
from agent.publish.sparkplug.metrics import EVENTS, Catalog
from agent.publish.sparkplug.record import EventTuple, ReadingTuple, read
from agent.publish.state import StateCache
from agent.publish.uplink import Uplink
from agent.runtime.metrics import Metrics

REBIRTH = "Node Control/Rebirth"
BDSEQ = "bdSeq"
LIFECYCLE_CHECK = 0.5  # seconds between looks at the host's state when idle
MAX_STATE_BYTES = 1024  # a STATE is {"online": ..., "timestamp": ...}


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def collected(readings: list[ReadingTuple], events: list[EventTuple]) -> bool:
    """Whether a buffered batch holds anything the device delivered: an event, or a reading
    that is not bad (the agent's own machine.availability aside)."""
    return bool(events) or any(quality != "bad" and signal != AVAILABILITY
                               for signal, _, quality, _ in readings)


class SparkplugProfile:
    """One edge node's session with its (primary) broker, as the uplink's profile."""

    def __init__(self, sp: SparkplugConfig, identity: AgentIdentity, state: StateCache,
                 metrics: Metrics, log: Log, state_dir: Path,
                 devices: Callable[[], list[str]]) -> None:
        self._sp, self._state, self._metrics, self._log = sp, state, metrics, log
        self.commands: CommandSink | None = None
        self._link: Uplink | None = None  # of the connection in progress
        self.topics = Topics(sp.group_id, sp.edge_node_id or identity.id)
        self._aliases = sp.aliases
        self._primary = sp.primary_host_id
        self._bdseq = BdSeq(state_dir / "sparkplug-bdseq")
        self.bd = 0
        self._seq = 0
        self._catalog = Catalog(self._aliases)
        self._devices = devices  # the ids of the running machines
        self._born: set[str] = set()
        self._boundary = 0  # rows up to this id were committed before the births
        self._rebirth = False  # requested, waiting for rebirth_interval since the last birth
        self._born_at = -float("inf")  # loop time of the last NBIRTH
        self._host_ts = -1  # timestamp of the last STATE of the primary host
        self._host_online = False

    def _notify(self) -> None:
        if self._link is not None:
            self._link.notify()

    async def will(self) -> tuple[str, bytes, bool]:
        # A new bdSeq per connection: the host matches the NDEATH to the NBIRTH by it.
        self.bd = await self._bdseq.next()
        return self.topics.ndeath, self._death(), False

    def _death(self) -> bytes:
        return encode([Metric(BDSEQ, self.bd, DataType.Int64, now_ms())], None, now_ms())

    def _next_seq(self) -> int:
        seq, self._seq = self._seq, (self._seq + 1) % 256
        return seq

    # -- the session --------------------------------------------------------------------

    async def open(self, link: Uplink, conn: MqttConnection) -> list[asyncio.Task[None]] | None:
        """Subscriptions, the primary host's go-ahead, then the births."""
        self._link = link
        self._born.clear()
        self._catalog = Catalog(self._aliases)
        self._host_online = self._primary is None
        await self._subscribe(conn)
        while not self._host_online:  # births wait for the primary host
            if not conn.is_connected:
                return None
            await link.wait(LIFECYCLE_CHECK, fresh=True)
        self._boundary = link.committed_id  # what is older replays as history
        try:
            self._birth(conn)
        except ConnectionError:
            return None
        return []

    async def between_batches(self, link: Uplink, conn: MqttConnection) -> bool:
        if not self._host_online:
            await self._leave(link, conn)
            return False
        if self._rebirth and (asyncio.get_running_loop().time() - self._born_at
                              >= self._sp.rebirth_interval):
            try:
                self._birth(conn)
            except ConnectionError:
                return False  # lost meanwhile: the next connection is born anew
        return True

    async def idle(self, link: Uplink) -> None:
        # Wakes up now and then as well: the primary host's STATE arrives by itself.
        await link.wait(LIFECYCLE_CHECK)

    async def _leave(self, link: Uplink, conn: MqttConnection) -> None:
        """The primary host went offline: NDEATH, disconnect, and try the next server."""
        self._log.warning("primary host offline: leaving the broker", host=self._primary)
        await self.goodbye(link, conn)
        link.next_server()

    async def goodbye(self, link: Uplink, conn: MqttConnection) -> None:
        """An intentional goodbye: on MQTT 5 a DISCONNECT that has the broker publish the
        Will (the NDEATH); on 3.1.1 the NDEATH published, then DISCONNECT."""
        if conn.protocol != "5":
            try:
                await link.acked(link.publish_other(conn, self.topics.ndeath, self._death()), 2.0)
            except ConnectionError:
                pass
        await conn.disconnect(with_will=True)

    async def _subscribe(self, conn: MqttConnection) -> None:
        # Commands live only (MQTT 5: no retained ones at subscription, the retain flag of
        # live ones kept so they are refused); the host's STATE is retained on purpose.
        topics = [(self.topics.ncmd, self._on_command, True),
                  (self.topics.dcmd_all, self._on_command, True)]
        if self._primary is not None:
            topics.append((state_topic(self._primary), self._on_state, False))
        for topic, handler, live_only in topics:
            try:
                granted = await conn.subscribe(topic, 1, handler, live_only=live_only)
            except (ConnectionError, TimeoutError) as exc:
                self._log.warning("cannot subscribe", topic=topic, error=str(exc) or type(exc).__name__)
                continue
            if not granted:
                self._log.error("the broker refused a subscription (ACL?)", topic=topic)

    # -- births, data, deaths -----------------------------------------------------------

    def _birth(self, conn: MqttConnection) -> None:
        """NBIRTH with seq 0, then a DBIRTH per machine that is not known to be down."""
        self._rebirth = False
        self._born_at = asyncio.get_running_loop().time()
        self._seq = 0
        ts = now_ms()
        node = [Metric(BDSEQ, self.bd, DataType.Int64, ts),
                Metric(REBIRTH, False, DataType.Boolean, ts)]  # never aliased
        conn.publish(self.topics.nbirth, encode(node, self._next_seq(), ts), qos=0)
        self._born.clear()
        for device in self._devices():
            readings = {r.signal: r for r in self._state.signals(device)}
            availability = readings.get(AVAILABILITY)
            if availability is None or availability.value != UNAVAILABLE:
                self._device_birth(conn, device)

    def _device_birth(self, conn: MqttConnection, device: str) -> None:
        ts = now_ms()
        metrics = [self._catalog.reading(device, r, birth=True)
                   for r in self._state.signals(device)]
        metrics.append(self._catalog.metric(device, EVENTS, None, ts, birth=True))
        conn.publish(self.topics.device("DBIRTH", device), encode(metrics, self._next_seq(), ts),
                     qos=0)
        self._born.add(device)

    def _device_death(self, conn: MqttConnection, device: str) -> None:
        ts = now_ms()
        conn.publish(self.topics.device("DDEATH", device), encode([], self._next_seq(), ts), qos=0)
        self._born.discard(device)

    def publish(self, link: Uplink, conn: MqttConnection, row: Row) -> None:
        """One buffered batch as DDATA of its machine (births and deaths around it as its
        availability says); acknowledged once written, DDATA being QoS 0."""
        try:
            device, readings, events = read(row.payload)
        except ValueError:
            self._log.error("undecodable batch in the buffer: skipped", row=row.id)
            link.skip_row(row)
            return
        historical = row.id <= self._boundary
        availability = next((value for signal, value, _, _ in reversed(readings)
                             if signal == AVAILABILITY), None)
        if device not in self._born:
            if not collected(readings, events):  # a dead device's bad readings: no news
                link.skip_row(row)
                return
            # Back, or data from before it died replayed: born again first.
            self._device_birth(conn, device)
        catalog = self._catalog
        # History goes out whole; live data only with what changed since it was last sent.
        metrics = [catalog.metric(device, signal, value, ts // 1_000_000, historical=historical,
                                  quality=quality)
                   for signal, value, quality, ts in readings
                   if historical or catalog.changed(device, signal, value, quality)]
        metrics += [catalog.metric(device, EVENTS, text, ts // 1_000_000, historical=historical)
                    for text, ts in events]
        if metrics:
            link.publish_row(conn, self.topics.device("DDATA", device),
                             encode(metrics, self._next_seq(), now_ms(), include_datatype=False),
                             row, qos=0)
        else:
            link.skip_row(row)  # nothing new in it
        if availability == UNAVAILABLE:
            self._device_death(conn, device)

    # -- commands -----------------------------------------------------------------------

    def _on_command(self, topic: str, payload: bytes, retain: bool = False) -> None:
        """NCMD (rebirth) and DCMD (writes, through the same hub, checks and audit as every
        write). Anything else is refused whole, counted and logged once a burst."""
        kind = "NCMD" if topic == self.topics.ncmd else "DCMD"
        limit = self._sp.max_command_bytes
        if len(payload) > limit:
            self._refuse(kind, "payload_too_large", f"{len(payload)} bytes; at most {limit} "
                         "(mqtt.sparkplug.max_command_bytes)")
            return
        try:
            stamp, _, metrics = decode_payload(payload)
        except ValueError as exc:
            self._refuse(kind, "bad_payload", str(exc)[:200])
            return
        if len(metrics) > self._sp.max_command_metrics:
            self._refuse(kind, "too_many_metrics", f"{len(metrics)} metrics; at most "
                         f"{self._sp.max_command_metrics} (mqtt.sparkplug.max_command_metrics)")
            return
        if kind == "NCMD":
            if any(m.name == REBIRTH and m.value is True for m in metrics):
                self._rebirth_requested(stamp, retain)
            return
        device = self.topics.device_of(topic)
        if device is None or device not in self._devices():
            self._refuse(kind, "unknown_device", "no such device on this edge node")
            return
        hub = self.commands
        if hub is None:
            return
        catalog = self._catalog
        values = [(m.name if m.name is not None
                   else catalog.name_of(device, m.alias) or f"<alias {m.alias}>", m.value)
                  for m in metrics]
        # A DCMD has no request id: its bytes are its identity, so a replay is a duplicate.
        request_id = "spb-" + hashlib.blake2b(payload, digest_size=8).hexdigest()
        hub.submit_values(device, request_id, values,
                          None if stamp is None else stamp * 1_000_000, retain)

    def _rebirth_requested(self, stamp: int | None, retain: bool) -> None:
        max_age = self.commands.max_age if self.commands is not None else 10.0
        problem = ("retained: a rebirth request must not run on every reconnect" if retain
                   else "no payload timestamp" if stamp is None
                   else age_problem(stamp * 1_000_000, max_age))
        if problem is not None:
            self._refuse("NCMD", "stale", problem)
            return
        if self._rebirth or (asyncio.get_running_loop().time() - self._born_at
                             < self._sp.rebirth_interval):
            # Folded into the one pending: a host that asks again and again gets one rebirth
            # per interval, and the last request is never left unanswered.
            self._metrics.inbound_refused.labels("rebirth_throttled").inc()
            self._log.warning("rebirth requests folded: at most one rebirth per "
                              "mqtt.sparkplug.rebirth_interval",
                              interval_s=self._sp.rebirth_interval)
        else:
            self._log.info("rebirth requested")
        self._rebirth = True
        self._notify()

    def _refuse(self, kind: str, reason: str, detail: str) -> None:
        self._metrics.inbound_refused.labels(reason).inc()
        self._log.warning(f"Sparkplug {kind} refused", reason=reason, detail=detail)

    def _on_state(self, topic: str, payload: bytes, retain: bool = False) -> None:
        try:
            if len(payload) > MAX_STATE_BYTES:
                raise ValueError
            state = json.loads(payload)
            online, stamp = state["online"], state["timestamp"]
            if not isinstance(online, bool) or not isinstance(stamp, int):
                raise ValueError
        except (ValueError, KeyError, TypeError, RecursionError):
            self._metrics.inbound_refused.labels("bad_state").inc()
            self._log.warning("malformed STATE of the primary host: ignored", topic=topic)
            return
        ahead = stamp - now_ms()
        if ahead > self._sp.state_clock_skew * 1000:
            # Sparkplug orders STATEs by timestamp: one from far ahead would make every
            # true STATE after it look old, and the node could never come back online.
            self._metrics.inbound_refused.labels("state_from_future").inc()
            self._log.warning("STATE of the primary host stamped in the future: ignored",
                              ahead_s=round(ahead / 1000, 1),
                              tolerance_s=self._sp.state_clock_skew)
            return
        if stamp < self._host_ts:
            return  # an older announcement than one already seen
        self._host_ts, self._host_online = stamp, online
        self._notify()
