"""The base of the machine simulators (a time-stepped model behind a SimServer) and the
command-line options they share."""

from __future__ import annotations

import abc
import argparse
import asyncio
import contextlib
import dataclasses
import logging
import math
import signal
import sys
from typing import Any, ClassVar

from asyncua import ua
from asyncua.common import events as ua_events

from simulators.common import Lifecycle
from simulators.opcua.address_space import AddressSpaceBuilder, VarSpec, ns0
from simulators.opcua.pki import SECURITY_CHOICES, parse_security
from simulators.opcua.server import SimServer

logger = logging.getLogger("simulators.opcua")

class TickingSimulator(Lifecycle):
    """A SimServer plus one task that advances the simulation: start, stop, `async with`."""

    server: SimServer
    _task: asyncio.Task[None] | None = None

    def _task_name(self) -> str:
        return type(self).__name__

    async def _run(self) -> None:
        raise NotImplementedError

    async def start(self) -> None:
        await self.server.start()
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=self._task_name())

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.server.stop()


class MachineSimulator(TickingSimulator, abc.ABC):
    """A simulated machine below Objects/Machines/<name> driven by a time-stepped model.

    Subclasses declare VARIABLES, build their types/events in ``build_types``, and implement
    ``step(dt)`` (dt in simulated seconds) which updates ``self.out`` and may ``queue_event``.
    """

    kind: ClassVar[str] = "machine"
    namespace_uri: ClassVar[str] = "urn:edge-agent:sim:machine"
    default_name: ClassVar[str] = "MACHINE-01"
    VARIABLES: ClassVar[tuple[VarSpec, ...]] = ()

    def __init__(
        self,
        *,
        name: str | None = None,
        seed: int = 0,
        time_scale: float = 1.0,
        update_period: float = 0.1,
        host: str = "127.0.0.1",
        port: int = 4840,
        **server_options: Any,
    ) -> None:
        if not time_scale > 0 or not math.isfinite(time_scale):
            raise ValueError("time_scale must be > 0")
        if not update_period > 0:
            raise ValueError("update_period must be > 0")
        self.name = name or self.default_name
        if not self.name or "." in self.name or "/" in self.name:
            raise ValueError("name must be non-empty without '.' or '/'")
        self.seed = seed
        self.time_scale = time_scale
        self.update_period = update_period
        self.server = SimServer(
            namespace_uri=self.namespace_uri,
            populate=self._populate,
            host=host,
            port=port,
            application_uri=f"{self.namespace_uri}:{self.name}",
            server_name=f"edge-agent {self.kind} simulator {self.name}",
            **server_options,
        )
        self._types = {spec.path: spec.vtype for spec in self.VARIABLES}
        self.out: dict[str, Any] = {spec.path: spec.value for spec in self.VARIABLES}
        self._written: dict[str, Any] = {}
        self._nodeids: dict[str, ua.NodeId] = {}
        self._events: list[tuple[str, dict[str, Any], str, int]] = []
        self._event_objects: dict[str, ua_events.Event] = {}
        self.machine_nodeid: ua.NodeId | None = None
        self.sim_time = 0.0
        self._task = None

    def _task_name(self) -> str:
        return f"{self.kind}-{self.name}"

    # -- subclass hooks -------------------------------------------------------------------

    @abc.abstractmethod
    async def build_types(self, builder: AddressSpaceBuilder) -> list[ua.NodeId]:
        """Create DataTypes/EventTypes; return the event type NodeIds the machine generates."""

    @abc.abstractmethod
    def step(self, dt: float) -> None:
        """Advance the model by dt simulated seconds."""

    # -- helpers for subclasses -----------------------------------------------------------

    def queue_event(
        self, event_type: str, fields: dict[str, Any], message: str, severity: int
    ) -> None:
        self._events.append((event_type, fields, message, severity))

    def nodeid(self, path: str) -> ua.NodeId:
        """NodeId of a variable path such as ``Monitoring/Spindle/ActSpeed``."""
        return self.server.nodeid(".".join([self.name, *path.split("/")]))

    # -- lifecycle ------------------------------------------------------------------------

    @property
    def endpoint(self) -> str:
        return self.server.endpoint


    async def _populate(self, srv: SimServer) -> None:
        assert srv.server is not None
        builder = AddressSpaceBuilder(srv.server, srv.namespace_index)
        machines = await builder.folder(ns0(ua.ObjectIds.ObjectsFolder), "Machines", "Machines")
        self.machine_nodeid = await builder.machine(machines, self.name)
        event_types = await self.build_types(builder)
        self._nodeids = await builder.variables(self.name, self._specs_with_current_values())
        await builder.make_notifier(self.machine_nodeid, event_types)
        self._event_objects = {}
        for etype in event_types:
            ev = await ua_events.get_event_obj_from_type_node(srv.server.get_node(etype))
            ev.SourceNode = self.machine_nodeid  # type: ignore[attr-defined]
            ev.SourceName = self.name  # type: ignore[attr-defined]
            self._event_objects[str(etype.Identifier)] = ev
        self._written = dict(self.out)

    def _specs_with_current_values(self) -> list[VarSpec]:
        return [dataclasses.replace(spec, value=self.out[spec.path]) for spec in self.VARIABLES]

    async def flush(self) -> None:
        """Write changed outputs, then emit queued events (so counters match the events)."""
        changed = [(p, v) for p, v in self.out.items() if self._written.get(p, _MISSING) != v]
        if changed and self.server.running:
            items = [
                (self._nodeids[p], ua.Variant(v, self._types[p]))
                for p, v in changed
                if p in self._nodeids
            ]
            await self.server.write_values(items)
            for p, v in changed:
                self._written[p] = v
        events, self._events = self._events, []
        if self.machine_nodeid is None or not self.server.running:
            return
        for etype, fields, message, severity in events:
            ev = self._event_objects.get(etype)
            if ev is None:
                continue
            for key, value in fields.items():
                setattr(ev, key, value)
            ev.Message = ua.LocalizedText(message)  # type: ignore[attr-defined]
            ev.Severity = severity  # type: ignore[attr-defined]
            await self.server.emit_event(ev, [self.machine_nodeid, ns0(ua.ObjectIds.Server)])

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        last = loop.time()
        next_tick = last
        while True:
            now = loop.time()
            dt = (now - last) * self.time_scale
            last = now
            if dt > 0:
                self.sim_time += dt
                self.step(dt)
            try:
                await self.flush()
            except Exception:
                logger.exception("%s %s: update failed", self.kind, self.name)
            next_tick += self.update_period
            delay = next_tick - loop.time()
            if delay < 0:  # overloaded: skip missed ticks instead of bursting
                next_tick = loop.time()
                delay = 0
            await asyncio.sleep(delay)


_MISSING = object()


# --------------------------------------------------------------------------- CLI helpers


def add_server_arguments(p: argparse.ArgumentParser, *, default_port: int) -> None:
    """Options shared by all OPC UA simulators (endpoint, security, identities, faults)."""
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=default_port, help="TCP port (0 = OS picks)")
    p.add_argument(
        "--security",
        action="append",
        default=None,
        help="security policy-mode, comma separated or repeated: "
        + ", ".join(SECURITY_CHOICES)
        + ", or all (default None)",
    )
    p.add_argument(
        "--pki-dir", default=None, help="folder for the server certificate/key (default temp)"
    )
    p.add_argument("--trusted-clients", default=None, help="folder of trusted client certificates")
    p.add_argument(
        "--user", action="append", default=[], metavar="NAME:PASSWORD", help="allowed user"
    )
    p.add_argument("--no-anonymous", action="store_true", help="refuse anonymous sessions")
    p.add_argument("--extra-namespaces", type=int, default=0, help="dummy namespaces before ours")
    p.add_argument("--delay-ms", type=float, default=0.0, help="delay every response, ms")


def server_options_from_args(
    p: argparse.ArgumentParser, args: argparse.Namespace
) -> dict[str, Any]:
    """SimServer keyword arguments from the shared options (errors go to parser.error)."""
    users: dict[str, str] = {}
    for item in args.user:
        name, sep, password = item.partition(":")
        if not sep or not name:
            p.error(f"--user expects NAME:PASSWORD, got {item!r}")
        users[name] = password
    try:
        security = parse_security(args.security or ["None"])
    except ValueError as exc:
        p.error(str(exc))
    if args.extra_namespaces < 0:
        p.error("--extra-namespaces must be >= 0")
    if args.delay_ms < 0:
        p.error("--delay-ms must be >= 0")
    if not 0 <= args.port <= 65535:
        p.error("--port must be within 0..65535")
    return {
        "host": args.host,
        "port": args.port,
        "security": security,
        "pki_dir": args.pki_dir,
        "trusted_clients_dir": args.trusted_clients,
        "users": users,
        "allow_anonymous": not args.no_anonymous,
        "extra_namespaces": args.extra_namespaces,
        "delay": args.delay_ms / 1000.0,
    }


async def run_cli(sim: Any, kind: str) -> int:
    """Start sim (anything with start/stop and a ``server: SimServer``), serve until SIGTERM/SIGINT.

    SIGUSR1 toggles pause_publishing, SIGUSR2 restarts the server.
    """
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    server: SimServer = sim.server
    restarts: set[asyncio.Task[None]] = set()

    def toggle_pause() -> None:
        server.pause_publishing(not server.publishing_paused)
        print(
            f"{kind} publishing {'paused' if server.publishing_paused else 'resumed'}", flush=True
        )

    async def do_restart() -> None:
        try:
            await server.restart()
            print(f"{kind} restarted on {server.endpoint.rstrip('/')}", flush=True)
        except Exception as exc:  # noqa: BLE001 - keep serving; report why
            print(f"{kind}: restart failed: {exc}", file=sys.stderr, flush=True)

    def restart() -> None:
        task = loop.create_task(do_restart())
        restarts.add(task)
        task.add_done_callback(restarts.discard)

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGUSR1, toggle_pause)
    loop.add_signal_handler(signal.SIGUSR2, restart)
    try:
        await sim.start()
    except OSError as exc:
        print(f"{kind}: cannot listen: {exc}", file=sys.stderr)
        return 1
    print(f"{kind} listening on {server.endpoint.rstrip('/')}", flush=True)
    await stop.wait()
    for task in list(restarts):
        with contextlib.suppress(Exception):
            await task
    await sim.stop()
    return 0


def add_machine_arguments(p: argparse.ArgumentParser, sim: type[MachineSimulator],
                          alarm_every: int) -> None:
    """The options every machine simulator has beyond the server's."""
    p.add_argument("--name", default=sim.default_name, help="machine name (NodeId prefix)")
    p.add_argument("--seed", type=int, default=0, help="seed of the cycle plan and noise")
    p.add_argument("--time-scale", type=float, default=1.0,
                   help="simulated seconds per real second")
    p.add_argument("--alarm-every", type=int, default=alarm_every,
                   help="alarm every N-th cycle (0 = never)")
    p.add_argument("--update-ms", type=float, default=100.0, help="model/update period, ms")


def machine_main(sim: type[MachineSimulator], parser: argparse.ArgumentParser,
                 argv: list[str] | None) -> int:
    """Parse the options, build the simulator and serve it until SIGTERM; the exit code."""
    args = parser.parse_args(argv)
    options = server_options_from_args(parser, args)
    if args.alarm_every < 0:
        parser.error("--alarm-every must be >= 0")
    try:
        machine = sim(name=args.name, seed=args.seed, time_scale=args.time_scale,
                      update_period=args.update_ms / 1000.0, alarm_every=args.alarm_every,
                      **options)
    except ValueError as exc:
        parser.error(str(exc))
    return asyncio.run(run_cli(machine, sim.kind))
