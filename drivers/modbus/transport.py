"""Modbus transports on pymodbus's asyncio clients, with typed failures: TCP (one
connection per machine) and a unit on a shared RTU line (see bus.py). The requests and the
checks of their replies are in pdu.py, shared with bus.py."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Sequence

from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusException

from drivers.modbus.codec import MalformedReply
from drivers.modbus.pdu import request, result, write_request, write_result

if TYPE_CHECKING:
    from drivers.modbus.bus import ModbusBus

class ModbusTcpTransport:
    """One pymodbus client per connection; a new one on every reconnect.

    pymodbus's own reconnect and retries are switched off: the agent's scheduler owns
    reconnect policy (backoff with jitter), and a retry would double the cost of a dead
    device on its poll cycle.
    """

    def __init__(self, host: str, port: int, unit_id: int, timeout: float) -> None:
        self._host, self._port, self._unit, self._timeout = host, port, unit_id, timeout
        self._client: AsyncModbusTcpClient | None = None
        self._lost: BaseException | None = None  # why pymodbus last dropped the link

    @property
    def connected(self) -> bool:
        return self._client is not None and self._client.connected

    async def connect(self) -> None:
        """Open the TCP connection or raise ConnectionError/TimeoutError."""
        self.close()
        client = AsyncModbusTcpClient(
            self._host,
            port=self._port,
            # Our own timeout fires first; pymodbus's is only a backstop.
            timeout=self._timeout + 1.0,
            retries=0,
            reconnect_delay=0,
            trace_connect=self._on_connect_change,
        )
        client.set_max_no_responses(1_000_000)
        self._client = client
        self._lost = None
        # pymodbus closes the link when it cannot decode a reply (the exception escapes its
        # data_received) and then only reports "disconnected": keep why, to tell a malformed
        # reply from a device that hung up.
        ctx = client.ctx
        lost = ctx.connection_lost

        def connection_lost(reason: Exception | None) -> None:
            self._lost = reason
            lost(reason)
        ctx.connection_lost = connection_lost  # type: ignore[method-assign, assignment]
        try:
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation that
            # lands as the inner call completes, and the task would then never stop.
            async with asyncio.timeout(self._timeout):
                ok = await client.connect()
        except BaseException:
            self.close()
            raise
        if not ok:
            self.close()
            raise ConnectionError(f"cannot connect to {self._host}:{self._port}")

    def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.close()

    def _on_connect_change(self, connected: bool) -> None:
        # pymodbus leaves a pending request waiting for its full timeout when the peer
        # closes the socket; fail it at once so a dropped link costs no timeout.
        if connected or self._client is None:
            return
        future = getattr(self._client.ctx, "response_future", None)
        if future is not None and not future.done():
            if isinstance(self._lost, ModbusException):
                future.set_exception(MalformedReply(f"undecodable reply: {self._lost}"))
            else:
                future.set_exception(ConnectionError("connection closed by device"))

    async def read(self, table: str, start: int, count: int) -> Sequence[int] | Sequence[bool]:
        """Registers or bits of one block. Raises DeviceException, MalformedReply,
        TimeoutError (connection then closed: a late reply would be misread) or
        ConnectionError."""
        reply = await self._exchange(
            lambda client: request(client, table, start, count, self._unit))
        return result(reply, table)

    async def write(self, table: str, start: int, values: Sequence[int] | Sequence[bool]) -> None:
        """Write coils (co) or holding registers (hr) from `start`; raises like `read`."""
        reply = await self._exchange(lambda client: write_request(client, table, start, values,
                                                                  self._unit))
        write_result(reply, table, len(values))

    async def _exchange(self, make_call: Any) -> Any:
        client = self._client
        if client is None or not client.connected:
            raise ConnectionError("not connected")
        call = make_call(client)
        try:
            async with asyncio.timeout(self._timeout):
                reply = await call
        except TimeoutError:
            self.close()
            raise TimeoutError(f"no reply within {self._timeout}s") from None
        except ConnectionException as exc:
            self.close()
            raise ConnectionError(str(exc)) from None
        except ModbusException as exc:
            # A reply pymodbus rejects as such. (A reply for another transaction or unit id
            # is skipped by pymodbus 3.16's framer instead: the answer never comes and the
            # request ends above, as a timeout.)
            self.close()
            raise MalformedReply(str(exc)) from None
        except (ConnectionError, OSError):
            self.close()
            raise
        except asyncio.CancelledError:
            self.close()  # a reply may still come and would be taken for the next request's
            raise
        return reply


class RtuUnitTransport:
    """One unit on a shared RTU line. A unit that does not answer is marked down (the
    agent then backs it off) while the line stays open for the other units."""

    def __init__(self, bus: ModbusBus, unit_id: int, timeout: float) -> None:
        self._bus, self._unit, self._timeout = bus, unit_id, timeout
        self._down = True
        self._attached = False

    @property
    def connected(self) -> bool:
        return not self._down and self._bus.is_open

    async def connect(self) -> None:
        if not self._attached:
            self._bus.attach()
            self._attached = True
        await self._bus.open()
        self._down = False

    def close(self) -> None:
        self._down = True
        if self._attached:
            self._attached = False
            self._bus.detach()

    async def read(self, table: str, start: int, count: int) -> Sequence[int] | Sequence[bool]:
        """Like ModbusTcpTransport.read; a timeout marks only this unit down."""
        try:
            return await self._bus.read(self._unit, table, start, count, self._timeout)
        except TimeoutError:
            self._down = True
            raise
        except ConnectionError:
            self._down = True
            raise

    async def write(self, table: str, start: int, values: Sequence[int] | Sequence[bool]) -> None:
        """Like ModbusTcpTransport.write, in turn with the other units on the line."""
        try:
            await self._bus.write(self._unit, table, start, values, self._timeout)
        except (TimeoutError, ConnectionError):
            self._down = True
            raise
