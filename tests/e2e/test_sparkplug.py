"""Sparkplug B 3.0 edge node (mqtt.profile: sparkplug) against real mosquitto, checked by a
host application written here with its own decoder (tests/support/sparkplug_decoder.py).

Each test names the specification's normative statements (tck-id-...) it covers.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from tests.support.harness import (
    AgentConfig,
    AgentProcess,
    Broker,
    Simulator,
    free_port,
    press_machine,
    wait_for,
)
from tests.support.sparkplug_decoder import decode_payload, encode_ncmd
from tests.support.fault_proxy import FaultProxy

GROUP, NODE = "plant-1", "gw-test"
BOOLEAN = 11


@dataclass
class Seen:
    topic: str
    kind: str  # NBIRTH, DDATA, ...
    device: str | None
    payload: dict[str, Any]
    qos: int
    retain: bool


class Host:
    """A Sparkplug host application: records spBv1.0/#, sends commands and STATE."""

    def __init__(self, port: int, client_id: str = "host") -> None:
        self.seen: list[Seen] = []
        self._lock = threading.Lock()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                                  protocol=MQTTProtocolVersion.MQTTv311, clean_session=True)
        self.client.reconnect_delay_set(0.05, 0.5)
        ready = threading.Event()
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe("spBv1.0/#", qos=1)
        self.client.on_subscribe = lambda c, u, mid, rc, p: ready.set()
        self.client.on_message = self._message
        self.client.connect("127.0.0.1", port, keepalive=10)
        self.client.loop_start()
        if not ready.wait(10):
            raise RuntimeError("host could not subscribe")

    def _message(self, client: Any, userdata: Any, msg: Any) -> None:
        parts = msg.topic.split("/")
        if parts[1] == "STATE":
            return
        seen = Seen(msg.topic, parts[2], parts[4] if len(parts) > 4 else None,
                    decode_payload(msg.payload), msg.qos, bool(msg.retain))
        with self._lock:
            self.seen.append(seen)

    def all(self, kind: str | None = None) -> list[Seen]:
        with self._lock:
            return [s for s in self.seen if kind is None or s.kind == kind]

    def wait(self, kind: str, count: int = 1, timeout: float = 20) -> list[Seen]:
        return wait_for(lambda: (lambda got: got if len(got) >= count else None)(self.all(kind)),
                        timeout, f"{count} {kind}")

    def state(self, host_id: str, online: bool, stamp: int) -> None:
        self.client.publish(f"spBv1.0/STATE/{host_id}",
                            json.dumps({"online": online, "timestamp": stamp}), qos=1,
                            retain=True).wait_for_publish(5)

    def command(self, topic: str, metrics: list[tuple[str, int, Any]]) -> None:
        self.client.publish(topic, encode_ncmd(metrics, int(time.time() * 1000)),
                            qos=1).wait_for_publish(5)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def metrics_of(seen: Seen) -> dict[str, dict[str, Any]]:
    return {m["name"]: m for m in seen.payload["metrics"]}


def sparkplug(**extra: Any) -> str:
    block = ", ".join(f"{k}: {v}" for k, v in {"group_id": GROUP, **extra}.items())
    return f"profile: sparkplug, sparkplug: {{{block}}}"


@pytest.fixture
def press() -> Iterator[Simulator]:
    sim = Simulator(free_port())
    yield sim
    sim.stop()


def start(tmp_path: Path, broker_port: int, press_port: int, *, fast: str = "100ms",
          mqtt_extra: str | None = None, machines: dict[str, str] | None = None) -> AgentProcess:
    config = AgentConfig(tmp_path, broker_port,
                         machines or {"press-01": press_machine("press-01", press_port, fast=fast)},
                         mqtt_extra=mqtt_extra or sparkplug()).write()
    return AgentProcess(config, tmp_path / "state", tmp_path / f"agent-{time.monotonic_ns()}.log")


def test_session_births_data_seq_wrap_and_death(tmp_path: Path, broker: Broker,
                                               press: Simulator) -> None:
    """tck-id-topics-nbirth-mqtt, tck-id-payloads-nbirth-qos, tck-id-payloads-nbirth-retain,
    tck-id-payloads-nbirth-seq, tck-id-payloads-nbirth-timestamp, tck-id-payloads-nbirth-bdseq,
    tck-id-topics-nbirth-rebirth-metric, tck-id-operational-behavior-data-commands-rebirth-name,
    tck-id-operational-behavior-data-commands-rebirth-datatype,
    tck-id-operational-behavior-data-commands-rebirth-value, tck-id-payloads-dbirth-qos,
    tck-id-payloads-dbirth-retain, tck-id-payloads-dbirth-seq-inc, tck-id-payloads-dbirth-order,
    tck-id-topics-dbirth-metrics, tck-id-operational-behavior-data-publish-dbirth-values,
    tck-id-payloads-metric-datatype-req, tck-id-payloads-metric-datatype-not-req,
    tck-id-payloads-name-birth-data-requirement, tck-id-payloads-name-requirement,
    tck-id-payloads-sequence-num-always-included, tck-id-payloads-sequence-num-incrementing,
    tck-id-payloads-ndeath-will-message-qos, tck-id-payloads-ndeath-will-message-retain,
    tck-id-topics-ndeath-payload, tck-id-topics-ndeath-seq, tck-id-payloads-ndeath-bdseq,
    tck-id-topics-nbirth-bdseq-matching,
    tck-id-payloads-ndeath-will-message-publisher-disconnect-mqtt50 (a graceful stop on
    MQTT 5: DISCONNECT with the Will, which carries the session's bdSeq)."""
    host = Host(broker.port)
    agent = start(tmp_path, broker.port, press.port, fast="20ms")
    try:
        [nbirth] = host.wait("NBIRTH")
        # Enough messages for the shared seq to wrap past 255.
        wait_for(lambda: len(host.all()) > 300, 60, "300 messages")
    finally:
        agent.kill9()  # the broker sends the Will
    [death] = host.wait("NDEATH")
    everything = host.all()

    assert nbirth.topic == f"spBv1.0/{GROUP}/NBIRTH/{NODE}"
    assert (nbirth.qos, nbirth.retain, nbirth.payload["seq"]) == (0, False, 0)
    assert nbirth.payload["timestamp"] is not None
    node = metrics_of(nbirth)
    assert node["Node Control/Rebirth"]["datatype"] == BOOLEAN
    assert node["Node Control/Rebirth"]["value"] is False
    bd = node["bdSeq"]["value"]
    assert bd == 0  # the first session of this edge node

    # Births first, then data, with one seq for the whole node, 0..255 and around again.
    assert everything[0].kind == "NBIRTH" and everything[1].kind == "DBIRTH"
    dbirth = everything[1]
    assert dbirth.topic == f"spBv1.0/{GROUP}/DBIRTH/{NODE}/press-01"
    assert (dbirth.qos, dbirth.retain) == (0, False)
    born = metrics_of(dbirth)
    for name in ("press.force.peak.ch1", "cycle.count", "die.id", "motor.on",
                 "machine.availability", "Events"):
        assert name in born, name
    for m in born.values():
        assert m["datatype"] is not None and m["timestamp"] is not None
        assert m["is_null"] or m["field"] is not None  # a current value, or explicitly none
    messages = [s for s in everything if s.kind != "NDEATH"]
    seqs = [s.payload["seq"] for s in messages]
    assert all(seq is not None for seq in seqs)
    assert seqs == [i % 256 for i in range(len(seqs))]
    data = [s for s in messages if s.kind == "DDATA"]
    assert data and all(s.qos == 0 and not s.retain for s in data)
    for s in data:
        for m in s.payload["metrics"]:
            assert m["name"] in born and m["timestamp"] is not None
            assert m["datatype"] is None  # births declare it; data leaves it out

    # The Will: QoS 1, not retained, no seq, the bdSeq of the NBIRTH and nothing else.
    assert death.topic == f"spBv1.0/{GROUP}/NDEATH/{NODE}"
    assert (death.qos, death.retain, death.payload["seq"]) == (1, False, None)
    assert [m["name"] for m in death.payload["metrics"]] == ["bdSeq"]
    assert death.payload["metrics"][0]["value"] == bd

    # A new session: the next bdSeq, in its Will and its NBIRTH; a graceful stop says NDEATH.
    agent = start(tmp_path, broker.port, press.port)
    try:
        births = host.wait("NBIRTH", 2)
        assert metrics_of(births[1])["bdSeq"]["value"] == bd + 1
    finally:
        assert agent.stop() == 0
    deaths = host.wait("NDEATH", 2)
    assert deaths[1].payload["metrics"][0]["value"] == bd + 1
    host.close()


def test_rebirth_command_and_device_death_and_birth(tmp_path: Path, broker: Broker) -> None:
    """tck-id-edge-subscribe-ncmd, tck-id-operational-behavior-data-commands-rebirth-action-1,
    -action-2, -action-3 (a full rebirth: NBIRTH with seq 0 and the same bdSeq, then the
    DBIRTHs); tck-id-operational-behavior-device-ddeath, tck-id-payloads-ddeath-seq,
    tck-id-payloads-ddeath-timestamp: DDEATH when a machine is lost, DBIRTH before its data
    when it is back (tck-id-payloads-dbirth-order)."""
    port = free_port()
    sim = Simulator(port)
    host = Host(broker.port)
    agent = start(tmp_path, broker.port, port)
    try:
        [first] = host.wait("NBIRTH")
        host.wait("DDATA", 3)
        host.command(f"spBv1.0/{GROUP}/NCMD/{NODE}", [("Node Control/Rebirth", BOOLEAN, True)])
        births = host.wait("NBIRTH", 2)
        assert births[1].payload["seq"] == 0
        assert metrics_of(births[1])["bdSeq"]["value"] == metrics_of(first)["bdSeq"]["value"]
        after = host.all()[host.all().index(births[1]) + 1]
        assert after.kind == "DBIRTH" and after.payload["seq"] == 1

        sim.stop()
        [death] = host.wait("DDEATH")
        assert death.topic == f"spBv1.0/{GROUP}/DDEATH/{NODE}/press-01"
        assert death.payload["seq"] is not None and death.payload["timestamp"] is not None
        quiet = len(host.all("DDATA"))
        sim = Simulator(port)
        dbirths = host.wait("DBIRTH", 3)
        assert metrics_of(dbirths[2])["machine.availability"]["value"] == "AVAILABLE"
        # Nothing of press-01 between its death and its new birth.
        between = host.all()[host.all().index(death) + 1:host.all().index(dbirths[2])]
        assert all(s.kind != "DDATA" for s in between)
        host.wait("DDATA", quiet + 2)
    finally:
        assert agent.stop() == 0
        sim.stop()
        host.close()


def test_data_buffered_in_an_outage_is_replayed_as_historical(tmp_path: Path, broker: Broker,
                                                             press: Simulator) -> None:
    """Store and forward: after the new births, what was collected while the agent's link
    to the broker was cut comes in order with is_historical = true, then live data."""
    host = Host(broker.port)  # the host keeps its own connection throughout
    proxy = FaultProxy(broker.port)
    agent = start(tmp_path, proxy.port, press.port)
    try:
        host.wait("DDATA", 3)
        proxy.drop()
        down = time.time_ns() // 1_000_000
        time.sleep(2.0)
        up = time.time_ns() // 1_000_000
        proxy.pass_through()
        births = host.wait("NBIRTH", 2, timeout=30)

        def live_after_replay() -> bool:
            seen = host.all()
            return any(not m["is_historical"] for s in seen[seen.index(births[1]):]
                       if s.kind == "DDATA" for m in s.payload["metrics"])
        wait_for(live_after_replay, 20, "live data after the replay")
    finally:
        assert agent.stop() == 0
        host.close()
        proxy.close()
    everything = host.all()
    after = everything[everything.index(births[1]):]
    assert after[1].kind == "DBIRTH"
    replay = [m for s in after if s.kind == "DDATA" for m in s.payload["metrics"]]
    flags = [m["is_historical"] for m in replay]
    assert True in flags and flags == sorted(flags, reverse=True)  # historical first, then live
    angle = [m["timestamp"] for m in replay
             if m["name"] == "press.crank_angle" and m["is_historical"]]
    assert angle == sorted(angle)
    # The outage is covered: the crank angle, read every 100 ms, has no hole in it.
    during = [t for t in angle if down <= t <= up]
    assert len(during) >= 10
    assert max(b - a for a, b in zip(during, during[1:])) < 1000


def test_primary_host_state_and_two_brokers(tmp_path: Path, broker: Broker,
                                            press: Simulator) -> None:
    """tck-id-message-flow-edge-node-birth-publish-subscribe: births only after the primary
    host's online STATE (with a timestamp not older than the last seen); on its offline
    STATE, NDEATH and disconnect, then the next broker in the list; never two at once."""
    second = Broker(tmp_path / "second")
    second.start()
    host1, host2 = Host(broker.port, "host-1"), Host(second.port, "host-2")
    extra = sparkplug(primary_host_id="scada") + f", more_urls: ['mqtt://127.0.0.1:{second.port}']"
    agent = start(tmp_path, broker.port, press.port, mqtt_extra=extra)
    try:
        time.sleep(2.0)
        assert host1.all() == [] and host2.all() == []  # no host online: no birth
        stamp = int(time.time() * 1000)
        host1.state("scada", False, stamp)  # offline: still nothing
        time.sleep(1.0)
        assert host1.all("NBIRTH") == []
        host1.state("scada", True, stamp + 1)
        host1.wait("NBIRTH")
        host1.wait("DDATA", 2)
        host1.state("scada", True, stamp - 5)  # older than the last seen: ignored
        host1.state("scada", False, stamp + 2)
        host1.wait("NDEATH")
        left = len(host1.all())
        # The agent went to the next broker, and waits there for the host too.
        host2.state("scada", True, stamp + 3)
        host2.wait("NBIRTH", timeout=30)
        host2.wait("DDATA", 2)
        time.sleep(0.5)
        assert len(host1.all()) == left  # nothing more on the first broker
    finally:
        assert agent.stop() == 0
        host1.close()
        host2.close()
        second.stop()


def test_aliases_and_device_commands_through_the_write_allow_list(tmp_path: Path,
                                                                  broker: Broker,
                                                                  press: Simulator) -> None:
    """tck-id-payloads-alias-birth-requirement, aliases unique across the node's metrics,
    tck-id-payloads-alias-data-cmd-requirement,
    tck-id-operational-behavior-data-commands-rebirth-name-aliases,
    tck-id-edge-subscribe-dcmd, tck-id-operational-behavior-data-publish-dbirth-change
    (data carries changed metrics only); DCMD writes go
    through write-back's allow-list (die.clamp_closed writable, lubrication.pump_on not) and
    the new value comes back in DDATA."""
    machine = (press_machine("press-01", press.port)
               + "signals:\n  - {name: die.clamp_closed, writable: true}\n")
    host = Host(broker.port)
    agent = start(tmp_path, broker.port, press.port, mqtt_extra=sparkplug(aliases="true"),
                  machines={"press-01": machine})
    agent.stop()
    agent_yaml = tmp_path / "config" / "agent.yaml"
    agent_yaml.write_text(agent_yaml.read_text() + "write: {enabled: true}\n")
    agent = AgentProcess(tmp_path / "config", tmp_path / "state", tmp_path / "agent-2.log")
    try:
        births = host.wait("DBIRTH")
        nbirth = host.all("NBIRTH")[-1]
        dbirth = births[-1]
        node, device = metrics_of(nbirth), metrics_of(dbirth)
        assert node["Node Control/Rebirth"]["alias"] is None  # never aliased
        aliases = [m["alias"] for m in [*node.values(), *device.values()] if m["alias"] is not None]
        assert len(device) > 40 and all(m["alias"] is not None for m in device.values())
        assert len(aliases) == len(set(aliases))  # unique across the node and its devices
        by_alias = {m["alias"]: name for name, m in device.items()}
        host.wait("DDATA", 5)
        data = host.all("DDATA")
        for s in data:
            for m in s.payload["metrics"]:
                assert m["name"] is None and m["alias"] in by_alias
        # Changed metrics only: the die id never changes, so DDATA has it at most once
        # (when the birth came before its first read).
        assert sum(by_alias[m["alias"]] == "die.id" for s in data for m in s.payload["metrics"]) <= 1

        def values(name: str) -> list[Any]:
            """What the host knows of a metric: its birth value, then each DDATA one."""
            out = [m["value"] for m in dbirth.payload["metrics"] if m["name"] == name]
            return out + [m["value"] for s in host.all("DDATA") for m in s.payload["metrics"]
                          if by_alias[m["alias"]] == name]
        wait_for(lambda: values("die.clamp_closed")[-1] is True, 10, "the clamp closed")
        wait_for(lambda: values("lubrication.pump_on")[-1] is True, 10, "the lube pump on")
        pump = len(values("lubrication.pump_on"))

        topic = f"spBv1.0/{GROUP}/DCMD/{NODE}/press-01"
        host.command(topic, [("die.clamp_closed", BOOLEAN, False)])
        host.command(topic, [("lubrication.pump_on", BOOLEAN, False)])  # not writable
        wait_for(lambda: values("die.clamp_closed")[-1] is False, 15, "the written value in DDATA")
        time.sleep(1.5)  # lubrication.pump_on is polled every second: it did not change
        assert len(values("lubrication.pump_on")) == pump
    finally:
        assert agent.stop() == 0
        host.close()
    audit = [line for line in agent.logs() if line.get("event", "").startswith("write")]
    assert any(line.get("signal") == "lubrication.pump_on" and line.get("reason") == "not_writable"
               for line in audit), audit
