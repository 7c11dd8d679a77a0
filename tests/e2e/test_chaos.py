"""Chaos: three machines at 100 ms polls while the agent is killed -9 at random moments,
the broker restarts, the broker link is black-holed and one device stalls. At the end a
subscriber has every seq of every machine (telemetry and events) from 1 to the last one
committed, first arrivals in order, and duplicates only of batches in flight at a fault.

`pytest tests/e2e/test_chaos.py --chaos-minutes 30` runs a longer one.
"""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

import pytest

from tests.support.fault_proxy import FaultProxy
from tests.support.harness import (
    AgentConfig,
    AgentProcess,
    Broker,
    Simulator,
    Subscriber,
    assert_complete_and_ordered,
    buffer_stats,
    free_port,
    press_machine,
    wait_for,
)

pytestmark = pytest.mark.slow

MACHINES = ("press-a", "press-b", "press-c")  # press-c's device is the one that stalls
MAX_INFLIGHT = 16


def test_no_seq_is_lost_through_kills_broker_restarts_black_holes_and_stalls(
        tmp_path: Path, request: pytest.FixtureRequest) -> None:
    minutes = request.config.getoption("--chaos-minutes")
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    broker = Broker(tmp_path / "mosquitto")
    broker.start()
    link = FaultProxy(broker.port)
    sims = [Simulator(free_port()) for _ in MACHINES]
    device = FaultProxy(sims[2].port)
    ports = [sims[0].port, sims[1].port, device.port]
    machines = {m: press_machine(m, port, fast="100ms", slow="1s", timeout="300ms")
                for m, port in zip(MACHINES, ports)}
    config = AgentConfig(tmp_path, link.port, machines, max_inflight=MAX_INFLIGHT,
                         shutdown_grace="10s").write()
    state = tmp_path / "state"
    sub = Subscriber(broker.port, topic="factory/#", client_id="chaos-subscriber")
    counts = {"kills": 0, "broker_restarts": 0, "black_holes": 0, "stalls": 0}
    agent = AgentProcess(config, state, tmp_path / "agent.log")
    try:
        deadline = time.monotonic() + minutes * 60
        round_ = 0
        while time.monotonic() < deadline:
            round_ += 1
            time.sleep(rng.uniform(2.0, 5.0))  # the kill lands anywhere in a poll, commit or publish
            agent.kill9()
            counts["kills"] += 1
            if round_ % 6 == 0:
                broker.stop()
                time.sleep(rng.uniform(0.5, 2.0))
                broker.start()
                counts["broker_restarts"] += 1
            agent = AgentProcess(config, state, tmp_path / "agent.log")
            if round_ % 5 == 2:
                link.black_hole()  # connections stay up, nothing passes: only timeouts tell
                time.sleep(rng.uniform(2.0, 4.0))
                link.pass_through()
                counts["black_holes"] += 1
            if round_ % 4 == 1:
                device.black_hole()
                time.sleep(rng.uniform(1.0, 3.0))
                device.pass_through()
                counts["stalls"] += 1
        time.sleep(3)  # everything healthy again for a moment
        assert agent.stop() == 0
        stats = buffer_stats(config, state)
        assert stats["batches"] == 0, "the graceful stop drains the backlog"
        last = {stream: m["seq"] for stream, m in stats["machines"].items()}
        assert all(m["dropped_batches"] == 0 for m in stats["machines"].values())

        def delivered() -> dict[str, list[int]]:
            seqs: dict[str, list[int]] = {stream: [] for stream in last}
            for message in sub.snapshot():
                if message.topic.endswith(("/telemetry", "/event")):
                    data: dict[str, Any] = message.data()
                    stream = data["machine"] + ("/event" if message.topic.endswith("/event") else "")
                    seqs.setdefault(stream, []).append(data["seq"])
            return seqs
        wait_for(lambda: all(set(range(1, n + 1)) <= set(delivered()[s]) for s, n in last.items()),
                 60, "every committed seq at the subscriber")
    finally:
        if agent.proc.poll() is None:
            agent.stop()
        sub.close()
        link.close()
        device.close()
        for sim in sims:
            sim.stop()
        broker.stop()

    seqs = delivered()
    duplicates = sum(assert_complete_and_ordered(seqs[s], n) for s, n in last.items())
    readings = sum(len(message.data()["readings"]) for message in sub.snapshot()
                   if message.topic.endswith("/telemetry"))
    faults = counts["kills"] + counts["broker_restarts"] + counts["black_holes"]
    print(f"\nchaos (seed {seed}, {minutes:g} min): {counts['kills']} kills, "
          f"{counts['broker_restarts']} broker restarts, {counts['black_holes']} black-holed "
          f"links, {counts['stalls']} device stalls; {sum(last.values())} batches, "
          f"{readings} readings delivered, {duplicates} duplicates, lost = 0")
    assert counts["kills"] >= 20 or minutes < 3
    assert set(MACHINES) <= set(last)
    # Only what was in flight (a window per stream) can come twice after each fault.
    assert duplicates <= faults * MAX_INFLIGHT * len(last)
