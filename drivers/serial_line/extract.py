"""Signal values out of a frame's text: by a regex's named groups or by delimiter and index,
converted to float, int, bool or str. Built once per poll group; `extract` runs per frame."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

from drivers.base import RawSample, Value, bad_sample

PARSE_ERROR = "parse_error"  # the field is there but does not convert to the signal's type
UNEXPECTED_FRAME = "unexpected_frame"  # the frame does not match the regex, or lacks the field
CHECKSUM = "checksum"  # the frame's checksum is wrong or missing

Converter = Callable[[str], Value]


def converter(kind: str, *, base: int | None = None, true: set[str] | None = None,
              false: set[str] | None = None) -> Converter:
    """text -> value of `kind`; raises ValueError (or TypeError) when it does not convert.
    Surrounding whitespace is ignored (devices pad numbers to a fixed width)."""
    if kind == "float":
        return float
    if kind == "int":
        number_base = base or 10
        if number_base == 10:
            return int

        def to_int(text: str) -> int:
            return int(text, number_base)
        return to_int
    if kind == "bool":
        tokens = {t: True for t in (true or ())}
        tokens.update({t: False for t in (false or ())})

        def to_bool(text: str) -> bool:
            value = tokens.get(text.strip().casefold())
            if value is None:
                raise ValueError(f"{text!r} is not a known true/false token")
            return value
        return to_bool
    if kind == "str":
        return str.strip
    raise ValueError(f"unknown type {kind!r}")


def signal_converter(signal: Any) -> Converter:
    """The converter of one signal model (type, base, true/false tokens)."""
    true, false = signal.bool_tokens() if signal.type == "bool" else (None, None)
    return converter(signal.type, base=signal.base, true=true, false=false)


class Extractor:
    """The values of one poll group's signals from one frame text, in signal order.

    Bad values carry a reason: `unexpected_frame` for every signal when the frame does not
    match the regex (and for a signal whose index the frame does not have), `parse_error`
    for a field that does not convert. Counts both: `unexpected` per frame, `parse_errors`
    per field.
    """

    __slots__ = ("_delimiter", "_plan", "_regex", "parse_errors", "size", "unexpected")

    def __init__(self, signals: Sequence[Any], regex: str | None, delimiter: str | None) -> None:
        self.size = len(signals)
        self._regex = re.compile(regex) if regex is not None else None
        uses_index = any(s.index is not None for s in signals)
        self._delimiter = delimiter if uses_index else None
        # (by named group?, group name or index, converter) per signal, in order
        self._plan: list[tuple[bool, str | int, Converter]] = []
        for signal in signals:
            if signal.field is not None:
                if self._regex is None or signal.field not in self._regex.groupindex:
                    raise ValueError(f"field {signal.field!r} is not a named group of the regex")
                self._plan.append((True, signal.field, signal_converter(signal)))
            else:
                if self._delimiter is None:
                    raise ValueError("a signal by index needs a delimiter")
                self._plan.append((False, signal.index, signal_converter(signal)))
        self.unexpected = 0
        self.parse_errors = 0

    def extract(self, text: str, ts_ns: int) -> list[RawSample]:
        match = None
        if self._regex is not None:
            match = self._regex.search(text)
            if match is None:
                self.unexpected += 1
                return [bad_sample(UNEXPECTED_FRAME, ts_ns)] * self.size
        parts = text.split(self._delimiter) if self._delimiter is not None else []
        out: list[RawSample] = []
        append = out.append
        short = False
        for by_name, key, convert in self._plan:
            if by_name:
                raw = match.group(key)  # type: ignore[union-attr]
            else:
                try:
                    raw = parts[key]  # type: ignore[index]
                except IndexError:  # the frame has fewer fields than this signal's index
                    short = True
                    append(bad_sample(UNEXPECTED_FRAME, ts_ns))
                    continue
            if raw is None:  # an optional group that did not take part in the match
                self.parse_errors += 1
                append(bad_sample(PARSE_ERROR, ts_ns))
                continue
            try:
                append(RawSample(convert(raw), ts_ns))
            except ValueError:
                self.parse_errors += 1
                append(bad_sample(PARSE_ERROR, ts_ns))
        if short:
            self.unexpected += 1
        return out
