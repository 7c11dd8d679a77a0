"""`edge-agent demo`: one command with nothing else installed (its own MQTT broker), or a
real broker with --broker; a clear message, exit 1 and no process left behind when
something does not start."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from agent.cli.processes import free_port
from tests.support.harness import REPO, Broker

SUMMARY = re.compile(r"^demo: (\d+) batches, (\d+) readings \((\d+)/s\), (\d+) bad; "
                     r"agent exit code (\S+)$")


def _env(tmp_path: Path, mark: str, **extra: str) -> dict[str, str]:
    """The environment of a demo run: PATH holds only the python interpreter (so no
    mosquitto), and a mark that every process the demo starts inherits."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    if not (bin_dir / "python").exists():
        (bin_dir / "python").symlink_to(sys.executable)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(PATH=str(bin_dir), EDGE_AGENT_TEST_MARK=mark, PYTHONUNBUFFERED="1", **extra)
    assert shutil.which("mosquitto", path=env["PATH"]) is None
    return env


def _marked_processes(mark: str) -> list[str]:
    """Command lines of live processes whose environment carries `mark`."""
    return [cmdline for _, cmdline in _marked(mark)]


def _kill_marked(mark: str) -> None:
    """After a failure: nothing the demo started outlives the test."""
    for pid, _ in _marked(mark):
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


def _marked(mark: str) -> list[tuple[int, str]]:
    found = []
    needle = f"EDGE_AGENT_TEST_MARK={mark}".encode()
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes()
            if needle in environ.split(b"\0"):
                status = Path(f"/proc/{pid}/stat").read_text().split()[2]
                if status != "Z":
                    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
                    found.append((int(pid),
                                  cmdline.replace(b"\0", b" ").decode(errors="replace")))
        except OSError:
            continue
    return found


def _assert_nothing_left(mark: str) -> None:
    deadline = time.monotonic() + 5
    while (left := _marked_processes(mark)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not left, f"the demo left processes behind: {left}"


def _demo(args: list[str], env: dict[str, str], cwd: Path = REPO,
          timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "agent", "demo", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def _summary(out: subprocess.CompletedProcess[str]) -> tuple[int, int, int, int, str]:
    last = out.stdout.strip().splitlines()[-1]
    match = SUMMARY.match(last)
    assert match, f"last line is not the summary: {last!r}\n{out.stdout}\n{out.stderr}"
    batches, readings, rate, bad = (int(x) for x in match.groups()[:4])
    return batches, readings, rate, bad, match.group(5)


def test_demo_needs_no_mosquitto_and_shows_every_machine(tmp_path: Path) -> None:
    mark = uuid.uuid4().hex
    started = time.monotonic()
    out = _demo(["--duration", "8"], _env(tmp_path, mark))
    took = time.monotonic() - started
    assert out.returncode == 0, out.stdout + out.stderr
    assert "embedded MQTT broker (amqtt) on 127.0.0.1:" in out.stdout
    batches, readings, rate, bad, code = _summary(out)
    assert batches > 0 and readings > 0 and rate > 0, out.stdout
    assert bad == 0, out.stdout  # every simulator starts healthy
    assert code == "0"
    # Not a terminal: plain periodic lines, every machine up with its state and signals.
    assert "uplink     connected" in out.stdout, out.stdout
    for machine in ("press-01", "cnc-01", "imm-01", "forge-01", "heater-01", "scale-01",
                    "press-01-tonnage", "furnace-01-tempctl"):
        assert re.search(rf"^  {re.escape(machine)} +up +", out.stdout, re.M), (machine, out.stdout)
    assert re.search(r"^  press-01 +up +\S+ +[\d.]+ +\d+ +0 +[\d.]+ s ago +cycle\.count=\d+",
                     out.stdout, re.M), out.stdout
    assert re.search(r"^backlog    \d+ batches", out.stdout, re.M)
    assert took < 40, f"the demo took {took:.1f} s"
    _assert_nothing_left(mark)


def test_demo_with_a_real_broker(tmp_path: Path, broker: Broker) -> None:
    mark = uuid.uuid4().hex
    out = _demo(["--duration", "5", "--broker", f"mqtt://127.0.0.1:{broker.port}"],
                _env(tmp_path, mark))
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"broker mqtt://127.0.0.1:{broker.port}" in out.stdout
    assert "amqtt" not in out.stdout
    batches, readings, _, bad, code = _summary(out)
    assert batches > 0 and readings > 0 and bad == 0 and code == "0", out.stdout
    _assert_nothing_left(mark)


def test_demo_stops_on_ctrl_c_and_prints_the_summary(tmp_path: Path) -> None:
    mark = uuid.uuid4().hex
    proc = subprocess.Popen([sys.executable, "-m", "agent", "demo"], cwd=REPO,
                            env=_env(tmp_path, mark), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 40
        seen = []
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            seen.append(line)
            if re.match(r"^  press-01 +up ", line) or not line:
                break
        assert re.match(r"^  press-01 +up ", seen[-1]), "".join(seen)
        # The broker, six simulators and the agent (so the checks below can see them).
        assert len(_marked_processes(mark)) >= 9
        proc.send_signal(signal.SIGINT)
        try:
            rest, err = proc.communicate(timeout=40)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGUSR1)  # the demo writes every thread's stack to stderr
            time.sleep(1)
            proc.kill()
            rest, err = proc.communicate()
            pytest.fail(f"the demo did not stop within 40 s of Ctrl-C; its stderr:\n{err}")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.returncode != 0:
            _kill_marked(mark)
    assert proc.returncode == 0, "".join(seen) + rest + err
    last = rest.strip().splitlines()[-1]
    match = SUMMARY.match(last)
    assert match and int(match.group(1)) > 0 and match.group(5) == "0", last
    _assert_nothing_left(mark)


def test_demo_says_so_when_the_broker_is_unreachable(tmp_path: Path) -> None:
    mark = uuid.uuid4().hex
    port = free_port()
    started = time.monotonic()
    out = _demo(["--duration", "5", "--broker", f"mqtt://127.0.0.1:{port}"], _env(tmp_path, mark))
    assert out.returncode == 1, out.stdout + out.stderr
    assert f"edge-agent demo: cannot reach the broker at mqtt://127.0.0.1:{port}" in out.stderr
    assert time.monotonic() - started < 15
    _assert_nothing_left(mark)


def test_demo_rejects_a_broker_that_is_not_an_mqtt_url(tmp_path: Path) -> None:
    out = _demo(["--broker", "http://127.0.0.1:1883"], _env(tmp_path, uuid.uuid4().hex))
    assert out.returncode == 2
    assert "expected mqtt://HOST:PORT" in out.stderr


def test_a_simulator_that_does_not_start_stops_the_demo_cleanly(tmp_path: Path) -> None:
    """The CNC simulator fails at start (a stand-in module found first on PYTHONPATH): the
    demo names it, shows its last words, exits 1 and stops the broker and the others."""
    fake = tmp_path / "fake" / "simulators"
    (fake / "opcua").mkdir(parents=True)
    (fake / "__init__.py").write_text(f"__path__.append({str(REPO / 'simulators')!r})\n")
    (fake / "opcua" / "__init__.py").write_text(
        f"__path__.append({str(REPO / 'simulators' / 'opcua')!r})\n")
    (fake / "opcua" / "cnc.py").write_text(
        "import sys\nprint('cnc: cannot load the address space (test)', file=sys.stderr)\n"
        "sys.exit(3)\n")
    mark = uuid.uuid4().hex
    env = _env(tmp_path, mark, PYTHONPATH=str(tmp_path / "fake"))
    out = _demo(["--duration", "5"], env, cwd=tmp_path)
    assert out.returncode == 1, out.stdout + out.stderr
    assert "edge-agent demo: the cnc simulator exited at start (code 3)" in out.stderr, out.stderr
    assert "cannot load the address space (test)" in out.stderr
    assert "logs kept in" in out.stderr
    _assert_nothing_left(mark)
