"""The `edge-agent` command line."""

from __future__ import annotations

import argparse
import asyncio
import json
import shlex
import signal
import sqlite3
import sys
import time
from pathlib import Path
from typing import Sequence

from agent.cli.common import EXIT_OK, EXIT_ERROR, EXIT_CONFIG, load_or_report
from agent import __version__

SIMULATORS = {"press": "simulators.press", "cnc": "simulators.cnc",
              "injection": "simulators.injection", "forging": "simulators.forging",
              "serial": "simulators.serial_ascii"}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edge-agent", description=__doc__)
    parser.add_argument("--version", action="version", version=f"edge-agent {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the agent (what systemd starts)")
    run.add_argument("-c", "--config", type=Path, required=True, help="config folder")
    run.add_argument("--state-dir", type=Path, help="folder for the buffer (overrides buffer.path's)")

    validate = sub.add_parser("validate", help="check a config folder, print every error")
    validate.add_argument("-c", "--config", type=Path, required=True)
    validate.add_argument("--online", action="store_true",
                          help="also connect to every machine and check its signals exist")
    validate.add_argument("--user", help="check that this user (the service's User=) can read "
                          "every file the config names (default as root: edge-agent, if it exists)")

    read = sub.add_parser("read", help="acquire one configured machine once and print it")
    read.add_argument("machine", help="machine id")
    read.add_argument("-c", "--config", type=Path, required=True)

    browse = sub.add_parser("browse", help="print an OPC UA server's address space")
    browse.add_argument("url", help="opc.tcp://HOST:PORT")
    browse.add_argument("--path", default="/Objects", help="browse path or NodeId to start at")
    browse.add_argument("--depth", type=int, default=3)
    browse.add_argument("--policy", default="None",
                        choices=["None", "Basic256Sha256", "Aes128_Sha256_RsaOaep", "Aes256_Sha256_RsaPss"])
    browse.add_argument("--mode", choices=["Sign", "SignAndEncrypt"])
    browse.add_argument("--certificate", help="client certificate (edge-agent certs create)")
    browse.add_argument("--private-key")
    browse.add_argument("--trust", help="folder of trusted server certificates")
    browse.add_argument("--trust-on-first-use", action="store_true")
    browse.add_argument("--username")
    browse.add_argument("--password-env", help="environment variable holding the password")
    browse.add_argument("--allow-plaintext-password", action="store_true",
                        help="send the password with --policy None (unencrypted)")
    browse.add_argument("--timeout", default="5s", help="per request (default 5s)")

    certs = sub.add_parser("certs", help="OPC UA client application certificates")
    certs.add_argument("action", choices=["create"])
    certs.add_argument("--dir", type=Path, default=Path("pki"),
                       help="writes DIR/own/cert.der and DIR/own/key.pem (default ./pki)")
    certs.add_argument("--uri", help="application URI (default urn:HOSTNAME:edge-agent); the "
                       "agent announces the URI it finds in its certificate")
    certs.add_argument("--hostname")
    certs.add_argument("--days", type=int, default=3650)
    certs.add_argument("--force", action="store_true", help="replace an existing certificate")

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
    buffer.add_argument("-c", "--config", type=Path, required=True)
    buffer.add_argument("--state-dir", type=Path)
    buffer.add_argument("--json", action="store_true", help="machine-readable output")

    demo = sub.add_parser("demo", help="simulators + broker + agent + live view, one command")
    demo.add_argument("--duration", type=float, help="stop after this many seconds")
    demo.add_argument("--broker", metavar="mqtt://HOST:PORT",
                      help="use this broker instead of starting the embedded one")

    status = sub.add_parser("status", help="ask the running agent how its machines, uplink and "
                            "buffer are doing (from its metrics endpoint)")
    status.add_argument("-c", "--config", type=Path, required=True, help="config folder")
    status.add_argument("--state-dir", type=Path,
                        help="the agent's --state-dir, to read the oldest buffered batch")
    status.add_argument("--interval", type=float, default=1.0,
                        help="seconds between the two scrapes that give rates (default 1; 0: one)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script."""
    args = _parser().parse_args(argv)
    if args.command == "sim":
        import importlib
        module = importlib.import_module(SIMULATORS[args.kind])
        return module.main(args.args)  # type: ignore[no-any-return]
    if args.command == "browse":
        return _browse(args)
    if args.command == "certs":
        return _certs(args)
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


def _browse(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from drivers.opcua.browse import browse
    from drivers.opcua.config import OpcUaConnection
    security = {"policy": args.policy, "mode": args.mode, "certificate": args.certificate,
                "private_key": args.private_key, "trust": args.trust,
                "trust_on_first_use": args.trust_on_first_use}
    auth = {"username": args.username, "password_env": args.password_env,
            "allow_plaintext_password": args.allow_plaintext_password or None}
    try:
        conn = OpcUaConnection.model_validate({
            "protocol": "opcua", "url": args.url, "timeout": args.timeout,
            "security": {k: v for k, v in security.items() if v not in (None, False)},
            "auth": {k: v for k, v in auth.items() if v is not None}})
    except ValidationError as exc:
        for err in exc.errors():
            where = ".".join(str(p) for p in err["loc"])
            print(f"edge-agent: {where}: {err['msg'].removeprefix('Value error, ')}", file=sys.stderr)
        return EXIT_CONFIG
    try:
        count = asyncio.run(browse(conn, args.path, args.depth, print))
    except (ConnectionError, TimeoutError, OSError) as exc:
        print(f"edge-agent: {args.url}: {exc or type(exc).__name__}", file=sys.stderr)
        return EXIT_ERROR
    print(f"({count} nodes)", file=sys.stderr)
    return EXIT_OK


def _certs(args: argparse.Namespace) -> int:
    from drivers.opcua.config import default_application_uri
    from drivers.opcua.security import create_certificate
    cert, key = args.dir / "own" / "cert.der", args.dir / "own" / "key.pem"
    existing = [p for p in (cert, key) if p.exists()]
    if existing and not args.force:
        print(f"edge-agent: {existing[0]} exists (use --force to replace it)", file=sys.stderr)
        return EXIT_ERROR
    uri = args.uri or default_application_uri()
    try:
        create_certificate(cert, key, uri, args.hostname, args.days)
        (args.dir / "trusted").mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        print(f"edge-agent: {exc}", file=sys.stderr)
        return EXIT_ERROR
    print(f"certificate      {cert}\nprivate key      {key}\napplication URI  {uri}\n"
          f"trust folder     {args.dir / 'trusted'} (put the server certificates here)\n"
          f"Give the server {cert} to trust.")
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
