"""machine.execution from the device's own state signals, by configured rules."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from agent.config.derive import ExecutionConfig


class ExecutionMapper:
    """Evaluates the rules of `derive.execution` over the latest values of their signals."""

    def __init__(self, config: ExecutionConfig) -> None:
        self._rules: list[tuple[list[tuple[str, Sequence[Any]]], str]] = [
            ([(name, want if isinstance(want, list) else [want])
              for name, want in rule.when.items()], rule.then)
            for rule in config.as_rules()
        ]
        self._otherwise = config.otherwise
        self.inputs = frozenset(name for conditions, _ in self._rules for name, _ in conditions)

    def evaluate(self, latest: Mapping[str, Any]) -> str | None:
        """The execution state, or None while none of its inputs has a value."""
        if all(latest.get(name) is None for name in self.inputs):
            return None
        for conditions, then in self._rules:
            if all(matches(latest.get(name), wanted) for name, wanted in conditions):
                return then
        return self._otherwise


def matches(value: Any, wanted: Sequence[Any]) -> bool:
    """`value` equals one of `wanted`; true and 1 are different values here."""
    return value is not None and any(
        value == w and (type(value) is bool) == (type(w) is bool) for w in wanted)
