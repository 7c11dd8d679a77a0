"""Sparkplug B payloads (agent/sparkplug): the schema against the specification, every
datatype both ways, and what the agent publishes as read by an independent host-side
decoder (tests/support/sparkplug_decoder.py, no protobuf runtime).

Tests that check a normative statement of Sparkplug 3.0 carry its tck-id.
"""

from __future__ import annotations

import json
import math
import random
import struct
from typing import Any

import pytest
from google.protobuf import descriptor_pb2

from agent.publish.sparkplug import (
    DataType,
    Metric,
    datatype_of,
    decode,
    encode,
    get_value,
    set_value,
)
from agent.publish.sparkplug.proto import Payload
from tests.support import sparkplug_decoder as host

TS = 1_795_462_093_170
UINT64_MAX = 2**64 - 1

# ---------------------------------------------------------------------------------------
# The schema, as written in the specification's sparkplug_b.proto

SPEC_DATATYPES = {
    "Unknown": 0, "Int8": 1, "Int16": 2, "Int32": 3, "Int64": 4, "UInt8": 5, "UInt16": 6,
    "UInt32": 7, "UInt64": 8, "Float": 9, "Double": 10, "Boolean": 11, "String": 12,
    "DateTime": 13, "Text": 14, "UUID": 15, "DataSet": 16, "Bytes": 17, "File": 18,
    "Template": 19, "PropertySet": 20, "PropertySetList": 21, "Int8Array": 22,
    "Int16Array": 23, "Int32Array": 24, "Int64Array": 25, "UInt8Array": 26,
    "UInt16Array": 27, "UInt32Array": 28, "UInt64Array": 29, "FloatArray": 30,
    "DoubleArray": 31, "BooleanArray": 32, "StringArray": 33, "DateTimeArray": 34,
}

O, R = "optional", "repeated"
# message -> field -> (number, type, label); "oneof" names the oneof's members.
SPEC_MESSAGES: dict[str, dict[str, Any]] = {
    "Payload": {
        "timestamp": (1, "uint64", O), "metrics": (2, "Payload.Metric", R),
        "seq": (3, "uint64", O), "uuid": (4, "string", O), "body": (5, "bytes", O)},
    "Payload.Template": {
        "version": (1, "string", O), "metrics": (2, "Payload.Metric", R),
        "parameters": (3, "Payload.Template.Parameter", R),
        "template_ref": (4, "string", O), "is_definition": (5, "bool", O)},
    "Payload.Template.Parameter": {
        "name": (1, "string", O), "type": (2, "uint32", O),
        "int_value": (3, "uint32", O), "long_value": (4, "uint64", O),
        "float_value": (5, "float", O), "double_value": (6, "double", O),
        "boolean_value": (7, "bool", O), "string_value": (8, "string", O),
        "extension_value": (9, "Payload.Template.Parameter.ParameterValueExtension", O),
        "oneof": {"int_value", "long_value", "float_value", "double_value",
                  "boolean_value", "string_value", "extension_value"}},
    "Payload.DataSet": {
        "num_of_columns": (1, "uint64", O), "columns": (2, "string", R),
        "types": (3, "uint32", R), "rows": (4, "Payload.DataSet.Row", R)},
    "Payload.DataSet.DataSetValue": {
        "int_value": (1, "uint32", O), "long_value": (2, "uint64", O),
        "float_value": (3, "float", O), "double_value": (4, "double", O),
        "boolean_value": (5, "bool", O), "string_value": (6, "string", O),
        "extension_value": (7, "Payload.DataSet.DataSetValue.DataSetValueExtension", O),
        "oneof": {"int_value", "long_value", "float_value", "double_value",
                  "boolean_value", "string_value", "extension_value"}},
    "Payload.DataSet.Row": {"elements": (1, "Payload.DataSet.DataSetValue", R)},
    "Payload.PropertyValue": {
        "type": (1, "uint32", O), "is_null": (2, "bool", O),
        "int_value": (3, "uint32", O), "long_value": (4, "uint64", O),
        "float_value": (5, "float", O), "double_value": (6, "double", O),
        "boolean_value": (7, "bool", O), "string_value": (8, "string", O),
        "propertyset_value": (9, "Payload.PropertySet", O),
        "propertysets_value": (10, "Payload.PropertySetList", O),
        "extension_value": (11, "Payload.PropertyValue.PropertyValueExtension", O),
        "oneof": {"int_value", "long_value", "float_value", "double_value",
                  "boolean_value", "string_value", "propertyset_value",
                  "propertysets_value", "extension_value"}},
    "Payload.PropertySet": {
        "keys": (1, "string", R), "values": (2, "Payload.PropertyValue", R)},
    "Payload.PropertySetList": {"propertyset": (1, "Payload.PropertySet", R)},
    "Payload.MetaData": {
        "is_multi_part": (1, "bool", O), "content_type": (2, "string", O),
        "size": (3, "uint64", O), "seq": (4, "uint64", O), "file_name": (5, "string", O),
        "file_type": (6, "string", O), "md5": (7, "string", O),
        "description": (8, "string", O)},
    "Payload.Metric": {
        "name": (1, "string", O), "alias": (2, "uint64", O), "timestamp": (3, "uint64", O),
        "datatype": (4, "uint32", O), "is_historical": (5, "bool", O),
        "is_transient": (6, "bool", O), "is_null": (7, "bool", O),
        "metadata": (8, "Payload.MetaData", O), "properties": (9, "Payload.PropertySet", O),
        "int_value": (10, "uint32", O), "long_value": (11, "uint64", O),
        "float_value": (12, "float", O), "double_value": (13, "double", O),
        "boolean_value": (14, "bool", O), "string_value": (15, "string", O),
        "bytes_value": (16, "bytes", O), "dataset_value": (17, "Payload.DataSet", O),
        "template_value": (18, "Payload.Template", O),
        "extension_value": (19, "Payload.Metric.MetricValueExtension", O),
        "oneof": {"int_value", "long_value", "float_value", "double_value",
                  "boolean_value", "string_value", "bytes_value", "dataset_value",
                  "template_value", "extension_value"}},
}
# `extensions N to max` of each message (max = 2**29 - 1, the range end is exclusive)
SPEC_EXTENSIONS = {
    "Payload": 6, "Payload.Template": 6, "Payload.DataSet": 5, "Payload.DataSet.Row": 2,
    "Payload.PropertySet": 3, "Payload.PropertySetList": 2, "Payload.MetaData": 9,
    "Payload.Template.Parameter.ParameterValueExtension": 1,
    "Payload.DataSet.DataSetValue.DataSetValueExtension": 1,
    "Payload.PropertyValue.PropertyValueExtension": 1,
    "Payload.Metric.MetricValueExtension": 1,
}

PACKAGE = "org.eclipse.tahu.protobuf"
_F = descriptor_pb2.FieldDescriptorProto


def _schema() -> descriptor_pb2.FileDescriptorProto:
    # The file as the descriptor pool holds it, not as proto.py wrote it down.
    return descriptor_pb2.FileDescriptorProto.FromString(Payload.DESCRIPTOR.file.serialized_pb)


def _message(path: str) -> descriptor_pb2.DescriptorProto:
    messages = _schema().message_type
    for part in path.split("."):
        [msg] = [m for m in messages if m.name == part]
        messages = msg.nested_type
    return msg


def _field_type(f: descriptor_pb2.FieldDescriptorProto) -> str:
    if f.type == _F.TYPE_MESSAGE:
        return f.type_name.removeprefix(f".{PACKAGE}.")
    return _F.Type.Name(f.type).removeprefix("TYPE_").lower()


def test_schema_is_proto2_in_the_spec_s_package() -> None:
    schema = _schema()
    assert schema.syntax in ("", "proto2") and schema.package == PACKAGE
    assert [m.name for m in schema.message_type] == ["Payload"]
    assert [e.name for e in schema.enum_type] == ["DataType"]


@pytest.mark.parametrize("message", sorted(SPEC_MESSAGES))
def test_schema_fields_numbers_types_and_labels_are_the_spec_s(message: str) -> None:
    msg = _message(message)
    spec = dict(SPEC_MESSAGES[message])
    oneof = spec.pop("oneof", set())
    got = {f.name: (f.number, _field_type(f), _F.Label.Name(f.label).removeprefix(
        "LABEL_").lower()) for f in msg.field}
    assert got == spec
    assert {f.name for f in msg.field if f.HasField("oneof_index")} == oneof
    assert [o.name for o in msg.oneof_decl] == (["value"] if oneof else [])


@pytest.mark.parametrize("message", sorted(set(SPEC_MESSAGES) | set(SPEC_EXTENSIONS)))
def test_schema_extension_ranges_are_the_spec_s(message: str) -> None:
    ranges = [(r.start, r.end) for r in _message(message).extension_range]
    start = SPEC_EXTENSIONS.get(message)
    assert ranges == ([] if start is None else [(start, 2**29)])


def test_schema_nested_classes_hang_on_payload() -> None:
    for path in SPEC_MESSAGES:
        cls: Any = Payload
        for part in path.split(".")[1:]:
            cls = getattr(cls, part)
        assert cls.DESCRIPTOR.full_name == f"{PACKAGE}.{path}"
    assert isinstance(Payload().metrics.add(), Payload.Metric)


def test_datatype_numbers_are_the_spec_s_in_python_and_in_the_schema() -> None:
    """tck-id-payloads-metric-datatype-value: one of the enumerated values."""
    assert {d.name: d.value for d in DataType} == SPEC_DATATYPES
    enum = Payload.DESCRIPTOR.file.enum_types_by_name["DataType"]
    assert {v.name: v.number for v in enum.values} == SPEC_DATATYPES


# ---------------------------------------------------------------------------------------
# Every datatype, both ways

ROUND_TRIPS: list[tuple[DataType, Any]] = [
    (DataType.Int8, -128), (DataType.Int8, -1), (DataType.Int8, 0), (DataType.Int8, 127),
    (DataType.Int16, -32768), (DataType.Int16, -2), (DataType.Int16, 32767),
    (DataType.Int32, -(2**31)), (DataType.Int32, -1), (DataType.Int32, 2**31 - 1),
    (DataType.Int64, -(2**63)), (DataType.Int64, -1), (DataType.Int64, 0),
    (DataType.Int64, 2**63 - 1),
    (DataType.UInt8, 0), (DataType.UInt8, 255), (DataType.UInt16, 65535),
    (DataType.UInt32, 2**32 - 1), (DataType.UInt64, 0), (DataType.UInt64, UINT64_MAX),
    (DataType.Float, 1.5), (DataType.Float, -2.25), (DataType.Float, math.inf),
    (DataType.Float, -math.inf), (DataType.Float, 0.0),
    (DataType.Double, 0.1), (DataType.Double, -1e308), (DataType.Double, 5e-324),
    (DataType.Double, math.inf), (DataType.Double, -math.inf), (DataType.Double, -0.0),
    (DataType.Boolean, True), (DataType.Boolean, False),
    (DataType.String, ""), (DataType.String, "Pressenwerkzeug Ø 42 – 型号 🙂"),
    (DataType.Text, "a\nlonger\ttext\x00with a NUL"),
    (DataType.UUID, "9f1f3c2e-8d4b-4a59-a3f5-0c2b7d9e1a6f"),
    (DataType.DateTime, 0), (DataType.DateTime, TS),
    (DataType.Bytes, b""), (DataType.Bytes, bytes(range(256))), (DataType.File, b"%PDF-1.7"),
    # Array types travel pre-packed; this is the spec's Int32Array example [-1, 315338746].
    (DataType.Int32Array, bytes.fromhex("fffffffffaafcb12")),
]


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or (a == b and math.copysign(1, a) ==
                                                     math.copysign(1, b))
    return type(a) is type(b) and a == b


@pytest.mark.parametrize(("datatype", "value"), ROUND_TRIPS + [
    (DataType.Float, math.nan), (DataType.Double, math.nan)],
    ids=lambda x: repr(x) if not isinstance(x, bytes) or len(x) < 10 else f"{len(x)}B")
def test_round_trip_of_every_datatype(datatype: DataType, value: Any) -> None:
    data = encode([Metric("m", value, datatype, TS)], 3, TS + 1)
    ts, seq, [m] = decode(data)
    assert (ts, seq) == (TS + 1, 3)
    assert (m.name, m.datatype, m.timestamp_ms) == ("m", datatype, TS)
    assert _same(m.value, value)
    # ...and what a host application decodes, with no protobuf runtime at all.
    seen = host.decode_payload(data)
    [hm] = seen["metrics"]
    assert (hm["name"], hm["datatype"], hm["timestamp"]) == ("m", int(datatype), TS)
    assert _same(hm["value"], value)
    assert not hm["is_null"]


def test_float_goes_as_float32() -> None:
    """Float is `float` on the wire: a value comes back rounded to single precision."""
    [m] = decode(encode([Metric("f", 0.1, DataType.Float)], 0, TS))[2]
    assert m.value == struct.unpack("<f", struct.pack("<f", 0.1))[0] != 0.1


WIRE_FIELDS = {  # datatype -> (value field number, wire type) in Metric
    DataType.Int8: (10, host.VARINT), DataType.Int16: (10, host.VARINT),
    DataType.Int32: (10, host.VARINT), DataType.UInt8: (10, host.VARINT),
    DataType.UInt16: (10, host.VARINT), DataType.UInt32: (10, host.VARINT),
    DataType.Int64: (11, host.VARINT), DataType.UInt64: (11, host.VARINT),
    DataType.DateTime: (11, host.VARINT),
    DataType.Float: (12, host.FIXED32), DataType.Double: (13, host.FIXED64),
    DataType.Boolean: (14, host.VARINT),
    DataType.String: (15, host.LEN), DataType.Text: (15, host.LEN),
    DataType.UUID: (15, host.LEN),
    DataType.Bytes: (16, host.LEN), DataType.File: (16, host.LEN),
    DataType.Int32Array: (16, host.LEN),
}


def _metric_fields(data: bytes) -> list[tuple[int, int, Any]]:
    [(_, _, metric)] = [f for f in host.read_fields(data) if f[0] == 2]
    return list(host.read_fields(metric))


@pytest.mark.parametrize(("datatype", "value"), ROUND_TRIPS, ids=repr)
def test_value_goes_in_the_protobuf_type_the_spec_gives_its_datatype(
        datatype: DataType, value: Any) -> None:
    """Datatype Details: Int8..UInt32 in uint32, Int64/UInt64/DateTime in uint64, ..."""
    fields = _metric_fields(encode([Metric("m", value, datatype)], 0, TS))
    values = [(n, w) for n, w, _ in fields if n >= 10]
    assert values == [WIRE_FIELDS[datatype]]
    assert (4, host.VARINT, int(datatype)) in fields  # tck-id-payloads-metric-datatype-req


@pytest.mark.parametrize("datatype", [DataType.Int8, DataType.Int16, DataType.Int32])
def test_negative_small_ints_are_the_uint32_twos_complement(datatype: DataType) -> None:
    fields = _metric_fields(encode([Metric("m", -1, datatype)], 0, TS))
    assert (10, host.VARINT, 0xFFFFFFFF) in fields
    low = {DataType.Int8: -128, DataType.Int16: -32768, DataType.Int32: -(2**31)}[datatype]
    fields = _metric_fields(encode([Metric("m", low, datatype)], 0, TS))
    assert (10, host.VARINT, low & 0xFFFFFFFF) in fields


def test_negative_int64_is_the_uint64_twos_complement() -> None:
    fields = _metric_fields(encode([Metric("m", -2, DataType.Int64)], 0, TS))
    assert (11, host.VARINT, UINT64_MAX - 1) in fields


def _raw_payload(datatype: int, **value: Any) -> bytes:
    p = Payload(timestamp=TS)
    m = p.metrics.add(name="m", datatype=datatype)
    for field, v in value.items():
        setattr(m, field, v)
    data: bytes = p.SerializeToString()
    return data


@pytest.mark.parametrize(("datatype", "field", "raw", "value"), [
    (DataType.Int8, "int_value", 0xFF, -1),  # complement in 8 bits, not sign-extended
    (DataType.Int8, "int_value", 0x80, -128),
    (DataType.Int16, "int_value", 0xFFFE, -2),
    (DataType.Int8, "int_value", 0xFFFFFF80, -128),
    (DataType.Int8, "long_value", UINT64_MAX, -1),  # an int in the 64-bit field
    (DataType.Int32, "long_value", 2**31 - 1, 2**31 - 1),
    (DataType.UInt32, "long_value", 2**32 - 1, 2**32 - 1),
    (DataType.Int64, "int_value", 0xFFFFFFFF, -1),  # int_value is 32-bit two's complement
    (DataType.UInt64, "int_value", 0xFFFFFFFF, 0xFFFFFFFF),
    (DataType.Double, "float_value", 0.5, 0.5),
])
def test_decode_accepts_either_width_of_integer_and_float(
        datatype: DataType, field: str, raw: Any, value: Any) -> None:
    """Other encoders differ in how they write small signed ints; reading takes both."""
    [m] = decode(_raw_payload(datatype, **{field: raw}))[2]
    assert m.value == value


@pytest.mark.parametrize(("datatype", "field", "raw"), [
    (DataType.Int8, "int_value", 0x1FF),
    (DataType.Int8, "int_value", 0xFFFFFF7F),
    (DataType.Int16, "int_value", 0x10000),
    (DataType.UInt8, "int_value", 256),
    (DataType.UInt16, "int_value", 0xFFFFFFFF),
    (DataType.Int32, "long_value", 2**32),
    (DataType.UInt32, "long_value", 2**32),
    (DataType.Boolean, "string_value", "true"),
    (DataType.String, "int_value", 1),
    (DataType.Bytes, "string_value", "x"),
    (DataType.DateTime, "double_value", 1.0),
    (DataType.Int64, "double_value", 1.0),
    (99, "int_value", 1),  # tck-id-payloads-metric-datatype-value
])
def test_decode_rejects_values_outside_their_datatype(
        datatype: int, field: str, raw: Any) -> None:
    with pytest.raises(ValueError):
        decode(_raw_payload(datatype, **{field: raw}))


def test_null_value_is_is_null_without_a_value_field() -> None:
    """is_null: "Sparkplug B's mechanism of explicitly denoting a metric's value is null"."""
    data = encode([Metric("m", None, DataType.Double, TS)], 1, TS)
    [hm] = host.decode_payload(data)["metrics"]
    assert hm["is_null"] is True and hm["field"] is None and hm["value"] is None
    assert hm["datatype"] == DataType.Double  # the datatype stays: the birth's type
    [m] = decode(data)[2]
    assert m.value is None and m.datatype is DataType.Double


def test_set_value_none_clears_a_value_set_before() -> None:
    pm = Payload.Metric()
    set_value(pm, DataType.Int64, 5)
    set_value(pm, DataType.Int64, None)
    assert pm.is_null and pm.WhichOneof("value") is None
    pm.datatype = DataType.Int64
    set_value(pm, DataType.Int64, -6)
    assert not pm.HasField("is_null") and get_value(pm) == -6


# ---------------------------------------------------------------------------------------
# Reading values to datatypes


@pytest.mark.parametrize(("value", "datatype"), [
    (True, DataType.Boolean), (False, DataType.Boolean),
    (0, DataType.Int64), (-(2**63), DataType.Int64), (2**63 - 1, DataType.Int64),
    (2**63, DataType.UInt64), (UINT64_MAX, DataType.UInt64),
    (UINT64_MAX + 1, DataType.String), (-(2**63) - 1, DataType.String),
    (1.5, DataType.Double), (math.nan, DataType.Double),
    ("x", DataType.String), (b"\x00", DataType.Bytes), (bytearray(b"ab"), DataType.Bytes),
    ([1, "a"], DataType.String), ({"k": [1.5]}, DataType.String),
    (None, DataType.Unknown),
])
def test_datatype_of_reading_values(value: Any, datatype: DataType) -> None:
    assert datatype_of(value) is datatype


@pytest.mark.parametrize(("value", "text"), [
    (2**64, "18446744073709551616"), (-(2**63) - 1, "-9223372036854775809"),
    ([1, "Ø"], '[1,"Ø"]'), ({"a": {"b": None}}, '{"a":{"b":null}}'),
])
def test_values_no_numeric_type_holds_go_as_their_text(value: Any, text: str) -> None:
    datatype = datatype_of(value)
    data = encode([Metric("m", value, datatype)], 0, TS)
    [m] = decode(data)[2]
    assert (m.datatype, m.value) == (DataType.String, text)
    assert host.decode_payload(data)["metrics"][0]["value"] == text
    if not isinstance(value, int):
        assert json.loads(text) == value


def test_datatype_of_refuses_what_no_reading_is() -> None:
    with pytest.raises(TypeError):
        datatype_of(object())


@pytest.mark.parametrize(("datatype", "value", "error"), [
    (DataType.Int8, 128, ValueError), (DataType.Int8, -129, ValueError),
    (DataType.UInt8, -1, ValueError), (DataType.UInt64, UINT64_MAX + 1, ValueError),
    (DataType.Int64, 2**63, ValueError), (DataType.UInt32, 2**32, ValueError),
    (DataType.Int32, 1.5, TypeError), (DataType.Int32, True, TypeError),
    (DataType.Int32, "1", TypeError), (DataType.Boolean, 1, TypeError),
    (DataType.Double, "1.0", TypeError), (DataType.String, 1.5, TypeError),
    (DataType.Bytes, "text", TypeError), (DataType.DateTime, -1, ValueError),
    (DataType.DataSet, {"a": 1}, ValueError), (DataType.Template, {}, ValueError),
    (DataType.Unknown, 1, ValueError),
])
def test_encode_refuses_values_its_datatype_cannot_carry(
        datatype: DataType, value: Any, error: type[Exception]) -> None:
    with pytest.raises(error, match="'m'"):
        encode([Metric("m", value, datatype)], 0, TS)


# ---------------------------------------------------------------------------------------
# Names, aliases, timestamps, flags


def test_name_requirement_name_or_alias() -> None:
    """tck-id-payloads-name-requirement: the name MUST be included with every metric
    unless aliases are being used."""
    with pytest.raises(ValueError, match="name or an alias"):
        encode([Metric(None, 1, DataType.Int64)], 0, TS)


def test_alias_birth_requirement_name_and_alias() -> None:
    """tck-id-payloads-alias-birth-requirement: NBIRTH and DBIRTH metrics carry both."""
    data = encode([Metric("press/force", 1.0, DataType.Double, TS, alias=2**40)], 0, TS)
    [hm] = host.decode_payload(data)["metrics"]
    assert (hm["name"], hm["alias"]) == ("press/force", 2**40)
    assert decode(data)[2][0].alias == 2**40


def test_alias_data_cmd_requirement_alias_without_name() -> None:
    """tck-id-payloads-alias-data-cmd-requirement: DATA metrics carry only the alias."""
    data = encode([Metric(None, -5, DataType.Int16, TS, alias=7)], 4, TS)
    fields = _metric_fields(data)
    assert 1 not in [n for n, _, _ in fields]
    [hm] = host.decode_payload(data)["metrics"]
    assert (hm["name"], hm["alias"], hm["value"]) == (None, 7, -5)
    [m] = decode(data)[2]
    assert (m.name, m.alias, m.value) == (None, 7, -5)


def test_name_birth_data_requirement_metric_timestamp() -> None:
    """tck-id-payloads-name-birth-data-requirement: a metric's timestamp, when given, is on
    the wire; None leaves it out (allowed in commands: tck-id-payloads-name-cmd-requirement)."""
    data = encode([Metric("a", 1, DataType.Int64, TS - 5), Metric("b", 2, DataType.Int64)],
                  0, TS)
    a, b = host.decode_payload(data)["metrics"]
    assert (a["timestamp"], b["timestamp"]) == (TS - 5, None)
    assert [m.timestamp_ms for m in decode(data)[2]] == [TS - 5, None]


def test_is_historical_round_trip() -> None:
    data = encode([Metric("a", 1.0, DataType.Double, TS, is_historical=True),
                   Metric("b", 2.0, DataType.Double, TS)], 9, TS)
    a, b = host.decode_payload(data)["metrics"]
    assert (a["is_historical"], b["is_historical"]) == (True, False)
    _, second = [r for n, _, r in host.read_fields(data) if n == 2]
    assert 5 not in [n for n, _, _ in host.read_fields(second)]  # false: left out
    assert [m.is_historical for m in decode(data)[2]] == [True, False]


def test_metric_datatype_not_req_datatype_left_out_of_data() -> None:
    """tck-id-payloads-metric-datatype-not-req: the datatype SHOULD NOT be in NDATA/DDATA;
    without it the value reads back as its raw protobuf value."""
    data = encode([Metric(None, -1, DataType.Int32, TS, alias=1),
                   Metric(None, 2.5, DataType.Double, TS, alias=2)], 5, TS,
                  include_datatype=False)
    for hm in host.decode_payload(data)["metrics"]:
        assert hm["datatype"] is None
    a, b = decode(data)[2]
    assert (a.datatype, a.value) == (DataType.Unknown, 0xFFFFFFFF)
    assert (b.datatype, b.value) == (DataType.Unknown, 2.5)


def test_payload_timestamp_is_always_included() -> None:
    """tck-id-payloads-nbirth-timestamp / -dbirth-timestamp / -ndata-timestamp: every
    payload carries the time it was published."""
    assert host.decode_payload(encode([], None, TS))["timestamp"] == TS
    with pytest.raises(ValueError):
        encode([], 0, -1)


# ---------------------------------------------------------------------------------------
# Sequence numbers


@pytest.mark.parametrize("seq", range(256))
def test_sequence_num_always_included(seq: int) -> None:
    """tck-id-payloads-sequence-num-always-included: every message but NDEATH has a seq;
    tck-id-payloads-sequence-num-incrementing: seq runs 0..255."""
    data = encode([Metric("m", seq, DataType.UInt8, TS)], seq, TS)
    assert host.decode_payload(data)["seq"] == seq
    assert decode(data)[1] == seq
    assert (3, host.VARINT, seq) in list(host.read_fields(data))


def test_sequence_num_left_out_for_ndeath() -> None:
    """tck-id-payloads-sequence-num-always-included: except NDEATH messages (seq None)."""
    data = encode([Metric("bdSeq", 3, DataType.Int64, TS)], None, TS)
    assert 3 not in [n for n, _, _ in host.read_fields(data)]
    assert host.decode_payload(data)["seq"] is None
    assert decode(data)[:2] == (TS, None)


@pytest.mark.parametrize("seq", [-1, 256, 2**64])
def test_sequence_num_outside_0_255_is_refused(seq: int) -> None:
    """tck-id-payloads-sequence-num-incrementing: after 255 comes 0, so no seq exceeds it."""
    with pytest.raises(ValueError):
        encode([], seq, TS)


# ---------------------------------------------------------------------------------------
# Properties

PROPS: dict[str, tuple[DataType, Any]] = {
    "Quality": (DataType.Int32, 192),
    "offset": (DataType.Int32, -7),
    "engUnit": (DataType.String, "kN"),
    "engHigh": (DataType.Double, 1e3),
    "scale": (DataType.Float, 0.5),
    "readOnly": (DataType.Boolean, False),
    "counter": (DataType.Int64, -(2**63)),
    "serial": (DataType.UInt64, UINT64_MAX),
    "note": (DataType.String, None),
    "nested": (DataType.PropertySet, {"a": (DataType.Int8, -1),
                                      "b": (DataType.PropertySet, {})}),
    "list": (DataType.PropertySetList, [{"x": (DataType.Text, "t")}, {}]),
}


def _host_view(props: dict[str, tuple[DataType, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, (datatype, value) in props.items():
        if datatype is DataType.PropertySet:
            value = _host_view(value)
        elif datatype is DataType.PropertySetList:
            value = [_host_view(v) for v in value]
        out[key] = value
    return out


def test_properties_round_trip() -> None:
    data = encode([Metric("m", 1.0, DataType.Double, TS, properties=PROPS)], 0, TS)
    [m] = decode(data)[2]
    assert m.properties == PROPS
    [hm] = host.decode_payload(data)["metrics"]
    assert hm["properties"] == _host_view(PROPS)


def test_no_properties_and_empty_properties() -> None:
    data = encode([Metric("a", 1, DataType.Int64), Metric("b", 1, DataType.Int64,
                                                           properties={})], 0, TS)
    a, b = decode(data)[2]
    assert (a.properties, b.properties) == (None, {})
    ha, hb = host.decode_payload(data)["metrics"]
    assert (ha["properties"], hb["properties"]) == (None, {})


def _property_set_bytes(data: bytes) -> bytes:
    [ps] = [r for n, _, r in _metric_fields(data) if n == 9]
    return bytes(ps)


def test_propertyset_quality_value_type_and_value() -> None:
    """tck-id-payloads-propertyset-quality-value-type: the type is 3 (Int32);
    tck-id-payloads-propertyset-quality-value-value: the value is an int_value."""
    props = {"Quality": (DataType.Int32, 500)}
    ps = _property_set_bytes(encode([Metric("m", 1, DataType.Int64, properties=props)], 0, TS))
    assert host.property_types(ps) == {"Quality": 3}
    [(_, _, pv)] = [f for f in host.read_fields(ps) if f[0] == 2]
    assert list(host.read_fields(pv)) == [(1, host.VARINT, 3), (3, host.VARINT, 500)]
    assert host.decode_property_set(ps) == {"Quality": 500}


def test_propertyset_keys_and_values_array_size() -> None:
    """tck-id-payloads-propertyset-keys-array-size / -values-array-size: as many keys as
    values, both when writing and as a condition for reading."""
    ps = _property_set_bytes(encode([Metric("m", 1, DataType.Int64, properties=PROPS)], 0, TS))
    numbers = [n for n, _, _ in host.read_fields(ps)]
    assert numbers.count(1) == numbers.count(2) == len(PROPS)
    assert host.property_types(ps)["nested"] == DataType.PropertySet
    p = Payload()
    pm = p.metrics.add(name="m", datatype=DataType.Int64, long_value=1)
    pm.properties.keys.extend(["a", "b"])
    pm.properties.values.add(type=DataType.Int32, int_value=1)
    with pytest.raises(ValueError, match="2 keys for 1 values"):
        decode(p.SerializeToString())


def test_property_value_refuses_bytes() -> None:
    """PropertyValue has no bytes field: Bytes is not a property datatype."""
    with pytest.raises(ValueError, match="PropertyValue"):
        encode([Metric("m", 1, DataType.Int64, properties={"b": (DataType.Bytes, b"x")})],
               0, TS)
    with pytest.raises(TypeError):
        encode([Metric("m", 1, DataType.Int64,
                       properties={"s": (DataType.PropertySet, [1])})], 0, TS)


# ---------------------------------------------------------------------------------------
# What a host sends: commands written by hand on the wire format


def test_host_command_decodes_to_the_metrics_it_carries() -> None:
    ncmd = host.encode_ncmd([
        ("Node Control/Rebirth", host.BOOLEAN, True),
        ("press/setpoint", host.DOUBLE, 21.5),
        ("press/count", host.INT64, -42),
        ("press/count", host.INT64, 2**63 - 1),
        ("die/label", host.STRING, "Ø 42"),
        ("die/empty", host.STRING, ""),
        ("press/limit", host.DOUBLE, None),
    ], TS)
    ts, seq, metrics = decode(ncmd)
    assert (ts, seq) == (TS, None)
    assert metrics == [
        Metric("Node Control/Rebirth", True, DataType.Boolean),
        Metric("press/setpoint", 21.5, DataType.Double),
        Metric("press/count", -42, DataType.Int64),
        Metric("press/count", 2**63 - 1, DataType.Int64),
        Metric("die/label", "Ø 42", DataType.String),
        Metric("die/empty", "", DataType.String),
        Metric("press/limit", None, DataType.Double),
    ]
    # The host decoder agrees with itself, and with the agent's reading of the command.
    seen = host.decode_payload(ncmd)
    assert [(hm["name"], hm["datatype"], hm["value"]) for hm in seen["metrics"]] == [
        (m.name, int(m.datatype), m.value) for m in metrics]


def test_what_the_agent_encodes_is_what_the_host_decodes() -> None:
    metrics = [Metric(f"m{i}", v, d, TS + i, alias=i, is_historical=i % 2 == 1,
                      properties={"Quality": (DataType.Int32, 192)} if i % 3 == 0 else None)
               for i, (d, v) in enumerate(ROUND_TRIPS)]
    data = encode(metrics, 17, TS)
    seen = host.decode_payload(data)
    assert (seen["timestamp"], seen["seq"]) == (TS, 17)
    for m, hm in zip(metrics, seen["metrics"], strict=True):
        hm.pop("field")
        assert hm == {"name": m.name, "alias": m.alias, "timestamp": m.timestamp_ms,
                      "datatype": int(m.datatype), "is_historical": m.is_historical,
                      "is_null": False, "value": hm["value"],
                      "properties": None if m.properties is None else {"Quality": 192}}
        assert _same(hm["value"], m.value)
    assert decode(data) == (TS, 17, metrics)


# ---------------------------------------------------------------------------------------
# Whatever arrives: ValueError and nothing else


def _decode_or_value_error(data: bytes) -> None:
    try:
        decode(data)
    except ValueError:
        pass  # anything else fails the test with its own traceback


def _rich_payload() -> bytes:
    return encode([Metric(f"m{i}", v, d, TS, alias=i, properties=PROPS if i == 3 else None)
                   for i, (d, v) in enumerate(ROUND_TRIPS)], 200, TS)


def test_garbage_random_bytes_raise_value_error_only() -> None:
    rng = random.Random(20240611)
    for _ in range(3000):
        _decode_or_value_error(rng.randbytes(rng.randrange(0, 80)))


def test_garbage_truncated_payloads_raise_value_error_only() -> None:
    data = _rich_payload()
    for n in range(len(data)):
        _decode_or_value_error(data[:n])
    with pytest.raises(ValueError):
        decode(data[: len(data) // 2])  # cut inside a metric
    with pytest.raises(ValueError):
        decode(data[:-1])


def test_garbage_mutated_payloads_raise_value_error_only() -> None:
    data = bytearray(_rich_payload())
    rng = random.Random(7)
    for _ in range(3000):
        mutated = bytearray(data)
        for _ in range(rng.randrange(1, 4)):
            mutated[rng.randrange(len(mutated))] = rng.randrange(256)
        _decode_or_value_error(bytes(mutated))


@pytest.mark.parametrize("data", [
    b"\xff" * 11,  # a varint longer than 10 bytes
    b"\x0f",  # wire type 7
    b"\x12\x05\x0a",  # a metric longer than the payload
    b"\x0b",  # a group start never ended
    b"\x12\x03\x0a\x01\xff",  # a name that is not UTF-8
    b"\x12\x05\x20\x0c\x7a\x01\xff",  # a String value that is not UTF-8
    b"\x12\x07\x4a\x05\x0a\x01\xff\x12\x00",  # a property key that is not UTF-8
    b"\x12\x02\x20\x63",  # datatype 99
    b"\x12",  # a metric without its length
])
def test_garbage_malformed_payloads_raise_value_error(data: bytes) -> None:
    with pytest.raises(ValueError):
        decode(data)


def test_garbage_deeply_nested_property_sets_raise_value_error() -> None:
    ps = b""
    for _ in range(300):  # PropertySet{values: [PropertyValue{propertyset_value: ps}]}
        pv = b"\x08\x14\x4a" + host._uvarint(len(ps)) + ps
        ps = b"\x0a\x01k\x12" + host._uvarint(len(pv)) + pv
    metric = b"\x0a\x01m\x4a" + host._uvarint(len(ps)) + ps
    with pytest.raises(ValueError):
        decode(b"\x12" + host._uvarint(len(metric)) + metric)


def test_decode_empty_payload() -> None:
    """Zero bytes are a valid (empty) protobuf message: nothing in it, no error."""
    assert decode(b"") == (None, None, [])


def test_decode_structured_values_as_plain_data() -> None:
    """A DataSet (from a host, say) comes back as a dict with the spec's field names."""
    p = Payload(timestamp=TS)
    m = p.metrics.add(name="table", datatype=DataType.DataSet)
    m.dataset_value.num_of_columns = 2
    m.dataset_value.columns.extend(["a", "b"])
    m.dataset_value.types.extend([DataType.Int32, DataType.String])
    row = m.dataset_value.rows.add()
    row.elements.add(int_value=5)
    row.elements.add(string_value="x")
    [got] = decode(p.SerializeToString())[2]
    assert got.datatype is DataType.DataSet
    assert got.value["columns"] == ["a", "b"] and got.value["types"] == [3, 12]
    assert got.value["rows"] == [{"elements": [{"int_value": 5}, {"string_value": "x"}]}]
