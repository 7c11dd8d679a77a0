"""End to end against real parts: press simulator -> agent -> mosquitto -> subscriber.

The delivery promise: every seq of every machine arrives, in order per machine, through
broker outages, kill -9 and restarts; duplicates only of batches that were in flight.
"""

from __future__ import annotations

import time
from typing import Any
from pathlib import Path

import pytest

from tests.support.harness import (AgentConfig, AgentProcess, Broker, Simulator, Subscriber,
                           assert_complete_and_ordered, buffer_stats, free_port, press_machine,
                           wait_for)


@pytest.fixture
def press() -> Simulator:
    sim = Simulator(free_port(), "--spm", "120")
    yield sim
    sim.stop()


def _start(tmp_path: Path, broker: Broker, machines: dict[str, str], **options: object
           ) -> tuple[AgentConfig, Path, Path]:
    cfg = AgentConfig(tmp_path, broker.port, machines, **options)  # type: ignore[arg-type]
    return cfg, cfg.write(), tmp_path / "state"


def _readings(batch: dict) -> dict[str, dict]:
    return {r["signal"]: r for r in batch["readings"]}


@pytest.mark.parametrize("encoding, protocol", [("json", "auto"), ("msgpack", "3.1.1")])
def test_readings_arrive_decoded_with_units(tmp_path: Path, broker: Broker, press: Simulator,
                                            encoding: str, protocol: str) -> None:
    sub = Subscriber(broker.port)
    _, config_dir, state = _start(tmp_path, broker, {"press-a": press_machine("press-a", press.port)},
                                  encoding=encoding, protocol=protocol)
    agent = AgentProcess(config_dir, state, tmp_path / "agent.log")
    try:
        wait_for(lambda: len(sub.telemetry("press-a")) >= 15, 30, "15 telemetry batches")
    finally:
        assert agent.stop() == 0
    batches = sub.telemetry("press-a")
    first = batches[0]
    assert first["agent"] == "gw-test" and first["machine"] == "press-a"
    assert first["seq"] == 1 and len(first["epoch"]) == 32
    assert len({b["epoch"] for b in batches}) == 1

    fast = [b for b in batches if "press.crank_angle" in _readings(b)]
    slow = [b for b in batches if "die.id" in _readings(b)]
    assert fast and slow
    # Report by exception: booleans, labels and text come when they change, so the
    # machine's picture is the latest reading of each signal over all batches.
    r: dict[str, Any] = {}
    for batch in batches:
        r.update(_readings(batch))
    assert all(x["quality"] == "good" for x in r.values()), r
    assert r["machine.state"]["value"] in ("running", "alarm", "stopped")
    assert r["machine.mode"]["value"] == "continuous"
    assert isinstance(r["cycle.count"]["value"], int)
    assert 0.0 <= r["press.crank_angle"]["value"] < 360.0 and r["press.crank_angle"]["unit"] == "deg"
    assert 0.0 <= r["press.slide.position"]["value"] <= 120.0
    for ch in (1, 2, 3, 4):  # CDAB word order, decoded right or it would be garbage
        peak = r[f"press.force.peak.ch{ch}"]
        assert 300.0 < peak["value"] < 500.0 and peak["unit"] == "kN"
    assert 1200.0 < r["press.force.total_peak"]["value"] < 2000.0
    assert r["press.force.reverse_peak"]["value"] < 0  # int16, signed
    assert 1400.0 < r["press.flywheel.speed"]["value"] < 1500.0  # BADC
    assert isinstance(r["part_count.job"]["value"], int) and r["part_count.job"]["value"] < 10_000  # DCBA
    assert r["motor.on"]["value"] is True and r["lubrication.ok"]["value"] is True
    assert r["motor.current"]["unit"] == "A" and 10 < r["motor.current"]["value"] < 80
    assert r["lubrication.pressure"]["value"] == pytest.approx(350, abs=30)  # bar -> kPa
    assert r["lubrication.pressure"]["unit"] == "kPa"
    assert isinstance(r["motor.running"]["value"], bool)
    s = r
    assert s["die.id"]["value"] == "DIE-4711-B"
    assert s["press.die_height"]["value"] == pytest.approx(350.0) and s["press.die_height"]["unit"] == "mm"
    assert s["machine.operating_time"]["value"] > 1_234_567
    assert s["motor.energy"]["unit"] == "kW.h"
    assert 30.0 < s["temperature.oil"]["value"] < 50.0 and s["temperature.oil"]["unit"] == "Cel"
    assert isinstance(s["lubrication.pump_on"]["value"], bool)
    now = time.time_ns()
    assert all(now - 120e9 < x["ts"] <= now for x in r.values())

    status = [m for m in sub.snapshot() if m.topic == "factory/testsite/_agent/gw-test/status"]
    assert status[0].data()["status"] == "online" and status[-1].data()["status"] == "offline"
    state_msgs = [m for m in sub.snapshot() if m.topic.endswith("press-a/state")]
    assert state_msgs and "press.crank_angle" in state_msgs[-1].data()["signals"]
    # A graceful stop drains the buffer: everything committed was delivered.
    stats = buffer_stats(config_dir, state)
    assert stats["batches"] == 0
    assert_complete_and_ordered(sub.seqs("press-a"), stats["machines"]["press-a"]["seq"])
    expected = "5" if protocol == "auto" else "3.1.1"
    assert any(line.get("event") == "connected to broker" and line.get("protocol") == expected
               for line in agent.logs())
    sub.close()


def test_broker_outage_loses_nothing(tmp_path: Path, broker: Broker, press: Simulator) -> None:
    sub = Subscriber(broker.port)
    _, config_dir, state = _start(tmp_path, broker, {"press-a": press_machine("press-a", press.port)})
    agent = AgentProcess(config_dir, state, tmp_path / "agent.log")
    wait_for(lambda: len(sub.telemetry()) >= 10, 30, "telemetry before the outage")
    broker.stop()
    time.sleep(10)
    broker.start()
    before = len(sub.telemetry())
    wait_for(lambda: len(sub.telemetry()) > before + 20, 60, "telemetry after the outage")
    assert agent.stop() == 0
    stats = buffer_stats(config_dir, state)
    assert stats["batches"] == 0, "graceful stop should have drained the backlog"
    last = stats["machines"]["press-a"]["seq"]
    assert last > 100  # about 10 s of 100 ms polls were buffered
    assert_complete_and_ordered(sub.seqs("press-a"), last)
    sub.close()


def test_kill_9_while_publishing_and_while_broker_down(tmp_path: Path, broker: Broker,
                                                       press: Simulator) -> None:
    sub = Subscriber(broker.port)
    _, config_dir, state = _start(tmp_path, broker, {"press-a": press_machine("press-a", press.port)},
                                  max_inflight=16)
    log = tmp_path / "agent.log"
    agent = AgentProcess(config_dir, state, log)
    kills = 0
    status_topic = "factory/testsite/_agent/gw-test/status"

    def statuses() -> list[str]:
        return [m.data()["status"] for m in sub.snapshot() if m.topic == status_topic]

    for _ in range(3):  # kill -9 while publishing
        wait_for(lambda k=kills: len(sub.telemetry()) >= 10 * (k + 1), 30, "telemetry flowing")
        agent.kill9()
        kills += 1
        # The broker publishes the Last Will: the agent is marked offline without its help.
        wait_for(lambda k=kills: statuses().count("offline") >= k, 30, "the Last Will")
        agent = AgentProcess(config_dir, state, log)
    # kill -9 while the broker is down: the backlog is on disk only.
    wait_for(lambda: len(sub.telemetry()) >= 40, 30, "telemetry before the outage")
    broker.stop()
    time.sleep(2)
    agent.kill9()
    kills += 1
    agent = AgentProcess(config_dir, state, log)
    time.sleep(2)
    broker.start()
    before = len(sub.telemetry())
    wait_for(lambda: len(sub.telemetry()) > before + 30, 60, "telemetry after restart")
    assert agent.stop() == 0
    stats = buffer_stats(config_dir, state)
    assert stats["batches"] == 0
    seqs = sub.seqs("press-a")
    duplicates = assert_complete_and_ordered(seqs, stats["machines"]["press-a"]["seq"])
    # Only batches in flight at a kill can arrive twice: at most the window per kill.
    assert duplicates <= kills * 16, duplicates
    epochs = {b["epoch"] for b in sub.telemetry("press-a")}
    assert len(epochs) == 1, "restarts must keep the buffer's epoch"
    sub.close()


@pytest.mark.parametrize("fault", ["delay", "stopped"])
def test_slow_or_dead_machine_does_not_delay_others(tmp_path: Path, broker: Broker, fault: str) -> None:
    sims = [Simulator(free_port()), Simulator(free_port())]
    bad_port = free_port()
    if fault == "delay":
        sims.append(Simulator(bad_port, "--delay-ms", "3000"))
    machines = {
        "press-a": press_machine("press-a", sims[0].port),
        "press-b": press_machine("press-b", sims[1].port),
        "press-slow": press_machine("press-slow", bad_port, timeout="2s"),
    }
    sub = Subscriber(broker.port)
    _, config_dir, state = _start(tmp_path, broker, machines)
    agent = AgentProcess(config_dir, state, tmp_path / "agent.log")
    try:
        wait_for(lambda: len(sub.telemetry("press-a")) >= 60, 60, "6 s of polls of press-a")
        wait_for(lambda: any(r["quality"] == "bad" for b in sub.telemetry("press-slow")
                             for r in b["readings"]), 30, "bad readings from the slow machine")
    finally:
        assert agent.stop() == 0
        for sim in sims:
            sim.stop()
    for machine in ("press-a", "press-b"):
        fast = [b for b in sub.telemetry(machine) if "press.crank_angle" in _readings(b)]
        stamps = [b["readings"][0]["ts"] for b in fast]
        gaps = [(b - a) / 1e9 for a, b in zip(stamps, stamps[1:])]
        # 100 ms polls; a 2 s timeout on the other machine would show as >= 2 s gaps here.
        assert max(gaps) < 1.0, f"{machine} stalled: largest gap {max(gaps):.2f}s"
        assert all(r["quality"] == "good" for b in fast for r in b["readings"])
    reasons = {r.get("reason") for b in sub.telemetry("press-slow") for r in b["readings"]}
    assert reasons & {"timeout", "comm_failure"}
    sub.close()


def test_full_buffer_drops_oldest_and_counts_exactly(tmp_path: Path, broker: Broker,
                                                     press: Simulator) -> None:
    broker.stop()  # the broker is down: everything piles up in the buffer
    _, config_dir, state = _start(tmp_path, broker, {"press-a": press_machine("press-a", press.port)},
                                  max_bytes="64KiB")
    agent = AgentProcess(config_dir, state, tmp_path / "agent.log")
    time.sleep(6)
    assert agent.proc.poll() is None, "agent must keep running with a full buffer"
    assert agent.stop() == 0
    stats = buffer_stats(config_dir, state)
    machine = stats["machines"]["press-a"]
    assert machine["dropped_batches"] > 0
    assert stats["bytes"] <= 64 * 1024
    # Exact accounting: every seq ever assigned (telemetry, and the machine's events in their
    # own series) is either still stored or counted dropped.
    assert stats["batches"] == sum(m["seq"] - m["dropped_batches"]
                                   for m in stats["machines"].values())
    assert any(line.get("event") == "buffer full: dropped oldest batches" for line in agent.logs())

    # Once the broker is back, what was kept is delivered; the gap is exactly the drops.
    broker.start()
    sub = Subscriber(broker.port)
    dropped_before, last_before = machine["dropped_batches"], machine["seq"]
    agent = AgentProcess(config_dir, state, tmp_path / "agent.log")
    wait_for(lambda: any(s > last_before + 5 for s in sub.seqs("press-a")), 30, "new batches")
    assert agent.stop() == 0
    stats = buffer_stats(config_dir, state)
    seqs = set(sub.seqs("press-a"))
    missing = set(range(1, stats["machines"]["press-a"]["seq"] + 1)) - seqs
    assert len(missing) == stats["machines"]["press-a"]["dropped_batches"] == dropped_before
    assert max(missing) <= last_before
    sub.close()


def test_device_faults_become_bad_readings_and_polling_recovers(tmp_path: Path, broker: Broker) -> None:
    flaky = Simulator(free_port(), "--drop-every", "15")
    failing = Simulator(free_port(), "--exception-rate", "1.0")
    sub = Subscriber(broker.port)
    _, config_dir, state = _start(tmp_path, broker, {
        "press-flaky": press_machine("press-flaky", flaky.port),
        "press-failing": press_machine("press-failing", failing.port),
    })
    agent = AgentProcess(config_dir, state, tmp_path / "agent.log")
    try:
        def recovered() -> bool:
            batches = sub.telemetry("press-flaky")
            bad_at = [i for i, b in enumerate(batches)
                      if any(r["quality"] == "bad" for r in b["readings"])]
            return bool(bad_at) and any(
                all(r["quality"] == "good" for r in b["readings"]) for b in batches[bad_at[-1] + 1:])
        wait_for(recovered, 60, "a dropped connection, then good readings again")
        wait_for(lambda: len(sub.telemetry("press-failing")) >= 10, 30, "batches of the failing press")
    finally:
        assert agent.stop() == 0
        flaky.stop()
        failing.stop()
    reasons = {r.get("reason") for b in sub.telemetry("press-flaky") for r in b["readings"]}
    assert reasons & {"comm_failure", "timeout"}
    # The device answers (machine.availability stays AVAILABLE) but with exceptions only; what
    # is derived from its signals (machine.execution) is bad for want of good inputs.
    failing_readings = [r for b in sub.telemetry("press-failing") for r in b["readings"]
                        if r["signal"] not in ("machine.availability", "machine.execution")]
    assert failing_readings and all(r["quality"] == "bad" and r["value"] is None
                                    for r in failing_readings)
    assert {r["reason"] for r in failing_readings} <= {"device_exception:4", "device_exception:6"}
    sub.close()


def test_brokers_are_tried_in_turn(tmp_path: Path, broker: Broker, press: Simulator) -> None:
    """`mqtt.more_urls`: when `url` cannot be reached, the next broker is used."""
    sub = Subscriber(broker.port)
    config = AgentConfig(tmp_path, free_port(), {"press-a": press_machine("press-a", press.port)},
                         mqtt_extra=f"more_urls: ['mqtt://127.0.0.1:{broker.port}']").write()
    agent = AgentProcess(config, tmp_path / "state", tmp_path / "agent.log")
    try:
        wait_for(lambda: sub.telemetry("press-a"), 20, "telemetry through the second broker")
    finally:
        assert agent.stop() == 0
        sub.close()
    refused = [line for line in agent.logs() if line.get("event") == "cannot connect to broker"]
    assert refused and refused[0]["url"] != f"mqtt://127.0.0.1:{broker.port}"
