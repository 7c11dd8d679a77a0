"""A corpus of broken config folders: each must fail with the exact `file:line: field: message`.

Every case writes a small config folder into tmp_path and asserts the complete list of errors
`load_config` reports, in order. Line numbers are part of the contract, so the YAML below is
written with fixed line positions (block style and flow style `- {name: ..., address: ...}`).
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

from agent.config.loader import ConfigError, ConfigInvalid, LoadedConfig, load_config
from drivers.registry import DRIVERS

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "config" / "examples"


def y(text: str) -> str:
    """Dedent a triple-quoted YAML literal whose first line follows the opening quotes."""
    return textwrap.dedent(text).lstrip("\n")


# A valid agent.yaml (3 lines).
AGENT = y("""
    agent:
      id: gw-01
      site: changwon
    """)

# The head of a valid machine file. It is exactly 11 lines, so the first signal entry of
# `machine(...)` is on line 12, the second on line 13, and so on.
HEAD = y("""
    id: press-07
    family: press
    area: stamping
    line: line-2
    connection:
      protocol: modbus-tcp
      host: 127.0.0.1
      port: 5020
    poll:
      fast: 100ms
    signals:
    """)
HEAD_LINES = 11

GOOD_SIGNAL = '  - {name: cycle.count, address: "hr:4", type: uint32}'

F = "machines.d/press-07.yaml"


def machine(*signal_lines: str, head: str = HEAD) -> str:
    """HEAD (or a same-length variant of it) followed by the given signal lines."""
    return head + "".join(line + "\n" for line in signal_lines)


def swap(old: str, new: str) -> str:
    """HEAD with one line replaced by another, keeping every line number in place."""
    assert old in HEAD and old.count("\n") == new.count("\n")
    return HEAD.replace(old, new)


def drop(line: str) -> str:
    """HEAD without one line (every later line moves up by one)."""
    assert line in HEAD
    return HEAD.replace(line, "", 1)


def folder(machine_text: str, name: str = "press-07.yaml", agent: str = AGENT) -> dict[str, str]:
    return {"agent.yaml": agent, f"machines.d/{name}": machine_text}


def with_agent(agent_text: str) -> dict[str, str]:
    """A broken agent.yaml next to a valid machine file."""
    return folder(machine(GOOD_SIGNAL), agent=agent_text)


@dataclass(frozen=True)
class Prefix:
    """Matches an error line by its exact `file:line: field:` prefix plus a part of the message
    (for messages that list every choice, which grows when the code gains a choice)."""

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
    files: dict[str, str]  # relative path -> text; a key ending in "/" is an (empty) folder
    expected: tuple[str | Prefix, ...]


def write(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / rel
        if rel.endswith("/"):
            path.mkdir(parents=True, exist_ok=True)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root


def errors_of(root: Path) -> list[str]:
    with pytest.raises(ConfigInvalid) as info:
        load_config(root, DRIVERS)
    errors = info.value.errors
    assert all(isinstance(e, ConfigError) for e in errors)
    # The exception text is the same lines, one per error.
    assert str(info.value) == "\n".join(str(e) for e in errors)
    return [str(e) for e in errors]


CHOICES_OF_TYPE = ("is not one of bool, int16, uint16, int32, uint32, int64, uint64, "
                   "float32, float64, string")

CASES: list[Case] = [
    # ---------------------------------------------------------------- signal type
    Case("type-misspelt-flow-style", folder(machine(
        '  - {name: press.stroke_rate, address: "hr:3", type: uint16}',   # 12
        GOOD_SIGNAL,                                                      # 13
        '  - {name: press.force.ch1, address: "hr:10", type: flaot32}',   # 14
    )), (Prefix(f"{F}:14: signals[2].type:", f"'flaot32' {CHOICES_OF_TYPE}"),)),
    Case("type-misspelt-block-style", folder(machine(
        "  - name: cycle.count",                                          # 12
        '    address: "hr:4"',                                            # 13
        "    type: unit32",                                               # 14
    )), (Prefix(f"{F}:14: signals[0].type:", "'unit32' is not one of bool, int16, uint16"),)),
    # ---------------------------------------------------------------- unknown fields
    Case("unknown-signal-field-did-you-mean", folder(machine(
        '  - {name: motor.current, address: "hr:32", scael: 0.1}',        # 12
    )), (f"{F}:12: signals[0].scael: unknown field (did you mean 'scale'?)",)),
    Case("unknown-signal-field-block-style", folder(machine(
        GOOD_SIGNAL,                                                      # 12
        "  - name: motor.current",                                        # 13
        '    address: "hr:32"',                                           # 14
        "    unti: A",                                                    # 15
    )), (f"{F}:15: signals[1].unti: unknown field (did you mean 'unit'?)",)),
    Case("unknown-top-level-field", folder(machine(
        GOOD_SIGNAL,                                                      # 12
        "descripton: 250 t press",                                        # 13
    )), (f"{F}:13: descripton: unknown field (did you mean 'description'?)",)),
    Case("unknown-connection-field", folder(machine(
        GOOD_SIGNAL, head=swap("  port: 5020\n", "  timout: 1s\n"),       # line 8
    )), (f"{F}:8: connection.timout: unknown field (did you mean 'timeout'?)",)),
    # ---------------------------------------------------------------- missing fields
    Case("missing-id", folder(machine(GOOD_SIGNAL, head=drop("id: press-07\n"))),
         (f"{F}:1: id: required field is missing",)),
    Case("missing-family", folder(machine(GOOD_SIGNAL, head=drop("family: press\n"))),
         (f"{F}:1: family: required field is missing",)),
    Case("missing-connection", folder(machine(GOOD_SIGNAL, head=drop(
        "connection:\n  protocol: modbus-tcp\n  host: 127.0.0.1\n  port: 5020\n"))),
         (f"{F}:1: connection: required: a mapping with at least `protocol`",)),
    Case("connection-not-a-mapping", folder(machine(GOOD_SIGNAL, head=swap(
        "connection:\n  protocol: modbus-tcp\n  host: 127.0.0.1\n  port: 5020\n",
        "connection: modbus-tcp\n# host: 127.0.0.1\n# port: 5020\n#\n"))),  # line 5
         (f"{F}:5: connection: required: a mapping with at least `protocol`",)),
    Case("missing-signals", folder(drop("signals:\n")),
         (f"{F}:1: signals: required field is missing",)),
    Case("empty-signal-list", folder(swap("signals:\n", "signals: []\n")),
         (f"{F}:11: signals: list should have at least 1 item after validation, not 0",)),
    Case("missing-address", folder(machine(
        GOOD_SIGNAL,                                                      # 12
        "  - name: die.id",                                               # 13
        "    type: string(16)",                                           # 14
    )), (f"{F}:13: signals[1].address: required field is missing",)),
    Case("missing-host", folder(machine(GOOD_SIGNAL, head=swap("  host: 127.0.0.1\n",
                                                               "  # no host\n"))),
         (f"{F}:5: connection.host: required field is missing",)),
    # ---------------------------------------------------------------- addresses
    Case("address-not-a-number", folder(machine(
        '  - {name: motor.current, address: "hr:abc"}',                   # 12
    )), (f"{F}:12: signals[0].address: 'hr:abc' is not a Modbus address "
         "(use co:N, di:N, hr:N, ir:N or hr:N.bit)",)),
    Case("address-unknown-table", folder(machine(
        GOOD_SIGNAL,                                                      # 12
        '  - {name: motor.current, address: "xx:1"}',                     # 13
    )), (f"{F}:13: signals[1].address: 'xx:1' is not a Modbus address "
         "(use co:N, di:N, hr:N, ir:N or hr:N.bit)",)),
    Case("address-bit-of-a-coil", folder(machine(
        '  - {name: die.clamp_closed, address: "co:1.3"}',                # 12
    )), (f"{F}:12: signals[0].address: 'co:1.3': a bit index only applies to registers (hr, ir)",)),
    Case("address-bit-16", folder(machine(
        "  - name: motor.on",                                             # 12
        '    address: "hr:35.16"',                                        # 13
    )), (f"{F}:13: signals[0].address: 'hr:35.16': bit index must be 0..15",)),
    Case("address-register-65536", folder(machine(
        '  - {name: motor.current, address: "hr:65536"}',                 # 12
    )), (f"{F}:12: signals[0].address: 'hr:65536': register/bit number must be 0..65535",)),
    Case("address-not-a-string", folder(machine(
        "  - {name: motor.current, address: 40001}",                      # 12
    )), (f"{F}:12: signals[0].address: 40001: input should be a valid string",)),
    Case("address-on-continuation-line-of-flow-entry", folder(machine(
        '  - {name: machine.mode, address: "hr:1", type: uint16,',        # 12
        '     enum: {0: "off", 1: inch, 2: single}}',                     # 13
        "  - {name: alarm.code,",                                         # 14
        '     address: "hr:abc"}',                                        # 15
    )), (f"{F}:15: signals[1].address: 'hr:abc' is not a Modbus address "
         "(use co:N, di:N, hr:N, ir:N or hr:N.bit)",)),
    # ---------------------------------------------------------------- type vs address
    Case("float32-on-coil", folder(machine(
        '  - {name: lubrication.pump_on, address: "co:0", type: float32}',  # 12
    )), (f"{F}:12: signals[0].type: 'co:0' holds a single bit: type must be bool, not 'float32'",)),
    Case("int16-on-register-bit", folder(machine(
        "  - name: motor.on",                                             # 12
        '    address: "hr:35.0"',                                         # 13
        "    type: int16",                                                # 14
    )), (f"{F}:14: signals[0].type: 'hr:35.0' holds a single bit: "
         "type must be bool, not 'int16'",)),
    Case("bool-on-register-without-bit", folder(machine(
        '  - {name: motor.on, address: "hr:35", type: bool}',             # 12
    )), (f"{F}:12: signals[0].type: type bool on register 'hr:35' needs a bit index, "
         "e.g. hr:35.0",)),
    Case("string-without-length", folder(machine(
        GOOD_SIGNAL,                                                      # 12
        '  - {name: die.id, address: "hr:40", type: string}',             # 13
    )), (f"{F}:13: signals[1]: type string needs a length (characters), e.g. type: string(16)",)),
    Case("string-too-long", folder(machine(
        '  - {name: die.id, address: "hr:40", type: string(300)}',        # 12
    )), (f"{F}:12: signals[0].length: 300: input should be less than or equal to 250",)),
    Case("length-on-non-string", folder(machine(
        "  - name: press.die_height",                                     # 12
        '    address: "hr:30"',                                           # 13
        "    type: int32",                                                # 14
        "    length: 4",                                                  # 15
    )), (f"{F}:15: signals[0].length: length applies only to type string",)),
    Case("bad-order", folder(machine(
        '  - {name: press.force.ch1, address: "hr:10", type: float32, order: ABDC}',  # 12
    )), (Prefix(f"{F}:12: signals[0].order:", "'ABDC' is not one of ABCD, BADC, CDAB, DCBA"),)),
    Case("bad-word-order", folder(machine(
        '  - {name: press.force.ch1, address: "hr:10", type: float32, word_order: middle}',
    )), (f"{F}:12: signals[0].word_order: 'middle' is not one of big, little",)),
    # ---------------------------------------------------------------- signal fields
    Case("signal-name-not-canonical", folder(machine(
        '  - {name: Press.Force, address: "hr:10", type: float32}',       # 12
    )), (f"{F}:12: signals[0].name: 'Press.Force' does not match the pattern "
         r"^[a-z][a-z0-9_]*(\.[a-z0-9_]+)*$",)),
    Case("negative-deadband", folder(machine(
        '  - {name: motor.current, address: "hr:32", deadband: -1}',      # 12
    )), (f"{F}:12: signals[0].deadband: -1: must be a finite number >= 0",)),
    Case("signal-is-a-scalar", folder(machine(
        '  - "hr:32"',                                                    # 12
    )), (Prefix(f"{F}:12: signals[0]:", "'hr:32': input should be a valid dictionary"),)),
    # ---------------------------------------------------------------- poll groups
    Case("bad-duration", folder(machine(GOOD_SIGNAL, head=swap("  fast: 100ms\n",
                                                               "  fast: 100 parsecs\n"))),
         (f"{F}:10: poll.fast: '100 parsecs' is not a duration (use e.g. 100ms, 5s, 1m)",)),
    Case("negative-poll-interval", folder(machine(GOOD_SIGNAL, head=swap("  fast: 100ms\n",
                                                                         "  fast: -5\n"))),
         (f"{F}:10: poll.fast: -5: a duration cannot be negative",)),
    Case("negative-poll-interval-with-unit", folder(machine(
        GOOD_SIGNAL, head=swap("  fast: 100ms\n", "  fast: -1s\n"))),
         (f"{F}:10: poll.fast: '-1s': a duration cannot be negative",)),
    Case("zero-poll-interval", folder(machine(GOOD_SIGNAL, head=swap("  fast: 100ms\n",
                                                                     "  fast: 0s\n"))),
         (f"{F}:10: poll.fast: '0s': input should be greater than or equal to 0.001",)),
    Case("no-poll-group", folder(machine(GOOD_SIGNAL, head=swap("poll:\n  fast: 100ms\n",
                                                                "poll: {}\n#\n"))),
         (f"{F}:9: poll: dictionary should have at least 1 item after validation, not 0",)),
    Case("signal-poll-group-does-not-exist", folder(machine(
        GOOD_SIGNAL,                                                      # 12
        "  - name: motor.current",                                        # 13
        '    address: "hr:32"',                                           # 14
        "    poll: slow",                                                 # 15
    )), (f"{F}:15: signals[1].poll: 'slow' is not a poll group of this machine (fast)",)),
    Case("signal-without-poll-with-two-groups", folder(machine(
        '  - {name: cycle.count, address: "hr:4", type: uint32, poll: fast}',  # 12
        '  - {name: motor.current, address: "hr:32"}',                    # 13
        '  - {name: die.id, address: "hr:40", type: string(16), poll: slow}',  # 14
        head=swap("poll:\n  fast: 100ms\n", "poll: {fast: 100ms,\n       slow: 5s}\n"),
    )), (f"{F}:13: signals[1].poll: required when the machine has several poll groups "
         "(fast, slow)",)),
    Case("duplicate-signal-name", folder(machine(
        GOOD_SIGNAL,                                                      # 12
        '  - {name: motor.current, address: "hr:32"}',                    # 13
        '  - {name: cycle.count, address: "hr:52", type: uint32}',        # 14
    )), (f"{F}:14: signals[2].name: 'cycle.count' is already defined at signals[0]",)),
    # ---------------------------------------------------------------- machine identity
    Case("duplicate-machine-id-across-files", {
        "agent.yaml": AGENT,
        "machines.d/press-07.yaml": machine(GOOD_SIGNAL),
        "machines.d/press-07b.yaml": "# copied from press-07, not renamed\n" + machine(GOOD_SIGNAL),
    }, ("machines.d/press-07b.yaml:2: id: machine id 'press-07' is already used in "
        "machines.d/press-07.yaml",)),
    Case("family-not-in-list", folder(machine(GOOD_SIGNAL, head=swap("family: press\n",
                                                                     "family: lathe\n"))),
         (Prefix(f"{F}:2: family:",
                 "'lathe' is not one of cnc, press, forging, injection, other"),)),
    Case("topic-unsafe-machine-id", folder(machine(GOOD_SIGNAL, head=swap("id: press-07\n",
                                                                          "id: press/07\n"))),
         (f"{F}:1: id: 'press/07' does not match the pattern ^[A-Za-z0-9][A-Za-z0-9_.-]*$",)),
    Case("topic-unsafe-area", folder(machine(GOOD_SIGNAL, head=swap("area: stamping\n",
                                                                    "area: 'stamping+'\n"))),
         (f"{F}:3: area: 'stamping+' does not match the pattern ^[A-Za-z0-9][A-Za-z0-9_.-]*$",)),
    # ---------------------------------------------------------------- connection
    Case("unknown-protocol", folder(machine(GOOD_SIGNAL, head=swap("  protocol: modbus-tcp\n",
                                                                   "  protocol: profibus\n"))),
         (Prefix(f"{F}:6: connection.protocol:", "'profibus' is not one of modbus-rtu"),)),
    Case("missing-protocol", folder(machine(GOOD_SIGNAL, head=swap("  protocol: modbus-tcp\n",
                                                                   "  # protocol?\n"))),
         (Prefix(f"{F}:5: connection.protocol:", "required field is missing (one of modbus-rtu, modbus-rtu-tcp, modbus-tcp"),)),
    Case("port-out-of-range", folder(machine(GOOD_SIGNAL, head=swap("  port: 5020\n",
                                                                    "  port: 70000\n"))),
         (f"{F}:8: connection.port: 70000: input should be less than or equal to 65535",)),
    Case("port-zero", folder(machine(GOOD_SIGNAL, head=swap("  port: 5020\n", "  port: 0\n"))),
         (f"{F}:8: connection.port: 0: input should be greater than or equal to 1",)),
    Case("unit-id-out-of-range", folder(machine(GOOD_SIGNAL, head=swap("  port: 5020\n",
                                                                       "  unit_id: 256\n"))),
         (f"{F}:8: connection.unit_id: 256: input should be less than or equal to 255",)),
    Case("zero-timeout", folder(machine(GOOD_SIGNAL, head=swap("  port: 5020\n",
                                                               "  timeout: 0ms\n"))),
         (f"{F}:8: connection.timeout: 0.0: input should be greater than 0",)),
    # ---------------------------------------------------------------- machine file shape
    Case("yaml-syntax-error-bad-indent", folder(machine(
        "  - name: cycle.count",                                          # 12
        '    address: "hr:4"',                                            # 13
        "   type: uint32",                                                # 14
    )), (Prefix(f"{F}:14:", "invalid YAML: "),)),
    Case("yaml-duplicate-key", folder(machine(
        GOOD_SIGNAL,                                                      # 12
        "poll: {slow: 5s}",                                               # 13
    )), (Prefix(f"{F}:13:", 'invalid YAML: found duplicate key "poll"'),)),
    Case("empty-machine-file", folder(""),
         (f"{F}:1: expected a mapping of fields, the file is empty",)),
    Case("comment-only-machine-file", folder("# press-07, to be filled in\n"),
         (f"{F}:1: expected a mapping of fields, the file is empty",)),
    Case("machine-file-is-a-list", folder(y("""
        - id: press-07
          family: press
        - id: press-08
          family: press
        """)), (f"{F}:1: expected a mapping of fields, the file is a list",)),
    Case("yml-extension-is-loaded", folder(machine(
        '  - {name: motor.current, address: "hr:abc"}'), name="press-07.yml"),
         (Prefix("machines.d/press-07.yml:12: signals[0].address:", "'hr:abc' is not a Modbus"),)),
    # ---------------------------------------------------------------- agent.yaml
    Case("inline-mqtt-password", with_agent(AGENT + y("""
        mqtt:
          url: "mqtts://broker:8883"
          username: gw-01
          password: hunter2
        """)), ("agent.yaml:7: mqtt.password: inline passwords are not allowed: "
                "use password_env or password_file",)),
    Case("bad-size", with_agent(AGENT + y("""
        buffer:
          max_bytes: 1 GiBB
        """)), ("agent.yaml:5: buffer.max_bytes: '1 GiBB' is not a size (use e.g. 512MiB, 1GiB)",)),
    Case("size-too-small", with_agent(AGENT + y("""
        buffer:
          path: /tmp/buffer.db
          max_bytes: 1KiB
        """)), ("agent.yaml:6: buffer.max_bytes: 1024: "
                "input should be greater than or equal to 65536",)),
    Case("bad-mqtt-url", with_agent(AGENT + y("""
        mqtt:
          url: "http://broker:1883"
        """)), ("agent.yaml:5: mqtt.url: 'http://broker:1883' does not match the pattern "
                r"^mqtts?://[^/:]+(:\d{1,5})?/?$",)),
    Case("bad-encoding", with_agent(AGENT + y("""
        mqtt: {url: "mqtt://broker:1883",
               encoding: xml}
        """)), (Prefix("agent.yaml:5: mqtt.encoding:", "'xml' is not one of json, msgpack"),)),
    Case("unknown-agent-field-did-you-mean", with_agent(AGENT + y("""
        mqtt:
          urll: "mqtt://broker:1883"
        """)), ("agent.yaml:5: mqtt.urll: unknown field (did you mean 'url'?)",)),
    Case("missing-agent-section", with_agent(y("""
        mqtt:
          url: "mqtt://broker:1883"
        """)), ("agent.yaml:1: agent: required field is missing",)),
    Case("missing-agent-site", with_agent("agent:\n  id: gw-01\n"),
         ("agent.yaml:1: agent.site: required field is missing",)),
    Case("topic-unsafe-agent-id", with_agent("agent:\n  id: 'gw#01'\n  site: changwon\n"),
         ("agent.yaml:2: agent.id: 'gw#01' does not match the pattern "
          "^[A-Za-z0-9][A-Za-z0-9_.-]*$",)),
    Case("bad-log-level", with_agent(AGENT + "logging: {level: verbose}\n"),
         (Prefix("agent.yaml:4: logging.level:", "'verbose' is not one of debug, info, warning"),)),
    Case("commit-interval-too-long", with_agent(AGENT + "buffer: {commit_interval: 11s}\n"),
         ("agent.yaml:4: buffer.commit_interval: 11.0: input should be less than or equal to 10",)),
    Case("bad-shutdown-grace", with_agent(AGENT + "shutdown_grace: soon\n"),
         ("agent.yaml:4: shutdown_grace: 'soon' is not a duration (use e.g. 100ms, 5s, 1m)",)),
    Case("agent-yaml-syntax-error", with_agent("agent:\n  id: gw-01\n   site: changwon\n"),
         ("agent.yaml:3: invalid YAML: mapping values are not allowed here",)),
    Case("agent-yaml-is-a-list", with_agent("- agent\n- mqtt\n"),
         ("agent.yaml:1: expected a mapping of fields, the file is a list",)),
    # ---------------------------------------------------------------- folder layout
    Case("missing-agent-yaml", {"machines.d/press-07.yaml": machine(GOOD_SIGNAL)},
         ("agent.yaml: file not found",)),
    Case("machines-folder-missing", {"agent.yaml": AGENT + "machines: conf.d\n"},
         ("agent.yaml:4: machines: machine folder conf.d does not exist",)),
    Case("default-machines-folder-missing", {"agent.yaml": AGENT},
         ("agent.yaml: machines: machine folder machines.d does not exist",)),
    Case("empty-machines-folder", {"agent.yaml": AGENT, "machines.d/": ""},
         ("machines.d: no machine files (*.yaml) in this folder",)),
    Case("machines-folder-without-yaml", {"agent.yaml": AGENT,
                                          "machines.d/press-07.txt": machine(GOOD_SIGNAL)},
         ("machines.d: no machine files (*.yaml) in this folder",)),
]


def test_corpus_is_large_and_ids_are_unique() -> None:
    ids = [case.id for case in CASES]
    assert len(ids) == len(set(ids))
    assert len(CASES) >= 25


def test_head_has_the_documented_length() -> None:
    assert HEAD.count("\n") == HEAD_LINES
    assert HEAD.splitlines()[HEAD_LINES - 1] == "signals:"


def test_baseline_machine_is_valid(tmp_path: Path) -> None:
    """The corpus breaks one thing at a time in this folder, so it must be valid as is."""
    config = load_config(write(tmp_path, folder(machine(
        GOOD_SIGNAL, '  - {name: motor.current, address: "hr:32"}'))), DRIVERS)
    assert [m.id for m in config.machines] == ["press-07"]
    assert [s.name for s in config.machines[0].model.signals] == ["cycle.count", "motor.current"]


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_broken_config_reports_file_line_field(case: Case, tmp_path: Path) -> None:
    assert errors_of(write(tmp_path, case.files)) == list(case.expected)


# --------------------------------------------------------------------------- all at once


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    write(tmp_path, {
        "agent.yaml": AGENT + y("""
            mqtt:
              url: "http://broker"
              password: hunter2
            buffer:
              max_bytes: 1 GiBB
            """),
        "machines.d/press-07.yaml": machine(
            '  - {name: press.force.ch1, address: "hr:10", type: flaot32}',   # 12
            '  - {name: die.clamp_closed, address: "co:1.3"}',                # 13
            '  - {name: motor.current, address: "hr:32", scael: 0.1}',        # 14
        ),
        "machines.d/press-08.yaml": machine(
            GOOD_SIGNAL,
            head=swap("id: press-07\n", "id: press-08\n")
            .replace("family: press\n", "family: lathe\n")
            .replace("  protocol: modbus-tcp\n", "  protocol: modbus-rtx\n"),
        ),
        "machines.d/press-09.yaml": machine(
            GOOD_SIGNAL,                                                      # 12
            '  - {name: die.id, address: "hr:40", type: string}',             # 13
            GOOD_SIGNAL,                                                      # 14
            head=swap("id: press-07\n", "id: press-09\n"),
        ),
    })
    errors = errors_of(tmp_path)
    assert errors == [
        "agent.yaml:5: mqtt.url: 'http://broker' does not match the pattern "
        r"^mqtts?://[^/:]+(:\d{1,5})?/?$",
        "agent.yaml:6: mqtt.password: inline passwords are not allowed: "
        "use password_env or password_file",
        "agent.yaml:8: buffer.max_bytes: '1 GiBB' is not a size (use e.g. 512MiB, 1GiB)",
        Prefix(f"{F}:12: signals[0].type:", f"'flaot32' {CHOICES_OF_TYPE}"),
        f"{F}:13: signals[1].address: 'co:1.3': a bit index only applies to registers (hr, ir)",
        f"{F}:14: signals[2].scael: unknown field (did you mean 'scale'?)",
        Prefix("machines.d/press-08.yaml:2: family:", "'lathe' is not one of cnc, press"),
        Prefix("machines.d/press-08.yaml:6: connection.protocol:", "'modbus-rtx' is not one of"),
        "machines.d/press-09.yaml:13: signals[1]: type string needs a length (characters), "
        "e.g. type: string(16)",
        "machines.d/press-09.yaml:14: signals[2].name: 'cycle.count' is already defined at "
        "signals[0]",
    ]


def test_missing_agent_yaml_still_checks_the_machine_files(tmp_path: Path) -> None:
    write(tmp_path, {"machines.d/press-07.yaml": machine(
        '  - {name: lubrication.pump_on, address: "co:0", type: float32}')})
    assert errors_of(tmp_path) == [
        "agent.yaml: file not found",
        f"{F}:12: signals[0].type: 'co:0' holds a single bit: type must be bool, not 'float32'",
    ]


def test_valid_machine_next_to_broken_one_is_not_reported(tmp_path: Path) -> None:
    write(tmp_path, {
        "agent.yaml": AGENT,
        "machines.d/press-07.yaml": machine('  - {name: motor.current, address: "xx:1"}'),
        "machines.d/press-08.yaml": machine(GOOD_SIGNAL, head=swap("id: press-07\n",
                                                                   "id: press-08\n")),
    })
    errors = errors_of(tmp_path)
    assert len(errors) == 1 and errors[0].startswith(f"{F}:12: signals[0].address: 'xx:1'")


def test_config_error_formats_with_and_without_line() -> None:
    assert str(ConfigError("machines.d/press-07.yaml", 14, "signals[2].type", "bad")) == \
        "machines.d/press-07.yaml:14: signals[2].type: bad"
    assert str(ConfigError("agent.yaml", None, "", "file not found")) == \
        "agent.yaml: file not found"
    assert str(ConfigError("a.yaml", 3, "", "invalid YAML: x")) == "a.yaml:3: invalid YAML: x"


# --------------------------------------------------------------------------- valid configs


def test_example_config_loads() -> None:
    config = load_config(EXAMPLES, DRIVERS)
    assert isinstance(config, LoadedConfig)
    assert config.agent.agent.id == "gw-01"
    assert config.agent.buffer.max_bytes == 1024**3
    assert config.agent.buffer.commit_interval == pytest.approx(0.05)
    assert sorted(m.id for m in config.machines) == [
        "cnc-01", "forge-01", "furnace-01-tempctl", "heater-01", "imm-01", "press-01",
        "press-01-tonnage", "scale-01"]
    press = next(m for m in config.machines if m.id == "press-01")
    assert press.spec is DRIVERS["modbus-tcp"]
    assert press.source == EXAMPLES / "machines.d" / "press.yaml"
    assert len(press.digest) == 64

    groups = press.signals_by_group()
    assert list(groups) == ["fast", "slow"]
    assert dict(press.model.poll) == {"fast": pytest.approx(0.1), "slow": pytest.approx(5.0)}
    signals = press.model.signals
    assert sum(len(g) for g in groups.values()) == len(signals) == 41
    for name, members in groups.items():
        assert members and all(s.poll == name for s in members)
        # file order is kept inside each group
        assert [signals.index(s) for s in members] == sorted(signals.index(s) for s in members)
    assert groups["fast"][0].name == "machine.state"
    assert groups["slow"][0].name == "press.die_height"
    assert "die.id" in [s.name for s in groups["slow"]]


def test_single_poll_group_may_be_left_out(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, folder(machine(
        GOOD_SIGNAL, '  - {name: motor.current, address: "hr:32", poll: fast}'))), DRIVERS)
    groups = config.machines[0].signals_by_group()
    assert list(groups) == ["fast"]
    assert [s.name for s in groups["fast"]] == ["cycle.count", "motor.current"]


# --------------------------------------------------------------------------- known bugs


def test_length_without_type_is_rejected(tmp_path: Path) -> None:
    write(tmp_path, folder(machine('  - {name: motor.current, address: "hr:32", length: 4}')))
    assert errors_of(tmp_path) == [
        f"{F}:12: signals[0].length: length applies only to type string"]


def test_invalid_agent_yaml_still_checks_its_own_machines_folder(tmp_path: Path) -> None:
    write(tmp_path, {
        "agent.yaml": AGENT + 'mqtt: {url: "http://broker"}\nmachines: conf.d\n',
        "conf.d/press-07.yaml": machine('  - {name: motor.current, address: "xx:1"}'),
    })
    errors = errors_of(tmp_path)
    assert not any("does not exist" in e for e in errors), errors
    assert any(e.startswith("conf.d/press-07.yaml:12: signals[0].address:") for e in errors), errors


def test_did_you_mean_never_suggests_the_unknown_name_itself(tmp_path: Path) -> None:
    write(tmp_path, folder(machine(
        '  - {name: motor.current, address: "hr:32", unit_id: 3}',      # 12
        "host: 10.0.0.7",                                                # 13
    )))
    errors = errors_of(tmp_path)
    assert len(errors) == 2
    assert "did you mean 'unit_id'" not in errors[0], errors
    assert "did you mean 'host'" not in errors[1], errors


def test_mqtt_url_port_out_of_range_is_rejected(tmp_path: Path) -> None:
    write(tmp_path, with_agent(AGENT + 'mqtt: {url: "mqtt://broker:99999"}\n'))
    errors = errors_of(tmp_path)
    assert len(errors) == 1 and errors[0].startswith("agent.yaml:4: mqtt.url:")


def test_infinite_max_bytes_is_a_config_error_not_a_crash(tmp_path: Path) -> None:
    write(tmp_path, with_agent(AGENT + "buffer:\n  max_bytes: .inf\n"))
    errors = errors_of(tmp_path)
    assert len(errors) == 1 and errors[0].startswith("agent.yaml:5: buffer.max_bytes:")


def test_nan_poll_interval_is_rejected(tmp_path: Path) -> None:
    write(tmp_path, folder(machine(GOOD_SIGNAL, head=swap("  fast: 100ms\n", "  fast: .nan\n"))))
    errors = errors_of(tmp_path)
    assert len(errors) == 1 and errors[0].startswith(f"{F}:10: poll.fast:")


def test_duplicate_signal_name_reported_next_to_other_errors(tmp_path: Path) -> None:
    write(tmp_path, folder(machine(
        GOOD_SIGNAL,                                                      # 12
        '  - {name: cycle.count, address: "hr:52", type: uint32}',        # 13
        '  - {name: motor.current, address: "xx:1"}',                     # 14
    )))
    errors = errors_of(tmp_path)
    assert f"{F}:13: signals[1].name: 'cycle.count' is already defined at signals[0]" in errors
