"""Config models of the Modbus driver: the connection block and the signal fields."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from drivers.base import FLOAT32_MAX, WriteSpec
from drivers.config_types import Duration

ModbusType = Literal[
    "bool", "int16", "uint16", "int32", "uint32", "int64", "uint64",
    "float32", "float64", "string",
]
Order = Literal["ABCD", "BADC", "CDAB", "DCBA"]
Table = Literal["co", "di", "hr", "ir"]

_ADDRESS_RE = re.compile(r"^(co|di|hr|ir):(\d{1,5})(?:\.(\d{1,2}))?$")
_STRING_SHORTHAND_RE = re.compile(r"^string\((\d+)\)$")

# Registers each numeric type occupies; strings take ceil(length / 2).
REGISTERS: dict[str, int] = {
    "bool": 1, "int16": 1, "uint16": 1, "int32": 2, "uint32": 2,
    "int64": 4, "uint64": 4, "float32": 2, "float64": 4,
}
MAX_STRING_LENGTH = 250  # 125 registers, the most one read can return


@dataclass(frozen=True, slots=True)
class Address:
    """A parsed `table:N[.bit]` address."""

    table: Table
    index: int
    bit: int | None = None

    @property
    def is_bit_table(self) -> bool:
        return self.table in ("co", "di")


def parse_address(text: str) -> Address:
    """Parse `co:N`, `di:N`, `hr:N`, `ir:N` or `hr:N.b` / `ir:N.b` (bit b of a register)."""
    match = _ADDRESS_RE.match(text.strip())
    if not match:
        raise ValueError(
            f"{text!r} is not a Modbus address (use co:N, di:N, hr:N, ir:N or hr:N.bit)"
        )
    table, index, bit = match.group(1), int(match.group(2)), match.group(3)
    if index > 65535:
        raise ValueError(f"{text!r}: register/bit number must be 0..65535")
    if bit is not None:
        if table in ("co", "di"):
            raise ValueError(f"{text!r}: a bit index only applies to registers (hr, ir)")
        if int(bit) > 15:
            raise ValueError(f"{text!r}: bit index must be 0..15")
        return Address(table, index, int(bit))  # type: ignore[arg-type]
    return Address(table, index)  # type: ignore[arg-type]


class _ModbusConnection(BaseModel):
    """Fields every Modbus connection has: the unit, the timeout and the read planner's limits."""

    model_config = ConfigDict(extra="forbid")

    unit_id: int = Field(1, ge=0, le=255)
    timeout: Duration = Field(1.0, gt=0, description="per request")
    max_gap: int = Field(
        16, ge=0, le=124,
        description="unused registers a read may span to join two signals into one request",
    )
    max_bit_gap: int = Field(
        256, ge=0, le=1999,
        description="unused coils/inputs a read may span to join two signals into one request",
    )
    max_registers: int = Field(125, ge=1, le=125, description="registers per request")
    max_bits: int = Field(2000, ge=1, le=2000, description="coils/inputs per request")


class ModbusTcpConnection(_ModbusConnection):
    """`connection:` block of a machine polled over Modbus TCP."""

    protocol: Literal["modbus-tcp"]
    host: str = Field(min_length=1)
    port: int = Field(502, ge=1, le=65535)


class ModbusRtuConnection(_ModbusConnection):
    """`connection:` block of a unit on an RS-485/RS-232 line (Modbus RTU). Several machine
    files may name the same port: the agent shares one connection and serialises requests."""

    protocol: Literal["modbus-rtu"]
    port: str = Field(min_length=1, description="serial device, e.g. /dev/ttyUSB0")
    baudrate: int = Field(19200, ge=300, le=4_000_000)
    parity: Literal["N", "E", "O"] = Field("E", description="the Modbus default is even")
    stopbits: Literal[1, 2] = 1
    bytesize: Literal[7, 8] = 8
    inter_frame_delay: Duration | None = Field(
        None, ge=0, le=1, description="silence after each reply before the next request; "
        "default 3.5 character times (1.75 ms above 19200 baud)")

    def character_time(self) -> float:
        """Seconds one character occupies the line: start, data, parity, stop bits."""
        bits = 1 + self.bytesize + (0 if self.parity == "N" else 1) + self.stopbits
        return bits / self.baudrate

    def frame_gap(self) -> float:
        if self.inter_frame_delay is not None:
            return self.inter_frame_delay
        return 0.00175 if self.baudrate > 19200 else 3.5 * self.character_time()

    def bus_settings(self) -> tuple[int, str, int, int]:
        return (self.baudrate, self.parity, self.stopbits, self.bytesize)


class ModbusRtuTcpConnection(_ModbusConnection):
    """`connection:` block of a unit behind a serial-to-Ethernet converter: RTU frames on a
    TCP socket. Machine files naming the same host and port share one connection."""

    protocol: Literal["modbus-rtu-tcp"]
    host: str = Field(min_length=1)
    port: int = Field(4001, ge=1, le=65535)
    inter_frame_delay: Duration = Field(0.002, ge=0, le=1, description="silence after each reply")

    def frame_gap(self) -> float:
        return self.inter_frame_delay


class ModbusSignalFields(BaseModel):
    """The Modbus-specific fields of a signal."""

    model_config = ConfigDict(extra="forbid")

    address: str = Field(description="co:N, di:N, hr:N, ir:N or hr:N.bit (bit in a register)")
    type: ModbusType | None = Field(
        None, description="default: bool for coils, inputs and register bits, else uint16"
    )
    length: int | None = Field(
        None, ge=1, le=MAX_STRING_LENGTH, description="characters, for type string"
    )
    byte_order: Literal["big", "little"] = "big"
    word_order: Literal["big", "little"] = "big"
    order: Order | None = Field(
        None, description="byte order of 32/64-bit values, A = most significant byte; "
        "overrides byte_order and word_order",
    )

    @model_validator(mode="before")
    @classmethod
    def _string_shorthand(cls, data: Any) -> Any:
        # `type: string(16)` is accepted as shorthand for `type: string, length: 16`.
        if isinstance(data, dict) and isinstance(data.get("type"), str):
            match = _STRING_SHORTHAND_RE.match(data["type"].strip())
            if match and data.get("length", int(match.group(1))) == int(match.group(1)):
                return {**data, "type": "string", "length": int(match.group(1))}
        return data

    @field_validator("address")
    @classmethod
    def _check_address(cls, value: str) -> str:
        parse_address(value)
        return value.strip()

    @field_validator("type")
    @classmethod
    def _check_type_fits_address(cls, value: str | None, info: ValidationInfo) -> str | None:
        text = info.data.get("address")
        if text is None or value is None:
            return value
        address = parse_address(text)
        bitwise = address.is_bit_table or address.bit is not None
        if bitwise and value != "bool":
            raise ValueError(f"{text!r} holds a single bit: type must be bool, not {value!r}")
        if not bitwise and value == "bool":
            raise ValueError(
                f"type bool on register {text!r} needs a bit index, e.g. {text}.0"
            )
        return value

    @field_validator("length")
    @classmethod
    def _length_only_for_strings(cls, value: int | None, info: ValidationInfo) -> int | None:
        # `type` absent from info.data means it failed validation: that error is enough.
        if value is not None and "type" in info.data and info.data["type"] != "string":
            raise ValueError("length applies only to type string")
        return value

    @model_validator(mode="after")
    def _string_needs_length(self) -> "ModbusSignalFields":
        if self.type == "string" and self.length is None:
            raise ValueError("type string needs a length (characters), e.g. type: string(16)")
        return self

    def parsed_address(self) -> Address:
        return parse_address(self.address)

    def resolved_type(self) -> str:
        if self.type is not None:
            return self.type
        address = self.parsed_address()
        return "bool" if address.is_bit_table or address.bit is not None else "uint16"

    def resolved_order(self) -> str:
        """Byte order as ABCD/BADC/CDAB/DCBA (A = most significant byte on the wire first)."""
        if self.order is not None:
            return self.order
        return {
            ("big", "big"): "ABCD", ("little", "big"): "BADC",
            ("big", "little"): "CDAB", ("little", "little"): "DCBA",
        }[(self.byte_order, self.word_order)]

    def register_count(self) -> int:
        kind = self.resolved_type()
        if kind == "string":
            return ((self.length or 0) + 1) // 2
        return REGISTERS[kind]

    def write_spec(self) -> WriteSpec:
        """What a write to this address accepts (ValueError: the address is read-only).
        Coils and bits of holding registers take a bool, holding registers their type."""
        address = self.parsed_address()
        if address.table in ("di", "ir"):
            what = "a discrete input" if address.table == "di" else "an input register"
            raise ValueError(f"{self.address!r} is {what}: read-only, it cannot be writable")
        kind = self.resolved_type()
        if kind == "bool":
            return WriteSpec("bool")
        if kind == "string":
            return WriteSpec("str", max_length=self.length, encoding="latin-1")
        if kind in ("float32", "float64"):
            limit = FLOAT32_MAX if kind == "float32" else None
            return WriteSpec("float", None if limit is None else -limit, limit)
        bits = 16 * REGISTERS[kind]
        if kind.startswith("u"):
            return WriteSpec("int", 0, 2**bits - 1)
        return WriteSpec("int", -(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
