"""The agent's health: is the event loop live, can the buffer take data, what is up.

One set of facts serves `/healthz`, the retained status topic and the systemd STATUS line.
The loop's liveness is measured from inside the loop (a heartbeat task that also measures
how late its sleeps wake up: the event-loop lag); `/healthz` is answered from the HTTP
server's thread, so a stalled loop shows as a stale heartbeat instead of a hung request.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Callable, Protocol

from agent.runtime.metrics import Metrics

HEARTBEAT = 0.5  # seconds between the loop's heartbeats
STALE_AFTER = 5.0  # a heartbeat older than this: the loop is stalled


class BufferFacts(Protocol):
    """What health asks of the buffer (agent/buffer/store.py)."""

    @property
    def alive(self) -> bool: ...
    @property
    def closed(self) -> bool: ...
    @property
    def backlog(self) -> tuple[int, int]: ...  # batches, bytes


class UplinkFacts(Protocol):
    """What health asks of the uplink (agent/publish/uplink.py)."""

    @property
    def connected(self) -> bool: ...


class Health:
    """Facts about one running agent; `watch_loop()` must run as a task of its loop."""

    def __init__(self, metrics: Metrics, buffer: BufferFacts, uplink: UplinkFacts,
                 machines: Callable[[], list[tuple[str, bool]]]) -> None:
        self._metrics, self._buffer, self._uplink, self._machines = metrics, buffer, uplink, machines
        self.last_beat = time.monotonic()
        self.lag = 0.0

    async def watch_loop(self) -> None:
        """Beat every HEARTBEAT seconds and record how late each wake-up was."""
        loop = asyncio.get_running_loop()
        while True:
            asked = loop.time()
            await asyncio.sleep(HEARTBEAT)
            self.lag = max(0.0, loop.time() - asked - HEARTBEAT)
            self._metrics.loop_lag.observe(self.lag)
            self.last_beat = time.monotonic()

    def facts(self) -> dict[str, Any]:
        """A JSON-ready summary (safe to call from another thread)."""
        machines = self._machines()
        up = sum(1 for _, connected in machines if connected)
        loop_live = time.monotonic() - self.last_beat < STALE_AFTER
        writable = bool(self._buffer.alive) and not self._buffer.closed
        backlog = self._buffer.backlog
        return {
            "healthy": loop_live and writable,
            "loop_live": loop_live,
            "loop_lag_s": round(self.lag, 4),
            "buffer_writable": writable,
            "backlog_batches": backlog[0],
            "backlog_bytes": backlog[1],
            "uplink_connected": bool(self._uplink.connected),
            "machines_up": up,
            "machines": len(machines),
            "machines_down": sorted(name for name, connected in machines if not connected),
        }

    def summary(self) -> str:
        """One line, for the systemd STATUS and the logs."""
        f = self.facts()
        return (f"{f['machines_up']}/{f['machines']} machines up, backlog {f['backlog_batches']} "
                f"batches ({f['backlog_bytes']} bytes), uplink "
                f"{'connected' if f['uplink_connected'] else 'disconnected'}"
                + ("" if f["healthy"] else ", UNHEALTHY"))
