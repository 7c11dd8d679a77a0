"""The `edge-agent` command line."""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sqlite3
import sys
import time
from pathlib import Path
from typing import Sequence

from agent import __version__

EXIT_OK, EXIT_ERROR, EXIT_CONFIG = 0, 1, 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edge-agent", description=__doc__)
    parser.add_argument("--version", action="version", version=f"edge-agent {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the agent (what systemd starts)")
    run.add_argument("-c", "--config", type=Path, required=True, help="config folder")
    run.add_argument("--state-dir", type=Path, help="folder for the buffer (overrides buffer.path's)")

    validate = sub.add_parser("validate", help="check a config folder, print every error")
    validate.add_argument("-c", "--config", type=Path, required=True)

    sub.add_parser("schema", help="print the JSON Schema of the agent and machine files")

    sim = sub.add_parser("sim", help="run a device simulator")
    sim.add_argument("kind", choices=["press"])
    sim.add_argument("args", nargs=argparse.REMAINDER, help="simulator options (see --help)")

    buffer = sub.add_parser("buffer", help="inspect the local buffer")
    buffer.add_argument("action", choices=["stats"])
    buffer.add_argument("-c", "--config", type=Path, required=True)
    buffer.add_argument("--state-dir", type=Path)
    buffer.add_argument("--json", action="store_true", help="machine-readable output")

    demo = sub.add_parser("demo", help="simulator + broker + agent + live readings")
    demo.add_argument("--duration", type=float, help="stop after this many seconds")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script."""
    args = _parser().parse_args(argv)
    if args.command == "sim":
        from simulators import press
        return press.main(args.args)
    if args.command == "schema":
        from agent.config.schema import full_schema
        from drivers.registry import DRIVERS
        print(json.dumps(full_schema(DRIVERS), indent=2))
        return EXIT_OK
    if args.command == "demo":
        from agent.demo import run_demo
        return run_demo(args.duration)
    if args.command == "validate":
        return _validate(args.config)
    if args.command == "buffer":
        return _buffer_stats(args.config, args.state_dir, args.json)
    return _run(args.config, args.state_dir)


def _load(config_dir: Path):  # type: ignore[no-untyped-def]
    from agent.config.loader import ConfigInvalid, load_config
    from drivers.registry import DRIVERS
    try:
        return load_config(config_dir, DRIVERS)
    except ConfigInvalid as exc:
        for error in exc.errors:
            print(str(error), file=sys.stderr)
        print(f"{len(exc.errors)} error(s) in {config_dir}", file=sys.stderr)
        return None


def _validate(config_dir: Path) -> int:
    config = _load(config_dir)
    if config is None:
        return EXIT_CONFIG
    signals = sum(len(m.model.signals) for m in config.machines)
    print(f"{config_dir}: OK ({len(config.machines)} machine(s), {signals} signal(s))")
    return EXIT_OK


def _buffer_stats(config_dir: Path, state_dir: Path | None, as_json: bool) -> int:
    from agent.buffer import buffer_path, stats_of_file
    config = _load(config_dir)
    if config is None:
        return EXIT_CONFIG
    path = buffer_path(config.root, config.agent.buffer.path, state_dir)
    try:
        stats = stats_of_file(path)
    except (FileNotFoundError, OSError) as exc:
        print(f"edge-agent: {exc}", file=sys.stderr)
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


def _dump_tasks() -> None:
    """SIGUSR1: log where every task is waiting, to diagnose a stall in the field."""
    import io
    from agent.logs import get_logger
    log = get_logger()
    for task in asyncio.all_tasks():
        out = io.StringIO()
        task.print_stack(limit=12, file=out)
        log.warning("task stack", task=task.get_name(), stack=out.getvalue())


def _run(config_dir: Path, state_dir: Path | None) -> int:
    from agent.logs import configure_logging
    config = _load(config_dir)
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
        await agent.run(stop)

    try:
        asyncio.run(main_async())
    except (OSError, sqlite3.Error) as exc:
        print(f"edge-agent: {exc}", file=sys.stderr)
        return EXIT_ERROR
    return EXIT_ERROR if agent.failed else EXIT_OK
