"""Normalize raw samples into readings: enum maps, scale/offset, validity, report by exception."""

from __future__ import annotations

import math
from typing import Any, Iterable, Sequence

from agent.model import BAD, GOOD, UNCERTAIN, Reading
from drivers.base import OUT_OF_RANGE, RawSample


class _Signal:
    __slots__ = ("name", "unit", "scale", "offset", "transform", "digits", "enum", "deadband",
                 "heartbeat_ns", "last_value", "last_quality", "last_sent")

    def __init__(self, config: Any) -> None:
        self.name: str = config.name
        self.unit: str | None = config.unit
        self.scale: float = config.scale
        self.offset: float = config.offset
        self.transform = config.scale != 1.0 or config.offset != 0.0
        # Round away float noise (1234 * 0.1 -> 123.4) but keep what a tiny scale resolves.
        self.digits = 9 + max(0, -math.floor(math.log10(abs(config.scale)))) if config.scale else 9
        self.enum: dict[int, str] | None = config.enum
        self.deadband: float | None = config.deadband
        self.heartbeat_ns = int(config.heartbeat * 1e9)
        self.last_value: Any = None
        self.last_quality: str | None = None
        self.last_sent = 0


class GroupNormalizer:
    """Turns one poll group's samples (in config order) into readings."""

    def __init__(self, signals: Sequence[Any]) -> None:
        self._signals = [_Signal(s) for s in signals]

    def apply(self, samples: Sequence[RawSample]) -> list[Reading]:
        """Readings for this poll; with a deadband, unchanged values are left out until
        their heartbeat is due. A bad sample always becomes a bad reading."""
        if len(samples) != len(self._signals):
            # A driver returning the wrong number of samples is a bug that must surface.
            raise ValueError(f"{len(samples)} samples for {len(self._signals)} signals")
        return self._apply(zip(self._signals, samples))

    def apply_sparse(self, samples: Iterable[tuple[int, RawSample]]) -> list[Reading]:
        """Like `apply`, for samples of some signals only: (signal index, sample) pairs, as a
        subscription delivers them (several of one signal are all kept, in order)."""
        signals = self._signals
        return self._apply((signals[i], sample) for i, sample in samples)

    @staticmethod
    def _apply(pairs: Iterable[tuple[_Signal, RawSample]]) -> list[Reading]:
        out: list[Reading] = []
        append = out.append
        for sig, sample in pairs:
            reason = sample.reason
            if reason is not None and (sample.quality != UNCERTAIN or sample.value is None):
                value, quality = None, (sample.quality if sample.quality != GOOD else BAD)
            else:
                # Good, or uncertain with a value: the value is kept with its reason.
                value, quality = sample.value, sample.quality
                kind = type(value)
                if sig.enum is not None and kind is int:
                    label = sig.enum.get(value)  # type: ignore[arg-type]
                    if label is None:
                        quality, reason = UNCERTAIN, "enum_unmapped"
                    else:
                        value = label
                elif sig.transform and (kind is int or kind is float):
                    value = round(value * sig.scale + sig.offset, sig.digits)  # type: ignore[operator]
                    kind = float
                if kind is float and not math.isfinite(value):  # type: ignore[arg-type]
                    value, quality, reason = None, BAD, OUT_OF_RANGE
            if sig.deadband is not None:
                # Only good values are filtered: a bad or uncertain one is always reported.
                if (quality == GOOD and sig.last_quality == GOOD
                        and sample.ts_ns - sig.last_sent < sig.heartbeat_ns
                        and _within(value, sig.last_value, sig.deadband)):
                    continue
                sig.last_value, sig.last_quality, sig.last_sent = value, quality, sample.ts_ns
            append(Reading(sig.name, value, sig.unit, quality, reason, sample.ts_ns))
        return out


def _within(value: Any, last: Any, deadband: float) -> bool:
    if type(value) in (int, float) and type(last) in (int, float):
        return abs(value - last) <= deadband
    return bool(value == last)
