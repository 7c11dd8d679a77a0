"""Modbus driver (TCP, RTU on a serial line, RTU over TCP): plans each poll group once,
then reads block by block through the protocol's transport."""

from __future__ import annotations

import time
from typing import Any, Callable, Mapping, Protocol, Sequence

from drivers.base import (COMM_FAILURE, DEVICE_ERROR, MALFORMED_REPLY, NOT_CONNECTED,
                          NOT_WRITABLE, OUT_OF_RANGE, TIMEOUT, Drained, DriverSpec, RawSample,
                          Value, WriteRefused, bad_sample)
from drivers.modbus.codec import BlockCodec, MalformedReply, encode_value, point_codec, with_bit
from drivers.modbus.bus import rtu_over_tcp_bus, serial_bus
from drivers.modbus.config import (ModbusRtuConnection, ModbusRtuTcpConnection,
                                   ModbusSignalFields, ModbusTcpConnection)
from drivers.modbus.pdu import DeviceException
from drivers.modbus.planner import Block, PlanPoint, plan_reads
from drivers.modbus.transport import ModbusTcpTransport, RtuUnitTransport

ModbusConnection = ModbusTcpConnection | ModbusRtuConnection | ModbusRtuTcpConnection


class GroupPlan:
    """The compiled read plan of one poll group."""

    __slots__ = ("size", "blocks")

    def __init__(self, signals: Sequence[ModbusSignalFields], conn: ModbusConnection) -> None:
        self.size = len(signals)
        points = [
            PlanPoint(i, sig.parsed_address(), 1 if sig.parsed_address().is_bit_table
                      else sig.register_count())
            for i, sig in enumerate(signals)
        ]
        blocks = plan_reads(points, max_registers=conn.max_registers, max_bits=conn.max_bits,
                            max_gap=conn.max_gap, max_bit_gap=conn.max_bit_gap)
        self.blocks: list[tuple[Block, BlockCodec]] = []
        for block in blocks:
            codecs = []
            for point, offset in block.points:
                sig = signals[point.index]
                codecs.append(point_codec(
                    point.index, offset, sig.resolved_type(), sig.resolved_order(),
                    bit=point.address.bit, length=sig.length or 0,
                    bit_table=point.address.is_bit_table,
                ))
            self.blocks.append((block, BlockCodec(block, codecs)))


class Transport(Protocol):
    @property
    def connected(self) -> bool: ...
    async def connect(self) -> None: ...
    def close(self) -> None: ...
    async def read(self, table: str, start: int, count: int) -> Sequence[int] | Sequence[bool]: ...
    async def write(self, table: str, start: int, values: Sequence[int] | Sequence[bool]) -> None: ...


class ModbusDriver:
    """One machine (one unit) over Modbus. Never raises for device trouble: bad samples."""

    def __init__(self, conn: ModbusConnection, groups: Mapping[str, Sequence[ModbusSignalFields]],
                 transport: Transport) -> None:
        self._transport = transport
        self._plans = {name: GroupPlan(signals, conn) for name, signals in groups.items()}
        self._signals = {name: list(signals) for name, signals in groups.items()}
        self.request_observer: Callable[[float], None] | None = None  # round trip, seconds

    @property
    def connected(self) -> bool:
        return self._transport.connected

    async def connect(self) -> None:
        await self._transport.connect()

    async def close(self) -> None:
        self._transport.close()

    def request_count(self, group: str) -> int:
        return len(self._plans[group].blocks)

    async def drain(self, group: str) -> Drained | None:
        return None  # Modbus devices never send by themselves: every group is polled

    async def read(self, group: str) -> list[RawSample]:
        plan = self._plans[group]
        samples: list[RawSample | None] = [None] * plan.size
        for block, codec in plan.blocks:
            failure: str | None = None
            if not self._transport.connected:
                failure = COMM_FAILURE
            else:
                try:
                    started = time.perf_counter()
                    words = await self._transport.read(block.table, block.start, block.count)
                    if self.request_observer is not None:
                        self.request_observer(time.perf_counter() - started)
                    ts = time.time_ns()
                    for index, value in codec.decode(words):
                        samples[index] = RawSample(value, ts)
                    continue
                except DeviceException as exc:
                    failure = f"device_exception:{exc.code}"
                except MalformedReply:
                    failure = MALFORMED_REPLY
                except TimeoutError:
                    failure = TIMEOUT
                except (ConnectionError, OSError):
                    failure = COMM_FAILURE
            bad = bad_sample(failure)
            for point, _ in block.points:
                samples[point.index] = bad
        return samples  # type: ignore[return-value]

    async def write(self, group: str, index: int, value: Value) -> None:
        """Coils with function 5, registers with 6 (one register) or 16 (several, in the
        signal's byte/word order); a bit of a register reads the register, then writes it
        back with the bit changed (another writer changing that register in between would
        be overwritten: give such bits a register of their own on the device)."""
        sig = self._signals[group][index]
        address = sig.parsed_address()
        if address.table not in ("co", "hr"):
            raise WriteRefused(NOT_WRITABLE, f"{sig.address} is read-only")
        if not self._transport.connected:
            raise WriteRefused(NOT_CONNECTED, "the device is not connected")
        order = sig.resolved_order()
        try:
            if address.table == "co":
                await self._transport.write("co", address.index, [bool(value)])
            elif address.bit is not None:
                words = await self._transport.read("hr", address.index, 1)
                if len(words) != 1:
                    raise MalformedReply(f"expected 1 register, got {len(words)}")
                await self._transport.write(
                    "hr", address.index, [with_bit(int(words[0]), address.bit, order, bool(value))])
            else:
                try:
                    words = encode_value(sig.resolved_type(), order, value,  # type: ignore[arg-type]
                                         sig.length or 0)
                except (ValueError, UnicodeEncodeError) as exc:
                    raise WriteRefused(OUT_OF_RANGE, str(exc)) from None
                await self._transport.write("hr", address.index, words)
        except DeviceException as exc:
            raise WriteRefused(DEVICE_ERROR, f"device_exception:{exc.code}") from None
        except MalformedReply as exc:
            raise WriteRefused(DEVICE_ERROR, f"{MALFORMED_REPLY}: {exc}") from None
        except TimeoutError:
            raise WriteRefused(TIMEOUT, "no reply from the device: the write may or may not "
                               "have been applied") from None
        except (ConnectionError, OSError) as exc:
            raise WriteRefused(DEVICE_ERROR, f"{COMM_FAILURE}: {exc}") from None


def _tcp(conn: ModbusTcpConnection, groups: Mapping[str, Sequence[ModbusSignalFields]],
         intervals: Mapping[str, float], shared: dict[str, Any]) -> ModbusDriver:
    transport = ModbusTcpTransport(conn.host, conn.port, conn.unit_id, conn.timeout)
    return ModbusDriver(conn, groups, transport)


def _rtu(conn: ModbusRtuConnection | ModbusRtuTcpConnection,
         groups: Mapping[str, Sequence[ModbusSignalFields]], intervals: Mapping[str, float],
         shared: dict[str, Any]) -> ModbusDriver:
    key, _, _ = _line(conn)
    bus = shared.get(key)
    if bus is None:
        bus = shared[key] = (serial_bus(conn) if isinstance(conn, ModbusRtuConnection)
                             else rtu_over_tcp_bus(conn))
    return ModbusDriver(conn, groups, RtuUnitTransport(bus, conn.unit_id, conn.timeout))


def _line(conn: ModbusRtuConnection | ModbusRtuTcpConnection) -> tuple[str, Any, Any]:
    """The shared line of a unit, the settings every unit on it must agree on, its unit id."""
    if isinstance(conn, ModbusRtuConnection):
        return (f"modbus-rtu:{conn.port}",
                {"baudrate": conn.baudrate, "parity": conn.parity, "stopbits": conn.stopbits,
                 "bytesize": conn.bytesize}, conn.unit_id)
    return f"modbus-rtu-tcp:{conn.host}:{conn.port}", {}, conn.unit_id


# Exception 2, illegal data address: the machine file names a register the unit does not have.
MISMATCH_REASONS = ("device_exception:2",)

MODBUS_TCP = DriverSpec("modbus-tcp", ModbusTcpConnection, ModbusSignalFields, _tcp,
                        mismatch_reasons=MISMATCH_REASONS)
MODBUS_RTU = DriverSpec("modbus-rtu", ModbusRtuConnection, ModbusSignalFields, _rtu,
                        shared_resource=_line, mismatch_reasons=MISMATCH_REASONS)
MODBUS_RTU_TCP = DriverSpec("modbus-rtu-tcp", ModbusRtuTcpConnection, ModbusSignalFields, _rtu,
                            shared_resource=_line, mismatch_reasons=MISMATCH_REASONS)
