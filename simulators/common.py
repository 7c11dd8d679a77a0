"""What every simulator family shares: ``Lifecycle`` (``async with simulator:`` starts it on
entry and stops it on exit) and ``noise``, the deterministic noise of the simulated machines."""

from __future__ import annotations

from types import TracebackType
from typing import Self


class Lifecycle:
    """Base of anything with async start() and stop()."""

    async def start(self) -> None:
        raise NotImplementedError

    async def stop(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.stop()


def noise(seed: int, channel: int, bucket: int) -> float:
    """Cheap deterministic noise in [-1, 1) (splitmix64 of the three keys)."""
    mask = 0xFFFFFFFFFFFFFFFF
    x = (seed * 0x9E3779B97F4A7C15 + channel * 0xC2B2AE3D27D4EB4F + bucket) & mask
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & mask
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & mask
    x ^= x >> 31
    return (x >> 11) / float(1 << 52) - 1.0
