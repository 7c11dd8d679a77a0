"""Fault switches of the OPC UA simulators, installed into asyncua's server: delayed
responses, paused publishing, and cheaper sampling of the simulator's own values."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Any

from asyncua import Server, ua
from asyncua.server.binary_server_asyncio import BinaryServer, OPCUAProtocol
from asyncua.server.internal_server import InternalServer
from asyncua.server.internal_subscription import InternalSubscription
from asyncua.server.monitored_item_service import MonitoredItemData, MonitoredItemValues


class Faults:
    """Switches read by the transport wrappers and publish gates of one SimServer."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.paused = False


class DelayedTransport:
    """Transport proxy that sends every write ``faults.delay`` seconds later, in order."""

    def __init__(self, transport: asyncio.Transport, faults: Faults) -> None:
        self._transport = transport
        self._faults = faults
        self._queue: deque[tuple[float, bytes]] = deque()
        self._timer: asyncio.TimerHandle | None = None

    def write(self, data: bytes) -> None:
        delay = self._faults.delay
        if delay <= 0 and not self._queue:
            self._transport.write(data)
            return
        loop = asyncio.get_running_loop()
        due = loop.time() + max(delay, 0.0)
        # Order matters (sequence numbers): never send before what is already queued.
        if self._queue and due < self._queue[-1][0]:
            due = self._queue[-1][0]
        self._queue.append((due, data))
        if self._timer is None:
            self._timer = loop.call_at(due, self._flush)

    def _flush(self) -> None:
        self._timer = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        while self._queue and self._queue[0][0] <= now:
            _, data = self._queue.popleft()
            if not self._transport.is_closing():
                self._transport.write(data)
        if self._queue:
            self._timer = loop.call_at(self._queue[0][0], self._flush)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._queue.clear()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class _SimProtocol(OPCUAProtocol):
    faults: Faults

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        super().connection_made(DelayedTransport(transport, self.faults))  # type: ignore[arg-type]
        processor = self.processor
        if processor is None:  # refused (too many connections)
            return
        evict = processor._evict_publish_request
        faults = self.faults

        def evict_publish_request() -> None:
            # A client piling up Publish requests would otherwise get BadTooManyPublishRequests
            # answers, i.e. Publish responses, while publishing is paused: drop them silently.
            if faults.paused and processor._publish_requests:
                processor._publish_requests.popleft()
                return
            evict()

        processor._evict_publish_request = evict_publish_request  # type: ignore[method-assign]


class SimBinaryServer(BinaryServer):
    faults: Faults

    def _make_protocol(self) -> OPCUAProtocol:
        proto = _SimProtocol(
            iserver=self.iserver,
            policies=self._policies,
            clients=self.clients,
            closing_tasks=self.closing_tasks,
            limits=self.limits,
        )
        proto.faults = self.faults
        return proto


class UaServer(Server):
    """asyncua Server whose socket server wraps each connection's transport (response delay)."""

    def __init__(self, faults: Faults) -> None:
        super().__init__()
        self._faults = faults

    async def start(self) -> None:
        # Same as Server.start, except for the BinaryServer subclass.
        await self._setup_server_nodes()
        await self.iserver.start()
        try:
            host, port = self._get_bind_socket_info()
            bserver = SimBinaryServer(
                self.iserver,
                host,  # type: ignore[arg-type]
                port,  # type: ignore[arg-type]
                self.limits,
            )
            bserver.faults = self._faults
            bserver.set_policies(self._policies)
            self.bserver = bserver
            await bserver.start()
        except Exception:
            await self.iserver.stop()
            raise


def _gate_publishing(sub: InternalSubscription, faults: Faults) -> None:
    """Make a client subscription publish nothing (no data, no keep-alive) while paused.

    Returning False before anything is consumed leaves queued notifications, the keep-alive
    and lifetime counters and the client's Publish requests untouched, so resuming simply
    carries on with the next publishing cycle.
    """
    original = sub.publish_results

    async def publish_results(requestdata: Any = None) -> bool:
        if faults.paused:
            return False
        return await original(requestdata)

    sub.publish_results = publish_results  # type: ignore[method-assign]


class _SharedValues(MonitoredItemValues):
    """Keeps a reference where asyncua deep-copies every sampled value (most of a bulk tick).

    Only used for simulator-namespace nodes, whose DataValues are replaced, never mutated.
    """

    def set_current_datavalue(self, cur_val: ua.DataValue) -> None:
        self.old_dvalue = self.current_dvalue
        self.current_dvalue = cur_val


def _share_sampled_values(sub: InternalSubscription, namespace_index: int) -> None:
    service = sub.monitored_item_srv
    commit = service._commit_monitored_item

    def commit_monitored_item(
        result: ua.MonitoredItemCreateResult, mdata: MonitoredItemData
    ) -> None:
        rvid = mdata.read_value_id
        if (
            rvid is not None
            and rvid.NodeId is not None
            and rvid.NodeId.NamespaceIndex == namespace_index
        ):
            mdata.mvalue = _SharedValues()
        commit(result, mdata)

    service._commit_monitored_item = commit_monitored_item  # type: ignore[method-assign]


def install_subscription_hooks(
    iserver: InternalServer, faults: Faults, namespace_index: int
) -> None:
    """Wrap CreateSubscription: client subscriptions get the publish gate and cheap sampling."""
    service = iserver.subscription_service
    create = service.create_subscription

    async def create_subscription(
        params: ua.CreateSubscriptionParameters,
        callback: Callable[..., Any],
        session_id: ua.NodeId,
        request_callback: Callable[..., Any] | None = None,
    ) -> ua.CreateSubscriptionResult:
        result = await create(params, callback, session_id, request_callback=request_callback)
        sub = service.subscriptions.get(result.SubscriptionId)
        if sub is not None and request_callback is not None:
            _gate_publishing(sub, faults)
            _share_sampled_values(sub, namespace_index)
        return result

    service.create_subscription = create_subscription  # type: ignore[method-assign]
