"""Edge intelligence end to end: the press simulator, the agent with the press templates,
mosquitto. One cycle record per stroke with the peaks the simulator latched, the derived
machine state and stroke rate, unit conversion, report by exception, and the retained twin
state a late subscriber receives at once."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from simulators.modbus.press import stroke_ground_truth
from tests.support.harness import (
    AgentConfig,
    AgentProcess,
    Broker,
    Simulator,
    Subscriber,
    free_port,
    press_machine,
    wait_for,
)

SEED = 7
SPM = 120  # a stroke every 0.5 s
PEAKS = ("press.force.peak.ch1", "press.force.peak.ch2", "press.force.peak.ch3",
         "press.force.peak.ch4", "press.force.total_peak", "press.force.reverse_peak")


def cycles(sub: Subscriber) -> list[dict[str, Any]]:
    return [e["fields"] for m in sub.snapshot() if m.topic.endswith("/press-01/event")
            for e in m.data()["events"] if e["event"] == "machine.cycle"]


@pytest.fixture
def press_run(tmp_path: Path, broker: Broker) -> Any:
    port = free_port()
    sim = Simulator(port, "--spm", str(SPM), "--seed", str(SEED))
    machine = press_machine("press-01", port, fast="50ms", slow="1s")
    config = AgentConfig(tmp_path, broker.port, {"press-01": machine}).write()
    sub = Subscriber(broker.port)
    agent = AgentProcess(config, tmp_path / "state", tmp_path / "agent.log")
    try:
        wait_for(lambda: len(cycles(sub)) >= 8, 30, "eight cycle records")
        yield sub
    finally:
        agent.stop()
        sim.stop()
        sub.close()


def test_one_cycle_record_per_stroke_with_the_simulated_peaks(press_run: Subscriber,
                                                             broker: Broker) -> None:
    sub = press_run
    records = cycles(sub)
    numbers = [r["cycle"] for r in records]
    # Every stroke once, in order: consecutive counter values, none merged or repeated.
    assert numbers == list(range(numbers[0], numbers[0] + len(numbers)))
    assert all("missed" not in r for r in records)
    # The first stroke after the agent started began before it looked.
    assert records[0]["start"] is None and records[0]["cycle_time"] is None
    for before, record in zip(records, records[1:]):
        assert record["start"] == before["end"] < record["end"]
        assert record["cycle_time"] == round((record["end"] - record["start"]) / 1e9, 3)
        truth = stroke_ground_truth(SEED, record["cycle"])
        assert record["features"] == {name: pytest.approx(truth[name], rel=1e-9)
                                      for name in PEAKS}

    telemetry = [r for b in sub.telemetry("press-01") for r in b["readings"]]
    by_name: dict[str, list[dict[str, Any]]] = {}
    for r in telemetry:
        by_name.setdefault(r["signal"], []).append(r)
    # Derived from what was polled: availability, execution (running -> ACTIVE) and the
    # stroke rate from the counter, which matches what the press's panel shows.
    assert by_name["machine.availability"][-1]["value"] == "AVAILABLE"
    assert by_name["machine.execution"][-1]["value"] == "ACTIVE"
    rate = by_name["press.stroke_rate"][-1]
    assert rate["unit"] == "1/min" and rate["value"] == pytest.approx(SPM, rel=0.15)
    assert by_name["x.press.stroke_rate_panel"][-1]["value"] == SPM
    # bar on the device, kPa on the wire.
    lube = by_name["lubrication.pressure"][-1]
    assert lube["unit"] == "kPa" and 300 < lube["value"] < 400
    # Report by exception: text and booleans that never change are sent once, however many
    # polls ran; numbers without a deadband every poll.
    assert len(by_name["die.id"]) == 1 and len(by_name["motor.on"]) == 1
    assert len(by_name["press.crank_angle"]) > 20
    # Execution changes are events of their own.
    executions = [e["fields"] for m in sub.snapshot() if m.topic.endswith("/press-01/event")
                  for e in m.data()["events"] if e["event"] == "machine.execution"]
    assert executions[0] == {"from": None, "to": "ACTIVE"}

    # A twin that subscribes late gets the whole machine at once, from one retained message.
    late = Subscriber(broker.port, topic="factory/+/+/+/press-01/state", client_id="late-twin")
    try:
        state = wait_for(lambda: next((m for m in late.snapshot() if m.retain), None), 10,
                         "the retained state").data()
    finally:
        late.close()
    signals = state["signals"]
    assert set(signals) >= set(by_name) - {"press.stroke_rate"} | {"machine.execution",
                                                                  "machine.availability"}
    assert all({"value", "quality", "ts"} <= set(v) for v in signals.values())
    assert signals["die.id"]["value"] == "DIE-4711-B"
    assert signals["machine.execution"]["value"] == "ACTIVE"
    assert state["cycle"]["cycle"] >= numbers[0]
    assert set(state["cycle"]["features"]) == set(PEAKS)
