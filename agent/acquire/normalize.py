"""Normalize raw samples into readings: enum maps, scale/offset and unit conversion,
validity, report by exception."""

from __future__ import annotations

import math
from types import NoneType
from typing import Any, Collection, Iterable, Sequence

from agent.core.model import BAD, GOOD, UNCERTAIN, Quality, Reading
from drivers.base import OUT_OF_RANGE, RawSample


class _Signal:
    __slots__ = ("name", "unit", "scale", "offset", "transform", "digits", "enum", "deadband",
                 "percent", "every_poll", "heartbeat_ns", "tap", "last_value", "last_quality",
                 "last_sent")

    def __init__(self, config: Any, tap: bool) -> None:
        self.name: str = config.name
        # Scale, offset and the conversion from the device's unit to the published one,
        # folded into one multiply-add.
        self.unit, self.scale, self.offset = config.transform()
        self.transform = self.scale != 1.0 or self.offset != 0.0
        # Round away float noise (1234 * 0.1 -> 123.4) but keep what a tiny scale resolves.
        self.digits = 9 + max(0, -math.floor(math.log10(abs(self.scale)))) if self.scale else 9
        self.enum: dict[int, str] | None = config.enum
        rule = config.deadband_rule()
        self.deadband: float | None = None if rule is None else rule[0]
        self.percent = rule is not None and rule[1]
        self.every_poll: bool = config.report == "every_poll"
        self.heartbeat_ns = int(config.heartbeat * 1e9)
        self.tap = tap
        self.last_value: Any = None
        self.last_quality: str | None = None
        self.last_sent = 0


class GroupNormalizer:
    """Turns one poll group's samples (in config order) into readings.

    Report by exception (unless a signal says `report: every_poll`): a number is reported
    every poll, or with a deadband only when it moved beyond it; a polled boolean, enum
    label or text only when it changed (pushed ones each time they come); either at least
    once per heartbeat. Bad and uncertain
    readings, and the first good one after them, are always reported.
    """

    def __init__(self, signals: Sequence[Any], watched: Collection[str] = ()) -> None:
        self._signals = [_Signal(s, s.name in watched) for s in signals]
        # Readings of the `watched` signals from the last apply, before report by exception:
        # what derivations (machine state, cycles) need to see even when it is not published.
        self.taps: list[Reading] = []

    def apply(self, samples: Sequence[RawSample]) -> list[Reading]:
        """Readings for this poll, without those report by exception leaves out.
        A bad sample always becomes a bad reading."""
        if len(samples) != len(self._signals):
            # A driver returning the wrong number of samples is a bug that must surface.
            raise ValueError(f"{len(samples)} samples for {len(self._signals)} signals")
        return self._apply(zip(self._signals, samples))

    def apply_sparse(self, samples: Iterable[tuple[int, RawSample]]) -> list[Reading]:
        """Like `apply`, for samples of some signals only: (signal index, sample) pairs, as a
        subscription delivers them (several of one signal are all kept, in order)."""
        signals = self._signals
        return self._apply(((signals[i], sample) for i, sample in samples), pushed=True)

    def _apply(self, pairs: Iterable[tuple[_Signal, RawSample]],
               pushed: bool = False) -> list[Reading]:
        out: list[Reading] = []
        append = out.append
        taps: list[Reading] = []
        self.taps = taps
        for sig, sample in pairs:
            reason = sample.reason
            quality: Quality
            if reason is not None and (sample.quality != UNCERTAIN or sample.value is None):
                value, quality = None, (sample.quality if sample.quality != GOOD else BAD)
                kind: type = NoneType
            else:
                # Good, or uncertain with a value: the value is kept with its reason.
                value, quality = sample.value, sample.quality
                kind = type(value)
                if sig.enum is not None and kind is int:
                    label = sig.enum.get(value)  # type: ignore[arg-type]
                    if label is None:
                        quality, reason = UNCERTAIN, "enum_unmapped"
                    else:
                        value, kind = label, str
                elif sig.transform and (kind is int or kind is float):
                    value = round(value * sig.scale + sig.offset, sig.digits)
                    kind = float
                if kind is float and not math.isfinite(value):  # type: ignore[arg-type]
                    value, quality, reason = None, BAD, OUT_OF_RANGE
            reading = Reading(sig.name, value, sig.unit, quality, reason, sample.ts_ns)
            if sig.tap:
                taps.append(reading)
            if not sig.every_poll:
                if (quality == GOOD and sig.last_quality == GOOD
                        and sample.ts_ns - sig.last_sent < sig.heartbeat_ns):
                    last = sig.last_value
                    if kind is int or kind is float:
                        if sig.deadband is not None and (type(last) is int or type(last) is float):
                            band = abs(last) * sig.deadband / 100 if sig.percent else sig.deadband
                            if abs(value - last) <= band:  # type: ignore[operator]
                                continue
                    elif value == last and not pushed:
                        # A pushed value is a change or an occurrence already (a subscription
                        # notification, an event's field, a streamed line): two alarms
                        # with the same text are two alarms.
                        continue
                sig.last_value, sig.last_quality, sig.last_sent = value, quality, sample.ts_ns
            append(reading)
        return out
