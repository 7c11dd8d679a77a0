"""Helpers shared by the benchmarks: process CPU and RSS from /proc, Prometheus text."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parent.parent

CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _buckets(text: str, name: str) -> dict[float, float]:
    buckets: dict[float, float] = {}
    for line in text.splitlines():
        if line.startswith(name + "_bucket{"):
            le = line.split('le="', 1)[1].split('"', 1)[0]
            bound = float("inf") if le == "+Inf" else float(le)
            buckets[bound] = buckets.get(bound, 0.0) + float(line.rsplit(" ", 1)[1])
    return buckets


def histogram_quantile(after: str, name: str, q: float, before: str = "") -> float:
    """Quantile of a Prometheus histogram (summed over labels; the part observed between
    the `before` and `after` scrapes), linear within a bucket."""
    start = _buckets(before, name)
    buckets = {b: n - start.get(b, 0.0) for b, n in _buckets(after, name).items()}
    if not buckets:
        return float("nan")
    bounds = sorted(buckets)
    total = buckets[bounds[-1]]
    target, prev_bound, prev_count = q * total, 0.0, 0.0
    for bound in bounds:
        if buckets[bound] >= target:
            if bound == float("inf"):
                return prev_bound
            span = buckets[bound] - prev_count
            frac = (target - prev_count) / span if span else 0.0
            return prev_bound + frac * (bound - prev_bound)
        prev_bound, prev_count = bound, buckets[bound]
    return bounds[-1]


def metric_sum(text: str, name: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name + "{") or line.startswith(name + " "))


def port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def write_config(work: Path, broker_port: int, metrics_port: int, encoding: str) -> Path:
    """mosquitto.conf and the agent's config folder (machines.d empty) under `work`."""
    (work / "mosquitto.conf").write_text(
        f"listener {broker_port} 127.0.0.1\nallow_anonymous true\nmax_queued_messages 0\n"
        "set_tcp_nodelay true\n")
    config = work / "config"
    (config / "machines.d").mkdir(parents=True)
    (config / "agent.yaml").write_text(
        "agent: {id: bench, site: bench}\n"
        f"mqtt: {{url: 'mqtt://127.0.0.1:{broker_port}', encoding: {encoding}, max_inflight: 256}}\n"
        "buffer: {path: buffer.db, max_bytes: 1GiB, commit_interval: 50ms}\n"
        f"metrics: {{listen: '127.0.0.1:{metrics_port}'}}\n"
        "logging: {level: info, format: json}\n")
    return config


def start_broker(work: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen([shutil.which("mosquitto") or "/usr/sbin/mosquitto", "-c",
                             str(work / "mosquitto.conf")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def start_agent(config: Path, work: Path) -> subprocess.Popen[bytes]:
    """The agent in its own process; its log goes to work/agent.log."""
    with open(work / "agent.log", "wb") as log:
        return subprocess.Popen([sys.executable, "-m", "agent", "run", "-c", str(config),
                                 "--state-dir", str(work / "state")], cwd=REPO,
                                stdout=log, stderr=subprocess.STDOUT)


def listen(client: Any, broker_port: int, on_message: Callable[..., None]) -> None:
    """Have `client` receive every telemetry batch of the benchmark's machines."""
    client.on_message = on_message
    client.connect("127.0.0.1", broker_port)
    client.subscribe("factory/bench/+/+/+/telemetry", qos=1)
    client.loop_start()


def start_warm_agent(config: Path, work: Path, warmup: float,
                     procs: list[subprocess.Popen[bytes]]) -> subprocess.Popen[bytes] | None:
    """The agent, after `warmup` seconds; None (having said why) if it exited meanwhile."""
    agent = start_agent(config, work)
    procs.append(agent)
    time.sleep(warmup)
    if agent.poll() is not None:
        print("agent exited; see", work / "agent.log", file=sys.stderr)
        return None
    return agent


def scrape(metrics_port: int) -> str:
    return urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read().decode()


@dataclass
class Window:
    """What one measured window of a running agent saw."""

    before: str  # metrics text at the start
    after: str  # and at the end
    elapsed: float
    cpu: dict[int, float]  # CPU seconds used in the window, by pid
    rss: list[float]  # the agent's RSS, MB, once a second


def measure(agent_pid: int, metrics_port: int, duration: float, on: threading.Event,
            other_pids: tuple[int, ...] = ()) -> Window:
    """Scrape, then sample CPU and RSS for `duration` seconds with `on` set, scrape again."""
    pids = (agent_pid, *other_pids)
    before = scrape(metrics_port)
    cpu0, t0 = {p: cpu_seconds(p) for p in pids}, time.monotonic()
    on.set()
    rss = []
    while time.monotonic() - t0 < duration:
        time.sleep(1.0)
        rss.append(rss_mb(agent_pid))
    on.clear()
    cpu1, t1 = {p: cpu_seconds(p) for p in pids}, time.monotonic()
    return Window(before, scrape(metrics_port), t1 - t0,
                  {p: cpu1[p] - cpu0[p] for p in pids}, rss)
