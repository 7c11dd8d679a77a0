"""Fuzzing with hypothesis, input side: hostile write commands, Sparkplug payloads and
mutated config files never make an exception escape, except the one error each entry point
documents. Examples per target: tests/support/fuzzing.py. The device side is in test_fuzz.py.
"""

from __future__ import annotations

import asyncio
import functools
import json
import re
import shutil
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import agent.config.loader as loader
import agent.config.templates as templates_mod
from agent.writeback.commands import CommandHub
from agent.config.loader import ConfigError, ConfigInvalid, LoadedConfig, load_config
from agent.config.models import AgentFile, signal_model
from agent.publish.sparkplug.codec import Metric, decode, encode
from agent.publish.sparkplug.datatypes import DataType
from drivers.registry import DRIVERS
from tests.support.harness import AgentProcess, Broker, free_port, press_machine, wait_for
from tests.support.fuzzing import FUZZ
from tests.support.harness import REPO

pytestmark = pytest.mark.slow

# ======================================================================== 4. MQTT commands

_TOPIC_PARTS = st.one_of(st.sampled_from(["a1", "l1", "m1", "m2", "cmd", "+", "#", "", "a1/l1"]),
                         st.text(max_size=8))


@st.composite
def command_topics(draw: st.DrawFn) -> str:
    kind = draw(st.integers(0, 3))
    if kind == 0:
        return "factory/s1/a1/l1/m1/cmd"
    if kind == 1:
        return "factory/s1/" + "/".join(draw(st.lists(_TOPIC_PARTS, min_size=0, max_size=6)))
    if kind == 2:
        return "/".join(draw(st.lists(_TOPIC_PARTS, max_size=8)))
    return draw(st.text(max_size=40))


_JSON_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(),
                          st.text(max_size=20), st.integers(-2**70, 2**70))
_JSON = st.recursive(_JSON_SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=10)
_SIGNALS = ["x.speed", "x.mode", "x.recipe", "x.clamp", "x.any", "x.ro", "no.such"]
_VALUES = st.one_of(_JSON, st.sampled_from(["off", "auto", "manual", "AB", "", "1e5"]),
                    st.sampled_from([0, 1, 2, -1, 100, 100.0001, 1e308, -0.0, True, False]),
                    st.text(max_size=300))


_REQUEST_IDS = st.one_of(st.text(max_size=130), st.integers(-2**64, 2**64), _JSON)
_SIGNAL_FIELDS = st.one_of(st.sampled_from(_SIGNALS), _JSON)
_EXTRA_FIELDS = st.dictionaries(st.text(max_size=5), _JSON, max_size=2)
# Mostly the time of sending (ns, ms, RFC 3339), else anything.
_TIMESTAMPS = st.one_of(st.builds(time.time_ns), st.builds(lambda: int(time.time() * 1000)),
                        st.builds(lambda: datetime.now(UTC).isoformat()),
                        st.integers(-2**70, 2**70), st.floats(), st.text(max_size=40), _JSON)
_ENCODINGS = st.sampled_from(["utf-8", "utf-8", "utf-16", "latin-1"])


@st.composite
def command_payloads(draw: st.DrawFn) -> bytes:
    kind = draw(st.integers(0, 4))
    if kind == 0:
        return draw(st.binary(max_size=100))
    if kind == 1:
        return json.dumps(draw(_JSON)).encode()
    body: dict[str, Any] = {}
    if draw(st.integers(0, 5)):
        body["request_id"] = draw(_REQUEST_IDS)
    if draw(st.integers(0, 5)):
        body["signal"] = draw(_SIGNAL_FIELDS)
    if draw(st.integers(0, 5)):
        body["value"] = draw(_VALUES)
    if draw(st.integers(0, 5)):
        body["ts"] = draw(_TIMESTAMPS)
    body.update(draw(_EXTRA_FIELDS))
    text = json.dumps(body)  # NaN, Infinity written as JSON's extensions, as Python reads them
    if kind == 4:  # damaged on the way
        cut = draw(st.integers(0, len(text)))
        text = text[:cut] + draw(st.text(max_size=3)) + text[cut + draw(st.integers(0, 3)):]
    return text.encode(draw(_ENCODINGS), errors="replace")


class _RecordingLog:
    def __init__(self) -> None:
        self.exceptions: list[str] = []

    def exception(self, message: str, **fields: Any) -> None:
        self.exceptions.append(message)

    def __getattr__(self, name: str) -> Any:
        return lambda *args, **kwargs: None


@dataclass
class _Machine:
    id: str
    model: Any


@functools.cache
def _hub_signals() -> list[Any]:
    modbus = signal_model(DRIVERS["modbus-tcp"])
    opcua = signal_model(DRIVERS["opcua"])
    return [
        modbus.model_validate({"name": "x.speed", "address": "hr:1", "scale": 0.1,
                               "offset": 3, "min": -5, "max": 100, "writable": True}),
        modbus.model_validate({"name": "x.mode", "address": "hr:2", "type": "uint16",
                               "enum": {0: "off", 1: "auto", 2: "manual"}, "writable": True}),
        modbus.model_validate({"name": "x.recipe", "address": "hr:3", "type": "string(4)",
                               "writable": True}),
        modbus.model_validate({"name": "x.clamp", "address": "co:1", "writable": True}),
        modbus.model_validate({"name": "x.ro", "address": "hr:9"}),
        opcua.model_validate({"name": "x.any", "node": "ns=2;s=X", "writable": True}),
    ]


@pytest.fixture(scope="module")
def event_loop_for_hub() -> Iterator[asyncio.AbstractEventLoop]:
    """`submit` runs in the event loop (a queued command's deadline is loop time)."""
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


@pytest.fixture(scope="module")
def hubs() -> Iterator[dict[tuple[bool, bool], tuple[CommandHub, Any, _RecordingLog]]]:
    """(enabled, unknown machines ignored) -> (hub, m1's inbox, log)."""
    out = {}
    for enabled in (False, True):
        for ignore in (False, True):
            # The rate limit is not what this fuzzes: a bucket that never runs dry.
            cfg = AgentFile.model_validate({"agent": {"id": "gw", "site": "s1"}, "write": {
                "enabled": enabled, "queue_size": 1, "max_rate": 10_000, "burst": 100_000,
                "unknown_machines": "ignore" if ignore else "reply"}})
            log = _RecordingLog()
            hub = CommandHub(cfg, None, log)
            inbox = hub.attach(_Machine("m1", SimpleNamespace(area="a1", line="l1")),
                               {"fast": _hub_signals()})
            out[enabled, ignore] = hub, inbox, log
    yield out


@FUZZ
@given(command_topics(), command_payloads(), st.booleans(), st.booleans(), st.booleans())
def test_command_hub_answers_once_or_ignores(
        event_loop_for_hub: asyncio.AbstractEventLoop,
        hubs: dict[tuple[bool, bool], tuple[CommandHub, Any, _RecordingLog]], topic: str,
        payload: bytes, retain: bool, enabled: bool, ignore_unknown: bool) -> None:
    hub, inbox, log = hubs[enabled, ignore_unknown]
    inbox._queue.clear()  # queued by the previous example: never executed here

    async def submit() -> None:
        hub.submit(topic, payload, retain)

    event_loop_for_hub.run_until_complete(submit())
    replies = []
    while (reply := hub.take_reply()) is not None:
        replies.append(reply)
    queued = len(inbox._queue)
    assert not log.exceptions, log.exceptions
    assert len(replies) + queued <= 1
    ours = topic.startswith("factory/s1/") and topic.count("/") == 5 and topic.endswith("/cmd")
    if not ours:
        assert not replies and not queued
    elif not ignore_unknown or topic == "factory/s1/a1/l1/m1/cmd":
        # (Unknown machines are ignored before anything else, write disabled or not.)
        assert len(replies) + queued == 1
    for reply_topic, body in replies:
        assert reply_topic == topic + "/reply"
        answer = json.loads(body)
        assert answer["ok"] is False and isinstance(answer["reason"], str)


# ======================================================================== 5. Sparkplug


def _varint(n: int) -> bytes:
    out = bytearray()
    n &= (1 << 64) - 1
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _wire_message(depth: int) -> st.SearchStrategy[bytes]:
    """Protobuf wire data: fields of Payload/Metric/PropertySet numbers with any wire type."""
    field_no = st.one_of(st.integers(1, 20), st.integers(1, 2**29 - 1))
    varint = st.one_of(st.integers(0, 40), st.integers(0, 2**64 - 1), st.integers(-2**63, -1))
    nested = _wire_message(depth - 1) if depth > 0 else st.binary(max_size=12)
    field = st.one_of(
        st.tuples(field_no, st.just(0), varint).map(lambda t: _varint(t[0] << 3) + _varint(t[2])),
        st.tuples(field_no, st.sampled_from([1, 5]), st.binary(min_size=8, max_size=8)).map(
            lambda t: _varint(t[0] << 3 | t[1]) + (t[2] if t[1] == 1 else t[2][:4])),
        st.tuples(field_no, st.one_of(nested, st.text(max_size=8).map(str.encode),
                                      st.binary(max_size=8))).map(
            lambda t: _varint(t[0] << 3 | 2) + _varint(len(t[1])) + t[1]),
    )
    return st.lists(field, max_size=6).map(b"".join)


_WIRE_MESSAGES = _wire_message(2)  # built once: building the nested strategy costs more than a draw


@st.composite
def sparkplug_bytes(draw: st.DrawFn) -> bytes:
    kind = draw(st.integers(0, 2))
    if kind == 0:
        return draw(st.binary(max_size=200))
    if kind == 1:
        return draw(_WIRE_MESSAGES)
    datatype = draw(st.sampled_from([DataType.Int32, DataType.Double, DataType.String,
                                     DataType.Boolean, DataType.UInt64]))
    value = {DataType.Int32: 7, DataType.Double: 1.5, DataType.String: "s",
             DataType.Boolean: True, DataType.UInt64: 2**64 - 1}[datatype]
    data = bytearray(encode([Metric("m", value, datatype, 5, 1, False,
                                    {"Quality": (DataType.Int32, 192)})], 3, 10))
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(data)))
        op = draw(st.integers(0, 2))
        if op == 0 and at < len(data):
            data[at] = draw(st.integers(0, 255))
        elif op == 1:
            del data[at:at + draw(st.integers(1, 4))]
        else:
            data[at:at] = draw(st.binary(min_size=1, max_size=4))
    return bytes(data)


@FUZZ
@given(sparkplug_bytes())
def test_sparkplug_decode_raises_only_value_error(data: bytes) -> None:
    try:
        timestamp, seq, metrics = decode(data)
    except ValueError:
        return
    assert timestamp is None or isinstance(timestamp, int)
    assert seq is None or isinstance(seq, int)
    assert all(isinstance(m, Metric) for m in metrics)


class _SparkplugNode:
    """An agent as a Sparkplug edge node with write-back on, a machine whose device is not
    there (commands end not_connected), mosquitto, and a client that sends what it is given."""

    GROUP, NODE = "g1", "gw-fuzz"

    def __init__(self, root: Path) -> None:
        self.broker = Broker(root / "mosquitto")
        self.broker.start()
        config = root / "config"
        (config / "machines.d").mkdir(parents=True)
        (config / "agent.yaml").write_text(
            f"agent: {{id: {self.NODE}, site: s1}}\n"
            f"mqtt: {{url: 'mqtt://127.0.0.1:{self.broker.port}', profile: sparkplug, "
            f"sparkplug: {{group_id: {self.GROUP}}}, reconnect_min: 100ms}}\n"
            "buffer: {path: buffer.db}\nmetrics: {listen: null}\n"
            "logging: {level: info, format: json}\nwrite: {enabled: true}\n")
        (config / "machines.d" / "m1.yaml").write_text(
            press_machine("m1", free_port(), fast="1s")
            + "signals:\n  - {name: die.clamp_closed, writable: true}\n")
        self.agent = AgentProcess(config, root / "state", root / "agent.log")
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="fuzzer")
        self.client.max_queued_messages_set(0)
        self.client.connect("127.0.0.1", self.broker.port)
        self.client.loop_start()
        base = f"spBv1.0/{self.GROUP}"
        self.topics = [f"{base}/NCMD/{self.NODE}", f"{base}/DCMD/{self.NODE}/m1",
                       f"{base}/DCMD/{self.NODE}/nope"]
        wait_for(lambda: any(e.get("event") == "connected to broker" for e in self.agent.logs()),
                 30, "the agent connecting")

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()
        if self.agent.proc.poll() is None:
            self.agent.stop()
        self.broker.stop()


@pytest.fixture(scope="module")
def sparkplug_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[_SparkplugNode]:
    node = _SparkplugNode(tmp_path_factory.mktemp("spb-fuzz"))
    yield node
    node.close()


@FUZZ
@given(sparkplug_bytes(), st.integers(0, 2), st.booleans())
def test_sparkplug_commands_through_a_running_node(sparkplug_node: _SparkplugNode, data: bytes,
                                                   topic: int, retain: bool) -> None:
    """Every example goes through mosquitto into the running agent's command callback; the
    last test of this file checks what the agent made of them all."""
    node = sparkplug_node
    node.client.publish(node.topics[topic], data, qos=0, retain=retain)


def test_the_fuzzed_node_is_alive_and_still_takes_commands(sparkplug_node: _SparkplugNode) -> None:
    node = sparkplug_node
    for topic in node.topics:
        node.client.publish(topic, b"", retain=True).wait_for_publish(10)
    time.sleep(2)  # past the examples' rate limit burst
    stamp = int(time.time() * 1000)
    node.client.publish(node.topics[1], encode([Metric("die.clamp_closed", True,
                                                       DataType.Boolean)], None, stamp),
                        qos=1).wait_for_publish(10)

    def last_command() -> bool:
        return any(e.get("event") == "write command" and e.get("signal") == "die.clamp_closed"
                   and e.get("reason") == "not_connected" and e.get("value") is True
                   for e in node.agent.logs())
    wait_for(last_command, 60, "the last command refused as not_connected")
    assert node.agent.proc.poll() is None
    problems = [e for e in node.agent.logs() if e.get("event") in (
        "MQTT callback failed: dropped", "task failed, restarting",
        "write command handling failed")]
    assert problems == []


# ======================================================================== 6. YAML config

CONFIG = REPO / "config"
_MUTABLE: list[str] = (["agent.yaml"]
                       + [f"machines.d/{p.name}" for p in sorted((CONFIG / "examples" / "machines.d")
                                                                 .glob("*.yaml"))]
                       + [f"templates/{p.name}" for p in sorted((CONFIG / "templates")
                                                                .glob("*.yaml"))])
_YAML_SCALARS = ["null", "~", "true", "yes", "no", "0", "-1", "1e999", ".nan", "-.inf", '""',
                 "''", "0x1F", "0o17", "1_000", "2024-01-01", "12:30:00", "1s", "-5ms", "1GiB",
                 "!!binary aGk=", "&a x", "*a", "[]", "{}", "[1, [2]]", "{a: {b: c}}", "|\n  x",
                 "'\\x00'", '"\\u0000"', "9" * 40, "-", "?", ":", "#", "%", "@", "`", "!", "\t",
                 "ns=2;s=X", "hr:99999", "hr:1.99", "co:-1", "string(0)", "float128", "\u00e9",
                 "opc.tcp://", "mqtt://", "modbus-tcp", "opcua", "serial-line", "press-sim"]
_CHARS = st.sampled_from(list(":-[]{}#&*!|>'\",?%@` \n\t\\0123456789.aZ_~=+\u00e9\x00"))


def _mutate(data: st.DataObject, text: str) -> str:
    """The text with a few edits: characters or lines deleted, duplicated, replaced or
    swapped, values swapped, random YAML scalars put in as values or lines."""
    for _ in range(data.draw(st.integers(1, 3))):
        lines = text.split("\n")
        op = data.draw(st.integers(0, 8))
        at = data.draw(st.integers(0, max(len(text) - 1, 0)))
        row = data.draw(st.integers(0, len(lines) - 1))
        other = data.draw(st.integers(0, len(lines) - 1))
        if op == 0:  # delete characters
            text = text[:at] + text[at + data.draw(st.integers(1, 8)):]
        elif op == 1:  # duplicate characters
            text = text[:at] + text[at:at + data.draw(st.integers(1, 8))] + text[at:]
        elif op == 2:  # replace or insert a character
            keep = data.draw(st.integers(0, 1))
            text = text[:at] + data.draw(_CHARS) + text[at + keep:]
        elif op == 3:  # delete a line
            del lines[row]
            text = "\n".join(lines)
        elif op == 4:  # duplicate a line
            lines.insert(other, lines[row])
            text = "\n".join(lines)
        elif op == 5:  # swap two lines
            lines[row], lines[other] = lines[other], lines[row]
            text = "\n".join(lines)
        elif op in (6, 7):  # a value replaced by a random scalar, or two values swapped
            valued = [i for i, line in enumerate(lines) if re.search(r":\s+\S", line)]
            if not valued:
                continue
            i = valued[data.draw(st.integers(0, len(valued) - 1))]
            key, _, value = lines[i].partition(": ")
            if op == 6:
                value = data.draw(st.one_of(st.sampled_from(_YAML_SCALARS), st.text(max_size=6)))
            else:
                j = valued[data.draw(st.integers(0, len(valued) - 1))]
                key2, _, value2 = lines[j].partition(": ")
                lines[j] = f"{key2}: {value}"
                value = value2
            lines[i] = f"{key}: {value}"
            text = "\n".join(lines)
        else:  # a random scalar or mapping line inserted, at some indentation
            indent = " " * data.draw(st.sampled_from([0, 2, 4, 6, 1]))
            scalar = data.draw(st.sampled_from(_YAML_SCALARS))
            new = data.draw(st.sampled_from([f"{scalar}", f"k: {scalar}", f"- {scalar}",
                                             f"- {{name: x.y, address: {scalar}}}"]))
            lines.insert(row, indent + new)
            text = "\n".join(lines)
    return text


def _uses(path: Path) -> str | None:
    found = re.search(r"^use:\s*(\S+)", path.read_text(), re.M)
    return found.group(1) if found else None


@dataclass(frozen=True)
class _Roots:
    """One config root per example machine (agent.yaml, that machine alone in machines.d,
    the bundled templates as `templates/`), and which root each mutable file is in."""

    roots: dict[str, Path]  # machine file name -> root
    users: dict[str, list[str]]  # template file -> machine files whose chain uses it


@pytest.fixture(scope="module")
def config_roots(tmp_path_factory: pytest.TempPathFactory) -> Iterator[_Roots]:
    """Per example only the mutated file is parsed again (parsing is most of a load's
    cost; unchanged files are parsed once), machine models are built once per protocol,
    and a load validates one machine rather than all eight."""
    machines = sorted((CONFIG / "examples" / "machines.d").glob("*.yaml"))
    roots: dict[str, Path] = {}
    pristine: dict[str, bytes] = {}
    for machine in machines:
        root = tmp_path_factory.mktemp(f"fuzz-{machine.stem}")
        shutil.copy(CONFIG / "examples" / "agent.yaml", root / "agent.yaml")
        (root / "machines.d").mkdir()
        shutil.copy(machine, root / "machines.d" / machine.name)
        shutil.copytree(CONFIG / "templates", root / "templates")
        roots[machine.name] = root
        for path in root.rglob("*.yaml"):
            pristine[str(path)] = path.read_bytes()
    users: dict[str, list[str]] = {}
    for machine in machines:
        name = _uses(machine)
        while name is not None:
            users.setdefault(f"{name}.yaml", []).append(machine.name)
            name = _uses(CONFIG / "templates" / f"{name}.yaml")
    real_load_yaml = loader.load_yaml
    parsed: dict[tuple[str, str | None], Any] = {}

    def load_yaml(path: Path, name: str | None = None) -> Any:
        raw = path.read_bytes()
        if pristine.get(str(path)) != raw:
            return real_load_yaml(path, name)
        key = (str(path), name)
        if key not in parsed:
            parsed[key] = real_load_yaml(path, name)
        return parsed[key]

    models: dict[str, Any] = {}
    real_machine_model = loader.machine_model

    def machine_model(spec: Any) -> Any:
        if spec.protocol not in models:
            models[spec.protocol] = real_machine_model(spec)
        return models[spec.protocol]

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(loader, "load_yaml", load_yaml)
        mp.setattr(templates_mod, "load_yaml", load_yaml)
        mp.setattr(loader, "machine_model", machine_model)
        for root in roots.values():
            assert len(load_config(root, DRIVERS).machines) == 1
        yield _Roots(roots, users)
        # The parsed documents were shared by thousands of loads: none was changed by one.
        for root in roots.values():
            assert len(load_config(root, DRIVERS).machines) == 1


@FUZZ
@given(st.data())
def test_mutated_config_loads_or_gives_config_errors(config_roots: _Roots,
                                                     data: st.DataObject) -> None:
    rel = data.draw(st.sampled_from(_MUTABLE))
    folder, name = rel.split("/") if "/" in rel else ("", rel)
    if folder == "templates":
        machine = data.draw(st.sampled_from(config_roots.users[name]))
    elif folder == "machines.d":
        machine = name
    else:
        machine = data.draw(st.sampled_from(sorted(config_roots.roots)))
    root = config_roots.roots[machine]
    path = root / rel
    original = path.read_bytes()
    mutated = _mutate(data, original.decode())
    try:
        path.write_bytes(mutated.encode("utf-8", errors="surrogatepass"))
        try:
            loaded = load_config(root, DRIVERS)
        except ConfigInvalid as exc:
            assert exc.errors
            for error in exc.errors:
                assert isinstance(error, ConfigError)
                assert isinstance(error.file, str) and error.file
                assert isinstance(error.message, str) and error.message
                assert error.line is None or isinstance(error.line, int)
        else:
            assert isinstance(loaded, LoadedConfig)
    finally:
        path.write_bytes(original)
