"""MQTT security against a real mosquitto: mqtts:// with mutual TLS, hostname checking, the
CA, the TLS version floor, username and password from an environment variable or a file;
and the config and startup errors of `mqtt.tls`.

Every refusal is checked the same way: the agent says why in one clear log line, keeps
running and buffering, retries (the broker sees the attempts), publishes nothing; once the
cause is fixed the backlog arrives complete and in order.
"""

from __future__ import annotations

import getpass
import json
import os
import re
import shutil
import ssl
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from agent.config.loader import ConfigInvalid, load_config
from agent.config.models import TlsConfig
from agent.config.tls import tls_context
from drivers.registry import DRIVERS
from tests.support.harness import (REPO, AgentConfig, AgentProcess, Broker, Simulator, Subscriber,
                           assert_complete_and_ordered, buffer_stats, free_port, mosquitto_binary,
                           press_machine, wait_for)
from tests.support.tls_certs import CA, Issued

STATUS_TOPIC = "factory/testsite/_agent/gw-test/status"


# --------------------------------------------------------------------------- the parts


class Pki:
    """Everything the tests sign: one trusted CA, one that nobody trusts, and their
    certificates."""

    def __init__(self, root: Path) -> None:
        self.ca = CA.create(root / "ca", "edge-agent test CA")
        self.server = self.ca.issue("broker", ips=["127.0.0.1"], dns=["localhost"])
        self.server_dns_only = self.ca.issue("broker-dns-only", dns=["localhost"])
        self.server_expired = self.ca.issue("broker-expired", ips=["127.0.0.1"], expired=True)
        self.agent = self.ca.issue("gw-test", client=True)  # CN = MQTT identity
        self.subscriber = self.ca.issue("test-subscriber", client=True)
        self.other = CA.create(root / "other", "a CA nobody here trusts")
        self.other_agent = self.other.issue("gw-test", client=True)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def stack() -> Iterator[ExitStack]:
    """Stops what a test started (agent, subscriber, broker: last started, first stopped),
    whether the test passed or not."""
    with ExitStack() as s:
        yield s


@pytest.fixture
def press() -> Iterator[Simulator]:
    sim = Simulator(free_port(), "--spm", "120")
    yield sim
    sim.stop()


class TlsBroker(Broker):
    """mosquitto with one TLS listener on 127.0.0.1, its log in a file (to count connection
    attempts), optionally mutual TLS with the certificate's CN as username, a password file,
    an ACL, or capped at TLS 1.2."""

    def __init__(self, workdir: Path, pki: Pki, server: Issued, *, client_certs: bool = True,
                 passwords: dict[str, str] | None = None, acl: str | None = None,
                 tls12_only: bool = False, port: int | None = None) -> None:
        super().__init__(workdir)
        self.port = port or self.port
        self.log = self.dir / "mosquitto.log"
        self.env = dict(os.environ)
        lines = [
            f"listener {self.port} 127.0.0.1",
            f"cafile {pki.ca.cert}", f"certfile {server.cert}", f"keyfile {server.key}",
            "persistence true", f"persistence_location {self.dir}/",
            "max_queued_messages 0", "max_inflight_messages 0",
            f"log_dest file {self.log}",
            *(f"log_type {t}" for t in ("error", "warning", "notice", "information")),
            f"user {getpass.getuser()}",
        ]
        if client_certs:
            lines += ["require_certificate true", "use_identity_as_username true"]
        if passwords is not None:
            tool = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
            if not Path(tool).exists():
                pytest.skip("mosquitto_passwd is not installed")
            pwfile = self.dir / "passwords"
            for i, (user, password) in enumerate(passwords.items()):
                subprocess.run([tool, *(["-c"] if i == 0 else []), "-b", str(pwfile), user,
                                password], check=True, capture_output=True, timeout=30)
            lines += [f"password_file {pwfile}"]
        lines += ["allow_anonymous false" if client_certs or passwords else "allow_anonymous true"]
        if acl is not None:
            (self.dir / "acl").write_text(acl)
            lines += [f"acl_file {self.dir / 'acl'}"]
        if tls12_only:
            # mosquitto 2's `tls_version tlsv1.2` is a floor, not a cap (it still offers
            # TLS 1.3): the cap comes from OpenSSL's own configuration.
            lines += ["tls_version tlsv1.2"]
            cnf = self.dir / "openssl-tls12.cnf"
            cnf.write_text("openssl_conf = default_conf\n[default_conf]\nssl_conf = ssl_sect\n"
                           "[ssl_sect]\nsystem_default = tls12\n[tls12]\nMaxProtocol = TLSv1.2\n")
            self.env["OPENSSL_CONF"] = str(cnf)
        self.conf.write_text("\n".join(lines) + "\n")

    def start(self) -> None:
        self.proc = subprocess.Popen([mosquitto_binary(), "-c", str(self.conf)], env=self.env,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

        def listening() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                stderr = self.proc.stderr.read().decode()  # type: ignore[union-attr]
                raise RuntimeError(f"mosquitto exited: {stderr}")
            return self.log.exists() and " running" in self.log.read_text(errors="replace")
        wait_for(listening, 10, "mosquitto to start")

    def connection_attempts(self) -> int:
        """Log lines of connections from 127.0.0.1: one or two per attempt (a failed TLS
        handshake is logged as "New connection", "Client connection ... failed" or both)."""
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return len(re.findall(r"(New|Client) connection from 127\.0\.0\.1", text))

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


class TlsSubscriber(Subscriber):
    """The harness's recording subscriber, over TLS (and a client certificate or a password)."""

    def __init__(self, port: int, ca: Path, client: Issued | None = None,
                 username: str | None = None, password: str | None = None,
                 host: str = "127.0.0.1") -> None:
        self.messages = []
        self._lock = threading.Lock()
        self._client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="test-subscriber",
                                   protocol=MQTTProtocolVersion.MQTTv311, clean_session=False)
        context = ssl.create_default_context(cafile=str(ca))
        if client is not None:
            context.load_cert_chain(str(client.cert), str(client.key))
        self._client.tls_set_context(context)
        if username is not None:
            self._client.username_pw_set(username, password)
        self._client.reconnect_delay_set(0.05, 0.5)  # type: ignore[arg-type]
        self._subscribed = threading.Event()
        self._client.on_connect = lambda c, u, f, rc, p: c.subscribe("factory/#", qos=1)
        self._client.on_subscribe = lambda c, u, mid, rc, p: self._subscribed.set()
        self._client.on_message = self._on_message
        self._client.connect(host, port, keepalive=10)
        self._client.loop_start()
        if not self._subscribed.wait(10):
            raise RuntimeError("TLS subscriber could not subscribe")


class TlsAgent:
    """An agent config folder whose mqtt block points at `broker` over mqtts://, and the
    agent process run on it (started again after each `configure`)."""

    def __init__(self, tmp_path: Path, broker: Broker, press: Simulator) -> None:
        machines = {"press-a": press_machine("press-a", press.port)}
        self.cfg = AgentConfig(tmp_path, broker.port, machines)
        self.state = tmp_path / "state"
        self.log = tmp_path / "agent.log"
        self.config_dir = self.cfg.write()
        self.proc: AgentProcess | None = None

    def configure(self, fields: str, host: str = "127.0.0.1") -> None:
        """Rewrite agent.yaml: mqtts://host:port plus the given flow-style mqtt fields."""
        self.cfg.write()
        path = self.config_dir / "agent.yaml"
        plain = f"mqtt: {{url: 'mqtt://127.0.0.1:{self.cfg.broker_port}'"
        text = path.read_text()
        assert plain in text
        path.write_text(text.replace(
            plain, f"mqtt: {{url: 'mqtts://{host}:{self.cfg.broker_port}'"
                   + (f", {fields}" if fields else "")))

    def start(self, fields: str, host: str = "127.0.0.1") -> AgentProcess:
        self.configure(fields, host)
        self.proc = AgentProcess(self.config_dir, self.state, self.log)
        return self.proc

    def stop(self) -> None:
        if self.proc is not None:
            assert self.proc.stop() == 0
            self.proc = None

    def close(self) -> None:
        """Stop a still running agent, whatever its exit code (test teardown)."""
        if self.proc is not None and self.proc.proc.poll() is None:
            self.proc.stop()
        self.proc = None

    def logs(self) -> list[dict[str, Any]]:
        """Every log line of every run so far."""
        out = []
        for line in self.log.read_text(errors="replace").splitlines() if self.log.exists() else ():
            try:
                out.append(json.loads(line))
            except ValueError:
                out.append({"event": line})
        return out

    def stats(self) -> dict[str, Any]:
        return buffer_stats(self.config_dir, self.state)


def tls_fields(ca: Path, client: Issued | None = None, **extra: str) -> str:
    """`tls: {ca: ..., cert: ..., key: ..., **extra}` for TlsAgent.start."""
    fields = {"ca": ca, **({"cert": client.cert, "key": client.key} if client else {}), **extra}
    return "tls: {" + ", ".join(f"{k}: '{v}'" for k, v in fields.items()) + "}"


def connect_failures(agent: TlsAgent) -> list[dict[str, Any]]:
    return [line for line in agent.logs() if line.get("event") == "cannot connect to broker"]


def assert_refused_and_buffering(agent: TlsAgent, broker: TlsBroker, sub: Subscriber,
                                 expected: str) -> None:
    """The agent logged why at error level, retried, kept running, published nothing."""
    first = wait_for(lambda: [l for l in connect_failures(agent) if l.get("level") == "error"],
                     15, "the refusal in the agent log")[0]
    assert expected in first["error"], first
    assert first["error"].startswith(("TLS:", "broker refused the connection:")), first
    before = broker.connection_attempts()
    wait_for(lambda: broker.connection_attempts() >= before + 3, 15, "the agent to retry")
    wait_for(lambda: agent.stats()["batches"] >= 10, 15, "a backlog in the buffer")
    assert agent.proc is not None and agent.proc.proc.poll() is None, "the agent exited"
    assert sub.snapshot() == [], "nothing may reach the broker over a refused connection"
    # One failure, said once at error level: the retries repeat it at debug only.
    assert [l.get("level") for l in connect_failures(agent)] == ["error"], connect_failures(agent)
    assert "Traceback" not in agent.log.read_text()
    assert not any(l.get("event") == "connected to broker" for l in agent.logs())


def assert_backlog_delivered(agent: TlsAgent, sub: Subscriber) -> None:
    """After a graceful stop nothing is left in the buffer, and every seq arrived."""
    wait_for(lambda: len(sub.telemetry("press-a")) >= 20, 20, "telemetry after the fix")
    agent.stop()
    stats = agent.stats()
    assert stats["batches"] == 0
    assert_complete_and_ordered(sub.seqs("press-a"), stats["machines"]["press-a"]["seq"])


# --------------------------------------------------------------------------- delivery


def test_mutual_tls_delivers_with_the_certificate_as_identity(
        tmp_path: Path, stack: ExitStack, pki: Pki, press: Simulator) -> None:
    # The ACL only lets the CN of each client certificate in: delivery proves that the
    # broker saw the agent's certificate, not just an encrypted anonymous connection.
    broker = TlsBroker(tmp_path / "mosquitto", pki, pki.server, acl=(
        "user gw-test\ntopic write factory/#\n\nuser test-subscriber\ntopic read factory/#\n"))
    stack.callback(broker.stop)
    broker.start()
    sub = TlsSubscriber(broker.port, pki.ca.cert, pki.subscriber)
    stack.callback(sub.close)
    agent = TlsAgent(tmp_path, broker, press)
    stack.callback(agent.close)
    certs = agent.config_dir / "certs"  # relative paths: from the config folder
    certs.mkdir()
    for source, name in ((pki.ca.cert, "ca.pem"), (pki.agent.cert, "gw.pem"),
                         (pki.agent.key, "gw.key")):
        shutil.copy(source, certs / name)
    (certs / "gw.key").chmod(0o600)
    agent.start("tls: {ca: certs/ca.pem, cert: certs/gw.pem, key: certs/gw.key}")
    assert_backlog_delivered(agent, sub)
    connected = [l for l in agent.logs() if l.get("event") == "connected to broker"]
    assert connected and connected[0]["tls"] == "TLSv1.3", connected
    assert not any(l.get("event") == "TLS file needs attention" for l in agent.logs())
    assert "as edge-agent-gw-test (p5, c1, k30, u'gw-test')" in broker.log_text()
    statuses = [m.data()["status"] for m in sub.snapshot() if m.topic == STATUS_TOPIC]
    assert statuses[0] == "online" and statuses[-1] == "offline"


# --------------------------------------------------------------------------- refusals


@pytest.mark.parametrize("case", ["hostname", "wrong-ca"])
def test_untrusted_broker_certificate_is_refused_until_the_config_is_fixed(
        tmp_path: Path, stack: ExitStack, pki: Pki, press: Simulator, case: str) -> None:
    # hostname: the certificate is valid and signed by the right CA, but names only
    # `localhost`, and the agent dials 127.0.0.1. The fix is to dial the name it has.
    server = pki.server_dns_only if case == "hostname" else pki.server
    broker = TlsBroker(tmp_path / "mosquitto", pki, server, client_certs=False)
    stack.callback(broker.stop)
    broker.start()
    sub = TlsSubscriber(broker.port, pki.ca.cert, host="localhost")
    stack.callback(sub.close)
    agent = TlsAgent(tmp_path, broker, press)
    stack.callback(agent.close)
    if case == "hostname":
        agent.start(tls_fields(pki.ca.cert))
        expected = ("IP address mismatch, certificate is not valid for '127.0.0.1' "
                    "(the broker certificate must list 127.0.0.1 in its subjectAltName)")
    else:
        agent.start(tls_fields(pki.other.cert))
        # mosquitto sends its CA along ("self-signed certificate in certificate chain");
        # a broker sending its own certificate only gets "unable to get local issuer".
        expected = "(is mqtt.tls.ca the CA that signed the broker certificate?)"
    assert_refused_and_buffering(agent, broker, sub, expected)
    agent.stop()
    if case == "hostname":
        agent.start(tls_fields(pki.ca.cert), host="localhost")
    else:
        agent.start(tls_fields(pki.ca.cert))
    assert_backlog_delivered(agent, sub)


def test_expired_broker_certificate_is_refused_until_the_broker_renews_it(
        tmp_path: Path, stack: ExitStack, pki: Pki, press: Simulator) -> None:
    broker = TlsBroker(tmp_path / "mosquitto", pki, pki.server_expired, client_certs=False)
    stack.callback(broker.stop)
    broker.start()
    agent = TlsAgent(tmp_path, broker, press)
    stack.callback(agent.close)
    agent.start(tls_fields(pki.ca.cert))
    # No subscriber can connect to this broker either: check nothing was published
    # through the broker's own log instead.
    first = wait_for(lambda: connect_failures(agent), 15, "the refusal")[0]
    assert first["level"] == "error"
    assert first["error"] == "TLS: broker certificate rejected: certificate has expired"
    before = broker.connection_attempts()
    wait_for(lambda: broker.connection_attempts() >= before + 3, 15, "the agent to retry")
    assert "New client connected" not in broker.log_text()
    broker.stop()
    # The same agent, never restarted: the broker gets a valid certificate.
    broker.log.unlink()
    broker = TlsBroker(tmp_path / "mosquitto", pki, pki.server, client_certs=False,
                       port=broker.port)
    stack.callback(broker.stop)
    broker.start()
    sub = TlsSubscriber(broker.port, pki.ca.cert)
    stack.callback(sub.close)
    assert_backlog_delivered(agent, sub)


@pytest.mark.parametrize("case", ["no-client-cert", "untrusted-client-cert"])
def test_client_certificate_refused_by_the_broker_then_backlog_delivered(
        tmp_path: Path, stack: ExitStack, pki: Pki, press: Simulator, case: str) -> None:
    broker = TlsBroker(tmp_path / "mosquitto", pki, pki.server)
    stack.callback(broker.stop)
    broker.start()
    sub = TlsSubscriber(broker.port, pki.ca.cert, pki.subscriber)
    stack.callback(sub.close)
    agent = TlsAgent(tmp_path, broker, press)
    stack.callback(agent.close)
    if case == "no-client-cert":
        agent.start(tls_fields(pki.ca.cert))
        # TLS 1.3: the client's side of the handshake is already done when the broker
        # checks for a certificate; its refusal arrives as an alert on the first read.
        expected = ("TLS: tlsv13 alert certificate required (the broker requires a client "
                    "certificate: set mqtt.tls.cert and mqtt.tls.key)")
    else:
        agent.start(tls_fields(pki.ca.cert, pki.other_agent))
        expected = "TLS: tlsv1 alert unknown ca (the broker does not trust the CA of mqtt.tls.cert)"
    assert_refused_and_buffering(agent, broker, sub, expected)
    agent.stop()
    buffered = agent.stats()
    assert buffered["batches"] == sum(m["seq"] for m in buffered["machines"].values())  # none sent
    agent.start(tls_fields(pki.ca.cert, pki.agent))
    assert_backlog_delivered(agent, sub)
    assert sub.seqs("press-a")[0] == 1


def test_tls_version_floor_against_a_tls_1_2_broker(
        tmp_path: Path, stack: ExitStack, pki: Pki, press: Simulator) -> None:
    broker = TlsBroker(tmp_path / "mosquitto", pki, pki.server, tls12_only=True)
    stack.callback(broker.stop)
    broker.start()
    sub = TlsSubscriber(broker.port, pki.ca.cert, pki.subscriber)
    stack.callback(sub.close)
    agent = TlsAgent(tmp_path, broker, press)
    stack.callback(agent.close)
    # (and a key every user may read: allowed, but the agent says so)
    client = Issued("gw-test", pki.agent.cert, tmp_path / "gw-readable.key")
    shutil.copy(pki.agent.key, client.key)
    client.key.chmod(0o644)
    agent.start(tls_fields(pki.ca.cert, client, min_version="1.3"))
    assert_refused_and_buffering(
        agent, broker, sub, "TLS: tlsv1 alert protocol version (the broker and "
        "mqtt.tls.min_version share no TLS version)")
    agent.stop()
    agent.start(tls_fields(pki.ca.cert, client, min_version="1.2"))
    assert_backlog_delivered(agent, sub)
    warned = [l for l in agent.logs() if l.get("event") == "TLS file needs attention"]
    assert len(warned) == 2 and all(l["level"] == "warning" for l in warned)  # one per start
    assert warned[0]["problem"] == (f"mqtt.tls.key: {client.key} can be read by every user "
                                    "of this machine (mode 644): chmod 600 it")
    connected = [l for l in agent.logs() if l.get("event") == "connected to broker"]
    assert connected[-1]["tls"] == "TLSv1.2"


# --------------------------------------------------------------------------- passwords


@pytest.mark.parametrize("source", ["password_env", "password_file"])
def test_username_and_password_over_tls(
        tmp_path: Path, stack: ExitStack, pki: Pki, press: Simulator,
        monkeypatch: pytest.MonkeyPatch, source: str) -> None:
    broker = TlsBroker(tmp_path / "mosquitto", pki, pki.server, client_certs=False,
                       passwords={"edge": "s3cret pass:word", "reader": "r34d"})
    stack.callback(broker.stop)
    broker.start()
    sub = TlsSubscriber(broker.port, pki.ca.cert, username="reader", password="r34d")
    stack.callback(sub.close)
    agent = TlsAgent(tmp_path, broker, press)
    stack.callback(agent.close)
    if source == "password_env":
        monkeypatch.setenv("EDGE_TEST_MQTT_PASSWORD", "s3cret pass:word")
        secret = "password_env: EDGE_TEST_MQTT_PASSWORD"
    else:
        (agent.config_dir / "mqtt.password").write_text("s3cret pass:word\n")
        (agent.config_dir / "mqtt.password").chmod(0o600)
        secret = "password_file: mqtt.password"  # relative to the config folder
    agent.start(f"username: edge, {secret}, " + tls_fields(pki.ca.cert))
    assert_backlog_delivered(agent, sub)
    assert "u'edge'" in broker.log_text()


def test_wrong_password_is_refused_with_the_connack_reason(
        tmp_path: Path, stack: ExitStack, pki: Pki, press: Simulator) -> None:
    broker = TlsBroker(tmp_path / "mosquitto", pki, pki.server, client_certs=False,
                       passwords={"edge": "s3cret", "reader": "r34d"})
    stack.callback(broker.stop)
    broker.start()
    sub = TlsSubscriber(broker.port, pki.ca.cert, username="reader", password="r34d")
    stack.callback(sub.close)
    agent = TlsAgent(tmp_path, broker, press)
    stack.callback(agent.close)
    (agent.config_dir / "mqtt.password").write_text("not-the-password\n")
    agent.start("username: edge, password_file: mqtt.password, " + tls_fields(pki.ca.cert))
    # mosquitto 2 answers a bad password with "Not authorized" (0x87, 3.1.1: 5), not
    # with "Bad user name or password" (0x86).
    assert_refused_and_buffering(
        agent, broker, sub, "broker refused the connection: Not authorized (check "
        "mqtt.username, the password (mqtt.password_env / mqtt.password_file) and the "
        "broker's ACL)")
    assert "not authorised" in broker.log_text()
    # The refusal is not mistaken for a broker without MQTT 5.
    assert not any("falling back" in str(l.get("event")) for l in agent.logs())


# --------------------------------------------------------------------------- config errors

AGENT_HEAD = "agent:\n  id: gw-01\n  site: changwon\nmqtt:\n  url: mqtts://broker:8883\n"  # 5 lines


def _config_folder(root: Path, mqtt_lines: str) -> Path:
    (root / "machines.d").mkdir(parents=True)
    (root / "agent.yaml").write_text(AGENT_HEAD + mqtt_lines)
    (root / "machines.d" / "p.yaml").write_text(press_machine("p", 5020))
    return root


def _load_errors(root: Path) -> list[str]:
    with pytest.raises(ConfigInvalid) as info:
        load_config(root, DRIVERS)
    return [str(e) for e in info.value.errors]


@pytest.mark.parametrize("mqtt_lines, expected", [
    ("  username: gw-01\n  password: hunter2\n",
     [("agent.yaml:7: mqtt.password: inline passwords are not allowed: use password_env or "
      "password_file")]),
    ("  tls:\n    ca: ca.pem\n    cert: gw.pem\n",
     ["agent.yaml:6: mqtt.tls.key: required with cert: mutual TLS needs the client's private key"]),
    ("  tls: {ca: ca.pem, key: gw.key}\n",
     ["agent.yaml:6: mqtt.tls.key: given without cert: mutual TLS needs the client "
      "certificate too"]),
    ("  tls:\n    min_version: '1.1'\n",
     ["agent.yaml:7: mqtt.tls.min_version: '1.1' is not one of 1.2, 1.3"]),
    ("  tls:\n    min_version: 1.0\n",
     ["agent.yaml:7: mqtt.tls.min_version: '1.0' is not one of 1.2, 1.3"]),
    ("  tls:\n    min_version: TLSv1.3\n",
     ["agent.yaml:7: mqtt.tls.min_version: 'TLSv1.3' is not one of 1.2, 1.3"]),
    ("  tls:\n    ca: ca.pem\n    insecure_skip_verify: true\n",
     ["agent.yaml:8: mqtt.tls.insecure_skip_verify: unknown field"]),
    ("  tls:\n    ca: ''\n",
     ["agent.yaml:7: mqtt.tls.ca: '': string should have at least 1 character"]),
], ids=["inline-password", "cert-without-key", "key-without-cert", "min-version-1.1",
        "min-version-float", "min-version-spelt-tlsv", "no-verify-switch", "empty-ca"])
def test_tls_config_errors_at_load(tmp_path: Path, mqtt_lines: str, expected: list[str]) -> None:
    assert _load_errors(_config_folder(tmp_path, mqtt_lines)) == expected


def test_tls_min_version_as_a_yaml_number_is_accepted(tmp_path: Path) -> None:
    config = load_config(_config_folder(tmp_path, "  tls:\n    min_version: 1.3\n"), DRIVERS)
    assert config.agent.mqtt.tls is not None and config.agent.mqtt.tls.min_version == "1.3"


@pytest.mark.parametrize("missing", ["ca", "cert", "key"])
def test_missing_tls_file_stops_the_start_naming_file_line_and_field(
        tmp_path: Path, pki: Pki, missing: str) -> None:
    # Whether the files exist is checked when the agent starts (the loader does not resolve
    # agent.yaml's paths): exit code 2, the config error format, no traceback, no buffer.
    paths = {"ca": str(pki.ca.cert), "cert": str(pki.agent.cert), "key": str(pki.agent.key)}
    paths[missing] = f"certs/missing-{missing}.pem"
    config_dir = tmp_path / "config"
    (config_dir / "machines.d").mkdir(parents=True)
    (config_dir / "machines.d" / "p.yaml").write_text(press_machine("p", free_port()))
    (config_dir / "agent.yaml").write_text(
        "agent: {id: gw-test, site: testsite}\n"                 # 1
        "mqtt:\n"                                                # 2
        f"  url: 'mqtts://127.0.0.1:{free_port()}'\n"            # 3
        "  tls:\n"                                               # 4
        f"    ca: {paths['ca']}\n"                                # 5
        f"    cert: {paths['cert']}\n"                            # 6
        f"    key: {paths['key']}\n"                              # 7
        "buffer: {path: buffer.db}\n"
        "metrics: {listen: null}\n"
        "logging: {level: info, format: json}\n")
    line = {"ca": 5, "cert": 6, "key": 7}[missing]
    out = subprocess.run([sys.executable, "-m", "agent", "run", "-c", str(config_dir),
                          "--state-dir", str(tmp_path / "state")], cwd=REPO,
                         capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 2, out.stderr
    assert out.stderr.strip() == (f"edge-agent: agent.yaml:{line}: mqtt.tls.{missing}: "
                                  f"{config_dir}/certs/missing-{missing}.pem does not exist")
    assert not (tmp_path / "state" / "buffer.db").exists()


# --------------------------------------------------------------------------- TLS files


def _tls_folder(root: Path, **files: Path | str) -> Path:
    """A config folder whose agent.yaml names `files` in a block-style tls mapping, one per
    line from line 5 on (ca, cert, key in that order)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "agent.yaml").write_text(
        "agent: {id: gw-01, site: changwon}\nmqtt:\n  url: mqtts://broker:8883\n  tls:\n"
        + "".join(f"    {name}: {path}\n" for name, path in files.items()))
    return root


def _context_error(root: Path, **files: Path | str) -> str:
    with pytest.raises(ValueError) as info:
        tls_context(TlsConfig(**{k: str(v) for k, v in files.items()}), _tls_folder(root, **files))
    return str(info.value)


def test_tls_context_verifies_the_broker_and_its_name_by_default(tmp_path: Path, pki: Pki) -> None:
    for tls in (None, TlsConfig(), TlsConfig(ca=str(pki.ca.cert))):
        context = tls_context(tls, tmp_path)
        assert context.check_hostname is True
        assert context.verify_mode == ssl.CERT_REQUIRED
        assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert tls_context(TlsConfig(min_version="1.3"), tmp_path).minimum_version == \
        ssl.TLSVersion.TLSv1_3


def test_tls_files_are_relative_to_the_config_folder(tmp_path: Path, pki: Pki) -> None:
    for source in (pki.ca.cert, pki.agent.cert, pki.agent.key):
        shutil.copy(source, tmp_path / source.name)
    warnings: list[str] = []
    context = tls_context(TlsConfig(ca=pki.ca.cert.name, cert=pki.agent.cert.name,
                                    key=pki.agent.key.name), tmp_path, warnings.append)
    assert context.cert_store_stats()["x509_ca"] == 1
    assert warnings == []


def test_cert_and_key_may_be_one_file(tmp_path: Path, pki: Pki) -> None:
    both = tmp_path / "gw-both.pem"
    both.write_bytes(pki.agent.cert.read_bytes() + pki.agent.key.read_bytes())
    both.chmod(0o600)
    tls_context(TlsConfig(ca=str(pki.ca.cert), cert=str(both), key=str(both)), tmp_path)


def test_bad_tls_files_are_startup_errors_naming_line_field_and_file(
        tmp_path: Path, pki: Pki) -> None:
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    broken = tmp_path / "broken-ca.pem"
    broken.write_text("-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n")
    encrypted = pki.ca.issue("gw-encrypted", client=True, key_password=b"secret")
    ca, cert, key = pki.ca.cert, pki.agent.cert, pki.agent.key

    assert _context_error(tmp_path / "1", ca=garbage) == \
        f"agent.yaml:5: mqtt.tls.ca: {garbage} holds no PEM certificate"
    assert _context_error(tmp_path / "2", ca=key) == \
        f"agent.yaml:5: mqtt.tls.ca: {key} holds no PEM certificate"
    assert _context_error(tmp_path / "3", ca=broken).startswith(
        f"agent.yaml:5: mqtt.tls.ca: {broken} holds no valid PEM certificate (")
    assert _context_error(tmp_path / "3b", ca=ca, cert=broken, key=key).startswith(
        f"agent.yaml:6: mqtt.tls.cert: {broken} holds no valid PEM certificate (")
    bad_key = tmp_path / "bad.key"
    bad_key.write_text("-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n")
    assert _context_error(tmp_path / "3c", ca=ca, cert=cert, key=bad_key).startswith(
        f"agent.yaml:7: mqtt.tls.key: {bad_key} holds no valid PEM private key (")
    assert _context_error(tmp_path / "4", ca=ca, cert=key, key=key) == \
        f"agent.yaml:6: mqtt.tls.cert: {key} holds no PEM certificate"
    assert _context_error(tmp_path / "5", ca=ca, cert=cert, key=cert) == \
        f"agent.yaml:7: mqtt.tls.key: {cert} holds no PEM private key"
    assert _context_error(tmp_path / "6", ca=ca, cert=cert, key=pki.subscriber.key) == \
        f"agent.yaml:7: mqtt.tls.key: {pki.subscriber.key} is not the private key of {cert}"
    assert _context_error(tmp_path / "7", ca=ca, cert=encrypted.cert, key=encrypted.key) == (
        f"agent.yaml:7: mqtt.tls.key: {encrypted.key} is encrypted with a passphrase: the "
        "agent needs it unencrypted, readable by its user only")
    assert _context_error(tmp_path / "8", ca=ca, cert=cert, key=tmp_path) == \
        f"agent.yaml:7: mqtt.tls.key: {tmp_path} is not a file"
    assert _context_error(tmp_path / "9", ca="ca.pem") == \
        f"agent.yaml:5: mqtt.tls.ca: {tmp_path / '9' / 'ca.pem'} does not exist"


def test_key_the_agent_user_cannot_read_is_a_startup_error(pki: Pki) -> None:
    # Root reads any file, so as root the check runs as `nobody` (setpriv, util-linux).
    folder = Path(tempfile.mkdtemp(prefix="edge-agent-tls-"))  # not under pytest's 0700 tmp
    try:
        folder.chmod(0o755)
        for source, name in ((pki.agent.cert, "gw.pem"), (pki.agent.key, "gw.key")):
            shutil.copy(source, folder / name)
        (folder / "gw.pem").chmod(0o644)
        (folder / "gw.key").chmod(0o600 if os.geteuid() == 0 else 0)
        _tls_folder(folder, cert="gw.pem", key="gw.key")
        (folder / "agent.yaml").chmod(0o644)
        code = ("import sys; from pathlib import Path; from agent.config.models import TlsConfig; "
                "from agent.config.tls import tls_context\n"
                "try: tls_context(TlsConfig(cert='gw.pem', key='gw.key'), Path(sys.argv[1]))\n"
                "except ValueError as e: print(e)")
        command = [sys.executable, "-c", code, str(folder)]
        if os.geteuid() == 0:
            setpriv = shutil.which("setpriv")
            if setpriv is None:
                pytest.skip("running as root without setpriv to drop to another user")
            command = [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", *command]
        out = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=60,
                             check=False)
        if out.returncode != 0 and os.geteuid() == 0:
            pytest.skip(f"`nobody` cannot run this checkout's Python: {out.stderr[-200:]}")
        assert out.stdout.strip() == (f"agent.yaml:6: mqtt.tls.key: cannot read {folder}/gw.key: "
                                      "Permission denied"), out.stdout + out.stderr
    finally:
        shutil.rmtree(folder)


def test_world_readable_key_and_expired_client_certificate_are_warned_about(
        tmp_path: Path, pki: Pki) -> None:
    old = pki.ca.issue("gw-old", client=True, expired=True)
    old.key.chmod(0o644)
    warnings: list[str] = []
    tls_context(TlsConfig(ca=str(pki.ca.cert), cert=str(old.cert), key=str(old.key)),
                tmp_path, warnings.append)
    assert len(warnings) == 2, warnings
    assert warnings[0] == (f"mqtt.tls.key: {old.key} can be read by every user of this "
                           "machine (mode 644): chmod 600 it")
    assert re.fullmatch(rf"mqtt\.tls\.cert: {re.escape(str(old.cert))} expired on "
                        r"\d{4}-\d\d-\d\d \d\d:\d\d UTC", warnings[1]), warnings[1]
