"""`edge-agent demo`: press simulator + local mosquitto + agent + live readings, one command."""

from __future__ import annotations

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
               "press.force.total_peak", "motor.current")


def _format(batch: dict[str, Any]) -> str:
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
    broker_port, press_port = free_port(), free_port()
    (work / "mosquitto.conf").write_text(
        f"listener {broker_port} 127.0.0.1\nallow_anonymous true\nset_tcp_nodelay true\n")
    config = work / "config"
    shutil.copytree(examples_dir(), config)
    agent_yaml = config / "agent.yaml"
    agent_yaml.write_text(agent_yaml.read_text()
                          .replace("127.0.0.1:1883", f"127.0.0.1:{broker_port}")
                          .replace('listen: "127.0.0.1:9108"', "listen: null")
                          .replace("format: auto", "format: json"))
    press_yaml = config / "machines.d" / "press.yaml"
    press_yaml.write_text(press_yaml.read_text().replace("port: 5020", f"port: {press_port}"))

    procs: list[subprocess.Popen[bytes]] = []
    received = {"batches": 0, "readings": 0, "bad": 0}
    lock = threading.Lock()
    client = mqtt.Client(CallbackAPIVersion.VERSION2)
    try:
        procs.append(subprocess.Popen([broker_bin, "-c", str(work / "mosquitto.conf")],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        wait_port(broker_port, procs[-1], "mosquitto")
        procs.append(subprocess.Popen([sys.executable, "-m", "simulators.press", "--host",
                                       "127.0.0.1", "--port", str(press_port)],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        wait_port(press_port, procs[-1], "press simulator")
        agent_log = open(work / "agent.log", "wb")
        procs.append(subprocess.Popen([sys.executable, "-m", "agent", "run", "-c", str(config),
                                       "--state-dir", str(work / "state")],
                                      stdout=agent_log, stderr=subprocess.STDOUT,
                                      env={**os.environ, "PYTHONUNBUFFERED": "1"}))

        def on_message(c: Any, u: Any, msg: Any) -> None:
            try:
                batch = decode(msg.payload)
            except ValueError:
                return
            with lock:
                received["batches"] += 1
                received["readings"] += len(batch["readings"])
                received["bad"] += sum(r["quality"] != "good" for r in batch["readings"])
                show = received["batches"] % 10 == 1  # the press polls at 10 Hz; print 1 Hz
            if show:
                print(time.strftime("%H:%M:%S"), _format(batch), flush=True)

        client.on_message = on_message
        client.on_connect = lambda c, u, f, rc, p: c.subscribe("factory/+/+/+/+/telemetry", qos=1)
        client.connect("127.0.0.1", broker_port)
        client.loop_start()
        print(f"demo: press simulator on 127.0.0.1:{press_port}, mosquitto on "
              f"127.0.0.1:{broker_port}, agent state in {work}; Ctrl-C to stop", flush=True)
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
