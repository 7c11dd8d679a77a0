"""OPC UA values -> RawSample: status code to quality and reason, source timestamp, types.

Called per value on the subscription hot path, so each point's conversion is chosen once
(`ValueCodec`) and the common case (a good scalar number) costs a few attribute loads.
"""

from __future__ import annotations

import base64
import datetime as dt
import enum
import uuid
from typing import Any, Mapping

from asyncua import ua
from asyncua.ua import status_codes

from drivers.base import BAD, GOOD, UNCERTAIN, Quality, RawSample, bad_sample

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
_US = dt.timedelta(microseconds=1)
_NAMES: dict[int, str] = {}


def status_name(code: int) -> str:
    """`BadNodeIdUnknown` for 0x80340000 (info bits ignored); cached."""
    name = _NAMES.get(code)
    if name is None:
        try:
            name = status_codes.get_name_and_doc(code & 0xFFFF0000)[0]
        except Exception:
            name = f"0x{code:08X}"
        # asyncua names an unknown code by its severity alone ("Bad"): keep the number.
        if not name or name.startswith("UnknownUa") or (
                name in ("Good", "Uncertain", "Bad") and code & 0x0FFF0000):
            name = f"0x{code & 0xFFFF0000:08X}"
        if len(_NAMES) < 4096:
            _NAMES[code] = name
    return name


def quality_of(code: int) -> tuple[Quality, str | None]:
    """(quality, reason) of a StatusCode value: severity bits 00 good, 01 uncertain, 1x bad."""
    severity = code >> 30
    if severity == 0:
        return GOOD, None
    return (UNCERTAIN if severity == 1 else BAD), status_name(code)


def datetime_ns(value: dt.datetime) -> int:
    """ns since the Unix epoch of an OPC UA DateTime (asyncua gives aware UTC datetimes)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.timezone.utc)
    return (value - _EPOCH) // _US * 1000


def iso(value: dt.datetime) -> str:
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.timezone.utc)
    return value.astimezone(dt.timezone.utc).isoformat().replace("+00:00", "Z")


class UnsupportedValue(Exception):
    """A value that has no place in a reading (a structure, a matrix, a huge array)."""


def plain(value: Any) -> Any:
    """A reading value (bool, int, float, str) for a scalar of any built-in type."""
    kind = type(value)
    if kind is float or kind is int or kind is bool or kind is str or value is None:
        return value
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, enum.Enum):
        return int(value.value) if isinstance(value.value, int) else str(value.name)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, str):
        return str(value)
    if isinstance(value, dt.datetime):
        return iso(value)
    if isinstance(value, ua.LocalizedText):
        return value.Text
    if isinstance(value, ua.QualifiedName):
        return f"{value.NamespaceIndex}:{value.Name}" if value.NamespaceIndex else value.Name
    if isinstance(value, ua.NodeId):
        return value.to_string()
    if isinstance(value, ua.StatusCode):
        return status_name(value.value)
    if isinstance(value, (bytes, bytearray)):
        return base64.b64encode(value).decode()
    if isinstance(value, uuid.UUID):
        return str(value)
    raise UnsupportedValue(f"unsupported_type:{type(value).__name__}")


class ValueCodec:
    """How one configured point turns a DataValue into a RawSample."""

    __slots__ = ("index", "max_array", "names")

    def __init__(self, index: int | None = None, max_array: int = 64,
                 names: Mapping[int, str] | None = None) -> None:
        self.index = index
        self.max_array = max_array
        self.names = names  # enumeration value -> name, when the signal wants names

    def sample(self, dv: Any, now_ns: int) -> RawSample:
        """The sample of one DataValue; never raises."""
        status = dv.StatusCode
        code = status.value if status is not None else 0
        ts = dv.SourceTimestamp or dv.ServerTimestamp
        ts_ns = datetime_ns(ts) if ts is not None else now_ns
        if code >> 30:
            quality, reason = quality_of(code)
            if quality == BAD:
                return RawSample(None, ts_ns, quality, reason)
        else:
            quality, reason = GOOD, None
        variant = dv.Value
        value = variant.Value if variant is not None else None
        try:
            value = self.convert(value)
        except UnsupportedValue as exc:
            return bad_sample(str(exc), ts_ns)
        if value is None:
            return bad_sample(reason or "no_value", ts_ns)
        return RawSample(value, ts_ns, quality, reason)

    def convert(self, value: Any) -> Any:
        """A reading value for a variant's value (raises UnsupportedValue)."""
        kind = type(value)
        if kind is float or kind is int or kind is bool or kind is str:
            pass
        elif isinstance(value, list):
            if self.index is not None:
                if self.index >= len(value):
                    raise UnsupportedValue("index_out_of_range")
                value = value[self.index]
                if isinstance(value, list):
                    raise UnsupportedValue("unsupported_type:matrix")
            else:
                if len(value) > self.max_array:
                    raise UnsupportedValue("array_too_large")
                if any(isinstance(v, list) for v in value):
                    raise UnsupportedValue("unsupported_type:matrix")
                return [plain(v) for v in value]
            value = plain(value)
        else:
            value = plain(value)
        if self.names is not None and type(value) is int:
            name = self.names.get(value)
            if name is None:
                raise UnsupportedValue("enum_unmapped")
            return name
        return value
