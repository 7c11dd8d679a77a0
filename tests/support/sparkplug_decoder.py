"""A host application's view of Sparkplug B payloads, for checking what the agent publishes.

Deliberately independent of the agent: no agent.publish.sparkplug, no google.protobuf. It reads the
protobuf wire format by hand (varints, fixed32/64, length-delimited) with the field numbers
of the specification's `sparkplug_b.proto`, so a mistake in the agent's schema or value
rules shows up as a disagreement here instead of being shared.
"""

from __future__ import annotations

import struct
from typing import Any, Iterator

VARINT, FIXED64, LEN, FIXED32 = 0, 1, 2, 5

# Sparkplug datatype numbers (spec "Data Types"), those the host side interprets.
INT8, INT16, INT32, INT64 = 1, 2, 3, 4
UINT8, UINT16, UINT32, UINT64 = 5, 6, 7, 8
FLOAT, DOUBLE, BOOLEAN, STRING = 9, 10, 11, 12
DATETIME, TEXT, UUID, BYTES, FILE = 13, 14, 15, 17, 18
PROPERTYSET, PROPERTYSETLIST = 20, 21

_SIGNED_BITS = {INT8: 8, INT16: 16, INT32: 32, INT64: 64}
_U64 = (1 << 64) - 1


class WireError(ValueError):
    """Bytes that are not a well-formed protobuf message."""


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise WireError("truncated varint")
        if shift >= 70:
            raise WireError("varint longer than 10 bytes")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return result & _U64, pos


def read_fields(buf: bytes) -> Iterator[tuple[int, int, Any]]:
    """(field number, wire type, raw value) of each field of one message, in wire order.

    Varints come as unsigned ints, fixed32/fixed64 as their 4 or 8 bytes, length-delimited
    fields as bytes.
    """
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise WireError("field number 0")
        value: Any
        if wire == VARINT:
            value, pos = _varint(buf, pos)
        elif wire == FIXED64:
            value, pos = buf[pos:pos + 8], pos + 8
        elif wire == FIXED32:
            value, pos = buf[pos:pos + 4], pos + 4
        elif wire == LEN:
            size, pos = _varint(buf, pos)
            value, pos = buf[pos:pos + size], pos + size
        else:
            raise WireError(f"wire type {wire} (groups are not used by Sparkplug)")
        if pos > len(buf):
            raise WireError("truncated field")
        yield number, wire, value


def _want(wire: int, expected: int, what: str) -> None:
    if wire != expected:
        raise WireError(f"{what}: wire type {wire}, expected {expected}")


def _restore(datatype: int | None, field: str, raw: Any) -> Any:
    """A value field back to Python per the datatype: signed ints from two's complement."""
    if field in ("int_value", "long_value") and datatype in _SIGNED_BITS:
        bits = _SIGNED_BITS[datatype]
        raw &= (1 << bits) - 1
        return raw - (1 << bits) if raw >> (bits - 1) else raw
    return raw


def _scalar(number: int, wire: int, raw: Any, first: int) -> tuple[str, Any] | None:
    """The int/long/float/double/bool/string arms, which start at `first` in each message."""
    offset = number - first
    if offset == 0:
        _want(wire, VARINT, "int_value")
        return "int_value", raw & 0xFFFFFFFF
    if offset == 1:
        _want(wire, VARINT, "long_value")
        return "long_value", raw
    if offset == 2:
        _want(wire, FIXED32, "float_value")
        return "float_value", struct.unpack("<f", raw)[0]
    if offset == 3:
        _want(wire, FIXED64, "double_value")
        return "double_value", struct.unpack("<d", raw)[0]
    if offset == 4:
        _want(wire, VARINT, "boolean_value")
        return "boolean_value", bool(raw)
    if offset == 5:
        _want(wire, LEN, "string_value")
        return "string_value", raw.decode("utf-8")
    return None


def decode_property_set(buf: bytes) -> dict[str, Any]:
    """A PropertySet as {key: value}; nested sets as dicts, set lists as lists of dicts."""
    keys: list[str] = []
    values: list[Any] = []
    for number, wire, raw in read_fields(buf):
        if number == 1:
            _want(wire, LEN, "PropertySet.keys")
            keys.append(raw.decode("utf-8"))
        elif number == 2:
            _want(wire, LEN, "PropertySet.values")
            values.append(decode_property_value(raw))
    if len(keys) != len(values):
        raise ValueError(f"PropertySet: {len(keys)} keys, {len(values)} values")
    return dict(zip(keys, values))


def decode_property_value(buf: bytes) -> Any:
    """The value of a PropertyValue (type-restored); None when is_null or no value."""
    ptype: int | None = None
    is_null = False
    field: str | None = None
    value: Any = None
    for number, wire, raw in read_fields(buf):
        if number == 1:
            _want(wire, VARINT, "PropertyValue.type")
            ptype = raw
        elif number == 2:
            _want(wire, VARINT, "PropertyValue.is_null")
            is_null = bool(raw)
        elif number == 9:
            _want(wire, LEN, "propertyset_value")
            field, value = "propertyset_value", decode_property_set(raw)
        elif number == 10:
            _want(wire, LEN, "propertysets_value")
            sets = [decode_property_set(r) for n, _, r in read_fields(raw) if n == 1]
            field, value = "propertysets_value", sets
        else:
            got = _scalar(number, wire, raw, 3)
            if got is not None:
                field, value = got
    if is_null or field is None:
        return None
    return _restore(ptype, field, value)


def property_types(buf: bytes) -> dict[str, int | None]:
    """{key: PropertyValue.type} of a serialized PropertySet, to check the declared types."""
    keys = [raw.decode("utf-8") for n, _, raw in read_fields(buf) if n == 1]
    types = [next((r for fn, _, r in read_fields(raw) if fn == 1), None)
             for n, _, raw in read_fields(buf) if n == 2]
    return dict(zip(keys, types))


def decode_metric(buf: bytes) -> dict[str, Any]:
    """One Metric as a dict (see decode_payload)."""
    m: dict[str, Any] = {"name": None, "alias": None, "timestamp": None, "datatype": None,
                         "is_historical": False, "is_null": False, "value": None,
                         "properties": None}
    field: str | None = None
    value: Any = None
    for number, wire, raw in read_fields(buf):
        if number == 1:
            _want(wire, LEN, "Metric.name")
            m["name"] = raw.decode("utf-8")
        elif number in (2, 3, 4):
            _want(wire, VARINT, "Metric alias/timestamp/datatype")
            m[{2: "alias", 3: "timestamp", 4: "datatype"}[number]] = raw
        elif number == 5:
            m["is_historical"] = bool(raw)
        elif number == 7:
            m["is_null"] = bool(raw)
        elif number == 9:
            _want(wire, LEN, "Metric.properties")
            m["properties"] = decode_property_set(raw)
        elif number == 16:
            _want(wire, LEN, "bytes_value")
            field, value = "bytes_value", bytes(raw)
        elif number in (17, 18, 19):
            field, value = "message", bytes(raw)  # DataSet/Template/extension: left raw
        else:
            got = _scalar(number, wire, raw, 10)
            if got is not None:
                field, value = got
    m["field"] = field
    if not m["is_null"] and field is not None:
        m["value"] = _restore(m["datatype"], field, value)
    return m


def decode_payload(data: bytes) -> dict[str, Any]:
    """{"timestamp", "seq", "metrics": [...]} of a Payload; None for fields left out.

    Each metric: name, alias, timestamp, datatype, is_historical, is_null, value (signed
    ints restored per datatype, floats decoded) and properties ({key: value} or None), plus
    "field": which value field was on the wire (None for none).
    """
    out: dict[str, Any] = {"timestamp": None, "seq": None, "metrics": []}
    for number, wire, raw in read_fields(bytes(data)):
        if number == 1:
            _want(wire, VARINT, "Payload.timestamp")
            out["timestamp"] = raw
        elif number == 2:
            _want(wire, LEN, "Payload.metrics")
            out["metrics"].append(decode_metric(raw))
        elif number == 3:
            _want(wire, VARINT, "Payload.seq")
            out["seq"] = raw
    return out


def _uvarint(value: int) -> bytes:
    value &= _U64  # a negative int goes as its 64-bit two's complement, as in protobuf
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if not value:
            out.append(byte)
            return bytes(out)
        out.append(byte | 0x80)


def _key(number: int, wire: int) -> bytes:
    return _uvarint(number << 3 | wire)


def _len_field(number: int, body: bytes) -> bytes:
    return _key(number, LEN) + _uvarint(len(body)) + body


def encode_ncmd(metrics: list[tuple[str, int, Any]], timestamp_ms: int) -> bytes:
    """An NCMD/DCMD payload as a host sends it: name, datatype and value of each metric.

    Values: Boolean, Int64, Double, String, or None (is_null). No seq (the host is not an
    edge node) and no metric timestamps (tck-id-payloads-name-cmd-requirement: they MAY be
    left out of commands).
    """
    body = _key(1, VARINT) + _uvarint(timestamp_ms)
    for name, datatype, value in metrics:
        m = _len_field(1, name.encode("utf-8")) + _key(4, VARINT) + _uvarint(datatype)
        if value is None:
            m += _key(7, VARINT) + b"\x01"
        elif datatype == BOOLEAN:
            m += _key(14, VARINT) + (b"\x01" if value else b"\x00")
        elif datatype == INT64:
            m += _key(11, VARINT) + _uvarint(value)
        elif datatype == DOUBLE:
            m += _key(13, FIXED64) + struct.pack("<d", value)
        elif datatype == STRING:
            m += _len_field(15, value.encode("utf-8"))
        else:
            raise ValueError(f"encode_ncmd does not write datatype {datatype}")
        body += _len_field(2, m)
    return body
