"""End-to-end Modbus pipeline benchmark: N simulated presses -> agent -> mosquitto -> subscriber.

Simulators run in their own process, the agent in its own (its CPU is read from /proc, i.e.
its own rusage), mosquitto is the real broker, delivery is QoS 1. Prints figures; asserts
nothing.

    python bench/modbus_pipeline.py --machines 100 --signals 100 --interval 1s --duration 60
"""

from __future__ import annotations

import argparse
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from _common import (  # noqa: E402
    histogram_quantile,
    listen,
    measure,
    metric_sum,
    percentile,
    port_free,
    start_broker,
    start_warm_agent,
    write_config,
)

from agent.core.encoding import decode  # noqa: E402
from agent.cli.processes import free_port, terminate  # noqa: E402
from drivers.config_types import parse_duration  # noqa: E402

# Registers of the press simulator's map that hold plain 16-bit values (hr:0..63 is mapped).
REGISTERS = 64


def machine_file(index: int, port: int, signals: int, interval: str) -> str:
    lines = [f"id: bench-{index:03d}", "family: press", "area: bench", "line: line-1",
             f"connection: {{protocol: modbus-tcp, host: 127.0.0.1, port: {port}, unit_id: 1, timeout: 1s}}",
             f"poll: {{main: {interval}}}", "signals:"]
    for s in range(signals):
        lines.append(f"  - {{name: x.bench.s{s:03d}, address: \"hr:{s % REGISTERS}\", type: uint16}}")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--machines", type=int, default=100)
    parser.add_argument("--signals", type=int, default=100)
    parser.add_argument("--interval", default="1s")
    parser.add_argument("--duration", type=float, default=60.0, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=5.0)
    parser.add_argument("--encoding", default="json", choices=["json", "msgpack"])
    args = parser.parse_args()
    interval = parse_duration(args.interval)

    work = Path(tempfile.mkdtemp(prefix="edge-agent-bench-"))
    broker_port, metrics_port, first_port = free_port(), free_port(), free_port()
    while any(not port_free(first_port + i) for i in range(args.machines)):
        first_port = free_port()
    config = write_config(work, broker_port, metrics_port, args.encoding)
    for i in range(args.machines):
        (config / "machines.d" / f"bench-{i:03d}.yaml").write_text(
            machine_file(i, first_port + i, args.signals, args.interval))

    procs: list[subprocess.Popen[bytes]] = []
    received: list[tuple[float, int, list[int]]] = []  # (arrival ns, readings, sample ts)
    lock = threading.Lock()
    measuring = threading.Event()

    def on_message(client: object, userdata: object, msg: mqtt.MQTTMessage) -> None:
        if not measuring.is_set():
            return
        now = time.time_ns()
        batch = decode(msg.payload)
        with lock:
            received.append((now, len(batch["readings"]), batch["readings"][0]["ts"]))

    client = mqtt.Client(CallbackAPIVersion.VERSION2)
    try:
        procs.append(start_broker(work))
        sim = subprocess.Popen([sys.executable, "-m", "simulators.modbus.press",
                                "--host", "127.0.0.1", "--port", str(first_port),
                                "--count", str(args.machines)],
                               cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        procs.append(sim)
        for _ in range(args.machines):
            sim.stdout.readline()  # type: ignore[union-attr]
        time.sleep(0.5)
        listen(client, broker_port, on_message)
        agent = start_warm_agent(config, work, args.warmup, procs)
        if agent is None:
            return 1
        window = measure(agent.pid, metrics_port, args.duration, measuring)
        before_metrics, after_metrics, rss_samples = window.before, window.after, window.rss
        agent.send_signal(signal.SIGTERM)
        try:
            agent.wait(60)
        except subprocess.TimeoutExpired:
            agent.send_signal(signal.SIGUSR1)  # the agent logs every task's stack
            time.sleep(1)
            print("agent did not stop on SIGTERM; its log:", work / "agent.log", file=sys.stderr)
            return 1
    finally:
        client.loop_stop()
        for proc in reversed(procs):
            terminate(proc)

    elapsed = window.elapsed
    readings = sum(n for _, n, _ in received)
    latencies = [(arrival - ts) / 1e6 for arrival, _, ts in received]
    cpu = window.cpu[agent.pid]
    polls_delta = metric_sum(after_metrics, "edge_agent_polls_total") - metric_sum(
        before_metrics, "edge_agent_polls_total")
    overruns = metric_sum(after_metrics, "edge_agent_poll_overruns_total") - metric_sum(
        before_metrics, "edge_agent_poll_overruns_total")
    requests_delta = metric_sum(after_metrics, "edge_agent_device_requests_total") - metric_sum(
        before_metrics, "edge_agent_device_requests_total")
    requests_per_poll = requests_delta / max(polls_delta, 1)
    print(f"workload            {args.machines} machines x {args.signals} signals every "
          f"{args.interval}, {args.encoding}, QoS 1, {elapsed:.1f} s measured")
    print(f"readings/s          {readings / elapsed:,.0f} delivered "
          f"(target rate {args.machines * args.signals / interval:,.0f})")
    print(f"agent CPU           {cpu:.2f} s = {cpu / elapsed * 100:.1f}% of a core, "
          f"{cpu / max(readings, 1) * 1e6:.2f} us per reading "
          f"({cpu / max(readings, 1) * 1e6 * 1000 / 1e6:.4f} CPU-s per 1,000 readings)")
    print(f"modbus requests     {requests_per_poll:.2f} per poll ({polls_delta:.0f} polls, "
          f"{overruns:.0f} overruns)")
    def quantiles(name: str) -> str:
        p50 = histogram_quantile(after_metrics, name, 0.5, before_metrics) * 1000
        p99 = histogram_quantile(after_metrics, name, 0.99, before_metrics) * 1000
        return f"p50 {p50:.2f} ms, p99 {p99:.2f} ms"

    print(f"poll lateness       {quantiles('edge_agent_poll_lateness_seconds')} "
          "(agent histogram, 1 ms buckets up to 5 ms)")
    print(f"poll duration       {quantiles('edge_agent_poll_duration_seconds')} "
          "(agent histogram: request sent to batch made, mostly the device's reply time)")
    print(f"sample->PUBACK      {quantiles('edge_agent_uplink_delivery_seconds')} "
          "(agent histogram: poll start to PUBACK)")
    print(f"sample->subscriber  p50 {percentile(latencies, 0.5):.1f} ms, p99 "
          f"{percentile(latencies, 0.99):.1f} ms (reading ts to arrival at a subscriber)")
    print(f"agent RSS           {max(rss_samples):.1f} MB max, {rss_samples[-1]:.1f} MB at end")
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
