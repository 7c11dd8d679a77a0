"""Base of the serial simulators (a link, the protocol handler on it and its fault switches),
and ``in_thread`` to run one beside a blocking client.

Use from Python. In an asyncio test the simulator runs on the test's own loop::

    async with ForgingSimulator(PtyLink(LineSettings(baud=19200, parity="N"))) as sim:
        port = sim.address          # "/dev/pts/N", open it with the client under test

Tests whose client blocks (pyserial, sockets) run it in a background thread instead:
``with in_thread(sim): serial.Serial(sim.address, ...)``.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Awaitable, Iterator
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from simulators.common import Lifecycle
from simulators.serial.faults import FaultInjector, FaultStats, LineFaults
from simulators.serial.link import SerialLink
from simulators.serial.port import LinePort

F = TypeVar("F", bound=LineFaults)


class SimulatorBase(Lifecycle, Generic[F]):
    """Lifecycle shared by the serial simulators: a link plus the protocol handler on it,
    and the fault switches it obeys."""

    link: SerialLink
    _faults: F
    _injector: FaultInjector

    def _use_faults(self, faults: F) -> None:
        self._faults = faults
        self._injector = FaultInjector(faults.seed)

    @property
    def faults(self) -> F:
        """Current fault switches."""
        return self._faults

    @faults.setter
    def faults(self, value: F) -> None:
        kind = type(self._faults)
        if not isinstance(value, kind):
            raise TypeError(f"faults must be an {kind.__name__}")
        self._faults = value

    @property
    def fault_stats(self) -> FaultStats:
        """Counts of injected faults (dropped, cut, corrupted, noise bursts)."""
        return self._injector.stats

    async def _serve(self, port: LinePort) -> None:
        raise NotImplementedError

    @property
    def address(self) -> str:
        """What a client opens (slave pty path, device path or 127.0.0.1:PORT)."""
        return self.link.address

    async def start(self) -> None:
        """Open the link and serve."""
        await self.link.start(self._serve)

    async def stop(self) -> None:
        """Close the link and end every conversation."""
        await self.link.stop()


@dataclass
class _ThreadRunner:
    sim: Any
    loop: asyncio.AbstractEventLoop = field(default_factory=asyncio.new_event_loop)
    thread: threading.Thread | None = None

    def run(self, coro: Awaitable[Any], timeout: float = 10.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)  # type: ignore[arg-type]


@contextlib.contextmanager
def in_thread(sim: Any) -> Iterator[Any]:
    """Run `sim` (start/stop coroutines) on an event loop in a daemon thread; yields sim.

    For tests whose client blocks (pyserial, sockets). Change faults from the test thread by
    assigning a new frozen config (an atomic reference swap).
    """
    runner = _ThreadRunner(sim)
    runner.thread = threading.Thread(target=runner.loop.run_forever, daemon=True,
                                     name=f"sim:{type(sim).__name__}")
    runner.thread.start()
    try:
        runner.run(sim.start())
        yield sim
    finally:
        try:
            runner.run(sim.stop())
        finally:
            runner.loop.call_soon_threadsafe(runner.loop.stop)
            runner.thread.join(10.0)
            runner.loop.close()
