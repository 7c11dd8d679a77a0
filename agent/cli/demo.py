"""`edge-agent demo`: one command, nothing else to install. It starts the simulators (a
stamping press on Modbus TCP, a CNC and an injection-moulding machine on OPC UA, a forging
line on a Modbus RTU serial bus, a tonnage monitor and a temperature controller on ASCII
serial lines), an embedded MQTT broker (amqtt; or `--broker mqtt://HOST:PORT` for a real
one), the agent with the example config in a temporary folder, and a live view of the
machines until Ctrl-C (or `--duration S`), then prints a summary.

On a terminal the view is a table redrawn every second; otherwise (a pipe, a log, a test)
it prints the same as plain lines every few seconds. If anything fails to start the demo
says what, stops everything it started, and exits 1.
"""

from __future__ import annotations

import collections
import faulthandler
import json
import os
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import FrameType
from typing import IO, Any
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from agent.cli.common import EXIT_OK, EXIT_ERROR, EXIT_CONFIG
from agent.cli.live_view import (AgentMetrics, MachineSignals, MetricsUnavailable, build_view,
                             metrics_url, plain_lines, rich_view, scrape)
from agent.cli.processes import free_port, terminate, wait_port
from agent.core.encoding import decode

# Children get no terminal input and their own process group: Ctrl-C reaches only the demo,
# which then stops them in order (the agent drains to the broker before the broker stops).
_CHILD: dict[str, Any] = {"stdin": subprocess.DEVNULL, "process_group": 0}
REFRESH_S = 1.0  # live view and metrics scrape
PLAIN_EVERY_S = 2.0  # plain periodic lines when stdout is not a terminal


def examples_dir() -> Path:
    """The example config folder: in a source checkout, or as installed with the package."""
    for candidate in (Path(__file__).resolve().parents[2] / "config" / "examples",
                      Path(sys.prefix) / "share" / "edge-agent" / "examples"):
        if (candidate / "agent.yaml").is_file():
            return candidate
    raise FileNotFoundError("the example config folder is not installed")


# Network simulators: (name, module, machine file, text of the example's address, options).
NETWORK_SIMULATORS: tuple[tuple[str, str, str, str, list[str]], ...] = (
    ("press", "simulators.modbus.press", "press.yaml", "port: 5020", []),
    ("cnc", "simulators.opcua.cnc", "cnc.yaml", "127.0.0.1:4840", ["--time-scale", "4"]),
    ("injection", "simulators.opcua.injection", "injection.yaml", "127.0.0.1:4841",
     ["--time-scale", "3"]),
)
# Serial simulators on a pty each: (name, arguments, machine files, the example's port).
SERIAL_SIMULATORS: tuple[tuple[str, list[str], list[str], str], ...] = (
    ("forging", ["simulators.modbus.forging", "--pty", "--parity", "N", "--time-scale", "2"],
     ["forging-press.yaml", "forging-heater.yaml", "forging-scale.yaml"], "/dev/ttyUSB0"),
    ("tonnage", ["simulators.serial.ascii", "tonnage", "--pty"], ["tonnage.yaml"],
     "/dev/ttyUSB1"),
    ("tempctl", ["simulators.serial.ascii", "tempctl", "--pty"], ["tempctl.yaml"],
     "/dev/ttyUSB2"),
)


# OPC UA event fields that say nothing about the machine.
_EVENT_HOUSEKEEPING = frozenset({"EventId", "EventType", "SourceNode", "SourceName", "Time",
                                 "ReceiveTime", "LocalTime"})


class DemoFailed(Exception):
    """Something did not start; the message says what (and where its log is)."""


class _Stop(BaseException):
    """SIGTERM/SIGHUP: stop like Ctrl-C."""


def _replace(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    if old not in text:
        raise DemoFailed(f"{path.name}: the example no longer contains {old!r}")
    path.write_text(text.replace(old, new))


def _log_tail(path: Path, lines: int = 3) -> str:
    try:
        tail = path.read_text(errors="replace").strip().splitlines()[-lines:]
    except OSError:
        return ""
    return ("; last lines of its log:\n    " + "\n    ".join(tail)) if tail else ""


def _parse_broker(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = None
    if parts.scheme != "mqtt" or not parts.hostname or parts.path not in ("", "/"):
        raise ValueError(f"--broker {url!r}: expected mqtt://HOST:PORT")
    return parts.hostname, port or 1883


class BrokerTap:
    """Subscribes to the agent's telemetry and events; counts and keeps the latest values."""

    def __init__(self, host: str, port: int, agent_id: str, on_event: Any) -> None:
        self.lock = threading.Lock()
        self.machines: dict[str, MachineSignals] = {}
        self.batches = self.readings = self.bad = 0
        self.events: collections.deque[str] = collections.deque(maxlen=3)
        self._agent, self._on_event = agent_id, on_event
        self._subscribed = threading.Event()
        self._client = mqtt.Client(CallbackAPIVersion.VERSION2,
                                   client_id=f"edge-agent-demo-{os.getpid()}",
                                   protocol=MQTTProtocolVersion.MQTTv311)
        self._client.on_connect = lambda c, u, f, rc, p: c.subscribe(
            [("factory/+/+/+/+/telemetry", 1), ("factory/+/+/+/+/event", 1)])
        self._client.on_subscribe = lambda c, u, mid, rc, p: self._subscribed.set()
        self._client.on_message = self._on_message
        try:
            self._client.connect(host, port, keepalive=30)
        except OSError as exc:
            raise DemoFailed(f"cannot connect to the broker at {host}:{port}: {exc}") from None
        self._client.loop_start()
        if not self._subscribed.wait(10):
            self.close()
            raise DemoFailed(f"the broker at {host}:{port} did not answer the subscription")

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        try:
            batch = decode(msg.payload)
            if batch.get("agent") != self._agent:
                return
            machine = batch["machine"]
            if "events" in batch:
                for event in batch["events"]:
                    fields = {k: v for k, v in (event.get("fields") or {}).items()
                              if k not in _EVENT_HOUSEKEEPING}
                    text = (f"{time.strftime('%H:%M:%S')} {machine} event {event['event']}: "
                            + json.dumps(fields, default=str, separators=(",", ":"))[:160])
                    with self.lock:
                        self.events.append(text)
                    self._on_event(text)
                return
            readings = batch["readings"]
        except (ValueError, KeyError, TypeError, AttributeError):
            return
        with self.lock:
            self.batches += 1
            self.readings += len(readings)
            self.bad += sum(r.get("quality") != "good" for r in readings)
            self.machines.setdefault(machine, MachineSignals()).add(readings)

    def snapshot(self) -> dict[str, MachineSignals]:
        with self.lock:
            return {m: MachineSignals(dict(s.values), s.last_poll_ns, s.batches, s.readings,
                                      s.bad) for m, s in self.machines.items()}

    def close(self) -> None:
        self._client.loop_stop()
        try:
            self._client.disconnect()
        except Exception:  # closing anyway
            pass


class Demo:
    def __init__(self, duration: float | None, broker: str | None) -> None:
        self.duration = duration
        self.broker_url = broker
        self.work = Path(tempfile.mkdtemp(prefix="edge-agent-demo-"))
        self.config = self.work / "config"
        self.procs: list[subprocess.Popen[bytes]] = []
        self.agent: subprocess.Popen[bytes] | None = None
        self.tap: BrokerTap | None = None
        self.live = sys.stdout.isatty()
        self._print_lock = threading.Lock()
        self._quiet = False  # no more event lines: the summary is the last line
        self._logs: list[IO[bytes]] = []

    # --- starting things -------------------------------------------------------------
    def _log(self, name: str) -> tuple[Path, IO[bytes]]:
        path = self.work / f"{name}.log"
        handle = open(path, "ab")
        self._logs.append(handle)
        return path, handle

    def _start_broker(self, host: str, port: int) -> str:
        """Start the embedded broker, or check the given one answers; says which it is."""
        if self.broker_url:
            import socket
            try:
                with socket.create_connection((host, port), timeout=3):
                    pass
            except OSError as exc:
                raise DemoFailed(f"cannot reach the broker at {self.broker_url}: "
                                 f"{exc.strerror or exc}") from None
            return f"broker {self.broker_url}"
        from agent.cli import embedded_broker
        try:
            proc = embedded_broker.start(port, self.work / "broker.log", process_group=0)
        except RuntimeError as exc:
            raise DemoFailed(str(exc)) from None
        self.procs.append(proc)
        return f"embedded MQTT broker (amqtt) on 127.0.0.1:{port}"

    def _start_network_simulators(self) -> list[str]:
        started = []
        for name, module, machine_file, address, extra in NETWORK_SIMULATORS:
            port = free_port()
            new = f"port: {port}" if address.startswith("port") else f"127.0.0.1:{port}"
            _replace(self.config / "machines.d" / machine_file, address, new)
            log_path, log = self._log(name)
            proc = subprocess.Popen([sys.executable, "-m", module, "--port", str(port), *extra],
                                    stdout=log, stderr=subprocess.STDOUT, **_CHILD)
            self.procs.append(proc)
            started.append((name, port, proc, log_path))
        for name, port, proc, log_path in started:
            try:
                wait_port(port, proc, f"the {name} simulator", timeout=30)
            except RuntimeError as exc:
                raise DemoFailed(f"{exc}{_log_tail(log_path)}") from None
        return [f"{name} on 127.0.0.1:{port}" for name, port, _, _ in started]

    def _start_serial_simulators(self) -> list[str]:
        started = []
        for name, args, files, example_port in SERIAL_SIMULATORS:
            log_path, log = self._log(name)
            proc = subprocess.Popen([sys.executable, "-m", *args], stdout=subprocess.PIPE,
                                    stderr=log, **_CHILD)
            self.procs.append(proc)
            device = self._announced_device(name, proc, log_path)
            for machine_file in files:
                _replace(self.config / "machines.d" / machine_file, example_port, device)
            started.append(f"{name} on {device}")
        return started

    @staticmethod
    def _announced_device(name: str, proc: subprocess.Popen[bytes], log_path: Path,
                          timeout: float = 15) -> str:
        """The device a pty simulator announces ("<kind> listening on /dev/pts/N"); its later
        output is drained in a thread."""
        assert proc.stdout is not None
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stdout, selectors.EVENT_READ)
            if not sel.select(timeout):
                raise DemoFailed(f"the {name} simulator did not start within {timeout:.0f} s"
                                 f"{_log_tail(log_path)}")
        line = proc.stdout.readline().decode(errors="replace").strip()
        if " listening on " not in line:
            if not line:  # its output closed: it is exiting
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    pass
            code = proc.poll()
            why = f"exited at start (code {code})" if code is not None else f"said {line!r}"
            raise DemoFailed(f"the {name} simulator {why}{_log_tail(log_path)}")
        threading.Thread(target=proc.stdout.read, daemon=True).start()
        return line.rsplit(" ", 1)[1]

    def _configure(self, broker_host: str, broker_port: int, metrics_port: int) -> None:
        try:
            shutil.copytree(examples_dir(), self.config)
        except (FileNotFoundError, OSError) as exc:
            raise DemoFailed(f"cannot copy the example config: {exc}") from None
        agent_yaml = self.config / "agent.yaml"
        _replace(agent_yaml, "mqtt://127.0.0.1:1883", f"mqtt://{broker_host}:{broker_port}")
        _replace(agent_yaml, 'listen: "127.0.0.1:9108"', f'listen: "127.0.0.1:{metrics_port}"')
        _replace(agent_yaml, "format: auto", "format: json")  # the log goes to a file
        if not self.broker_url:
            # amqtt speaks MQTT 3.1.1 only.
            _replace(agent_yaml, "protocol: auto", 'protocol: "3.1.1"')

    def _machines(self) -> tuple[str, list[tuple[str, bool]]]:
        from agent.config.loader import ConfigInvalid, load_config
        from drivers.registry import DRIVERS
        try:
            config = load_config(self.config, DRIVERS)
        except ConfigInvalid as exc:
            raise DemoFailed("the example config is invalid: "
                             + "; ".join(str(e) for e in exc.errors)) from None
        return config.agent.agent.id, [(m.id, bool(m.model.enabled)) for m in config.machines]

    # --- running ---------------------------------------------------------------------
    def _print(self, *lines: str) -> None:
        with self._print_lock:
            for line in lines:
                print(line, flush=True)

    def _on_event(self, text: str) -> None:
        if not self.live and not self._quiet:
            self._print(text)

    def run(self) -> int:
        handlers = {}
        if threading.current_thread() is threading.main_thread():
            def stop(signum: int, frame: FrameType | None) -> None:
                raise _Stop()
            for sig in (signal.SIGTERM, signal.SIGHUP):
                handlers[sig] = signal.signal(sig, stop)
            # A demo that seems stuck: `kill -USR1` shows where each thread is.
            faulthandler.register(signal.SIGUSR1, all_threads=True)
        ok = False
        try:
            ok = self._run()
            return EXIT_OK if ok else EXIT_ERROR
        except DemoFailed as exc:
            print(f"edge-agent demo: {exc}", file=sys.stderr, flush=True)
            return EXIT_ERROR
        except (KeyboardInterrupt, _Stop):
            print("edge-agent demo: interrupted", file=sys.stderr, flush=True)
            return 130
        finally:
            self._cleanup()
            for sig, handler in handlers.items():
                signal.signal(sig, handler)
            if ok or not self.procs:  # nothing ran: no log worth keeping
                shutil.rmtree(self.work, ignore_errors=True)
            else:
                print(f"edge-agent demo: logs kept in {self.work}", file=sys.stderr, flush=True)

    def _run(self) -> bool:
        metrics_port = free_port()
        host, port = _parse_broker(self.broker_url) if self.broker_url else ("127.0.0.1",
                                                                              free_port())
        self._configure(host, port, metrics_port)
        broker_text = self._start_broker(host, port)
        sims = self._start_network_simulators() + self._start_serial_simulators()
        agent_id, machines = self._machines()
        self.tap = BrokerTap(host, port, agent_id, self._on_event)
        _, agent_log = self._log("agent")
        self.agent = subprocess.Popen(
            [sys.executable, "-m", "agent", "run", "-c", str(self.config),
             "--state-dir", str(self.work / "state")],
            stdout=agent_log, stderr=subprocess.STDOUT, **_CHILD,
            env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self.procs.append(self.agent)
        url = metrics_url(f"127.0.0.1:{metrics_port}")
        self._print(f"demo: simulators {', '.join(sims)}",
                    f"demo: {broker_text}; agent metrics on {url}",
                    f"demo: from another terminal: edge-agent status -c {self.config} "
                    f"--state-dir {self.work / 'state'}",
                    "demo: " + ("Ctrl-C to stop" if self.duration is None else
                                f"running {self.duration:g} s"))
        started = time.monotonic()
        agent_died = False
        try:
            agent_died = not self._watch(machines, url, started)
        except (KeyboardInterrupt, _Stop):
            pass
        elapsed = time.monotonic() - started
        code = self._stop_agent()
        time.sleep(0.3)  # the last PUBACKed batches reach the tap
        self._quiet = True
        tap = self.tap
        assert tap is not None
        with tap.lock:
            batches, readings, bad = tap.batches, tap.readings, tap.bad
        if agent_died:
            print(f"edge-agent demo: the agent exited (code {code})"
                  f"{_log_tail(self.work / 'agent.log', 5)}", file=sys.stderr, flush=True)
        self._print(f"demo: {batches} batches, {readings} readings "
                    f"({readings / max(elapsed, 1e-9):.0f}/s), {bad} bad; agent exit code {code}")
        if not batches:
            print("edge-agent demo: nothing arrived from the agent; see "
                  f"{self.work / 'agent.log'}", file=sys.stderr, flush=True)
        return bool(batches) and code == 0 and not agent_died

    def _watch(self, machines: list[tuple[str, bool]], url: str, started: float) -> bool:
        """Show the view until the duration is over or Ctrl-C; False if the agent died."""
        assert self.tap is not None and self.agent is not None
        previous: AgentMetrics | None = None
        current: AgentMetrics | None = None
        last_plain = started  # the first lines after PLAIN_EVERY_S, when there is data
        live = None
        if self.live:
            from rich.console import Console
            from rich.live import Live
            live = Live(console=Console(), auto_refresh=False, transient=False,
                        redirect_stdout=False, redirect_stderr=False)
            live.start()
        try:
            while True:
                now = time.monotonic()
                if self.agent.poll() is not None:
                    return False
                error = None
                try:
                    previous, current = current, scrape(url, timeout=0.8)
                except MetricsUnavailable as exc:
                    error = "agent starting" if now - started < 10 else str(exc)
                view = build_view(machines, current if error is None else None,
                                  previous if error is None else None,
                                  self.tap.snapshot(), error=error,
                                  oldest_age=self._oldest_age(current))
                elapsed = now - started
                if live is not None:
                    with self.tap.lock:
                        events = list(self.tap.events)
                        totals = (self.tap.batches, self.tap.readings, self.tap.bad)
                    footer = [f"on the broker: {totals[0]} batches, {totals[1]} readings, "
                              f"{totals[2]} bad; {elapsed:.0f} s; "
                              + ("Ctrl-C to stop" if self.duration is None
                                 else f"stops after {self.duration:g} s"), *events]
                    live.update(rich_view(view, "edge-agent demo", footer,
                                          live.console.width), refresh=True)
                elif now - last_plain >= PLAIN_EVERY_S - 0.05:
                    last_plain = now
                    self._print(f"--- {time.strftime('%H:%M:%S')} demo {elapsed:.0f} s",
                                *plain_lines(view, with_signals=True))
                if self.duration is not None and elapsed >= self.duration:
                    return True
                wait = REFRESH_S - (time.monotonic() - now)
                if self.duration is not None:
                    wait = min(wait, self.duration - (time.monotonic() - started))
                time.sleep(max(0.05, wait))
        finally:
            if live is not None:
                live.stop()

    def _oldest_age(self, current: AgentMetrics | None) -> float | None:
        if current is None or not current.buffer_batches or current.buffer_oldest_age is not None:
            return None  # nothing waiting, or the agent says how old it is
        from agent.cli.status import oldest_batch_age
        return oldest_batch_age(self.work / "state" / "buffer.db")

    def _stop_agent(self) -> int | None:
        agent = self.agent
        if agent is None:
            return None
        if agent.poll() is None:
            agent.send_signal(signal.SIGTERM)
            try:
                agent.wait(30)
            except subprocess.TimeoutExpired:
                agent.kill()
                agent.wait()
        return agent.returncode

    def _cleanup(self) -> None:
        """Stop everything this demo started (the agent before the broker); never raises."""
        # Ctrl-C (or SIGTERM) again while cleaning up must not leave children behind.
        previous = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                previous[sig] = signal.signal(sig, signal.SIG_IGN)
        try:
            if self.agent is not None and self.agent.poll() is None:
                self._stop_agent()
            if self.tap is not None:
                self.tap.close()
            for proc in reversed(self.procs):
                try:
                    terminate(proc, 10)
                except OSError:
                    pass
                if proc.stdout is not None:
                    proc.stdout.close()
            for handle in self._logs:
                handle.close()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def run_demo(duration: float | None, broker: str | None = None) -> int:
    """Run everything on loopback until Ctrl-C (or `duration` seconds); print a summary."""
    if broker is not None:
        try:
            _parse_broker(broker)
        except ValueError as exc:
            print(f"edge-agent demo: {exc}", file=sys.stderr)
            return EXIT_CONFIG
    if duration is not None and duration <= 0:
        print("edge-agent demo: --duration must be positive", file=sys.stderr)
        return EXIT_CONFIG
    return Demo(duration, broker).run()
