"""The shipped mosquitto ACL (config/examples/mosquitto.acl) against a real mosquitto and a
real agent: the agent gets exactly its topics, an operator only the command topics, a reader
nothing to write, and nobody can take the agent's client id."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from tests.support.harness import REPO, AgentProcess, Broker, Simulator, free_port, press_machine, wait_for

pytestmark = pytest.mark.timeout(180)

USERS = {"edge-agent-gw-01": "agent-pw", "mes": "mes-pw", "twin": "twin-pw"}
CMD = "factory/changwon/stamping/line-1/press-01/cmd"


class User:
    def __init__(self, port: int, name: str, client_id: str | None = None) -> None:
        self.messages: list[tuple[str, bytes]] = []
        self.disconnects = 0
        self._lock = threading.Lock()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id or name,
                                  protocol=MQTTProtocolVersion.MQTTv311)
        self.client.username_pw_set(name, USERS[name])
        ready = threading.Event()
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe("#", qos=1)
        self.client.on_subscribe = lambda c, u, mid, rc, p: ready.set()
        self.client.on_message = self._message
        self.client.connect("127.0.0.1", port, keepalive=10)
        self.client.loop_start()
        assert ready.wait(10)

    def _message(self, client: Any, userdata: Any, msg: Any) -> None:
        with self._lock:
            self.messages.append((msg.topic, bytes(msg.payload)))

    def topics(self) -> set[str]:
        with self._lock:
            return {t for t, _ in self.messages}

    def replies(self) -> list[dict[str, Any]]:
        with self._lock:
            return [json.loads(p) for t, p in self.messages if t == CMD + "/reply"]

    def command(self, request_id: str) -> None:
        body = {"request_id": request_id, "signal": "die.clamp_closed", "value": True,
                "ts": time.time_ns()}
        self.client.publish(CMD, json.dumps(body), qos=1).wait_for_publish(10)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def test_the_shipped_acl_gives_each_user_exactly_its_topics(tmp_path: Path) -> None:
    broker = Broker(tmp_path / "mosquitto")
    passwd = broker.dir / "passwd"
    passwd.touch()
    for name, password in USERS.items():
        subprocess.run(["mosquitto_passwd", "-b", str(passwd), name, password], check=True,
                       capture_output=True)
    conf = broker.conf.read_text().replace("allow_anonymous true", "allow_anonymous false")
    broker.conf.write_text(conf + f"password_file {passwd}\n"
                           f"acl_file {REPO / 'config/examples/mosquitto.acl'}\n"
                           "use_username_as_clientid true\n")
    broker.start()
    press = Simulator(free_port())
    config = tmp_path / "config"
    (config / "machines.d").mkdir(parents=True)
    (config / "agent-password").write_text("agent-pw\n")
    (config / "agent-password").chmod(0o600)
    (config / "agent.yaml").write_text(
        "agent: {id: gw-01, site: changwon}\n"
        f"mqtt: {{url: 'mqtt://127.0.0.1:{broker.port}', username: edge-agent-gw-01, "
        "password_file: agent-password, reconnect_min: 100ms, reconnect_max: 500ms}\n"
        "buffer: {path: buffer.db}\nmetrics: {listen: null}\n"
        "logging: {level: info, format: json}\nwrite: {enabled: true}\n")
    (config / "machines.d" / "press.yaml").write_text(
        press_machine("press-01", press.port)
        + "signals:\n  - {name: die.clamp_closed, writable: true}\n")
    agent = AgentProcess(config, tmp_path / "state", tmp_path / "agent.log")
    twin = User(broker.port, "twin")
    mes = User(broker.port, "mes")
    try:
        base = "factory/changwon/stamping/line-1/press-01"
        wait_for(lambda: {f"{base}/telemetry", f"{base}/state",
                          "factory/changwon/_agent/gw-01/status"} <= twin.topics(), 30,
                 "the agent's telemetry, state and status")
        wait_for(lambda: any(e.get("event") == "subscribed to write commands"
                             for e in agent.logs()), 20, "the command subscription granted")
        # A reader cannot command; an operator can, and reads the reply.
        twin.command("from-twin")
        mes.command("from-mes")
        wait_for(lambda: any(r["request_id"] == "from-mes" for r in mes.replies()), 20,
                 "the reply to the operator")
        assert all(r["request_id"] != "from-twin" for r in mes.replies())
        assert [e["request_id"] for e in agent.logs() if e.get("event") == "write command"] \
            == ["from-mes"]
        # Nobody else can take the agent's client id: the broker names a client by its user.
        thief = User(broker.port, "twin", client_id="edge-agent-gw-01")
        time.sleep(1)
        thief.close()
        assert not any(e.get("event") == "broker connection lost; reconnecting"
                       for e in agent.logs())
        assert not any("refused" in str(e.get("event")) for e in agent.logs())
    finally:
        twin.close()
        mes.close()
        assert agent.stop() == 0
        press.stop()
        broker.stop()
