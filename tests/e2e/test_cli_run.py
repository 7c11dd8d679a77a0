"""The `edge-agent` command line around the daemon: sim, run failures, buffer stats."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
from pathlib import Path

from tests.support.harness import REPO, AgentConfig, AgentProcess, free_port, press_machine, wait_for


def test_sim_press_through_the_cli_serves_modbus_and_stops_on_sigterm() -> None:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "agent", "sim", "press", "--host", "127.0.0.1",
                             "--port", str(port), "--unit", "3"], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        line = proc.stdout.readline().decode()  # type: ignore[union-attr]
        assert line.strip() == f"press listening on 127.0.0.1:{port} unit 3"
        with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
            # Read holding register 0 (state) of unit 3.
            s.sendall(bytes([0, 7, 0, 0, 0, 6, 3, 3, 0, 0, 0, 1]))
            reply = s.recv(64)
        assert reply[:2] == b"\x00\x07" and reply[7] == 3 and reply[8] == 2
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0


def _run_with_mqtt_fields(tmp_path: Path, fields: str) -> tuple[Path, subprocess.CompletedProcess[str]]:
    """`edge-agent run` on a config whose mqtt block starts with `fields`."""
    cfg = AgentConfig(tmp_path, free_port(), {"p": press_machine("p", free_port())})
    config_dir = cfg.write()
    agent_yaml = config_dir / "agent.yaml"
    agent_yaml.write_text(agent_yaml.read_text().replace("mqtt: {", "mqtt: {" + fields + ", "))
    out = subprocess.run([sys.executable, "-m", "agent", "run", "-c", str(config_dir),
                          "--state-dir", str(tmp_path / "state")], cwd=REPO,
                         capture_output=True, text=True, timeout=60)
    return config_dir, out


def test_run_with_missing_password_env_exits_2_without_starting(tmp_path: Path) -> None:
    _, out = _run_with_mqtt_fields(
        tmp_path, "password_env: EDGE_AGENT_TEST_UNSET_PASSWORD, username: u")
    assert out.returncode == 2
    assert "EDGE_AGENT_TEST_UNSET_PASSWORD is not set" in out.stderr
    assert not (tmp_path / "state").exists()


def test_run_with_invalid_config_exits_2(tmp_path: Path) -> None:
    cfg = AgentConfig(tmp_path, free_port(), {"p": press_machine("p", free_port())})
    config_dir = cfg.write()
    (config_dir / "machines.d" / "p.yaml").write_text("id: p\nfamily: lathe\n")
    out = subprocess.run([sys.executable, "-m", "agent", "run", "-c", str(config_dir)], cwd=REPO,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert "machines.d/p.yaml:2: family: 'lathe' is not one of" in out.stderr
    assert "Traceback" not in out.stderr


def test_agent_without_broker_or_device_keeps_running_and_stops_cleanly(tmp_path: Path) -> None:
    # Nothing listens on either port: the agent must neither crash nor hang on SIGTERM,
    # and what it collected (bad readings, comm_failure) stays in the buffer.
    cfg = AgentConfig(tmp_path, free_port(), {"p": press_machine("p", free_port())})
    config_dir = cfg.write()
    agent = AgentProcess(config_dir, tmp_path / "state", tmp_path / "agent.log")
    wait_for(lambda: (tmp_path / "state" / "buffer.db").exists(), 30, "the buffer file")
    wait_for(lambda: any(l.get("event") == "cannot connect to device" for l in agent.logs()),
             30, "a device connection failure in the log")
    assert agent.proc.poll() is None
    assert agent.stop(sig=signal.SIGINT) == 0  # Ctrl-C stops as cleanly as SIGTERM
    out = subprocess.run([sys.executable, "-m", "agent", "buffer", "stats", "-c", str(config_dir),
                          "--state-dir", str(tmp_path / "state")], cwd=REPO,
                         capture_output=True, text=True, timeout=60, check=True)
    assert "p: last seq" in out.stdout
    lines = agent.logs()
    assert all(l.get("machine") == "p" for l in lines if "device" in str(l.get("event")))


def test_run_with_missing_tls_file_exits_2_naming_it(tmp_path: Path) -> None:
    config_dir, out = _run_with_mqtt_fields(tmp_path, "tls: {ca: certs/missing-ca.pem}")
    assert out.returncode == 2
    assert f"mqtt.tls.ca: {config_dir}/certs/missing-ca.pem does not exist" in out.stderr
    assert "Traceback" not in out.stderr
