"""Config that would exhaust the gateway or that the broker would refuse is refused at validate,
as `file:line: field: message`: alias bombs and huge files (also on SIGHUP), names too long
for MQTT topics, Sparkplug ids with control characters, credentials inside mqtt.url, and an
OPC UA password sent over an unencrypted session without an explicit opt-in."""

from __future__ import annotations

import signal
import tracemalloc
from pathlib import Path

import pytest

from agent.config import names
from agent.config.loader import load_config
from agent.config.yaml_source import MAX_ALIAS_NODES, MAX_FILE_BYTES
from drivers.registry import DRIVERS
from tests.support.harness import (AgentConfig, AgentProcess, Broker, Simulator, Subscriber, free_port,
                           press_machine, wait_for)
from tests.unit.test_config_errors import (AGENT, F, GOOD_SIGNAL, HEAD, errors_of, folder, machine,
                                      write, y)

MiB = 1024 * 1024
# Memory a refused file may cost at most; expanding any of the bombs below costs gigabytes.
MEMORY_BUDGET = 50 * MiB


def bomb(levels: int, mapping: bool = False) -> str:
    """Billion laughs: each line holds ten aliases of the line above (10**levels values)."""
    lines = []
    for level in range(levels):
        name = "abcdefghij"[level]
        items = ["lol"] * 10 if level == 0 else [f"*{'abcdefghij'[level - 1]}"] * 10
        body = (", ".join(f"k{i}: {item}" for i, item in enumerate(items)) if mapping
                else ", ".join(items))
        lines.append(f"{name}: &{name} {'{' if mapping else '['}{body}{'}' if mapping else ']'}\n")
    return "".join(lines)


def peak_memory_of_load(root: Path) -> tuple[list[str], int]:
    """The errors of loading `root`, and the peak memory Python allocated doing it."""
    tracemalloc.start()
    try:
        errors = errors_of(root)
        return errors, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


# ------------------------------------------------------------------------------ alias bombs

# After HEAD and one signal (lines 1-12) the bomb starts on line 13 with `a`. Line `e` (17)
# is where the expansion passes MAX_ALIAS_NODES: in the list form a..d add 12,330 values and
# every *d 11,111 more; in the mapping form a..d add 24,630 and every *d 22,221.
@pytest.mark.timeout(30)
@pytest.mark.parametrize("mapping", [False, True], ids=["list-of-lists", "mapping"])
def test_billion_laughs_is_refused_at_its_line_without_expanding_it(
        tmp_path: Path, mapping: bool) -> None:
    text = bomb(9, mapping)
    assert len(text.encode()) < 1000  # a few hundred bytes
    write(tmp_path, folder(machine(GOOD_SIGNAL) + text))
    errors, peak = peak_memory_of_load(tmp_path)
    assert errors == [f"{F}:17: alias *d makes the aliases of this file expand to more than "
                      f"{MAX_ALIAS_NODES} values, the most allowed"]
    assert peak < MEMORY_BUDGET, f"{peak / MiB:.1f} MB"


@pytest.mark.timeout(30)
def test_alias_bomb_in_agent_yaml_and_in_a_template_is_refused(tmp_path: Path) -> None:
    write(tmp_path, {"agent.yaml": AGENT + bomb(9),
                     "templates/laughs.yaml": "family: press\n" + bomb(9, mapping=True),
                     F: "use: laughs\n" + machine(GOOD_SIGNAL)})
    errors, peak = peak_memory_of_load(tmp_path)
    assert errors == [
        f"agent.yaml:8: alias *d makes the aliases of this file expand to more than "
        f"{MAX_ALIAS_NODES} values, the most allowed",
        f"templates/laughs.yaml:6: alias *d makes the aliases of this file expand to more than "
        f"{MAX_ALIAS_NODES} values, the most allowed (template laughs, used by {F}:1)"]
    assert peak < MEMORY_BUDGET, f"{peak / MiB:.1f} MB"


def test_alias_inside_its_own_anchor_is_refused(tmp_path: Path) -> None:
    write(tmp_path, folder(machine(GOOD_SIGNAL) + "x.loop: &loop [1, [2, *loop]]\n"))
    assert errors_of(tmp_path) == [f"{F}:13: alias *loop is inside its own anchor (a recursive "
                                   "structure cannot be a config)"]


def test_reusing_a_small_anchor_still_works(tmp_path: Path) -> None:
    # No shipped file uses anchors; a site's file may, to share fields between signals.
    write(tmp_path, folder(machine(
        '  - &counter {name: cycle.count, address: "hr:4", type: uint32, description: &d shared}',
        '  - {<<: *counter, name: press.stroke_rate, address: "hr:6"}',
        '  - {name: press.force.ch1, address: "hr:10", type: float32, description: *d}')))
    [loaded] = load_config(tmp_path, DRIVERS).machines
    assert [(s.name, s.type, s.description) for s in loaded.model.signals] == [
        ("cycle.count", "uint32", "shared"), ("press.stroke_rate", "uint32", "shared"),
        ("press.force.ch1", "float32", "shared")]


# ------------------------------------------------------------------------------ file size


def padded(text: str, size: int) -> str:
    """`text` followed by a comment that makes it `size` bytes long."""
    return text + "#" * (size - len(text.encode()) - 1) + "\n"


@pytest.mark.timeout(30)
@pytest.mark.parametrize("where", ["agent.yaml", F, "templates/big.yaml"])
def test_file_over_the_size_limit_is_refused_before_parsing(tmp_path: Path, where: str) -> None:
    files = folder(machine(GOOD_SIGNAL))
    if where == "templates/big.yaml":
        files[F] = "use: big\n" + files[F]
        files[where] = "family: press\n"
    files[where] = padded(files[where], 2 * MiB)
    write(tmp_path, files)
    errors, peak = peak_memory_of_load(tmp_path)
    note = f" (template big, used by {F}:1)" if where.startswith("templates/") else ""
    message = (f"the file is {2 * MiB} bytes; a config file may have at most {MAX_FILE_BYTES} "
               f"bytes (1 MiB){note}")
    assert errors == [f"{where}: {message}"]
    assert peak < 3 * MiB, f"{peak / MiB:.1f} MB"  # read no further than the limit


def test_file_of_exactly_the_limit_is_read(tmp_path: Path) -> None:
    write(tmp_path, folder(padded(machine(GOOD_SIGNAL), MAX_FILE_BYTES)))
    assert [m.id for m in load_config(tmp_path, DRIVERS).machines] == ["press-07"]


# ------------------------------------------------------------------------------ SIGHUP


def peak_rss(pid: int) -> int:
    """Peak resident memory of process `pid`, bytes (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


@pytest.mark.timeout(120)
def test_sighup_refuses_an_alias_bomb_and_a_huge_file_and_keeps_polling(
        tmp_path: Path, broker: Broker) -> None:
    sim = Simulator(free_port())
    try:
        config = AgentConfig(tmp_path, broker.port, {"keep": press_machine("keep", sim.port)}).write()
        sub = Subscriber(broker.port)
        agent = AgentProcess(config, tmp_path / "state", tmp_path / "agent.log")
        try:
            wait_for(lambda: sub.telemetry("keep"), 20, "keep publishing")
            (config / "machines.d" / "bomb.yaml").write_text(bomb(6))  # 10**6 values
            (config / "machines.d" / "huge.yaml").write_text(
                padded(press_machine("huge", sim.port), 2 * MiB))
            before = peak_rss(agent.proc.pid)
            agent.proc.send_signal(signal.SIGHUP)
            wait_for(lambda: [e for e in agent.logs()
                              if e.get("event") == "reload refused: keeping the running config"],
                     20, "the refused reload")
            errors = sorted(str(e["error"]) for e in agent.logs()
                            if e.get("event") == "reload refused: config error")
            assert errors == [
                f"machines.d/bomb.yaml:5: alias *d makes the aliases of this file expand to "
                f"more than {MAX_ALIAS_NODES} values, the most allowed",
                f"machines.d/huge.yaml: the file is {2 * MiB} bytes; a config file may have at "
                f"most {MAX_FILE_BYTES} bytes (1 MiB)"]
            grown = peak_rss(agent.proc.pid) - before
            assert grown < MEMORY_BUDGET, f"{grown / MiB:.1f} MB"
            count = len(sub.telemetry("keep"))
            wait_for(lambda: len(sub.telemetry("keep")) > count + 3, 20,
                     "keep polling after the refused reload")
        finally:
            assert agent.stop() == 0
        sub.close()
    finally:
        sim.stop()


# ------------------------------------------------------------------------------ names


@pytest.mark.parametrize(("field", "line"), [("id", 1), ("area", 3), ("line", 4)])
def test_machine_name_longer_than_a_topic_level_may_be_is_refused(
        tmp_path: Path, field: str, line: int) -> None:
    long = "m" * 70_000
    head = "\n".join(f"{field}: {long}" if row.startswith(f"{field}:") else row
                     for row in HEAD.split("\n"))
    write(tmp_path, folder(machine(GOOD_SIGNAL, head=head)))
    [error] = errors_of(tmp_path)
    assert error == (f"{F}:{line}: {field}: '{'m' * 59}...' is 70000 characters long; "
                     f"at most {names.MAX_NAME_CHARS}")


@pytest.mark.parametrize(("field", "line"), [("id", 2), ("site", 3)])
def test_agent_name_longer_than_a_topic_level_may_be_is_refused(
        tmp_path: Path, field: str, line: int) -> None:
    agent = AGENT.replace(f"  {field}: ", f"  {field}: {'a' * 100}", 1)
    write(tmp_path, folder(machine(GOOD_SIGNAL), agent=agent))
    [error] = errors_of(tmp_path)
    assert error.startswith(f"agent.yaml:{line}: agent.{field}: '{'a' * 59}...' is ")
    assert error.endswith(f" characters long; at most {names.MAX_NAME_CHARS}")


def test_names_at_the_limit_are_accepted(tmp_path: Path) -> None:
    head = (HEAD.replace("id: press-07", "id: " + "p" * names.MAX_NAME_CHARS)
            .replace("area: stamping", "area: " + "a" * names.MAX_NAME_CHARS))
    write(tmp_path, folder(machine(GOOD_SIGNAL, head=head)))
    assert [m.id for m in load_config(tmp_path, DRIVERS).machines] == ["p" * names.MAX_NAME_CHARS]


SPARKPLUG = AGENT + y("""
    mqtt:
      profile: sparkplug
      sparkplug:
        group_id: plant-3
        edge_node_id: gw-01
        primary_host_id: scada
    """)  # group_id on line 7, edge_node_id 8, primary_host_id 9


@pytest.mark.parametrize(("yaml_value", "problem"), [
    (r'"plant\0"', "contains the control character U+0000: MQTT topics may not hold control "
                   "characters"),
    (r'"pl\ant"', "contains the control character U+0007: MQTT topics may not hold control "
                  "characters"),
    (r'"plant\e[2J"', "contains the control character U+001B: MQTT topics may not hold "
                      "control characters"),
    (r'"plant\x7f"', "contains the control character U+007F: MQTT topics may not hold "
                     "control characters"),
    (r'"plant\N"', "contains the control character U+0085: MQTT topics may not hold control "
                   "characters"),
    (r'"plant\uD800"', "contains U+D800, which is not valid UTF-8"),
    (r'"plant\uFFFF"', "contains the noncharacter U+FFFF, which MQTT topics may not hold"),
    ("plant+3", "contains '+': it would split the topic level or make it a wildcard"),
    ("'plant#3'", "contains '#': it would split the topic level or make it a wildcard"),
    ("plant/3", "contains '/': it would split the topic level or make it a wildcard"),
    ("p" * 65, f"is 65 characters long; at most {names.MAX_NAME_CHARS}"),
], ids=["nul", "bell", "escape", "delete", "next-line", "surrogate", "noncharacter", "plus",
        "hash", "slash", "too-long"])
@pytest.mark.parametrize(("field", "line"), [
    ("group_id", 7), ("edge_node_id", 8), ("primary_host_id", 9)])
def test_sparkplug_id_that_is_no_valid_topic_level_is_refused(
        tmp_path: Path, field: str, line: int, yaml_value: str, problem: str) -> None:
    agent = SPARKPLUG.replace(f"{field}: ", f"{field}: {yaml_value} #", 1)
    write(tmp_path, folder(machine(GOOD_SIGNAL), agent=agent))
    assert errors_of(tmp_path) == [f"agent.yaml:{line}: mqtt.sparkplug.{field}: {problem} "
                                   "(a Sparkplug id is one level of its topics)"]


def test_sparkplug_ids_in_any_script_are_accepted(tmp_path: Path) -> None:
    agent = SPARKPLUG.replace("group_id: plant-3", "group_id: 창원공장")
    write(tmp_path, folder(machine(GOOD_SIGNAL), agent=agent))
    sparkplug = load_config(tmp_path, DRIVERS).agent.mqtt.sparkplug
    assert sparkplug is not None and sparkplug.group_id == "창원공장"


def test_assembled_topic_longer_than_the_broker_takes_is_refused_at_the_machine_id(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The per-name limits keep every topic far below MQTT's 65535 bytes; a lower ceiling
    # shows the check of whole topics (the agent's own status topic, 36 bytes, passes).
    monkeypatch.setattr(names, "MAX_TOPIC_BYTES", 50)
    write(tmp_path, folder(machine(GOOD_SIGNAL)))
    assert errors_of(tmp_path) == [
        f"{F}:1: id: the topic factory/changwon/stamping/line-2/press-07/telemetry is 51 bytes "
        "long; MQTT allows at most 50 (made of this machine's area, line and id under "
        "agent.yaml's names)"]
    monkeypatch.setattr(names, "MAX_TOPIC_BYTES", 30)
    assert errors_of(tmp_path)[0] == (
        "agent.yaml:2: agent.id: the topic factory/changwon/_agent/gw-01/status is 36 bytes "
        "long; MQTT allows at most 30 (with mqtt.topic_prefix and agent.site, or the "
        "Sparkplug ids)")


def test_sparkplug_device_topic_is_checked_too(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The device topics are shorter than the UNS ones (51 bytes) unless a Sparkplug id is
    # long: then a device topic is the one refused, while the edge node's (53) pass.
    monkeypatch.setattr(names, "MAX_TOPIC_BYTES", 60)
    agent = SPARKPLUG.replace("edge_node_id: gw-01", "edge_node_id: " + "n" * 30)
    write(tmp_path, folder(machine(GOOD_SIGNAL), agent=agent))
    topic = f"spBv1.0/plant-3/DBIRTH/{'n' * 30}/press-07"
    assert errors_of(tmp_path) == [
        f"{F}:1: id: the topic {topic[:60]}... is {len(topic)} bytes long; MQTT allows at most "
        "60 (made of this machine's area, line and id under agent.yaml's names)"]


# ------------------------------------------------------------------------------ mqtt.url


@pytest.mark.parametrize(("url", "shown"), [
    ("mqtt://s3cr3t@broker:1883", "mqtt://***@broker:1883"),
    ("mqtt://edge:s3cr3t@broker", "mqtt://***@broker"),
    ("mqtts://edge:s3c@r3t@broker:8883/", "mqtts://***@broker:8883/"),
    ("mqtt://edge:s3/cr3t@broker", "mqtt://***@broker"),
])
def test_credentials_in_mqtt_url_are_refused_without_echoing_them(
        tmp_path: Path, url: str, shown: str) -> None:
    write(tmp_path, folder(machine(GOOD_SIGNAL), agent=AGENT + f'mqtt: {{url: "{url}"}}\n'))
    assert errors_of(tmp_path) == [
        f"agent.yaml:4: mqtt.url: {shown}: credentials in the url are not allowed (they would "
        "be logged in clear): use username with password_credential, password_file or "
        "password_env"]


def test_credentials_in_more_urls_are_refused_at_their_line(tmp_path: Path) -> None:
    agent = AGENT + y("""
        mqtt:
          url: mqtt://a:1883
          more_urls:
            - mqtt://b:1883
            - mqtts://edge:s3cr3t@c:8883
        """)
    write(tmp_path, folder(machine(GOOD_SIGNAL), agent=agent))
    [error] = errors_of(tmp_path)
    assert error.startswith("agent.yaml:8: mqtt.more_urls[1]: mqtts://***@c:8883: credentials ")
    assert "s3cr3t" not in error and "edge" not in error


# ------------------------------------------------------------------------------ OPC UA identity

CNC = "machines.d/cnc-01.yaml"


def cnc(connection_extra: str) -> str:
    """An OPC UA machine file; `connection_extra` (one line) is line 8."""
    return y("""
        id: cnc-01
        family: cnc
        area: machining
        line: line-1
        connection:
          protocol: opcua
          url: opc.tcp://127.0.0.1:4840
        """) + f"  {connection_extra}\n" + y("""
        poll: {fast: 1s}
        signals:
          - {name: x.a.b, node: "i=85"}
        """)


@pytest.mark.parametrize("source", [
    "password_env: CNC_PASSWORD", "password_file: cnc.password", "password_credential: cnc"])
@pytest.mark.parametrize("security", [False, True], ids=["default-policy", "policy-none"])
def test_opcua_password_over_policy_none_is_refused_without_opt_in(
        tmp_path: Path, source: str, security: bool) -> None:
    extra = f"auth: {{username: edge, {source}}}"
    if security:  # on line 8, auth on 9
        extra = "security: {policy: None}\n  " + extra
    write(tmp_path, {"agent.yaml": AGENT, CNC: cnc(extra)})
    line = 9 if security else 8
    assert errors_of(tmp_path) == [
        f"{CNC}:{line}: connection.auth: a password ({source.split(':')[0]}) with security "
        "policy None would cross the network in clear, readable by anyone on the path: give "
        "connection.security a policy (e.g. Basic256Sha256), or set allow_plaintext_password: "
        "true to accept that"]


@pytest.mark.parametrize("auth", [
    "auth: {username: edge, password_env: CNC_PASSWORD, allow_plaintext_password: true}",
    "auth: {username: edge}",  # no password: nothing secret crosses the network
    "security: {policy: Basic256Sha256, certificate: own/cert.der, private_key: own/key.pem, "
    "trust: trusted}\n  auth: {username: edge, password_env: CNC_PASSWORD}",
])
def test_opcua_password_is_accepted_encrypted_or_with_the_opt_in(
        tmp_path: Path, auth: str) -> None:
    write(tmp_path, {"agent.yaml": AGENT, CNC: cnc(auth)})
    [loaded] = load_config(tmp_path, DRIVERS).machines
    assert loaded.model.connection.auth.username == "edge"
