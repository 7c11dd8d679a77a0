"""Fault switches shared by the serial simulators and the counter that applies them.

``LineFaults`` (frozen, replace the whole object at runtime): ``noise`` (probability per
reply/line of a burst of 1..8 random bytes in front of it), ``drop_every`` (N-th reply/line not
sent), ``slow_ms`` (extra delay before each reply), ``corrupt_every`` (N-th reply/line with a
wrong checksum), ``cut_every`` (N-th reply/line truncated to its first half). One counter per
simulator numbers the replies/lines 1, 2, 3, ... over all connections; reply N is dropped if
N % drop_every == 0, else cut if N % cut_every == 0, else corrupted if N % corrupt_every == 0
(0 disables a switch).
"""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass

NOISE_MIN_BYTES = 1
NOISE_MAX_BYTES = 8


@dataclass(frozen=True)
class LineFaults:
    """Fault switches common to the serial simulators; the defaults inject nothing."""

    noise: float = 0.0
    drop_every: int = 0
    slow_ms: float = 0.0
    corrupt_every: int = 0
    cut_every: int = 0
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0.0 <= self.noise <= 1.0:
            raise ValueError("noise must be a probability within 0..1")
        for name in ("drop_every", "corrupt_every", "cut_every"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")
        if self.slow_ms < 0:
            raise ValueError("slow_ms must be >= 0")


class FaultAction(enum.Enum):
    """What to do with one outgoing reply/line."""

    SEND = "send"
    DROP = "drop"
    CUT = "cut"
    CORRUPT = "corrupt"


@dataclass
class FaultStats:
    """Counts of injected faults."""

    dropped: int = 0
    cut: int = 0
    corrupted: int = 0
    noise_bursts: int = 0


class FaultInjector:
    """Numbers outgoing replies/lines and decides their fate; draws the noise bytes."""

    def __init__(self, seed: int = 0) -> None:
        self.count = 0
        self.stats = FaultStats()
        self._rng = random.Random(seed)

    def next_action(self, faults: LineFaults) -> FaultAction:
        """Action for the next reply (counted even when nothing is injected)."""
        self.count += 1
        n = self.count
        if faults.drop_every and n % faults.drop_every == 0:
            self.stats.dropped += 1
            return FaultAction.DROP
        if faults.cut_every and n % faults.cut_every == 0:
            self.stats.cut += 1
            return FaultAction.CUT
        if faults.corrupt_every and n % faults.corrupt_every == 0:
            self.stats.corrupted += 1
            return FaultAction.CORRUPT
        return FaultAction.SEND

    def noise_burst(self, faults: LineFaults, exclude: bytes = b"") -> bytes:
        """b'' or, with probability faults.noise, 1..8 random bytes none of which is in `exclude`."""
        if faults.noise <= 0.0 or self._rng.random() >= faults.noise:
            return b""
        allowed = [b for b in range(256) if b not in exclude]
        n = self._rng.randint(NOISE_MIN_BYTES, NOISE_MAX_BYTES)
        self.stats.noise_bursts += 1
        return bytes(self._rng.choice(allowed) for _ in range(n))
