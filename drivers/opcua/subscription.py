"""Subscriptions of one push group: monitored items and event items, on asyncua's lean path.

asyncua's Subscription class builds an event object per notification and dispatches each to
a task. Here the raw PublishResult goes straight to `_on_publish`, which turns every
MonitoredItemNotification into a (signal index, RawSample) pair in a bounded list that the
agent drains once per publishing interval. The same callback notes when the server last
spoke (data or keep-alive), so a silent subscription is noticed and rebuilt.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from asyncua import ua
# From their defining modules: asyncua and asyncua.ua expose these only as implicit
# re-exports, which mypy --strict does not accept.
from asyncua.ua.attribute_ids import AttributeIds
from asyncua.ua.object_ids import ObjectIds

from drivers.base import DeviceEvent, Drained, RawSample, bad_sample
from drivers.opcua.codec import ValueCodec, datetime_ns, plain

log = logging.getLogger("edge_agent.opcua")

SUBSCRIPTION_LOST = "subscription_lost"
ITEM_PREFIX = "monitored_item:"  # + status name, for an item the server refused


@dataclass(slots=True)
class ItemPlan:
    """One monitored value: where its samples go and how they are decoded."""

    index: int
    node: ua.NodeId
    codec: ValueCodec
    sampling_ms: float
    queue_size: int
    deadband: tuple[str, float] | None  # ("absolute" | "percent", value)


@dataclass(slots=True)
class EventPlan:
    """One event item: the notifier, the filter, and where each selected field goes."""

    source: str
    notifier: ua.NodeId
    event_filter: ua.EventFilter
    field_names: list[str]  # select clause order: the names fields get in the event record
    signal_fields: list[tuple[int, int, ValueCodec]]  # (signal index, field position, codec)
    queue_size: int


@dataclass(slots=True)
class _Pending:
    samples: list[tuple[int, RawSample]] = field(default_factory=list)
    events: list[DeviceEvent] = field(default_factory=list)


STANDARD_FIELDS = ["EventType", "SourceName", "Time", "Message", "Severity"]


class GroupSubscription:
    """The live subscription of one push group; rebuilt on a new session or when silent."""

    def __init__(self, publishing_ms: float, keepalive_count: int, lifetime_count: int,
                 items: Sequence[ItemPlan], events: Sequence[EventPlan], bound: int,
                 node_text: Callable[[ua.NodeId], str] = ua.NodeId.to_string) -> None:
        self.publishing_ms = publishing_ms
        self.keepalive_count = keepalive_count
        self.lifetime_count = max(lifetime_count, 3 * keepalive_count)
        self.items = list(items)
        self.events = list(events)
        self.bound = bound
        self._node_text = node_text
        self.subscription_id: int | None = None
        self.last_heard = 0.0  # monotonic time of the last publish response of any kind
        self.silence_limit = 0.0
        self.dropped = 0  # samples dropped because the agent drained too slowly
        self.malformed = 0  # publish responses that could not be processed
        self.refused: list[tuple[int, str]] = []  # (signal index, reason) the server refused
        self._pending = _Pending()
        self._handles: dict[int, Any] = {}

    async def create(self, uaclient: Any) -> None:
        """Create the subscription and its items on a session (raises on service errors)."""
        params = ua.CreateSubscriptionParameters(
            RequestedPublishingInterval=self.publishing_ms,
            RequestedLifetimeCount=self.lifetime_count,
            RequestedMaxKeepAliveCount=self.keepalive_count,
            MaxNotificationsPerPublish=0,
            PublishingEnabled=True,
            Priority=0,
        )
        result = await uaclient.create_subscription(params, self._on_publish)
        self.subscription_id = result.SubscriptionId
        # Silence longer than two keep-alive periods (plus slack) means the server stopped.
        keepalive_s = result.RevisedPublishingInterval * result.RevisedMaxKeepAliveCount / 1000
        self.silence_limit = 2 * keepalive_s + 1.0
        self.last_heard = time.monotonic()
        requests: list[ua.MonitoredItemCreateRequest] = []
        owners: list[Any] = []
        handle = 0
        for item in self.items:
            handle += 1
            requests.append(_data_item(handle, item))
            owners.append(item)
        for event in self.events:
            handle += 1
            requests.append(_event_item(handle, event))
            owners.append(event)
        self._handles = {i + 1: owner for i, owner in enumerate(owners)}
        self.refused = []
        if not requests:
            return
        create = ua.CreateMonitoredItemsParameters(
            SubscriptionId=self.subscription_id, ItemsToCreate=requests,
            TimestampsToReturn=ua.TimestampsToReturn.Both)
        results = await uaclient.create_monitored_items(create)
        for owner, res in zip(owners, results):
            if not res.StatusCode.is_good():
                reason = ITEM_PREFIX + res.StatusCode.name
                if isinstance(owner, ItemPlan):
                    self.refused.append((owner.index, reason))
                else:
                    self.refused.extend((index, reason) for index, _, _ in owner.signal_fields)

    async def delete(self, uaclient: Any) -> None:
        sid, self.subscription_id = self.subscription_id, None
        if sid is not None:
            await uaclient.delete_subscriptions([sid])

    def silent_for(self, now: float) -> float | None:
        """Seconds of silence when beyond the keep-alive limit, else None."""
        silence = now - self.last_heard
        return silence if self.subscription_id is not None and silence > self.silence_limit else None

    def _on_publish(self, result: ua.PublishResult) -> None:
        # Called by asyncua's publish loop for every response: data, events or keep-alive.
        self.last_heard = time.monotonic()
        try:
            self._collect(result)
        except Exception:  # a reply we cannot take apart must not stop the publish loop
            self.malformed += 1
            log.exception("cannot process a publish response")

    def _collect(self, result: ua.PublishResult) -> None:
        message = result.NotificationMessage
        data = message.NotificationData
        if not data:
            return
        now_ns = time.time_ns()
        pending = self._pending
        handles = self._handles
        for notification in data:
            if isinstance(notification, ua.DataChangeNotification):
                out = pending.samples
                for item in notification.MonitoredItems:
                    plan = handles.get(item.ClientHandle)
                    if plan is not None:
                        out.append((plan.index, plan.codec.sample(item.Value, now_ns)))
            elif isinstance(notification, ua.EventNotificationList):
                for event in notification.Events:
                    plan = handles.get(event.ClientHandle)
                    if plan is not None:
                        self._on_event(plan, event.EventFields, now_ns)
            elif isinstance(notification, ua.StatusChangeNotification):
                # The server (or asyncua on a lost connection) ends the subscription.
                self.subscription_id = None
        overflow = len(pending.samples) - self.bound
        if overflow > 0:
            # Drop the oldest and count them: a bounded queue, never silent.
            del pending.samples[:overflow]
            self.dropped += overflow
        overflow = len(pending.events) - self.bound
        if overflow > 0:
            del pending.events[:overflow]
            self.dropped += overflow

    def _on_event(self, plan: EventPlan, fields: list[Any], now_ns: int) -> None:
        values = [v.Value if v is not None else None for v in fields]
        time_value = values[2] if len(values) > 2 else None
        ts_ns = datetime_ns(time_value) if time_value is not None else now_ns
        record: dict[str, Any] = {}
        for name, value in zip(plan.field_names, values):
            try:
                record[name] = (self._node_text(value) if isinstance(value, ua.NodeId)
                                else _event_value(value))
            except Exception:  # a field we cannot represent: left out, never fatal
                record[name] = None
        self._pending.events.append(DeviceEvent(plan.source, ts_ns, record))
        for index, position, codec in plan.signal_fields:
            value = values[position] if position < len(values) else None
            if value is None:
                self._pending.samples.append((index, bad_sample("no_value", ts_ns)))
                continue
            try:
                self._pending.samples.append((index, RawSample(codec.convert(value), ts_ns)))
            except Exception as exc:
                self._pending.samples.append((index, bad_sample(str(exc), ts_ns)))

    def adopt(self, old: GroupSubscription) -> None:
        """Keep what the previous session's subscription received but nobody drained yet."""
        self._pending.samples[:0] = old._pending.samples
        self._pending.events[:0] = old._pending.events
        self.dropped += old.dropped
        old._pending = _Pending()

    def take(self) -> Drained:
        """What arrived since the last call, in arrival order."""
        pending, self._pending = self._pending, _Pending()
        return Drained(pending.samples, pending.events)

    def lose(self, reason: str, now_ns: int) -> None:
        """Mark every signal of the group bad (the subscription is gone until rebuilt)."""
        bad = bad_sample(reason, now_ns)
        indices = [item.index for item in self.items]
        for event in self.events:
            indices.extend(index for index, _, _ in event.signal_fields)
        self._pending.samples.extend((index, bad) for index in indices)
        self.subscription_id = None


def _event_value(value: Any) -> Any:
    if isinstance(value, list):
        return [plain(v) for v in value[:64]]
    if isinstance(value, (bytes, bytearray)):
        return value.hex()  # EventId: an opaque identifier
    return plain(value)


def _data_item(handle: int, item: ItemPlan) -> ua.MonitoredItemCreateRequest:
    params = ua.MonitoringParameters(ClientHandle=handle, SamplingInterval=item.sampling_ms,
                                     QueueSize=item.queue_size, DiscardOldest=True)
    if item.deadband is not None:
        kind, value = item.deadband
        params.Filter = ua.DataChangeFilter(
            Trigger=ua.DataChangeTrigger.StatusValue,
            DeadbandType=(ua.DeadbandType.Absolute if kind == "absolute" else ua.DeadbandType.Percent),
            DeadbandValue=value)
    return ua.MonitoredItemCreateRequest(
        ItemToMonitor=ua.ReadValueId(NodeId=item.node, AttributeId=AttributeIds.Value),
        MonitoringMode=ua.MonitoringMode.Reporting, RequestedParameters=params)


def _event_item(handle: int, event: EventPlan) -> ua.MonitoredItemCreateRequest:
    params = ua.MonitoringParameters(ClientHandle=handle, SamplingInterval=0,
                                     QueueSize=event.queue_size, DiscardOldest=True,
                                     Filter=event.event_filter)
    return ua.MonitoredItemCreateRequest(
        ItemToMonitor=ua.ReadValueId(NodeId=event.notifier, AttributeId=AttributeIds.EventNotifier),
        MonitoringMode=ua.MonitoringMode.Reporting, RequestedParameters=params)


_OPERATORS = {
    "==": ua.FilterOperator.Equals, ">": ua.FilterOperator.GreaterThan,
    ">=": ua.FilterOperator.GreaterThanOrEqual, "<": ua.FilterOperator.LessThan,
    "<=": ua.FilterOperator.LessThanOrEqual,
}


def event_filter(select: Sequence[list[ua.QualifiedName]],
                 where: Sequence[tuple[list[ua.QualifiedName], str, Any]],
                 of_type: ua.NodeId | None) -> ua.EventFilter:
    """Select clauses by browse path; where terms AND-ed, plus an OfType term."""
    base = ua.NodeId(ObjectIds.BaseEventType)
    clauses = [ua.SimpleAttributeOperand(TypeDefinitionId=base, BrowsePath=list(path),
                                         AttributeId=AttributeIds.Value) for path in select]
    leaves: list[ua.ContentFilterElement] = []
    if of_type is not None:
        leaves.append(ua.ContentFilterElement(FilterOperator=ua.FilterOperator.OfType,
                                              FilterOperands=[ua.LiteralOperand(Value=ua.Variant(of_type))]))
    for path, op, value in where:
        operand = ua.SimpleAttributeOperand(TypeDefinitionId=base, BrowsePath=list(path),
                                            AttributeId=AttributeIds.Value)
        literal = ua.LiteralOperand(Value=ua.Variant(value))
        if op == "!=":
            leaves.append(ua.ContentFilterElement(FilterOperator=ua.FilterOperator.Not,
                                                  FilterOperands=[ua.ElementOperand(Index=0)]))
            leaves.append(ua.ContentFilterElement(FilterOperator=ua.FilterOperator.Equals,
                                                  FilterOperands=[operand, literal]))
        else:
            leaves.append(ua.ContentFilterElement(FilterOperator=_OPERATORS[op],
                                                  FilterOperands=[operand, literal]))
    return ua.EventFilter(SelectClauses=clauses, WhereClause=ua.ContentFilter(Elements=_and(leaves)))


def _and(leaves: list[ua.ContentFilterElement]) -> list[ua.ContentFilterElement]:
    """Elements of `l1 AND l2 AND ...` with element 0 the root, as the spec requires.

    A `Not` leaf refers to the element right after it (its Equals); indices are fixed up
    once the final positions are known."""
    # Group a Not with the Equals that follows it into one unit.
    units: list[list[ua.ContentFilterElement]] = []
    i = 0
    while i < len(leaves):
        if leaves[i].FilterOperator == ua.FilterOperator.Not:
            units.append([leaves[i], leaves[i + 1]])
            i += 2
        else:
            units.append([leaves[i]])
            i += 1
    if not units:
        return []
    ands = len(units) - 1
    elements: list[ua.ContentFilterElement] = [ua.ContentFilterElement() for _ in range(ands)]
    unit_index = []
    for unit in units:
        unit_index.append(len(elements))
        if len(unit) == 2:
            unit[0].FilterOperands = [ua.ElementOperand(Index=len(elements) + 1)]
        elements.extend(unit)
    for k in range(ands):
        right = unit_index[k + 1] if k == ands - 1 else k + 1
        elements[k] = ua.ContentFilterElement(
            FilterOperator=ua.FilterOperator.And,
            FilterOperands=[ua.ElementOperand(Index=unit_index[k]), ua.ElementOperand(Index=right)])
    return elements

