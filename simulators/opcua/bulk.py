"""Benchmark OPC UA server: N Double variables that all change on every tick.

Run: ``python -m simulators.opcua.bulk --port 4850 --variables 10000 --rate 1.0`` plus the
shared options of simulators.opcua.cnc (security, pki dir, trusted clients, users, extra namespaces,
delay). When listening it prints ``bulk listening on opc.tcp://HOST:PORT``. Every tick that
takes longer than its period prints ``bulk tick N took X ms > period Y ms`` (the server, not the
client, is then the bottleneck). SIGUSR1 toggles paused publishing, SIGUSR2 restarts the
server, SIGTERM/SIGINT exit 0.

Address space. Namespace ``urn:edge-agent:sim:bulk``: object Objects/Bulk (``s=Bulk``) with
the Double variables ``s=Bulk.V00000`` .. ``s=Bulk.V<N-1>`` (browse names ``V00000``...; at
least five digits, more when N > 100000), read-only. On tick k (k = 1, 2, ... every 1/rate s)
every variable i is set to ``k + i / 1_000_000`` with one shared source timestamp, so a client
can tell which tick a value belongs to. Before the first tick the values are ``i / 1_000_000``.

Cheap by construction: nodes are added in one batch, and a tick writes all values through
``SimServer.write_values`` (a direct store into asyncua's address space plus the monitored-item
callbacks) instead of N awaited Node.write_value calls.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from datetime import UTC, datetime
from typing import Any

from asyncua import ua

from simulators.opcua.address_space import AddressSpaceBuilder, ns0
from simulators.opcua.machine import (
    TickingSimulator,
    add_server_arguments,
    run_cli,
    server_options_from_args,
)
from simulators.opcua.server import SimServer

NAMESPACE_URI = "urn:edge-agent:sim:bulk"
MAX_VARIABLES = 1_000_000


def variable_name(i: int, count: int) -> str:
    """Browse name of variable i out of count (``V00042``)."""
    return f"V{i:0{max(5, len(str(count - 1)))}d}"


class BulkServer(TickingSimulator):
    """N changing Doubles; ``async with BulkServer(port=0, variables=100, rate=10) as b:``."""

    kind = "bulk"

    def __init__(
        self, *, variables: int = 10_000, rate: float = 1.0, **server_options: Any
    ) -> None:
        if not 1 <= variables <= MAX_VARIABLES:
            raise ValueError(f"variables must be within 1..{MAX_VARIABLES}")
        if not rate > 0:
            raise ValueError("rate must be > 0")
        self.count = variables
        self.rate = rate
        self.server = SimServer(
            namespace_uri=NAMESPACE_URI,
            populate=self._populate,
            application_uri=f"{NAMESPACE_URI}:server",
            server_name="edge-agent bulk benchmark server",
            **server_options,
        )
        self.names = [variable_name(i, variables) for i in range(variables)]
        self._offsets = [i / 1_000_000 for i in range(variables)]
        self._nodeids: list[ua.NodeId] = []
        self.tick = 0
        self.last_tick_seconds = 0.0
        self.max_tick_seconds = 0.0
        self.overruns = 0
        self._task: asyncio.Task[None] | None = None

    @property
    def endpoint(self) -> str:
        return self.server.endpoint

    @property
    def period(self) -> float:
        return 1.0 / self.rate

    def nodeid(self, i: int) -> ua.NodeId:
        return self.server.nodeid(f"Bulk.{self.names[i]}")

    def value(self, i: int, tick: int | None = None) -> float:
        """Value of variable i after the given tick (default: the current one)."""
        return (self.tick if tick is None else tick) + self._offsets[i]

    async def _populate(self, srv: SimServer) -> None:
        assert srv.server is not None
        b = AddressSpaceBuilder(srv.server, srv.namespace_index)
        bulk = await b.add_object(ns0(ua.ObjectIds.ObjectsFolder), "Bulk", "Bulk")
        self._nodeids = [b.nid(f"Bulk.{name}") for name in self.names]
        items = [
            b.variable_item(bulk, nodeid, name, ua.Variant(self.value(i), ua.VariantType.Double))
            for i, (nodeid, name) in enumerate(zip(self._nodeids, self.names))
        ]
        b.add_children_fast(bulk, items)
        # the batch add leaves values without timestamps
        initial = [
            (nid, ua.Variant(self.value(i), ua.VariantType.Double))
            for i, nid in enumerate(self._nodeids)
        ]
        await srv.write_values(initial, force=True)

    async def update(self) -> None:
        """One tick: every variable gets its next value."""
        started = time.perf_counter()
        self.tick += 1
        tick = float(self.tick)
        double = ua.VariantType.Double
        items = [
            (nid, ua.Variant(tick + off, double)) for nid, off in zip(self._nodeids, self._offsets)
        ]
        await self.server.write_values(items, timestamp=datetime.now(UTC))
        took = time.perf_counter() - started
        self.last_tick_seconds = took
        self.max_tick_seconds = max(self.max_tick_seconds, took)
        if took > self.period:
            self.overruns += 1
            print(
                f"bulk tick {self.tick} took {took * 1000:.0f} ms"
                f" > period {self.period * 1000:.0f} ms",
                flush=True,
            )

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        next_tick = loop.time() + self.period
        while True:
            await asyncio.sleep(max(next_tick - loop.time(), 0.0))
            await self.update()
            next_tick += self.period
            if next_tick < loop.time():  # overloaded: skip instead of bursting
                next_tick = loop.time() + self.period



def build_parser() -> argparse.ArgumentParser:
    """Command-line options of the bulk benchmark server."""
    p = argparse.ArgumentParser(
        prog="python -m simulators.opcua.bulk",
        description="OPC UA benchmark server: N changing Doubles.",
    )
    add_server_arguments(p, default_port=4850)
    p.add_argument("--variables", type=int, default=10_000, help="number of Double variables")
    p.add_argument(
        "--rate", type=float, default=1.0, help="ticks per second (all variables change)"
    )
    return p


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    options = server_options_from_args(parser, args)
    try:
        bulk = BulkServer(variables=args.variables, rate=args.rate, **options)
    except ValueError as exc:
        parser.error(str(exc))
    return asyncio.run(run_cli(bulk, BulkServer.kind))


if __name__ == "__main__":
    sys.exit(main())
