"""Data-model interface a simulated device offers to the Modbus server, plus a plain RegisterBank."""

from __future__ import annotations

import enum
from collections.abc import Sequence
from typing import Protocol


class Table(enum.Enum):
    """The four Modbus data tables."""

    COILS = "co"
    DISCRETE_INPUTS = "di"
    HOLDING_REGISTERS = "hr"
    INPUT_REGISTERS = "ir"


class ExceptionCode(enum.IntEnum):
    """Modbus exception codes used by the server."""

    ILLEGAL_FUNCTION = 0x01
    ILLEGAL_DATA_ADDRESS = 0x02
    ILLEGAL_DATA_VALUE = 0x03
    SERVER_DEVICE_FAILURE = 0x04
    SERVER_DEVICE_BUSY = 0x06
    GATEWAY_TARGET_FAILED = 0x0B


class ModbusError(Exception):
    """Raised by a data model to answer the current request with a specific exception code."""

    def __init__(self, code: ExceptionCode) -> None:
        super().__init__(f"modbus exception {int(code):#04x} ({code.name})")
        self.code = code


class DataModel(Protocol):
    """What a device must implement to be served.

    Reads return None (and writes return False) when any address of the range is not mapped
    or not writable; the server turns that into exception 02. A model may also raise
    ModbusError to pick another exception code.
    """

    def read_bits(self, table: Table, address: int, count: int) -> list[bool] | None:
        """Read `count` coils or discrete inputs starting at `address`."""
        ...

    def read_registers(self, table: Table, address: int, count: int) -> list[int] | None:
        """Read `count` holding or input registers (0..65535 each) starting at `address`."""
        ...

    def write_coils(self, address: int, values: Sequence[bool]) -> bool:
        """Write consecutive coils; False if any address is illegal."""
        ...

    def write_registers(self, address: int, values: Sequence[int]) -> bool:
        """Write consecutive holding registers; False if any address is illegal."""
        ...


class RegisterBank:
    """A fixed-size, fully writable in-memory data model (addresses 0..size-1 of each table)."""

    def __init__(
        self,
        *,
        coils: int = 0,
        discrete_inputs: int = 0,
        holding_registers: int = 0,
        input_registers: int = 0,
    ) -> None:
        self._bits: dict[Table, list[bool]] = {
            Table.COILS: [False] * coils,
            Table.DISCRETE_INPUTS: [False] * discrete_inputs,
        }
        self._regs: dict[Table, list[int]] = {
            Table.HOLDING_REGISTERS: [0] * holding_registers,
            Table.INPUT_REGISTERS: [0] * input_registers,
        }

    @staticmethod
    def _in_range(size: int, address: int, count: int) -> bool:
        return count >= 0 and 0 <= address and address + count <= size

    def read_bits(self, table: Table, address: int, count: int) -> list[bool] | None:
        """Read bits from COILS or DISCRETE_INPUTS; None if out of range."""
        bits = self._bits.get(table)
        if bits is None or not self._in_range(len(bits), address, count):
            return None
        return bits[address : address + count]

    def read_registers(self, table: Table, address: int, count: int) -> list[int] | None:
        """Read registers from HOLDING_REGISTERS or INPUT_REGISTERS; None if out of range."""
        regs = self._regs.get(table)
        if regs is None or not self._in_range(len(regs), address, count):
            return None
        return regs[address : address + count]

    def write_coils(self, address: int, values: Sequence[bool]) -> bool:
        """Modbus-side coil write."""
        return self.set_bits(Table.COILS, address, values)

    def write_registers(self, address: int, values: Sequence[int]) -> bool:
        """Modbus-side holding-register write."""
        return self.set_registers(Table.HOLDING_REGISTERS, address, values)

    def set_bits(self, table: Table, address: int, values: Sequence[bool]) -> bool:
        """Device-side write to any bit table (including read-only discrete inputs)."""
        bits = self._bits.get(table)
        if bits is None or not self._in_range(len(bits), address, len(values)):
            return False
        bits[address : address + len(values)] = [bool(v) for v in values]
        return True

    def set_registers(self, table: Table, address: int, values: Sequence[int]) -> bool:
        """Device-side write to any register table (including read-only input registers)."""
        regs = self._regs.get(table)
        if regs is None or not self._in_range(len(regs), address, len(values)):
            return False
        if any(not 0 <= v <= 0xFFFF for v in values):
            raise ValueError("register values must be 0..65535")
        regs[address : address + len(values)] = list(values)
        return True
