"""Device faults end to end: a press simulator misbehaving in one way after another while a
real agent process polls it and a healthy press, publishing through mosquitto.

For every fault the agent must stay up, publish the faulty press's readings as bad with the
reason the Modbus driver gives that failure within about one poll, recover once the fault
stops, and keep polling the healthy press at its rate meanwhile. One broker, one agent and
the simulators are shared by all faults (switched on and off one after another) to keep the
file fast.
"""

from __future__ import annotations

import asyncio
import json
import socket
import struct
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pytest

from simulators.modbus.press import PressDevice
from simulators.modbus.tcp_server import FaultConfig, ModbusTcpServer
from tests.support.harness import (
    AgentConfig,
    AgentProcess,
    Broker,
    Simulator,
    Subscriber,
    free_port,
    press_machine,
    wait_for,
)

FAULTY, HEALTHY = "press-faulty", "press-healthy"
SIGNAL = "press.crank_angle"  # numeric and in the fast group: present in every fast batch
POLL_S = 0.1
# First bad reading after the switch: one poll, a 300 ms timeout, MQTT, and slack for CI.
BAD_WITHIN_S = 3.0
# Reconnect backoff starts at 0.5 s and doubles per failed attempt while the fault lasts.
RECOVER_WITHIN_S = 10.0
# How long a fault stays on after its first bad reading, so the agent also meets it again
# on reconnect.
HOLD_S = 0.6


class WrongReason(AssertionError):
    """The readings went bad, but with another reason than the driver code promises."""


class _ServerThread:
    """A ModbusTcpServer on an event loop of its own, so faults switch while the agent's
    requests are being answered."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self.server = ModbusTcpServer(PressDevice(), port=0)
        self._call(self.server.start())

    def _call(self, coro: Any, timeout: float = 10.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def set_faults(self, faults: FaultConfig) -> None:
        self.server.set_faults(faults)

    def restart(self, down_seconds: float) -> None:
        self._call(self.server.restart(down_seconds))

    def close(self) -> None:
        self._call(self.server.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
        self.loop.close()


@dataclass
class Rig:
    faulty: _ServerThread
    sub: Subscriber
    agent: AgentProcess

    def batches(self, machine: str, since: int) -> list[tuple[int, dict[str, Any]]]:
        """(message index, telemetry batch) of `machine`, from message `since` on."""
        out = []
        messages = self.sub.snapshot()
        for i in range(since, len(messages)):
            m = messages[i]
            if m.topic.endswith("/telemetry"):
                data = m.data()
                if data["machine"] == machine:
                    out.append((i, data))
        return out

    def crank(self, machine: str, since: int) -> list[tuple[int, dict[str, Any]]]:
        """(message index, crank angle reading) of `machine`, from message `since` on."""
        return [(i, r) for i, batch in self.batches(machine, since)
                for r in batch["readings"] if r["signal"] == SIGNAL]

    def mark(self) -> int:
        return len(self.sub.snapshot())

    def wait_good(self, machine: str, since: int, timeout: float) -> int:
        """Index of the first good reading of `machine` from `since` on."""
        def found() -> int | None:
            return next((i + 1 for i, r in self.crank(machine, since) if r["quality"] == "good"),
                        None)
        return int(wait_for(found, timeout, f"a good {SIGNAL} of {machine}")) - 1


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    # Module-scoped, hence its own Broker rather than the function-scoped `broker` fixture.
    root = tmp_path_factory.mktemp("device_faults")
    broker = Broker(root / "mosquitto")
    broker.start()
    faulty = healthy = sub = agent = None
    try:
        faulty = _ServerThread()
        healthy = Simulator(free_port())
        sub = Subscriber(broker.port, client_id="device-faults")
        machines = {
            FAULTY: press_machine(FAULTY, faulty.server.port, fast="100ms", slow="1s",
                                  timeout="300ms"),
            HEALTHY: press_machine(HEALTHY, healthy.port, fast="100ms", slow="1s",
                                   timeout="300ms"),
        }
        config_dir = AgentConfig(root, broker.port, machines).write()
        agent = AgentProcess(config_dir, root / "state", root / "agent.log")
        r = Rig(faulty, sub, agent)
        r.wait_good(FAULTY, 0, 30)
        r.wait_good(HEALTHY, 0, 30)
        yield r
        assert agent.stop() == 0, "the agent did not exit cleanly after all the faults"
    finally:
        if agent is not None and agent.proc.poll() is None:
            agent.stop()
        if sub is not None:
            sub.close()
        if healthy is not None:
            healthy.stop()
        if faulty is not None:
            faulty.close()
        broker.stop()


@dataclass(frozen=True)
class Case:
    faults: FaultConfig | None  # None: restart the server instead
    reason: str | None  # None: the readings stay good
    # The driver keeps the link after this failure, so every failing block of the poll,
    # the crank angle's included, must carry `reason` rather than comm_failure.
    keeps_link: bool = False


CASES: dict[str, Case] = {
    # A reply shorter than its own byte count is malformed (the codec's MalformedReply and
    # the transport's ModbusException branch); neither closes the link.
    "short_reply": Case(FaultConfig(mode="short_reply"), "malformed_reply", keeps_link=True),
    # The MBAP length promises bytes that never come: the client waits for them.
    "short_adu": Case(FaultConfig(mode="short_adu"), "timeout"),
    # A reply for another transaction or unit is not the answer: pymodbus skips it and the
    # answer never comes, so the request times out (and the link is renewed).
    "wrong_tid": Case(FaultConfig(mode="wrong_tid"), "timeout"),
    "wrong_unit": Case(FaultConfig(mode="wrong_unit"), "timeout"),
    **{f"exception_{code}": Case(FaultConfig(mode="exception", exception_code=code),
                                 f"device_exception:{code}", keeps_link=True)
       for code in (1, 2, 3, 4, 6, 11)},
    "delay_above_timeout": Case(FaultConfig(mode="delay", delay_ms=500), "timeout"),
    "delay_below_timeout": Case(FaultConfig(mode="delay", delay_ms=100), None),
    # ~1 ms per byte keeps a ~120-byte reply well inside the 300 ms timeout.
    "dribble": Case(FaultConfig(mode="dribble", dribble_ms=1.0), None),
    "close_mid_reply": Case(FaultConfig(mode="close_mid_reply"), "comm_failure"),
    "restart": Case(None, "comm_failure"),
}

@pytest.mark.parametrize("name", list(CASES))
def test_fault_marks_readings_bad_and_recovers(rig: Rig, name: str) -> None:
    case = CASES[name]
    rig.wait_good(FAULTY, rig.mark(), RECOVER_WITHIN_S)
    start = rig.mark()
    t_on = time.monotonic()
    reasons: set[str] = set()
    crank_reason: str | None = None
    try:
        if case.faults is None:
            # restart() returns once listening again: the whole outage lies in the window.
            rig.faulty.restart(0.5)
        else:
            rig.faulty.set_faults(case.faults)
        if case.reason is None:
            time.sleep(1.0)
        else:
            wait_for(lambda: any(r["quality"] == "bad" for _, r in rig.crank(FAULTY, start)),
                     BAD_WITHIN_S, f"a bad {SIGNAL} of {FAULTY} ({name})")
            # The driver closes the link after a timeout or a broken reply, so the blocks
            # after the failing one in the same poll say comm_failure: the fault's own
            # reason is on the first failing block of the first bad batch.
            first_bad = next(b for _, b in rig.batches(FAULTY, start)
                             if any(r["quality"] == "bad" for r in b["readings"]))
            bad = [r for r in first_bad["readings"] if r["quality"] == "bad"]
            assert all(r["value"] is None for r in bad)
            reasons = {r["reason"] for r in bad}
            crank_reason = next((r["reason"] for r in bad if r["signal"] == SIGNAL), None)
            if case.faults is not None:
                time.sleep(HOLD_S)
    finally:
        rig.faulty.set_faults(FaultConfig())
    off = rig.mark()
    recovered = rig.wait_good(FAULTY, off, RECOVER_WITHIN_S)
    window = time.monotonic() - t_on
    assert rig.agent.proc.poll() is None, "the agent exited"

    during = rig.crank(FAULTY, start)
    if case.reason is None:
        assert during and all(r["quality"] == "good" for _, r in during), \
            [r for _, r in during if r["quality"] != "good"][:3]
    healthy = [r for i, r in rig.crank(HEALTHY, start) if i <= recovered]
    assert all(r["quality"] == "good" for r in healthy)
    # Half the polls a 100 ms group should have made, less one for MQTT still in flight.
    expected = int(0.5 * window / POLL_S) - 1
    assert len(healthy) >= expected, (len(healthy), expected, window)
    if case.reason is not None and (
            case.reason not in reasons or not reasons <= {case.reason, "comm_failure"}
            or (case.keeps_link and crank_reason not in (None, case.reason))):
        raise WrongReason(f"{name}: first bad batch has reasons {sorted(reasons)} "
                          f"({SIGNAL}: {crank_reason}), expected {case.reason!r}")


def _read_hr0(port: int, timeout: float = 2.0) -> bytes:
    """The PDU of one raw 'read holding register 0' exchange."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(struct.pack(">HHHBBHH", 7, 0, 6, 1, 3, 0, 1))
        head = b""
        while len(head) < 7:
            head += s.recv(7 - len(head))
        length = struct.unpack(">HHHB", head)[2]
        pdu = b""
        while len(pdu) < length - 1:
            pdu += s.recv(length - 1 - len(pdu))
        return pdu


def test_fault_file_switches_the_subprocess_simulator(tmp_path: Path) -> None:
    fault_file = tmp_path / "faults.json"
    sim = Simulator(free_port(), "--fault-file", str(fault_file))
    try:
        assert _read_hr0(sim.port)[0] == 3
        fault_file.write_text(json.dumps({"mode": "exception", "code": 6}))
        wait_for(lambda: _read_hr0(sim.port) == b"\x83\x06", 3, "exception 06")
        fault_file.write_text(json.dumps({"mode": "none"}))
        wait_for(lambda: _read_hr0(sim.port)[0] == 3, 3, "a normal reply")
        fault_file.write_text("{not json")  # reported and ignored: the press keeps answering
        time.sleep(0.3)
        assert _read_hr0(sim.port)[0] == 3
        assert sim.proc.poll() is None
    finally:
        sim.stop()
