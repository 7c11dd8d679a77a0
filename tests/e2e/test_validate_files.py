"""`edge-agent validate` checks every file the config names as `run` will open it (password
files, credentials, TLS files, OPC UA certificates, keys and trust folder), with errors at
the line that names the file; one password reader (drivers/secrets.py) for the broker and
for OPC UA; and `password_credential` from systemd's $CREDENTIALS_DIRECTORY, against a real
mosquitto that requires a password and a real OPC UA server that requires one."""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from agent.config.models import MqttConfig
from drivers.opcua.config import OpcUaConnection
from drivers.opcua.security import create_certificate
from drivers.opcua.session import read_password as opcua_password
from tests.support.harness import (REPO, AgentConfig, AgentProcess, Broker, free_port, press_machine,
                           wait_for)

# The new modules are imported inside the tests that use them, so that the CLI tests run
# (and fail on their assertions) against code without them.

AGENT_HEAD = "agent:\n  id: gw-01\n  site: changwon\nmqtt:\n  url: mqtt://127.0.0.1:1883\n"  # 5 lines
MODBUS = ("id: press-07\nfamily: press\nconnection: {protocol: modbus-tcp, host: 127.0.0.1, "
          "port: 5020}\npoll: {fast: 1s}\nsignals:\n  - {name: cycle.count, address: \"hr:4\"}\n"
          "area: stamping\nline: line-2\n")


def validate(root: Path, *extra: str, env: dict[str, str] | None = None
             ) -> subprocess.CompletedProcess[str]:
    """`edge-agent validate -c root ...` as a process, outside any service environment.
    Checked for the user running the test unless `extra` names one: as root, validate would
    otherwise check for a local `edge-agent` user, if the machine has one."""
    base = {k: v for k, v in os.environ.items()
            if not k.startswith("EDGE_") and k != "CREDENTIALS_DIRECTORY"}
    if "--user" not in extra:
        extra = (*extra, "--user", me()[0])
    return subprocess.run([sys.executable, "-m", "agent", "validate", "-c", str(root), *extra],
                          cwd=REPO, env={**base, **(env or {})}, capture_output=True, text=True,
                          timeout=60)


def folder(root: Path, mqtt_lines: str, machines: dict[str, str] | None = None) -> Path:
    """A config folder whose agent.yaml has `mqtt_lines` under mqtt, from line 6 on."""
    (root / "machines.d").mkdir(parents=True, exist_ok=True)
    (root / "agent.yaml").write_text(AGENT_HEAD + mqtt_lines)
    for name, text in (machines or {"press-07.yaml": MODBUS}).items():
        (root / "machines.d" / name).write_text(text)
    return root


def secret(path: Path, text: str = "s3cret\n", mode: int = 0o600) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)
    return path


def me() -> tuple[str, str]:
    """(user, group) that own the files this test writes."""
    return pwd.getpwuid(os.geteuid()).pw_name, grp.getgrgid(os.getegid()).gr_name


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A folder every user can enter: pytest's tmp_path is inside a 0700 folder, which the
    service user could not enter whatever the file's own mode."""
    path = Path(tempfile.mkdtemp(prefix="edge-agent-validate-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path)


def _has_user(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


needs_nobody = pytest.mark.skipif(not _has_user("nobody"), reason="no user nobody")


# --------------------------------------------------------------------------- mqtt


def test_missing_password_file_is_an_error_at_its_line(tmp_path: Path) -> None:
    root = folder(tmp_path, "  username: edge\n  password_file: secrets/mqtt.password\n")  # 7
    result = validate(root)
    assert result.returncode == 2, result
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        f"agent.yaml:7: mqtt.password_file: {root}/secrets/mqtt.password does not exist",
        f"1 error(s) in {root}"]


def test_empty_password_file_is_an_error(tmp_path: Path) -> None:
    root = folder(tmp_path, "  username: edge\n  password_file: mqtt.password\n")
    secret(root / "mqtt.password", "\nsecond line\n")
    result = validate(root)
    assert result.returncode == 2, result
    assert result.stderr.splitlines() == [
        f"agent.yaml:7: mqtt.password_file: {root}/mqtt.password is empty "
        "(the password is its first line)", f"1 error(s) in {root}"]


@needs_nobody
def test_password_file_the_service_user_cannot_read(open_dir: Path) -> None:
    root = folder(open_dir, "  username: edge\n  password_file: mqtt.password\n")
    password = secret(root / "mqtt.password", mode=0o600)  # ours (root's, as root), 600
    user, group = me()
    result = validate(root, "--user", "nobody")
    assert result.returncode == 2, result
    assert result.stderr.splitlines() == [
        f"agent.yaml:7: mqtt.password_file: {password} is not readable by nobody "
        f"(owner {user}, group {group}, mode 600)",
        f"1 error(s) in {root}"]
    # Readable by others, so by nobody too: only the warning about exactly that.
    password.chmod(0o644)
    result = validate(root, "--user", "nobody")
    assert result.returncode == 0 and "not readable" not in result.stderr, result
    # A folder on the way that nobody cannot enter hides a file whatever its mode.
    root.chmod(0o700)
    result = validate(root, "--user", "nobody")
    assert result.returncode == 2
    assert result.stderr.splitlines()[0] == (
        f"agent.yaml:7: mqtt.password_file: {password} is not readable by nobody: it cannot "
        f"enter {root} (owner {user}, group {group}, mode 700)")


def test_unknown_service_user_is_refused(tmp_path: Path) -> None:
    result = validate(folder(tmp_path, ""), "--user", "no-such-user-here")
    assert result.returncode == 2
    assert result.stderr == ("edge-agent: --user: there is no user 'no-such-user-here' on "
                             "this machine\n")


@pytest.mark.parametrize("mode, who", [(0o644, "every user of this machine"),
                                       (0o640, "the group {group}")])
def test_password_file_others_can_read_is_a_warning(tmp_path: Path, mode: int, who: str) -> None:
    root = folder(tmp_path, "  username: edge\n  password_file: mqtt.password\n")
    secret(root / "mqtt.password", mode=mode)
    result = validate(root)
    assert result.returncode == 0, result
    assert result.stdout.startswith(f"{root}: OK (1 machine(s), ")
    assert result.stderr.splitlines() == [
        f"agent.yaml:7: mqtt.password_file: warning: {root}/mqtt.password can be read by "
        f"{who.format(group=me()[1])} (mode {mode:o}): chmod 600 it"]


def test_password_env_not_set_here_is_a_warning(tmp_path: Path) -> None:
    root = folder(tmp_path, "  username: edge\n  password_env: EDGE_TEST_UNSET_PASSWORD\n")
    result = validate(root)
    assert result.returncode == 0, result
    assert result.stderr.splitlines() == [
        "agent.yaml:7: mqtt.password_env: warning: environment variable "
        "EDGE_TEST_UNSET_PASSWORD is not set here; the service needs it when it starts"]
    assert validate(root, env={"EDGE_TEST_UNSET_PASSWORD": "x"}).stderr == ""


def test_password_credential_is_checked_where_credentials_exist(tmp_path: Path) -> None:
    root = folder(tmp_path, "  username: edge\n  password_credential: mqtt-password\n")
    outside = validate(root)  # a shell has no $CREDENTIALS_DIRECTORY: a warning only
    assert outside.returncode == 0, outside
    assert outside.stderr.startswith("agent.yaml:7: mqtt.password_credential: warning: "
                                     "CREDENTIALS_DIRECTORY is not set here")
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    inside = validate(root, env={"CREDENTIALS_DIRECTORY": str(credentials)})
    assert inside.returncode == 2, inside
    assert inside.stderr.splitlines()[0] == (
        f"agent.yaml:7: mqtt.password_credential: there is no credential mqtt-password in "
        f"{credentials}: add LoadCredential=mqtt-password:/path/to/the/file to the unit")
    secret(credentials / "mqtt-password")
    assert validate(root, env={"CREDENTIALS_DIRECTORY": str(credentials)}).stderr == ""


@pytest.mark.parametrize("tls, expected", [
    ("  tls: {ca: ca.pem}\n", "agent.yaml:6: mqtt.tls.ca: {root}/ca.pem does not exist"),
    ("  tls:\n    ca: not-pem.txt\n",  # tls_context's own check of the contents
     "agent.yaml:7: mqtt.tls.ca: {root}/not-pem.txt holds no PEM certificate"),
])
def test_tls_file_problems_are_errors(tmp_path: Path, tls: str, expected: str) -> None:
    root = folder(tmp_path, tls)
    (root / "not-pem.txt").write_text("hello\n")
    result = validate(root)
    assert result.returncode == 2, result
    assert result.stderr.splitlines() == [expected.format(root=root), f"1 error(s) in {root}"]


# --------------------------------------------------------------------------- OPC UA

OPCUA = """\
id: cnc-01
family: cnc
connection:
  protocol: opcua
  url: opc.tcp://127.0.0.1:4840
  security:
    policy: Basic256Sha256
    certificate: ../pki/own/cert.der
    private_key: ../pki/own/key.pem
    trust: ../pki/trusted
  auth: {username: edge, password_file: cnc.password}
poll: {fast: 1s}
signals:
  - {name: x.a.b, node: "i=85"}
area: machining
line: line-1
"""  # certificate on line 8, private_key 9, trust 10, auth 11; paths from machines.d/


def opcua_folder(root: Path) -> Path:
    folder(root, "", {"cnc-01.yaml": OPCUA})
    create_certificate(root / "pki" / "own" / "cert.der", root / "pki" / "own" / "key.pem",
                       "urn:test:edge-agent")
    (root / "pki" / "trusted").mkdir()
    secret(root / "machines.d" / "cnc.password")
    return root


def test_complete_opcua_files_pass(tmp_path: Path) -> None:
    result = validate(opcua_folder(tmp_path))
    assert result.returncode == 0 and result.stderr == "", result


def test_opcua_missing_certificate_is_an_error_at_the_machine_files_line(tmp_path: Path) -> None:
    root = opcua_folder(tmp_path)
    (root / "pki" / "own" / "cert.der").unlink()
    (root / "machines.d" / "cnc.password").write_text("")
    (root / "pki" / "own" / "key.pem").chmod(0o644)
    result = validate(root)
    assert result.returncode == 2, result
    at = root / "machines.d"
    assert result.stderr.splitlines() == [
        f"machines.d/cnc-01.yaml:8: connection.security.certificate: {at}/../pki/own/cert.der "
        "does not exist",
        f"machines.d/cnc-01.yaml:11: connection.auth.password_file: {at}/cnc.password is empty "
        "(the password is its first line)",
        f"machines.d/cnc-01.yaml:9: connection.security.private_key: warning: {at}/../pki/own/"
        "key.pem can be read by every user of this machine (mode 644): chmod 600 it",
        f"2 error(s) in {root}"]


def test_opcua_key_that_is_no_key_and_trust_that_is_no_folder(tmp_path: Path) -> None:
    root = opcua_folder(tmp_path)
    (root / "pki" / "own" / "key.pem").write_text("-----BEGIN PRIVATE KEY-----\nnope\n")
    (root / "pki" / "trusted").rmdir()
    (root / "pki" / "trusted").write_text("a file")
    result = validate(root)
    assert result.returncode == 2, result
    at = root / "machines.d"
    assert result.stderr.splitlines() == [
        f"machines.d/cnc-01.yaml:9: connection.security.private_key: {at}/../pki/own/key.pem "
        "holds no private key (PEM or DER)",
        f"machines.d/cnc-01.yaml:10: connection.security.trust: {at}/../pki/trusted is not a "
        "folder",
        f"2 error(s) in {root}"]


@needs_nobody
def test_opcua_files_the_service_user_cannot_read(open_dir: Path) -> None:
    root = opcua_folder(open_dir)  # certificate 644; key and password 600
    trusted = secret(root / "pki" / "trusted" / "server.der", "x", 0o600)
    user, group = me()
    owned = f"(owner {user}, group {group}, mode 600)"
    at = root / "machines.d"
    result = validate(root, "--user", "nobody")
    assert result.returncode == 2, result
    assert result.stderr.splitlines() == [
        f"machines.d/cnc-01.yaml:9: connection.security.private_key: {at}/../pki/own/key.pem "
        f"is not readable by nobody {owned}",
        f"machines.d/cnc-01.yaml:10: connection.security.trust: {at}/../pki/trusted/"
        f"{trusted.name} is not readable by nobody {owned}",
        f"machines.d/cnc-01.yaml:11: connection.auth.password_file: {at}/cnc.password is not "
        f"readable by nobody {owned}",
        f"3 error(s) in {root}"]


# --------------------------------------------------------------------------- one reader


def _outcomes(base: Path, auth: dict[str, str]) -> list[str | None]:
    """What the broker's and the OPC UA reader make of the same settings: the password, or
    the error message."""
    from agent.config.files import mqtt_password
    mqtt_cfg = MqttConfig.model_validate({"username": "edge", **auth})
    opcua = OpcUaConnection.model_validate(
        {"protocol": "opcua", "url": "opc.tcp://127.0.0.1:4840",
         "auth": {"username": "edge", "allow_plaintext_password": True, **auth}},
        context={"base_dir": base})  # as the loader validates a file in `base`
    readers: list[Callable[[], str | None]] = [mqtt_password(mqtt_cfg, base).read,
                                               lambda: opcua_password(opcua)]
    out: list[str | None] = []
    for read in readers:
        try:
            out.append(read())
        except (ValueError, ConnectionError) as exc:
            out.append(str(exc))
    return out


def test_mqtt_and_opcua_read_passwords_the_same_way(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)  # relative to the config file's folder, not the working folder
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    file = {"password_file": "pw"}
    (tmp_path / "pw").write_text("s3cret pass:word\r\nsecond line\n")
    assert _outcomes(tmp_path, file) == ["s3cret pass:word", "s3cret pass:word"]
    empty = f"{tmp_path}/pw is empty (the password is its first line)"
    for text in ("", "\n", "\nlater\n"):
        (tmp_path / "pw").write_text(text)
        assert _outcomes(tmp_path, file) == [f"mqtt.password_file: {empty}",
                                             f"connection.auth.password_file: {empty}"]
    (tmp_path / "pw").unlink()
    missing = f"{tmp_path}/pw does not exist"
    assert _outcomes(tmp_path, file) == [f"mqtt.password_file: {missing}",
                                         f"connection.auth.password_file: {missing}"]

    credential = {"password_credential": "the-password"}
    unset = ("CREDENTIALS_DIRECTORY is not set: run the agent from a systemd unit with "
             "LoadCredential=the-password:/path/to/the/file")
    assert _outcomes(tmp_path, credential) == [f"mqtt.password_credential: {unset}",
                                               f"connection.auth.password_credential: {unset}"]
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    absent = (f"there is no credential the-password in {tmp_path}: add "
              "LoadCredential=the-password:/path/to/the/file to the unit")
    assert _outcomes(tmp_path, credential) == [f"mqtt.password_credential: {absent}",
                                               f"connection.auth.password_credential: {absent}"]
    secret(tmp_path / "the-password", "from systemd\n", 0o400)
    assert _outcomes(tmp_path, credential) == ["from systemd", "from systemd"]


@pytest.mark.parametrize("auth, error", [
    ({"password_credential": "a/b"}, "should match pattern"),
    ({"password_credential": ".."}, "should match pattern"),
    ({"password_credential": "x", "password_file": "pw"},
     "give one of password_env, password_file or password_credential"),
    ({"password_credential": "x", "password_env": "PW"},
     "give one of password_env, password_file or password_credential"),
])
def test_password_credential_is_one_plain_name_and_the_only_source(
        auth: dict[str, str], error: str) -> None:
    with pytest.raises(ValueError, match=error):
        MqttConfig.model_validate({"username": "edge", **auth})
    with pytest.raises(ValueError, match=error):
        OpcUaConnection.model_validate({"protocol": "opcua", "url": "opc.tcp://h:4840",
                                        "auth": {"username": "edge", **auth}})


# --------------------------------------------------------------------------- LoadCredential


class PasswordBroker(Broker):
    """The harness's mosquitto, letting in only the users of `passwords`."""

    def __init__(self, workdir: Path, passwords: dict[str, str]) -> None:
        super().__init__(workdir)
        tool = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
        if not Path(tool).exists():
            pytest.skip("mosquitto_passwd is not installed")
        pwfile = self.dir / "passwords"
        for i, (user, password) in enumerate(passwords.items()):
            subprocess.run([tool, *(["-c"] if i == 0 else []), "-b", str(pwfile), user, password],
                           check=True, capture_output=True, timeout=30)
        conf = self.conf.read_text().replace("allow_anonymous true", "allow_anonymous false")
        self.conf.write_text(conf + f"password_file {pwfile}\n")


def connack(port: int, username: str | None, password: str | None) -> Any:
    """The broker's CONNACK reason for these credentials."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"probe-{username}")
    if username is not None:
        client.username_pw_set(username, password)
    answered = threading.Event()
    reasons: list[Any] = []

    def on_connect(client: Any, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        reasons.append(reason)
        answered.set()

    client.on_connect = on_connect
    client.connect("127.0.0.1", port, keepalive=10)
    client.loop_start()
    try:
        assert answered.wait(10), "no CONNACK"
    finally:
        client.disconnect()
        client.loop_stop()
    return reasons[0]


def test_agent_reads_the_broker_password_from_a_systemd_credential(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    broker = PasswordBroker(tmp_path / "mosquitto", {"edge": "s3cret pass:word"})
    broker.start()
    try:
        # The broker really refuses without the password.
        assert connack(broker.port, None, None).is_failure
        assert connack(broker.port, "edge", "wrong").is_failure
        credentials = tmp_path / "credentials"  # what systemd makes of LoadCredential=
        secret(credentials / "mqtt-password", "s3cret pass:word\n", 0o400)
        config = AgentConfig(tmp_path, broker.port, {"p": press_machine("p", free_port())},
                             mqtt_extra="username: edge, password_credential: mqtt-password"
                             ).write()
        monkeypatch.delenv("EDGE_TEST_MQTT_PASSWORD", raising=False)
        monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(credentials))
        agent = AgentProcess(config, tmp_path / "state", tmp_path / "agent.log")
        try:
            wait_for(lambda: any(l.get("event") == "connected to broker" for l in agent.logs()),
                     30, "the agent to connect with the credential's password")
            assert not any(l.get("event") == "cannot connect to broker" for l in agent.logs())
        finally:
            assert agent.stop() == 0
    finally:
        broker.stop()


def test_run_without_the_credential_exits_2_naming_the_field(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = AgentConfig(tmp_path, free_port(), {"p": press_machine("p", free_port())},
                         mqtt_extra="username: edge, password_credential: mqtt-password").write()
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    out = subprocess.run([sys.executable, "-m", "agent", "run", "-c", str(config),
                          "--state-dir", str(tmp_path / "state")], cwd=REPO,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2, out
    assert out.stderr == ("edge-agent: mqtt.password_credential: CREDENTIALS_DIRECTORY is not "
                          "set: run the agent from a systemd unit with "
                          "LoadCredential=mqtt-password:/path/to/the/file\n")
    assert not (tmp_path / "state").exists()


async def test_opcua_identity_password_from_a_systemd_credential(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from drivers.opcua.driver import OpcUaDriver
    from simulators.opcua.cnc import CncSimulator
    from tests.e2e.test_opcua_driver import connection, signals

    port = free_port()
    sigs = {"g": signals({"path": "Identification/Model"})}
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    async with CncSimulator(port=port, users={"edge": "s3cret"}, allow_anonymous=False):
        secret(tmp_path / "cnc-password", "s3cret\n", 0o400)
        driver = OpcUaDriver(connection(port, auth={"username": "edge",
                                                    "password_credential": "cnc-password",
                                                    "allow_plaintext_password": True}),
                             sigs, {"g": 1.0})
        await driver.connect()
        assert (await driver.read("g"))[0].quality == "good"
        await driver.close()
        (tmp_path / "cnc-password").unlink()
        driver = OpcUaDriver(connection(port, auth={"username": "edge",
                                                    "password_credential": "cnc-password",
                                                    "allow_plaintext_password": True}),
                             sigs, {"g": 1.0})
        with pytest.raises(ConnectionError, match="connection.auth.password_credential: there "
                           "is no credential cnc-password"):
            await driver.connect()
