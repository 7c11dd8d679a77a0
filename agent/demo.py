"""`edge-agent demo`: simulators (press, CNC, injection moulding, a forging line on a serial
bus, a tonnage monitor and a temperature controller) + local mosquitto + agent + live
readings, one command."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from agent.encoding import decode
from agent.local_processes import free_port, terminate, wait_port


def examples_dir() -> Path:
    """The example config folder: in a source checkout, or as installed with the package."""
    for candidate in (Path(__file__).resolve().parent.parent / "config" / "examples",
                      Path(sys.prefix) / "share" / "edge-agent" / "examples"):
        if (candidate / "agent.yaml").is_file():
            return candidate
    raise FileNotFoundError("the example config folder is not installed")


KEY_SIGNALS = ("machine.execution.code", "cycle.count", "press.crank_angle",
               "press.force.total_peak", "motor.current", "program.name",
               "spindle.speed.actual", "part_count.good", "cycle.time", "imm.cushion",
               "imm.injection_pressure.peak", "temperature.barrel.zone1",
               "forging.force.peak", "forging.blow_energy", "temperature.billet_exit",
               "billet.weight", "press.stroke_count", "temperature.zone1")
# Network simulators: (module, machine file, text of the example's address, options).
NETWORK_SIMULATORS: tuple[tuple[str, str, str, list[str]], ...] = (
    ("simulators.press", "press.yaml", "port: 5020", []),
    ("simulators.cnc", "cnc.yaml", "127.0.0.1:4840", ["--time-scale", "4"]),
    ("simulators.injection", "injection.yaml", "127.0.0.1:4841", ["--time-scale", "3"]),
)
# Serial simulators on a pty each: (arguments, machine files, the example's port).
SERIAL_SIMULATORS: tuple[tuple[list[str], list[str], str], ...] = (
    (["simulators.forging", "--pty", "--parity", "N", "--time-scale", "2"],
     ["forging-press.yaml", "forging-heater.yaml", "forging-scale.yaml"], "/dev/ttyUSB0"),
    (["simulators.serial_ascii", "tonnage", "--pty"], ["tonnage.yaml"], "/dev/ttyUSB1"),
    (["simulators.serial_ascii", "tempctl", "--pty"], ["tempctl.yaml"], "/dev/ttyUSB2"),
)


def _listening_on(proc: subprocess.Popen[bytes]) -> str:
    """The device a pty simulator announces; its later output is drained in a thread."""
    line = proc.stdout.readline().decode(errors="replace").strip()  # type: ignore[union-attr]
    if " listening on " not in line:
        raise RuntimeError(f"simulator did not start: {line!r}")
    threading.Thread(target=proc.stdout.read, daemon=True).start()  # type: ignore[union-attr]
    return line.rsplit(" ", 1)[1]


def _format(batch: dict[str, Any]) -> str | None:
    values = {r["signal"]: r for r in batch["readings"]}
    parts = []
    for name in KEY_SIGNALS:
        r = values.get(name)
        if r is None:
            continue
        value = r["value"]
        shown = f"{value:.1f}" if isinstance(value, float) else str(value)
        parts.append(f"{name}={shown}{r.get('unit', '') or ''}" if r["quality"] == "good"
                     else f"{name}=<{r.get('reason')}>")
    if not parts:
        return None
    return f"{batch['machine']} seq={batch['seq']:<6} " + "  ".join(parts)


def run_demo(duration: float | None) -> int:
    """Run everything on loopback until Ctrl-C (or `duration` seconds); print a summary."""
    broker_bin = shutil.which("mosquitto") or ("/usr/sbin/mosquitto"
                                               if Path("/usr/sbin/mosquitto").exists() else None)
    if broker_bin is None:
        print("edge-agent demo: needs the mosquitto broker (apt-get install mosquitto)",
              file=sys.stderr)
        return 1
    work = Path(tempfile.mkdtemp(prefix="edge-agent-demo-"))
    broker_port = free_port()
    (work / "mosquitto.conf").write_text(
        f"listener {broker_port} 127.0.0.1\nallow_anonymous true\nset_tcp_nodelay true\n")
    config = work / "config"
    shutil.copytree(examples_dir(), config)
    agent_yaml = config / "agent.yaml"
    agent_yaml.write_text(agent_yaml.read_text()
                          .replace("127.0.0.1:1883", f"127.0.0.1:{broker_port}")
                          .replace('listen: "127.0.0.1:9108"', "listen: null")
                          .replace("format: auto", "format: json"))
    sim_ports = {}
    for module, machine_file, address, _ in NETWORK_SIMULATORS:
        port = sim_ports[module] = free_port()
        path = config / "machines.d" / machine_file
        new = f"port: {port}" if address.startswith("port") else f"127.0.0.1:{port}"
        path.write_text(path.read_text().replace(address, new))

    procs: list[subprocess.Popen[bytes]] = []
    received = {"batches": 0, "readings": 0, "bad": 0}
    lock = threading.Lock()
    client = mqtt.Client(CallbackAPIVersion.VERSION2)
    try:
        procs.append(subprocess.Popen([broker_bin, "-c", str(work / "mosquitto.conf")],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        wait_port(broker_port, procs[-1], "mosquitto")
        for module, _, _, extra in NETWORK_SIMULATORS:
            procs.append(subprocess.Popen([sys.executable, "-m", module, "--port",
                                           str(sim_ports[module]), *extra],
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        for (module, _, _, _), proc in zip(NETWORK_SIMULATORS, procs[1:]):
            wait_port(sim_ports[module], proc, module, timeout=30)
        devices = []
        for args, files, example_port in SERIAL_SIMULATORS:
            proc = subprocess.Popen([sys.executable, "-m", *args], stdout=subprocess.PIPE,
                                    stderr=subprocess.DEVNULL)
            procs.append(proc)
            device = _listening_on(proc)  # "<kind> listening on /dev/pts/N"
            devices.append(device)
            for name in files:
                path = config / "machines.d" / name
                path.write_text(path.read_text().replace(example_port, device))
        agent_log = open(work / "agent.log", "wb")
        procs.append(subprocess.Popen([sys.executable, "-m", "agent", "run", "-c", str(config),
                                       "--state-dir", str(work / "state")],
                                      stdout=agent_log, stderr=subprocess.STDOUT,
                                      env={**os.environ, "PYTHONUNBUFFERED": "1"}))

        last_shown: dict[str, float] = {}

        def on_message(c: Any, u: Any, msg: Any) -> None:
            try:
                batch = decode(msg.payload)
            except ValueError:
                return
            if "events" in batch:
                for event in batch["events"]:
                    print(time.strftime("%H:%M:%S"), f"{batch['machine']} event {event['event']}:",
                          json.dumps(event["fields"], default=str)[:160], flush=True)
                return
            with lock:
                received["batches"] += 1
                received["readings"] += len(batch["readings"])
                received["bad"] += sum(r["quality"] != "good" for r in batch["readings"])
                now = time.monotonic()
                line = _format(batch)
                show = line is not None and now - last_shown.get(batch["machine"], 0.0) >= 1.0
                if show:
                    last_shown[batch["machine"]] = now  # one line per second per machine
            if show:
                print(time.strftime("%H:%M:%S"), line, flush=True)

        client.on_message = on_message
        client.on_connect = lambda c, u, f, rc, p: c.subscribe(
            [("factory/+/+/+/+/telemetry", 1), ("factory/+/+/+/+/event", 1)])
        client.connect("127.0.0.1", broker_port)
        client.loop_start()
        sims = ", ".join([f"{m.rsplit('.', 1)[1]} on 127.0.0.1:{p}" for m, p in sim_ports.items()]
                         + [f"{a[0].rsplit('.', 1)[1]} {a[1] if a[1] != '--pty' else ''} on {d}"
                            .replace("  ", " ") for (a, _, _), d in zip(SERIAL_SIMULATORS, devices)])
        print(f"demo: simulators {sims}; mosquitto on 127.0.0.1:{broker_port}; agent state in "
              f"{work}; Ctrl-C to stop", flush=True)
        started = time.monotonic()
        try:
            while duration is None or time.monotonic() - started < duration:
                if procs[-1].poll() is not None:
                    print("demo: the agent exited; see", work / "agent.log", file=sys.stderr)
                    return 1
                time.sleep(0.2)
        except KeyboardInterrupt:
            pass
        elapsed = time.monotonic() - started
        procs[-1].send_signal(signal.SIGTERM)
        procs[-1].wait(30)
        time.sleep(0.3)
        with lock:
            print(f"demo: {received['batches']} batches, {received['readings']} readings "
                  f"({received['readings'] / max(elapsed, 1e-9):.0f}/s), {received['bad']} bad; "
                  f"agent exit code {procs[-1].returncode}")
        if received["batches"]:
            shutil.rmtree(work, ignore_errors=True)
            return 0
        print("demo: nothing arrived; see", work / "agent.log", file=sys.stderr)
        return 1
    finally:
        client.loop_stop()
        for proc in reversed(procs):
            terminate(proc)
