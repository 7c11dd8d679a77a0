"""systemd integration: the unit file's sandbox score and syntax, and the sd_notify protocol
(READY=1 once the buffer is open, STATUS= summaries, watchdog pings from the event loop,
STOPPING=1 on SIGTERM), against a real agent and as units."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import socket
import subprocess
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from agent.cli.processes import free_port
from agent.runtime.sd_notify import Notifier, ServiceNotify
from tests.support.harness import (REPO, AgentConfig, AgentProcess, Broker, Simulator, press_machine,
                           wait_for)

SERVICE = REPO / "systemd" / "edge-agent.service"
ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(
    ANALYZE is None, reason="systemd-analyze is not installed (Debian 12: apt-get install systemd)")


def unit_settings() -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in SERVICE.read_text().splitlines():
        if "=" in line and not line.lstrip().startswith(("#", ";")):
            key, _, value = line.partition("=")
            settings.setdefault(key.strip(), []).append(value.strip())
    return settings


# ---- the unit file ----------------------------------------------------------------------

@needs_analyze
def test_unit_sandbox_exposure_is_ok_or_better() -> None:
    out = subprocess.run([ANALYZE, "security", "--offline=yes", str(SERVICE)],  # type: ignore[list-item]
                         capture_output=True, text=True, timeout=120, check=False)
    found = re.search(r"Overall exposure level for edge-agent\.service: (\d+(?:\.\d+)?)", out.stdout)
    assert found, f"no exposure level in:\n{out.stdout}\n{out.stderr}"
    assert float(found.group(1)) <= 2.0, out.stdout
    # A misspelt or misplaced key is only a warning ("Unknown key ..., ignoring"): none.
    assert "edge-agent.service:" not in out.stderr, out.stderr


@needs_analyze
def test_unit_verifies(tmp_path: Path) -> None:
    # verify insists that ExecStart's binary exists: point it at a stand-in.
    binary = unit_settings()["ExecStart"][0].split()[0]
    stand_in = tmp_path / "edge-agent"
    stand_in.write_text("#!/bin/sh\n")
    stand_in.chmod(0o755)
    unit = tmp_path / "edge-agent.service"
    unit.write_text(SERVICE.read_text().replace(binary, str(stand_in)))
    out = subprocess.run([ANALYZE, "verify", "--man=no", str(unit)],  # type: ignore[list-item]
                         capture_output=True, text=True, timeout=120, cwd=tmp_path, check=False)
    complaints = [line for line in (out.stdout + out.stderr).splitlines()
                  if "edge-agent.service" in line]
    assert out.returncode == 0 and not complaints, out.stdout + out.stderr


def test_unit_notifies_has_a_watchdog_and_keeps_serial_ports_reachable() -> None:
    s = unit_settings()
    assert s["Type"] == ["notify"] and s["NotifyAccess"] == ["main"]
    assert s["WatchdogSec"] == ["30"] and s["Restart"] == ["on-failure"]
    assert s["ExecStart"] == [
        "/opt/edge-agent/.venv/bin/edge-agent run -c /etc/edge-agent --state-dir /var/lib/edge-agent"]
    assert s["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert s["StateDirectory"] == ["edge-agent"] and s["ConfigurationDirectory"] == ["edge-agent"]
    # PrivateDevices=yes would hide /dev/ttyS* and friends: a device allow list instead.
    assert s.get("PrivateDevices", ["no"]) == ["no"] and s["DevicePolicy"] == ["closed"]
    allowed = {a.split()[0] for a in s["DeviceAllow"]}
    assert {"char-ttyS", "char-ttyUSB", "char-ttyACM"} <= allowed
    assert "dialout" in s["SupplementaryGroups"]
    families = set(" ".join(s["RestrictAddressFamilies"]).split())
    assert {"AF_INET", "AF_INET6", "AF_UNIX"} <= families  # brokers, PLCs, sd_notify
    assert "IPAddressDeny" not in s


def test_unit_limits_memory_and_shows_how_to_pass_a_credential() -> None:
    s = unit_settings()
    # About 80 MB RSS at 10k Modbus tags, 130 MB at 10k OPC UA items: throttled well above,
    # killed (and restarted) above that.
    assert s["MemoryHigh"] == ["384M"] and s["MemoryMax"] == ["512M"]
    # The example stays commented: the credential's file exists only on a configured box.
    assert "#LoadCredential=mqtt-password:/etc/edge-agent/mqtt-password" in (
        SERVICE.read_text().splitlines())
    readme = (REPO / "systemd" / "README.md").read_text()
    assert "LoadCredential=" in readme and "systemctl show" in readme and "MemoryMax=" in readme


# ---- a real agent -----------------------------------------------------------------------

class NotifySocket:
    """The service manager's end: records every datagram, and whether the buffer file
    existed when it arrived."""

    def __init__(self, address: str | bytes, buffer: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(address)
        self.sock.settimeout(0.2)
        self.buffer = buffer
        self.received: list[tuple[list[str], bool]] = []  # (lines, buffer existed)
        self._lock = threading.Lock()
        self._closed = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._closed:
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            exists = self.buffer.exists()
            with self._lock:
                self.received.append((data.decode().split("\n"), exists))

    def lines(self) -> list[str]:
        with self._lock:
            return [line for lines, _ in self.received for line in lines]

    def first(self, line: str) -> tuple[list[str], bool] | None:
        with self._lock:
            return next((r for r in self.received if line in r[0]), None)

    def close(self) -> None:
        self._closed = True
        self._thread.join(5)
        self.sock.close()


@pytest.mark.parametrize("namespace", ["path", "abstract"])
def test_agent_notifies_ready_status_watchdog_and_stopping(
        tmp_path: Path, broker: Broker, monkeypatch: pytest.MonkeyPatch, namespace: str) -> None:
    sim = Simulator(free_port())
    config = AgentConfig(tmp_path, broker.port, {
        "p1": press_machine("p1", sim.port), "p2": press_machine("p2", free_port())}).write()
    state = tmp_path / "state"
    if namespace == "path":
        address: str | bytes = str(tmp_path / "notify.sock")
        env_value = str(address)
    else:
        name = f"edge-agent-test-{uuid.uuid4().hex}"
        address, env_value = b"\0" + name.encode(), "@" + name
    listener = NotifySocket(address, state / "buffer.db")
    monkeypatch.setenv("NOTIFY_SOCKET", env_value)
    monkeypatch.setenv("WATCHDOG_USEC", "1000000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    agent = AgentProcess(config, state, tmp_path / "agent.log")
    try:
        ready = wait_for(lambda: listener.first("READY=1"), 30, "READY=1")
        lines, buffer_existed = ready
        assert buffer_existed, "READY=1 before the buffer file existed"
        assert all(existed for _, existed in listener.received), "a notification before the buffer"
        assert any(line.startswith("STATUS=") and "machines up" in line for line in lines), lines
        # p2 has no device behind it; p1 has the simulator, and the broker runs.
        wait_for(lambda: "STATUS=1/2 machines up, backlog" in "\n".join(
            line for line in listener.lines() if "uplink connected" in line), 30,
            "a STATUS= line with p1 up and the uplink connected")
        status = [line for line in listener.lines() if line.startswith("STATUS=")]
        assert all(re.fullmatch(r"STATUS=\d+/2 machines up, backlog \d+ batches \(\d+ bytes\), "
                                r"uplink (connected|disconnected)(, UNHEALTHY)?", line)
                   for line in status), status
        wait_for(lambda: listener.lines().count("WATCHDOG=1") >= 3, 30, "three watchdog pings")
        assert "STOPPING=1" not in listener.lines()
        assert agent.stop() == 0
        lines_after = listener.lines()
        assert "STOPPING=1" in lines_after
        assert lines_after.index("STOPPING=1") > lines_after.index("READY=1")
        stopping = listener.first("STOPPING=1")
        assert stopping is not None and any(l.startswith("STATUS=stopping: ") for l in stopping[0])
    finally:
        if agent.proc.poll() is None:
            agent.stop()
        sim.stop()
        listener.close()
    assert not any(l.get("event") == "cannot notify systemd" for l in agent.logs())


def test_agent_with_an_unreachable_notify_socket_runs_and_stops_cleanly(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = AgentConfig(tmp_path, free_port(), {"p": press_machine("p", free_port())}).write()
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "nobody-listens.sock"))
    monkeypatch.setenv("WATCHDOG_USEC", "200000")
    agent = AgentProcess(config, tmp_path / "state", tmp_path / "agent.log")
    try:
        wait_for(lambda: any(l.get("event") == "cannot notify systemd" for l in agent.logs()),
                 30, "the failed notification in the log")
        time.sleep(0.5)  # more pings fail meanwhile: logged once only
        assert agent.proc.poll() is None
    finally:
        assert agent.stop() == 0
    assert sum(l.get("event") == "cannot notify systemd" for l in agent.logs()) == 1


# ---- Notifier ---------------------------------------------------------------------------

class RecordingLog:
    def __init__(self) -> None:
        self.warnings: list[tuple[str, dict[str, Any]]] = []

    def warning(self, event: str, **kw: Any) -> None:
        self.warnings.append((event, kw))

    def exception(self, event: str, **kw: Any) -> None:
        self.warnings.append((event, kw))


def bound(address: str | bytes) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(address)
    sock.settimeout(5)
    return sock


def test_notifier_without_notify_socket_is_inactive() -> None:
    n = Notifier.from_environment({"WATCHDOG_USEC": "1000000"}, log=RecordingLog())
    assert not n.active
    assert not n.ready() and not n.status("x") and not n.stopping() and not n.watchdog()
    assert n.watchdog_interval() is None
    asyncio.run(asyncio.wait_for(n.watchdog_loop(), 5))  # returns at once


def test_notifier_sends_to_a_path_socket(tmp_path: Path) -> None:
    path = str(tmp_path / "notify.sock")
    with bound(path) as manager:
        n = Notifier.from_environment({"NOTIFY_SOCKET": path})
        assert n.active and n.ready("starting\nup")
        assert manager.recv(4096) == b"READY=1\nSTATUS=starting up"
        assert n.stopping()
        assert manager.recv(4096) == b"STOPPING=1"
        n.close()


def test_notifier_sends_to_an_abstract_socket() -> None:
    name = f"edge-agent-test-{uuid.uuid4().hex}"
    with bound(b"\0" + name.encode()) as manager:
        n = Notifier.from_environment({"NOTIFY_SOCKET": "@" + name})
        assert n.status("2/3 machines up")
        assert manager.recv(4096) == b"STATUS=2/3 machines up"
        assert n.watchdog()
        assert manager.recv(4096) == b"WATCHDOG=1"
        n.close()


def test_notifier_with_a_missing_socket_logs_once_and_never_raises(tmp_path: Path) -> None:
    log = RecordingLog()
    n = Notifier(str(tmp_path / "missing.sock"), log=log)
    assert n.active
    assert not n.ready() and not n.watchdog() and not n.status("x")
    assert [event for event, _ in log.warnings] == ["cannot notify systemd"]
    missing_abstract = Notifier(f"@edge-agent-test-{uuid.uuid4().hex}", log=log)
    assert not missing_abstract.watchdog()
    assert len(log.warnings) == 2


def test_notifier_never_blocks_when_the_manager_does_not_read(tmp_path: Path) -> None:
    log = RecordingLog()
    path = str(tmp_path / "notify.sock")
    with bound(path):
        n = Notifier(path, log=log)
        # A blocking socket would hang once the receiver's queue is full.
        results = [n.status("x" * 1000) for _ in range(2000)]
        assert results[0] and not all(results)
        assert len(log.warnings) == 1


def test_unsupported_notify_socket_is_inactive() -> None:
    log = RecordingLog()
    n = Notifier("vsock:2:1234", log=log)
    assert not n.active and not n.ready()
    assert log.warnings and log.warnings[0][0] == "unsupported NOTIFY_SOCKET, not notifying systemd"


@pytest.mark.parametrize("usec,pid,expected", [
    ("1000000", None, 1.0), ("30000000", "self", 30.0), ("1000000", "other", None),
    ("0", None, None), ("", None, None), ("soon", None, None), ("1000000", "x", None)])
def test_watchdog_interval(usec: str, pid: str | None, expected: float | None) -> None:
    env = {"NOTIFY_SOCKET": "@x", "WATCHDOG_USEC": usec}
    if pid is not None:
        env["WATCHDOG_PID"] = {"self": str(os.getpid()), "other": str(os.getpid() + 1)}.get(pid, pid)
    assert Notifier.from_environment(env).watchdog_interval() == expected


def drain(sock: socket.socket) -> list[bytes]:
    """Every datagram waiting now, without waiting for more."""
    out = []
    timeout = sock.gettimeout()
    sock.setblocking(False)
    try:
        while True:
            try:
                out.append(sock.recv(4096))
            except BlockingIOError:
                return out
    finally:
        sock.settimeout(timeout)


async def test_watchdog_pings_come_from_the_event_loop(tmp_path: Path) -> None:
    path = str(tmp_path / "notify.sock")
    with bound(path) as manager:
        n = Notifier.from_environment({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "100000"})
        task = asyncio.create_task(n.watchdog_loop())
        pings: list[bytes] = []
        deadline = time.monotonic() + 30
        while len(pings) < 3 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            pings += drain(manager)
        assert len(pings) >= 3 and set(pings) == {b"WATCHDOG=1"}
        # A stalled loop sends nothing: 0.5 s is ten ping intervals.
        drain(manager)
        time.sleep(0.5)  # noqa: ASYNC251 - the point: a blocking call stalls the loop
        assert drain(manager) == []
        task.cancel()
        n.close()


# ---- ServiceNotify ----------------------------------------------------------------------

class FakeHealth:
    def __init__(self) -> None:
        self.up = 0

    def facts(self) -> dict[str, Any]:
        return {"machines_up": self.up, "machines": 2, "uplink_connected": True, "healthy": True}

    def summary(self) -> str:
        return f"{self.up}/2 machines up, backlog 0 batches (0 bytes), uplink connected"


class FakeAgent:
    def __init__(self) -> None:
        self.health = FakeHealth()


async def test_service_notify_ready_status_on_change_and_stopping(tmp_path: Path) -> None:
    path = str(tmp_path / "notify.sock")
    with bound(path) as manager:
        agent = FakeAgent()
        notifier = Notifier.from_environment({"NOTIFY_SOCKET": path})  # no watchdog
        service = ServiceNotify.started(agent, notifier)
        assert manager.recv(4096) == (
            b"READY=1\nSTATUS=0/2 machines up, backlog 0 batches (0 bytes), uplink connected")
        agent.health.up = 1  # reported within a CHECK_INTERVAL, not after STATUS_INTERVAL
        got = await asyncio.wait_for(asyncio.get_running_loop().run_in_executor(
            None, manager.recv, 4096), 10)
        assert got == b"STATUS=1/2 machines up, backlog 0 batches (0 bytes), uplink connected"
        service.stopping()
        assert manager.recv(4096) == (b"STOPPING=1\nSTATUS=stopping: 1/2 machines up, backlog 0 "
                                      b"batches (0 bytes), uplink connected")
        notifier.close()


async def test_service_notify_outside_systemd_does_nothing() -> None:
    service = ServiceNotify.started(FakeAgent(), Notifier(None))
    assert service._task is None
    service.stopping()
