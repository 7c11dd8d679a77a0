"""Modbus RTU on a shared line and RTU over TCP, against the forging simulator on a pty pair
(or a TCP socket), in process: decoding through the same planner and codec as Modbus TCP,
one bus per line, fair turns, a dead unit costing only its own timeouts, faults on the line,
and the load-time rules for units sharing a line."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any, AsyncIterator

import pytest

from agent.config.loader import ConfigInvalid, load_config
from drivers.base import RawSample
from drivers.modbus.config import ModbusRtuConnection, ModbusRtuTcpConnection, ModbusSignalFields
from drivers.modbus.driver import MODBUS_RTU, MODBUS_RTU_TCP, ModbusDriver
from drivers.registry import DRIVERS
from simulators.modbus.forging import ForgingSimulator
from simulators.modbus.rtu_server import RtuFaults
from simulators.serial.fd_link import PtyLink
from simulators.serial.line import LineSettings
from simulators.serial.tcp_link import TcpLink

BAUD = 115200

PRESS = [{"address": "hr:0"}, {"address": "hr:4", "type": "uint32"},
         {"address": "hr:6", "type": "float32"}, {"address": "hr:12", "type": "int16"}]
HEATER = [{"address": "hr:100"}, {"address": "hr:102", "type": "float32"}]
SCALE = [{"address": "hr:0", "type": "float32"}, {"address": "di:0"}]


@pytest.fixture
async def line() -> AsyncIterator[ForgingSimulator]:
    # Parity N: Linux ptys refuse pyserial's second tcsetattr with parity E or O.
    sim = ForgingSimulator(PtyLink(LineSettings(baud=BAUD, parity="N")), seed=2, time_scale=20,
                           extra_units=2)
    await sim.start()
    try:
        yield sim
    finally:
        await sim.stop()


def unit(device: str, unit_id: int, signals: list[dict[str, Any]], shared: dict[str, Any],
         **extra: Any) -> ModbusDriver:
    conn = ModbusRtuConnection.model_validate({
        "protocol": "modbus-rtu", "port": device, "baudrate": BAUD, "parity": "N",
        "unit_id": unit_id, "timeout": "200ms", **extra})
    groups = {"g": [ModbusSignalFields.model_validate(s) for s in signals]}
    return MODBUS_RTU.factory(conn, groups, {"g": 0.1}, shared)  # type: ignore[return-value]


async def test_three_units_share_one_line_and_decode_like_modbus_tcp(line: ForgingSimulator) -> None:
    shared: dict[str, Any] = {}
    drivers = [unit(line.link.address, 1, PRESS, shared), unit(line.link.address, 2, HEATER, shared),
               unit(line.link.address, 3, SCALE, shared)]
    for d in drivers:
        await d.connect()
    try:
        press, heater, scale = await asyncio.gather(*(d.read("g") for d in drivers))
        assert len(shared) == 1  # one bus for the line
        assert all(s.quality == "good" for s in press + heater + scale), (press, heater, scale)
        assert press[0].value in range(5) and press[1].value >= 1204311
        assert isinstance(press[2].value, float) and isinstance(press[3].value, int)
        assert heater[0].value in range(4) and isinstance(heater[1].value, float)
        assert isinstance(scale[1].value, bool)
        assert drivers[0].request_count("g") == 1 and drivers[2].request_count("g") == 2
        bus = next(iter(shared.values()))
        assert bus.busy_seconds > 0
    finally:
        for d in drivers:
            await d.close()
    assert not bus.is_open  # closed with its last unit


async def poll_loop(driver: ModbusDriver, until: float, counts: dict[str, int], name: str) -> None:
    """What the agent's runner does for one machine: poll, reconnect when allowed."""
    retry_at = 0.0
    while time.monotonic() < until:
        if not driver.connected:
            if time.monotonic() < retry_at:
                await asyncio.sleep(0.01)
                continue
            await driver.connect()
        samples = await driver.read("g")
        if all(s.quality == "good" for s in samples):
            counts[name] = counts.get(name, 0) + 1
        else:
            counts[f"{name}:bad"] = counts.get(f"{name}:bad", 0) + 1
            retry_at = time.monotonic() + 0.5  # the agent backs a silent unit off


async def test_units_take_fair_turns_and_a_dead_unit_costs_only_its_timeouts(
        line: ForgingSimulator) -> None:
    line.faults = RtuFaults(dead_units=frozenset({11}))
    shared: dict[str, Any] = {}
    regs = [{"address": f"hr:{i}"} for i in range(50)]
    live = [unit(line.link.address, u, regs, shared) for u in (10, 1)]
    dead = unit(line.link.address, 11, regs, shared)
    counts: dict[str, int] = {}
    until = time.monotonic() + 3.0
    await asyncio.gather(poll_loop(live[0], until, counts, "u10"), poll_loop(live[1], until, counts, "u1"),
                         poll_loop(dead, until, counts, "u11"))
    for d in (*live, dead):
        await d.close()
    assert counts.get("u11", 0) == 0 and counts["u11:bad"] >= 1
    assert "u10:bad" not in counts and "u1:bad" not in counts  # the dead unit never hurt them
    # FIFO turns on the line: two units polling flat out get (almost) the same share.
    assert abs(counts["u10"] - counts["u1"]) <= 2, counts


async def test_faults_on_the_line_give_bad_readings_and_the_line_recovers(
        line: ForgingSimulator) -> None:
    shared: dict[str, Any] = {}
    driver = unit(line.link.address, 1, PRESS, shared)
    await driver.connect()
    reasons: set[str] = set()
    try:
        line.faults = RtuFaults(noise=0.3, corrupt_every=2, cut_every=3, drop_every=4, seed=5)
        for _ in range(20):
            if not driver.connected:
                await driver.connect()
            for s in await driver.read("g"):
                reasons.add(s.reason or "good")
        assert reasons - {"good"}, reasons  # the faults were seen as bad readings...
        assert reasons <= {"good", "timeout", "malformed_reply"}, reasons  # ...with a reason
        line.faults = RtuFaults()
        await asyncio.sleep(0.3)
        if not driver.connected:
            await driver.connect()
        assert all(s.quality == "good" for s in await driver.read("g"))
    finally:
        await driver.close()


async def test_rtu_over_tcp() -> None:
    sim = ForgingSimulator(TcpLink(port=0, settings=LineSettings(baud=BAUD)), seed=3)
    await sim.start()
    try:
        host, port = sim.link.address.rsplit(":", 1)
        conn = ModbusRtuTcpConnection.model_validate({
            "protocol": "modbus-rtu-tcp", "host": host, "port": int(port), "unit_id": 2})
        shared: dict[str, Any] = {}
        driver = MODBUS_RTU_TCP.factory(
            conn, {"g": [ModbusSignalFields.model_validate(s) for s in HEATER]}, {"g": 1.0}, shared)
        await driver.connect()
        samples: list[RawSample] = await driver.read("g")
        await driver.close()
        assert all(s.quality == "good" for s in samples), samples
    finally:
        await sim.stop()


async def test_a_missing_port_is_a_connection_error_not_a_crash() -> None:
    driver = unit("/dev/does-not-exist", 1, PRESS, {})
    with pytest.raises((ConnectionError, OSError)):
        await driver.connect()
    assert not driver.connected
    assert all(s.reason == "comm_failure" for s in await driver.read("g"))


AGENT = "agent: {id: gw-1, site: s}\nmqtt: {url: 'mqtt://127.0.0.1:1883'}\n"


def rtu_file(name: str, port: str, unit_id: int, baud: int) -> str:
    return (f"id: {name}\nfamily: forging\narea: a\nline: l\n"
            f"connection: {{protocol: modbus-rtu, port: {port}, baudrate: {baud}, unit_id: {unit_id}}}\n"
            "poll: {fast: 100ms}\nsignals:\n  - {name: cycle.count, address: \"hr:4\", type: uint32}\n")


def test_units_on_one_line_must_agree_on_settings_and_unit_ids(tmp_path: Path) -> None:
    (tmp_path / "machines.d").mkdir()
    (tmp_path / "agent.yaml").write_text(AGENT)
    (tmp_path / "machines.d" / "a.yaml").write_text(rtu_file("a", "/dev/ttyUSB0", 1, 19200))
    (tmp_path / "machines.d" / "b.yaml").write_text(rtu_file("b", "/dev/ttyUSB0", 2, 9600))
    (tmp_path / "machines.d" / "c.yaml").write_text(rtu_file("c", "/dev/ttyUSB0", 1, 19200))
    (tmp_path / "machines.d" / "d.yaml").write_text(rtu_file("d", "/dev/ttyUSB1", 1, 9600))
    with pytest.raises(ConfigInvalid) as info:
        load_config(tmp_path, DRIVERS)
    assert [str(e) for e in info.value.errors] == [
        "machines.d/b.yaml:5: connection: shares its line with machines.d/a.yaml, which sets "
        "baudrate 19200: every unit on one line needs the same settings",
        "machines.d/c.yaml:5: connection.unit_id: unit 1 on this line is already polled by "
        "machines.d/a.yaml",
    ]
