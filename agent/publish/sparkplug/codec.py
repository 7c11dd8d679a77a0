"""Sparkplug B payloads to and from bytes: metrics in, protobuf out, and back.

Only what an edge node publishes and receives is modelled: scalar metrics with optional
alias, timestamp, historical flag and a PropertySet. DataSet and Template values that a
host may send come back from `decode` as plain dicts; MetaData is not read.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from google.protobuf.message import DecodeError

from agent.publish.sparkplug.datatypes import UINT64_MAX, DataType, get_value, set_value
from agent.publish.sparkplug.proto import Payload

Properties = dict[str, tuple[DataType, Any]]


@dataclass(slots=True)
class Metric:
    """One Sparkplug metric as this agent sees it."""

    name: str | None  # None in DATA messages that use aliases
    value: Any  # None -> is_null
    datatype: DataType
    timestamp_ms: int | None = None
    alias: int | None = None
    is_historical: bool = False
    properties: Properties | None = None  # e.g. {"Quality": (DataType.Int32, 192)}


def encode(metrics: Sequence[Metric], seq: int | None, timestamp_ms: int, *,
           include_datatype: bool = True) -> bytes:
    """A serialized Sparkplug B Payload; `seq` None leaves it out (NDEATH only).

    `include_datatype=False` leaves the metrics' datatype off the wire, which the spec
    recommends for NDATA/DDATA (tck-id-payloads-metric-datatype-not-req); the value is
    still written according to `datatype`. Raises ValueError (or TypeError for a value of
    the wrong kind) instead of writing a payload that breaks the specification's rules.
    """
    if seq is not None and not 0 <= seq <= 255:
        raise ValueError(f"seq {seq} is outside 0..255")
    _check_u64(timestamp_ms, "payload timestamp")
    payload = Payload()
    payload.timestamp = timestamp_ms
    if seq is not None:
        payload.seq = seq
    for m in metrics:
        pm = payload.metrics.add()
        try:
            _fill_metric(pm, m, include_datatype)
        except ValueError as e:
            raise ValueError(f"metric {_label(m)}: {e}") from e
        except TypeError as e:
            raise TypeError(f"metric {_label(m)}: {e}") from e
    data: bytes = payload.SerializeToString()
    return data


def _label(m: Metric) -> str:
    return repr(m.name) if m.name is not None else f"alias {m.alias}"


def _check_u64(value: int, what: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what} must be an int, got {type(value).__name__}")
    if not 0 <= value <= UINT64_MAX:
        raise ValueError(f"{what} {value} is not a uint64")


def _fill_metric(pm: Any, m: Metric, include_datatype: bool) -> None:
    if m.name is None and m.alias is None:
        # tck-id-payloads-name-requirement: without an alias the name is the only key.
        raise ValueError("a metric needs a name or an alias")
    if m.name is not None:
        pm.name = m.name
    if m.alias is not None:
        _check_u64(m.alias, "alias")
        pm.alias = m.alias
    if m.timestamp_ms is not None:
        _check_u64(m.timestamp_ms, "timestamp")
        pm.timestamp = m.timestamp_ms
    datatype = DataType(m.datatype)
    if include_datatype:
        pm.datatype = datatype
    if m.is_historical:
        pm.is_historical = True
    if m.properties is not None:
        _fill_properties(pm.properties, m.properties)
    set_value(pm, datatype, m.value)


def _fill_properties(ps: Any, props: Mapping[str, tuple[DataType, Any]]) -> None:
    ps.SetInParent()  # an empty set is still sent, as given
    for key, (datatype, value) in props.items():
        ps.keys.append(key)
        pv = ps.values.add()
        datatype = DataType(datatype)
        pv.type = datatype
        if value is None:
            pv.is_null = True
        elif datatype is DataType.PropertySet:
            if not isinstance(value, Mapping):
                raise TypeError(f"property {key!r}: PropertySet needs a mapping")
            _fill_properties(pv.propertyset_value, value)
        elif datatype is DataType.PropertySetList:
            if not isinstance(value, (list, tuple)) or not all(
                    isinstance(v, Mapping) for v in value):
                raise TypeError(f"property {key!r}: PropertySetList needs a list of mappings")
            pv.propertysets_value.SetInParent()
            for item in value:
                _fill_properties(pv.propertysets_value.propertyset.add(), item)
        else:
            set_value(pv, datatype, value)


def decode(data: bytes) -> tuple[int | None, int | None, list[Metric]]:
    """(timestamp_ms, seq, metrics) of a serialized Payload; None for fields left out.

    Raises ValueError, and only ValueError, for bytes that are not a Sparkplug B payload
    or break its rules (unknown datatype, value outside its datatype, keys and values of a
    PropertySet of different lengths).
    """
    try:
        payload = Payload.FromString(bytes(data))
        metrics = [_metric(pm) for pm in payload.metrics]
    except ValueError:
        raise
    # Anything the runtime raises on hostile input (DecodeError is an Exception, not a
    # ValueError; deep nesting can recurse) becomes the one error callers handle.
    except (DecodeError, TypeError, KeyError, IndexError, OverflowError,
            RecursionError, AttributeError) as e:
        raise ValueError(f"not a Sparkplug B payload: {e}") from e
    timestamp = payload.timestamp if payload.HasField("timestamp") else None
    seq = payload.seq if payload.HasField("seq") else None
    return timestamp, seq, metrics


def _metric(pm: Any) -> Metric:
    try:
        datatype = DataType(pm.datatype)
    except ValueError:
        raise ValueError(f"unknown datatype {pm.datatype}") from None
    return Metric(
        name=_utf8(pm.name, "metric name") if pm.HasField("name") else None,
        value=get_value(pm),
        datatype=datatype,
        timestamp_ms=pm.timestamp if pm.HasField("timestamp") else None,
        alias=pm.alias if pm.HasField("alias") else None,
        is_historical=pm.is_historical,
        properties=_properties(pm.properties) if pm.HasField("properties") else None,
    )


def _utf8(text: Any, what: str) -> str:
    # upb hands back proto2 strings that are not UTF-8 as bytes rather than failing.
    if not isinstance(text, str):
        raise ValueError(f"{what} is not UTF-8")
    return text


def _properties(ps: Any) -> Properties:
    if len(ps.keys) != len(ps.values):
        # tck-id-payloads-propertyset-keys-array-size / -values-array-size
        raise ValueError(f"PropertySet has {len(ps.keys)} keys for {len(ps.values)} values")
    out: Properties = {}
    for key, pv in zip(ps.keys, ps.values):
        _utf8(key, "property key")
        try:
            datatype = DataType(pv.type)
        except ValueError:
            raise ValueError(f"property {key!r}: unknown datatype {pv.type}") from None
        field = None if pv.is_null else pv.WhichOneof("value")
        value: Any
        if field == "propertyset_value":
            value = _properties(pv.propertyset_value)
        elif field == "propertysets_value":
            value = [_properties(s) for s in pv.propertysets_value.propertyset]
        else:
            value = get_value(pv)
        out[key] = (datatype, value)
    return out
