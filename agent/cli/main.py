"""The `edge-agent` command line."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shlex
import signal
import sqlite3
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn, Sequence

from agent import __version__
from agent.cli.common import EXIT_OK, EXIT_ERROR, EXIT_CONFIG, load_or_report

if TYPE_CHECKING:
    from drivers.base import DriverCommand

SIMULATORS = {"press": "simulators.modbus.press", "cnc": "simulators.opcua.cnc",
              "injection": "simulators.opcua.injection", "forging": "simulators.modbus.forging",
              "serial": "simulators.serial.ascii"}

# The commands defined here; any other is a driver's (DriverSpec.commands). See _parse.
OWN_COMMANDS = frozenset({"run", "validate", "read", "schema", "vocabulary", "sim", "buffer",
                          "demo", "status"})


class _ParseFailed(Exception):
    pass


class _ParserWithoutDrivers(argparse.ArgumentParser):
    """Raises instead of printing the usage, which would lack the drivers' commands."""

    def error(self, message: str) -> NoReturn:
        raise _ParseFailed(message)


def _parse(argv: Sequence[str]) -> argparse.Namespace:
    """The parsed command line. One of the own commands is parsed without the drivers'
    commands: importing the registry takes about 0.1 s, which `sim` and `vocabulary` should
    not wait for. Anything else, and every error (its usage lists all commands), with them."""
    if argv and argv[0] in OWN_COMMANDS:
        try:
            return _parser(driver_commands=False).parse_args(argv)
        except _ParseFailed:
            pass
    return _parser().parse_args(argv)


def _parser(driver_commands: bool = True) -> argparse.ArgumentParser:
    cls = argparse.ArgumentParser if driver_commands else _ParserWithoutDrivers
    parser = cls(prog="edge-agent", description=__doc__)
    parser.add_argument("--version", action="version", version=f"edge-agent {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the agent (what systemd starts)")
    run.add_argument("-c", "--config", type=config_dir, required=True, help=CONFIG_HELP)
    run.add_argument("--state-dir", type=Path, help="folder for the buffer (overrides buffer.path's)")

    validate = sub.add_parser("validate", help="check a config folder, print every error")
    validate.add_argument("-c", "--config", type=config_dir, required=True, help=CONFIG_HELP)
    validate.add_argument("--online", action="store_true",
                          help="also connect to every machine and check its signals exist")
    validate.add_argument("--user", help="check that this user (the service's User=) can read "
                          "every file the config names (default as root: edge-agent, if it exists)")

    read = sub.add_parser("read", help="acquire one configured machine once and print it")
    read.add_argument("machine", help="machine id")
    read.add_argument("-c", "--config", type=config_dir, required=True, help=CONFIG_HELP)

    if driver_commands:
        _add_driver_commands(sub)

    schema = sub.add_parser("schema", help="print the JSON Schema of the agent and machine files")
    schema.add_argument("part", nargs="?", choices=["agent", "machine"],
                        help="print only this one, as a schema file an editor can use")

    sub.add_parser("vocabulary", help="print the canonical signal names and units "
                   "(docs/vocabulary.md)")

    sim = sub.add_parser("sim", help="run a device simulator")
    sim.add_argument("kind", choices=sorted(SIMULATORS))
    sim.add_argument("args", nargs=argparse.REMAINDER, help="simulator options (see --help)")

    buffer = sub.add_parser("buffer", help="inspect the local buffer; recover a damaged one")
    buffer.add_argument("action", choices=["stats", "recover"],
                        help="stats: backlog and seqs (also while the agent runs); recover: "
                        "with the agent stopped, move a damaged buffer aside and carry over "
                        "every batch it can still read")
    buffer.add_argument("-c", "--config", type=config_dir, required=True, help=CONFIG_HELP)
    buffer.add_argument("--state-dir", type=Path)
    buffer.add_argument("--json", action="store_true", help="machine-readable output")

    demo = sub.add_parser("demo", help="simulators + broker + agent + live view, one command")
    demo.add_argument("--duration", type=float, help="stop after this many seconds")
    demo.add_argument("--broker", metavar="mqtt://HOST:PORT",
                      help="use this broker instead of starting the embedded one")

    status = sub.add_parser("status", help="ask the running agent how its machines, uplink and "
                            "buffer are doing (from its metrics endpoint)")
    status.add_argument("-c", "--config", type=config_dir, required=True, help=CONFIG_HELP)
    status.add_argument("--state-dir", type=Path,
                        help="the agent's --state-dir, to read the oldest buffered batch")
    status.add_argument("--interval", type=float, default=1.0,
                        help="seconds between the two scrapes that give rates (default 1; 0: one)")
    return parser


def _add_driver_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """A subcommand for every command of every registered driver, in registry order."""
    from drivers.registry import DRIVERS
    added: set[int] = set()  # a command that several protocols share (one driver) comes once
    for spec in DRIVERS.values():
        for command in spec.commands:
            if id(command) not in added:
                added.add(id(command))
                parser = sub.add_parser(command.name, help=command.help)
                command.add_arguments(parser)
                parser.set_defaults(driver_command=command)


CONFIG_HELP = "the config folder (agent.yaml and machines.d/); agent.yaml itself is taken too"


def config_dir(text: str) -> Path:
    """-c: the config folder; a path to its agent.yaml means that folder."""
    path = Path(text)
    return path.parent if path.name == "agent.yaml" and path.is_file() else path


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script."""
    try:
        return _main(sys.argv[1:] if argv is None else argv)
    except BrokenPipeError:
        # `edge-agent schema | head`: the reader left; what was not read is not an error.
        # Python would report the broken pipe again when it flushes stdout at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK


def _main(argv: Sequence[str]) -> int:
    args = _parse(argv)
    command: DriverCommand | None = getattr(args, "driver_command", None)
    if command is not None:  # returns 0, 1 or 2 like EXIT_OK, EXIT_ERROR and EXIT_CONFIG
        result = command.run(args)
        return result if isinstance(result, int) else asyncio.run(result)
    if args.command == "sim":
        import importlib
        module = importlib.import_module(SIMULATORS[args.kind])
        return module.main(args.args)  # type: ignore[no-any-return]
    if args.command == "read":
        return _read(args.config, args.machine)
    if args.command == "vocabulary":
        from agent.signals.vocabulary import markdown
        print(markdown(), end="")
        return EXIT_OK
    if args.command == "schema":
        from agent.config.schema import full_schema
        from drivers.registry import DRIVERS
        document = full_schema(DRIVERS)
        if args.part:
            document = {"$schema": document["$schema"], **document[args.part]}
        print(json.dumps(document, indent=2))
        return EXIT_OK
    if args.command == "demo":
        from agent.cli.demo import run_demo
        return run_demo(args.duration, args.broker)
    if args.command == "status":
        from agent.cli.status import run_status
        return run_status(args.config, args.state_dir, args.interval)
    if args.command == "validate":
        return _validate(args.config, args.online, args.user)
    if args.command == "buffer" and args.action == "recover":
        return _buffer_recover(args.config, args.state_dir)
    if args.command == "buffer":
        return _buffer_stats(args.config, args.state_dir, args.json)
    return _run(args.config, args.state_dir)


def _validate(config_dir: Path, online: bool, user: str | None = None) -> int:
    from agent.config.files import check_files
    from drivers.file_checks import FileChecker
    try:
        files = FileChecker.for_service(user)
    except ValueError as exc:
        print(f"edge-agent: --user: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    config = load_or_report(config_dir)
    if config is None:
        return EXIT_CONFIG
    report = check_files(config, files)
    for line in report.errors + report.warnings:
        print(line, file=sys.stderr)
    if report.errors:
        print(f"{len(report.errors)} error(s) in {config_dir}", file=sys.stderr)
        return EXIT_CONFIG
    signals = sum(len(m.model.signals) for m in config.machines)
    if online:
        from agent.cli.commission import acquire_once, online_errors
        errors, unreachable = [], 0
        for machine in config.machines:
            try:
                acquired = asyncio.run(acquire_once(machine))
            except (ConnectionError, TimeoutError, OSError) as exc:
                unreachable += 1
                where = machine.source.relative_to(config.root) if machine.source.is_relative_to(
                    config.root) else machine.source
                print(f"{where}: cannot reach {machine.id}: {exc or type(exc).__name__}",
                      file=sys.stderr)
                continue
            errors += online_errors(machine, acquired)
        for error in errors:
            print(str(error), file=sys.stderr)
        if errors or unreachable:
            print(f"{len(errors)} error(s), {unreachable} machine(s) unreachable in {config_dir}",
                  file=sys.stderr)
            return EXIT_CONFIG
    print(f"{config_dir}: OK ({len(config.machines)} machine(s), {signals} signal(s)"
          f"{', checked online' if online else ''})")
    return EXIT_OK


def _read(config_dir: Path, machine_id: str) -> int:
    from agent.cli.commission import acquire_once, format_readings
    config = load_or_report(config_dir)
    if config is None:
        return EXIT_CONFIG
    machine = next((m for m in config.machines if m.id == machine_id), None)
    if machine is None:
        known = ", ".join(m.id for m in config.machines) or "none"
        print(f"edge-agent: no machine {machine_id!r} in {config_dir} (machines: {known})",
              file=sys.stderr)
        return EXIT_CONFIG
    try:
        acquired = asyncio.run(acquire_once(machine))
    except (ConnectionError, TimeoutError, OSError) as exc:
        print(f"edge-agent: cannot reach {machine_id}: {exc or type(exc).__name__}", file=sys.stderr)
        return EXIT_ERROR
    for line in format_readings(acquired):
        print(line)
    return EXIT_OK


def _buffer_stats(config_dir: Path, state_dir: Path | None, as_json: bool) -> int:
    from agent.buffer.store import buffer_path, stats_of_file
    config = load_or_report(config_dir)
    if config is None:
        return EXIT_CONFIG
    path = buffer_path(config.root, config.agent.buffer.path, state_dir)
    try:
        stats = stats_of_file(path)
    except (FileNotFoundError, OSError) as exc:
        print(f"edge-agent: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except sqlite3.Error as exc:
        print(f"edge-agent: {_explain_buffer_error(exc, config_dir, state_dir)}", file=sys.stderr)
        return EXIT_ERROR
    if as_json:
        print(json.dumps({
            "path": str(path), "epoch": stats.epoch, "batches": stats.batches,
            "bytes": stats.bytes, "oldest_ns": stats.oldest_ns,
            "machines": {m: {"seq": s.seq, "dropped_batches": s.dropped_batches,
                             "dropped_readings": s.dropped_readings}
                         for m, s in stats.machines.items()},
        }))
        return EXIT_OK
    age = (time.time_ns() - stats.oldest_ns) / 1e9 if stats.oldest_ns else 0.0
    print(f"buffer   {path}\nepoch    {stats.epoch}\nbacklog  {stats.batches} batches, "
          f"{stats.bytes} bytes, oldest {age:.1f} s")
    for machine, s in stats.machines.items():
        print(f"  {machine}: last seq {s.seq}, dropped {s.dropped_batches} batches "
              f"({s.dropped_readings} readings)")
    return EXIT_OK


def _explain_buffer_error(exc: BaseException, config_dir: Path, state_dir: Path | None) -> str:
    """A buffer error in one line, naming the file and the command that fixes it."""
    from agent.buffer.store import BufferUnusable
    if not isinstance(exc, BufferUnusable):
        return str(exc) or repr(exc)
    command = ["edge-agent", "buffer", "recover", "-c", str(config_dir)]
    if state_dir is not None:
        command += ["--state-dir", str(state_dir)]
    return exc.explain(shlex.join(command))


def _buffer_recover(config_dir: Path, state_dir: Path | None) -> int:
    from agent.buffer.store import buffer_path
    from agent.buffer.lock import BufferLocked
    from agent.buffer.recover import recover_buffer
    config = load_or_report(config_dir)
    if config is None:
        return EXIT_CONFIG
    path = buffer_path(config.root, config.agent.buffer.path, state_dir)
    try:
        result = recover_buffer(path)
    except BufferLocked as exc:
        print(f"edge-agent: {exc}: stop the agent first (systemctl stop edge-agent), then "
              "recover", file=sys.stderr)
        return EXIT_CONFIG
    except (OSError, sqlite3.Error) as exc:
        print(f"edge-agent: {_explain_buffer_error(exc, config_dir, state_dir)}", file=sys.stderr)
        return EXIT_ERROR
    for line in result.report():
        print(line)
    return EXIT_OK


def _dump_tasks() -> None:
    """SIGUSR1: log where every task is waiting, to diagnose a stall in the field."""
    import io

    from agent.runtime.logs import get_logger
    log = get_logger()
    for task in asyncio.all_tasks():
        out = io.StringIO()
        task.print_stack(limit=12, file=out)
        log.warning("task stack", task=task.get_name(), stack=out.getvalue())


def _run(config_dir: Path, state_dir: Path | None) -> int:
    from agent.runtime.logs import configure_logging
    config = load_or_report(config_dir)
    if config is None:
        return EXIT_CONFIG
    configure_logging(config.agent.logging.level, config.agent.logging.format)
    from agent.app import Agent
    try:
        agent = Agent(config, state_dir)
    except ValueError as exc:
        print(f"edge-agent: {exc}", file=sys.stderr)
        return EXIT_CONFIG

    async def main_async() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        loop.add_signal_handler(signal.SIGUSR1, _dump_tasks)
        loop.add_signal_handler(signal.SIGHUP, agent.request_reload)
        await agent.run(stop)

    from agent.buffer.lock import BufferLocked
    try:
        asyncio.run(main_async())
    except BufferLocked as exc:
        # Exit 2 at once: two agents on one buffer would reuse (machine, seq), which
        # consumers de-duplicate on, so the second one would silently lose batches.
        print(f"edge-agent: {exc}: two agents must not share a buffer; stop that one first or "
              "give this one its own --state-dir", file=sys.stderr)
        return EXIT_CONFIG
    except (OSError, sqlite3.Error) as exc:
        print(f"edge-agent: {_explain_buffer_error(exc, config_dir, state_dir)}", file=sys.stderr)
        return EXIT_ERROR
    if agent.buffer.failure is not None:  # the buffer broke while running (logged as well)
        print(f"edge-agent: {_explain_buffer_error(agent.buffer.failure, config_dir, state_dir)}",
              file=sys.stderr)
    return EXIT_ERROR if agent.failed else EXIT_OK
