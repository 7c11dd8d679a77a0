"""Sparkplug B datatypes and how a Python value travels in a metric's `value` oneof.

The wire rules are the specification's "Datatype Details": signed and unsigned integers up
to 32 bits in `int_value` (uint32), 64-bit integers and DateTime in `long_value` (uint64),
Float in `float_value`, Double in `double_value`, Boolean in `boolean_value`, String, Text
and UUID in `string_value`, Bytes, File and the array types in `bytes_value`.

Negative Int8/Int16/Int32 are written as their 32-bit two's complement (sign-extended, as
Tahu's Java encoder and Ignition do), negative Int64 as the 64-bit one. The specification
does not spell the sign rule out; some encoders (Tahu's Python one) write an Int8 -1 as 0xFF
rather than 0xFFFFFFFF, so reading accepts both forms and rejects anything out of range.

The array types (22..34) travel as the packed little-endian bytes the specification
describes, already packed: `set_value` takes and `get_value` gives the raw bytes.
"""

from __future__ import annotations

import json
import uuid
from enum import IntEnum
from typing import Any

from google.protobuf import json_format


class DataType(IntEnum):
    """The Sparkplug B `DataType` enum, numbers as in the specification."""

    Unknown = 0
    Int8 = 1
    Int16 = 2
    Int32 = 3
    Int64 = 4
    UInt8 = 5
    UInt16 = 6
    UInt32 = 7
    UInt64 = 8
    Float = 9
    Double = 10
    Boolean = 11
    String = 12
    DateTime = 13
    Text = 14
    UUID = 15
    DataSet = 16
    Bytes = 17
    File = 18
    Template = 19
    PropertySet = 20
    PropertySetList = 21
    Int8Array = 22
    Int16Array = 23
    Int32Array = 24
    Int64Array = 25
    UInt8Array = 26
    UInt16Array = 27
    UInt32Array = 28
    UInt64Array = 29
    FloatArray = 30
    DoubleArray = 31
    BooleanArray = 32
    StringArray = 33
    DateTimeArray = 34


INT64_MIN, INT64_MAX, UINT64_MAX = -(2**63), 2**63 - 1, 2**64 - 1

# datatype -> (bits, signed)
_INTS: dict[DataType, tuple[int, bool]] = {
    DataType.Int8: (8, True), DataType.Int16: (16, True),
    DataType.Int32: (32, True), DataType.Int64: (64, True),
    DataType.UInt8: (8, False), DataType.UInt16: (16, False),
    DataType.UInt32: (32, False), DataType.UInt64: (64, False),
}
_STRINGS = frozenset({DataType.String, DataType.Text, DataType.UUID})
_BYTES = frozenset({DataType.Bytes, DataType.File, *(DataType(n) for n in range(22, 35))})
_FLOATS = frozenset({DataType.Float, DataType.Double})
# Values that a metric or property carries as a nested message, not as a scalar.
_STRUCTURED = frozenset({DataType.DataSet, DataType.Template,
                         DataType.PropertySet, DataType.PropertySetList})

_json = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


def datatype_of(value: Any) -> DataType:
    """The datatype a reading value is published as.

    Ints that no 64-bit type holds, lists and dicts go as String (`set_value` writes their
    decimal or JSON text), so nothing a driver reads is refused.
    """
    if value is None:
        return DataType.Unknown
    if isinstance(value, bool):  # before int: bool is an int
        return DataType.Boolean
    if isinstance(value, int):
        if INT64_MIN <= value <= INT64_MAX:
            return DataType.Int64
        return DataType.UInt64 if INT64_MAX < value <= UINT64_MAX else DataType.String
    if isinstance(value, float):
        return DataType.Double
    if isinstance(value, str):
        return DataType.String
    if isinstance(value, (bytes, bytearray, memoryview)):
        return DataType.Bytes
    if isinstance(value, (list, tuple, dict)):
        return DataType.String
    raise TypeError(f"no Sparkplug datatype for {type(value).__name__}")


def _int(value: Any, datatype: DataType) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{datatype.name} needs an int, got {type(value).__name__}")
    bits, signed = _INTS[datatype]
    lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    if not lo <= value <= hi:
        raise ValueError(f"{value} is out of range for {datatype.name}")
    # Two's complement in the width of the wire field: 32 bits for int_value, 64 for long.
    return value & (0xFFFFFFFF if bits <= 32 else UINT64_MAX)


def _text(value: Any, datatype: DataType) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, (list, tuple, dict)):
        return _json(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, uuid.UUID) and datatype is DataType.UUID:
        return str(value)
    raise TypeError(f"{datatype.name} needs a str, got {type(value).__name__}")


def set_value(metric: Any, datatype: DataType, value: Any) -> None:
    """Fill the value oneof of `metric` (a Payload.Metric or Payload.PropertyValue).

    None sets `is_null` and leaves the oneof empty. Raises TypeError for a value of the
    wrong kind, ValueError for one out of the datatype's range or a datatype that this
    module does not write (DataSet, Template; PropertySet lists belong to the codec).
    """
    if value is None:
        metric.ClearField("value")
        metric.is_null = True
        return
    datatype = DataType(datatype)  # a plain int works too; an unknown number is refused
    if datatype in _INTS:
        raw = _int(value, datatype)
        if _INTS[datatype][0] <= 32:
            metric.int_value = raw
        else:
            metric.long_value = raw
    elif datatype is DataType.Double:
        metric.double_value = _float(value, datatype)
    elif datatype is DataType.Float:
        metric.float_value = _float(value, datatype)
    elif datatype is DataType.Boolean:
        if not isinstance(value, bool):
            raise TypeError(f"Boolean needs a bool, got {type(value).__name__}")
        metric.boolean_value = value
    elif datatype in _STRINGS:
        metric.string_value = _text(value, datatype)
    elif datatype is DataType.DateTime:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"DateTime needs int ms since epoch, got {type(value).__name__}")
        if not 0 <= value <= UINT64_MAX:
            raise ValueError(f"DateTime {value} is not a uint64 of ms since the epoch")
        metric.long_value = value
    elif datatype in _BYTES:
        if not isinstance(value, (bytes, bytearray, memoryview)):
            raise TypeError(f"{datatype.name} needs bytes, got {type(value).__name__}")
        if "bytes_value" not in metric.DESCRIPTOR.fields_by_name:
            raise ValueError(f"{metric.DESCRIPTOR.name} has no field for {datatype.name}")
        metric.bytes_value = bytes(value)
    else:
        raise ValueError(f"cannot write a {datatype.name} value here")
    if metric.is_null:
        metric.ClearField("is_null")


def _float(value: Any, datatype: DataType) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{datatype.name} needs a float, got {type(value).__name__}")
    return float(value)


def _signed(raw: int, wire_bits: int, bits: int, datatype: DataType) -> int:
    if raw >= 1 << (wire_bits - 1):  # undo the wire field's own two's complement
        raw -= 1 << wire_bits
    if -(1 << (bits - 1)) <= raw < 1 << (bits - 1):
        return raw
    if bits < wire_bits and raw >= 0 and raw < 1 << bits:
        return raw - (1 << bits)  # complement in the type's own width (not sign-extended)
    raise ValueError(f"{raw} is out of range for {datatype.name}")


def get_value(metric: Any) -> Any:
    """The Python value of a Payload.Metric or Payload.PropertyValue, sign restored.

    Uses the message's own datatype (`datatype` or `type`); without one (Unknown) the value
    is the oneof's raw content. Raises ValueError when the value does not fit the datatype.
    """
    if metric.is_null:
        return None
    field = metric.WhichOneof("value")
    if field is None:
        return None
    raw = getattr(metric, field)
    if field == "string_value" and not isinstance(raw, str):
        # upb hands back proto2 strings that are not UTF-8 as bytes rather than failing.
        raise ValueError("string_value is not UTF-8")
    number = metric.datatype if "datatype" in metric.DESCRIPTOR.fields_by_name else metric.type
    try:
        datatype = DataType(number)
    except ValueError:
        raise ValueError(f"unknown datatype {number}") from None
    if datatype is DataType.Unknown:
        return _plain(raw)
    if datatype in _INTS:
        _expect(field, ("int_value", "long_value"), datatype)
        bits, signed = _INTS[datatype]
        wire_bits = 32 if field == "int_value" else 64
        if signed:
            return _signed(raw, wire_bits, bits, datatype)
        if raw >> bits:
            raise ValueError(f"{raw} is out of range for {datatype.name}")
        return raw
    if datatype in _FLOATS:
        _expect(field, ("float_value", "double_value"), datatype)
        return float(raw)
    if datatype is DataType.Boolean:
        _expect(field, ("boolean_value",), datatype)
        return raw
    if datatype in _STRINGS:
        _expect(field, ("string_value",), datatype)
        return raw
    if datatype is DataType.DateTime:
        _expect(field, ("long_value",), datatype)
        return raw
    if datatype in _BYTES:
        _expect(field, ("bytes_value",), datatype)
        return raw
    if datatype in _STRUCTURED:
        return _plain(raw)
    raise ValueError(f"{field} does not hold a {datatype.name}")  # pragma: no cover


def _expect(field: str, fields: tuple[str, ...], datatype: DataType) -> None:
    if field not in fields:
        raise ValueError(f"a {datatype.name} value cannot be in {field}")


def _plain(message: Any) -> Any:
    # Structures this agent does not model (DataSet, Template, nested property sets read
    # this way) come back as plain dicts with the spec's field names.
    if isinstance(message, (int, float, str, bytes, bool)):
        return message
    return json_format.MessageToDict(message, preserving_proto_field_name=True)

