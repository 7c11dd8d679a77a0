"""Capped exponential backoff with jitter, for reconnects and task restarts."""

from __future__ import annotations

import random


class Backoff:
    """Delays initial, 2*initial, ... capped at maximum; each drawn from [d/2, d] so that
    many clients that failed together do not retry together."""

    def __init__(self, initial: float, maximum: float, rng: random.Random | None = None) -> None:
        self._initial, self._maximum = initial, max(initial, maximum)
        self._attempt = 0
        self._rng = rng or random.Random()

    def next(self) -> float:
        delay = min(self._maximum, self._initial * (2 ** min(self._attempt, 30)))
        self._attempt += 1
        return float(delay / 2 + self._rng.random() * delay / 2)

    def reset(self) -> None:
        self._attempt = 0

    @property
    def attempts(self) -> int:
        return self._attempt
