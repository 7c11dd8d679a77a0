"""Config value types: durations, byte sizes, Modbus addresses, byte orders and string lengths."""

from __future__ import annotations

import math
import re

import pytest
from pydantic import ValidationError

from agent.config.models import BufferConfig, MqttConfig
from drivers.config_types import parse_duration, parse_size
from drivers.modbus.config import (
    MAX_STRING_LENGTH,
    Address,
    ModbusSignalFields,
    parse_address,
)
from drivers.registry import DRIVERS

# --------------------------------------------------------------------------- parse_duration


@pytest.mark.parametrize(("text", "seconds"), [
    ("100ms", 0.1),
    ("5s", 5.0),
    ("1m", 60.0),
    ("2h", 7200.0),
    ("250us", 250e-6),
    ("1.5s", 1.5),
    ("0.5ms", 0.0005),
    ("100 ms", 0.1),
    (" 5s ", 5.0),
    ("0s", 0.0),
    ("30", 30.0),
    ("0.25", 0.25),
    (5, 5.0),
    (0, 0.0),
    (0.1, 0.1),
    (2.5, 2.5),
])
def test_parse_duration(text: object, seconds: float) -> None:
    result = parse_duration(text)
    assert isinstance(result, float)
    assert result == pytest.approx(seconds, rel=1e-12)


@pytest.mark.parametrize("value", [
    "5 parsecs", "parsecs", "", "s", "1.5.2s", "5 s s", "1e3", "one second", "1d",
    True, False, None, [], ["1s"], {}, {"s": 1}, b"1s",
], ids=repr)
def test_parse_duration_rejects(value: object) -> None:
    message = f"{value!r} is not a duration (use e.g. 100ms, 5s, 1m)"
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_duration(value)


@pytest.mark.parametrize("value", [-1, -0.5, "-1s"])
def test_parse_duration_rejects_negative_numbers(value: float) -> None:
    with pytest.raises(ValueError, match=re.escape(f"{value!r}: a duration cannot be negative")):
        parse_duration(value)


def test_parse_duration_rejects_nan() -> None:
    with pytest.raises(ValueError):
        parse_duration(math.nan)


def test_duration_fields_parse_units_in_models() -> None:
    mqtt = MqttConfig(keepalive="1m", reconnect_min="250ms", state_interval=2)
    assert mqtt.keepalive == 60.0
    assert mqtt.reconnect_min == pytest.approx(0.25)
    assert mqtt.state_interval == 2.0
    with pytest.raises(ValidationError):
        MqttConfig(keepalive="4s")  # ge=5 applies to the parsed seconds


# --------------------------------------------------------------------------- parse_size


@pytest.mark.parametrize(("text", "size"), [
    ("512MiB", 512 * 1024**2),
    ("1GiB", 1024**3),
    ("64KiB", 64 * 1024),
    ("1TiB", 1024**4),
    ("100B", 100),
    ("2MB", 2_000_000),
    ("3GB", 3_000_000_000),
    ("64KB", 64_000),
    ("1.5GiB", 3 * 1024**3 // 2),
    ("10 MiB", 10 * 1024**2),
    (" 1GiB ", 1024**3),
    ("4096", 4096),
    (4096, 4096),
    (0, 0),
    (2**40, 2**40),
])
def test_parse_size(text: object, size: int) -> None:
    result = parse_size(text)
    assert type(result) is int
    assert result == size


def test_parse_size_kilobytes_lowercase_k() -> None:
    assert parse_size("64kB") == 64_000


@pytest.mark.parametrize("value", [
    "1 GiBB", "lots", "", "GiB", "1 GiB 2", "1gib", "1.2.3MB", "0x100",
    True, False, None, [], [512], {}, b"512",
], ids=repr)
def test_parse_size_rejects(value: object) -> None:
    message = f"{value!r} is not a size (use e.g. 512MiB, 1GiB)"
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_size(value)


def test_parse_size_rejects_negative_numbers() -> None:
    with pytest.raises(ValueError, match=re.escape("-1: a size cannot be negative")):
        parse_size(-1)
    with pytest.raises(ValueError, match=re.escape("'-1MiB': a size cannot be negative")):
        parse_size("-1MiB")


def test_parse_size_rejects_negative_fraction() -> None:
    with pytest.raises(ValueError, match="negative"):
        parse_size(-0.5)


def test_parse_size_rejects_infinity_with_value_error() -> None:
    with pytest.raises(ValueError):
        parse_size(math.inf)


def test_size_field_parses_units_in_model() -> None:
    assert BufferConfig(max_bytes="512MiB").max_bytes == 512 * 1024**2
    assert BufferConfig().max_bytes == 1024**3
    with pytest.raises(ValidationError):
        BufferConfig(max_bytes="1KiB")  # below the 64 KiB minimum


# --------------------------------------------------------------------------- Modbus addresses


@pytest.mark.parametrize(("text", "address"), [
    ("co:0", Address("co", 0)),
    ("di:7", Address("di", 7)),
    ("hr:0", Address("hr", 0)),
    ("ir:12", Address("ir", 12)),
    ("hr:65535", Address("hr", 65535)),
    ("co:65535", Address("co", 65535)),
    ("hr:35.0", Address("hr", 35, 0)),
    ("ir:3.15", Address("ir", 3, 15)),
    ("hr:00010", Address("hr", 10)),
    (" hr:5 ", Address("hr", 5)),
])
def test_parse_address(text: str, address: Address) -> None:
    assert parse_address(text) == address


def test_address_bit_tables() -> None:
    assert parse_address("co:1").is_bit_table
    assert parse_address("di:1").is_bit_table
    assert not parse_address("hr:1").is_bit_table
    assert not parse_address("ir:1.3").is_bit_table


@pytest.mark.parametrize(("text", "message"), [
    ("hr:abc", "'hr:abc' is not a Modbus address (use co:N, di:N, hr:N, ir:N or hr:N.bit)"),
    ("xx:1", "'xx:1' is not a Modbus address"),
    ("hr:", "'hr:' is not a Modbus address"),
    ("hr:-1", "'hr:-1' is not a Modbus address"),
    ("40001", "'40001' is not a Modbus address"),
    ("hr:123456", "'hr:123456' is not a Modbus address"),
    ("hr:1.", "'hr:1.' is not a Modbus address"),
    ("hr:1.100", "'hr:1.100' is not a Modbus address"),
    ("hr 1", "'hr 1' is not a Modbus address"),
    ("co:1.3", "'co:1.3': a bit index only applies to registers (hr, ir)"),
    ("di:0.0", "'di:0.0': a bit index only applies to registers (hr, ir)"),
    ("hr:35.16", "'hr:35.16': bit index must be 0..15"),
    ("ir:2.99", "'ir:2.99': bit index must be 0..15"),
    ("hr:65536", "'hr:65536': register/bit number must be 0..65535"),
    ("co:99999", "'co:99999': register/bit number must be 0..65535"),
])
def test_parse_address_rejects(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_address(text)


# --------------------------------------------------------------------------- signal fields


def fields(**data: object) -> ModbusSignalFields:
    return ModbusSignalFields.model_validate(data)


def error_of(**data: object) -> str:
    with pytest.raises(ValidationError) as info:
        fields(**data)
    return "\n".join(e["msg"] for e in info.value.errors())


def test_modbus_driver_uses_these_signal_fields() -> None:
    assert DRIVERS["modbus-tcp"].signal_model is ModbusSignalFields


@pytest.mark.parametrize(("byte_order", "word_order", "resolved"), [
    ("big", "big", "ABCD"),
    ("little", "big", "BADC"),
    ("big", "little", "CDAB"),
    ("little", "little", "DCBA"),
])
def test_resolved_order_from_byte_and_word_order(byte_order: str, word_order: str,
                                                 resolved: str) -> None:
    signal = fields(address="hr:10", type="float32", byte_order=byte_order, word_order=word_order)
    assert signal.resolved_order() == resolved


def test_resolved_order_defaults_to_big_endian() -> None:
    assert fields(address="hr:10", type="float32").resolved_order() == "ABCD"


@pytest.mark.parametrize("order", ["ABCD", "BADC", "CDAB", "DCBA"])
def test_order_overrides_byte_and_word_order(order: str) -> None:
    signal = fields(address="hr:10", type="uint32", order=order,
                    byte_order="little", word_order="little")
    assert signal.resolved_order() == order


@pytest.mark.parametrize(("field", "value"), [
    ("order", "ABDC"), ("order", "abcd"), ("byte_order", "middle"), ("word_order", "network"),
])
def test_bad_order_values_are_rejected(field: str, value: str) -> None:
    with pytest.raises(ValidationError) as info:
        fields(address="hr:10", type="float32", **{field: value})
    assert [(e["loc"], e["type"]) for e in info.value.errors()] == [((field,), "literal_error")]


@pytest.mark.parametrize(("address", "resolved"), [
    ("co:0", "bool"), ("di:3", "bool"), ("hr:35.2", "bool"), ("ir:1.0", "bool"),
    ("hr:0", "uint16"), ("ir:9", "uint16"),
])
def test_default_type_follows_the_address(address: str, resolved: str) -> None:
    signal = fields(address=address)
    assert signal.type is None
    assert signal.resolved_type() == resolved
    assert signal.register_count() == 1


@pytest.mark.parametrize(("kind", "registers"), [
    ("int16", 1), ("uint16", 1), ("int32", 2), ("uint32", 2), ("float32", 2),
    ("int64", 4), ("uint64", 4), ("float64", 4),
])
def test_register_count_of_numeric_types(kind: str, registers: int) -> None:
    assert fields(address="hr:0", type=kind).register_count() == registers


def test_address_is_stripped() -> None:
    assert fields(address=" hr:4 ", type="uint32").address == "hr:4"


# --------------------------------------------------------------------------- strings


@pytest.mark.parametrize(("type_", "length", "registers"), [
    ("string(16)", 16, 8),
    ("string(15)", 15, 8),
    ("string(1)", 1, 1),
    (" string(4) ", 4, 2),
    (f"string({MAX_STRING_LENGTH})", MAX_STRING_LENGTH, 125),
])
def test_string_shorthand(type_: str, length: int, registers: int) -> None:
    signal = fields(address="hr:40", type=type_)
    assert signal.type == "string"
    assert signal.length == length
    assert signal.resolved_type() == "string"
    assert signal.register_count() == registers


def test_string_with_explicit_length() -> None:
    signal = fields(address="hr:40", type="string", length=10)
    assert (signal.type, signal.length, signal.register_count()) == ("string", 10, 5)


def test_string_without_length_is_rejected() -> None:
    assert "type string needs a length (characters), e.g. type: string(16)" in \
        error_of(address="hr:40", type="string")


@pytest.mark.parametrize("type_", ["string(0)", f"string({MAX_STRING_LENGTH + 1})"])
def test_string_shorthand_length_is_bounded(type_: str) -> None:
    with pytest.raises(ValidationError) as info:
        fields(address="hr:40", type=type_)
    assert [e["loc"] for e in info.value.errors()] == [("length",)]


def test_string_on_a_coil_is_rejected() -> None:
    assert "'co:0' holds a single bit: type must be bool, not 'string'" in \
        error_of(address="co:0", type="string(4)")


def test_length_on_a_numeric_type_is_rejected() -> None:
    assert "length applies only to type string" in error_of(address="hr:0", type="int16", length=4)


@pytest.mark.parametrize(("address", "type_", "message"), [
    ("co:0", "float32", "'co:0' holds a single bit: type must be bool, not 'float32'"),
    ("di:2", "uint16", "'di:2' holds a single bit: type must be bool, not 'uint16'"),
    ("hr:35.1", "int16", "'hr:35.1' holds a single bit: type must be bool, not 'int16'"),
    ("hr:35", "bool", "type bool on register 'hr:35' needs a bit index, e.g. hr:35.0"),
    ("ir:7", "bool", "type bool on register 'ir:7' needs a bit index, e.g. ir:7.0"),
])
def test_type_must_fit_the_address(address: str, type_: str, message: str) -> None:
    assert message in error_of(address=address, type=type_)


@pytest.mark.parametrize(("address", "type_"), [
    ("co:0", "bool"), ("di:0", "bool"), ("hr:35.15", "bool"), ("ir:0", "int16"),
    ("hr:0", "float64"),
])
def test_type_that_fits_the_address(address: str, type_: str) -> None:
    assert fields(address=address, type=type_).resolved_type() == type_
