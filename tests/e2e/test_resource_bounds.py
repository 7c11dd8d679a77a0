"""Resource bounds under pressure: a broker link throttled to a trickle (so the backlog
grows) against a small buffer quota (`buffer.max_bytes`, standing in for a full disk).
The agent's memory stays flat, the buffer stays under its quota, and every batch is either
stored, delivered or counted as dropped: exactly."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.support.fault_proxy import FaultProxy
from tests.support.harness import (
    AgentConfig,
    AgentProcess,
    Broker,
    Simulator,
    Subscriber,
    buffer_stats,
    free_port,
    press_machine,
    wait_for,
)

pytestmark = pytest.mark.slow
QUOTA = 256 * 1024


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_memory_flat_and_drops_counted_exactly_with_a_slow_broker_and_a_full_buffer(
        tmp_path: Path, broker: Broker) -> None:
    sims = [Simulator(free_port()) for _ in range(3)]
    link = FaultProxy(broker.port)
    machines = {f"press-{i}": press_machine(f"press-{i}", sim.port, fast="50ms", slow="1s")
                for i, sim in enumerate(sims)}
    config = AgentConfig(tmp_path, link.port, machines, max_bytes=f"{QUOTA}B").write()
    state = tmp_path / "state"
    sub = Subscriber(broker.port)
    agent = AgentProcess(config, state, tmp_path / "agent.log")
    try:
        wait_for(lambda: len(sub.telemetry()) >= 30, 30, "telemetry flowing")
        time.sleep(5)  # warmed up: imports done, caches and pools at their size
        steady = max(rss_kib(agent.proc.pid) for _ in range(5) if time.sleep(0.2) is None)
        link.throttle(2_000)  # 2 kB/s: far less than the agent produces
        peak = steady
        for _ in range(60):  # 30 s: the backlog outgrows the quota and drops begin
            time.sleep(0.5)
            peak = max(peak, rss_kib(agent.proc.pid))
            assert agent.proc.poll() is None
        link.pass_through()
        assert agent.stop() == 0
    finally:
        if agent.proc.poll() is None:
            agent.stop()
        link.close()
        sub.close()
        for sim in sims:
            sim.stop()
    stats = buffer_stats(config, state)
    dropped = sum(m["dropped_batches"] for m in stats["machines"].values())
    print(f"\nRSS steady {steady / 1024:.1f} MiB, peak {peak / 1024:.1f} MiB under a throttled "
          f"broker; buffer {stats['bytes']} B of {QUOTA} B; {dropped} batches dropped")
    assert peak <= steady * 1.10, f"RSS grew from {steady} KiB to {peak} KiB"
    assert dropped > 0, "the quota was reached"
    assert stats["bytes"] <= QUOTA
    # Accounting, per stream: the graceful stop drained what was left, so every seq the
    # subscriber lacks was dropped by the quota and counted. (The count can be higher than
    # what is missing: the oldest batches are the ones on their way, and one dropped
    # before its PUBACK may still arrive.)
    assert stats["batches"] == 0
    delivered: dict[str, set[int]] = {}
    for message in sub.snapshot():
        if message.topic.endswith(("/telemetry", "/event")):
            data = message.data()
            stream = data["machine"] + ("/event" if message.topic.endswith("/event") else "")
            delivered.setdefault(stream, set()).add(data["seq"])
    for stream, m in stats["machines"].items():
        missing = set(range(1, m["seq"] + 1)) - delivered.get(stream, set())
        assert len(missing) <= m["dropped_batches"], stream
