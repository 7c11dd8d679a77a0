"""`edge-agent status -c DIR`: the running agent's machines, readings, backlog and uplink,
from its metrics endpoint; exit 1 with a clear message when no agent answers."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest

from agent.cli.live_view import (AgentMetrics, MachineMetrics, MachineSignals, build_view,
                             metrics_url, parse_metrics, plain_lines, scrape)
from agent.cli.processes import free_port
from tests.support.harness import (REPO, AgentConfig, AgentProcess, Broker, Simulator, Subscriber,
                           press_machine, wait_for)


def _status(config: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "agent", "status", "-c", str(config), *extra],
                          cwd=REPO, capture_output=True, text=True, timeout=60)


class Running:
    def __init__(self, config: Path, state: Path, agent: AgentProcess, url: str) -> None:
        self.config, self.state, self.agent, self.url = config, state, agent, url


@pytest.fixture
def running(tmp_path: Path, broker: Broker) -> Iterator[Running]:
    """An agent polling a live press (press-01) and a dead address (press-02), with its
    metrics on a free loopback port."""
    sim = Simulator(free_port())
    metrics_port = free_port()
    cfg = AgentConfig(tmp_path, broker.port, machines={
        "press-01": press_machine("press-01", sim.port),
        "press-02": press_machine("press-02", free_port(), timeout="200ms"),
    })
    config = cfg.write()
    agent_yaml = config / "agent.yaml"
    text = agent_yaml.read_text()
    assert "metrics: {listen: null}" in text
    agent_yaml.write_text(text.replace("metrics: {listen: null}",
                                       f"metrics: {{listen: '127.0.0.1:{metrics_port}'}}"))
    agent = AgentProcess(config, tmp_path / "state", tmp_path / "agent.log")
    url = metrics_url(f"127.0.0.1:{metrics_port}")

    def collecting() -> bool:
        try:
            m = scrape(url, timeout=0.5).machines.get("press-01")
        except Exception:
            return False
        return m is not None and m.readings > 0 and bool(m.connected)

    try:
        wait_for(collecting, 30, "the agent to serve metrics with press-01 readings")
        yield Running(config, tmp_path / "state", agent, url)
    finally:
        agent.stop()
        sim.stop()


def test_status_prints_machines_readings_backlog_and_uplink(running: Running) -> None:
    out = _status(running.config, "--state-dir", str(running.state))
    assert out.returncode == 0, out.stdout + out.stderr
    text = out.stdout
    assert f"agent      gw-test at {running.url}" in text
    assert re.search(r"^uplink     connected, in-flight \d+, published \d+, acked \d+$", text, re.M), text
    assert re.search(r"^backlog    \d+ batches, [\d.]+ (B|KiB|MiB)", text, re.M), text
    assert re.search(r"^machines   1 up, 1 down, \d+ readings/s$", text, re.M), text
    # press-01: up, readings/s over the 1 s between the two scrapes, no bad readings, and
    # when it last polled (the agent's last-poll gauge).
    row = re.search(r"^  press-01 +up +([\d.]+) +(\d+) +0 +[\d.]+ s ago$", text, re.M)
    assert row, text
    assert float(row.group(1)) > 0 and int(row.group(2)) > 0
    # press-02: nothing listens there; its readings are all bad, with the reason, but for
    # machine.availability saying UNAVAILABLE (once, and at each heartbeat).
    row = re.search(r"^  press-02 +down +[\d.]+ +(\d+) +(\d+) \((\S+)\) ", text, re.M)
    assert row, text
    assert int(row.group(2)) > 0 and 1 <= int(row.group(1)) - int(row.group(2)) <= 2
    assert row.group(3) == "comm_failure"


def test_status_shows_the_backlog_and_its_age_while_the_broker_is_down(
        running: Running, broker: Broker) -> None:
    broker.stop()
    wait_for(lambda: (scrape(running.url).buffer_batches or 0) >= 5, 30, "a backlog")
    out = _status(running.config, "--state-dir", str(running.state), "--interval", "0")
    assert out.returncode == 0, out.stdout + out.stderr
    assert re.search(r"^uplink     disconnected, in-flight 0", out.stdout, re.M), out.stdout
    backlog = re.search(r"^backlog    (\d+) batches, [\d.]+ (KiB|MiB|B), oldest ([\d.]+) s$",
                        out.stdout, re.M)
    assert backlog, out.stdout
    assert int(backlog.group(1)) >= 5 and float(backlog.group(3)) > 0
    # One scrape: no rate; the last poll comes from the agent's gauge.
    assert re.search(r"^  press-01 +up +- +\d+ +0 +[\d.]+ s ago$", out.stdout, re.M), out.stdout
    broker.start()


def test_status_exits_1_when_the_agent_is_not_running(running: Running) -> None:
    assert running.agent.stop() == 0
    out = _status(running.config)
    assert out.returncode == 1, out.stdout + out.stderr
    assert out.stdout == ""
    assert f"edge-agent status: no agent answers at {running.url}" in out.stderr
    assert "is it running" in out.stderr


def test_status_exits_1_when_metrics_are_off(tmp_path: Path) -> None:
    config = AgentConfig(tmp_path, 1883, machines={"press-01": press_machine("press-01", 5020)}).write()
    out = _status(config)
    assert out.returncode == 1
    assert "metrics are off" in out.stderr and "metrics.listen: null" in out.stderr


def test_status_exits_2_on_a_bad_config_folder(tmp_path: Path) -> None:
    out = _status(tmp_path / "nowhere")
    assert out.returncode == 2, out.stdout + out.stderr


METRICS = """\
# HELP edge_agent_readings_total Readings collected
# TYPE edge_agent_readings_total counter
edge_agent_readings_total{machine="a"} 150.0
edge_agent_readings_total{machine="b"} 40.0
# TYPE edge_agent_bad_readings_total counter
edge_agent_bad_readings_total{machine="b",reason="timeout"} 4.0
edge_agent_bad_readings_total{machine="b",reason="comm_failure"} 30.0
# TYPE edge_agent_polls_total counter
edge_agent_polls_total{group="fast",machine="a"} 10.0
edge_agent_polls_total{group="slow",machine="a"} 1.0
edge_agent_polls_total{group="main",machine="b"} 5.0
# TYPE edge_agent_machine_connected gauge
edge_agent_machine_connected{machine="a"} 1.0
edge_agent_machine_connected{machine="b"} 0.0
# TYPE edge_agent_buffer_batches gauge
edge_agent_buffer_batches 12.0
# TYPE edge_agent_buffer_bytes gauge
edge_agent_buffer_bytes 40960.0
# TYPE edge_agent_uplink_connected gauge
edge_agent_uplink_connected 0.0
# TYPE edge_agent_uplink_inflight gauge
edge_agent_uplink_inflight 0.0
"""


def test_parse_and_render_without_an_agent() -> None:
    before = parse_metrics(METRICS.replace("150.0", "100.0").replace(' 10.0', ' 8.0'), 1000.0)
    after = parse_metrics(METRICS, 1002.0)
    assert after.machines["a"] == MachineMetrics(True, 150.0, 0.0, {}, 11.0, 0.0, None)
    assert after.machines["b"].bad == 34 and after.machines["b"].connected is False
    seen = {"a": MachineSignals()}
    seen["a"].add([{"signal": "machine.state", "value": "running", "quality": "good",
                    "ts": 1_001_500_000_000},
                   {"signal": "cycle.count", "value": 7, "quality": "good", "ts": 1_001_500_000_000}])
    view = build_view([("a", True), ("b", True), ("c", False), ("d", True)], after, before,
                      seen, oldest_age=3.25, now=1002.0)
    lines = plain_lines(view, with_signals=True)
    assert lines[0] == "uplink     disconnected, in-flight 0"
    assert lines[1] == "backlog    12 batches, 40.0 KiB, oldest 3.2 s"
    assert lines[2] == "machines   1 up, 2 down, 25 readings/s"
    assert lines[3].split() == ["MACHINE", "LINK", "STATE", "READINGS/S", "READINGS", "BAD",
                                "LAST", "POLL", "SIGNALS"]
    assert lines[4].split() == ["a", "up", "running", "25.0", "150", "0", "0.5", "s", "ago",
                                "cycle.count=7"]
    assert lines[5].split() == ["b", "down", "-", "0.0", "40", "34", "(comm_failure)", "none",
                                "in", "2.0", "s", "-"]
    assert lines[6].split() == ["c", "disabled", "-", "-", "-", "-", "-", "-"]
    assert lines[7].split() == ["d", "-", "-", "-", "-", "-", "-", "-"]


def test_metrics_url_asks_a_wildcard_listener_on_loopback() -> None:
    assert metrics_url("0.0.0.0:9108") == "http://127.0.0.1:9108/metrics"
    assert metrics_url("10.1.2.3:9000") == "http://10.1.2.3:9000/metrics"


def test_parse_rejects_what_is_not_an_agent() -> None:
    from agent.cli.live_view import MetricsUnavailable
    with pytest.raises(MetricsUnavailable):
        parse_metrics("# TYPE up gauge\nup 1.0\n")
    assert isinstance(parse_metrics(METRICS), AgentMetrics)


def test_the_retained_status_follows_the_first_poll_round_and_the_will_has_no_stale_time(
        tmp_path: Path, broker: Broker) -> None:
    """The online status published on connecting says no machine is up yet: the next one
    comes when a machine goes up (not 30 s later). The Will, made when the connection
    opened, carries no time: any would be older than the online status it replaces."""
    sim = Simulator(free_port())
    config = AgentConfig(tmp_path, broker.port,
                         machines={"press-01": press_machine("press-01", sim.port)}).write()
    topic = "factory/testsite/_agent/gw-test/status"
    sub = Subscriber(broker.port, topic=topic, client_id="status-watcher")
    agent = AgentProcess(config, tmp_path / "state", tmp_path / "agent.log")
    try:
        def statuses() -> list[dict[str, Any]]:
            return [json.loads(m.payload) for m in sub.snapshot() if m.payload]
        wait_for(lambda: any(s.get("health", {}).get("machines_up") == 1 for s in statuses()),
                 15, "a status saying press-01 is up, well before the 30 s refresh")
        agent.kill9()
        will = wait_for(lambda: [s for s in statuses() if s["status"] == "offline"], 30,
                        "the Will")[0]
        assert "ts" not in will and will["agent"] == "gw-test"
    finally:
        if agent.proc.poll() is None:
            agent.stop()
        sub.close()
        sim.stop()
