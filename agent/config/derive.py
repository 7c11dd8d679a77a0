"""The `derive:` block of a machine file: what the agent computes at the edge from the
signals it polls (machine state, cycles and their features, rates, unwrapped counters).

Signal references are checked against the machine's signals by `check_derive`, so a typo
is reported at its own line.
"""

from __future__ import annotations

import difflib
from typing import Any, Iterator, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from agent.signals import vocabulary
from drivers.config_types import Duration

Scalar = bool | int | float | str
Loc = tuple[str | int, ...]

EXECUTION = "machine.execution"
AVAILABILITY = "machine.availability"
AVAILABLE, UNAVAILABLE = "AVAILABLE", "UNAVAILABLE"  # its values


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _execution_label(value: str) -> str:
    values = vocabulary.lookup(EXECUTION).values  # type: ignore[union-attr]
    if value not in values:
        raise ValueError(f"{value!r} is not one of {', '.join(values)}")
    return value


class ExecutionRule(_Strict):
    """`when` every listed signal has (one of) the given value(s), execution is `then`."""

    when: dict[str, Scalar | list[Scalar]] = Field(min_length=1, description="signal -> "
                                                   "value, or a list of values (any of them)")
    then: str = Field(description="an MTConnect execution state, e.g. ACTIVE")

    _then = field_validator("then")(_execution_label)


class ExecutionConfig(_Strict):
    """machine.execution from the device's own state: a map of one signal's values, or
    rules over several signals (the first that matches wins)."""

    signal: str | None = Field(None, description="the state signal whose values `map` maps")
    map: dict[Scalar, str] | None = Field(None, description="state value -> execution state")
    rules: list[ExecutionRule] | None = Field(None, min_length=1)
    otherwise: str = Field("READY", description="execution when nothing matches")

    _otherwise = field_validator("otherwise")(_execution_label)

    @field_validator("map")
    @classmethod
    def _map_labels(cls, value: dict[Scalar, str] | None) -> dict[Scalar, str] | None:
        for label in (value or {}).values():
            _execution_label(label)
        return value

    @model_validator(mode="after")
    def _one_form(self) -> ExecutionConfig:
        if (self.signal is None) != (self.map is None):
            raise ValueError("signal and map go together")
        if (self.map is None) == (self.rules is None):
            raise ValueError("give either signal + map, or rules")
        return self

    def as_rules(self) -> list[ExecutionRule]:
        """The map form as rules, in the map's order."""
        if self.rules is not None:
            return self.rules
        assert self.signal is not None and self.map is not None
        return [ExecutionRule(when={self.signal: value}, then=label)
                for value, label in self.map.items()]


class CycleTrigger(_Strict):
    """What ends a cycle: a counter that goes up, a signal that takes a value, or an event."""

    counter: str | None = Field(None, description="a counter signal: each increment ends a "
                                "cycle, numbered by the counter")
    rollover: int | None = Field(None, ge=2, description="the counter wraps to 0 here "
                                 "(e.g. 65536); without it a decrease is a reset")
    signal: str | None = Field(None, description="a state signal: a cycle ends each time it "
                               "changes to one of `to`")
    to: Scalar | list[Scalar] | None = None
    event: str | None = Field(None, description="a device event source: each event ends a cycle")

    @model_validator(mode="after")
    def _one_kind(self) -> CycleTrigger:
        kinds = [k for k in ("counter", "signal", "event") if getattr(self, k) is not None]
        if len(kinds) != 1:
            raise ValueError("give exactly one of counter, signal (with to) or event")
        if (self.signal is None) != (self.to is None):
            raise ValueError("signal and to go together")
        if self.rollover is not None and self.counter is None:
            raise ValueError("rollover applies to a counter")
        return self


class Feature(_Strict):
    """One value of the cycle record: a signal taken over the cycle, or an event field."""

    signal: str | None = None
    take: Literal["end", "start", "max", "min", "mean", "delta"] = Field(
        "end", description="end/start: the value when the cycle ended/began; max, min, "
        "mean (time-weighted) over the cycle; delta: end minus start")
    field: str | None = Field(None, description="a field of the event that ended the cycle")

    @model_validator(mode="after")
    def _one_source(self) -> Feature:
        if (self.signal is None) == (self.field is None):
            raise ValueError("give either signal or field")
        if self.field is not None and self.take != "end":
            raise ValueError("take applies to signals")
        return self


class CycleConfig(_Strict):
    """Cycle detection: one event record per cycle on the machine's `event` topic."""

    trigger: CycleTrigger
    features: dict[str, Feature] = Field(
        default_factory=dict, description="name in the record -> where its value comes from "
        "(null drops a feature a template defines)")

    @field_validator("features", mode="before")
    @classmethod
    def _drop_nulls(cls, value: Any) -> Any:
        return _without_nulls(value)


class RateConfig(_Strict):
    """A rate per minute from a counter (e.g. press.stroke_rate from the stroke counter)."""

    counter: str
    window: Duration = Field(60.0, ge=1, le=3600, description="averaged over increments "
                             "within this long")
    rollover: int | None = Field(None, ge=2)


class CounterConfig(_Strict):
    """A monotonic count from a device counter that wraps (or is reset)."""

    counter: str
    rollover: int | None = Field(None, ge=2, description="the device counter wraps to 0 "
                                 "here; without it a decrease is a reset")


class DeriveConfig(_Strict):
    """What the agent computes from the polled signals."""

    availability: bool = Field(True, description="publish machine.availability: AVAILABLE "
                               "while the device answers, UNAVAILABLE otherwise")
    execution: ExecutionConfig | None = None
    cycle: CycleConfig | None = None
    rates: dict[str, RateConfig] = Field(
        default_factory=dict, description="published name -> rate per minute of a counter "
        "(null drops one a template defines)")
    counters: dict[str, CounterConfig] = Field(
        default_factory=dict, description="published name -> counter with rollover handled "
        "(null drops one a template defines)")
    heartbeat: Duration = Field(60.0, gt=0, description="derived values are published on "
                                "change and at least this often")

    @field_validator("rates", "counters", mode="before")
    @classmethod
    def _drop_nulls(cls, value: Any) -> Any:
        return _without_nulls(value)

    @field_validator("rates", "counters")
    @classmethod
    def _canonical_names(cls, value: dict[str, Any]) -> dict[str, Any]:
        for name in value:
            vocabulary.check(name)
        return value

    def published(self) -> Iterator[tuple[str, Loc]]:
        """Names this block publishes as signals, with where each is configured."""
        if self.availability:
            yield AVAILABILITY, ("derive", "availability")
        if self.execution is not None:
            yield EXECUTION, ("derive", "execution")
        for name in self.rates:
            yield name, ("derive", "rates", name)
        for name in self.counters:
            yield name, ("derive", "counters", name)

    def references(self) -> Iterator[tuple[str, Loc]]:
        """Signals this block reads, with where each is named."""
        ex = self.execution
        if ex is not None:
            if ex.signal is not None:
                yield ex.signal, ("derive", "execution", "signal")
            for i, rule in enumerate(ex.rules or ()):
                for name in rule.when:
                    yield name, ("derive", "execution", "rules", i, "when", name)
        if self.cycle is not None:
            trig = self.cycle.trigger
            for kind in ("counter", "signal"):
                name = getattr(trig, kind)
                if name is not None:
                    yield name, ("derive", "cycle", "trigger", kind)
            for key, feature in self.cycle.features.items():
                if feature.signal is not None:
                    yield feature.signal, ("derive", "cycle", "features", key, "signal")
        for name, rate in self.rates.items():
            yield rate.counter, ("derive", "rates", name, "counter")
        for name, counter in self.counters.items():
            yield counter.counter, ("derive", "counters", name, "counter")


def _without_nulls(value: Any) -> Any:
    # null in a machine file drops what its template defines under that key
    return {k: v for k, v in value.items() if v is not None} if isinstance(value, dict) else value


def check_derive(derive: DeriveConfig, signals: list[Any]) -> list[tuple[Loc, str]]:
    """Problems of a valid `derive` block against the machine's signals: unknown references,
    and derived names that a polled signal already publishes."""
    names = {s.name: i for i, s in enumerate(signals)}
    problems: list[tuple[Loc, str]] = []
    for name, loc in derive.references():
        if name not in names:
            close = difflib.get_close_matches(name, list(names), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            problems.append((loc, f"{name!r} is not a signal of this machine{hint}"))
    for name, loc in derive.published():
        if name in names:
            message = (f"{name} is derived here and also polled as signals[{names[name]}]: "
                       "rename or drop one")
            problems.append((loc, message))
    return problems
