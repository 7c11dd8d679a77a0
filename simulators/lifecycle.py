"""`async with simulator:` for every simulator: started on entry, stopped on exit."""

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
