"""End to end over serial lines: the forging line (three Modbus RTU units on one pty), the
tonnage monitor and the temperature controller (ASCII, each on its own pty), all from the
example machine files -> agent -> mosquitto -> subscriber; a unit that stops answering
leaves the others polling; the bus utilisation is a metric."""

from __future__ import annotations

import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.cli.processes import terminate
from tests.support.harness import REPO, AgentConfig, AgentProcess, Broker, Subscriber, free_port, wait_for

EXAMPLES = REPO / "config" / "examples" / "machines.d"
SERIAL_MACHINES = {
    "forging-press": "/dev/ttyUSB0", "forging-heater": "/dev/ttyUSB0",
    "forging-scale": "/dev/ttyUSB0", "tonnage": "/dev/ttyUSB1", "tempctl": "/dev/ttyUSB2",
}


class PtySim:
    """A serial simulator subprocess on a fresh pty; `device` is the path the agent opens."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", *args, "--pty"], cwd=REPO,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        line = self.proc.stdout.readline().decode()  # type: ignore[union-attr]
        assert " listening on /dev/" in line, line
        self.device = line.strip().rsplit(" ", 1)[1]

    def stop(self) -> None:
        terminate(self.proc)  # type: ignore[arg-type]


@pytest.fixture
def sims() -> Iterator[dict[str, PtySim]]:
    started: dict[str, PtySim] = {}
    try:
        started["/dev/ttyUSB0"] = PtySim("simulators.modbus.forging", "--parity", "N",
                                         "--time-scale", "5", "--dead-unit", "9")
        started["/dev/ttyUSB1"] = PtySim("simulators.serial.ascii", "tonnage", "--time-scale", "5")
        started["/dev/ttyUSB2"] = PtySim("simulators.serial.ascii", "tempctl")
        yield started
    finally:
        for sim in started.values():
            sim.stop()


def test_serial_machines_from_the_examples_publish_through_the_broker(
        tmp_path: Path, broker: Broker, sims: dict[str, PtySim]) -> None:
    machines = {}
    for name, example_port in SERIAL_MACHINES.items():
        text = (EXAMPLES / f"{name}.yaml").read_text()
        assert example_port in text
        machines[name] = text.replace(example_port, sims[example_port].device)
    # A fourth unit on the forging line that never answers (the simulator has it dead).
    machines["ghost"] = machines["forging-scale"].replace("id: scale-01", "id: ghost-09").replace(
        "unit_id: 3", "unit_id: 9")
    config = AgentConfig(tmp_path, broker.port, machines).write()
    metrics_port = free_port()
    agent_yaml = config / "agent.yaml"
    agent_yaml.write_text(agent_yaml.read_text().replace(
        "metrics: {listen: null}", f"metrics: {{listen: '127.0.0.1:{metrics_port}'}}"))
    sub = Subscriber(broker.port)
    agent = AgentProcess(config, tmp_path / "state", tmp_path / "agent.log")
    try:
        wanted = {"forge-01": "forging.blow_energy", "heater-01": "temperature.billet_exit",
                  "scale-01": "billet.weight", "press-01-tonnage": "press.force.total_peak",
                  "furnace-01-tempctl": "temperature.zone2"}

        def good_everywhere() -> bool:
            for machine, signal in wanted.items():
                readings = [r for b in sub.telemetry(machine) for r in b["readings"]]
                if not any(r["signal"] == signal and r["quality"] == "good" for r in readings):
                    return False
            return True

        wait_for(good_everywhere, 30, "good readings from every serial machine")
        # The silent unit: bad readings, while the three live units on its line go on.
        ghost = wait_for(lambda: [r for b in sub.telemetry("ghost-09") for r in b["readings"]
                                  if r["signal"] != "machine.availability"],
                         20, "bad readings of the dead unit")
        assert {r["reason"] for r in ghost} <= {"timeout", "comm_failure"}
        counts_before = {m: len(sub.telemetry(m)) for m in ("forge-01", "heater-01", "scale-01")}
        wait_for(lambda: all(len(sub.telemetry(m)) >= n + 3 for m, n in counts_before.items()),
                 20, "the live units keep polling beside a dead one")
        # Tonnage lines carry the stroke counter; kN after the configured scale.
        strokes = [r["value"] for b in sub.telemetry("press-01-tonnage") for r in b["readings"]
                   if r["signal"] == "press.stroke_count" and r["quality"] == "good"]
        assert strokes == sorted(strokes) and len(set(strokes)) == len(strokes)
        # One cycle record per stroke line after the first (tonnage-monitor-sim on
        # press-generic), its peaks converted from the monitor's tf to kN.
        records = wait_for(lambda: [e["fields"] for m in sub.snapshot()
                                    if m.topic.endswith("/press-01-tonnage/event")
                                    for e in m.data()["events"] if e["event"] == "machine.cycle"],
                           20, "cycle records of the tonnage monitor")
        readings = [r for b in sub.telemetry("press-01-tonnage") for r in b["readings"]]
        strokes = [r["value"] for r in readings if r["signal"] == "press.stroke_count"]
        peaks = {r["ts"]: r for r in readings if r["signal"] == "press.force.total_peak"}
        assert [r["cycle"] for r in records] == strokes[1:len(records) + 1]
        for record in records:
            total = peaks[record["end"]]
            assert total["unit"] == "kN"
            assert record["features"]["press.force.total_peak"] == total["value"]
        text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read().decode()
        busy = [line for line in text.splitlines()
                if line.startswith("edge_agent_bus_busy_seconds_total{")]
        assert len(busy) == 1 and sims["/dev/ttyUSB0"].device in busy[0], busy
        assert float(busy[0].rsplit(" ", 1)[1]) > 0
    finally:
        assert agent.stop() == 0
        sub.close()
