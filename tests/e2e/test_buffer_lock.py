"""One agent per buffer file (agent/buffer/lock.py), with real agent processes on one state
folder: two agents would number batches from the same per-machine seq, and consumers, which
de-duplicate on (machine, seq), would silently drop one agent's batches."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.support.harness import (
    REPO,
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


def refused(config: Path, state: Path, out: Path) -> tuple[int, str]:
    """Start another `edge-agent run` on the same config and state folder; its exit code and
    stderr once it exits (a test failure if it keeps running)."""
    with open(out, "wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "agent", "run", "-c", str(config), "--state-dir", str(state)],
            cwd=REPO, stdout=subprocess.DEVNULL, stderr=err)
    try:
        wait_for(lambda: proc.poll() is not None, 30, "the second agent to exit")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, out.read_text()


def assert_names_the_holder(rc: int, stderr: str, buffer: Path, holder_pid: int) -> None:
    assert rc == 2, stderr
    assert "Traceback" not in stderr
    [line] = stderr.strip().splitlines()
    assert str(buffer) in line and f"pid {holder_pid}" in line, line


def started(agent: AgentProcess) -> bool:
    return any(line.get("event") == "agent started" for line in agent.logs())


def one_payload_per_seq(sub: Subscriber, machine: str) -> None:
    """Redeliveries are fine (consumers drop them); two batches under one seq are not."""
    payloads: dict[int, set[str]] = {}
    for doc in sub.telemetry(machine):
        payloads.setdefault(doc["seq"], set()).add(json.dumps(doc, sort_keys=True))
    reused = sorted(seq for seq, docs in payloads.items() if len(docs) > 1)
    assert not reused, f"seqs used for two different batches: {reused[:20]}"


def test_a_second_agent_on_the_same_buffer_exits_2_naming_the_file_and_the_holder(
        tmp_path: Path, broker: Broker) -> None:
    sim = Simulator(free_port())
    config = AgentConfig(tmp_path, broker.port, {"press-a": press_machine("press-a", sim.port)}
                         ).write()
    state = tmp_path / "state"
    sub = Subscriber(broker.port)
    first = AgentProcess(config, state, tmp_path / "first.log")
    try:
        wait_for(lambda: len(sub.seqs("press-a")) >= 5, 30, "the first agent's batches")
        rc, stderr = refused(config, state, tmp_path / "second.err")
        assert_names_the_holder(rc, stderr, state / "buffer.db", first.proc.pid)
        # The first agent was not disturbed: it keeps collecting and delivering.
        assert first.proc.poll() is None
        seen = max(sub.seqs("press-a"))
        wait_for(lambda: max(sub.seqs("press-a")) >= seen + 5, 30, "batches after the refusal")
        assert first.stop() == 0
        last = buffer_stats(config, state)["machines"]["press-a"]["seq"]
        wait_for(lambda: last in sub.seqs("press-a"), 10, "the last batch")
        assert_complete_and_ordered(sub.seqs("press-a"), last)
        one_payload_per_seq(sub, "press-a")
    finally:
        if first.proc.poll() is None:
            first.stop()
        sub.close()
        sim.stop()


def test_the_lock_is_released_when_its_holder_stops_or_is_killed_9(
        tmp_path: Path, broker: Broker) -> None:
    sim = Simulator(free_port())
    config = AgentConfig(tmp_path, broker.port, {"press-a": press_machine("press-a", sim.port)}
                         ).write()
    state = tmp_path / "state"
    sub = Subscriber(broker.port)
    agents: list[AgentProcess] = []

    def start(name: str) -> AgentProcess:
        agent = AgentProcess(config, state, tmp_path / f"{name}.log")
        agents.append(agent)
        wait_for(lambda: started(agent), 30, f"the {name} agent to start")
        seen = max(sub.seqs("press-a"), default=0)
        wait_for(lambda: max(sub.seqs("press-a"), default=0) >= seen + 3, 30,
                 f"batches from the {name} agent")
        return agent

    try:
        first = start("first")
        rc, stderr = refused(config, state, tmp_path / "refused-1.err")
        assert_names_the_holder(rc, stderr, state / "buffer.db", first.proc.pid)
        assert first.stop() == 0
        # A stopped holder released the lock: the next agent starts and holds it in turn.
        second = start("second")
        rc, stderr = refused(config, state, tmp_path / "refused-2.err")
        assert_names_the_holder(rc, stderr, state / "buffer.db", second.proc.pid)
        # kill -9 runs no cleanup at all; the kernel releases the flock with the process.
        second.kill9()
        third = start("third")
        assert third.stop() == 0
        last = buffer_stats(config, state)["machines"]["press-a"]["seq"]
        wait_for(lambda: last in sub.seqs("press-a"), 10, "the last batch")
        assert_complete_and_ordered(sub.seqs("press-a"), last)
        one_payload_per_seq(sub, "press-a")
    finally:
        for agent in agents:
            if agent.proc.poll() is None:
                agent.stop()
        sub.close()
        sim.stop()


def test_buffer_stats_reads_while_an_agent_runs_without_taking_the_lock(tmp_path: Path) -> None:
    # No broker and no device: the agent keeps running and buffers bad readings.
    config = AgentConfig(tmp_path, free_port(), {"p": press_machine("p", free_port())}).write()
    state = tmp_path / "state"
    agent = AgentProcess(config, state, tmp_path / "agent.log")
    try:
        wait_for(lambda: started(agent), 30, "the agent to start")

        def seq() -> int:
            return int(buffer_stats(config, state)["machines"].get("p", {}).get("seq", 0))
        first = wait_for(seq, 30, "a committed batch")
        wait_for(lambda: seq() > first, 30, "stats to follow the running agent")
        # Reading neither took the lock nor broke the agent's hold on it.
        rc, stderr = refused(config, state, tmp_path / "second.err")
        assert_names_the_holder(rc, stderr, state / "buffer.db", agent.proc.pid)
        assert agent.proc.poll() is None
        assert agent.stop() == 0
    finally:
        if agent.proc.poll() is None:
            agent.stop()
