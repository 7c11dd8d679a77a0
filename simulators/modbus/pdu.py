"""Modbus application-layer (PDU) decoding and execution against a DataModel; transport-agnostic."""

from __future__ import annotations

import logging
import struct

from simulators.modbus.model import DataModel, ExceptionCode, ModbusError, Table

logger = logging.getLogger(__name__)

READ_COILS = 0x01
READ_DISCRETE_INPUTS = 0x02
READ_HOLDING_REGISTERS = 0x03
READ_INPUT_REGISTERS = 0x04
WRITE_SINGLE_COIL = 0x05
WRITE_SINGLE_REGISTER = 0x06
WRITE_MULTIPLE_COILS = 0x0F
WRITE_MULTIPLE_REGISTERS = 0x10

READ_FUNCTIONS = frozenset(
    {READ_COILS, READ_DISCRETE_INPUTS, READ_HOLDING_REGISTERS, READ_INPUT_REGISTERS}
)

# Quantity limits from the Modbus application protocol spec v1.1b3.
MAX_READ_BITS = 2000
MAX_READ_REGISTERS = 125
MAX_WRITE_BITS = 1968
MAX_WRITE_REGISTERS = 123
ADDRESS_SPACE = 0x10000

_BIT_TABLES = {READ_COILS: Table.COILS, READ_DISCRETE_INPUTS: Table.DISCRETE_INPUTS}
_REGISTER_TABLES = {
    READ_HOLDING_REGISTERS: Table.HOLDING_REGISTERS,
    READ_INPUT_REGISTERS: Table.INPUT_REGISTERS,
}


def exception_pdu(function: int, code: ExceptionCode) -> bytes:
    """Build an exception response PDU for `function`."""
    return bytes(((function | 0x80) & 0xFF, int(code)))


def pack_bits(bits: list[bool]) -> bytes:
    """Pack bits LSB-first into bytes, as Modbus transmits coils/discrete inputs."""
    out = bytearray((len(bits) + 7) // 8)
    for i, bit in enumerate(bits):
        if bit:
            out[i >> 3] |= 1 << (i & 7)
    return bytes(out)


def unpack_bits(data: bytes, count: int) -> list[bool]:
    """Inverse of pack_bits."""
    return [bool(data[i >> 3] & (1 << (i & 7))) for i in range(count)]


def handle_pdu(model: DataModel, pdu: bytes) -> bytes:
    """Execute one request PDU against `model` and return the response PDU (never raises)."""
    function = pdu[0]
    try:
        return _dispatch(model, function, pdu)
    except ModbusError as exc:
        return exception_pdu(function, exc.code)
    except Exception:  # a buggy model must not kill the connection: report device failure
        logger.exception("data model failed on function %#04x", function)
        return exception_pdu(function, ExceptionCode.SERVER_DEVICE_FAILURE)


def _fail(code: ExceptionCode) -> ModbusError:
    return ModbusError(code)


def _check_range(address: int, count: int) -> None:
    if address + count > ADDRESS_SPACE:
        raise _fail(ExceptionCode.ILLEGAL_DATA_ADDRESS)


def _dispatch(model: DataModel, function: int, pdu: bytes) -> bytes:
    if function in _BIT_TABLES:
        return _read_bits(model, _BIT_TABLES[function], function, pdu)
    if function in _REGISTER_TABLES:
        return _read_registers(model, _REGISTER_TABLES[function], function, pdu)
    if function == WRITE_SINGLE_COIL:
        return _write_single_coil(model, pdu)
    if function == WRITE_SINGLE_REGISTER:
        return _write_single_register(model, pdu)
    if function == WRITE_MULTIPLE_COILS:
        return _write_multiple_coils(model, pdu)
    if function == WRITE_MULTIPLE_REGISTERS:
        return _write_multiple_registers(model, pdu)
    raise _fail(ExceptionCode.ILLEGAL_FUNCTION)


def _address_count(pdu: bytes) -> tuple[int, int]:
    # Every supported request starts with function, address, quantity/value.
    if len(pdu) < 5:
        raise _fail(ExceptionCode.ILLEGAL_DATA_VALUE)
    address, count = struct.unpack_from(">HH", pdu, 1)
    return address, count


def _read_bits(model: DataModel, table: Table, function: int, pdu: bytes) -> bytes:
    address, count = _address_count(pdu)
    if len(pdu) != 5 or not 1 <= count <= MAX_READ_BITS:
        raise _fail(ExceptionCode.ILLEGAL_DATA_VALUE)
    _check_range(address, count)
    bits = model.read_bits(table, address, count)
    if bits is None:
        raise _fail(ExceptionCode.ILLEGAL_DATA_ADDRESS)
    packed = pack_bits(list(bits))
    return bytes((function, len(packed))) + packed


def _read_registers(model: DataModel, table: Table, function: int, pdu: bytes) -> bytes:
    address, count = _address_count(pdu)
    if len(pdu) != 5 or not 1 <= count <= MAX_READ_REGISTERS:
        raise _fail(ExceptionCode.ILLEGAL_DATA_VALUE)
    _check_range(address, count)
    regs = model.read_registers(table, address, count)
    if regs is None:
        raise _fail(ExceptionCode.ILLEGAL_DATA_ADDRESS)
    return struct.pack(f">BB{count}H", function, 2 * count, *regs)


def _write_single_coil(model: DataModel, pdu: bytes) -> bytes:
    address, value = _address_count(pdu)
    if len(pdu) != 5 or value not in (0x0000, 0xFF00):
        raise _fail(ExceptionCode.ILLEGAL_DATA_VALUE)
    if not model.write_coils(address, [value == 0xFF00]):
        raise _fail(ExceptionCode.ILLEGAL_DATA_ADDRESS)
    return bytes(pdu)


def _write_single_register(model: DataModel, pdu: bytes) -> bytes:
    address, value = _address_count(pdu)
    if len(pdu) != 5:
        raise _fail(ExceptionCode.ILLEGAL_DATA_VALUE)
    if not model.write_registers(address, [value]):
        raise _fail(ExceptionCode.ILLEGAL_DATA_ADDRESS)
    return bytes(pdu)


def _write_multiple_coils(model: DataModel, pdu: bytes) -> bytes:
    address, count = _address_count(pdu)
    byte_count = pdu[5] if len(pdu) > 5 else -1
    if (
        not 1 <= count <= MAX_WRITE_BITS
        or byte_count != (count + 7) // 8
        or len(pdu) != 6 + byte_count
    ):
        raise _fail(ExceptionCode.ILLEGAL_DATA_VALUE)
    _check_range(address, count)
    if not model.write_coils(address, unpack_bits(pdu[6:], count)):
        raise _fail(ExceptionCode.ILLEGAL_DATA_ADDRESS)
    return struct.pack(">BHH", WRITE_MULTIPLE_COILS, address, count)


def _write_multiple_registers(model: DataModel, pdu: bytes) -> bytes:
    address, count = _address_count(pdu)
    byte_count = pdu[5] if len(pdu) > 5 else -1
    if (
        not 1 <= count <= MAX_WRITE_REGISTERS
        or byte_count != 2 * count
        or len(pdu) != 6 + byte_count
    ):
        raise _fail(ExceptionCode.ILLEGAL_DATA_VALUE)
    _check_range(address, count)
    values = list(struct.unpack_from(f">{count}H", pdu, 6))
    if not model.write_registers(address, values):
        raise _fail(ExceptionCode.ILLEGAL_DATA_ADDRESS)
    return struct.pack(">BHH", WRITE_MULTIPLE_REGISTERS, address, count)
