"""SIGHUP reloads the config folder: an invalid one changes nothing (every error logged);
unchanged machines keep polling without a restart, changed ones restart, removed ones stop,
new ones start."""

from __future__ import annotations

import signal
import time
from pathlib import Path

from tests.support.harness import (AgentConfig, AgentProcess, Broker, Simulator, Subscriber,
                           assert_complete_and_ordered, free_port, press_machine, wait_for)


DROP_STATE = "factory/testsite/stamping/line-1/drop/state"


def events(agent: AgentProcess, name: str) -> list[dict[str, object]]:
    return [line for line in agent.logs() if line.get("event") == name]


def retained(broker: Broker, topic: str) -> bool:
    """Whether the broker holds a retained message on `topic` (a new clean subscriber gets
    it before the SUBACK's round trip ends)."""
    sub = Subscriber(broker.port, topic=topic, client_id=f"retained-{time.monotonic_ns()}")
    try:
        time.sleep(0.3)
        return any(m.retain and m.payload for m in sub.snapshot())
    finally:
        sub.close()


def test_sighup_applies_machine_changes_and_refuses_an_invalid_config(
        tmp_path: Path, broker: Broker) -> None:
    sims = [Simulator(free_port()) for _ in range(3)]
    try:
        machines = {"keep": press_machine("keep", sims[0].port),
                    "change": press_machine("change", sims[1].port),
                    "drop": press_machine("drop", sims[2].port)}
        config = AgentConfig(tmp_path, broker.port, machines).write()
        sub = Subscriber(broker.port)
        agent = AgentProcess(config, tmp_path / "state", tmp_path / "agent.log")
        try:
            wait_for(lambda: all(sub.telemetry(m) for m in machines), 20, "all three publishing")
            wait_for(lambda: retained(broker, DROP_STATE), 20, "drop's retained state")

            # 1. An invalid config: nothing changes, every error is in the log.
            (config / "machines.d" / "change.yaml").write_text(
                machines["change"].replace("line: line-1", "line: line-1\nfamily: lathe"))
            (config / "machines.d" / "new.yaml").write_text("id: new\n")
            agent.proc.send_signal(signal.SIGHUP)
            refused = wait_for(lambda: events(agent, "reload refused: keeping the running config"),
                               20, "the refused reload")
            assert refused[0]["errors"] >= 2
            errors = [str(e["error"]) for e in events(agent, "reload refused: config error")]
            assert any(e.startswith("machines.d/change.yaml:9: family:") for e in errors), errors
            assert any(e.startswith("machines.d/new.yaml") for e in errors), errors
            counts = {m: len(sub.telemetry(m)) for m in machines}
            wait_for(lambda: all(len(sub.telemetry(m)) > counts[m] + 3 for m in machines), 20,
                     "every machine still polling after the refused reload")

            # 2. A valid one: keep is unchanged, change changes, drop goes, new comes.
            (config / "machines.d" / "change.yaml").write_text(
                machines["change"].replace("slow: 1s", "slow: 2s"))
            (config / "machines.d" / "drop.yaml").unlink()
            (config / "machines.d" / "new.yaml").write_text(press_machine("new", sims[2].port))
            connects_before = len(events(agent, "connected to device"))
            agent.proc.send_signal(signal.SIGHUP)
            [reloaded] = wait_for(lambda: events(agent, "config reloaded"), 20, "the reload")
            assert reloaded["unchanged"] == 1
            assert reloaded["restarted"] == ["change"]
            assert reloaded["started"] == ["change", "new"]
            assert reloaded["stopped"] == ["drop"]
            wait_for(lambda: sub.telemetry("new"), 20, "the new machine publishing")
            dropped_at = len(sub.telemetry("drop"))
            keep_at = len(sub.telemetry("keep"))
            wait_for(lambda: len(sub.telemetry("keep")) > keep_at + 10, 20, "keep polling on")
            assert len(sub.telemetry("drop")) <= dropped_at + 1  # at most one in flight
            # keep was never restarted: no new connection of it, and its seq has no gap.
            connects = events(agent, "connected to device")[connects_before:]
            assert {c.get("machine") for c in connects} == {"change", "new"}
            # A twin that subscribes now finds no retained state of the removed machine.
            [cleared] = events(agent, "machine removed: its retained state is cleared")
            assert (cleared["machine"], cleared["topic"]) == ("drop", DROP_STATE)
            wait_for(lambda: not retained(broker, DROP_STATE), 20, "drop's state cleared")
            wait_for(lambda: retained(broker, DROP_STATE.replace("/drop/", "/keep/")), 20,
                     "keep's state still there")
        finally:
            assert agent.stop() == 0
        seqs = sorted(b["seq"] for b in sub.telemetry("keep"))
        assert_complete_and_ordered(seqs, seqs[-1])
        sub.close()
    finally:
        for sim in sims:
            sim.stop()
