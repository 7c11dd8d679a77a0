"""End to end over OPC UA: cnc and injection simulators -> agent -> mosquitto -> subscriber.

Subscribed values with their source timestamps, read groups, event records on their own
topic with their own seq series; and what the agent publishes when a server restarts,
stops publishing, or is not there at all.
"""

from __future__ import annotations

import itertools
import signal
import statistics
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.fault_proxy import FaultProxy
from tests.support.harness import (
    REPO,
    AgentConfig,
    AgentProcess,
    Broker,
    Message,
    Subscriber,
    assert_complete_and_ordered,
    free_port,
    wait_for,
)
from tests.e2e.test_opcua_cli import OpcSim

CNC_BASE = "factory/testsite/machining/line-1/cnc-01"
CNC_EVENT_TOPIC = CNC_BASE + "/event"
IMM_BASE = "factory/testsite/moulding/line-3/imm-01"
IMM_EVENT_TOPIC = IMM_BASE + "/event"

# The cnc example's push group (`fast`): every signal but the identification reads.
CNC_IDENTIFICATION = {"machine.manufacturer", "machine.model", "machine.serial_number",
                      "machine.software_revision"}
CNC_EVENT_SIGNALS = {"alarm.code", "alarm.text", "alarm.severity"}


def cnc_machine(port: int, keepalive_count: int | None = None) -> str:
    text = (REPO / "config/examples/machines.d/cnc.yaml").read_text()
    assert "127.0.0.1:4840" in text
    text = text.replace("127.0.0.1:4840", f"127.0.0.1:{port}")
    if keepalive_count is not None:
        assert "\nconnection:\n" in text
        text = text.replace("\nconnection:\n",
                            f"\nconnection:\n  keepalive_count: {keepalive_count}\n")
    return text


def imm_machine(port: int) -> str:
    text = (REPO / "config/examples/machines.d/injection.yaml").read_text()
    assert "127.0.0.1:4841" in text
    return text.replace("127.0.0.1:4841", f"127.0.0.1:{port}")


def cnc_fast_signals() -> set[str]:
    names = set()
    for line in (REPO / "config/templates/cnc-sim.yaml").read_text().splitlines():
        if "{name: " in line:
            names.add(line.split("{name: ", 1)[1].split(",", 1)[0])
    assert len(names) == 28 and CNC_IDENTIFICATION <= names
    return names - CNC_IDENTIFICATION


class Run:
    """Broker subscriber + agent over a config of the given machine files."""

    def __init__(self, tmp_path: Path, broker: Broker, machines: dict[str, str]) -> None:
        self.sub = Subscriber(broker.port)
        self.config_dir = AgentConfig(tmp_path, broker.port, machines).write()
        self.state_dir = tmp_path / "state"
        self.started_ns = time.time_ns()
        self.agent = AgentProcess(self.config_dir, self.state_dir, tmp_path / "agent.log")

    def batches(self, topic: str, since: int = 0,
                derived: bool | None = False) -> list[dict[str, Any]]:
        """Decoded payloads of `topic`, of messages from index `since` on; on an event topic
        the device's events only, or with `derived` the agent's own (machine.cycle,
        machine.execution), or with None all of them."""
        out = [m.data() for m in self.sub.snapshot()[since:] if m.topic == topic]
        if topic.endswith("/event") and derived is not None:
            out = [dict(b, events=[e for e in b["events"]
                                   if e["event"].startswith("machine.") == derived]) for b in out]
            out = [b for b in out if b["events"]]
        return out

    def readings(self, machine_base: str, since: int = 0) -> list[dict[str, Any]]:
        return [r for b in self.batches(machine_base + "/telemetry", since) for r in b["readings"]]

    def good(self, machine_base: str, signal_name: str, since: int = 0,
             after_ns: int = 0) -> list[dict[str, Any]]:
        return [r for r in self.readings(machine_base, since)
                if r["signal"] == signal_name and r["quality"] == "good" and r["ts"] > after_ns]

    def mark(self) -> int:
        """Index of the next message to arrive."""
        return len(self.sub.snapshot())

    def alive(self) -> None:
        assert self.agent.proc.poll() is None, f"the agent exited: {self.agent.logs()[-10:]}"

    def close(self) -> None:
        try:
            if self.agent.proc.poll() is None:
                assert self.agent.stop() == 0
        finally:
            self.sub.close()


@pytest.fixture
def sims() -> Iterator[dict[str, OpcSim]]:
    """Both OPC UA simulators, fast."""
    cnc = OpcSim("cnc", free_port(), "--seed", "1", "--alarm-every", "2", time_scale="20")
    try:
        imm = OpcSim("injection", free_port(), "--seed", "1", time_scale="30")
    except BaseException:
        cnc.stop()
        raise
    yield {"cnc": cnc, "imm": imm}
    cnc.stop()
    imm.stop()


def _by_signal(readings: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for r in readings:
        out.setdefault(r["signal"], []).append(r)
    return out


def test_agent_publishes_subscriptions_reads_and_events(tmp_path: Path, broker: Broker,
                                                        sims: dict[str, OpcSim]) -> None:
    run = Run(tmp_path, broker, {"cnc-01": cnc_machine(sims["cnc"].port),
                                 "imm-01": imm_machine(sims["imm"].port)})
    try:
        wait_for(lambda: run.good(CNC_BASE, "spindle.speed.actual")
                 and run.good(CNC_BASE, "axis.x.position")
                 and run.good(CNC_BASE, "machine.manufacturer"), 20, "cnc subscribed and read data")
        wait_for(lambda: run.good(IMM_BASE, "cycle.time") and run.good(IMM_BASE, "imm.cushion")
                 and run.good(IMM_BASE, "temperature.barrel.zone1"), 20, "imm event and read data")
        wait_for(lambda: len(run.batches(IMM_EVENT_TOPIC)) >= 4, 20, "four imm event batches")
        wait_for(lambda: run.batches(CNC_EVENT_TOPIC), 20, "a cnc alarm event")
        run.alive()
    finally:
        run.close()
    now = time.time_ns()

    # -- cnc: subscribed values with units and source timestamps, identification by read.
    cnc_batches = run.batches(CNC_BASE + "/telemetry")
    assert {b["machine"] for b in cnc_batches} == {"cnc-01"}
    assert {b["agent"] for b in cnc_batches} == {"gw-test"}
    cnc = _by_signal([r for b in cnc_batches for r in b["readings"]])
    for name, unit in (("spindle.speed.actual", "rev/min"), ("axis.x.position", "mm")):
        assert all(r["quality"] == "good" and r["unit"] == unit for r in cnc[name]), cnc[name][:3]
        assert all(isinstance(r["value"], float) for r in cnc[name])
        assert all(run.started_ns - 60e9 < r["ts"] <= now for r in cnc[name])
    assert len({r["value"] for r in cnc["axis.x.position"]}) > 1  # it moves
    # EStop never changes: its one notification carries the time the simulator wrote it,
    # before the agent was even started (a receive time would be later).
    estop = cnc["machine.estop"][0]
    assert estop["quality"] == "good" and estop["value"] is False
    assert estop["ts"] < run.started_ns
    manufacturer = cnc["machine.manufacturer"][0]
    assert manufacturer["value"] == "Musterwerke Werkzeugmaschinen GmbH"
    assert manufacturer["quality"] == "good" and manufacturer["ts"] < run.started_ns
    assert cnc["machine.mode"][0]["value"] in ("Automatic", "MDI", "Manual")  # value_as: name
    assert cnc["machine.state"][-1]["value"] in ("active", "interrupted", "ready")
    # The identification (read group, 1 min) and the subscription never share a batch.
    for b in cnc_batches:
        names = {r["signal"] for r in b["readings"]}
        assert not names or names <= CNC_IDENTIFICATION or not names & CNC_IDENTIFICATION

    # cnc alarms (every 2nd cycle) as events, and as readings of the event signals.
    alarms = run.batches(CNC_EVENT_TOPIC)
    every = run.batches(CNC_EVENT_TOPIC, derived=None)
    assert [a["seq"] for a in every] == list(range(1, len(every) + 1))
    alarm_records = [rec for a in alarms for rec in a["events"]]
    for rec in alarm_records:
        assert rec["event"] == "alarms"
        assert isinstance(rec["fields"]["AlarmCode"], int) and rec["fields"]["AlarmCode"] > 0
        assert rec["fields"]["AlarmText"] and rec["fields"]["Message"].startswith(
            f"{rec['fields']['AlarmCode']}: ")
        codes = [r for r in cnc["alarm.code"] if r["ts"] == rec["ts"]]
        assert [r["value"] for r in codes] == [rec["fields"]["AlarmCode"]], cnc["alarm.code"]
        texts = [r for r in cnc["alarm.text"] if r["ts"] == rec["ts"]]
        assert [r["value"] for r in texts] == [rec["fields"]["AlarmText"]]

    # -- imm: readings derived from events, and read temperatures.
    imm_batches = run.batches(IMM_BASE + "/telemetry")
    imm = _by_signal([r for b in imm_batches for r in b["readings"]])
    assert all(r["quality"] == "good" and r["unit"] == "s" for r in imm["cycle.time"])
    assert all(10.0 < r["value"] < 40.0 for r in imm["cycle.time"]), imm["cycle.time"]
    assert all(r["unit"] == "mm" and 2.0 < r["value"] < 8.0 for r in imm["imm.cushion"])
    zone1 = [r for r in imm["temperature.barrel.zone1"] if r["quality"] == "good"]
    assert zone1 and all(r["unit"] == "Cel" and 150.0 < r["value"] < 300.0 for r in zone1)
    assert imm["program.name"][0]["value"] == "JOB-4711 Cap 28mm PP"

    # -- imm events: own topic, own gap-free seq series, the event fields.
    events = run.batches(IMM_EVENT_TOPIC)
    assert {(e["agent"], e["machine"]) for e in events} == {("gw-test", "imm-01")}
    epochs = {e["epoch"] for e in events} | {b["epoch"] for b in imm_batches}
    assert len(epochs) == 1
    event_seqs = [e["seq"] for e in run.batches(IMM_EVENT_TOPIC, derived=None)]
    assert event_seqs[0] == 1
    assert_complete_and_ordered(event_seqs, max(event_seqs))
    # The telemetry series of imm-01 is gap-free by itself: events took none of its seqs.
    imm_seqs = [b["seq"] for b in imm_batches]
    assert imm_seqs[0] == 1
    assert_complete_and_ordered(imm_seqs, max(imm_seqs))
    assert max(imm_seqs) > max(event_seqs)  # polled every second and every 500 ms
    records = [rec for e in events for rec in e["events"]]
    assert all(rec["event"] == "cycle" for rec in records)
    for rec in records:
        fields = rec["fields"]
        for name in ("CycleCounter", "CycleTime", "Cushion", "DosingTime", "InjectionTime",
                     "InjectionPressurePeak", "HoldPressurePeak", "MouldTemperatureAvg", "PartGood"):
            assert name in fields, (name, fields)
        assert isinstance(fields["PartGood"], bool) and isinstance(fields["CycleCounter"], int)
        assert fields["Message"] == f"cycle {fields['CycleCounter']}"
        assert fields["Severity"] == 100
        assert run.started_ns - 5e9 < rec["ts"] <= now
    counters = [rec["fields"]["CycleCounter"] for rec in records]
    assert counters == list(range(counters[0], counters[0] + len(counters))), counters  # none lost
    # Every event's fields also became readings, with the event's time.
    by_ts = {r["ts"]: r["value"] for r in imm["cycle.count"]}
    for rec in records:
        assert by_ts.get(rec["ts"]) == rec["fields"]["CycleCounter"]
    # ... and the agent made one cycle record of each shot after the first it saw
    # (injection-generic: counted by cycle.count, with the shot's process values).
    shots = {rec["fields"]["CycleCounter"]: rec["fields"] for rec in records}
    cycles = [rec["fields"] for e in run.batches(IMM_EVENT_TOPIC, derived=True)
              for rec in e["events"] if rec["event"] == "machine.cycle"]
    assert [c["cycle"] for c in cycles] == sorted(shots)[1:len(cycles) + 1]
    for c in cycles:
        shot = shots[c["cycle"]]
        assert c["features"]["imm.cushion"] == pytest.approx(shot["Cushion"])
        assert c["features"]["imm.hold_pressure.peak"] == pytest.approx(shot["HoldPressurePeak"] * 100)
        assert c["features"]["imm.part_good"] is shot["PartGood"]

    # -- the retained state of each machine outlives the agent.
    late = Subscriber(broker.port, topic="factory/testsite/+/+/+/state", client_id="late-state")
    try:
        def retained() -> dict[str, Message] | None:
            got = {m.topic: m for m in late.snapshot()}
            return got if len(got) == 2 else None

        states: dict[str, Message] = wait_for(retained, 10, "two retained state messages")
    finally:
        late.close()
    assert set(states) == {CNC_BASE + "/state", IMM_BASE + "/state"}
    assert all(m.retain for m in states.values())
    cnc_state = states[CNC_BASE + "/state"].data()
    assert cnc_state["machine"] == "cnc-01" and cnc_state["agent"] == "gw-test"
    assert cnc_state["signals"]["machine.manufacturer"]["value"] == manufacturer["value"]
    assert cnc_state["signals"]["spindle.speed.actual"]["quality"] == "good"
    assert "imm.cushion" in states[IMM_BASE + "/state"].data()["signals"]


def test_cnc_subscriptions_resume_after_a_server_restart(tmp_path: Path, broker: Broker,
                                                         sims: dict[str, OpcSim]) -> None:
    cnc = sims["cnc"]
    run = Run(tmp_path, broker, {"cnc-01": cnc_machine(cnc.port),
                                 "imm-01": imm_machine(sims["imm"].port)})
    try:
        wait_for(lambda: run.good(CNC_BASE, "axis.x.position"), 20, "cnc data before the restart")
        wait_for(lambda: run.good(IMM_BASE, "temperature.barrel.zone1"), 20, "imm data")
        lines = len(cnc.lines)
        mark = run.mark()
        cnc.proc.send_signal(signal.SIGUSR2)
        cnc.wait_line("cnc restarted on", lines, 15)
        restarted_ns = time.time_ns()
        imm_at_restart = len(run.batches(IMM_BASE + "/telemetry"))

        # New values from the new server (its address space was rebuilt at the restart).
        wait_for(lambda: run.good(CNC_BASE, "axis.x.position", mark, restarted_ns)
                 and run.good(CNC_BASE, "spindle.speed.actual", mark, restarted_ns),
                 20, "cnc subscription data after the restart")
        # EStop is written once per address space: its value is the new server's.
        wait_for(lambda: [r for r in run.good(CNC_BASE, "machine.estop", mark)
                          if r["ts"] > restarted_ns - 5e9], 10, "estop from the new server")
        wait_for(lambda: len(run.batches(IMM_BASE + "/telemetry")) >= imm_at_restart + 3,
                 10, "imm telemetry going on")
        run.alive()
        logs = run.agent.logs()
        assert sum(1 for l in logs if l.get("event") == "connected to device"
                   and l.get("machine") == "cnc-01") >= 2
        assert not any(l.get("machine") == "imm-01" and "lost" in str(l.get("event")) for l in logs)
    finally:
        run.close()
    # Nothing of cnc-01 was lost over the restart: its seq series has no gap.
    seqs = [b["seq"] for b in run.batches(CNC_BASE + "/telemetry")]
    assert_complete_and_ordered(seqs, max(seqs))
    # While it was away the cnc's signals were bad for a reason, never garbage.
    after = [r for b in run.batches(CNC_BASE + "/telemetry", mark) for r in b["readings"]]
    reasons = {r.get("reason") for r in after if r["quality"] == "bad"}
    assert reasons <= {"comm_failure", "subscription_lost", "subscription_stalled", "timeout"}, reasons
    assert all(r["value"] is None for r in after if r["quality"] == "bad")
    # ... and imm never was.
    imm_bad = [r for r in run.readings(IMM_BASE) if r["quality"] != "good"]
    assert not imm_bad, imm_bad[:5]


def test_imm_event_subscription_resumes_after_a_server_restart(tmp_path: Path, broker: Broker,
                                                               sims: dict[str, OpcSim]) -> None:
    imm = sims["imm"]
    run = Run(tmp_path, broker, {"imm-01": imm_machine(imm.port)})
    try:
        wait_for(lambda: len(run.batches(IMM_EVENT_TOPIC)) >= 2, 20, "imm events before the restart")
        before = [rec["fields"]["CycleCounter"] for e in run.batches(IMM_EVENT_TOPIC)
                  for rec in e["events"]]
        lines = len(imm.lines)
        imm.proc.send_signal(signal.SIGUSR2)
        imm.wait_line("injection restarted on", lines, 15)
        restarted_ns = time.time_ns()

        def new_events() -> list[dict[str, Any]]:
            return [rec for e in run.batches(IMM_EVENT_TOPIC) for rec in e["events"]
                    if rec["ts"] > restarted_ns]

        wait_for(lambda: len(new_events()) >= 2, 20, "imm cycle events after the restart")
        wait_for(lambda: run.good(IMM_BASE, "imm.cushion", 0, restarted_ns), 10,
                 "event readings after the restart")
        run.alive()
    finally:
        run.close()
    # The machine goes on counting; the agent's event series goes on without a gap.
    assert all(rec["fields"]["CycleCounter"] > max(before) for rec in new_events())
    seqs = [e["seq"] for e in run.batches(IMM_EVENT_TOPIC, derived=None)]
    assert seqs[0] == 1
    assert_complete_and_ordered(seqs, max(seqs))
    tele = [b["seq"] for b in run.batches(IMM_BASE + "/telemetry")]
    assert_complete_and_ordered(tele, max(tele))


@pytest.mark.parametrize("keepalive_count, within", [
    (1, 5.0),  # 200 ms x 1: silent beyond 2 x 0.2 s + 1 s
    (None, 10.0),  # the example's 10 x 200 ms: 5 s
])
def test_paused_publishing_gives_subscription_stalled_then_good_again(
        tmp_path: Path, broker: Broker, sims: dict[str, OpcSim], keepalive_count: int | None,
        within: float) -> None:
    cnc = sims["cnc"]
    run = Run(tmp_path, broker, {"cnc-01": cnc_machine(cnc.port, keepalive_count),
                                 "imm-01": imm_machine(sims["imm"].port)})
    # machine.execution, derived from the channel state, is stalled with it.
    fast = cnc_fast_signals() | {"machine.execution"}
    try:
        wait_for(lambda: run.good(CNC_BASE, "axis.x.position"), 20, "cnc data before the pause")
        lines = len(cnc.lines)
        mark = run.mark()
        cnc.proc.send_signal(signal.SIGUSR1)
        cnc.wait_line("cnc publishing paused", lines, 10)
        paused = time.monotonic()

        def stalled() -> set[str]:
            return {r["signal"] for r in run.readings(CNC_BASE, mark)
                    if r.get("reason") == "subscription_stalled"}

        wait_for(lambda: stalled() >= fast, within, "subscription_stalled readings")
        assert time.monotonic() - paused < within
        assert stalled() == fast  # the push group only, never the identification reads
        for r in run.readings(CNC_BASE, mark):
            if r.get("reason") == "subscription_stalled":
                assert r["quality"] == "bad" and r["value"] is None
        run.alive()

        lines = len(cnc.lines)
        cnc.proc.send_signal(signal.SIGUSR1)
        cnc.wait_line("cnc publishing resumed", lines, 10)
        resumed = run.mark()
        wait_for(lambda: run.good(CNC_BASE, "axis.x.position", resumed)
                 and run.good(CNC_BASE, "spindle.speed.actual", resumed), 20,
                 "good subscription data after the resume")
        # Once good data flows again, the stall reports stop.
        settled = run.mark()
        wait_for(lambda: len(run.batches(CNC_BASE + "/telemetry", settled)) >= 10, 10,
                 "more cnc batches")
        assert not [r for r in run.readings(CNC_BASE, settled)
                    if r.get("reason") == "subscription_stalled"]
        run.alive()
    finally:
        run.close()


def test_machine_down_at_start_is_bad_at_its_poll_rate_until_it_comes_up(
        tmp_path: Path, broker: Broker) -> None:
    imm = OpcSim("injection", free_port(), "--seed", "1", time_scale="30")
    cnc_port = free_port()
    cnc: OpcSim | None = None
    run = Run(tmp_path, broker, {"cnc-01": cnc_machine(cnc_port), "imm-01": imm_machine(imm.port)})
    try:
        def failures() -> list[dict[str, Any]]:
            return [r for r in run.readings(CNC_BASE)
                    if r["signal"] == "spindle.speed.actual" and r.get("reason") == "comm_failure"]

        wait_for(lambda: len(failures()) >= 15, 20, "15 polls of comm_failure readings")
        imm_good = len(run.good(IMM_BASE, "temperature.barrel.zone1"))
        # The fast group keeps its 200 ms cadence although nothing answers.
        stamps = [r["ts"] for r in failures()]
        gaps = [(b - a) / 1e9 for a, b in itertools.pairwise(stamps)]
        assert 0.15 < statistics.median(gaps) < 0.3, gaps
        assert max(gaps) < 1.5, gaps
        # Every signal of the machine is reported bad, the read group too (its one poll).
        # (machine.availability, the agent's own, is a good UNAVAILABLE.)
        readings = [r for r in run.readings(CNC_BASE) if r["signal"] != "machine.availability"]
        assert {r["signal"] for r in readings} == (cnc_fast_signals() | CNC_IDENTIFICATION
                                                   | {"machine.execution"})
        assert all(r["quality"] == "bad" and r["reason"] == "comm_failure" and r["value"] is None
                   for r in readings)
        # The other machine is unaffected.
        assert imm_good >= 2
        assert all(r["quality"] == "good" for r in run.readings(IMM_BASE))
        assert len(run.batches(IMM_EVENT_TOPIC)) >= 1

        cnc = OpcSim("cnc", cnc_port, "--seed", "1", time_scale="20")
        up_ns = time.time_ns()
        # Reconnect backoff after a few seconds down is at most a few seconds (jittered).
        wait_for(lambda: run.good(CNC_BASE, "axis.x.position", 0, up_ns - 5e9)
                 and run.good(CNC_BASE, "spindle.speed.actual"), 30, "good cnc data once it is up")
        wait_for(lambda: len(run.good(IMM_BASE, "temperature.barrel.zone1")) > imm_good, 10,
                 "imm still flowing")
        run.alive()
        logs = run.agent.logs()
        failed = [l for l in logs if l.get("event") == "cannot connect to device"]
        assert failed and {l.get("machine") for l in failed} == {"cnc-01"}
        assert len(failed) == 1  # the same error is logged once, not on every retry
        assert any(l.get("event") == "connected to device" and l.get("machine") == "cnc-01"
                   for l in logs)
    finally:
        try:
            run.close()
        finally:
            imm.stop()
            if cnc is not None:
                cnc.stop()
    seqs = [b["seq"] for b in run.batches(CNC_BASE + "/telemetry")]
    assert_complete_and_ordered(seqs, max(seqs))


def test_a_black_holed_opcua_link_reads_bad_then_recovers(tmp_path: Path, broker: Broker,
                                                          sims: dict[str, OpcSim]) -> None:
    """The network between the agent and the OPC UA server goes silent (the fault proxy
    black-holes it): the cnc's signals turn bad with a reason, the other machine goes on,
    and once the network is back the cnc reads good again."""
    link = FaultProxy(sims["cnc"].port)
    run = Run(tmp_path, broker, {"cnc-01": cnc_machine(link.port),
                                 "imm-01": imm_machine(sims["imm"].port)})
    try:
        wait_for(lambda: run.good(CNC_BASE, "axis.x.position"), 20, "cnc data first")
        mark = run.mark()
        link.black_hole()
        bad = wait_for(lambda: [r for r in run.readings(CNC_BASE, mark)
                                if r["signal"] == "axis.x.position" and r["quality"] == "bad"],
                       30, "bad cnc readings while the link is silent")
        assert bad[0]["reason"] in ("subscription_stalled", "comm_failure", "timeout")
        imm_before = len(run.good(IMM_BASE, "temperature.barrel.zone1"))
        link.pass_through()
        back = run.mark()
        wait_for(lambda: run.good(CNC_BASE, "axis.x.position", back), 60, "cnc good again")
        wait_for(lambda: len(run.good(IMM_BASE, "temperature.barrel.zone1")) > imm_before, 10,
                 "the other machine still polled")
        run.alive()
    finally:
        run.close()
        link.close()


def test_every_change_arrives_when_values_change_faster_than_publishing(
        tmp_path: Path, broker: Broker) -> None:
    """Values change every 100 ms and the server samples every 100 ms, but publishes only
    every 200 ms: without a queue_size in the file the agent asks for room for every sample
    of an interval, so no change is lost (a queue of one would lose every other)."""
    sim = OpcSim("bulk", free_port(), "--variables", "50", "--rate", "10", time_scale=None,
                 module="bulk")
    lines = ["id: bulk-01", "family: cnc", "area: bench", "line: line-1",
             "connection: {protocol: opcua, url: '%s', mode: subscribe}" % sim.url,
             "poll: {main: 200ms}", "signals:"]
    lines += [f"  - {{name: x.bulk.v{i:05d}, node: 'nsu=urn:edge-agent:sim:bulk;s=Bulk.V{i:05d}',"
              " sampling_interval: 100ms}" for i in range(50)]
    run = Run(tmp_path, broker, {"bulk-01": "\n".join(lines) + "\n"})
    base = "factory/testsite/bench/line-1/bulk-01"
    try:
        wait_for(lambda: len({int(r["value"]) for r in run.good(base, "x.bulk.v00049")}) >= 40,
                 60, "40 ticks of the last variable")
        run.alive()
    finally:
        run.close()
        sim.stop()
    by_signal = _by_signal([r for r in run.readings(base) if r["quality"] == "good"
                            and r["signal"].startswith("x.bulk.")])
    assert len(by_signal) == 50
    for name, readings in by_signal.items():
        ticks = sorted({int(r["value"]) for r in readings if r["value"] >= 1})
        assert len(ticks) >= 30, name
        missing = sorted(set(range(ticks[0], ticks[-1] + 1)) - set(ticks))
        assert not missing, f"{name}: ticks {missing[:10]} never arrived"
