"""The OPC UA config model (drivers.opcua.config) through the real loader, without a server.

Like tests/unit/test_config_errors.py, every broken case writes a config folder into tmp_path and
asserts the complete list of `file:line: field: message` lines `load_config` reports. Line
numbers are part of the contract, so the machine files are built from a fixed head:

    1  id: cnc-09
    2  family: cnc
    3  area: machining
    4  line: line-1
    5  connection:
    6    protocol: opcua
    7    url: opc.tcp://127.0.0.1:4840
       <the case's extra connection lines, from line 8>
       poll:
         <the case's poll groups>
       signals:
       <the case's signal lines>

With no extra connection lines and one poll group the first signal is on line 11; each extra
connection line or poll group moves it down by one. Each case notes its line numbers.
"""

from __future__ import annotations

import json
import shutil
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from agent.config.loader import ConfigError, ConfigInvalid, LoadedConfig, load_config
from agent.config.schema import full_schema
from drivers.opcua.config import OpcUaConnection, default_application_uri
from drivers.registry import DRIVERS

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "config" / "examples" / "machines.d"

AGENT = "agent:\n  id: gw-01\n  site: changwon\n"

HEAD = textwrap.dedent("""\
    id: cnc-09
    family: cnc
    area: machining
    line: line-1
    connection:
      protocol: opcua
      url: opc.tcp://127.0.0.1:4840
    """)
HEAD_LINES = 7
ONE_GROUP = "  fast: 200ms\n"
TWO_GROUPS = "  fast: 200ms\n  slow: 1s\n"

F = "machines.d/cnc-09.yaml"
NODE = '  - {name: x.a.b, node: "i=85"}'  # a valid read signal


def machine(*signals: str, conn: str = "", poll: str = ONE_GROUP) -> str:
    """HEAD, extra connection lines (each ending in a newline), poll groups, signal lines."""
    return HEAD + conn + "poll:\n" + poll + "signals:\n" + "".join(s + "\n" for s in signals)


@dataclass(frozen=True)
class Prefix:
    """An error line by its exact `file:line: field:` prefix plus a part of the message (for
    messages listing every choice, which grows when the code gains a choice)."""

    prefix: str
    part: str

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Prefix):
            return (self.prefix, self.part) == (other.prefix, other.part)
        if isinstance(other, str):
            return other.startswith(self.prefix + " ") and self.part in other[len(self.prefix):]
        return NotImplemented

    def __repr__(self) -> str:
        return f"<{self.prefix} ...{self.part}...>"


@dataclass(frozen=True)
class Case:
    id: str
    text: str  # the machine file
    expected: tuple[str | Prefix, ...]


def write(root: Path, machine_text: str, name: str = "cnc-09.yaml") -> Path:
    (root / "machines.d").mkdir(parents=True, exist_ok=True)
    (root / "agent.yaml").write_text(AGENT, encoding="utf-8")
    (root / "machines.d" / name).write_text(machine_text, encoding="utf-8")
    return root


def errors_of(root: Path) -> list[str]:
    with pytest.raises(ConfigInvalid) as info:
        load_config(root, DRIVERS)
    errors = info.value.errors
    assert all(isinstance(e, ConfigError) for e in errors)
    assert str(info.value) == "\n".join(str(e) for e in errors)
    return [str(e) for e in errors]


def load_one(root: Path) -> Any:
    """The validated model of the only machine of a folder."""
    config = load_config(root, DRIVERS)
    assert isinstance(config, LoadedConfig)
    assert len(config.machines) == 1
    return config.machines[0].model


def test_head_has_the_documented_length() -> None:
    assert HEAD.count("\n") == HEAD_LINES
    assert machine(NODE).splitlines()[10] == NODE  # line 11


# --------------------------------------------------------------------------- the examples


def test_example_opcua_machines_validate(tmp_path: Path) -> None:
    (tmp_path / "machines.d").mkdir()
    (tmp_path / "agent.yaml").write_text(AGENT, encoding="utf-8")
    for name in ("cnc.yaml", "injection.yaml"):
        shutil.copy(EXAMPLES / name, tmp_path / "machines.d" / name)
    config = load_config(tmp_path, DRIVERS)
    assert [m.id for m in config.machines] == ["cnc-01", "imm-01"]
    cnc, imm = config.machines
    assert cnc.spec is imm.spec is DRIVERS["opcua"]

    conn = cnc.model.connection
    assert isinstance(conn, OpcUaConnection)
    assert conn.url == "opc.tcp://127.0.0.1:4840"
    assert conn.timeout == pytest.approx(5.0)
    assert conn.mode == "subscribe"
    assert conn.namespaces == {"cnc": "urn:edge-agent:sim:cnc"}
    assert conn.root == "/Objects/Machines/CNC-01"
    assert conn.security.policy == "None" and conn.security.mode == "None"
    assert conn.auth.username is None
    assert list(conn.events) == ["alarms"]
    assert conn.events["alarms"].fields == ["AlarmCode", "AlarmText"]
    signals = {s.name: s for s in cnc.model.signals}
    assert signals["alarm.code"].mode == "event" and signals["alarm.code"].field == "AlarmCode"
    assert signals["spindle.speed.actual"].resolved_mode(conn) == "subscribe"
    assert signals["spindle.speed.actual"].sampling_interval == pytest.approx(0.1)
    assert signals["spindle.speed.actual"].queue_size == 4
    assert signals["spindle.speed.actual"].server_deadband.absolute == 5
    assert signals["spindle.load"].server_deadband.percent == 1
    assert signals["machine.model"].resolved_mode(conn) == "read"
    assert signals["machine.mode"].value_as == "name"
    assert list(cnc.signals_by_group()) == ["fast", "info"]

    conn = imm.model.connection
    assert conn.mode == "read"
    assert conn.events["cycle"].type == "nsu=urn:edge-agent:sim:injection;s=CycleParametersEventType"
    groups = imm.signals_by_group()
    assert list(groups) == ["cycle", "status"]
    assert {s.resolved_mode(conn) for s in groups["cycle"]} == {"event"}
    assert {s.resolved_mode(conn) for s in groups["status"]} == {"read"}


# --------------------------------------------------------------------------- valid files


VALID_NODE_IDS = [
    ("nsu=urn:x;s=A.B", None, "urn:x"),
    ("ns=2;i=5", 2, None),
    ("i=85", 0, None),
    ("ns=1;g=72962B91-FA75-4AE6-8D28-B404DC7DAF63", 1, None),
    ("ns=1;b=M/RbKBsRVkePCePcx24oRA==", 1, None),
    ("ns=0;i=4294967295", 0, None),
    ("ns=3;s=Line 2;Press=7", 3, None),  # a string identifier may hold ; and =
]


@pytest.mark.parametrize(("node", "index", "uri"), VALID_NODE_IDS)
def test_valid_node_ids_load(tmp_path: Path, node: str, index: int | None, uri: str | None) -> None:
    from drivers.opcua.addressing import parse_node_id

    model = load_one(write(tmp_path, machine(f'  - {{name: x.a.b, node: "{node}"}}')))
    assert model.signals[0].node == node
    ref = parse_node_id(node)
    assert (ref.index, ref.uri) == (index, uri)


VALID_FILES = [
    pytest.param(machine('  - {name: x.a.b, path: "/Objects/A/b:B"}',
                         conn='  namespaces: {b: "urn:b"}\n'), id="absolute-path-with-alias"),
    pytest.param(machine('  - {name: x.a.b, path: "/Objects/2:A/B"}'), id="absolute-path-index-step"),
    pytest.param(machine('  - {name: x.a.b, path: "A/B"}', conn="  root: /Objects/Machines/M\n"),
                 id="relative-path-with-root"),
    pytest.param(machine('  - {name: x.a.b, path: "m:A/B"}',
                         conn='  root: /Objects/m:M\n  namespaces: {m: "urn:m"}\n'),
                 id="relative-path-with-defined-alias"),
    pytest.param(machine('  - {name: x.a.b, node: "i=85", mode: subscribe}',
                         '  - {name: x.a.c, event: alarms, field: Severity}',
                         conn="  events: {alarms: {}}\n"),
                 id="subscribe-and-event-share-a-group"),
    pytest.param(machine(NODE, conn="  default_namespace: urn:x:y\n"), id="default-namespace-uri"),
    pytest.param(machine(
        '  - {name: x.a.b, node: "i=85", mode: subscribe, server_deadband: {absolute: 0.5},',
        '     sampling_interval: 50ms, queue_size: 10}'), id="subscribe-with-deadband"),
    pytest.param(machine(
        '  - {name: x.a.b, node: "i=85", poll: fast}',
        '  - {name: x.a.c, event: alarms, field: Severity, poll: slow}',
        conn="  events: {alarms: {poll: slow}}\n", poll=TWO_GROUPS), id="event-source-own-group"),
    pytest.param(machine(
        '  - {name: x.a.b, node: "i=85", poll: fast}',
        '  - {name: x.a.c, node: "i=86", poll: slow, mode: subscribe}',
        conn="  events: {alarms: {poll: slow}}\n", poll=TWO_GROUPS),
                 id="unmapped-event-source-with-poll"),
    pytest.param(machine(NODE, conn="  events: {alarms: {where: [{field: Severity, op: '>=', "
                         "value: 500}, {field: SourceName, op: '!=', value: X}]}}\n"
                         "  mode: subscribe\n"), id="where-terms"),
]


@pytest.mark.parametrize("text", VALID_FILES)
def test_valid_machine_files_load(tmp_path: Path, text: str) -> None:
    assert load_one(write(tmp_path, text)).id == "cnc-09"


def test_where_values_keep_their_yaml_type(tmp_path: Path) -> None:
    model = load_one(write(tmp_path, machine(NODE, conn=(
        "  mode: subscribe\n"
        "  events: {alarms: {where: [{field: Severity, op: '>=', value: 500},\n"
        "                            {field: Retain, value: true},\n"
        "                            {field: Ratio, op: '<', value: 0.5},\n"
        "                            {field: SourceName, op: '!=', value: X}]}}\n"))))
    where = model.connection.events["alarms"].where
    assert [(t.field, t.op, t.value, type(t.value)) for t in where] == [
        ("Severity", ">=", 500, int), ("Retain", "==", True, bool),
        ("Ratio", "<", 0.5, float), ("SourceName", "!=", "X", str)]


def test_event_signal_mode_and_defaults(tmp_path: Path) -> None:
    model = load_one(write(tmp_path, machine(
        '  - {name: x.a.b, event: alarms, field: Severity}',
        conn="  events: {alarms: {}}\n")))
    conn, signal = model.connection, model.signals[0]
    assert signal.mode == "event" and signal.resolved_mode(conn) == "event"
    source = conn.events["alarms"]
    assert (source.notifier, source.type, source.poll, source.queue_size) == ("i=2253", None, None, 1000)


# --------------------------------------------------------------------------- broken files


def _not_a_node_id(text: str) -> str:
    return f"{text!r} is not a NodeId (use nsu=URI;s=Name, ns=2;i=1001 or i=85)"


def _numeric(text: str) -> str:
    return f"{text!r}: a numeric identifier must be 0..4294967295"


MIXES = ("poll group 'fast' mixes read signals with subscribed/event ones (signals[0]); "
         "give them separate poll groups")

CASES: list[Case] = [
    # ------------------------------------------------------------ NodeId strings
    Case("node-ns-not-a-number", machine('  - {name: x.a.b, node: "ns=x;i=1"}'),          # 11
         (f"{F}:11: signals[0].node: {_not_a_node_id('ns=x;i=1')}",)),
    Case("node-numeric-id-not-a-number", machine('  - {name: x.a.b, node: "i=abc"}'),     # 11
         (f"{F}:11: signals[0].node: {_numeric('i=abc')}",)),
    Case("node-no-kind", machine(NODE, '  - {name: x.a.c, node: "foo"}'),                 # 12
         (f"{F}:12: signals[1].node: {_not_a_node_id('foo')}",)),
    Case("node-numeric-id-too-large", machine('  - {name: x.a.b, node: "i=99999999999"}'),
         (f"{F}:11: signals[0].node: {_numeric('i=99999999999')}",)),
    Case("node-numeric-id-2-to-the-32", machine('  - {name: x.a.b, node: "ns=2;i=4294967296"}'),
         (f"{F}:11: signals[0].node: {_numeric('ns=2;i=4294967296')}",)),
    Case("node-negative-numeric-id", machine('  - {name: x.a.b, node: "i=-1"}'),
         (f"{F}:11: signals[0].node: {_numeric('i=-1')}",)),
    Case("node-empty-identifier", machine('  - {name: x.a.b, node: "ns=2;s="}'),
         (f"{F}:11: signals[0].node: {_not_a_node_id('ns=2;s=')}",)),
    Case("node-unknown-kind", machine('  - {name: x.a.b, node: "ns=2;x=5"}'),
         (f"{F}:11: signals[0].node: {_not_a_node_id('ns=2;x=5')}",)),
    Case("node-is-a-browse-path", machine('  - {name: x.a.b, node: "/Objects/A"}'),
         (f"{F}:11: signals[0].node: {_not_a_node_id('/Objects/A')}",)),
    Case("node-on-continuation-line", machine(
        "  - name: x.a.b",                                                                # 11
        '    node: "i=abc"',                                                            # 12
    ), (f"{F}:12: signals[0].node: {_numeric('i=abc')}",)),
    # ------------------------------------------------------------ browse paths
    Case("relative-path-without-root", machine(NODE, '  - {name: x.a.c, path: "A/B"}'),   # 12
         ((f"{F}:12: signals[1].path: a relative browse path needs `connection.root`; "
           "or start it with /"),)),
    Case("path-empty-step", machine('  - {name: x.a.b, path: "/Objects//A"}'),            # 11
         ((f"{F}:11: signals[0].path: '/Objects//A' is not a browse path "
           "(use /Objects/Folder/Variable)"),)),
    Case("path-trailing-slash", machine('  - {name: x.a.b, path: "/Objects/A/"}'),
         ((f"{F}:11: signals[0].path: '/Objects/A/' is not a browse path "
           "(use /Objects/Folder/Variable)"),)),
    Case("path-only-slash", machine('  - {name: x.a.b, path: "/"}'),
         (f"{F}:11: signals[0].path: '/' is not a browse path (use /Objects/Folder/Variable)",)),
    Case("path-bad-step", machine('  - {name: x.a.b, path: "a b:c"}',                     # 12
                                  conn="  root: /Objects/M\n"),
         ((f"{F}:12: signals[0].path: 'a b:c': step 'a b:c' must be Name, alias:Name "
           "or index:Name"),)),
    Case("path-step-without-name", machine('  - {name: x.a.b, path: "/Objects/m:"}'),
         ((f"{F}:11: signals[0].path: '/Objects/m:': step 'm:' must be Name, alias:Name "
           "or index:Name"),)),
    Case("path-undefined-alias", machine('  - {name: x.a.b, path: "zz:Name"}',             # 12
                                         conn="  root: /Objects/M\n"),
         ((f"{F}:12: signals[0].path: namespace alias 'zz' is not defined in "
           "connection.namespaces"),)),
    Case("absolute-path-undefined-alias", machine('  - {name: x.a.b, path: "/Objects/A/b:B"}'),
         ((f"{F}:11: signals[0].path: namespace alias 'b' is not defined in "
           "connection.namespaces"),)),
    Case("relative-path-undefined-alias-and-no-root", machine('  - {name: x.a.b, path: "zz:N"}'),
         ((f"{F}:11: signals[0].path: a relative browse path needs `connection.root`; "
           "or start it with /"),
          (f"{F}:11: signals[0].path: namespace alias 'zz' is not defined in "
           "connection.namespaces"))),
    Case("event-field-undefined-alias", machine(
        '  - {name: x.a.b, event: alarms, field: "zz:Code"}',                             # 12
        conn="  events: {alarms: {}}\n"),                                              # 8
         ((f"{F}:12: signals[0].field: namespace alias 'zz' is not defined in "
           "connection.namespaces"),)),
    Case("root-undefined-alias", machine(NODE, conn="  root: /Objects/qq:M\n"),   # 8
         ((f"{F}:8: connection.root: namespace alias 'qq' is not defined in "
           "connection.namespaces"),)),
    Case("root-relative", machine(NODE, conn="  root: Machines/M\n"),                  # 8
         ((f"{F}:8: connection.root: 'Machines/M' must be an absolute browse path "
           "starting with /"),)),
    Case("notifier-undefined-alias", machine(NODE, conn=(
        "  mode: subscribe\n"                                                           # 8
        "  events: {alarms: {notifier: /Objects/qq:M}}\n")),                            # 9
         ((f"{F}:9: connection.events.alarms.notifier: namespace alias 'qq' is not defined in "
           "connection.namespaces"),)),
    Case("notifier-bad-node-id", machine(NODE, conn="  events: {alarms: {notifier: i=x}}\n"),
         (f"{F}:8: connection.events.alarms.notifier: {_numeric('i=x')}",)),
    Case("namespace-alias-not-a-name", machine(NODE, conn="  namespaces: {a-b: 'urn:x'}\n"),
         ((f"{F}:8: connection.namespaces: namespace alias 'a-b' must be a plain name "
           "(letters, digits, _)"),)),
    Case("default-namespace-unknown-alias", machine(NODE, conn="  default_namespace: foo\n"),
         ((f"{F}:8: connection.default_namespace: 'foo' is neither a URI nor an alias of "
           "`namespaces`"),)),
    # ------------------------------------------------------------ signal addressing
    Case("neither-node-nor-path", machine('  - {name: x.a.b, unit: mm}'),                  # 11
         (f"{F}:11: signals[0]: give exactly one of `node` or `path`",)),
    Case("both-node-and-path", machine(NODE, '  - {name: x.a.c, node: "i=86", path: "/Objects/X"}'),
         (f"{F}:12: signals[1]: give exactly one of `node` or `path`",)),
    Case("event-signal-with-node", machine(
        '  - {name: x.a.b, event: alarms, field: Severity, node: "i=85"}',                # 12
        conn="  events: {alarms: {}}\n"),
         ((f"{F}:12: signals[0]: an event signal takes its value from the event: "
           "no `node` or `path`"),)),
    Case("event-signal-with-path", machine(
        '  - {name: x.a.b, event: alarms, field: Severity, path: "/Objects/A"}',          # 12
        conn="  events: {alarms: {}}\n"),
         ((f"{F}:12: signals[0]: an event signal takes its value from the event: "
           "no `node` or `path`"),)),
    Case("event-signal-without-field", machine(
        '  - {name: x.a.b, event: alarms}', conn="  events: {alarms: {}}\n"),             # 12
         (f"{F}:12: signals[0]: an event signal needs `event` (a source) and `field`",)),
    Case("mode-event-without-source", machine(
        '  - {name: x.a.b, mode: event, field: Severity}', conn="  events: {alarms: {}}\n"),
         (f"{F}:12: signals[0]: an event signal needs `event` (a source) and `field`",)),
    Case("event-unknown-source", machine(
        '  - {name: x.a.b, event: alarmz, field: Severity}',                              # 12
        conn="  events: {cycle: {}, alarms: {}}\n"),                                   # 8
         ((f"{F}:12: signals[0].event: 'alarmz' is not an event source of connection.events "
           "(alarms, cycle)"),)),
    Case("event-source-without-any-defined", machine(
        "  - {name: x.a.c, event: alarms, field: Severity}"),                             # 11
         ((f"{F}:11: signals[0].event: 'alarms' is not an event source of connection.events "
           "(none defined)"),)),
    Case("unknown-mode", machine('  - {name: x.a.b, node: "i=85", mode: push}'),
         (f"{F}:11: signals[0].mode: 'push' is not one of read, subscribe, event",)),
    Case("unknown-value-as", machine('  - {name: x.a.b, node: "i=85", value_as: label}'),
         (f"{F}:11: signals[0].value_as: 'label' is not one of value, name",)),
    Case("negative-index", machine('  - {name: x.a.b, node: "i=85", index: -1}'),
         (f"{F}:11: signals[0].index: -1: input should be greater than or equal to 0",)),
    Case("unknown-signal-field-did-you-mean", machine('  - {name: x.a.b, nod: "i=85"}'),
         (f"{F}:11: signals[0].nod: unknown field (did you mean 'node'?)",)),
    # ------------------------------------------------------------ acquisition mode per group
    Case("read-and-subscribe-in-one-group", machine(
        NODE,                                                                           # 11
        "  - name: x.a.c",                                                                # 12
        '    node: "i=86"',                                                             # 13
        "    mode: subscribe",                                                          # 14
    ), (f"{F}:14: signals[1].mode: {MIXES}",)),
    Case("connection-subscribe-and-read-in-one-group", machine(
        NODE,                                                                           # 12
        "  - {name: x.a.c, node: 'i=86',",                                                # 13
        "     mode: read}",                                                             # 14
        conn="  mode: subscribe\n"),
     ((f"{F}:14: signals[1].mode: poll group 'fast' mixes read signals with subscribed/event "
       "ones (signals[0]); give them separate poll groups"),)),
    Case("event-in-group-of-read-signals", machine(
        NODE,                                                                           # 12
        "  - {name: x.a.c, event: alarms, field: Severity}",                              # 13
        conn="  events: {alarms: {}}\n"),                                              # 8
     (f"{F}:13: signals[1].mode: {MIXES}",
      (f"{F}:8: connection.events.alarms.poll: poll group 'fast' holds read signals; "
       "an event source needs a group of its own (or of subscriptions)"))),
    Case("event-source-poll-names-a-read-group", machine(
        NODE, conn="  events: {alarms: {poll: fast}}\n"),                              # 8
     ((f"{F}:8: connection.events.alarms.poll: poll group 'fast' holds read signals; "
       "an event source needs a group of its own (or of subscriptions)"),)),
    # ------------------------------------------------------------ event sources and groups
    Case("unused-event-source-several-groups", machine(
        '  - {name: x.a.b, node: "i=85", poll: fast}',                                   # 13
        '  - {name: x.a.c, node: "i=86", poll: slow}',                                   # 14
        conn="  events: {alarms: {}}\n", poll=TWO_GROUPS),                             # 8
     ((f"{F}:8: connection.events.alarms.poll: required when the machine has several poll "
       "groups and no signal maps a field of this source"),)),
    Case("event-source-poll-unknown-group", machine(
        NODE, conn="  events:\n    alarms: {poll: nope}\n"),                            # 9
     (f"{F}:9: connection.events.alarms.poll: 'nope' is not a poll group of this machine "
      "(fast)",)),
    Case("event-source-group-without-signals", machine(
        '  - {name: x.a.b, node: "i=85", poll: fast}',                                   # 16
        conn="  mode: subscribe\n"                                                      # 8
             "  events:\n"                                                              # 9
             "    alarms:\n"                                                            # 10
             "      poll: slow\n",                                                      # 11
        poll=TWO_GROUPS),
     ((f"{F}:11: connection.events.alarms.poll: poll group 'slow' has no signals; collect "
       "the events with a group that has some"),)),
    Case("event-signal-outside-its-sources-group", machine(
        '  - {name: x.a.b, node: "i=85", poll: fast, mode: subscribe}',                  # 13
        '  - {name: x.a.c, event: alarms, field: Severity,',                             # 14
        '     poll: fast}',                                                             # 15
        '  - {name: x.a.d, node: "i=86", poll: slow, mode: subscribe}',                  # 16
        conn="  events: {alarms: {poll: slow}}\n", poll=TWO_GROUPS),                   # 8
     ((f"{F}:15: signals[1].poll: event source 'alarms' is collected by poll group 'slow'; "
       "its signals must be in that group"),)),
    Case("event-source-queue-size-zero", machine(
        NODE, conn="  events: {alarms: {queue_size: 0}}\n"),
     ((f"{F}:8: connection.events.alarms.queue_size: 0: input should be greater than or "
       "equal to 1"),)),
    Case("event-source-unknown-field", machine(
        NODE, conn="  events: {alarms: {filter: x}}\n"),
     (f"{F}:8: connection.events.alarms.filter: unknown field",)),
    # ------------------------------------------------------------ where clause
    Case("where-op-not-allowed", machine(NODE, conn=(
        "  events:\n"                                                                   # 8
        "    alarms:\n"                                                                 # 9
        "      where:\n"                                                                # 10
        "        - {field: Severity, op: '=~', value: 5}\n")),                          # 11
     (Prefix(f"{F}:11: connection.events.alarms.where[0].op:",
             "'=~' is not one of ==, !=, >, >=, <, <="),)),
    Case("where-op-python-spelling", machine(NODE, conn=(
        "  events: {alarms: {where: [{field: Severity, value: 5},\n"                    # 8
        "                            {field: Severity, op: '<>', value: 5}]}}\n")),       # 9
     (Prefix(f"{F}:9: connection.events.alarms.where[1].op:", "'<>' is not one of =="),)),
    Case("where-field-bad-step", machine(NODE, conn=(
        "  events: {alarms: {where: [{field: 'a b:c', value: 5}]}}\n")),
     ((f"{F}:8: connection.events.alarms.where[0].field: 'a b:c': step 'a b:c' must be Name, "
       "alias:Name or index:Name"),)),
    Case("where-without-value", machine(NODE, conn=(
        "  events: {alarms: {where: [{field: Severity}]}}\n")),
     (f"{F}:8: connection.events.alarms.where[0].value: required field is missing",)),
    # ------------------------------------------------------------ security
    Case("policy-without-certificate-key-trust", machine(NODE, conn=(
        "  security: {policy: Basic256Sha256}\n")),                                     # 8
     ((f"{F}:8: connection.security: policy Basic256Sha256 needs certificate, private_key, "
       "trust (`edge-agent certs create` makes the certificate and key)"),)),
    Case("policy-with-certificate-only", machine(NODE, conn=(
        "  security:\n"                                                                 # 8
        "    policy: Aes256_Sha256_RsaPss\n"                                            # 9
        "    certificate: pki/own/cert.der\n")),                                        # 10
     ((f"{F}:8: connection.security: policy Aes256_Sha256_RsaPss needs private_key, trust "
       "(`edge-agent certs create` makes the certificate and key)"),)),
    Case("policy-none-with-mode-sign", machine(NODE, conn=(
        "  security: {policy: None, mode: Sign}\n")),
     (f"{F}:8: connection.security: policy None cannot be used with mode Sign",)),
    Case("mode-sign-without-policy", machine(NODE, conn="  security: {mode: SignAndEncrypt}\n"),
     (f"{F}:8: connection.security: policy None cannot be used with mode SignAndEncrypt",)),
    Case("policy-with-mode-none", machine(NODE, conn=(
        "  security: {policy: Basic256Sha256, mode: None, certificate: c.der,\n"
        "             private_key: k.pem, trust: trusted}\n")),
     (f"{F}:8: connection.security: policy Basic256Sha256 cannot be used with mode None",)),
    Case("unknown-policy", machine(NODE, conn="  security: {policy: Basic128Rsa15}\n"),
     (Prefix(f"{F}:8: connection.security.policy:",
             "'Basic128Rsa15' is not one of None, Basic256Sha256, Aes128_Sha256_RsaOaep, "
             "Aes256_Sha256_RsaPss"),)),
    Case("unknown-security-mode", machine(NODE, conn="  security: {mode: Encrypt}\n"),
     (f"{F}:8: connection.security.mode: 'Encrypt' is not one of None, Sign, SignAndEncrypt",)),
    Case("trust-on-first-use-without-trust", machine(NODE, conn=(
        "  security: {trust_on_first_use: true}\n")),
     ((f"{F}:8: connection.security: trust_on_first_use needs a `trust` folder to store "
       "the certificate in"),)),
    # ------------------------------------------------------------ auth
    Case("inline-password", machine(NODE, conn=(
        "  auth:\n"                                                                     # 8
        "    username: edge\n"                                                          # 9
        "    password: x\n")),                                                          # 10
     ((f"{F}:8: connection.auth: an inline password is not allowed: use password_env or "
       "password_file"),)),
    Case("password-env-without-username", machine(NODE, conn="  auth: {password_env: PW}\n"),
     (f"{F}:8: connection.auth: a password needs a username",)),
    Case("password-file-without-username", machine(NODE, conn="  auth: {password_file: pw}\n"),
     (f"{F}:8: connection.auth: a password needs a username",)),
    Case("password-env-and-file", machine(NODE, conn=(
        "  auth: {username: edge, password_env: PW, password_file: pw.txt}\n")),
     (f"{F}:8: connection.auth: give password_env or password_file, not both",)),
    Case("certificate-without-private-key", machine(NODE, conn=(
        "  auth: {certificate: user.der}\n")),
     (f"{F}:8: connection.auth: certificate identity needs both certificate and private_key",)),
    Case("private-key-without-certificate", machine(NODE, conn=(
        "  auth: {private_key: user.pem}\n")),
     (f"{F}:8: connection.auth: certificate identity needs both certificate and private_key",)),
    Case("username-and-certificate", machine(NODE, conn=(
        "  auth: {username: edge, certificate: user.der, private_key: user.pem}\n")),
     (f"{F}:8: connection.auth: give a username or a certificate identity, not both",)),
    Case("empty-username", machine(NODE, conn="  auth: {username: ''}\n"),
     (f"{F}:8: connection.auth.username: '': string should have at least 1 character",)),
    # ------------------------------------------------------------ subscribe settings, url
    Case("server-deadband-empty", machine('  - {name: x.a.b, node: "i=85", server_deadband: {}}'),
         (f"{F}:11: signals[0].server_deadband: give exactly one of absolute or percent",)),
    Case("server-deadband-both", machine(
        "  - name: x.a.b",                                                                # 11
        '    node: "i=85"',                                                             # 12
        "    server_deadband:",                                                         # 13
        "      absolute: 1",                                                            # 14
        "      percent: 2",                                                             # 15
    ), (f"{F}:13: signals[0].server_deadband: give exactly one of absolute or percent",)),
    Case("server-deadband-percent-over-100", machine(
        "  - name: x.a.b",                                                                # 11
        '    node: "i=85"',                                                             # 12
        "    server_deadband:",                                                         # 13
        "      percent: 100.5",                                                         # 14
    ), ((f"{F}:14: signals[0].server_deadband.percent: 100.5: input should be less than or "
         "equal to 100"),)),
    Case("server-deadband-negative", machine(
        '  - {name: x.a.b, node: "i=85", server_deadband: {absolute: -1}}'),
     ((f"{F}:11: signals[0].server_deadband.absolute: -1: input should be greater than or "
       "equal to 0"),)),
    Case("queue-size-zero", machine('  - {name: x.a.b, node: "i=85", queue_size: 0}'),
         (f"{F}:11: signals[0].queue_size: 0: input should be greater than or equal to 1",)),
    Case("max-array-zero", machine('  - {name: x.a.b, node: "i=85", max_array: 0}'),
         (f"{F}:11: signals[0].max_array: 0: input should be greater than or equal to 1",)),
    Case("url-not-opc-tcp", machine(NODE).replace(
        "url: opc.tcp://127.0.0.1:4840", "url: http://127.0.0.1:4840"),
     ((f"{F}:7: connection.url: 'http://127.0.0.1:4840' does not match the pattern "
       r"^opc\.tcp://[^/\s:]+(:\d{1,5})?(/\S*)?$"),)),
    Case("url-without-scheme", machine(NODE).replace(
        "url: opc.tcp://127.0.0.1:4840", "url: 127.0.0.1:4840"),
     ((f"{F}:7: connection.url: '127.0.0.1:4840' does not match the pattern "
       r"^opc\.tcp://[^/\s:]+(:\d{1,5})?(/\S*)?$"),)),
    Case("url-missing", machine(NODE).replace("  url: opc.tcp://127.0.0.1:4840\n", ""),
     (f"{F}:5: connection.url: required field is missing",)),
    Case("connection-mode-event", machine(NODE, conn="  mode: event\n"),
     (f"{F}:8: connection.mode: 'event' is not one of read, subscribe",)),
    Case("lifetime-count-too-small", machine(NODE, conn="  lifetime_count: 2\n"),
     (f"{F}:8: connection.lifetime_count: 2: input should be greater than or equal to 3",)),
    Case("unknown-connection-field", machine(NODE, conn="  namespace: {a: 'urn:a'}\n"),
     (f"{F}:8: connection.namespace: unknown field (did you mean 'namespaces'?)",)),
]


def test_corpus_ids_are_unique() -> None:
    ids = [case.id for case in CASES]
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_broken_opcua_machine_reports_file_line_field(case: Case, tmp_path: Path) -> None:
    assert errors_of(write(tmp_path, case.text)) == list(case.expected)


# --------------------------------------------------------------------------- the validated model


@pytest.mark.parametrize(("security", "mode"), [
    ("{}", "None"),
    ("{policy: None}", "None"),
    ("{policy: None, mode: None}", "None"),
    ("{policy: Basic256Sha256, certificate: c.der, private_key: k.pem, trust: t}", "SignAndEncrypt"),
    ("{policy: Aes128_Sha256_RsaOaep, certificate: c.der, private_key: k.pem, trust: t}",
     "SignAndEncrypt"),
    ("{policy: Basic256Sha256, mode: Sign, certificate: c.der, private_key: k.pem, trust: t}",
     "Sign"),
])
def test_security_mode_defaults(tmp_path: Path, security: str, mode: str) -> None:
    model = load_one(write(tmp_path, machine(NODE, conn=f"  security: {security}\n")))
    assert model.connection.security.mode == mode


def test_security_and_auth_defaults(tmp_path: Path) -> None:
    conn = load_one(write(tmp_path, machine(NODE))).connection
    sec = conn.security
    assert (sec.policy, sec.mode, sec.certificate, sec.private_key, sec.trust) == (
        "None", "None", None, None, None)
    assert sec.trust_on_first_use is False
    assert sec.application_uri is None  # then: the URI in the certificate, else the default
    assert default_application_uri().startswith("urn:")
    assert default_application_uri().endswith(":edge-agent")
    auth = conn.auth
    assert (auth.username, auth.password_env, auth.password_file, auth.certificate) == (
        None, None, None, None)
    assert conn.mode == "read" and conn.events == {} and conn.namespaces == {}


def test_relative_file_paths_are_relative_to_the_machine_file(tmp_path: Path) -> None:
    model = load_one(write(tmp_path, machine(NODE, conn=(
        "  security: {policy: Basic256Sha256, certificate: pki/own/cert.der,\n"
        "             private_key: pki/own/key.pem, trust: ../pki/trusted}\n"
        "  auth: {username: edge, password_file: secrets/password.txt}\n"))))
    folder = tmp_path / "machines.d"
    sec, auth = model.connection.security, model.connection.auth
    assert sec.certificate == str(folder / "pki" / "own" / "cert.der")
    assert sec.private_key == str(folder / "pki" / "own" / "key.pem")
    assert sec.trust == str(folder / ".." / "pki" / "trusted")
    assert auth.password_file == str(folder / "secrets" / "password.txt")
    for value in (sec.certificate, sec.private_key, sec.trust, auth.password_file):
        assert Path(value).is_absolute()
        assert Path(value).resolve().is_relative_to(tmp_path.resolve())
    assert Path(sec.trust).resolve() == (tmp_path / "pki" / "trusted").resolve()


def test_user_certificate_paths_are_relative_to_the_machine_file(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere" / "user.pem"
    model = load_one(write(tmp_path, machine(NODE, conn=(
        f"  auth: {{certificate: users/edge.der, private_key: '{elsewhere}'}}\n"))))
    auth = model.connection.auth
    assert auth.certificate == str(tmp_path / "machines.d" / "users" / "edge.der")
    assert auth.private_key == str(elsewhere)  # an absolute path stays as it is


def test_home_relative_path_is_expanded(tmp_path: Path) -> None:
    model = load_one(write(tmp_path, machine(NODE, conn=(
        "  auth: {username: edge, password_file: ~/opcua.txt, allow_plaintext_password: true}\n"
    ))))
    value = model.connection.auth.password_file
    assert Path(value).is_absolute() and value == str(Path("~/opcua.txt").expanduser())


# --------------------------------------------------------------------------- JSON schema


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                assert isinstance(value, str)
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _refs(item)


def _pointer(document: Any, ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node = document
    for part in ref[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        assert isinstance(node, dict) and part in node, ref
        node = node[part]
    return node


def _properties(schema: dict[str, Any], document: dict[str, Any]) -> set[str]:
    if "$ref" in schema:
        schema = _pointer(document, schema["$ref"])
    return set(schema.get("properties", {}))


def test_schema_command_prints_opcua_fields(capsys: pytest.CaptureFixture[str]) -> None:
    from agent.cli.main import main

    assert main(["schema"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads(json.dumps(full_schema(DRIVERS)))
    machine_schema = printed["machine"]
    defs = machine_schema["$defs"]

    connections = machine_schema["properties"]["connection"]["oneOf"]
    opcua = [c for c in connections if "url" in _properties(c, machine_schema)]
    assert len(opcua) == 1
    connection = _pointer(machine_schema, opcua[0]["$ref"])
    assert {"protocol", "url", "security", "auth", "mode", "namespaces", "root",
            "events"} <= set(connection["properties"])
    assert connection["properties"]["protocol"].get("const") == "opcua" or \
        connection["properties"]["protocol"].get("enum") == ["opcua"]
    assert connection["additionalProperties"] is False

    items = machine_schema["properties"]["signals"]["items"]["oneOf"]
    signal_sets = [_properties(item, machine_schema) for item in items]
    opcua_signal = [s for s in signal_sets if "node" in s]
    assert len(opcua_signal) == 1
    assert {"name", "node", "path", "mode", "server_deadband", "event", "field",
            "sampling_interval", "queue_size", "value_as", "index", "max_array",
            "poll"} <= opcua_signal[0]
    # the Modbus signal keeps its own fields and knows nothing of OPC UA ones
    modbus_signal = [s for s in signal_sets if "address" in s]
    assert len(modbus_signal) == 1 and "node" not in modbus_signal[0]

    text = json.dumps(defs)
    for name in ("SecurityConfig", "AuthConfig", "EventSource", "ServerDeadband", "WhereTerm"):
        assert name in defs, name
    assert "Basic256Sha256" in text and "SignAndEncrypt" in text


def test_machine_schema_resolves_every_ref_in_its_own_defs() -> None:
    schema = json.loads(json.dumps(full_schema(DRIVERS)))
    machine_schema = schema["machine"]
    assert isinstance(machine_schema.get("$defs"), dict) and machine_schema["$defs"]
    refs = list(_refs(machine_schema))
    assert len(refs) >= 10
    seen: set[str] = set()
    todo = list(refs)
    while todo:  # every reference, and the references inside what it points to
        ref = todo.pop()
        if ref in seen:
            continue
        seen.add(ref)
        target = _pointer(machine_schema, ref)
        assert isinstance(target, dict)
        todo.extend(_refs(target))
    assert {f"#/$defs/{name}" for name in ("OpcUaConnection", "SecurityConfig", "EventSource",
                                          "ServerDeadband")} <= seen


# --------------------------------------------------------------------------- known bugs


def test_namespace_index_above_65535_is_rejected(tmp_path: Path) -> None:
    write(tmp_path, machine('  - {name: x.a.b, node: "ns=65536;i=1"}'))
    errors = errors_of(tmp_path)
    assert len(errors) == 1 and errors[0].startswith(f"{F}:11: signals[0].node:"), errors


def test_url_port_out_of_range_is_rejected(tmp_path: Path) -> None:
    write(tmp_path, machine(NODE).replace("opc.tcp://127.0.0.1:4840", "opc.tcp://127.0.0.1:99999"))
    errors = errors_of(tmp_path)
    assert len(errors) == 1 and errors[0].startswith(f"{F}:7: connection.url:"), errors


def test_unmapped_event_source_in_the_only_read_group_is_rejected(tmp_path: Path) -> None:
    # The same machine with `poll: fast` on the source is rejected (see the corpus case
    # event-source-poll-names-a-read-group); leaving `poll` to its default must not differ.
    write(tmp_path, machine(NODE, conn="  events: {alarms: {}}\n"))
    errors = errors_of(tmp_path)
    assert errors == [(f"{F}:8: connection.events.alarms.poll: poll group 'fast' holds read "
                       "signals; an event source needs a group of its own (or of subscriptions)")]


def test_settings_that_would_be_ignored_are_errors(tmp_path: Path) -> None:
    write(tmp_path, machine(
        '  - {name: x.a.b, node: "i=85", sampling_interval: 100ms}',                     # 12
        '  - {name: x.a.c, node: "i=85", queue_size: 5, server_deadband: {absolute: 1}}',  # 13
        '  - {name: x.a.d, event: alarms, field: Code, mode: subscribe}',                # 14
        '  - {name: x.a.e, event: alarms, field: Code, value_as: name}',                 # 15
        conn="  events: {alarms: {}}\n"))
    assert errors_of(tmp_path) == [
        f"{F}:14: signals[2]: a signal with `event` has mode event, not subscribe",
        f"{F}:15: signals[3]: value_as: name applies to read and subscribed signals",
    ]
    write(tmp_path, machine(
        '  - {name: x.a.b, node: "i=85", sampling_interval: 100ms}',                     # 11
        '  - {name: x.a.c, node: "i=85", queue_size: 5, server_deadband: {absolute: 1}}'))  # 12
    assert errors_of(tmp_path) == [
        f"{F}:11: signals[0].sampling_interval: applies to subscribed signals only (this one is read)",
        f"{F}:12: signals[1].queue_size: applies to subscribed signals only (this one is read)",
        f"{F}:12: signals[1].server_deadband: applies to subscribed signals only (this one is read)",
    ]
