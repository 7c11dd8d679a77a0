"""Real parts for integration tests: a mosquitto broker, simulator and agent processes, and
an MQTT subscriber that records everything. All on 127.0.0.1."""

from __future__ import annotations

import getpass
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from agent.core.encoding import decode
from agent.cli.processes import free_port, terminate

REPO = Path(__file__).resolve().parents[2]


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, step: float = 0.05) -> Any:
    """Poll until predicate() is truthy; fail the test with `what` on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def mosquitto_binary() -> str:
    found = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None)
    if not found:
        raise RuntimeError("mosquitto is not installed (apt-get install mosquitto)")
    return found


class Broker:
    """A mosquitto on a fixed loopback port that can be stopped and started again.

    Persistence is on, so a subscriber's session and its queued QoS 1 messages survive a
    broker restart, as they would on a plant broker.
    """

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.conf = self.dir / "mosquitto.conf"
        self.conf.write_text(
            f"listener {self.port} 127.0.0.1\n"
            "allow_anonymous true\n"
            "persistence true\n"
            f"persistence_location {self.dir}/\n"
            "max_queued_messages 0\n"
            "max_inflight_messages 0\n"
            "log_type error\n"
            "set_tcp_nodelay true\n"
            # Started as root, mosquitto would switch to its own user and then be unable
            # to write its persistence file here.
            f"user {getpass.getuser()}\n"
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen([mosquitto_binary(), "-c", str(self.conf)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        def accepting() -> bool:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return True
            except OSError:
                if self.proc is not None and self.proc.poll() is not None:
                    raise RuntimeError(f"mosquitto exited: {self.proc.stderr.read().decode()}")  # type: ignore[union-attr]
                return False
        wait_for(accepting, 10, "mosquitto to accept connections")

    def stop(self) -> None:
        if self.proc is not None:
            terminate(self.proc)
        self.proc = None


@dataclass
class Message:
    topic: str
    payload: bytes
    retain: bool

    def data(self) -> Any:
        return decode(self.payload)


class Subscriber:
    """Records every message under a prefix; persistent session, reconnects by itself."""

    def __init__(self, port: int, topic: str = "factory/#", client_id: str = "test-subscriber") -> None:
        self.messages: list[Message] = []
        self._lock = threading.Lock()
        self._client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                                   protocol=MQTTProtocolVersion.MQTTv311, clean_session=False)
        self._client.reconnect_delay_set(0.05, 0.5)
        self._topic = topic
        self._subscribed = threading.Event()
        self._client.on_connect = lambda c, u, f, rc, p: c.subscribe(topic, qos=1)
        self._client.on_subscribe = lambda c, u, mid, rc, p: self._subscribed.set()
        self._client.on_message = self._on_message
        self._client.connect("127.0.0.1", port, keepalive=10)
        self._client.loop_start()
        if not self._subscribed.wait(10):
            raise RuntimeError("subscriber could not subscribe")

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        with self._lock:
            self.messages.append(Message(msg.topic, bytes(msg.payload), bool(msg.retain)))

    def close(self) -> None:
        self._client.loop_stop()
        self._client.disconnect()

    def snapshot(self) -> list[Message]:
        with self._lock:
            return list(self.messages)

    def telemetry(self, machine: str | None = None) -> list[dict[str, Any]]:
        out = []
        for m in self.snapshot():
            if m.topic.endswith("/telemetry"):
                data = m.data()
                if machine is None or data["machine"] == machine:
                    out.append(data)
        return out

    def seqs(self, machine: str) -> list[int]:
        return [d["seq"] for d in self.telemetry(machine)]


class Simulator:
    """`python -m simulators.modbus.press` in a subprocess."""

    def __init__(self, port: int, *extra: str) -> None:
        self.port = port
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "simulators.modbus.press", "--host", "127.0.0.1",
             "--port", str(port), *extra], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        line = self.proc.stdout.readline().decode()  # type: ignore[union-attr]
        if "listening" not in line:
            raise RuntimeError(f"simulator did not start: {line}")

    def stop(self) -> None:
        terminate(self.proc)


def press_machine(machine_id: str, port: int, *, fast: str = "100ms", slow: str = "1s",
                  timeout: str = "500ms") -> str:
    """The example press machine file, renamed and pointed at `port`."""
    text = (REPO / "config/examples/machines.d/press.yaml").read_text()
    text = text.replace("id: press-01", f"id: {machine_id}").replace("port: 5020", f"port: {port}")
    text = text.replace("timeout: 1s", f"timeout: {timeout}")
    return text.replace("fast: 100ms", f"fast: {fast}").replace("slow: 5s", f"slow: {slow}")


@dataclass
class AgentConfig:
    root: Path
    broker_port: int
    machines: dict[str, str] = field(default_factory=dict)  # id -> yaml text
    encoding: str = "json"
    protocol: str = "auto"
    max_bytes: str = "64MiB"
    commit_interval: str = "50ms"
    max_inflight: int = 16
    shutdown_grace: str = "5s"
    mqtt_extra: str = ""  # more fields of the mqtt mapping, e.g. "profile: sparkplug, ..."

    def write(self) -> Path:
        cfg = self.root / "config"
        (cfg / "machines.d").mkdir(parents=True, exist_ok=True)
        (cfg / "agent.yaml").write_text(
            "agent: {id: gw-test, site: testsite}\n"
            f"mqtt: {{url: 'mqtt://127.0.0.1:{self.broker_port}', encoding: {self.encoding}, "
            f"protocol: '{self.protocol}', "
            f"max_inflight: {self.max_inflight}, reconnect_min: 100ms, reconnect_max: 1s, "
            f"state_interval: 1s{', ' + self.mqtt_extra if self.mqtt_extra else ''}}}\n"
            f"buffer: {{path: buffer.db, max_bytes: {self.max_bytes}, "
            f"commit_interval: {self.commit_interval}}}\n"
            "metrics: {listen: null}\n"
            "logging: {level: info, format: json}\n"
            f"shutdown_grace: {self.shutdown_grace}\n")
        for machine_id, text in self.machines.items():
            (cfg / "machines.d" / f"{machine_id}.yaml").write_text(text)
        return cfg


class AgentProcess:
    """`python -m agent run` in a subprocess, with its log kept in a file."""

    def __init__(self, config_dir: Path, state_dir: Path, log: Path) -> None:
        self.config_dir, self.state_dir, self.log_path = config_dir, state_dir, log
        self._log = open(log, "ab")
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "agent", "run", "-c", str(config_dir), "--state-dir", str(state_dir)],
            cwd=REPO, stdout=self._log, stderr=subprocess.STDOUT, env=env)

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self._log.close()

    def stop(self, timeout: float = 30, sig: int = signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError("agent did not stop on SIGTERM")
        self._log.close()
        return self.proc.returncode

    def logs(self) -> list[dict[str, Any]]:
        out = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                out.append({"event": line})
        return out


def buffer_stats(config_dir: Path, state_dir: Path) -> dict[str, Any]:
    """`edge-agent buffer stats --json` of a stopped (or running) agent."""
    out = subprocess.run(
        [sys.executable, "-m", "agent", "buffer", "stats", "-c", str(config_dir),
         "--state-dir", str(state_dir), "--json"],
        cwd=REPO, capture_output=True, check=True, timeout=60)
    return json.loads(out.stdout)  # type: ignore[no-any-return]


def assert_complete_and_ordered(seqs: list[int], last: int, dropped: set[int] = frozenset()) -> int:  # type: ignore[assignment]
    """Every seq 1..last (minus `dropped`) arrived; first arrivals in increasing order.
    Returns the number of duplicates."""
    expected = set(range(1, last + 1)) - set(dropped)
    missing = sorted(expected - set(seqs))
    assert not missing, f"missing seqs: {missing[:20]} ({len(missing)} in all)"
    firsts: list[int] = []
    seen: set[int] = set()
    for s in seqs:
        if s not in seen:
            seen.add(s)
            firsts.append(s)
    assert firsts == sorted(firsts), "batches of one machine arrived out of order"
    return len(seqs) - len(seen)
