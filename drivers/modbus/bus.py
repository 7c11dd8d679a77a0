"""One Modbus RTU line shared by the units on it: a serial port, or RTU frames over TCP.

Every machine file that names the same port (or converter) gets the same bus from the
agent's shared dict. Requests are serialised by one FIFO lock, so the units take turns in
the order they asked (fair: a unit polling fast cannot starve a slow one). A unit that does
not answer costs its timeout plus a short guard, during which a late reply can arrive and
be discarded instead of being taken for the next unit's answer.
"""

from __future__ import annotations

import asyncio
import termios
from typing import Any, Callable, Sequence

from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusException
from pymodbus.framer import FramerType

from drivers.modbus.codec import MalformedReply
from drivers.modbus.config import ModbusRtuConnection, ModbusRtuTcpConnection
from drivers.modbus.pdu import request, result, write_request, write_result

LATE_REPLY_GUARD = 0.05  # seconds the line stays reserved after a timeout


class ModbusBus:
    """A shared RTU line: opened by the first unit that connects, closed with the last."""

    def __init__(self, name: str, make_client: Callable[[float], Any], frame_gap: float,
                 open_timeout: float) -> None:
        self.name = name
        self.busy_seconds = 0.0
        self._make_client = make_client
        self._frame_gap = frame_gap
        self._open_timeout = open_timeout
        self._lock = asyncio.Lock()
        self._client: Any = None
        self._users = 0

    @property
    def is_open(self) -> bool:
        return self._client is not None and self._client.connected

    def attach(self) -> None:
        self._users += 1

    def detach(self) -> None:
        self._users -= 1
        if self._users <= 0:
            self._users = 0
            self._close()

    async def open(self) -> None:
        """Open the line if it is not (ConnectionError/TimeoutError when it cannot be)."""
        async with self._lock:
            if self.is_open:
                return
            self._close()
            client = self._make_client(self._open_timeout)
            client.set_max_no_responses(1_000_000)
            self._client = client
            try:
                async with asyncio.timeout(self._open_timeout):
                    ok = await client.connect()
            except termios.error as exc:  # the port refuses the line settings
                self._close()
                raise ConnectionError(f"cannot configure {self.name}: {exc}") from None
            except BaseException:
                self._close()
                raise
            if not ok:
                self._close()
                raise ConnectionError(f"cannot open {self.name}")

    def _close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.close()

    async def read(self, unit: int, table: str, start: int, count: int,
                   timeout: float) -> Sequence[int] | Sequence[bool]:
        """One request on the line, in turn with the other units' requests."""
        reply = await self._exchange(
            unit, lambda client: request(client, table, start, count, unit), timeout)
        return result(reply, table)

    async def write(self, unit: int, table: str, start: int,
                    values: Sequence[int] | Sequence[bool], timeout: float) -> None:
        """One write request on the line, in turn with the other units' requests."""
        reply = await self._exchange(
            unit, lambda client: write_request(client, table, start, values, unit), timeout)
        write_result(reply, table, len(values))

    async def _exchange(self, unit: int, make_call: Any, timeout: float) -> Any:
        loop = asyncio.get_running_loop()
        async with self._lock:
            client = self._client
            if client is None or not client.connected:
                raise ConnectionError(f"{self.name} is not open")
            started = loop.time()
            try:
                async with asyncio.timeout(timeout):
                    reply = await make_call(client)
            except TimeoutError:
                await asyncio.sleep(LATE_REPLY_GUARD)
                raise TimeoutError(f"unit {unit}: no reply within {timeout}s") from None
            except ConnectionException as exc:
                self._close()  # the port itself failed: every unit reconnects
                raise ConnectionError(str(exc)) from None
            except ModbusException as exc:
                # A reply from another unit, a bad CRC and the like.
                raise MalformedReply(str(exc)) from None
            except OSError as exc:
                self._close()
                raise ConnectionError(str(exc)) from None
            finally:
                # RTU marks the end of a frame by silence: keep the line quiet before the
                # next request, and count all of it as time the bus was in use.
                await asyncio.sleep(self._frame_gap)
                self.busy_seconds += loop.time() - started
        return reply


def serial_bus(conn: ModbusRtuConnection) -> ModbusBus:
    def make(timeout: float) -> Any:
        return AsyncModbusSerialClient(
            conn.port, framer=FramerType.RTU, baudrate=conn.baudrate, bytesize=conn.bytesize,
            parity=conn.parity, stopbits=conn.stopbits,
            timeout=timeout + 1.0, retries=0, reconnect_delay=0)  # our timeouts fire first
    return ModbusBus(conn.port, make, conn.frame_gap(), max(conn.timeout, 1.0))


def rtu_over_tcp_bus(conn: ModbusRtuTcpConnection) -> ModbusBus:
    def make(timeout: float) -> Any:
        return AsyncModbusTcpClient(conn.host, port=conn.port, framer=FramerType.RTU,
                                    timeout=timeout + 1.0, retries=0, reconnect_delay=0)
    return ModbusBus(f"{conn.host}:{conn.port}", make, conn.frame_gap(), max(conn.timeout, 1.0))
