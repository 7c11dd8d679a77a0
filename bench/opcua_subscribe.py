"""OPC UA subscription benchmark: 10,000 changing Doubles at 1 Hz -> agent -> mosquitto.

The bulk simulator (simulators/opcua/bulk.py) changes every variable once per second; the
agent subscribes to all of them in one push group and publishes through its buffer to the
real broker at QoS 1; a subscriber counts what arrives. The agent's CPU comes from /proc
(its own process only). Prints figures; asserts nothing.

    python bench/opcua_subscribe.py --variables 10000 --duration 60
"""

from __future__ import annotations

import argparse
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
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
    start_broker,
    start_warm_agent,
    write_config,
)

from agent.core.encoding import decode  # noqa: E402
from agent.cli.processes import free_port, terminate, wait_port  # noqa: E402


def machine_file(port: int, variables: int, interval: str) -> str:
    lines = ["id: bulk-01", "family: cnc", "area: bench", "line: line-1",
             "connection: {protocol: opcua, url: 'opc.tcp://127.0.0.1:%d', mode: subscribe, "
             "max_nodes_per_read: 1000}" % port,
             f"poll: {{main: {interval}}}", "signals:"]
    for i in range(variables):
        lines.append(f"  - {{name: x.bulk.v{i:05d}, node: 'nsu=urn:edge-agent:sim:bulk;s=Bulk.V{i:05d}'}}")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variables", type=int, default=10_000)
    parser.add_argument("--rate", type=float, default=1.0, help="changes per variable per second")
    parser.add_argument("--publishing", default="1s", help="publishing interval (= drain interval)")
    parser.add_argument("--duration", type=float, default=60.0, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=20.0,
                        help="seconds for connect, 10k monitored items and the first values")
    parser.add_argument("--encoding", default="json", choices=["json", "msgpack"])
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="edge-agent-bench-opcua-"))
    broker_port, metrics_port, opc_port = free_port(), free_port(), free_port()
    config = write_config(work, broker_port, metrics_port, args.encoding)
    (config / "machines.d" / "bulk.yaml").write_text(
        machine_file(opc_port, args.variables, args.publishing))

    procs: list[subprocess.Popen[bytes]] = []
    counts = {"readings": 0, "batches": 0}
    lock = threading.Lock()
    measuring = threading.Event()

    def on_message(client: object, userdata: object, msg: mqtt.MQTTMessage) -> None:
        if not measuring.is_set():
            return
        batch = decode(msg.payload)
        with lock:
            counts["readings"] += len(batch["readings"])
            counts["batches"] += 1

    client = mqtt.Client(CallbackAPIVersion.VERSION2)
    try:
        procs.append(start_broker(work))
        sim = subprocess.Popen([sys.executable, "-m", "simulators.opcua.bulk",
                                "--port", str(opc_port),
                                "--variables", str(args.variables), "--rate", str(args.rate)],
                               cwd=REPO, stdout=open(work / "sim.log", "wb"), stderr=subprocess.STDOUT)
        procs.append(sim)
        wait_port(opc_port, sim, "bulk simulator", timeout=60)
        wait_port(broker_port, procs[0], "mosquitto")
        listen(client, broker_port, on_message)
        agent = start_warm_agent(config, work, args.warmup, procs)
        if agent is None:
            return 1
        window = measure(agent.pid, metrics_port, args.duration, measuring, (sim.pid,))
        before, after, rss = window.before, window.after, window.rss
        agent.send_signal(signal.SIGTERM)
        agent.wait(60)
    finally:
        client.loop_stop()
        for proc in reversed(procs):
            terminate(proc)

    elapsed = window.elapsed
    readings = counts["readings"]
    cpu = window.cpu[agent.pid]
    agent_readings = metric_sum(after, "edge_agent_readings_total") - metric_sum(before, "edge_agent_readings_total")
    bad = metric_sum(after, "edge_agent_bad_readings_total") - metric_sum(before, "edge_agent_bad_readings_total")
    p50 = histogram_quantile(after, "edge_agent_uplink_delivery_seconds", 0.5, before) * 1000
    p99 = histogram_quantile(after, "edge_agent_uplink_delivery_seconds", 0.99, before) * 1000
    print(f"workload            {args.variables} Double variables x {args.rate:g} change/s, "
          f"publishing {args.publishing}, {args.encoding}, QoS 1, {elapsed:.1f} s measured")
    print(f"notifications/s     {readings / elapsed:,.0f} delivered to the subscriber "
          f"({agent_readings / elapsed:,.0f} made by the agent, {bad:.0f} bad; "
          f"target {args.variables * args.rate:,.0f})")
    print(f"agent CPU           {cpu:.2f} s = {cpu / elapsed * 100:.1f}% of one core; "
          f"{cpu / max(readings, 1) * 1e6:.1f} us per reading = "
          f"{cpu / max(readings, 1) * 1000 * 1000:.1f} ms CPU per 1,000 readings")
    print(f"simulator CPU       {window.cpu[sim.pid] / elapsed * 100:.1f}% of one core (not the agent's)")
    print(f"sample->PUBACK      p50 {p50:.0f} ms, p99 {p99:.0f} ms (agent histogram; includes "
          "waiting for the next publishing interval)")
    print(f"agent RSS           {max(rss):.1f} MB max, {rss[-1]:.1f} MB at end")
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
