"""Supervised background tasks: an exception is logged and the task restarts with backoff."""

from __future__ import annotations

import asyncio
import time
from typing import Awaitable, Callable

from structlog.typing import FilteringBoundLogger as Log

from agent.core.backoff import Backoff

_HEALTHY_RUN = 60.0  # a task that ran this long before failing starts its backoff afresh


async def supervise(name: str, run: Callable[[], Awaitable[None]], log: Log,
                    initial: float = 1.0, maximum: float = 60.0) -> None:
    """Run `run()` until it returns; restart it after every exception, never die silently."""
    backoff = Backoff(initial, maximum)
    while True:
        started = time.monotonic()
        try:
            await run()
            return
        except asyncio.CancelledError:
            raise
        except Exception:
            if time.monotonic() - started > _HEALTHY_RUN:
                backoff.reset()
            delay = backoff.next()
            log.exception("task failed, restarting", task=name, restart_in_s=round(delay, 2))
        await asyncio.sleep(delay)
