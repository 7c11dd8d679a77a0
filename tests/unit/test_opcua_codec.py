"""Tests of the OPC UA value codec (drivers.opcua.codec), the event filter builder
(drivers.opcua.subscription.event_filter) and node addressing (drivers.opcua.addressing).

Values are built with asyncua's own `ua` types, the way a Read or a publish response hands
them to the codec; every expected value is written out as a literal.
"""

from __future__ import annotations

import calendar
import datetime as dt
import operator
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from asyncua import ua

from drivers.base import RawSample
from drivers.opcua.addressing import (
    BrowsePath,
    NodeRef,
    Step,
    is_node_id,
    parse_browse_path,
    parse_node_id,
)
from drivers.opcua.codec import ValueCodec, datetime_ns, quality_of, status_name
from drivers.opcua.subscription import event_filter

VT = ua.VariantType
SC = ua.StatusCodes
UTC = dt.UTC
NOW_NS = 1_700_000_000_123_456_789
GUID = "72962b91-fa75-4ae6-8d28-b404dc7daf63"


def dv(value: Any, kind: ua.VariantType | None = None, status: int | None = None,
       source: dt.datetime | None = None, server: dt.datetime | None = None) -> ua.DataValue:
    variant = ua.Variant(value, kind) if kind is not None else ua.Variant(value)
    return ua.DataValue(variant, StatusCode=ua.StatusCode(status) if status is not None
                        else ua.StatusCode(SC.Good),
                        SourceTimestamp=source, ServerTimestamp=server)


def sample(data: ua.DataValue, codec: ValueCodec | None = None) -> RawSample:
    return (codec or ValueCodec()).sample(data, NOW_NS)


def epoch_ns(*fields: int, microsecond: int = 0) -> int:
    """ns since 1970 of a UTC wall-clock time, computed without datetime arithmetic."""
    return calendar.timegm((*fields, 0, 0, 0)) * 1_000_000_000 + microsecond * 1000


# --------------------------------------------------------------------------- quality


def test_good_status_is_good_without_reason() -> None:
    s = sample(dv(12.5, VT.Double, status=0))
    assert (s.value, s.quality, s.reason) == (12.5, "good", None)
    assert quality_of(0) == ("good", None)


def test_missing_status_code_counts_as_good() -> None:
    data = ua.DataValue(ua.Variant(7, VT.Int32), StatusCode=None)
    s = sample(data)
    assert (s.value, s.quality, s.reason) == (7, "good", None)


@pytest.mark.parametrize(("code", "name"), [
    (SC.UncertainLastUsableValue, "UncertainLastUsableValue"),
    (SC.UncertainSensorNotAccurate, "UncertainSensorNotAccurate"),
    (SC.UncertainSubstituteValue, "UncertainSubstituteValue"),
    (SC.UncertainInitialValue, "UncertainInitialValue"),
])
def test_uncertain_keeps_the_value_with_the_status_name(code: int, name: str) -> None:
    s = sample(dv(41.0, VT.Float, status=code))
    assert (s.value, s.quality, s.reason) == (41.0, "uncertain", name)
    assert type(s.value) is float
    assert quality_of(code) == ("uncertain", name)


def test_uncertain_without_a_value_is_bad_with_the_status_name() -> None:
    s = sample(dv(None, status=SC.UncertainNoCommunicationLastUsableValue))
    assert (s.value, s.quality, s.reason) == (None, "bad", "UncertainNoCommunicationLastUsableValue")


@pytest.mark.parametrize(("code", "name"), [
    (SC.BadNodeIdUnknown, "BadNodeIdUnknown"),
    (SC.BadCommunicationError, "BadCommunicationError"),
    (SC.BadOutOfService, "BadOutOfService"),
    (SC.BadWaitingForInitialData, "BadWaitingForInitialData"),
    (SC.Bad, "Bad"),
])
def test_bad_drops_the_value_and_names_the_status(code: int, name: str) -> None:
    s = sample(dv(3.0, VT.Double, status=code))  # a stale value the server still sends
    assert (s.value, s.quality, s.reason) == (None, "bad", name)
    assert quality_of(code) == ("bad", name)


@pytest.mark.parametrize(("code", "quality", "name"), [
    (0x00000480, "good", None),                           # Good + overflow + semantics bits
    (0x000003FF, "good", None),
    (0x0000FFFF, "good", None),
    (0x80340000 | 0x0480, "bad", "BadNodeIdUnknown"),     # BadNodeIdUnknown + info bits
    (0x808D0000 | 0x00FF, "bad", "BadOutOfService"),
    (0x40900000 | 0x0400, "uncertain", "UncertainLastUsableValue"),
    (0xC0000000, "bad", "Bad"),                           # severity 11: reserved, treat as bad
], ids=lambda v: f"0x{v:08X}" if isinstance(v, int) else None)
def test_info_bits_do_not_change_the_mapping(code: int, quality: str, name: str | None) -> None:
    assert quality_of(code) == (quality, name)
    s = sample(dv(5, VT.Int32, status=code))
    assert (s.quality, s.reason) == (quality, name)
    assert s.value == (None if quality == "bad" else 5)


@pytest.mark.parametrize("code", [0x81230000, 0x41230000, 0x00120000, 0xBFFF0000, 0xFFFFFFFF,
                                  0x7FFF1234, 0x00000001], ids=lambda v: f"0x{v:08X}")
def test_unknown_status_codes_never_raise(code: int) -> None:
    name = status_name(code)
    assert isinstance(name, str) and name
    quality, reason = quality_of(code)
    assert quality == {0: "good", 1: "uncertain"}.get(code >> 30, "bad")
    assert reason == (None if quality == "good" else name)
    s = sample(dv(1, VT.Int32, status=code))
    assert s.quality == quality


@pytest.mark.parametrize(("code", "quality"), [(0x81230000, "bad"), (0x41230000, "uncertain")],
                         ids=["0x81230000", "0x41230000"])
def test_unknown_status_code_gets_a_hex_name(code: int, quality: str) -> None:
    assert status_name(code) == f"0x{code:08X}"
    assert quality_of(code) == (quality, f"0x{code:08X}")


def test_status_name_of_known_codes() -> None:
    assert status_name(0) == "Good"
    assert status_name(SC.BadNodeIdUnknown) == "BadNodeIdUnknown"
    assert status_name(0x80340000) == "BadNodeIdUnknown"
    assert status_name(0x803403FF) == "BadNodeIdUnknown"  # cached per full code: still right
    assert status_name(0x80340000) == "BadNodeIdUnknown"


# --------------------------------------------------------------------------- timestamps


def test_source_timestamp_is_the_sample_time_to_the_nanosecond() -> None:
    source = dt.datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)
    server = dt.datetime(2024, 5, 6, 7, 8, 10, tzinfo=UTC)
    s = sample(dv(1.0, VT.Double, source=source, server=server))
    assert s.ts_ns == epoch_ns(2024, 5, 6, 7, 8, 9, microsecond=123456) == 1714979289123456000
    assert type(s.ts_ns) is int


def test_server_timestamp_when_there_is_no_source_timestamp() -> None:
    server = dt.datetime(2024, 5, 6, 7, 8, 10, 999999, tzinfo=UTC)
    assert sample(dv(1.0, VT.Double, server=server)).ts_ns == \
        epoch_ns(2024, 5, 6, 7, 8, 10, microsecond=999999)


def test_now_when_the_server_sends_no_timestamp() -> None:
    assert sample(dv(1.0, VT.Double)).ts_ns == NOW_NS


def test_bad_sample_keeps_the_source_timestamp() -> None:
    source = dt.datetime(2030, 1, 1, tzinfo=UTC)
    s = sample(dv(1.0, VT.Double, status=SC.BadCommunicationError, source=source))
    assert (s.ts_ns, s.quality) == (epoch_ns(2030, 1, 1, 0, 0, 0), "bad")


def test_naive_datetime_is_taken_as_utc() -> None:
    naive = dt.datetime(2024, 2, 29, 23, 59, 59, 1)
    assert datetime_ns(naive) == epoch_ns(2024, 2, 29, 23, 59, 59, microsecond=1)
    assert sample(dv(1, VT.Int32, source=naive)).ts_ns == datetime_ns(naive.replace(tzinfo=UTC))


def test_aware_datetime_in_another_zone_is_converted() -> None:
    local = dt.datetime(2024, 5, 6, 9, 8, 9, 500, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    assert datetime_ns(local) == epoch_ns(2024, 5, 6, 7, 8, 9, microsecond=500)


def test_datetime_ns_is_exact_far_from_the_epoch() -> None:
    # Float seconds would lose the last microsecond at this magnitude.
    late = dt.datetime(2199, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)
    assert datetime_ns(late) == epoch_ns(2199, 12, 31, 23, 59, 59, microsecond=999999)
    assert datetime_ns(dt.datetime(1970, 1, 1, tzinfo=UTC)) == 0
    assert datetime_ns(dt.datetime(1969, 12, 31, 23, 59, 59, tzinfo=UTC)) == -1_000_000_000


# --------------------------------------------------------------------------- built-in types


SCALARS: list[tuple[str, Any, ua.VariantType, Any, type]] = [
    ("Boolean-true", True, VT.Boolean, True, bool),
    ("Boolean-false", False, VT.Boolean, False, bool),
    ("SByte", -128, VT.SByte, -128, int),
    ("Byte", 255, VT.Byte, 255, int),
    ("Int16", -32768, VT.Int16, -32768, int),
    ("UInt16", 65535, VT.UInt16, 65535, int),
    ("Int32", -2147483648, VT.Int32, -2147483648, int),
    ("UInt32", 4294967295, VT.UInt32, 4294967295, int),
    ("Int64", -9223372036854775808, VT.Int64, -9223372036854775808, int),
    ("UInt64-max", 2**64 - 1, VT.UInt64, 18446744073709551615, int),
    ("Float", 0.25, VT.Float, 0.25, float),
    ("Double", -1234.5678, VT.Double, -1234.5678, float),
    ("String", "Präge 7", VT.String, "Präge 7", str),
    ("String-empty", "", VT.String, "", str),
    ("DateTime", dt.datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=UTC), VT.DateTime,
     "2024-05-06T07:08:09.123456Z", str),
    ("DateTime-whole-second", dt.datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC), VT.DateTime,
     "2024-05-06T07:08:09Z", str),
    ("DateTime-naive", dt.datetime(2024, 5, 6, 7, 8, 9), VT.DateTime, "2024-05-06T07:08:09Z", str),
    ("LocalizedText", ua.LocalizedText("Automatik", "de-DE"), VT.LocalizedText, "Automatik", str),
    ("ByteString", b"\x00\x01\xfe\xff", VT.ByteString, "AAH+/w==", str),
    ("Guid", uuid.UUID(GUID.upper()), VT.Guid, GUID, str),
    ("NodeId-string", ua.NodeId("Line.Press", 2), VT.NodeId, "ns=2;s=Line.Press", str),
    ("NodeId-numeric-ns0", ua.NodeId(85, 0), VT.NodeId, "i=85", str),
    ("NodeId-guid", ua.NodeId(uuid.UUID(GUID), 1, ua.NodeIdType.Guid), VT.NodeId,
     f"ns=1;g={GUID}", str),
    ("QualifiedName", ua.QualifiedName("Spindle", 3), VT.QualifiedName, "3:Spindle", str),
    ("QualifiedName-ns0", ua.QualifiedName("Server", 0), VT.QualifiedName, "Server", str),
    ("StatusCode-bad", ua.StatusCode(SC.BadOutOfService), VT.StatusCode, "BadOutOfService", str),
    ("StatusCode-good", ua.StatusCode(SC.Good), VT.StatusCode, "Good", str),
]


@pytest.mark.parametrize(("value", "kind", "expected", "python_type"),
                         [case[1:] for case in SCALARS], ids=[case[0] for case in SCALARS])
def test_builtin_scalar_types(value: Any, kind: ua.VariantType, expected: Any,
                              python_type: type) -> None:
    s = sample(dv(value, kind))
    assert (s.value, s.quality, s.reason) == (expected, "good", None)
    assert type(s.value) is python_type


def test_float_keeps_its_single_precision_value() -> None:
    # 0.1 as Float is what asyncua decodes from 4 bytes: the nearest float32, widened.
    import struct
    f32 = struct.unpack("<f", struct.pack("<f", 0.1))[0]
    s = sample(dv(f32, VT.Float))
    assert s.value == 0.10000000149011612 and type(s.value) is float


def test_enumeration_value_is_its_integer() -> None:
    s = sample(dv(ua.ServerState.Shutdown, VT.Int32))
    assert s.value == 4 and type(s.value) is int


# --------------------------------------------------------------------------- arrays


def test_double_array_becomes_a_list() -> None:
    s = sample(dv([1.5, -2.0, 3.25], VT.Double))
    assert (s.value, s.quality, s.reason) == ([1.5, -2.0, 3.25], "good", None)
    assert [type(v) for v in s.value] == [float, float, float]  # type: ignore[union-attr]


def test_array_elements_are_converted_like_scalars() -> None:
    texts = [ua.LocalizedText("a"), ua.LocalizedText("b")]
    assert sample(dv(texts, VT.LocalizedText)).value == ["a", "b"]
    assert sample(dv([True, False], VT.Boolean)).value == [True, False]
    assert sample(dv([b"\x01", b"\x02"], VT.ByteString)).value == ["AQ==", "Ag=="]


def test_empty_array_is_an_empty_list() -> None:
    s = sample(dv([], VT.Int32))
    assert (s.value, s.quality) == ([], "good")


def test_array_up_to_max_array_is_kept() -> None:
    s = sample(dv(list(range(4)), VT.Int32), ValueCodec(max_array=4))
    assert s.value == [0, 1, 2, 3]


def test_array_longer_than_max_array_is_bad() -> None:
    s = sample(dv(list(range(5)), VT.Int32), ValueCodec(max_array=4))
    assert (s.value, s.quality, s.reason) == (None, "bad", "array_too_large")
    s = sample(dv([0.0] * 65, VT.Double))  # the default is 64
    assert (s.value, s.quality, s.reason) == (None, "bad", "array_too_large")


@pytest.mark.parametrize(("index", "expected"), [(0, 10), (2, 30)])
def test_index_picks_one_element(index: int, expected: int) -> None:
    s = sample(dv([10, 20, 30], VT.UInt16), ValueCodec(index=index))
    assert (s.value, s.quality) == (expected, "good") and type(s.value) is int


def test_index_ignores_max_array() -> None:
    s = sample(dv(list(range(100)), VT.Int32), ValueCodec(index=99, max_array=4))
    assert s.value == 99


def test_index_converts_the_element() -> None:
    texts = [ua.LocalizedText("off"), ua.LocalizedText("on")]
    assert sample(dv(texts, VT.LocalizedText), ValueCodec(index=1)).value == "on"


@pytest.mark.parametrize("index", [3, 100])
def test_index_out_of_range_is_bad(index: int) -> None:
    s = sample(dv([10, 20, 30], VT.UInt16), ValueCodec(index=index))
    assert (s.value, s.quality, s.reason) == (None, "bad", "index_out_of_range")


def test_matrix_is_unsupported() -> None:
    variant = ua.Variant([[1.0, 2.0], [3.0, 4.0]], VT.Double)
    assert variant.Dimensions == [2, 2]
    s = sample(ua.DataValue(variant))
    assert (s.value, s.quality, s.reason) == (None, "bad", "unsupported_type:matrix")


def test_matrix_with_index_is_unsupported_as_a_matrix() -> None:
    variant = ua.Variant([[1.0, 2.0], [3.0, 4.0]], VT.Double)
    s = sample(ua.DataValue(variant), ValueCodec(index=0))
    assert (s.value, s.quality, s.reason) == (None, "bad", "unsupported_type:matrix")


# --------------------------------------------------------------------------- enum names


NAMES = {0: "Active", 1: "Interrupted"}


def test_enum_value_becomes_its_name() -> None:
    s = sample(dv(1, VT.Int32), ValueCodec(names=NAMES))
    assert (s.value, s.quality, s.reason) == ("Interrupted", "good", None)
    assert sample(dv(0, VT.Int32), ValueCodec(names=NAMES)).value == "Active"


def test_enum_name_of_an_asyncua_enumeration() -> None:
    names = {0: "Running", 1: "Failed", 4: "Shutdown"}
    assert sample(dv(ua.ServerState.Shutdown, VT.Int32), ValueCodec(names=names)).value == "Shutdown"


def test_enum_value_without_a_name_is_bad() -> None:
    s = sample(dv(7, VT.Int32), ValueCodec(names=NAMES))
    assert (s.value, s.quality, s.reason) == (None, "bad", "enum_unmapped")


def test_enum_names_with_index() -> None:
    s = sample(dv([0, 1, 0], VT.Int32), ValueCodec(index=1, names=NAMES))
    assert s.value == "Interrupted"


def test_uncertain_enum_value_keeps_its_name_and_reason() -> None:
    s = sample(dv(0, VT.Int32, status=SC.UncertainLastUsableValue), ValueCodec(names=NAMES))
    assert (s.value, s.quality, s.reason) == ("Active", "uncertain", "UncertainLastUsableValue")


# --------------------------------------------------------------------------- no value, structures


@pytest.mark.parametrize("value", [ua.Argument(Name="x"), ua.Range(1.0, 2.0)],
                         ids=["Argument", "Range"])
def test_structure_is_unsupported_by_name(value: Any) -> None:
    s = sample(dv(value, VT.ExtensionObject))
    assert (s.value, s.quality, s.reason) == (None, "bad", f"unsupported_type:{type(value).__name__}")


def test_unknown_object_is_unsupported_by_its_class_name() -> None:
    class CycleRecord:
        pass

    data = ua.DataValue(ua.Variant(0, VT.Int32))
    data.Value.Value = CycleRecord()  # what a custom decoded structure looks like to the codec
    s = sample(data)
    assert (s.value, s.quality, s.reason) == (None, "bad", "unsupported_type:CycleRecord")


def test_array_of_structures_is_unsupported() -> None:
    s = sample(dv([ua.Range(0.0, 1.0)], VT.ExtensionObject))
    assert (s.value, s.quality, s.reason) == (None, "bad", "unsupported_type:Range")


def test_good_variant_without_a_value_is_bad_no_value() -> None:
    s = sample(dv(None, VT.Null))
    assert (s.value, s.quality, s.reason) == (None, "bad", "no_value")


def test_localized_text_without_text_is_bad_no_value() -> None:
    s = sample(dv(ua.LocalizedText(None), VT.LocalizedText))
    assert (s.value, s.quality, s.reason) == (None, "bad", "no_value")


def test_datavalue_without_variant_is_bad_no_value() -> None:
    data = ua.DataValue(ua.Variant(1, VT.Int32))
    data.Value = None
    s = sample(data)
    assert (s.value, s.quality, s.reason) == (None, "bad", "no_value")


# --------------------------------------------------------------------------- event filter


def q(*names: str) -> list[ua.QualifiedName]:
    return [ua.QualifiedName(name, 0) for name in names]


FO = ua.FilterOperator
T = ua.NodeId("CycleParametersEventType", 2)
BASE_EVENT_TYPE = ua.NodeId(ua.ObjectIds.BaseEventType)
_COMPARE: dict[Any, Callable[[Any, Any], bool]] = {
    FO.Equals: operator.eq, FO.GreaterThan: operator.gt, FO.GreaterThanOrEqual: operator.ge,
    FO.LessThan: operator.lt, FO.LessThanOrEqual: operator.le,
}
_PY_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "==": operator.eq, "!=": operator.ne, ">": operator.gt, ">=": operator.ge,
    "<": operator.lt, "<=": operator.le,
}


def evaluate(elements: list[ua.ContentFilterElement], event: dict[str, Any],
             index: int = 0, depth: int = 0) -> Any:
    """A small ContentFilter evaluator over {"fields": {path: value}, "types": {NodeId}}."""
    assert depth <= len(elements), "the element tree has a cycle"
    element = elements[index]

    def operand(o: Any) -> Any:
        if isinstance(o, ua.ElementOperand):
            return evaluate(elements, event, o.Index, depth + 1)
        if isinstance(o, ua.LiteralOperand):
            return o.Value.Value
        if isinstance(o, ua.SimpleAttributeOperand):
            assert o.TypeDefinitionId == BASE_EVENT_TYPE
            assert o.AttributeId == ua.AttributeIds.Value
            return event["fields"].get("/".join(name.Name for name in o.BrowsePath))
        raise AssertionError(f"unexpected operand {o!r}")

    op, operands = element.FilterOperator, element.FilterOperands
    if op == FO.And:
        assert len(operands) == 2 and all(isinstance(o, ua.ElementOperand) for o in operands)
        left, right = (operand(o) for o in operands)
        return bool(left) and bool(right)
    if op == FO.Not:
        assert len(operands) == 1 and isinstance(operands[0], ua.ElementOperand)
        return not operand(operands[0])
    if op == FO.OfType:
        assert len(operands) == 1 and isinstance(operands[0], ua.LiteralOperand)
        return operand(operands[0]) in event["types"]
    if op in _COMPARE:
        assert len(operands) == 2
        assert isinstance(operands[0], ua.SimpleAttributeOperand)
        assert isinstance(operands[1], ua.LiteralOperand)
        left, right = (operand(o) for o in operands)
        if left is None or right is None:
            return False
        return _COMPARE[op](left, right)
    raise AssertionError(f"unexpected operator {op!r}")


def reachable(elements: list[ua.ContentFilterElement]) -> list[int]:
    """Indices reached from the root, in visiting order (one entry per visit)."""
    out: list[int] = []
    todo = [0]
    while todo:
        index = todo.pop()
        out.append(index)
        assert len(out) <= len(elements), "an element is referenced twice or a cycle"
        for o in elements[index].FilterOperands:
            if isinstance(o, ua.ElementOperand):
                assert 0 <= o.Index < len(elements), f"ElementOperand {o.Index} outside the list"
                assert o.Index != index
                todo.append(o.Index)
    return out


SOURCES = ["X", "Y"]
SEVERITIES = [100, 499, 500, 900]
EVENTS = [{"fields": {"Severity": sev, "SourceName": src, "Cycle/Time": 1.5},
           "types": types}
          for sev in SEVERITIES for src in SOURCES
          for types in ({BASE_EVENT_TYPE}, {BASE_EVENT_TYPE, T})]

WHERE_CASES: list[tuple[str, list[tuple[str, str, Any]], ua.NodeId | None]] = [
    ("nothing", [], None),
    ("of-type-only", [], T),
    ("one-term", [("Severity", ">=", 500)], None),
    ("one-not-equal", [("SourceName", "!=", "X")], None),
    ("one-term-and-of-type", [("Severity", "<", 500)], T),
    ("two-terms", [("Severity", ">", 100), ("SourceName", "==", "Y")], None),
    ("severity-and-not-x-and-of-type",
     [("Severity", ">=", 500), ("SourceName", "!=", "X")], T),
    ("not-equal-first", [("SourceName", "!=", "Y"), ("Severity", "<=", 500)], None),
    ("three-terms", [("Severity", ">", 100), ("Severity", "<", 900), ("SourceName", "==", "X")],
     None),
    ("three-terms-two-nots-and-of-type",
     [("SourceName", "!=", "X"), ("Severity", ">=", 499), ("Severity", "!=", 900)], T),
    ("three-nots", [("SourceName", "!=", "X"), ("Severity", "!=", 100),
                    ("Severity", "!=", 500)], None),
    ("nested-field-path", [("Cycle/Time", ">", 1.0), ("Severity", "==", 500)], T),
]


def _expected(event: dict[str, Any], where: list[tuple[str, str, Any]],
              of_type: ua.NodeId | None) -> bool:
    fields = event["fields"]
    return all(_PY_OPS[op](fields[path], value) for path, op, value in where) and (
        of_type is None or of_type in event["types"])


def _build(where: list[tuple[str, str, Any]], of_type: ua.NodeId | None) -> ua.EventFilter:
    select = [q("EventType"), q("Severity"), q("Cycle", "Time")]
    return event_filter(select, [(q(*path.split("/")), op, value) for path, op, value in where],
                        of_type)


def test_select_clauses_in_order() -> None:
    select = [q("EventType"), q("SourceName"), q("Time"), q("Severity"), q("Cycle", "Time")]
    built = event_filter(select, [], None)
    assert [[n.Name for n in c.BrowsePath] for c in built.SelectClauses] == [
        ["EventType"], ["SourceName"], ["Time"], ["Severity"], ["Cycle", "Time"]]
    for clause in built.SelectClauses:
        assert isinstance(clause, ua.SimpleAttributeOperand)
        assert clause.TypeDefinitionId == BASE_EVENT_TYPE
        assert clause.AttributeId == ua.AttributeIds.Value
    assert built.WhereClause.Elements == []
    # the caller's lists are copied, not shared
    assert built.SelectClauses[0].BrowsePath is not select[0]


@pytest.mark.parametrize(("where", "of_type"), [case[1:] for case in WHERE_CASES],
                         ids=[case[0] for case in WHERE_CASES])
def test_where_clause_tree(where: list[tuple[str, str, Any]], of_type: ua.NodeId | None) -> None:
    elements = _build(where, of_type).WhereClause.Elements
    terms = len(where) + (of_type is not None)
    nots = sum(op == "!=" for _, op, _ in where)
    assert len(elements) == terms + nots + max(terms - 1, 0)
    if not elements:
        assert all(_expected(e, where, of_type) for e in EVENTS)
        return
    # element 0 is the root and every element hangs in its tree exactly once
    assert sorted(reachable(elements)) == list(range(len(elements)))
    ops = [e.FilterOperator for e in elements]
    assert ops.count(FO.And) == max(terms - 1, 0)
    assert ops.count(FO.Not) == nots
    assert ops.count(FO.OfType) == (of_type is not None)
    if terms > 1:
        assert ops[0] == FO.And
    for element in elements:
        if element.FilterOperator == FO.Not:
            target = elements[element.FilterOperands[0].Index]
            assert target.FilterOperator == FO.Equals
    for element in elements:
        if element.FilterOperator == FO.OfType:
            literal = element.FilterOperands[0].Value
            assert literal.Value == T and literal.VariantType == VT.NodeId
    accepted = [evaluate(elements, event) for event in EVENTS]
    assert accepted == [_expected(event, where, of_type) for event in EVENTS]
    assert any(accepted) and not all(accepted)  # the sample events exercise both outcomes


def test_brief_example_accepts_and_rejects() -> None:
    # Severity >= 500 AND SourceName != "X" AND OfType T
    elements = _build([("Severity", ">=", 500), ("SourceName", "!=", "X")], T).WhereClause.Elements

    def ok(severity: int, source: str, of_t: bool) -> bool:
        types = {BASE_EVENT_TYPE, T} if of_t else {BASE_EVENT_TYPE}
        return bool(evaluate(elements, {"fields": {"Severity": severity, "SourceName": source},
                                        "types": types}))

    assert ok(500, "Y", True)
    assert ok(1000, "Press-2", True)
    assert not ok(499, "Y", True)
    assert not ok(500, "X", True)
    assert not ok(500, "Y", False)


def test_where_literals_keep_their_python_type() -> None:
    built = event_filter([q("Severity")], [(q("Severity"), ">=", 500), (q("Retain"), "==", True),
                                           (q("Ratio"), "<", 0.5), (q("SourceName"), "!=", "X")],
                         None)
    literals = [o.Value for e in built.WhereClause.Elements for o in e.FilterOperands
                if isinstance(o, ua.LiteralOperand)]
    assert [(v.Value, v.VariantType) for v in literals] == [
        (500, VT.Int64), (True, VT.Boolean), (0.5, VT.Double), ("X", VT.String)]


# --------------------------------------------------------------------------- addressing


@pytest.mark.parametrize(("text", "ref"), [
    ("i=85", NodeRef(0, None, "i", "85")),
    ("i=0", NodeRef(0, None, "i", "0")),
    ("ns=2;i=5", NodeRef(2, None, "i", "5")),
    ("ns=0;i=4294967295", NodeRef(0, None, "i", "4294967295")),
    ("ns=65535;s=x", NodeRef(65535, None, "s", "x")),
    ("nsu=urn:x;s=A.B", NodeRef(None, "urn:x", "s", "A.B")),
    ("nsu=http://example.com/UA/;i=1001", NodeRef(None, "http://example.com/UA/", "i", "1001")),
    ("ns=1;g=72962B91-FA75-4AE6-8D28-B404DC7DAF63",
     NodeRef(1, None, "g", "72962B91-FA75-4AE6-8D28-B404DC7DAF63")),
    ("ns=1;b=M/RbKBsRVkePCePcx24oRA==", NodeRef(1, None, "b", "M/RbKBsRVkePCePcx24oRA==")),
    ("ns=3;s=a;b=c", NodeRef(3, None, "s", "a;b=c")),          # ; and = inside a string id
    ("ns=3;s=/Objects/A", NodeRef(3, None, "s", "/Objects/A")),
    ("s=Name", NodeRef(0, None, "s", "Name")),
    ("  ns=2;i=5  ", NodeRef(2, None, "i", "5")),               # surrounding blanks
])
def test_parse_node_id(text: str, ref: NodeRef) -> None:
    assert parse_node_id(text) == ref
    assert is_node_id(text)


@pytest.mark.parametrize("text", [
    "ns=x;i=1", "foo", "", "   ", "I=85", "ns=2;x=5", "ns=2;s=", "ns=2;", "nsu=;s=A",
    "ns=2:i=5", "ns=123456;i=1", "/Objects/Server", "Objects/Server", "i = 85",
])
def test_parse_node_id_rejects_non_node_ids(text: str) -> None:
    with pytest.raises(ValueError, match="is not a NodeId"):
        parse_node_id(text)
    assert not is_node_id(text)


@pytest.mark.parametrize("text", ["i=abc", "i=-1", "i=1.5", "i=99999999999", "ns=1;i=4294967296",
                                  "nsu=urn:x;i=0x10"])
def test_parse_node_id_rejects_bad_numeric_identifiers(text: str) -> None:
    with pytest.raises(ValueError, match=r"a numeric identifier must be 0\.\.4294967295"):
        parse_node_id(text)


def test_parse_node_id_rejects_namespace_index_above_65535() -> None:
    with pytest.raises(ValueError):
        parse_node_id("ns=65536;i=1")


@pytest.mark.parametrize(("text", "relative", "path"), [
    ("/Objects/A/b:B", False, BrowsePath(True, (Step(None, "Objects"), Step(None, "A"),
                                                Step("b", "B")))),
    ("/Objects/2:Machines/CNC-01", False,
     BrowsePath(True, (Step(None, "Objects"), Step("2", "Machines"), Step(None, "CNC-01")))),
    ("A/B", True, BrowsePath(False, (Step(None, "A"), Step(None, "B")))),
    ("Severity", True, BrowsePath(False, (Step(None, "Severity"),))),
    ("m:Cycle/Time", True, BrowsePath(False, (Step("m", "Cycle"), Step(None, "Time")))),
    ("/Objects/Machine 1/Spindle.Speed", False,
     BrowsePath(True, (Step(None, "Objects"), Step(None, "Machine 1"), Step(None, "Spindle.Speed")))),
    (" /Objects/A ", False, BrowsePath(True, (Step(None, "Objects"), Step(None, "A")))),
    ("/Objects/A", True, BrowsePath(True, (Step(None, "Objects"), Step(None, "A")))),
    ("_x1:Name", True, BrowsePath(False, (Step("_x1", "Name"),))),
])
def test_parse_browse_path(text: str, relative: bool, path: BrowsePath) -> None:
    assert parse_browse_path(text, relative=relative) == path


@pytest.mark.parametrize(("text", "relative", "message"), [
    ("A/B", False, "'A/B' must be an absolute browse path starting with /"),
    ("/", False, "'/' is not a browse path (use /Objects/Folder/Variable)"),
    ("", True, "'' is not a browse path"),
    ("/Objects//A", False, "'/Objects//A' is not a browse path"),
    ("/Objects/A/", False, "'/Objects/A/' is not a browse path"),
    ("A//B", True, "'A//B' is not a browse path"),
    ("//Objects", False, "'//Objects' is not a browse path"),
    ("a b:c", True, "'a b:c': step 'a b:c' must be Name, alias:Name or index:Name"),
    (":Name", True, "':Name': step ':Name' must be Name, alias:Name or index:Name"),
    ("/Objects/m:", False, "'/Objects/m:': step 'm:' must be Name, alias:Name or index:Name"),
    ("1a:Name", True, "'1a:Name': step '1a:Name' must be Name"),
    ("-:Name", True, "'-:Name': step '-:Name' must be Name"),
])
def test_parse_browse_path_rejects(text: str, relative: bool, message: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_browse_path(text, relative=relative)
    assert str(info.value).startswith(message)


@pytest.mark.parametrize(("text", "expected"), [
    ("i=2253", True),
    ("nsu=urn:x;s=Alarms", True),
    ("ns=2;s=Machines/CNC-01", True),
    ("/Objects/Server", False),
    ("Objects/Server", False),
    ("Severity", False),
    ("m:CycleTime", False),
    ("/i=85", False),
    ("2:Name", False),
])
def test_is_node_id(text: str, expected: bool) -> None:
    assert is_node_id(text) is expected
