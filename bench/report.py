"""Run every benchmark one after another and write bench/RESULTS.md: each figure, its
target, pass or miss, the machine, the date and the exact command of each row.

    python bench/report.py                 # modest durations (about 6 minutes)
    python bench/report.py --quick         # shorter runs (about 3 minutes)
    python bench/report.py --duration 60   # measured seconds passed to every benchmark
    python bench/report.py --outage 600    # also: RSS across a 600 s broker outage
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import os
import platform
import re
import shlex
import shutil
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
PACKAGES = ("asyncua", "pymodbus", "paho-mqtt", "protobuf", "pydantic", "edge-agent")


@dataclass
class Run:
    """One benchmark process: its arguments, its output, how long it took."""

    name: str
    args: list[str]
    timeout: float
    stdout: str = ""
    stderr: str = ""
    rc: int | None = None
    seconds: float = 0.0

    @property
    def command(self) -> str:
        return "python " + shlex.join([f"bench/{self.name}.py", *self.args])


@dataclass
class Row:
    figure: str
    value: str
    target: str
    status: str  # pass, MISS, info, not run, not measured
    run: Run | None
    notes: str = ""


@dataclass
class Report:
    runs: dict[str, Run] = field(default_factory=dict)
    rows: list[Row] = field(default_factory=list)


def number(text: str, pattern: str) -> float | None:
    """The first group of `pattern` in `text` as a float (thousands separators allowed)."""
    match = re.search(pattern, text, re.MULTILINE)
    return float(match.group(1).replace(",", "")) if match else None


def execute(run: Run) -> None:
    print(f"$ {run.command}", flush=True)
    t0 = time.monotonic()
    try:
        done = subprocess.run([sys.executable, str(BENCH / f"{run.name}.py"), *run.args],
                              cwd=REPO, capture_output=True, text=True, timeout=run.timeout)
        run.stdout, run.stderr, run.rc = done.stdout, done.stderr, done.returncode
    except subprocess.TimeoutExpired as exc:
        run.stdout = exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        run.stderr = f"timed out after {run.timeout:.0f} s"
    run.seconds = time.monotonic() - t0
    print(run.stdout, end="", flush=True)
    if run.rc != 0:
        print(f"  exit {run.rc}: {run.stderr.strip()[-2000:]}", flush=True)


def check(value: float | None, ok: Callable[[float], bool]) -> str:
    if value is None:
        return "not run"
    return "pass" if ok(value) else "MISS"


def fmt(value: float | None, spec: str, unit: str = "") -> str:
    return "n/a" if value is None else f"{value:{spec}}{unit}"


def rows_of(report: Report) -> None:
    add = report.rows.append
    runs = report.runs

    mp = runs.get("modbus_pipeline")
    if mp is not None:
        out = mp.stdout
        rate = number(out, r"^readings/s\s+([\d,.]+) delivered")
        cpu = number(out, r"([\d.]+) us per reading")
        late = number(out, r"^poll lateness\s+p50 [\d.]+ ms, p99 ([\d.]+) ms")
        puback = number(out, r"^sample->PUBACK\s+p50 [\d.]+ ms, p99 ([\d.]+) ms")
        puback50 = number(out, r"^sample->PUBACK\s+p50 ([\d.]+) ms")
        sub = number(out, r"^sample->subscriber\s+p50 [\d.]+ ms, p99 ([\d.]+) ms")
        rss = number(out, r"^agent RSS\s+([\d.]+) MB max")
        add(Row("Modbus end-to-end readings/s (100 machines x 100 signals @ 1 s, QoS 1)",
                fmt(rate, ",.0f"), "10,000/s (>= 9,900 delivered)",
                check(rate, lambda v: v >= 9_900), mp))
        add(Row("Agent CPU per Modbus reading", fmt(cpu, ".2f", " us"), "<= 10 us",
                check(cpu, lambda v: v <= 10), mp))
        add(Row("Poll lateness p99", fmt(late, ".2f", " ms"), "<= 5 ms",
                check(late, lambda v: v <= 5), mp))
        add(Row("Sample->PUBACK p99 (agent histogram)", fmt(puback, ".1f", " ms"), "<= 100 ms",
                check(puback, lambda v: v <= 100), mp, f"p50 {fmt(puback50, '.1f', ' ms')}"))
        add(Row("Sample->subscriber p99 (reading ts to arrival)", fmt(sub, ".1f", " ms"), "-",
                "info" if sub is not None else "not run", mp))
        add(Row("Agent RSS at 10k tags (modbus pipeline, max)", fmt(rss, ".1f", " MB"),
                "<= 100 MB", check(rss, lambda v: v <= 100), mp))

    dec = runs.get("modbus_decode")
    if dec is not None:
        tags = number(dec.stdout, r"^tags/s decode\+normalize\s+([\d,.]+) per CPU-second")
        us = number(dec.stdout, r"^us per tag\s+([\d.]+)")
        add(Row("Modbus tags/s decoded + normalized, one core (1,000 mixed signals)",
                fmt(tags, ",.0f"), ">= 100,000/s", check(tags, lambda v: v >= 100_000), dec,
                f"{fmt(us, '.2f', ' us')} per tag (CPU time)"))

    dr = runs.get("backlog_drain")
    if dr is not None:
        out = dr.stdout
        rate = number(out, r"^backlog drain readings/s\s+([\d,.]+)")
        net = number(out, r"^net drain\s+([\d,.]+) readings/s")
        size = number(out, r"backlog ([\d,]+) readings in")
        m = re.search(r"^agent RSS outage\s+([\d.]+) MB at start, ([\d.]+) MB after (\d+) s, "
                      r"([\d.]+) MB max", out, re.MULTILINE)
        add(Row("Backlog drain readings/s (acknowledged while draining)", fmt(rate, ",.0f"),
                ">= 100,000/s", check(rate, lambda v: v >= 100_000), dr,
                f"backlog {fmt(size, ',.0f')} readings; net {fmt(net, ',.0f')}/s while "
                "10,000/s new readings keep coming"))
        if m:
            add(Row(f"Agent RSS across the drain benchmark's {m.group(3)} s outage",
                    f"{m.group(1)} -> {m.group(2)} MB (max {m.group(4)})", "flat", "info", dr,
                    "short outage; see the 600 s row"))

    out_run = runs.get("backlog_drain (outage)")
    if out_run is None:
        add(Row("Agent RSS flat across a broker outage", "not measured by default", "flat",
                "not measured", None, "`python bench/report.py --outage 600` measures it"))
    else:
        m = re.search(r"^agent RSS outage\s+([\d.]+) MB at start, ([\d.]+) MB after (\d+) s, "
                      r"([\d.]+) MB max", out_run.stdout, re.MULTILINE)
        if m:
            growth = float(m.group(2)) - float(m.group(1))
            add(Row(f"Agent RSS across a {m.group(3)} s broker outage",
                    f"{m.group(1)} -> {m.group(2)} MB (max {m.group(4)})",
                    "flat (growth <= 5 MB)", "pass" if growth <= 5 else "MISS", out_run))
        else:
            add(Row("Agent RSS across a broker outage", "n/a", "flat", "not run", out_run))

    op = runs.get("opcua_subscribe")
    if op is not None:
        out = op.stdout
        rate = number(out, r"^notifications/s\s+([\d,.]+) delivered")
        cpu = number(out, r"^agent CPU\s+[\d.]+ s = ([\d.]+)% of one core")
        p99 = number(out, r"^sample->PUBACK\s+p50 \d+ ms, p99 (\d+) ms")
        rss = number(out, r"^agent RSS\s+([\d.]+) MB max")
        add(Row("OPC UA notifications/s delivered (10,000 Doubles @ 1 Hz)", fmt(rate, ",.0f"),
                "10,000/s (>= 9,900 delivered)", check(rate, lambda v: v >= 9_900), op))
        add(Row("OPC UA agent CPU", fmt(cpu, ".1f", "% of a core"), "<= 25%",
                check(cpu, lambda v: v <= 25), op))
        add(Row("OPC UA sample->PUBACK p99", fmt(p99, ".0f", " ms"), "-",
                "info" if p99 is not None else "not run", op,
                "includes waiting for the 1 s publishing interval"))
        # 10k tags as monitored items: the same RSS target as the Modbus pipeline's 10k tags.
        add(Row("OPC UA agent RSS at 10k tags (10k monitored items, max)",
                fmt(rss, ".1f", " MB"), "<= 100 MB",
                check(rss, lambda v: v <= 100), op))

    sb = runs.get("serial_bus")
    if sb is not None:
        for phase in ("all alive", r"unit \d+ dead"):
            m = re.search(rf"^({phase})\s+polls/s per unit: .*; total ([\d.]+) good polls/s; "
                          r"bus busy (\d+)%", sb.stdout, re.MULTILINE)
            add(Row(f"Serial RTU bus, 8 units @ 115200 baud: {m.group(1) if m else phase}",
                    f"{m.group(2)} good polls/s, bus busy {m.group(3)}%" if m else "n/a",
                    "- (line limit about 80 polls/s)", "info" if m else "not run", sb))


    fl = runs.get("inbound_flood")
    if fl is not None:
        out = fl.stdout
        for agent in ("uns", "spb"):
            skipped = number(out, rf"^{agent} agent skipped polls (\d+) in the flood")
            quiet = number(out, rf"^{agent} agent skipped polls \d+ in the flood \((\d+) in")
            m = re.search(rf"^{agent} agent RSS ([\d.]+) MB at the flood's start, ([\d.]+) MB "
                          r"max", out, re.MULTILINE)
            health = re.search(rf"^{agent} agent /healthz (.*)$", out, re.MULTILINE)
            lag = number(out, rf"^{agent} agent event-loop lag p99 ([\d.]+) ms")
            label = "uns + write-back" if agent == "uns" else "Sparkplug + DCMD"
            add(Row(f"Inbound flood soak ({label}): polls skipped during the flood",
                    fmt(skipped, ".0f"), "0 (no more than before it)",
                    check(skipped, lambda v, q=quiet: v <= (q or 0)), fl,
                    f"{fmt(quiet, '.0f')} in the quiet window before it"))
            growth = float(m.group(2)) - float(m.group(1)) if m else None
            add(Row(f"Inbound flood soak ({label}): RSS growth",
                    f"{m.group(1)} -> {m.group(2)} MB max" if m else "n/a", "<= 10 MB",
                    check(growth, lambda v: v <= 10), fl))
            ok = bool(health) and set(re.findall(r"(\S+) x\d+", health.group(1))) == {"200"}
            add(Row(f"Inbound flood soak ({label}): /healthz during the flood",
                    health.group(1) if health else "n/a", "200 throughout",
                    ("pass" if ok else "MISS") if health else "not run", fl,
                    f"event-loop lag p99 {fmt(lag, '.1f', ' ms')}"))


def machine() -> list[str]:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ram = "unknown"
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                ram = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    except OSError:
        pass
    versions = []
    for name in PACKAGES:
        try:
            versions.append(f"{name} {importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            versions.append(f"{name} (not installed)")
    mosquitto = "not found"
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if Path(binary).exists():
        first = subprocess.run([binary, "-h"], capture_output=True, text=True).stdout
        mosquitto = first.splitlines()[0] if first else "unknown version"
    load = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    return [
        f"- CPU: {os.cpu_count()} cores, {model}",
        f"- RAM: {ram}",
        f"- OS: {platform.platform()}",
        f"- Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}, {mosquitto}",
        f"- Packages: {', '.join(versions)}",
        f"- Load average (1/5/15 min) when the report started: {load}",
    ]


def write(report: Report, path: Path, header: list[str], started: datetime.datetime,
          quick: bool, argv: list[str]) -> None:
    lines = [
        "# Benchmark results",
        "",
        f"Generated by `python bench/report.py{(' ' + shlex.join(argv)) if argv else ''}` on "
        f"{started:%Y-%m-%d %H:%M} (local time); "
        f"{'**--quick** (shortened runs)' if quick else 'default durations'}. "
        "Each benchmark ran once, one after another, each in its own processes.",
        "",
        "**These figures are noisy.** The machine has few cores and was shared with other work "
        "while they ran; the simulators, mosquitto and the subscriber compete with the agent "
        "for the same cores. Rates that are set by the workload (readings/s, notifications/s) "
        "are stable; CPU per reading, latency percentiles and the maximum-throughput figures "
        "vary between runs by 10-30% or more. Compare runs on a quiet machine before drawing "
        "conclusions from a small difference.",
        "",
        "## Machine",
        "",
        *header,
        "",
        "## Figures",
        "",
        "| figure | measured | target | result | notes | command |",
        "|---|---|---|---|---|---|",
    ]
    for row in report.rows:
        status = f"**{row.status}**" if row.status == "MISS" else row.status
        command = f"`{row.run.command}`" if row.run else "-"
        lines.append(f"| {row.figure} | {row.value} | {row.target} | {status} | "
                     f"{row.notes} | {command} |")
    lines += ["", "## Raw output", ""]
    for run in report.runs.values():
        lines += [f"### {run.name}", "", f"`{run.command}` ({run.seconds:.0f} s, exit {run.rc})",
                  "", "```", run.stdout.rstrip()]
        if run.rc != 0 and run.stderr.strip():
            lines += ["--- stderr (tail) ---", run.stderr.strip()[-1500:]]
        lines += ["```", ""]
    path.write_text("\n".join(lines))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="shorter runs (smoke test)")
    parser.add_argument("--duration", type=float, default=None,
                        help="measured seconds for every benchmark (serial: per phase)")
    parser.add_argument("--outage", type=float, default=0.0,
                        help="also run a broker outage of this many seconds and report RSS")
    parser.add_argument("--output", type=Path, default=BENCH / "RESULTS.md")
    args = parser.parse_args()
    started = datetime.datetime.now()
    header = machine()

    d = args.duration
    pipeline = d or (15.0 if args.quick else 30.0)
    opcua = d or (15.0 if args.quick else 30.0)
    serial = d or (8.0 if args.quick else 15.0)
    decode = d or (3.0 if args.quick else 10.0)
    backlog = "100000" if args.quick else "300000"
    runs = [
        Run("modbus_pipeline", ["--machines", "100", "--signals", "100", "--interval", "1s",
                                "--duration", f"{pipeline:g}"], pipeline + 120),
        Run("opcua_subscribe", ["--variables", "10000", "--duration", f"{opcua:g}"], opcua + 240),
        Run("serial_bus", ["--duration", f"{serial:g}"], 2 * serial + 120),
        Run("modbus_decode", ["--signals", "1000", "--duration", f"{decode:g}"], decode + 60),
        Run("backlog_drain", ["--machines", "100", "--signals", "100", "--backlog", backlog],
            300),
        Run("inbound_flood", ["--duration", f"{d or (20.0 if args.quick else 60.0):g}"], 400),
    ]
    if args.outage > 0:
        outage = Run("backlog_drain", ["--machines", "100", "--signals", "100", "--backlog", "0",
                                       "--fill", f"{args.outage:g}"], args.outage + 300)
        runs.append(outage)
    report = Report()
    for run in runs:
        execute(run)
        key = run.name if run.name not in report.runs else f"{run.name} (outage)"
        report.runs[key] = run
    rows_of(report)
    write(report, args.output, header, started, args.quick, sys.argv[1:])
    print(f"wrote {args.output}")
    misses = [r.figure for r in report.rows if r.status == "MISS"]
    if misses:
        print("missed:", "; ".join(misses))
    return 0


if __name__ == "__main__":
    sys.exit(main())
