"""What arrives from the broker is written by an attacker: hostile commands, Sparkplug
payloads, STATE messages, floods and oversized packets, sent to real agents through real
mosquitto. Each must be refused (a reply where one is due, a log line, a counter) without a
crash, a stall of polling, unbounded memory or a command that runs late or twice.

One rig for the file: a broker, a press simulator, a uns agent and a Sparkplug agent with
write-back on; tests that change an agent's session (the host's STATE, a restart) come last.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from agent.publish.connection import MqttConnection
from agent.publish.sparkplug.datatypes import DataType
from agent.publish.sparkplug.proto import Payload
from tests.support.harness import (REPO, AgentProcess, Broker, Simulator, free_port, press_machine,
                           wait_for)
from tests.support.sparkplug_decoder import decode_payload, encode_ncmd

pytestmark = pytest.mark.timeout(240)

SITE, GROUP, NODE, HOST = "testsite", "plant-1", "gw-spb", "scada"
PRESS_CMD = f"factory/{SITE}/stamping/line-1/press-u/cmd"
DCMD = f"spBv1.0/{GROUP}/DCMD/{NODE}/press-s"
NCMD = f"spBv1.0/{GROUP}/NCMD/{NODE}"
BOOLEAN = 11
WRITABLE = "signals:\n  - {name: die.clamp_closed, writable: true}\n"


def _agent(root: Path, broker: int, agent_id: str, mqtt_extra: str, write: str,
           machine: str, press: int) -> tuple[AgentProcess, int]:
    cfg = root / "config"
    (cfg / "machines.d").mkdir(parents=True)
    metrics = free_port()
    (cfg / "agent.yaml").write_text(
        f"agent: {{id: {agent_id}, site: {SITE}}}\n"
        f"mqtt: {{url: 'mqtt://127.0.0.1:{broker}', protocol: '5', reconnect_min: 100ms, "
        f"reconnect_max: 500ms, state_interval: 1s, {mqtt_extra}}}\n"
        "buffer: {path: buffer.db, commit_interval: 50ms}\n"
        f"metrics: {{listen: '127.0.0.1:{metrics}'}}\n"
        "logging: {level: info, format: json}\n"
        f"write: {{enabled: true, {write}}}\n")
    (cfg / "machines.d" / f"{machine}.yaml").write_text(
        press_machine(machine, press, fast="100ms") + WRITABLE)
    return AgentProcess(cfg, root / "state", root / "agent.log"), metrics


class Client:
    """A command sender that records replies and Sparkplug messages."""

    def __init__(self, port: int) -> None:
        self.messages: list[tuple[str, bytes, bool]] = []
        self._lock = threading.Lock()
        self._client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="attacker",
                                   protocol=MQTTProtocolVersion.MQTTv311)
        ready = threading.Event()
        self._client.on_connect = lambda c, u, f, rc, p: c.subscribe(
            [("factory/#", 1), ("spBv1.0/#", 1)])
        self._client.on_subscribe = lambda c, u, mid, rc, p: ready.set()
        self._client.on_message = self._message
        self._client.reconnect_delay_set(0.05, 0.5)
        self._client.max_inflight_messages_set(0)
        self._client.max_queued_messages_set(0)
        self._client.connect("127.0.0.1", port, keepalive=10)
        self._client.loop_start()
        assert ready.wait(10)

    def _message(self, client: Any, userdata: Any, msg: Any) -> None:
        with self._lock:
            self.messages.append((msg.topic, bytes(msg.payload), bool(msg.retain)))

    def publish(self, topic: str, payload: bytes | dict[str, Any], retain: bool = False,
                qos: int = 1, wait: bool = True) -> None:
        data = json.dumps(payload).encode() if isinstance(payload, dict) else payload
        info = self._client.publish(topic, data, qos=qos, retain=retain)
        if wait:
            info.wait_for_publish(10)

    def command(self, request_id: str, value: Any = True, **fields: Any) -> dict[str, Any]:
        return {"request_id": request_id, "signal": "die.clamp_closed", "value": value,
                "ts": time.time_ns(), **fields}

    def replies(self) -> list[dict[str, Any]]:
        with self._lock:
            return [json.loads(p) for t, p, _ in self.messages if t.endswith("/cmd/reply")]

    def reply(self, request_id: Any, timeout: float = 15) -> dict[str, Any]:
        return wait_for(lambda: next((r for r in self.replies()
                                      if r.get("request_id") == request_id), None),
                        timeout, f"the reply to {request_id}")  # type: ignore[no-any-return]

    def sparkplug(self, kind: str) -> list[dict[str, Any]]:
        with self._lock:
            return [decode_payload(p) for t, p, _ in self.messages
                    if t.startswith("spBv1.0/") and t.split("/")[2] == kind]

    def telemetry_seq(self, machine: str) -> int:
        with self._lock:
            seqs = [json.loads(p)["seq"] for t, p, _ in self.messages
                    if t.endswith(f"/{machine}/telemetry")]
        return max(seqs, default=0)

    def close(self) -> None:
        self._client.loop_stop()
        self._client.disconnect()


@dataclass
class Rig:
    root: Path
    broker: Broker
    press: Simulator
    uns: AgentProcess
    uns_metrics: int
    spb: AgentProcess
    spb_metrics: int
    client: Client


def scrape(port: int, name: str, **labels: str) -> float:
    """The value of one sample of an agent's /metrics (0 when absent)."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    for line in text.splitlines():
        head, _, value = line.rpartition(" ")
        if head == (f"{name}{{{want}}}" if want else name):
            return float(value)
    return 0.0


def audit(agent: AgentProcess, request_id: Any = None) -> list[dict[str, Any]]:
    return [e for e in agent.logs() if e.get("event") == "write command"
            and (request_id is None or e.get("request_id") == request_id)]


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    root = tmp_path_factory.mktemp("inbound")
    broker = Broker(root / "mosquitto")
    broker.start()
    press = Simulator(free_port())
    client = Client(broker.port)
    uns, uns_metrics = _agent(root / "uns", broker.port, "gw-uns", "max_packet_size: 8KiB",
                              "max_rate: 5, burst: 10", "press-u", press.port)
    spb, spb_metrics = _agent(
        root / "spb", broker.port, NODE,
        f"profile: sparkplug, sparkplug: {{group_id: {GROUP}, primary_host_id: {HOST}, "
        "max_command_bytes: 4KiB, max_command_metrics: 16, rebirth_interval: 2s}",
        "max_rate: 50, burst: 100", "press-s", press.port)
    client.publish(f"spBv1.0/STATE/{HOST}",
                   {"online": True, "timestamp": int(time.time() * 1000)}, retain=True)
    rig = Rig(root, broker, press, uns, uns_metrics, spb, spb_metrics, client)
    try:
        wait_for(lambda: client.telemetry_seq("press-u") > 0, 60, "telemetry of press-u")
        wait_for(lambda: client.sparkplug("DBIRTH"), 60, "the Sparkplug agent's DBIRTH")
        wait_for(lambda: any(e.get("event") == "subscribed to write commands"
                             for e in uns.logs()), 20, "the command subscription")
        yield rig
    finally:
        client.publish(DCMD, b"", retain=True)  # nothing retained outlives the rig
        client.close()
        for agent in (uns, spb):
            if agent.proc.poll() is None:
                agent.stop()
        press.stop()
        broker.stop()


def _dcmd(metric: Any, stamp_ms: int | None = None) -> bytes:
    """A DCMD of one metric filled by `metric(pm)` on the real protobuf schema."""
    payload = Payload()
    payload.timestamp = stamp_ms if stamp_ms is not None else int(time.time() * 1000)
    pm = payload.metrics.add()
    pm.name = "die.clamp_closed"
    metric(pm)
    return payload.SerializeToString()  # type: ignore[no-any-return]


def _bytes(datatype: DataType) -> Any:
    def fill(pm: Any) -> None:
        pm.datatype = datatype
        pm.bytes_value = b"\x01\x00\x00\x00"
    return fill


def _dataset(pm: Any) -> None:
    pm.datatype = DataType.DataSet
    pm.dataset_value.num_of_columns = 1
    pm.dataset_value.columns.append("c")
    pm.dataset_value.types.append(int(DataType.Boolean))
    pm.dataset_value.rows.add().elements.add().boolean_value = True


def _template(pm: Any) -> None:
    pm.datatype = DataType.Template
    pm.template_value.template_ref = "t"
    inner = pm.template_value.metrics.add()
    inner.name, inner.datatype, inner.boolean_value = "x", DataType.Boolean, True


# -- 1. no payload of any Sparkplug type crashes the agent, sent retained or not -------------

def test_dcmd_values_of_every_structured_type_are_refused_not_fatal(rig: Rig) -> None:
    kinds = [_bytes(DataType.Bytes), _bytes(DataType.File), _bytes(DataType.Int32Array),
             _bytes(DataType.BooleanArray), _dataset, _template]
    for fill in kinds:
        rig.client.publish(DCMD, _dcmd(fill))
    rig.client.publish(DCMD, _dcmd(_bytes(DataType.Bytes)), retain=True)
    wait_for(lambda: len([e for e in audit(rig.spb) if e["reason"] == "wrong_type"]) >= 6, 20,
             "a refusal of each")
    refused = [e for e in audit(rig.spb) if e["reason"] == "wrong_type"]
    assert all(e["result"] == "refused" and e["signal"] == "die.clamp_closed" for e in refused)
    assert refused[0]["detail"] == ("value must be a number, a string or true/false, not bytes")
    assert rig.spb.proc.poll() is None
    assert scrape(rig.spb_metrics, "edge_agent_mqtt_callback_errors_total") == 0
    rig.client.publish(DCMD, b"", retain=True)
    # The node goes on publishing.
    count = len(rig.client.sparkplug("DDATA"))
    wait_for(lambda: len(rig.client.sparkplug("DDATA")) > count + 3, 20, "more DDATA")


def test_an_exception_in_a_message_handler_drops_the_message_not_the_connection(
        rig: Rig) -> None:
    errors: list[tuple[str, str]] = []
    got: list[bytes] = []

    async def main() -> None:
        conn = MqttConnection("guard-test", "5", ("guard/will", b"", False), None, None, None,
                              16, lambda mid, ok: None, lambda: None,
                              lambda where, exc: errors.append((where, str(exc))))
        await conn.connect("127.0.0.1", rig.broker.port, 10)

        def handler(topic: str, payload: bytes, retain: bool) -> None:
            if payload == b"boom":
                raise RuntimeError("handler bug")
            got.append(payload)
        assert await conn.subscribe("guard/in", 1, handler)
        for payload in (b"boom", b"after"):
            rig.client.publish("guard/in", payload)
        async with asyncio.timeout(10):
            while not got:
                await asyncio.sleep(0.02)
        assert conn.is_connected
        await conn.disconnect()
    asyncio.run(main())
    assert got == [b"after"] and errors == [("deliver", "handler bug")]


def test_a_repeated_warning_of_a_library_never_raises_into_it() -> None:
    code = ("import logging\nfrom agent.runtime.logs import configure_logging\n"
            "configure_logging('info', 'json')\n"
            "for _ in range(3):\n    logging.getLogger('somelib').warning('disk %s', 'full')\n"
            "print('survived')\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[-1] == "survived"
    assert [json.loads(line)["event"] for line in lines[:-1]] == ["disk full"]


# -- 3. uns commands: retained, stale and replayed ones never run ------------------------------

def test_retained_stale_and_replayed_commands_never_run(rig: Rig) -> None:
    c = rig.client
    c.publish(PRESS_CMD, c.command("live-retained"), retain=True)
    assert c.reply("live-retained")["reason"] == "retained"
    c.publish(PRESS_CMD, b"", retain=True)  # cleared (refused as bad_json, unanswered by id)
    c.publish(PRESS_CMD, c.command("old", ts=time.time_ns() - 60 * 10**9))
    old = c.reply("old")
    assert (old["reason"], old["detail"].split(";")[1].strip()) == (
        "stale", "commands older than write.max_age (10 s) are never executed")
    c.publish(PRESS_CMD, c.command("ahead", ts=int(time.time() * 1000) + 60_000))
    assert c.reply("ahead")["reason"] == "stale"
    c.publish(PRESS_CMD, c.command("no-ts", ts=None))
    assert c.reply("no-ts")["reason"] == "wrong_type"
    once = c.command("once")
    c.publish(PRESS_CMD, once)
    assert c.reply("once")["ok"] is True
    c.publish(PRESS_CMD, once)  # the same message again: a replay
    wait_for(lambda: len([r for r in c.replies() if r["request_id"] == "once"]) == 2, 15,
             "the replay's reply")
    assert [r["reason"] for r in c.replies() if r["request_id"] == "once"] == [None, "duplicate"]
    assert [e["result"] for e in audit(rig.uns, "once")] == ["ok", "refused"]
    for request_id in ("live-retained", "old", "ahead", "no-ts"):
        assert [e["result"] for e in audit(rig.uns, request_id)] == ["refused"]


# -- 5. DCMD size and metric count ---------------------------------------------------------

def test_oversized_and_overfull_dcmds_are_refused_whole(rig: Rig) -> None:
    before = len(audit(rig.spb))
    metrics = [("die.clamp_closed", BOOLEAN, True)] * 17
    rig.client.publish(DCMD, encode_ncmd(metrics, int(time.time() * 1000)))
    big = encode_ncmd([("die.clamp_closed", BOOLEAN, True), ("x.pad", 12, "p" * 5000)],
                      int(time.time() * 1000))
    rig.client.publish(DCMD, big)
    wait_for(lambda: scrape(rig.spb_metrics, "edge_agent_mqtt_inbound_refused_total",
                            reason="payload_too_large") == 1
             and scrape(rig.spb_metrics, "edge_agent_mqtt_inbound_refused_total",
                        reason="too_many_metrics") == 1, 15, "both refusals counted")
    assert len(audit(rig.spb)) == before  # refused whole: no metric of them ran or was audited
    refusals = [e for e in rig.spb.logs() if e.get("event") == "Sparkplug DCMD refused"]
    assert {e["reason"] for e in refusals} == {"payload_too_large", "too_many_metrics"}


# -- 8. floods: rate limited per machine, audit lines valid JSON -----------------------------

def test_a_command_flood_is_rate_limited_and_every_log_line_is_json(rig: Rig) -> None:
    c = rig.client
    seq = c.telemetry_seq("press-u")
    started = time.monotonic()
    for i in range(300):
        c.publish(PRESS_CMD, c.command(f"flood-{i}"), qos=0, wait=False)
    for i in range(100):
        c.publish(PRESS_CMD, b'{"request_id": "nan-%d", "signal": "die.clamp_closed", '
                  b'"value": NaN, "ts": %d}' % (i, time.time_ns()), qos=0, wait=False)
    c.publish(PRESS_CMD, b"end", wait=True)
    wait_for(lambda: scrape(rig.uns_metrics, "edge_agent_write_commands_total",
                            machine="press-u", result="rate_limited") > 0, 15, "rate limiting")
    elapsed = time.monotonic() - started
    time.sleep(1)
    answered = [r for r in c.replies() if str(r["request_id"]).startswith(("flood-", "nan-"))]
    # burst 10, then 5 a second: far fewer than the 400 sent.
    assert 0 < len(answered) <= 10 + 5 * (elapsed + 2), len(answered)
    limited = scrape(rig.uns_metrics, "edge_agent_write_commands_total", machine="press-u",
                     result="rate_limited")
    assert limited >= 300
    assert any("rate limited" in str(e.get("event")) for e in rig.uns.logs())
    # Polling went on, and every line the agent wrote is strict JSON (no NaN).
    wait_for(lambda: c.telemetry_seq("press-u") > seq + 5, 20, "polls after the flood")

    def strict(name: str) -> Any:
        raise ValueError(name)
    for line in rig.uns.log_path.read_text().splitlines():
        json.loads(line, parse_constant=strict)


# -- 9. topics the sender chose are never echoed -------------------------------------------

def test_commands_for_unknown_machines_and_long_topics_get_no_reply(rig: Rig) -> None:
    c = rig.client
    time.sleep(2.5)  # the flood above emptied the bucket: a few tokens again
    for i in range(20):
        c.publish(f"factory/{SITE}/a/l/{'m' * 7_000}{i}/cmd", c.command(f"long-{i}"))
        c.publish(f"factory/{SITE}/stamping/line-1/nope-{i}/cmd", c.command(f"nope-{i}"))
    c.publish(PRESS_CMD, c.command("after-unknown"))
    assert c.reply("after-unknown")["ok"] is True
    with c._lock:
        echoed = [t for t, _, _ in c.messages if t.endswith("/reply") and t != PRESS_CMD + "/reply"]
    assert echoed == []
    assert scrape(rig.uns_metrics, "edge_agent_write_commands_total", machine="",
                  result="unknown_machine") == 40


# -- 10. the broker never sends a packet larger than max_packet_size -------------------------

def test_a_packet_over_max_packet_size_is_never_sent_to_the_agent(rig: Rig) -> None:
    c = rig.client
    time.sleep(1)
    def too_large() -> int:
        return sum(r["reason"] == "payload_too_large" for r in c.replies())
    before = too_large()
    c.publish(PRESS_CMD, c.command("padded-6k", pad="p" * 6000))  # read, and refused unread
    wait_for(lambda: too_large() > before, 15, "the 6 kB command refused")
    c.publish(PRESS_CMD, c.command("huge", pad="p" * 2_000_000))  # dropped by the broker
    c.publish(PRESS_CMD, c.command("after-huge"))
    assert c.reply("after-huge")["ok"] is True
    assert audit(rig.uns, "huge") == [] and "huge" not in {r["request_id"] for r in c.replies()}


# -- 6. rebirth requests ---------------------------------------------------------------------

def test_rebirth_requests_are_folded_to_one_per_interval(rig: Rig) -> None:
    c = rig.client
    births = len(c.sparkplug("NBIRTH"))
    started = time.monotonic()
    for _ in range(300):
        c.publish(NCMD, encode_ncmd([("Node Control/Rebirth", BOOLEAN, True)],
                                    int(time.time() * 1000)), qos=0, wait=False)
    c.publish(NCMD, b"", wait=True)
    wait_for(lambda: len(c.sparkplug("NBIRTH")) > births, 20, "a rebirth")
    time.sleep(4.5)  # two more intervals: the folded request has been served
    elapsed = time.monotonic() - started
    rebirths = len(c.sparkplug("NBIRTH")) - births
    assert 1 <= rebirths <= 1 + elapsed / 2, rebirths  # rebirth_interval: 2s
    assert scrape(rig.spb_metrics, "edge_agent_mqtt_inbound_refused_total",
                  reason="rebirth_throttled") >= 290


# -- 4. a retained DCMD is not run on a reconnect --------------------------------------------

def test_a_retained_dcmd_never_runs_not_even_after_a_reconnect(rig: Rig) -> None:
    c = rig.client
    time.sleep(2.5)  # leave the last rebirth's interval
    executed = len([e for e in audit(rig.spb) if e["result"] == "ok"])
    retained = len([e for e in audit(rig.spb) if e.get("reason") == "retained"])
    births = len(c.sparkplug("NBIRTH"))
    c.publish(DCMD, encode_ncmd([("die.clamp_closed", BOOLEAN, False)],
                                int(time.time() * 1000)), retain=True)
    wait_for(lambda: len([e for e in audit(rig.spb) if e.get("reason") == "retained"])
             > retained, 15, "the retained DCMD refused")
    connects = scrape(rig.spb_metrics, "edge_agent_uplink_connects_total")
    rig.broker.stop()
    rig.broker.start()
    wait_for(lambda: scrape(rig.spb_metrics, "edge_agent_uplink_connects_total") > connects,
             30, "the agent reconnecting")
    c.publish(f"spBv1.0/STATE/{HOST}", {"online": True, "timestamp": int(time.time() * 1000)},
              retain=True)
    wait_for(lambda: len(c.sparkplug("NBIRTH")) > births, 20, "births after the reconnect")
    time.sleep(1)
    assert len([e for e in audit(rig.spb) if e["result"] == "ok"]) == executed
    assert len([e for e in audit(rig.spb) if e.get("reason") == "retained"]) == retained + 1
    c.publish(DCMD, b"", retain=True)


# -- 7. STATE from the future -----------------------------------------------------------------

def test_a_forged_state_from_the_future_does_not_lock_the_node_out(rig: Rig) -> None:
    c = rig.client
    now = int(time.time() * 1000)
    births = len(c.sparkplug("NBIRTH"))
    deaths = len(c.sparkplug("NDEATH"))
    c.publish(f"spBv1.0/STATE/{HOST}", {"online": False, "timestamp": now + 10 * 365 * 86400_000},
              retain=True)
    wait_for(lambda: any("future" in str(e.get("event")) for e in rig.spb.logs()), 15,
             "the forged STATE ignored")
    assert len(c.sparkplug("NDEATH")) == deaths
    # The host's own STATEs still count: offline sends the node away, online brings it back.
    c.publish(f"spBv1.0/STATE/{HOST}", {"online": False, "timestamp": now + 1}, retain=True)
    wait_for(lambda: len(c.sparkplug("NDEATH")) > deaths, 15, "NDEATH on the host's offline")
    c.publish(f"spBv1.0/STATE/{HOST}", {"online": True, "timestamp": now + 2}, retain=True)
    wait_for(lambda: len(c.sparkplug("NBIRTH")) > births, 20, "NBIRTH when the host is back")


def test_the_agents_survived_everything(rig: Rig) -> None:
    for agent in (rig.uns, rig.spb):
        assert agent.proc.poll() is None
        problems = [e for e in agent.logs() if e.get("event") in (
            "task failed, restarting", "write command handling failed",
            "MQTT callback failed: dropped")]
        assert problems == []
        assert agent.stop() == 0
