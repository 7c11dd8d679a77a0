"""Power-loss semantics: what a commit promises. A batch the buffer has committed (visible
to another process reading the SQLite file, which with synchronous=FULL means fsynced) is
delivered after a kill -9, whatever the agent was doing at that instant; only samples not
yet committed (at most `buffer.commit_interval` of them) can be lost by a power cut."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

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


def test_a_committed_batch_survives_kill_9_right_after_its_commit(
        tmp_path: Path, broker: Broker) -> None:
    sim = Simulator(free_port())
    broker.stop()  # nothing can be delivered (and so deleted) before the kill
    config = AgentConfig(tmp_path, broker.port, {"press-a": press_machine("press-a", sim.port)},
                         commit_interval="50ms").write()
    state = tmp_path / "state"
    agent = AgentProcess(config, state, tmp_path / "agent.log")
    try:
        # Read the file from another process until it holds committed batches, then kill
        # the agent at once: the last of them was committed a moment ago.
        def five_committed() -> dict[str, Any] | None:
            try:
                stats = buffer_stats(config, state)
            except subprocess.CalledProcessError:
                return None  # no buffer file yet
            return stats if stats["machines"].get("press-a", {}).get("seq", 0) >= 5 else None
        committed = wait_for(five_committed, 30, "committed batches")
        agent.kill9()
        last_seen = committed["machines"]["press-a"]["seq"]
        broker.start()
        sub = Subscriber(broker.port)
        agent = AgentProcess(config, state, tmp_path / "agent.log")
        wait_for(lambda: set(range(1, last_seen + 1)) <= set(sub.seqs("press-a")), 30,
                 "every batch committed before the kill")
        assert agent.stop() == 0
        stats = buffer_stats(config, state)
        assert_complete_and_ordered(sub.seqs("press-a"), stats["machines"]["press-a"]["seq"])
        sub.close()
    finally:
        if agent.proc.poll() is None:
            agent.stop()
        sim.stop()
