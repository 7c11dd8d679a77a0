"""Shared RS-485 line benchmark: 8 Modbus RTU units on one virtual line at 115200 baud.

The forging simulator serves units 10..17 (`--extra-units 8`) on one pty, pacing its bytes
at the baud rate, so the line has the timing of a real one. The agent polls 50 registers of
each unit "as fast as the bus allows" (a 1 ms poll interval: every poll overruns, and the
units take turns on the line). Run twice: all units alive, then with one unit dead. Prints
polls/s per unit, bus utilisation, and what the dead unit costs the others. Asserts nothing.

    python bench/serial_bus.py --duration 20
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from _common import scrape, start_agent, write_config  # noqa: E402

from agent.cli.processes import free_port, terminate  # noqa: E402

FIRST_UNIT = 10


def machine_file(device: str, unit: int, registers: int, baud: int) -> str:
    return (f"id: unit-{unit}\nfamily: other\narea: bench\nline: rs485\n"
            f"connection: {{protocol: modbus-rtu, port: {device}, baudrate: {baud}, parity: N, "
            f"unit_id: {unit}, timeout: 100ms}}\n"
            "poll: {main: 1ms}\nsignals:\n"
            + "".join(f"  - {{name: x.r{r:03d}, address: \"hr:{r}\"}}\n" for r in range(registers)))


def counter(text: str, name: str, label: str) -> dict[str, float]:
    """Values of a counter by one label (e.g. polls by machine)."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith(name + "{") and f'{label}="' in line:
            key = line.split(f'{label}="', 1)[1].split('"', 1)[0]
            out[key] = out.get(key, 0.0) + float(line.rsplit(" ", 1)[1])
    return out


def phase(units: int, registers: int, baud: int, duration: float, dead: int | None) -> dict[str, object]:
    work = Path(tempfile.mkdtemp(prefix="edge-agent-bench-serial-"))
    metrics_port = free_port()
    config = write_config(work, free_port(), metrics_port, "json")  # no broker: buffer only
    args = [sys.executable, "-m", "simulators.modbus.forging", "--pty", "--baud", str(baud),
            "--parity", "N", "--extra-units", str(units)]
    if dead is not None:
        args += ["--dead-unit", str(dead)]
    sim = subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    procs = [sim]
    try:
        line = sim.stdout.readline().decode()  # type: ignore[union-attr]
        device = line.strip().rsplit(" ", 1)[-1]
        if not device.startswith("/dev/"):
            raise RuntimeError(f"simulator said {line!r}")
        for unit in range(FIRST_UNIT, FIRST_UNIT + units):
            (config / "machines.d" / f"unit-{unit}.yaml").write_text(
                machine_file(device, unit, registers, baud))
        agent = start_agent(config, work)
        procs.append(agent)
        time.sleep(3.0)
        before, t0 = scrape(metrics_port), time.monotonic()
        time.sleep(duration)
        after, t1 = scrape(metrics_port), time.monotonic()
    finally:
        for proc in reversed(procs):
            terminate(proc)
    elapsed = t1 - t0
    polls0, polls1 = counter(before, "edge_agent_polls_total", "machine"), counter(
        after, "edge_agent_polls_total", "machine")
    bad0, bad1 = counter(before, "edge_agent_bad_readings_total", "machine"), counter(
        after, "edge_agent_bad_readings_total", "machine")
    busy0, busy1 = counter(before, "edge_agent_bus_busy_seconds_total", "bus"), counter(
        after, "edge_agent_bus_busy_seconds_total", "bus")
    shutil.rmtree(work, ignore_errors=True)
    good_polls = {m: (polls1.get(m, 0) - polls0.get(m, 0) - (bad1.get(m, 0) - bad0.get(m, 0)) / registers)
                  / elapsed for m in polls1}
    return {"polls": good_polls, "utilisation": sum(busy1.values()) - sum(busy0.values()),
            "elapsed": elapsed}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--units", type=int, default=8)
    parser.add_argument("--registers", type=int, default=50)
    parser.add_argument("--baud", type=int, default=115200)
    parser.add_argument("--duration", type=float, default=20.0, help="measured seconds per phase")
    args = parser.parse_args()
    dead = FIRST_UNIT + args.units - 1
    # One request: 8 bytes out, 5 + 2 * registers back, at 10 bits per character (8N1).
    line_time = (8 + 5 + 2 * args.registers) * 10 / args.baud
    print(f"workload            {args.units} units x {args.registers} registers on one line at "
          f"{args.baud} baud; one request+reply is {line_time * 1000:.2f} ms of line time, "
          f"so the line carries at most {1 / line_time:.0f} polls/s in all")
    results = {}
    for name, dead_unit in (("all alive", None), (f"unit {dead} dead", dead)):
        r = results[name] = phase(args.units, args.registers, args.baud, args.duration, dead_unit)
        polls: dict[str, float] = r["polls"]  # type: ignore[assignment]
        utilisation = float(r["utilisation"]) / float(r["elapsed"])  # type: ignore[arg-type]
        alive = {m: p for m, p in polls.items() if m != f"unit-{dead_unit}"}
        print(f"{name:<19} polls/s per unit: "
              + ", ".join(f"{m.removeprefix('unit-')}: {p:.1f}" for m, p in sorted(polls.items()))
              + f"; total {sum(alive.values()):.1f} good polls/s; bus busy {utilisation * 100:.0f}%")
    before = results["all alive"]["polls"]  # type: ignore[index]
    after = results[f"unit {dead} dead"]["polls"]  # type: ignore[index]
    others = [m for m in before if m != f"unit-{dead}"]
    mean_before = sum(before[m] for m in others) / len(others)  # type: ignore[index]
    mean_after = sum(after[m] for m in others) / len(others)  # type: ignore[index]
    print(f"dead unit's cost    the other {len(others)} units: {mean_before:.1f} -> "
          f"{mean_after:.1f} polls/s each ({(mean_after / mean_before - 1) * 100:+.1f}%)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
