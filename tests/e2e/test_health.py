"""Observability of a running agent: the metrics it exposes, /healthz, the health summary in
the retained status topic, and the rate limit on repeated log lines."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import structlog

from agent.runtime.health import Health
from agent.runtime.logs import RateLimit
from agent.runtime.metrics import Metrics
from tests.support.harness import (AgentConfig, AgentProcess, Broker, Simulator, Subscriber, free_port,
                           press_machine, wait_for)


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_running_agent_exposes_metrics_healthz_and_status(tmp_path: Path, broker: Broker) -> None:
    sim = Simulator(free_port())
    config = AgentConfig(tmp_path, broker.port, {
        "p1": press_machine("p1", sim.port), "p2": press_machine("p2", free_port())}).write()
    port = free_port()
    agent_yaml = config / "agent.yaml"
    agent_yaml.write_text(agent_yaml.read_text().replace(
        "metrics: {listen: null}", f"metrics: {{listen: '127.0.0.1:{port}'}}"))
    sub = Subscriber(broker.port)
    agent = AgentProcess(config, tmp_path / "state", tmp_path / "agent.log")
    try:
        wait_for(lambda: sub.telemetry("p1"), 20, "telemetry")
        status, text = wait_for(lambda: (lambda r: r if "modbus-tcp" in r[1] else None)(
            get(f"http://127.0.0.1:{port}/metrics")), 20, "request round trips in the metrics")
        assert status == 200
        for series in ('edge_agent_device_request_seconds_bucket{le="0.005",machine="p1",'
                       'protocol="modbus-tcp"}', "process_resident_memory_bytes",
                       "process_cpu_seconds_total", "edge_agent_event_loop_lag_seconds_count",
                       "edge_agent_buffer_oldest_age_seconds", "edge_agent_buffer_batches",
                       "edge_agent_uplink_connected", 'edge_agent_polls_total{group="fast",machine="p1"}'):
            assert series in text, series
        status, body = get(f"http://127.0.0.1:{port}/healthz")
        facts = json.loads(body)
        assert status == 200 and facts["healthy"] and facts["loop_live"] and facts["buffer_writable"]
        assert facts["machines"] == 2 and facts["machines_down"] == ["p2"]  # no device on p2
        retained = [m.data() for m in sub.snapshot() if m.topic.endswith("/_agent/gw-test/status")]
        assert retained and retained[-1]["status"] == "online"
        assert retained[-1]["health"]["machines"] == 2
    finally:
        assert agent.stop() == 0
        sim.stop()
        sub.close()


class _Buffer:
    alive, closed, backlog = True, False, (0, 0)


class _Uplink:
    connected = True


def test_health_facts_say_when_the_loop_or_the_buffer_is_gone() -> None:
    metrics = Metrics()
    health = Health(metrics, _Buffer(), _Uplink(), lambda: [("a", True), ("b", False)])
    facts = health.facts()
    assert facts["healthy"] and facts["machines_up"] == 1 and facts["machines_down"] == ["b"]
    assert health.summary() == "1/2 machines up, backlog 0 batches (0 bytes), uplink connected"
    health.last_beat -= 60  # the loop stopped beating a minute ago
    assert not health.facts()["healthy"] and not health.facts()["loop_live"]
    assert health.summary().endswith(", UNHEALTHY")
    health.last_beat += 60
    buffer = _Buffer()
    buffer.alive = False
    assert not Health(metrics, buffer, _Uplink(), list).facts()["healthy"]


def test_healthz_answers_503_with_the_facts_when_unhealthy() -> None:
    metrics = Metrics()
    port = free_port()
    facts: dict[str, Any] = {"healthy": True, "loop_live": True}
    metrics.serve(f"127.0.0.1:{port}", lambda: facts)
    assert get(f"http://127.0.0.1:{port}/healthz")[0] == 200
    facts["healthy"] = facts["loop_live"] = False
    status, body = get(f"http://127.0.0.1:{port}/healthz")
    assert status == 503 and json.loads(body) == facts
    assert get(f"http://127.0.0.1:{port}/metrics")[0] == 200


def test_repeated_identical_errors_are_one_line_per_burst() -> None:
    now = [0.0]
    limit = RateLimit(quiet=10, repeat=60, clock=lambda: now[0])

    def log(event: str, **fields: Any) -> dict[str, Any] | None:
        try:
            return dict(limit(None, "warning", {"event": event, "level": "warning", **fields}))
        except structlog.DropEvent:
            return None

    assert log("cannot connect", machine="m1", error="refused") is not None
    for _ in range(5):
        now[0] += 1
        assert log("cannot connect", machine="m1", error="refused") is None
    # Another machine, or another error, is another line.
    assert log("cannot connect", machine="m2", error="refused") is not None
    assert log("cannot connect", machine="m1", error="timeout") is not None
    # After 10 s of quiet: logged again, with how many were dropped.
    now[0] += 11
    assert log("cannot connect", machine="m1", error="refused") == {
        "event": "cannot connect", "level": "warning", "machine": "m1", "error": "refused",
        "repeated": 5}
    # A burst that never pauses still gets a line a minute.
    lines = []
    for _ in range(61):
        now[0] += 1
        lines.append(log("cannot connect", machine="m1", error="refused"))
    logged = [line for line in lines if line is not None]
    assert len(logged) == 1 and logged[0]["repeated"] == 59
    assert limit(None, "info", {"event": "x", "level": "info"}) == {"event": "x", "level": "info"}
