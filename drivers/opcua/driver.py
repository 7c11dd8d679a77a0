"""OPC UA driver: read groups (chunked Read calls) and push groups (subscriptions, events).

Each poll group has one acquisition mode. A read group is read on its interval in chunks of
the server's MaxNodesPerRead, so one huge group never holds the event loop for long. A push
group is one subscription whose publishing interval is the group's interval; the agent
drains it on that interval. Every reference is resolved once per session, so a restarted
server with renumbered namespaces is handled like any other reconnect.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

from asyncua import ua
from asyncua.common.ua_utils import data_type_to_variant_type
# From their defining modules: asyncua and asyncua.ua expose these only as implicit
# re-exports, which mypy --strict does not accept.
from asyncua.ua.attribute_ids import AttributeIds
from asyncua.ua.uaerrors import UaError, UaStatusCodeError

from drivers.base import (COMM_FAILURE, DEVICE_ERROR, FLOAT32_MAX, NOT_CONNECTED, OUT_OF_RANGE,
                          TIMEOUT, WRONG_TYPE, Drained, RawSample, Value, WriteRefused,
                          WriteSpec, bad_sample, coerce_write)
from drivers.opcua.codec import ValueCodec, status_name
from drivers.opcua.config import OpcUaConnection, OpcUaSignalFields
from drivers.opcua.resolve import Unresolved, relative_path
from drivers.opcua.session import Session
from drivers.opcua.subscription import (
    STANDARD_FIELDS,
    SUBSCRIPTION_LOST,
    EventPlan,
    GroupSubscription,
    ItemPlan,
    event_filter,
)

log = logging.getLogger("edge_agent.opcua")

UNRESOLVED = "node_unresolved"
SUBSCRIPTION_STALLED = "subscription_stalled"
PUSH_BOUND_MIN = 10_000  # pending samples per push group before the oldest are dropped


def _sampling_and_queue(signal: OpcUaSignalFields, publishing_ms: float) -> tuple[float, int]:
    """(sampling ms, queue size) of a monitored item: sampling defaults to the publishing
    interval, the queue to room for every sample of one interval, plus one. A queue of one
    loses a change whenever two samples land in the same interval, which happens all the
    time when a value changes at about the publishing rate (jitter)."""
    sampling_ms = (publishing_ms if signal.sampling_interval is None
                   else signal.sampling_interval * 1000)
    if signal.queue_size is not None:
        return sampling_ms, signal.queue_size
    if sampling_ms <= 0:  # "as fast as the server can": its rate is unknown here
        return sampling_ms, 10
    return sampling_ms, min(10_000, math.ceil(publishing_ms / sampling_ms) + 1)


@dataclass(slots=True)
class _Point:
    index: int
    signal: OpcUaSignalFields
    node: ua.NodeId | None = None
    codec: ValueCodec | None = None
    problem: str | None = None  # why it has no node on this session
    write_type: ua.VariantType | None = None  # from the node's DataType, once per session


class OpcUaDriver:
    """One machine over OPC UA. Never raises for device trouble: bad samples instead."""

    def __init__(self, conn: OpcUaConnection, groups: Mapping[str, Sequence[OpcUaSignalFields]],
                 intervals: Mapping[str, float]) -> None:
        self._conn = conn
        self._session = Session(conn)
        self._intervals = dict(intervals)
        self._points = {g: [_Point(i, s) for i, s in enumerate(sigs)] for g, sigs in groups.items()}
        self._push = {g for g, sigs in groups.items()
                      if any(s.resolved_mode(conn) != "read" for s in sigs)}
        # Event source -> the group that collects it: its `poll`, else that of its signals.
        self._event_group = {name: s.poll for name, s in conn.events.items() if s.poll}
        for group, sigs in groups.items():
            for sig in sigs:
                if sig.event is not None:
                    self._event_group.setdefault(sig.event, group)
        for name in conn.events:
            self._event_group.setdefault(name, next(iter(intervals)))
        self._push |= {g for g in self._event_group.values() if g in groups}
        self._subs: dict[str, GroupSubscription] = {}
        # Per read group and session: (points, Read request) per chunk of resolved nodes.
        self._read_plan: dict[str, list[tuple[list[_Point], ua.ReadParameters]]] = {}
        self.rebuilds = 0  # subscriptions rebuilt after going silent (for tests and metrics)
        self.request_observer: Callable[[float], None] | None = None  # Read round trip, s

    # -- Driver protocol --------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._session.connected

    async def connect(self) -> None:
        await self._session.open()
        try:
            async with asyncio.timeout(self._conn.timeout * 4):
                await self._prepare()
        except (ConnectionError, TimeoutError):
            await self.close()
            raise
        except (OSError, UaError) as exc:
            await self.close()
            raise ConnectionError(f"preparing the session failed: {type(exc).__name__}: {exc}") from exc

    async def close(self) -> None:
        await self._session.close()

    def request_count(self, group: str) -> int:
        if group in self._push:
            return 0
        if group in self._read_plan:
            return len(self._read_plan[group])
        return -(-len(self._points[group]) // max(1, self._session.read_chunk))

    async def read(self, group: str) -> list[RawSample]:
        points = self._points[group]
        now_ns = time.time_ns()
        samples = [bad_sample(p.problem or UNRESOLVED, now_ns) for p in points]
        for part, request in self._read_plan.get(group, ()):
            failure = COMM_FAILURE
            if self._session.connected:
                try:
                    started = time.perf_counter()
                    async with asyncio.timeout(self._conn.timeout):
                        values = await self._session.uaclient.read(request)
                    if self.request_observer is not None:
                        self.request_observer(time.perf_counter() - started)
                    now_ns = time.time_ns()
                    if len(values) == len(part):
                        for p, dv in zip(part, values):
                            samples[p.index] = p.codec.sample(dv, now_ns)
                        continue
                    failure = "malformed_reply"
                except TimeoutError:
                    failure = TIMEOUT
                    self._session.mark_lost("read timed out")
                except UaStatusCodeError as exc:
                    failure = status_name(exc.code) if hasattr(exc, "code") else COMM_FAILURE
                except (ConnectionError, OSError, UaError):
                    self._session.mark_lost("read failed")
            bad = bad_sample(failure)
            for p in part:
                samples[p.index] = bad
        return samples

    async def drain(self, group: str) -> Drained | None:
        if group not in self._push:
            return None
        sub = self._subs.get(group)
        now_ns = time.time_ns()
        if sub is not None and self._session.connected:
            silence = sub.silent_for(time.monotonic())
            if silence is not None or sub.subscription_id is None:
                await self._rebuild(group, sub, silence)
        drained = sub.take() if sub is not None else Drained([], [])
        # Points that cannot be monitored on this session: bad every interval, not silent.
        for p in self._points[group]:
            if p.problem is not None:
                drained.samples.append((p.index, bad_sample(p.problem, now_ns)))
        if sub is not None:
            drained.samples.extend((i, bad_sample(r, now_ns)) for i, r in sub.refused)
        return drained

    async def write(self, group: str, index: int, value: Value) -> None:
        """One Write service call with a Variant of the node's DataType (read once per
        session); a bad status code is refused with its name as the detail."""
        p = self._points[group][index]
        if not self._session.connected:
            raise WriteRefused(NOT_CONNECTED, "no session with the server")
        if p.node is None or p.problem is not None:
            raise WriteRefused(DEVICE_ERROR, p.problem or UNRESOLVED)
        uaclient = self._session.uaclient
        try:
            async with asyncio.timeout(self._conn.timeout):
                if p.write_type is None:
                    p.write_type = await self._variant_type(p.node)
                variant = _variant(value, p.write_type, p.codec.names if p.codec else None)
                statuses = await uaclient.write(ua.WriteParameters(NodesToWrite=[ua.WriteValue(
                    NodeId=p.node, AttributeId=AttributeIds.Value,
                    Value=ua.DataValue(variant))]))
        except TimeoutError:
            self._session.mark_lost("write timed out")
            raise WriteRefused(TIMEOUT, "no answer from the server: the write may or may not "
                               "have been applied") from None
        except UaStatusCodeError as exc:
            code = getattr(exc, "code", None)
            raise WriteRefused(DEVICE_ERROR, status_name(code) if code is not None
                               else str(exc)) from None
        except (ConnectionError, OSError, UaError) as exc:
            self._session.mark_lost("write failed")
            raise WriteRefused(DEVICE_ERROR, f"{COMM_FAILURE}: {type(exc).__name__}") from None
        status = statuses[0] if statuses else None
        if status is None or not status.is_good():
            raise WriteRefused(DEVICE_ERROR, status_name(status.value) if status is not None
                               else "no status in the reply")

    async def _variant_type(self, node: ua.NodeId) -> ua.VariantType:
        """The VariantType a value of the node's DataType travels in (enumerations: Int32)."""
        dv = (await self._session.uaclient.read_attributes([node], AttributeIds.DataType))[0]
        if not dv.StatusCode.is_good() or not isinstance(dv.Value.Value, ua.NodeId):
            raise WriteRefused(DEVICE_ERROR,
                               f"DataType unreadable: {status_name(dv.StatusCode.value)}")
        assert self._session.client is not None
        return await data_type_to_variant_type(self._session.client.get_node(dv.Value.Value))

    # -- session preparation ---------------------------------------------------------

    async def _prepare(self) -> None:
        resolver = self._session.resolver
        assert resolver is not None
        points = [p for pts in self._points.values() for p in pts if p.signal.mode != "event"]
        refs = [p.signal.node or p.signal.path or "" for p in points]
        try:
            nodes = await resolver.resolve(refs, self._conn.root)
        except Unresolved as exc:
            nodes = [Unresolved(f"root: {exc}")] * len(points)
        for p, node in zip(points, nodes):
            if isinstance(node, Unresolved):
                p.node, p.problem = None, UNRESOLVED
                log.warning("node not resolved: %s", node)
            else:
                p.node, p.problem = node, None
            p.codec = ValueCodec(p.signal.index, p.signal.max_array)
            p.write_type = None
        await self._load_enum_names([p for p in points if p.signal.value_as == "name" and p.node])
        self._read_plan = {g: self._plan_reads(pts) for g, pts in self._points.items()
                           if g not in self._push}
        previous, self._subs = self._subs, {}
        for group in sorted(self._push):
            sub = await self._subscription(group)
            if group in previous:
                sub.adopt(previous[group])  # values of the last session not drained yet
            self._subs[group] = sub
            await sub.create(self._session.uaclient)

    def _plan_reads(self, points: list[_Point]) -> list[tuple[list[_Point], ua.ReadParameters]]:
        readable = [p for p in points if p.node is not None and p.problem is None]
        chunk = max(1, self._session.read_chunk)
        plan = []
        for begin in range(0, len(readable), chunk):
            part = readable[begin:begin + chunk]
            plan.append((part, ua.ReadParameters(
                MaxAge=0, TimestampsToReturn=ua.TimestampsToReturn.Both,
                NodesToRead=[ua.ReadValueId(NodeId=p.node, AttributeId=AttributeIds.Value)
                             for p in part])))
        return plan

    async def _load_enum_names(self, points: list[_Point]) -> None:
        """Enumeration names from the server (EnumStrings or EnumValues of the DataType)."""
        if not points:
            return
        uaclient = self._session.uaclient
        types = await uaclient.read_attributes([p.node for p in points], AttributeIds.DataType)
        for p, dv in zip(points, types):
            names = None
            if dv.StatusCode.is_good() and isinstance(dv.Value.Value, ua.NodeId):
                names = await _enum_names(uaclient, dv.Value.Value)
            if names is None:
                p.problem = "enum_names_unavailable"
            else:
                p.codec = ValueCodec(p.signal.index, p.signal.max_array, names)

    async def _subscription(self, group: str) -> GroupSubscription:
        resolver = self._session.resolver
        assert resolver is not None
        publishing_ms = self._intervals.get(group, 1.0) * 1000
        items = [
            ItemPlan(p.index, p.node, p.codec,
                     *_sampling_and_queue(p.signal, publishing_ms),
                     None if p.signal.server_deadband is None else (
                         ("absolute", p.signal.server_deadband.absolute)
                         if p.signal.server_deadband.absolute is not None
                         else ("percent", p.signal.server_deadband.percent)))
            for p in self._points[group]
            if p.signal.mode != "event" and p.node is not None and p.problem is None
        ]
        events = []
        for name, source in self._conn.events.items():
            if self._event_group.get(name) != group:
                continue
            mapped = [p for p in self._points[group] if p.signal.event == name]
            try:
                events.append(await self._event_plan(name, source, mapped))
            except Unresolved as exc:
                log.warning("event source %s not resolved: %s", name, exc)
                for p in mapped:
                    p.problem = UNRESOLVED
        queue = sum(i.queue_size for i in items) + sum(e.queue_size for e in events)
        assert self._session.namespaces is not None
        return GroupSubscription(publishing_ms, self._conn.keepalive_count,
                                 self._conn.lifetime_count, items, events,
                                 max(PUSH_BOUND_MIN, 20 * queue), self._session.namespaces.text)

    async def _event_plan(self, name: str, source: Any, mapped: list[_Point]) -> EventPlan:
        resolver = self._session.resolver
        assert resolver is not None
        refs = [source.notifier] + ([source.type] if source.type else [])
        resolved = await resolver.resolve(refs, self._conn.root)
        for ref, node in zip(refs, resolved):
            if isinstance(node, Unresolved):
                raise node
        notifier, of_type = resolved[0], (resolved[1] if source.type else None)
        names = list(STANDARD_FIELDS)
        for text in [*source.fields, *(p.signal.field for p in mapped)]:
            if text not in names:
                names.append(text)
        select = [resolver.event_field(text) for text in names]
        where = [(resolver.event_field(t.field), t.op, t.value) for t in source.where]
        signal_fields = []
        for p in mapped:
            p.codec = ValueCodec(p.signal.index, p.signal.max_array)
            signal_fields.append((p.index, names.index(p.signal.field), p.codec))
            p.problem = None
        return EventPlan(name, notifier, event_filter(select, where, of_type),
                         names, signal_fields, source.queue_size)

    async def _rebuild(self, group: str, sub: GroupSubscription, silence: float | None) -> None:
        now_ns = time.time_ns()
        reason = SUBSCRIPTION_STALLED if silence is not None else SUBSCRIPTION_LOST
        log.warning("subscription of group %s %s; rebuilding it", group,
                    f"silent for {silence:.1f}s" if silence is not None else "ended by the server")
        uaclient = self._session.uaclient
        try:
            await sub.delete(uaclient)
        except Exception:  # the old one may already be gone on the server
            pass
        sub.lose(reason, now_ns)
        try:
            async with asyncio.timeout(self._conn.timeout * 2):
                await sub.create(uaclient)
            self.rebuilds += 1
        except (TimeoutError, ConnectionError, OSError, UaError) as exc:
            log.warning("rebuilding the subscription failed: %s; reconnecting", exc)
            self._session.mark_lost("subscription could not be rebuilt")


_V = ua.VariantType
_WRITE_SPECS = {
    _V.Boolean: WriteSpec("bool"),
    _V.SByte: WriteSpec("int", -2**7, 2**7 - 1), _V.Byte: WriteSpec("int", 0, 2**8 - 1),
    _V.Int16: WriteSpec("int", -2**15, 2**15 - 1), _V.UInt16: WriteSpec("int", 0, 2**16 - 1),
    _V.Int32: WriteSpec("int", -2**31, 2**31 - 1), _V.UInt32: WriteSpec("int", 0, 2**32 - 1),
    _V.Int64: WriteSpec("int", -2**63, 2**63 - 1), _V.UInt64: WriteSpec("int", 0, 2**64 - 1),
    _V.Float: WriteSpec("float", -FLOAT32_MAX, FLOAT32_MAX), _V.Double: WriteSpec("float"),
    _V.String: WriteSpec("str"),
}


def _variant(value: Value, vtype: ua.VariantType, names: Mapping[int, str] | None) -> ua.Variant:
    """A Variant of `vtype` for a command's raw value (an enumeration's name is accepted
    for a signal read with value_as: name)."""
    if isinstance(value, str) and names is not None and vtype != _V.String:
        number = next((k for k, v in names.items() if v == value), None)
        if number is None:
            raise WriteRefused(OUT_OF_RANGE, f"{value!r} is not one of {', '.join(names.values())}")
        value = number
    spec = _WRITE_SPECS.get(vtype)
    if spec is None:
        raise WriteRefused(WRONG_TYPE, f"the node's DataType ({vtype.name}) cannot be written")
    return ua.Variant(coerce_write(value, spec), vtype)


async def _enum_names(uaclient: Any, datatype: ua.NodeId) -> dict[int, str] | None:
    for prop in ("EnumStrings", "EnumValues"):
        result = (await uaclient.translate_browsepaths_to_nodeids([ua.BrowsePath(
            StartingNode=datatype, RelativePath=relative_path([ua.QualifiedName(prop, 0)]))]))[0]
        if not result.StatusCode.is_good() or not result.Targets:
            continue
        target = result.Targets[0].TargetId
        node = ua.NodeId(target.Identifier, target.NamespaceIndex, target.NodeIdType)
        dv = (await uaclient.read_attributes([node], AttributeIds.Value))[0]
        value = dv.Value.Value if dv.StatusCode.is_good() else None
        if not isinstance(value, list):
            continue
        if prop == "EnumStrings":
            return {i: text.Text for i, text in enumerate(value)}
        return {int(v.Value): v.DisplayName.Text for v in value}
    return None

