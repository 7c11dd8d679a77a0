"""Write-back: MQTT commands to writable signals, refused unless everything checks out.

Unit parts (config errors, register encoding, value conversion, the hub with every kind of
bad payload) run in-process. End to end: mosquitto, a press simulator with a block of
writable setpoint registers, a slow press, a press that is not there, the CNC simulator
over OPC UA, and the agent as a process, once with write enabled and once with the default
(disabled: it must not even subscribe). Replies are awaited by request id, never by time.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from agent.writeback.commands import MAX_PAYLOAD, CommandHub, raw_value
from agent.config.loader import ConfigInvalid, load_config
from agent.config.models import AgentFile, signal_model
from drivers.base import WriteRefused, WriteSpec, coerce_write
from drivers.modbus.codec import BlockCodec, encode_value, point_codec, with_bit
from drivers.modbus.config import ModbusRtuTcpConnection, ModbusSignalFields
from drivers.modbus.driver import MODBUS_RTU_TCP
from drivers.modbus.planner import Block
from drivers.modbus.pdu import write_request
from drivers.registry import DRIVERS
from simulators.modbus import word_order as wo
from simulators.modbus.model import RegisterBank, Table
from simulators.modbus.press import PressDevice
from simulators.modbus.rtu_server import RtuServer
from simulators.modbus.tcp_server import FaultConfig, ModbusTcpServer
from simulators.opcua.cnc import CncSimulator
from simulators.serial.line import LineSettings
from simulators.serial.tcp_link import TcpLink
from tests.support.harness import REPO, Broker, free_port, wait_for

pytestmark = pytest.mark.timeout(180)

MODBUS_SIGNAL = signal_model(DRIVERS["modbus-tcp"])
OPCUA_SIGNAL = signal_model(DRIVERS["opcua"])


# -- config -----------------------------------------------------------------------------

AGENT_YAML = "agent: {id: gw-cfg, site: s1}\nmetrics: {listen: null}\n"


def _load(tmp_path: Path, machine: str, agent: str = AGENT_YAML) -> list[str]:
    (tmp_path / "machines.d").mkdir(exist_ok=True)
    (tmp_path / "agent.yaml").write_text(agent)
    (tmp_path / "machines.d" / "m.yaml").write_text(machine)
    try:
        load_config(tmp_path, DRIVERS)
    except ConfigInvalid as exc:
        return [str(e) for e in exc.errors]
    return []


MODBUS_HEAD = """id: m1
family: press
area: a1
line: l1
connection: {protocol: modbus-tcp, host: 127.0.0.1, port: 5020}
poll: {fast: 1s}
signals:
  - {name: x.ok.one, address: "hr:1", writable: true, min: 0, max: 10}
"""


@pytest.mark.parametrize("line, message", [
    ('{name: x.y, address: "ir:3", writable: true}', "'ir:3' is an input register: read-only"),
    ('{name: x.y, address: "di:0", writable: true}', "'di:0' is a discrete input: read-only"),
    ('{name: x.y, address: "hr:5", writable: true, min: 5, max: 1}', "min 5 is greater than max 1"),
    ('{name: x.y, address: "co:1", writable: true, max: 1}',
     "min/max apply to numbers; this signal takes true/false"),
    ('{name: x.y, address: "hr:40", type: string(4), writable: true, min: 0}',
     "min/max apply to numbers; this signal takes a string"),
    ('{name: x.y, address: "hr:5", enum: {0: a}, writable: true, min: 0}',
     "min/max apply to numbers; this signal takes enum labels"),
    ('{name: x.y, address: "hr:5", max: 3}',
     "min/max bound the values written: they need writable: true"),
    ('{name: x.y, address: "hr:5", scale: 0, writable: true}', "scale 0 cannot be reversed"),
])
def test_write_config_errors_name_the_file_and_line(tmp_path: Path, line: str, message: str) -> None:
    errors = _load(tmp_path, MODBUS_HEAD + "  # a comment\n  - " + line + "\n")
    assert len(errors) == 1, errors
    assert errors[0].startswith("machines.d/m.yaml:10: signals[1]: "), errors
    assert message in errors[0]


def test_opcua_event_fields_and_protocols_without_writes_cannot_be_writable(tmp_path: Path) -> None:
    opcua = """id: c1
family: cnc
area: a1
line: l1
connection:
  protocol: opcua
  url: opc.tcp://127.0.0.1:4840
  events: {alarms: {}}
poll: {fast: 1s}
signals:
  - {name: x.ok.one, node: "ns=2;s=X", writable: true, min: 0, max: 5}
  - {name: alarm.code, event: alarms, field: AlarmCode, writable: true}
"""
    errors = _load(tmp_path, opcua)
    assert errors == [("machines.d/m.yaml:12: signals[1]: an event field cannot be written: "
                       "only a node (`node` or `path`)")]
    serial = sorted((REPO / "config/templates").glob("*.yaml"))
    text = next(p.read_text() for p in serial if "protocol: serial" in p.read_text())
    head, _, rest = text.partition("signals:\n")
    head = "id: s-01\narea: a\nline: l\n" + re.sub(r"(?m)^use: .*$", "", head)
    first = next(line for line in rest.splitlines() if line.lstrip().startswith("- {"))
    errors = _load(tmp_path, head + "signals:\n" + first.replace("}", ", writable: true}", 1) + "\n")
    assert any("writable: this protocol cannot write to devices" in e for e in errors), errors


def test_write_is_off_unless_enabled_and_its_fields_are_checked(tmp_path: Path) -> None:
    assert AgentFile.model_validate({"agent": {"id": "a", "site": "s"}}).write.enabled is False
    errors = _load(tmp_path, MODBUS_HEAD, AGENT_YAML + "write: {enabled: yes, queue_size: 0, "
                   "timeout: -1s, enable: true}\n")
    assert sorted(e.split(": ", 2)[1] for e in errors) == [
        "write.enable", "write.queue_size", "write.timeout"], errors
    assert all(e.startswith("agent.yaml:3: ") for e in errors), errors


# -- register encoding: the inverse of the decoder ---------------------------------------

@pytest.mark.parametrize("kind, value", [
    ("int16", -12345), ("uint16", 54321), ("int32", -123456789), ("uint32", 3_000_000_000),
    ("int64", -(2**62) - 5), ("uint64", 2**64 - 2), ("float32", 812.5), ("float64", -1e-300),
    ("string", "AB1"),
])
@pytest.mark.parametrize("order", ["ABCD", "BADC", "CDAB", "DCBA"])
def test_encoded_registers_decode_to_the_value(kind: str, value: Any, order: str) -> None:
    length = 3 if kind == "string" else 0
    words = encode_value(kind, order, value, length)
    codec = BlockCodec(Block("hr", 0, len(words)), [point_codec(0, 0, kind, order, length=length)])
    assert codec.decode(words) == [(0, value)]


def test_encoding_matches_the_simulators_own_word_order() -> None:
    assert encode_value("float32", "CDAB", 812.5) == wo.float32(812.5, "CDAB")
    assert encode_value("uint32", "DCBA", 123456) == wo.uint32(123456, "DCBA")
    assert encode_value("string", "ABCD", "DIE-4711-B", 16) == wo.ascii_string("DIE-4711-B", 8)
    with pytest.raises(ValueError):
        encode_value("uint16", "ABCD", 70000)


def test_a_bit_is_set_in_the_decoded_word() -> None:
    assert with_bit(0b0001, 3, "ABCD", True) == 0b1001
    assert with_bit(0b1001, 3, "ABCD", False) == 0b0001
    assert with_bit(0, 3, "BADC", True) == 1 << 11  # bytes swapped on the wire
    for order in ("ABCD", "BADC"):
        codec = BlockCodec(Block("hr", 0, 1), [point_codec(0, 0, "bool", order, bit=3)])
        assert codec.decode([with_bit(0xFFFF, 3, order, False)]) == [(0, False)]


def test_function_codes_one_register_or_coil_else_multiple() -> None:
    calls: list[tuple[str, Any]] = []

    def recorder(name: str) -> Any:
        return lambda *args, **kwargs: calls.append((name, args))
    client = SimpleNamespace(**{name: recorder(name) for name in (
        "write_coil", "write_coils", "write_register", "write_registers")})
    write_request(client, "co", 1, [True], 1)
    write_request(client, "hr", 2, [7], 1)
    write_request(client, "hr", 3, [1, 2], 1)
    assert [c[0] for c in calls] == ["write_coil", "write_register", "write_registers"]
    with pytest.raises(ValueError):
        write_request(client, "ir", 0, [1], 1)


# -- value conversion ----------------------------------------------------------------------

def _modbus(**fields: Any) -> Any:
    return MODBUS_SIGNAL.model_validate({"name": "x.s", "writable": True, **fields})


def _refused(sig: Any, value: Any) -> str:
    with pytest.raises(WriteRefused) as info:
        raw_value(sig, sig.write_spec(), value)
    return info.value.reason


def test_values_become_raw_device_values() -> None:
    speed = _modbus(address="hr:1", type="uint16", scale=0.1, min=0, max=100)
    assert raw_value(speed, speed.write_spec(), 42.5) == 425
    assert raw_value(speed, speed.write_spec(), 12.3) == 123  # float noise is not a fraction
    assert _refused(speed, 12.34) == "wrong_type"  # not a whole number of 0.1 steps
    assert _refused(speed, 100.1) == "out_of_range"
    assert _refused(speed, True) == "wrong_type"
    assert _refused(speed, "12") == "wrong_type"
    assert _refused(speed, float("nan")) == "out_of_range"
    offset = _modbus(address="hr:1", type="int16", scale=0.5, offset=-40)
    assert raw_value(offset, offset.write_spec(), 10) == 100
    assert _refused(offset, 20000) == "out_of_range"  # raw 40080 > 32767
    assert _refused(_modbus(address="hr:1", type="uint16"), -1) == "out_of_range"
    assert _refused(_modbus(address="hr:1", type="uint64"), 10**30) == "out_of_range"
    real = _modbus(address="hr:1", type="float32")
    assert raw_value(real, real.write_spec(), 3) == 3.0
    assert _refused(real, 1e39) == "out_of_range"
    mode = _modbus(address="hr:1", type="uint16", enum={0: "off", 1: "auto"})
    assert raw_value(mode, mode.write_spec(), "auto") == 1
    assert raw_value(mode, mode.write_spec(), 0) == 0
    assert _refused(mode, "turbo") == "out_of_range"
    assert _refused(mode, 7) == "out_of_range"
    assert _refused(mode, 1.0) == "wrong_type"
    bit = _modbus(address="hr:1.4")
    assert raw_value(bit, bit.write_spec(), False) is False
    assert _refused(bit, 1) == "wrong_type"
    text = _modbus(address="hr:1", type="string(4)")
    assert raw_value(text, text.write_spec(), "AB") == "AB"
    assert _refused(text, "ABCDE") == "out_of_range"
    assert _refused(text, "Ω") == "wrong_type"
    assert _refused(text, 4) == "wrong_type"
    for garbage in (None, [1], {"a": 1}):
        assert _refused(speed, garbage) == "wrong_type"
    node: Any = OPCUA_SIGNAL.model_validate({"name": "x.s", "node": "ns=2;s=X",
                                             "writable": True, "scale": 2})
    assert raw_value(node, node.write_spec(), 5) == 2.5  # the driver checks the node's type
    assert raw_value(node, node.write_spec(), "on") == "on"
    assert coerce_write(12.0, WriteSpec("int", 0, 20)) == 12


# -- the hub, in-process: every kind of bad payload gets exactly one reply --------------

@dataclass
class _Machine:
    id: str
    model: Any


def _hub(**write: Any) -> tuple[CommandHub, list[tuple[str, dict[str, Any]]]]:
    cfg = AgentFile.model_validate({"agent": {"id": "gw", "site": "s1"},
                                    "write": {"enabled": True, "queue_size": 2,
                                              "burst": 1000, **write}})
    replies: list[tuple[str, dict[str, Any]]] = []
    hub = CommandHub(cfg, None, _NullLog())

    def collect() -> None:
        while (reply := hub.take_reply()) is not None:
            replies.append((reply[0], json.loads(reply[1])))
    hub.on_reply = collect
    return hub, replies


class _NullLog:
    def __getattr__(self, name: str) -> Any:
        return lambda *args, **kwargs: None


def _fresh(payload: bytes) -> bytes:
    """A payload whose `"ts": 0` is now: commands older than write.max_age are refused."""
    return payload.replace(b'"ts": 0', b'"ts": %d' % time.time_ns())


def _good(request_id: str, **fields: Any) -> bytes:
    return json.dumps({"request_id": request_id, "signal": "x.setpoint.speed", "value": 1,
                       "ts": time.time_ns(), **fields}).encode()


GARBAGE: list[tuple[bytes, str]] = [
    (b"", "bad_json"),
    (b"not json", "bad_json"),
    (b"\xff\xfe\x00\x01 binary", "bad_json"),
    (b"[" * 4000, "bad_json"),  # deeper than the parser goes
    (b"[" * (MAX_PAYLOAD + 1), "payload_too_large"),
    (b"x" * 1_000_000, "payload_too_large"),
    ((b'{"a":' * 400) + b"1" + b"}" * 400, "missing_field"),
    (b"[1, 2, 3]", "bad_json"),
    (b'"a string"', "bad_json"),
    (b"null", "bad_json"),
    (b'{"signal": "x.setpoint.speed", "value": 1, "ts": 0}', "missing_field"),
    (b'{"request_id": "g1", "value": 1, "ts": 0}', "missing_field"),
    (b'{"request_id": "g2", "signal": "x.setpoint.speed", "ts": 0}', "missing_field"),
    (b'{"request_id": {"x": 1}, "signal": "x.setpoint.speed", "value": 1, "ts": 0}', "wrong_type"),
    (b'{"request_id": true, "signal": "x.setpoint.speed", "value": 1, "ts": 0}', "wrong_type"),
    (b'{"request_id": "' + b"r" * 200 + b'", "signal": "x.setpoint.speed", "value": 1, "ts": 0}',
     "wrong_type"),
    (b'{"request_id": "g3", "signal": ["x.setpoint.speed"], "value": 1, "ts": 0}', "wrong_type"),
    (b'{"request_id": "g4", "signal": "x.setpoint.speed", "value": {"deep": [1, {"x": null}]}, '
     b'"ts": 0}', "wrong_type"),
    # NaN and Infinity are not JSON (Python's reader takes them): refused before anything.
    (b'{"request_id": "g5", "signal": "x.setpoint.speed", "value": NaN, "ts": 0}', "bad_json"),
    (b'{"request_id": "g6", "signal": "x.setpoint.speed", "value": 1e999, "ts": 0}', "out_of_range"),
    (b'{"request_id": "g7", "signal": "x.setpoint.speed", "value": 1' + b"0" * 3000 + b', "ts": 0}',
     "out_of_range"),
    (b'{"request_id": "g8", "signal": "x.setpoint.speed", "value": null, "ts": 0}', "wrong_type"),
    (b'{"request_id": 9, "signal": "no.such", "value": 1, "ts": 0}', "unknown_signal"),
    (b'{"request_id": 10, "signal": "press.stroke_rate", "value": 1, "ts": 0}', "not_writable"),
    (b'{"request_id": null, "signal": "x.setpoint.speed", "value": 1, "ts": 0}', "wrong_type"),
    (b'{"request_id": "g11", "signal": "x.setpoint.speed", "value": 1}', "missing_field"),
    (b'{"request_id": "g12", "signal": "x.setpoint.speed", "value": 1, "ts": "yesterday"}',
     "wrong_type"),
    (b'{"request_id": "g13", "signal": "x.setpoint.speed", "value": 1, "ts": 1000}', "wrong_type"),
    (b'{"request_id": "g14", "signal": "x.setpoint.speed", "value": 1, '
     b'"ts": "2020-01-01T00:00:00Z"}', "stale"),
    (b'{"request_id": "g15", "signal": "x.setpoint.speed", "value": 1, "ts": 1600000000000}',
     "stale"),
    (b'{"request_id": "g16", "signal": "x.setpoint.speed", "value": 1, "ts": 4000000000000}',
     "stale"),
    (b'{"request_id": "g17", "signal": "x.setpoint.speed", "value": 1, "ts": 1e400}', "wrong_type"),
]


async def test_hub_answers_every_bad_payload_once_and_queues_only_good_ones() -> None:
    hub, replies = _hub(unknown_machines="reply")
    model = SimpleNamespace(area="a1", line="l1")
    groups = {"fast": [_modbus(name="x.setpoint.speed", address="hr:1", scale=0.1, min=0, max=100),
                       MODBUS_SIGNAL.model_validate({"name": "press.stroke_rate",
                                                     "address": "hr:2"})]}
    inbox = hub.attach(_Machine("m1", model), groups)
    topic = "factory/s1/a1/l1/m1/cmd"
    for payload, _ in GARBAGE:
        hub.submit(topic, _fresh(payload))
    assert [r["reason"] for _, r in replies] == [reason for _, reason in GARBAGE]
    assert all(t == topic + "/reply" and not r["ok"] for t, r in replies)
    assert [r["request_id"] for _, r in replies][:17] == [None] * 11 + ["g1", "g2"] + [None] * 3 + ["g3"]
    replies.clear()
    hub.submit("factory/s1/a1/l1/m2/cmd", _good("a"))  # no such machine
    hub.submit("factory/s1/a1/l9/m1/cmd", _good("b"))  # m1 is not on line l9
    hub.submit(topic, _good("c"), retain=True)  # would run again on every reconnect
    for request_id in ("d", "e", "f"):
        hub.submit(topic, _good(request_id))  # two fit in the inbox
    hub.submit(topic, _good("d"))  # a replay: never executed twice
    assert [r["reason"] for _, r in replies] == ["unknown_machine", "unknown_machine",
                                                 "retained", "busy", "duplicate"]
    hub.detach(inbox)  # the runner stops: what waited is refused
    assert [r["reason"] for _, r in replies[5:]] == ["not_connected", "not_connected"]
    hub.submit(topic, _good("g"))
    assert replies[-1][1]["reason"] == "unknown_machine"


async def test_several_agents_on_one_site_ignore_each_others_machines() -> None:
    hub, replies = _hub()  # the default: other agents' machines are not this one's business
    hub.attach(_Machine("m1", SimpleNamespace(area="a1", line="l1")),
               {"fast": [_modbus(name="x.setpoint.speed", address="hr:1")]})
    hub.submit("factory/s1/a1/l1/m2/cmd", _good("a"))
    hub.submit("factory/s1/a1/l1/m2/cmd", b"garbage")
    hub.submit("factory/s1/a1/l1/m1/cmd", b"garbage")
    assert [(t, r["reason"]) for t, r in replies] == [("factory/s1/a1/l1/m1/cmd/reply", "bad_json")]


# -- drivers and the runner's side, in-process ---------------------------------------------

RTU_SIGNALS = [{"address": "hr:2", "type": "float32", "order": "CDAB"}, {"address": "co:3"},
               {"address": "hr:5.2"}, {"address": "hr:6", "type": "string(3)", "order": "BADC"}]


async def test_rtu_units_sharing_a_line_are_written_in_turn() -> None:
    banks = {u: RegisterBank(coils=8, holding_registers=16) for u in (1, 2)}
    banks[2].set_registers(Table.HOLDING_REGISTERS, 5, [0b1000_0001])
    async with RtuServer(banks, TcpLink(port=0, settings=LineSettings(baud=115200))) as server:
        host, port = server.link.address.rsplit(":", 1)
        shared: dict[str, Any] = {}

        def unit(unit_id: int) -> Any:
            conn = ModbusRtuTcpConnection.model_validate({
                "protocol": "modbus-rtu-tcp", "host": host, "port": int(port),
                "unit_id": unit_id, "timeout": "500ms"})
            return MODBUS_RTU_TCP.factory(
                conn, {"g": [ModbusSignalFields.model_validate(s) for s in RTU_SIGNALS]},
                {"g": 0.1}, shared)
        one, two = unit(1), unit(2)
        await one.connect()
        await two.connect()
        try:
            await asyncio.gather(two.write("g", 0, 812.5), one.write("g", 1, True),
                                 two.write("g", 2, True), two.write("g", 3, "AB"))
            hr = banks[2].read_registers(Table.HOLDING_REGISTERS, 0, 16) or []
            assert hr[2:4] == wo.float32(812.5, "CDAB") and hr[5] == 0b1000_0101
            assert banks[1].read_bits(Table.COILS, 3, 1) == [True]
            assert banks[2].read_bits(Table.COILS, 3, 1) == [False]
            assert [s.value for s in await two.read("g")] == [812.5, False, True, "AB"]
            assert len(shared) == 1 and next(iter(shared.values())).busy_seconds > 0
        finally:
            await one.close()
            await two.close()


async def test_a_device_that_does_not_answer_a_write() -> None:
    device = RegisterBank(holding_registers=8)
    async with ModbusTcpServer(device, port=0, faults=FaultConfig(delay_ms=500)) as server:
        conn = DRIVERS["modbus-tcp"].connection_model.model_validate({
            "protocol": "modbus-tcp", "host": "127.0.0.1", "port": server.port,
            "timeout": "100ms"})
        driver = DRIVERS["modbus-tcp"].factory(
            conn, {"g": [ModbusSignalFields.model_validate({"address": "hr:1"})]}, {"g": 1}, {})
        await driver.connect()
        with pytest.raises(WriteRefused) as info:
            await driver.write("g", 0, 7)  # type: ignore[attr-defined]
        assert info.value.reason == "timeout" and "may or may not" in info.value.detail
        assert not driver.connected  # a late reply must not be taken for the next request's
        with pytest.raises(WriteRefused) as info:
            await driver.write("g", 0, 7)  # type: ignore[attr-defined]
        assert info.value.reason == "not_connected"
        await driver.close()


class _FakeDriver:
    def __init__(self, behaviour: str) -> None:
        self.behaviour = behaviour
        self.connected = behaviour != "down"

    async def write(self, group: str, index: int, value: Any) -> None:
        if self.behaviour == "hang":
            await asyncio.sleep(30)
        if self.behaviour == "bug":
            raise RuntimeError("a driver bug")


async def test_the_runner_bounds_a_write_and_survives_driver_bugs() -> None:
    hub, replies = _hub(timeout="300ms")
    inbox = hub.attach(_Machine("m1", SimpleNamespace(area="a1", line="l1")),
                       {"fast": [_modbus(name="x.setpoint.speed", address="hr:1")]})
    topic = "factory/s1/a1/l1/m1/cmd"
    loop = asyncio.get_running_loop()
    for behaviour in ("hang", "bug", "down", "fine"):
        hub.submit(topic, _good(behaviour))
        # A poll is due already: the one command waiting runs first, then serve returns.
        await inbox.serve(loop.time(), _FakeDriver(behaviour))  # type: ignore[arg-type]
    hub.submit(topic, _good("no-write"))
    await inbox.serve(loop.time(), SimpleNamespace(connected=True))  # type: ignore[arg-type]
    assert [(r["request_id"], r["reason"]) for _, r in replies] == [
        ("hang", "timeout"), ("bug", "device_error"), ("down", "not_connected"),
        ("fine", None), ("no-write", "not_writable")]
    assert replies[0][1]["detail"].startswith("no confirmation within write.timeout")
    assert replies[1][1]["detail"] == "internal_error: RuntimeError"


# -- end to end ----------------------------------------------------------------------------

SETPOINTS = 56  # first register of the block the test press accepts writes to


class SetpointPress(PressDevice):
    """The press simulator plus writable setpoints at hr:56..63 (unused by its map)."""

    def __init__(self) -> None:
        super().__init__()
        self.setpoints = [0] * 8

    def read_registers(self, table: Table, address: int, count: int) -> list[int] | None:
        regs = super().read_registers(table, address, count)
        if regs is not None and table == Table.HOLDING_REGISTERS:
            for i in range(count):
                if 0 <= address + i - SETPOINTS < 8:
                    regs[i] = self.setpoints[address + i - SETPOINTS]
        return regs

    def write_registers(self, address: int, values: Any) -> bool:
        if address < SETPOINTS or address + len(values) > SETPOINTS + 8:
            return False  # the measurements stay read-only: exception 02
        self.setpoints[address - SETPOINTS:address - SETPOINTS + len(values)] = list(values)
        return True


class LoopThread:
    """Simulators served from an event loop in a thread of the test process."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Any, timeout: float = 30) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


class Agent:
    def __init__(self, root: Path, agent_yaml: str, machines: dict[str, str]) -> None:
        cfg = root / "config"
        (cfg / "machines.d").mkdir(parents=True)
        (cfg / "agent.yaml").write_text(agent_yaml)
        for name, text in machines.items():
            (cfg / "machines.d" / f"{name}.yaml").write_text(text)
        self.log_path = root / "agent.log"
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "agent", "run", "-c", str(cfg), "--state-dir",
             str(root / "state")], cwd=REPO, stdout=self._log, stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"})

    def logs(self) -> list[dict[str, Any]]:
        out = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                out.append({"event": line})
        return out

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


def agent_yaml(agent_id: str, port: int, write: str, site: str = "testsite") -> str:
    return (f"agent: {{id: {agent_id}, site: {site}}}\n"
            f"mqtt: {{url: 'mqtt://127.0.0.1:{port}', reconnect_min: 100ms, reconnect_max: 1s, "
            "state_interval: 1s}\n"
            "buffer: {path: buffer.db, commit_interval: 20ms}\n"
            "metrics: {listen: null}\n"
            "logging: {level: info, format: json}\n" + write)


def press_yaml(machine_id: str, line: str, port: int, timeout: str, signals: str) -> str:
    return (f"id: {machine_id}\nfamily: press\narea: stamping\nline: {line}\n"
            f"connection: {{protocol: modbus-tcp, host: 127.0.0.1, port: {port}, unit_id: 1, "
            f"timeout: {timeout}}}\npoll: {{fast: 100ms}}\nsignals:\n{signals}")


PRESS_SIGNALS = """\
  - {name: press.stroke_rate, address: "hr:3", type: uint16, scale: 0.1, unit: "1/min"}
  - {name: lubrication.pump_on, address: "co:0"}
  - {name: die.clamp_closed, address: "co:1", writable: true}
  - {name: x.setpoint.speed, address: "hr:56", type: uint16, scale: 0.1, unit: "%",
     writable: true, min: 0, max: 100}
  - {name: x.setpoint.offset, address: "hr:57", type: int16, writable: true}
  - {name: x.setpoint.force, address: "hr:58", type: float32, word_order: little, unit: kN,
     writable: true, min: -500, max: 2500}
  - {name: x.setpoint.flags.ready, address: "hr:60.0"}
  - {name: x.setpoint.flags.hold, address: "hr:60.3", writable: true}
  - {name: x.setpoint.mode, address: "hr:61", type: uint16, enum: {0: "off", 1: auto, 2: manual},
     writable: true}
  - {name: x.setpoint.recipe, address: "hr:62", type: string(4), writable: true}
  - {name: x.machine.state_code, address: "hr:0", type: uint16, writable: true}
"""

CNC_YAML = """id: cnc-w
family: cnc
area: machining
line: line-9
connection:
  protocol: opcua
  url: {url}
  timeout: 2s
  namespaces: {{cnc: "urn:edge-agent:sim:cnc"}}
  default_namespace: cnc
  root: /Objects/Machines/CNC-01
poll: {{fast: 200ms}}
signals:
  - {{name: path.feed_override, path: Monitoring/Channel1/FeedOverride, unit: "%",
     writable: true, min: 0, max: 150}}
  - {{name: spindle.override, path: Monitoring/Spindle/Override, unit: "%", writable: true}}
  - {{name: tool.number, path: Monitoring/Tool/ToolNumber, writable: true}}
"""

BASE = "factory/testsite"
PRESS = f"{BASE}/stamping/line-7/press-w/cmd"
SLOW = f"{BASE}/stamping/line-7/press-slow/cmd"
DOWN = f"{BASE}/stamping/line-7/press-down/cmd"
CNC = f"{BASE}/machining/line-9/cnc-w/cmd"
OFF = "factory/othersite/stamping/line-8/press-off/cmd"


class Client:
    """Publishes commands; records every reply and telemetry batch."""

    def __init__(self, port: int) -> None:
        self.messages: list[tuple[str, Any]] = []
        self._cond = threading.Condition()
        self._client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="write-tester",
                                   protocol=MQTTProtocolVersion.MQTTv311)
        self._client.reconnect_delay_set(1, 1)
        subscribed = threading.Event()
        self.subscriptions = 0  # one per (re)connect

        def on_subscribe(*args: Any) -> None:
            self.subscriptions += 1
            subscribed.set()
        self._client.on_connect = lambda c, u, f, rc, p: c.subscribe(
            [("factory/+/+/+/+/cmd/reply", 1), ("factory/+/+/+/+/telemetry", 0)])
        self._client.on_subscribe = on_subscribe
        self._client.on_message = self._on_message
        self._client.connect("127.0.0.1", port, keepalive=10)
        self._client.loop_start()
        assert subscribed.wait(10)

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        with self._cond:
            self.messages.append((msg.topic, json.loads(msg.payload)))
            self._cond.notify_all()

    def publish(self, topic: str, payload: bytes | str | dict[str, Any], retain: bool = False) -> None:
        """A command (a dict) is stamped with the time it is sent, as senders must."""
        if isinstance(payload, dict):
            payload = json.dumps({"ts": time.time_ns(), **payload})
        elif isinstance(payload, bytes):
            payload = _fresh(payload)
        self._client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(10)

    def replies(self, topic: str) -> list[dict[str, Any]]:
        with self._cond:
            return [m for t, m in self.messages if t == topic + "/reply"]

    def wait(self, predicate: Any, what: str, timeout: float = 20) -> Any:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found = predicate()
                if found:
                    return found
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"timed out waiting for {what}")
                self._cond.wait(left)

    def _find(self, topic: str, request_id: Any) -> dict[str, Any] | None:
        for t, m in self.messages:
            if t == topic + "/reply" and m.get("request_id") == request_id:
                return m
        return None

    def command(self, topic: str, signal_name: str, value: Any, request_id: str) -> dict[str, Any]:
        """Send one command and return its reply."""
        self.publish(topic, {"signal": signal_name, "value": value, "request_id": request_id})
        return self.wait(lambda: self._find(topic, request_id), f"the reply to {request_id}")  # type: ignore[no-any-return]

    def telemetry(self, machine: str) -> list[dict[str, Any]]:
        with self._cond:
            return [m for t, m in self.messages
                    if t.endswith("/telemetry") and m["machine"] == machine]

    def latest(self, machine: str, signal_name: str, after_seq: int = 0) -> Any:
        for batch in reversed(self.telemetry(machine)):
            if batch["seq"] <= after_seq:
                break
            for reading in batch["readings"]:
                if reading["signal"] == signal_name and reading["quality"] == "good":
                    return reading
        return None

    def close(self) -> None:
        self._client.loop_stop()
        self._client.disconnect()


@dataclass
class Rig:
    broker: Broker
    sims: LoopThread
    press: SetpointPress
    cnc: CncSimulator
    agent: Agent
    agent_off: Agent
    client: Client
    off_press: SetpointPress


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    root = tmp_path_factory.mktemp("write")
    broker = Broker(root / "mosquitto")
    # Subscriptions go to a log file: the disabled agent must not make any.
    broker.conf.write_text(broker.conf.read_text() + f"log_dest file {root}/mosquitto.log\n"
                           "log_type subscribe\n")
    broker.start()
    sims = LoopThread()
    press, slow_press, off_press = SetpointPress(), SetpointPress(), SetpointPress()
    press.setpoints[4] = 0b1  # hr:60 bit 0 is set: a bit write must leave it so
    servers = [ModbusTcpServer(press, port=0),
               ModbusTcpServer(slow_press, port=0, faults=FaultConfig(delay_ms=1500)),
               ModbusTcpServer(off_press, port=0)]
    for server in servers:
        sims.run(server.start())
    cnc = CncSimulator(port=free_port(), time_scale=5.0, alarm_every=0)
    sims.run(cnc.start())
    client = Client(broker.port)
    # Published before the agent subscribes: on MQTT 5 the broker never hands it over.
    client.publish(PRESS, {"signal": "die.clamp_closed", "value": False,
                           "request_id": "retained-1"}, retain=True)
    agent = Agent(root / "on", agent_yaml("gw-w", broker.port,
                                          "write: {enabled: true, timeout: 1s, queue_size: 2, "
                                          "burst: 100, unknown_machines: reply}\n"), {
        "press-w": press_yaml("press-w", "line-7", servers[0].port, "1s", PRESS_SIGNALS),
        "press-slow": press_yaml("press-slow", "line-7", servers[1].port, "3s",
                                 '  - {name: x.setpoint.speed, address: "hr:56", writable: true}\n'),
        "press-down": press_yaml("press-down", "line-7", free_port(), "200ms",
                                 '  - {name: die.clamp_closed, address: "co:1", writable: true}\n'),
        "cnc-w": CNC_YAML.format(url=cnc.endpoint.rstrip("/")),
    })
    # Another site: the enabled agent answers every command of its own site.
    agent_off = Agent(root / "off", agent_yaml("gw-off", broker.port, "", "othersite"), {
        "press-off": press_yaml("press-off", "line-8", servers[2].port, "1s",
                                '  - {name: x.setpoint.speed, address: "hr:56", writable: true}\n'),
    })
    rig = Rig(broker, sims, press, cnc, agent, agent_off, client, off_press)
    try:
        for machine in ("press-w", "cnc-w", "press-off"):
            client.wait(lambda m=machine: client.telemetry(m), f"telemetry of {machine}", 60)
        wait_for(lambda: any(e.get("event") == "subscribed to write commands"
                             for e in agent.logs()), 20, "the command subscription")
        yield rig
    finally:
        client.close()
        for a in (agent, agent_off):
            if a.proc.poll() is None:
                a.stop()
        sims.run(cnc.stop())
        for server in servers:
            sims.run(server.stop())
        sims.close()
        broker.stop()


def test_modbus_writes_reach_the_registers_in_the_signals_encoding(rig: Rig) -> None:
    c, sp = rig.client, rig.press.setpoints
    reply = c.command(PRESS, "x.setpoint.speed", 42.5, "speed-1")
    assert reply == {"request_id": "speed-1", "ok": True, "reason": None, "detail": None,
                     "machine": "press-w", "signal": "x.setpoint.speed", "value": 42.5,
                     "raw": 425, "ts": reply["ts"]}
    assert sp[0] == 425  # uint16, scale 0.1 reversed
    assert c.command(PRESS, "x.setpoint.force", 812.5, "force-1")["ok"]
    assert sp[2:4] == wo.float32(812.5, "CDAB")  # word_order: little
    assert c.command(PRESS, "x.setpoint.offset", -1234, "offset-1")["ok"]
    assert sp[1] == wo.int16(-1234)[0]
    assert c.command(PRESS, "x.setpoint.flags.hold", True, "bit-1")["ok"]
    assert sp[4] == 0b1001  # read-modify-write: bit 0 kept
    assert c.command(PRESS, "x.setpoint.flags.hold", False, "bit-2")["ok"]
    assert sp[4] == 0b0001
    assert c.command(PRESS, "x.setpoint.mode", "manual", "mode-1")["raw"] == 2
    assert sp[5] == 2
    assert c.command(PRESS, "x.setpoint.recipe", "R7", "recipe-1")["ok"]
    assert sp[6:8] == wo.ascii_string("R7", 2)
    # The agent reads back what it wrote.
    seq = c.telemetry("press-w")[-1]["seq"]
    c.wait(lambda: (c.latest("press-w", "x.setpoint.force", seq) or {}).get("value") == 812.5,
           "the written force in telemetry")
    assert c.latest("press-w", "x.setpoint.speed")["value"] == 42.5
    assert c.latest("press-w", "x.setpoint.mode")["value"] == "manual"


def test_a_coil_write(rig: Rig) -> None:
    c = rig.client
    assert rig.press.coils[1] is True
    assert c.command(PRESS, "die.clamp_closed", False, "coil-1")["ok"]
    assert rig.press.coils[1] is False
    assert c.command(PRESS, "die.clamp_closed", True, "coil-2")["ok"]
    assert rig.press.coils[1] is True


def test_an_opcua_write_with_the_nodes_data_type(rig: Rig) -> None:
    c = rig.client
    reply = c.command(CNC, "path.feed_override", 85, "feed-1")  # an integer, sent as Double
    assert reply["ok"], reply
    assert rig.cnc.model.feed_override == 85.0
    seq = c.telemetry("cnc-w")[-1]["seq"]
    c.wait(lambda: (c.latest("cnc-w", "path.feed_override", seq) or {}).get("value") == 85.0,
           "the written override in telemetry")
    assert c.command(CNC, "spindle.override", 95.5, "spindle-1")["ok"]
    assert rig.cnc.model.spindle_override == 95.5
    refused = c.command(CNC, "spindle.override", "fast", "spindle-2")
    assert (refused["reason"], refused["detail"]) == ("wrong_type", "expected a number")
    # The server does not let clients write the tool number: its status code is the detail.
    refused = c.command(CNC, "tool.number", 3, "tool-1")
    assert (refused["ok"], refused["reason"], refused["detail"]) == (
        False, "device_error", "BadUserAccessDenied")
    assert c.command(CNC, "path.feed_override", 151, "feed-2")["reason"] == "out_of_range"


@pytest.mark.parametrize("topic, signal_name, value, reason, detail", [
    (f"{BASE}/stamping/line-7/press-nope/cmd", "x.setpoint.speed", 1, "unknown_machine", None),
    (f"{BASE}/stamping/line-1/press-w/cmd", "x.setpoint.speed", 1, "unknown_machine", None),
    (PRESS, "no.such.signal", 1, "unknown_signal", None),
    (PRESS, "lubrication.pump_on", True, "not_writable", "the signal is not marked writable"),
    (PRESS, "x.setpoint.speed", "fast", "wrong_type", "expected a number"),
    (PRESS, "x.setpoint.speed", 12.34, "wrong_type", None),
    (PRESS, "x.setpoint.flags.hold", 1, "wrong_type", "expected true or false"),
    (PRESS, "x.setpoint.recipe", 42, "wrong_type", "expected a string"),
    (PRESS, "x.setpoint.speed", 100.5, "out_of_range", "100.5 is outside 0..100"),
    (PRESS, "x.setpoint.offset", 40000, "out_of_range", "raw value 40000 is outside -32768..32767"),
    (PRESS, "x.setpoint.mode", "turbo", "out_of_range", None),
    (PRESS, "x.setpoint.recipe", "R2D2X", "out_of_range", "longer than 4 characters"),
    (PRESS, "x.machine.state_code", 1, "device_error", "device_exception:2"),
    (DOWN, "die.clamp_closed", True, "not_connected", "the device is not connected"),
])
def test_refusals_say_why(rig: Rig, topic: str, signal_name: str, value: Any, reason: str,
                          detail: str | None) -> None:
    before = list(rig.press.setpoints)
    request_id = f"{reason}-{signal_name}-{value}"
    reply = rig.client.command(topic, signal_name, value, request_id)
    assert (reply["ok"], reply["reason"], reply["request_id"]) == (False, reason, request_id)
    assert reply["value"] is None and reply["raw"] is None
    if detail is not None:
        assert reply["detail"] == detail
    assert rig.press.setpoints == before


def test_a_slow_device_times_out_and_a_full_queue_is_busy(rig: Rig) -> None:
    c = rig.client
    c.wait(lambda: c.telemetry("press-slow"), "the slow press answering")
    for i in range(6):  # one runs or waits for the poll in progress, two wait, the rest: busy
        c.publish(SLOW, {"signal": "x.setpoint.speed", "value": i, "request_id": f"slow-{i}"})
    replies = c.wait(lambda: len(c.replies(SLOW)) >= 6 and c.replies(SLOW), "six replies")
    reasons = sorted(r["reason"] for r in replies)
    assert set(reasons) == {"busy", "timeout"} and reasons.count("timeout") <= 3, reasons
    assert sorted(r["request_id"] for r in replies) == [f"slow-{i}" for i in range(6)]


def test_a_retained_command_is_never_executed(rig: Rig) -> None:
    c = rig.client
    # Sent retained while the agent is subscribed: the retain flag is kept (MQTT 5 retain
    # as published), so it is refused although the broker delivers it live.
    c.publish(PRESS, {"signal": "die.clamp_closed", "value": False,
                      "request_id": "retained-2"}, retain=True)
    reply = c.wait(lambda: c._find(PRESS, "retained-2"), "the retained reply")
    assert (reply["ok"], reply["reason"]) == (False, "retained")
    # The one retained before the agent subscribed never even reached it.
    assert c.command(PRESS, "x.setpoint.speed", 11, "after-retained")["ok"]
    assert c._find(PRESS, "retained-1") is None
    assert rig.press.coils[1] is True
    # Clearing it reaches live subscribers too, as an empty (not retained) message.
    done = len(rig.client.replies(PRESS))
    rig.client.publish(PRESS, b"", retain=True)
    reply = rig.client.wait(lambda: rig.client.replies(PRESS)[done:], "the reply to the clearing")
    assert [r["reason"] for r in reply] == ["bad_json"]


def test_garbage_gets_replies_and_crashes_nothing(rig: Rig) -> None:
    c = rig.client
    before, done = list(rig.press.setpoints), len(c.replies(PRESS))
    garbage = [payload for payload, _ in GARBAGE if len(payload) <= 256 * 1024]
    for payload in garbage:
        c.publish(PRESS, payload)
    replies = c.wait(lambda: len(c.replies(PRESS)) >= done + len(garbage)
                     and c.replies(PRESS)[done:], "a reply to each payload")
    expected = [reason for payload, reason in GARBAGE if len(payload) <= 256 * 1024]
    assert [r["reason"] for r in replies] == expected
    assert rig.press.setpoints == before
    # Still polling and writing afterwards.
    seq = c.telemetry("press-w")[-1]["seq"]
    c.wait(lambda: c.latest("press-w", "x.setpoint.speed", seq), "telemetry after the garbage")
    assert c.command(PRESS, "x.setpoint.speed", 10, "after-garbage")["ok"]
    assert rig.press.setpoints[0] == 100


def test_every_command_has_an_audit_line(rig: Rig) -> None:
    lines = [e for e in rig.agent.logs() if e.get("event") == "write command"]
    ok = next(e for e in lines if e.get("request_id") == "speed-1")
    assert {k: ok[k] for k in ("machine", "signal", "value", "raw", "result", "level")} == {
        "machine": "press-w", "signal": "x.setpoint.speed", "value": 42.5, "raw": 425,
        "result": "ok", "level": "info"}
    failed = next(e for e in lines if e.get("request_id") == "tool-1")
    assert (failed["result"], failed["reason"], failed["detail"], failed["level"]) == (
        "failed", "device_error", "BadUserAccessDenied", "warning")
    refused = next(e for e in lines if e.get("request_id") == "retained-2")
    assert (refused["result"], refused["reason"]) == ("refused", "retained")
    replied = {m.get("request_id") for t, m in rig.client.messages if t.endswith("/reply")}
    assert replied - {None} <= {e.get("request_id") for e in lines}


def test_write_is_disabled_by_default_not_even_subscribed(rig: Rig) -> None:
    c = rig.client
    c.publish(OFF, {"signal": "x.setpoint.speed", "value": 7, "request_id": "off-1"})
    seq = c.telemetry("press-off")[-1]["seq"]
    c.wait(lambda: len([b for b in c.telemetry("press-off") if b["seq"] > seq]) >= 5,
           "five more polls of the disabled agent")
    assert c.replies(OFF) == [] and rig.off_press.setpoints == [0] * 8
    assert not any(e.get("event") == "subscribed to write commands" for e in rig.agent_off.logs())
    log = (rig.broker.dir.parent / "mosquitto.log").read_text()
    assert " edge-agent-gw-w 1 factory/testsite/+/+/+/cmd" in log
    assert "edge-agent-gw-off" not in log


def test_commands_are_subscribed_again_after_a_broker_restart(rig: Rig) -> None:
    def subscribed() -> int:
        return sum(e.get("event") == "subscribed to write commands" for e in rig.agent.logs())
    assert subscribed() == 1
    rig.broker.stop()
    rig.broker.start()
    wait_for(lambda: subscribed() == 2, 20, "the agent subscribing again")
    wait_for(lambda: rig.client.subscriptions == 2, 20, "the test client subscribing again")
    assert rig.client.command(PRESS, "x.setpoint.speed", 55, "after-restart")["ok"]
    assert rig.press.setpoints[0] == 550


def test_the_agents_ran_throughout_and_stop_cleanly(rig: Rig) -> None:
    assert rig.agent.proc.poll() is None and rig.agent_off.proc.poll() is None
    assert rig.agent.stop() == 0
    assert rig.agent_off.stop() == 0
    problems = [e for e in rig.agent.logs() if e.get("event") in (
        "task failed, restarting", "write command handling failed", "write failed in the driver")]
    assert problems == []
