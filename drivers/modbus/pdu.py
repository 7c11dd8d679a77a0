"""One Modbus request and its reply, whatever carries them: the pymodbus call that reads or
writes a block, and the checks that turn its reply into values or a typed failure.

Its own module because both carriers use it, a TCP connection (transport.py) and a shared
RTU line (bus.py), and transport.py needs bus.py's ModbusBus: kept in either, it would
close an import circle.
"""

from __future__ import annotations

from typing import Any, Sequence

from drivers.modbus.codec import MalformedReply

_FUNCTION_CODES = {"co": 1, "di": 2, "hr": 3, "ir": 4}


class DeviceException(Exception):
    """The device answered with a Modbus exception code."""

    def __init__(self, code: int) -> None:
        super().__init__(f"device exception {code}")
        self.code = code


def request(client: Any, table: str, start: int, count: int, unit: int) -> Any:
    """The pymodbus call (a coroutine) that reads one block."""
    if table == "hr":
        return client.read_holding_registers(start, count=count, device_id=unit)
    if table == "ir":
        return client.read_input_registers(start, count=count, device_id=unit)
    if table == "co":
        return client.read_coils(start, count=count, device_id=unit)
    return client.read_discrete_inputs(start, count=count, device_id=unit)


def result(reply: Any, table: str) -> Sequence[int] | Sequence[bool]:
    """The values of a reply, or DeviceException / MalformedReply."""
    if reply.isError():
        raise DeviceException(getattr(reply, "exception_code", 0))
    if reply.function_code != _FUNCTION_CODES[table]:
        raise MalformedReply(f"reply function code {reply.function_code}")
    return reply.bits if table in ("co", "di") else reply.registers  # type: ignore[no-any-return]


def write_request(client: Any, table: str, start: int, values: Sequence[int] | Sequence[bool],
                  unit: int) -> Any:
    """The pymodbus call (a coroutine) that writes coils (5 or 15) or registers (6 or 16)."""
    if table == "co":
        if len(values) == 1:
            return client.write_coil(start, bool(values[0]), device_id=unit)
        return client.write_coils(start, [bool(v) for v in values], device_id=unit)
    if table == "hr":
        if len(values) == 1:
            return client.write_register(start, int(values[0]), device_id=unit)
        return client.write_registers(start, [int(v) for v in values], device_id=unit)
    raise ValueError(f"table {table!r} cannot be written")


def write_result(reply: Any, table: str, count: int) -> None:
    """Nothing, or DeviceException / MalformedReply."""
    if reply.isError():
        raise DeviceException(getattr(reply, "exception_code", 0))
    expected = (5 if count == 1 else 15) if table == "co" else (6 if count == 1 else 16)
    if reply.function_code != expected:
        raise MalformedReply(f"reply function code {reply.function_code}")
