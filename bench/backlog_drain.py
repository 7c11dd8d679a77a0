"""Backlog drain benchmark: fill the buffer while the broker is down, then measure how fast
the agent empties it once the broker is up.

N press simulators in one process, the agent in its own; mosquitto is configured but not
started, so every batch piles up in the agent's SQLite buffer until it holds at least
`--backlog` readings (or `--fill` seconds passed). Then mosquitto starts and the agent's
metrics are scraped every 0.1 s every 20 ms until the buffer is back to its steady state. Polling goes
on throughout (the drain competes with 10,000 new readings/s at the defaults). Prints
figures; asserts nothing.

    python bench/backlog_drain.py --machines 100 --signals 100 --backlog 300000
"""

from __future__ import annotations

import argparse
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from _common import (  # noqa: E402
    metric_sum,
    port_free,
    rss_mb,
    scrape,
    start_broker,
    start_warm_agent,
    write_config,
)
from modbus_pipeline import machine_file  # noqa: E402

from agent.cli.processes import free_port, terminate, wait_port  # noqa: E402


def backlog(db: Path) -> tuple[int, int]:
    """(batches, readings) committed in the buffer, read straight from its SQLite file."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        batches, readings = conn.execute(
            "SELECT COUNT(*), COALESCE(SUM(readings), 0) FROM batches").fetchone()
    finally:
        conn.close()
    return int(batches), int(readings)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--machines", type=int, default=100)
    parser.add_argument("--signals", type=int, default=100)
    parser.add_argument("--interval", default="1s")
    parser.add_argument("--backlog", type=int, default=300_000,
                        help="readings to accumulate before the broker starts")
    parser.add_argument("--fill", type=float, default=60.0,
                        help="most seconds of broker outage (with --backlog 0: exactly this; "
                        "a long one shows whether RSS stays flat across an outage)")
    parser.add_argument("--warmup", type=float, default=5.0)
    parser.add_argument("--timeout", type=float, default=120.0, help="most seconds to drain")
    parser.add_argument("--encoding", default="json", choices=["json", "msgpack"])
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="edge-agent-bench-drain-"))
    broker_port, metrics_port, first_port = free_port(), free_port(), free_port()
    while any(not port_free(first_port + i) for i in range(args.machines)):
        first_port = free_port()
    config = write_config(work, broker_port, metrics_port, args.encoding)
    agent_yaml = config / "agent.yaml"
    # Reconnect quickly once the broker is back (the default backoff grows to 30 s).
    agent_yaml.write_text(agent_yaml.read_text().replace(
        "max_inflight: 256}", "max_inflight: 256, reconnect_min: 100ms, reconnect_max: 500ms}"))
    for i in range(args.machines):
        (config / "machines.d" / f"bench-{i:03d}.yaml").write_text(
            machine_file(i, first_port + i, args.signals, args.interval))
    db = work / "state" / "buffer.db"

    procs: list[subprocess.Popen[bytes]] = []
    try:
        sim = subprocess.Popen([sys.executable, "-m", "simulators.modbus.press",
                                "--host", "127.0.0.1", "--port", str(first_port),
                                "--count", str(args.machines)],
                               cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        procs.append(sim)
        for _ in range(args.machines):
            sim.stdout.readline()  # type: ignore[union-attr]
        agent = start_warm_agent(config, work, args.warmup, procs)
        if agent is None:
            return 1

        # Outage: the broker is down, batches pile up in the buffer.
        rss_start = rss_mb(agent.pid)
        rss_max = rss_start
        t_fill = time.monotonic()
        batches, readings = backlog(db)
        while time.monotonic() - t_fill < args.fill and (args.backlog <= 0 or readings < args.backlog):
            time.sleep(1.0)
            rss_max = max(rss_max, rss_mb(agent.pid))
            batches, readings = backlog(db)
        outage = time.monotonic() - t_fill
        rss_end = rss_mb(agent.pid)
        if agent.poll() is not None:
            print("agent exited; see", work / "agent.log", file=sys.stderr)
            return 1
        per_batch = readings / max(batches, 1)
        filled = scrape(metrics_port)

        # The broker comes back: scrape until the backlog is gone.
        broker = start_broker(work)
        procs.append(broker)
        t_broker = time.monotonic()
        wait_port(broker_port, broker, "mosquitto")
        t_ready = time.monotonic()
        acked0 = metric_sum(filled, "edge_agent_uplink_acked_total")
        steady = 2 * args.machines  # batches normally waiting: those of about one commit or two
        # The drain starts at the last scrape that saw no acknowledgement yet (or when the
        # broker's port opened) and ends at the first one that sees the backlog gone: both
        # err towards a longer drain, by at most one scrape interval each.
        t_start = t_ready
        samples: list[tuple[float, float, float]] = []  # (t, buffer batches, acked)
        while time.monotonic() - t_broker < args.timeout:
            text = scrape(metrics_port)
            now = time.monotonic()
            waiting = metric_sum(text, "edge_agent_buffer_batches")
            acked = metric_sum(text, "edge_agent_uplink_acked_total")
            samples.append((now, waiting, acked))
            if acked == acked0:
                t_start = now
            elif waiting <= steady:
                break
            time.sleep(0.02)
        t_empty, waiting_end, acked_end = samples[-1]
        agent.send_signal(signal.SIGTERM)
        try:
            agent.wait(60)
        except subprocess.TimeoutExpired:
            print("agent did not stop on SIGTERM; its log:", work / "agent.log", file=sys.stderr)
            return 1
    finally:
        for proc in reversed(procs):
            terminate(proc)

    drained = t_empty - t_start
    acked_readings = (acked_end - acked0) * per_batch
    print(f"workload            {args.machines} machines x {args.signals} signals every "
          f"{args.interval}, {args.encoding}, QoS 1, max_inflight 256; polling continues "
          "while draining")
    print(f"outage              {outage:.1f} s: backlog {readings:,} readings in {batches:,} "
          f"batches ({per_batch:.1f} readings per batch)")
    print(f"reconnect           first PUBACK within {t_start - t_broker + 0.02:.2f} s of starting "
          f"the broker (port open after {t_ready - t_broker:.2f} s; reconnect backoff 100-500 ms)")
    if waiting_end > steady:
        print(f"drain               NOT finished within {args.timeout:.0f} s "
              f"({waiting_end:.0f} batches still waiting)")
    print(f"backlog drain readings/s  {acked_readings / max(drained, 1e-9):,.0f} acknowledged "
          f"while draining ({acked_end - acked0:,.0f} batches in {drained:.2f} s, "
          "new polls included)")
    print(f"net drain           {readings / max(drained, 1e-9):,.0f} readings/s (backlog of "
          f"{readings:,} gone in {drained:.2f} s despite the new ones)")
    print(f"agent RSS outage    {rss_start:.1f} MB at start, {rss_end:.1f} MB after "
          f"{outage:.0f} s, {rss_max:.1f} MB max")
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
