"""Soak: hostile inbound floods beside normal polling, against two agents (uns with
write-back, Sparkplug with write-back), through mosquitto.

Floods, all at once for --duration seconds, at fixed rates (bounded in count and time):
valid write commands and NaN commands to a polled machine; commands with 63 KB topics for
machines the agent does not run; 5 MB commands (over the MQTT 5 Maximum Packet Size); 4.6 MB
DCMDs, DCMDs with 50,000 metrics, DCMDs over max_command_bytes, DCMDs over
max_command_metrics; NCMD rebirth requests. Each agent polls 10 presses every 100 ms.

Prints, per agent: polls skipped (poll deadlines missed) in a quiet window and in the flood,
RSS at the flood's start and its maximum, every /healthz answer, the event-loop lag.

    python bench/inbound_flood.py --duration 60
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agent.cli.processes import free_port  # noqa: E402
from agent.publish.sparkplug.codec import Metric, encode  # noqa: E402
from agent.publish.sparkplug.datatypes import DataType  # noqa: E402
from bench._common import REPO, histogram_quantile, metric_sum, rss_mb, scrape  # noqa: E402

SITE, GROUP = "bench", "plant-1"
MACHINES = 10


def press_yaml(machine: str, port: int) -> str:
    text = (REPO / "config/examples/machines.d/press.yaml").read_text()
    text = text.replace("id: press-01", f"id: {machine}").replace("port: 5020", f"port: {port}")
    return text + "signals:\n  - {name: die.clamp_closed, writable: true}\n"


def agent_config(work: Path, name: str, broker: int, metrics: int, press: int,
                 mqtt_extra: str) -> Path:
    config = work / name / "config"
    (config / "machines.d").mkdir(parents=True)
    (config / "agent.yaml").write_text(
        f"agent: {{id: {name}, site: {SITE}}}\n"
        f"mqtt: {{url: 'mqtt://127.0.0.1:{broker}', protocol: '5'{mqtt_extra}}}\n"
        "buffer: {path: buffer.db, commit_interval: 50ms}\n"
        f"metrics: {{listen: '127.0.0.1:{metrics}'}}\n"
        "logging: {level: warning, format: json}\n"
        "write: {enabled: true}\n")
    for i in range(MACHINES):
        machine = f"{name}-press-{i:02d}"
        (config / "machines.d" / f"{machine}.yaml").write_text(press_yaml(machine, press))
    return config


@dataclass
class Watch:
    """What one agent went through, sampled twice a second."""

    name: str
    pid: int
    metrics: int
    rss: list[float] = field(default_factory=list)
    health: dict[int, int] = field(default_factory=dict)  # HTTP status -> count

    def sample(self) -> None:
        self.rss.append(rss_mb(self.pid))
        try:
            code = urllib.request.urlopen(f"http://127.0.0.1:{self.metrics}/healthz",
                                          timeout=2).status
        except urllib.error.HTTPError as exc:
            code = exc.code
        except OSError:
            code = 0  # no answer within 2 s
        self.health[code] = self.health.get(code, 0) + 1


class Flood:
    """Publishers at fixed rates, each in its own thread, until stop()."""

    def __init__(self, broker: int) -> None:
        self.sent: dict[str, int] = {}
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._broker = broker

    def add(self, name: str, rate: float, message: object) -> None:
        """`message()` -> (topic, payload), `rate` times a second."""
        def run() -> None:
            client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"flood-{name}",
                                 protocol=MQTTProtocolVersion.MQTTv311)
            client.max_queued_messages_set(1000)
            client.connect("127.0.0.1", self._broker, keepalive=30)
            client.loop_start()
            period, due, count = 1.0 / rate, time.monotonic(), 0
            while not self._stop.is_set():
                topic, payload = message()  # type: ignore[operator]
                if client.publish(topic, payload, qos=0).rc == mqtt.MQTT_ERR_SUCCESS:
                    count += 1
                due += period
                delay = due - time.monotonic()
                if delay > 0:
                    self._stop.wait(delay)
                elif delay < -1.0:
                    due = time.monotonic()  # fell behind: do not catch up in a burst
            self.sent[name] = count
            client.loop_stop()
            client.disconnect()
        self._threads.append(threading.Thread(target=run, name=name, daemon=True))

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)


def floods(flood: Flood) -> None:
    uns_cmd = f"factory/{SITE}/stamping/line-1/uns-press-00/cmd"
    dcmd = f"spBv1.0/{GROUP}/DCMD/spb/spb-press-00"
    ncmd = f"spBv1.0/{GROUP}/NCMD/spb"
    counter = iter(range(10**12))

    def command() -> tuple[str, bytes]:
        return uns_cmd, json.dumps({"request_id": f"f{next(counter)}", "signal":
                                    "die.clamp_closed", "value": True,
                                    "ts": time.time_ns()}).encode()

    def nan() -> tuple[str, bytes]:
        return uns_cmd, b'{"request_id": "n%d", "signal": "die.clamp_closed", "value": NaN, ' \
            b'"ts": %d}' % (next(counter), time.time_ns())

    long_level = "m" * 63_000

    def long_topic() -> tuple[str, bytes]:
        return f"factory/{SITE}/a/l/{long_level}{next(counter)}/cmd", command()[1]

    huge = b'{"pad": "' + b"p" * 5_000_000 + b'"}'
    now = int(time.time() * 1000)
    big_dcmd = encode([Metric("die.clamp_closed", "x" * 4_600_000, DataType.String)], None, now)
    many = encode([Metric("die.clamp_closed", True, DataType.Boolean)] * 50_000, None, now)
    over_bytes = encode([Metric("die.clamp_closed", "x" * 100_000, DataType.String)], None, now)
    over_count = encode([Metric("die.clamp_closed", True, DataType.Boolean)] * 1000, None, now)

    def fresh(body: list[Metric]) -> bytes:
        return encode(body, None, int(time.time() * 1000))

    flood.add("commands", 2000, command)
    flood.add("nan-commands", 500, nan)
    flood.add("long-topics", 50, long_topic)
    flood.add("5MB-commands", 1, lambda: (uns_cmd, huge))
    flood.add("4.6MB-dcmds", 0.5, lambda: (dcmd, big_dcmd))
    flood.add("50k-metric-dcmds", 1, lambda: (dcmd, many))
    flood.add("100kB-dcmds", 20, lambda: (dcmd, over_bytes))
    flood.add("1000-metric-dcmds", 50, lambda: (dcmd, over_count))
    flood.add("valid-dcmds", 200, lambda: (dcmd, fresh(
        [Metric("die.clamp_closed", True, DataType.Boolean)])))
    flood.add("rebirths", 100, lambda: (ncmd, fresh(
        [Metric("Node Control/Rebirth", True, DataType.Boolean)])))


def window(watches: list[Watch], seconds: float) -> dict[str, tuple[str, str]]:
    """Scrapes at the start and end of `seconds` of sampling, by agent."""
    before = {w.name: scrape(w.metrics) for w in watches}
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        for w in watches:
            w.sample()
        time.sleep(0.5)
    return {w.name: (before[w.name], scrape(w.metrics)) for w in watches}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of flood")
    parser.add_argument("--quiet", type=float, default=15.0, help="seconds measured before it")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="edge-agent-flood-"))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        broker = free_port()
        (work / "mosquitto.conf").write_text(f"listener {broker} 127.0.0.1\n"
                                             "allow_anonymous true\nmax_queued_messages 1000\n")
        procs.append(subprocess.Popen([shutil.which("mosquitto") or "/usr/sbin/mosquitto",
                                       "-c", str(work / "mosquitto.conf")],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        press = free_port()
        procs.append(subprocess.Popen([sys.executable, "-m", "simulators.modbus.press", "--host",
                                       "127.0.0.1", "--port", str(press)], cwd=REPO,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        watches = []
        for name, extra in (("uns", ""), ("spb", f", profile: sparkplug, sparkplug: "
                                                  f"{{group_id: {GROUP}}}")):
            metrics = free_port()
            config = agent_config(work, name, broker, metrics, press, extra)
            with open(work / f"{name}.log", "wb") as log:
                agent = subprocess.Popen([sys.executable, "-m", "agent", "run", "-c",
                                          str(config), "--state-dir", str(work / name)],
                                         cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
            procs.append(agent)
            watches.append(Watch(name, agent.pid, metrics))
        time.sleep(10)  # connected, polling, warm
        for agent in procs[2:]:
            if agent.poll() is not None:
                print("an agent exited; see", work, file=sys.stderr)
                return 1
        quiet = window(watches, args.quiet)
        for w in watches:
            w.rss.clear()
            w.health.clear()
        flood = Flood(broker)
        floods(flood)
        rss_start = {w.name: rss_mb(w.pid) for w in watches}
        flood.start()
        flooded = window(watches, args.duration)
        flood.stop()
        print(f"flood {args.duration:.0f} s, sent: "
              + ", ".join(f"{name} {count:,}" for name, count in sorted(flood.sent.items())))
        for w in watches:
            q_before, q_after = quiet[w.name]
            before, after = flooded[w.name]
            skipped_quiet = (metric_sum(q_after, "edge_agent_poll_overruns_total")
                             - metric_sum(q_before, "edge_agent_poll_overruns_total"))
            skipped = (metric_sum(after, "edge_agent_poll_overruns_total")
                       - metric_sum(before, "edge_agent_poll_overruns_total"))
            polls = (metric_sum(after, "edge_agent_polls_total")
                     - metric_sum(before, "edge_agent_polls_total"))
            lag = histogram_quantile(after, "edge_agent_event_loop_lag_seconds", 0.99, before)
            refused = {line.split("{", 1)[1].split("}", 1)[0]: float(line.rsplit(" ", 1)[1])
                       for line in after.splitlines()
                       if line.startswith(("edge_agent_write_commands_total{",
                                           "edge_agent_mqtt_inbound_refused_total{"))
                       and float(line.rsplit(" ", 1)[1]) > 0}
            health = ", ".join(f"{code or 'no answer'} x{n}" for code, n in
                               sorted(w.health.items()))
            print(f"{w.name} agent skipped polls {skipped:.0f} in the flood "
                  f"({skipped_quiet:.0f} in {args.quiet:.0f} s before it), {polls:,.0f} polls")
            print(f"{w.name} agent RSS {rss_start[w.name]:.1f} MB at the flood's start, "
                  f"{max(w.rss):.1f} MB max, {w.rss[-1]:.1f} MB at its end")
            print(f"{w.name} agent /healthz {health}")
            print(f"{w.name} agent event-loop lag p99 {lag * 1000:.1f} ms")
            print(f"{w.name} agent counted " + ", ".join(
                f"{k.replace('machine=', '').replace('result=', '').replace('reason=', '')} "
                f"{v:,.0f}" for k, v in sorted(refused.items())))
            if procs[2 + watches.index(w)].poll() is not None:
                print(f"{w.name} agent EXITED during the flood")
        return 0
    finally:
        for proc in reversed(procs):
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
