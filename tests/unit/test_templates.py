"""Device templates (`use:`): merge rules, template chains, and every error at the file and
line the offending value is written at, a template's included.

Each test writes a config folder with its own `templates/` into tmp_path. Line numbers are
part of the contract, so the YAML below keeps fixed line positions (noted in comments).
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest

from agent.config import templates as tpl
from agent.config.loader import load_config
from agent.config.schema import full_schema
from agent.config.templates import TemplateLibrary, shown_path, template_dirs
from agent.config.yaml_source import load_yaml
from drivers.registry import DRIVERS
from tests.e2e.test_cli_config import edge_agent
from tests.unit.test_config_errors import AGENT, errors_of, write, y

# Lines 13-15 are its signals: signals[0], [1], [2] of the template.
PRESS_SIM = y("""
    # A press as served by `edge-agent sim press`.
    family: press
    description: simulated press
    connection:
      protocol: modbus-tcp
      host: 127.0.0.1
      port: 5020
      unit_id: 1
    poll:
      fast: 100ms
      slow: 5s
    signals:
      - {name: cycle.count, address: "hr:4", type: uint32, poll: fast}
      - {name: motor.current, address: "hr:32", type: uint16, scale: 0.1, unit: A, poll: fast}
      - {name: press.die_height, address: "hr:30", type: int32, unit: mm, poll: slow}
    """)

# The example of the feature: override, append, omit.
PRESS_07 = y("""
    use: press-sim
    id: press-07
    area: stamping
    line: line-2
    connection: {host: 127.0.0.1, port: 5027}
    signals:
      - {name: press.die_height, poll: fast}
      - {name: x.extra, address: "hr:60", type: uint16, poll: slow}
      - {name: motor.current, omit: true}
    """)

# A machine that only names itself; lines 6.. are free for overrides.
BARE = y("""
    use: press-sim
    id: press-07
    area: stamping
    line: line-2
    """)

M = "machines.d/press-07.yaml"
T = "templates/press-sim.yaml"
NOTE = f" (template press-sim, used by {M})"
NOT_MODBUS = "is not a Modbus address (use co:N, di:N, hr:N, ir:N or hr:N.bit)"


def config(tmp_path: Path, machines: dict[str, str], templates: dict[str, str]) -> Path:
    files = {"agent.yaml": AGENT}
    files.update({f"machines.d/{name}.yaml": text for name, text in machines.items()})
    files.update({f"templates/{name}.yaml": text for name, text in templates.items()})
    return write(tmp_path, files)


def sim_with(line: int, text: str) -> str:
    """PRESS_SIM with line `line` (1-based) replaced, every other line in place."""
    lines = PRESS_SIM.splitlines(keepends=True)
    lines[line - 1] = text + "\n"
    return "".join(lines)


def resolved(tmp_path: Path, machine: str, templates: dict[str, str]) -> tuple[object, list[str]]:
    """The merged data of one machine file and the problems merging it, without validation."""
    root = config(tmp_path, {"press-07": machine}, templates)
    problems: list[tpl.Problem] = []
    doc = TemplateLibrary(root).resolve(load_yaml(root / M, M), M, problems)
    shown = [f"{p.where.file}:{p.where.line}: {p.field}: {p.message}{p.where.note}"
             for p in problems]
    return (doc.data if doc is not None else None), shown


# --------------------------------------------------------------------------- merging


def test_the_example_merges_connection_overrides_appends_and_omits(tmp_path: Path) -> None:
    root = config(tmp_path, {"press-07": PRESS_07}, {"press-sim": PRESS_SIM})
    [machine] = load_config(root, DRIVERS).machines
    model = machine.model
    assert (model.id, model.family, model.area, model.line) == (
        "press-07", "press", "stamping", "line-2")
    assert model.description == "simulated press"
    assert model.connection.protocol == "modbus-tcp"
    assert (model.connection.port, model.connection.unit_id) == (5027, 1)
    assert dict(model.poll) == {"fast": pytest.approx(0.1), "slow": pytest.approx(5.0)}
    # overridden in place (position kept), appended in file order, omitted
    assert [s.name for s in model.signals] == ["cycle.count", "press.die_height", "x.extra"]
    die = model.signals[1]
    assert (die.address, die.type, die.unit, die.poll) == ("hr:30", "int32", "mm", "fast")
    assert model.signals[2].address == "hr:60"
    assert list(machine.signals_by_group()) == ["fast", "slow"]
    assert machine.source == root / M
    # where each value of the merge comes from
    assert machine.locate(("signals", 1, "address")).file == T
    assert machine.locate(("signals", 1, "address")).line == 15
    assert machine.locate(("signals", 1, "poll")).file == M
    assert machine.locate(("signals", 1, "poll")).line == 7
    assert machine.locate(("signals", 2)).loc == ("signals", 1)
    assert machine.locate(("connection", "unit_id")).file == T
    assert machine.locate(("connection", "port")).file == M


def test_mappings_merge_recursively_lists_and_scalars_replace(tmp_path: Path) -> None:
    data, problems = resolved(tmp_path, BARE + y("""
        description: null
        connection: {timeout: 2s}
        tags: [c]
        nested: {a: {y: 2}}
        """), {"press-sim": PRESS_SIM + y("""
        tags: [a, b]
        nested: {a: {x: 1}, b: 3}
        """)})
    assert problems == []
    assert isinstance(data, dict)
    assert "use" not in data
    assert data["description"] is None
    assert data["connection"] == {"protocol": "modbus-tcp", "host": "127.0.0.1", "port": 5020,
                                  "unit_id": 1, "timeout": "2s"}
    assert data["tags"] == ["c"]
    assert data["nested"] == {"a": {"x": 1, "y": 2}, "b": 3}
    assert list(data) == ["family", "description", "connection", "poll", "signals", "tags",
                          "nested", "id", "area", "line"]


def test_signal_override_merges_its_mappings_and_replaces_its_scalars(tmp_path: Path) -> None:
    template = sim_with(13, '  - {name: cycle.count, address: "hr:4", type: uint32, poll: fast, '
                        'enum: {0: a, 1: b}}')
    data, problems = resolved(tmp_path, BARE + y("""
        signals:
          - {name: cycle.count, enum: {1: c}, poll: null}
        """), {"press-sim": template})
    assert problems == []
    assert isinstance(data, dict)
    assert data["signals"][0] == {"name": "cycle.count", "address": "hr:4", "type": "uint32",
                                  "poll": None, "enum": {0: "a", 1: "c"}}


def test_chained_templates(tmp_path: Path) -> None:
    generic = y("""
        family: press
        connection: {protocol: modbus-tcp, host: 10.0.0.1, unit_id: 3}
        poll: {fast: 100ms}
        signals:
          - {name: cycle.count, address: "hr:4", type: uint32}
          - {name: motor.current, address: "hr:32", type: uint16, scale: 0.1, unit: A}
        """)
    sim = y("""
        use: press-generic
        connection: {host: 127.0.0.1, port: 5020}
        poll: {slow: 5s}
        signals:
          - {name: cycle.count, poll: fast}
          - {name: motor.current, poll: fast}
          - {name: press.die_height, address: "hr:30", type: int32, unit: mm, poll: slow}
        """)
    machine = BARE + "connection: {unit_id: 7}\n"
    root = config(tmp_path, {"press-07": machine},
                  {"press-sim": sim, "press-generic": generic})
    [loaded] = load_config(root, DRIVERS).machines
    model = loaded.model
    assert (model.connection.host, model.connection.port, model.connection.unit_id) == (
        "127.0.0.1", 5020, 7)
    assert [(s.name, s.poll) for s in model.signals] == [
        ("cycle.count", "fast"), ("motor.current", "fast"), ("press.die_height", "slow")]
    assert model.signals[1].scale == pytest.approx(0.1)
    assert loaded.locate(("signals", 1, "scale")).file == "templates/press-generic.yaml"
    assert loaded.locate(("signals", 1, "poll")).file == "templates/press-sim.yaml"

    # An error in the deepest template names the chain.
    write(root, {"templates/press-generic.yaml": generic.replace('"hr:32"', '"hr:x"')})
    assert errors_of(root) == [
        (f"templates/press-generic.yaml:6: signals[1].address: 'hr:x' {NOT_MODBUS} "
         f"(template press-sim -> press-generic, used by {M})")]


def test_omit_in_a_template_of_a_chain_removes_the_deeper_templates_signal(
        tmp_path: Path) -> None:
    sim = "use: press-base\nsignals:\n  - {name: motor.current, omit: true}\n"
    data, problems = resolved(tmp_path, BARE, {"press-sim": sim, "press-base": PRESS_SIM})
    assert problems == []
    assert isinstance(data, dict)
    assert [s["name"] for s in data["signals"]] == ["cycle.count", "press.die_height"]


def test_chain_of_eight_templates_is_fine_nine_is_too_deep(tmp_path: Path) -> None:
    chain = {f"t{i}": f"use: t{i + 1}\n" for i in range(8)}
    chain["t8"] = PRESS_SIM
    root = config(tmp_path, {"press-07": BARE.replace("use: press-sim", "use: t1")}, chain)
    assert [m.id for m in load_config(root, DRIVERS).machines] == ["press-07"]

    write(root, {M: BARE.replace("use: press-sim", "use: t0")})
    chain_text = " -> ".join(f"t{i}" for i in range(9))
    assert errors_of(root) == [
        (f"templates/t7.yaml:1: use: templates nest more than 8 deep: {chain_text} "
         f"(template {' -> '.join(f't{i}' for i in range(8))}, used by {M})")]


def test_template_cycle(tmp_path: Path) -> None:
    root = config(tmp_path, {"press-07": BARE.replace("use: press-sim", "use: a")},
                  {"a": "# a\nuse: b\n", "b": "use: a\n"})
    assert errors_of(root) == [
        f"templates/b.yaml:1: use: template cycle: a -> b -> a (template a -> b, used by {M})"]


def test_template_using_itself(tmp_path: Path) -> None:
    root = config(tmp_path, {"press-07": BARE}, {"press-sim": "use: press-sim\n"})
    assert errors_of(root) == [
        f"{T}:1: use: template cycle: press-sim -> press-sim{NOTE}"]


# --------------------------------------------------------------------------- finding templates


def test_unknown_template_lists_where_it_looked_and_what_there_is(tmp_path: Path) -> None:
    root = config(tmp_path, {"press-07": BARE.replace("use: press-sim", "use: press-sym")},
                  {"press-sim": PRESS_SIM, "press-generic": PRESS_SIM})
    [error] = errors_of(root)
    looked = ", ".join(shown_path(d, root) for d in template_dirs(root))
    assert error.startswith(f"{M}:1: use: template 'press-sym' not found (looked in: {looked}; "
                            "available: ")
    assert error.endswith("); did you mean 'press-sim'?")
    available = re.search(r"available: ([^)]*)\)", error)
    assert available is not None
    names = available.group(1).split(", ")
    assert names == sorted(names) and {"press-generic", "press-sim"} <= set(names)


def test_unknown_template_in_an_empty_library_says_none(tmp_path: Path) -> None:
    root = config(tmp_path, {"press-07": BARE}, {})
    problems: list[tpl.Problem] = []
    library = TemplateLibrary(root, [root / "templates"])
    assert library.resolve(load_yaml(root / M, M), M, problems) is None
    assert [p.message for p in problems] == [
        "template 'press-sim' not found (looked in: templates; available: none)"]


@pytest.mark.parametrize("name", ["../press-sim", "sub/press-sim", "Press-Sim", "", "7"])
def test_template_name_must_be_a_plain_name(tmp_path: Path, name: str) -> None:
    root = config(tmp_path, {"press-07": BARE.replace("use: press-sim", f"use: '{name}'")},
                  {"press-sim": PRESS_SIM})
    if name == "7":  # a number that is a valid name once quoted
        write(root, {"templates/7.yaml": PRESS_SIM})
        assert [m.id for m in load_config(root, DRIVERS).machines] == ["press-07"]
        return
    assert errors_of(root) == [
        (f"{M}:1: use: {name!r} is not a template name (lowercase letters, digits, '.', '_' "
         "and '-'; no folders)")]


def test_use_that_is_not_a_string(tmp_path: Path) -> None:
    root = config(tmp_path, {"press-07": BARE.replace("use: press-sim", "use: [press-sim]")},
                  {"press-sim": PRESS_SIM})
    assert errors_of(root) == [
        (f"{M}:1: use: ['press-sim'] is not a template name (lowercase letters, digits, '.', '_' "
         "and '-'; no folders)")]


def test_search_path_site_first_then_bundled(tmp_path: Path) -> None:
    dirs = template_dirs(tmp_path)
    assert dirs[0] == tmp_path / "templates"
    bundled = [d for d in (tpl.REPO_TEMPLATES, tpl.INSTALLED_TEMPLATES) if d.is_dir()][:1]
    assert dirs[1:] == bundled
    # A site template shadows a bundled one of the same name.
    site, shipped = tmp_path / "site", tmp_path / "shipped"
    write(tmp_path, {"site/press-sim.yaml": "family: press\n",
                     "shipped/press-sim.yaml": "family: cnc\n",
                     "shipped/cnc-sim.yaml": "family: cnc\n"})
    library = TemplateLibrary(tmp_path, [site, shipped])
    assert library.find("press-sim") == site / "press-sim.yaml"
    assert library.find("cnc-sim") == shipped / "cnc-sim.yaml"
    assert library.find("lathe") is None
    assert library.available() == ["cnc-sim", "press-sim"]


def test_shown_paths(tmp_path: Path) -> None:
    assert shown_path(tmp_path / "templates" / "a.yaml", tmp_path) == "templates/a.yaml"
    assert shown_path(tpl.REPO_TEMPLATES / "a.yaml", tmp_path) == "config/templates/a.yaml"
    elsewhere = tmp_path.parent / "share" / "a.yaml"
    assert shown_path(elsewhere, tmp_path) == str(elsewhere)


# --------------------------------------------------------------------------- template rules


def test_template_may_not_set_id_area_or_line(tmp_path: Path) -> None:
    template = "id: press-00\narea: stamping\n" + PRESS_SIM + "line: line-1\n"
    root = config(tmp_path, {"press-07": BARE}, {"press-sim": template})
    why = "it identifies one machine, so each machine file sets its own"
    assert errors_of(root) == [
        f"{T}:1: id: a template may not set id: {why}{NOTE}",
        f"{T}:2: area: a template may not set area: {why}{NOTE}",
        f"{T}:18: line: a template may not set line: {why}{NOTE}",
    ]


def test_omit_errors(tmp_path: Path) -> None:
    machine = BARE + y("""
        signals:
          - {name: x.unknown, omit: true}
          - {name: motor.current, omit: true, address: "hr:1"}
          - {name: cycle.count, omit: false}
          - {omit: true}
          - {name: press.die_height, omit: true}
          - {name: press.die_height, omit: true}
        """)
    root = config(tmp_path, {"press-07": machine}, {"press-sim": PRESS_SIM})
    assert errors_of(root) == [
        (f"{M}:6: signals[0].name: 'x.unknown' is not a signal of template 'press-sim', "
         "so it cannot be omitted"),
        f"{M}:7: signals[1].address: an omit entry takes only `name` and `omit`",
        (f"{M}:8: signals[2].omit: only `omit: true` is allowed: it removes the template's "
         "signal of this name"),
        f"{M}:9: signals[3].name: an omit entry needs the `name` of the signal to remove",
        (f"{M}:11: signals[5].name: 'press.die_height' is already overridden or omitted above "
         "in this file"),
    ]


def test_omit_in_a_template_that_uses_none(tmp_path: Path) -> None:
    template = PRESS_SIM + "  - {name: motor.current, omit: true}\n"   # 16
    root = config(tmp_path, {"press-07": BARE}, {"press-sim": template})
    assert errors_of(root) == [
        (f"{T}:16: signals[3].omit: this file uses no template, so there is no signal to omit"
         f"{NOTE}")]


# --------------------------------------------------------------------------- errors located


def test_inherited_bad_field_is_reported_in_the_template(tmp_path: Path) -> None:
    template = sim_with(14, '  - {name: motor.current, address: "hr:abc", type: uint16, '
                        'poll: fast}')
    other = BARE.replace("press-07", "press-08")
    root = config(tmp_path, {"press-07": BARE, "press-08": other}, {"press-sim": template})
    assert errors_of(root) == [
        f"{T}:14: signals[1].address: 'hr:abc' {NOT_MODBUS}{NOTE}",
        (f"{T}:14: signals[1].address: 'hr:abc' {NOT_MODBUS} "
         "(template press-sim, used by machines.d/press-08.yaml)"),
    ]


def test_overridden_bad_field_is_reported_in_the_machine_file(tmp_path: Path) -> None:
    machine = BARE + y("""
        signals:
          - {name: x.extra, address: "hr:60", type: uint16, poll: slow}
          - {name: motor.current, address: "xx:1"}
        """)
    root = config(tmp_path, {"press-07": machine}, {"press-sim": PRESS_SIM})
    assert errors_of(root) == [f"{M}:7: signals[1].address: 'xx:1' {NOT_MODBUS}"]


def test_merged_signal_untouched_fields_in_template_overridden_in_machine(
        tmp_path: Path) -> None:
    # The template's type is wrong, the machine's scale too: each where it is written.
    template = sim_with(14, '  - {name: motor.current, address: "hr:32", type: unit16, '
                        'poll: fast}')
    machine = BARE + y("""
        signals:
          - name: motor.current
            scale: a tenth
        """)
    root = config(tmp_path, {"press-07": machine}, {"press-sim": template})
    errors = errors_of(root)
    assert len(errors) == 2
    assert errors[0].startswith(f"{T}:14: signals[1].type: 'unit16' is not one of bool, ")
    assert errors[0].endswith(NOTE)
    assert errors[1] == (f"{M}:7: signals[0].scale: 'a tenth': input should be a valid number, "
                         "unable to parse string as a number")


def test_missing_field_of_a_new_signal_is_at_its_entry(tmp_path: Path) -> None:
    machine = BARE + y("""
        signals:
          - {name: cycle.count, poll: slow}
          - {name: x.extra, type: uint16, poll: slow}
        """)
    root = config(tmp_path, {"press-07": machine}, {"press-sim": PRESS_SIM})
    assert errors_of(root) == [f"{M}:7: signals[1].address: required field is missing"]


def test_inherited_connection_and_poll_errors(tmp_path: Path) -> None:
    template = sim_with(7, "  port: 70000")
    template = template.replace("  slow: 5s\n", "  slow: 5 parsecs\n")        # line 11
    root = config(tmp_path, {"press-07": BARE}, {"press-sim": template})
    assert errors_of(root) == [
        f"{T}:11: poll.slow: '5 parsecs' is not a duration (use e.g. 100ms, 5s, 1m){NOTE}",
        f"{T}:7: connection.port: 70000: input should be less than or equal to 65535{NOTE}",
    ]


def test_unknown_field_in_template_and_in_override(tmp_path: Path) -> None:
    template = sim_with(3, "descripton: simulated press")
    machine = BARE + "connection: {timout: 1s}\n"                             # 5
    root = config(tmp_path, {"press-07": machine}, {"press-sim": template})
    assert errors_of(root) == [
        f"{M}:5: connection.timout: unknown field (did you mean 'timeout'?)",
        f"{T}:3: descripton: unknown field (did you mean 'description'?){NOTE}",
    ]


def test_missing_machine_field_is_at_the_machine_file(tmp_path: Path) -> None:
    root = config(tmp_path, {"press-07": BARE.replace("area: stamping\n", "")},
                  {"press-sim": PRESS_SIM})
    assert errors_of(root) == [f"{M}:1: area: required field is missing"]


def test_missing_protocol_in_template_and_machine(tmp_path: Path) -> None:
    template = sim_with(5, "  # no protocol")
    root = config(tmp_path, {"press-07": BARE}, {"press-sim": template})
    [error] = errors_of(root)
    assert error.startswith(f"{T}:4: connection.protocol: required field is missing (one of ")
    assert error.endswith(NOTE)


def test_duplicate_signal_name_introduced_by_the_machine_file(tmp_path: Path) -> None:
    machine = BARE + y("""
        signals:
          - {name: cycle.count, poll: slow}
          - {name: x.extra, address: "hr:60", type: uint16, poll: slow}
          - {name: cycle.count, address: "hr:70", type: uint32, poll: fast}
          - {name: x.extra, address: "hr:61", type: uint16, poll: slow}
        """)
    root = config(tmp_path, {"press-07": machine}, {"press-sim": PRESS_SIM})
    assert errors_of(root) == [
        f"{M}:8: signals[2].name: 'cycle.count' is already defined at signals[0]",
        f"{M}:9: signals[3].name: 'x.extra' is already defined at signals[1]",
    ]


def test_duplicate_of_a_template_signal_names_the_template_line(tmp_path: Path) -> None:
    # A template listing a name twice hands the machine a signal it cannot override twice.
    template = PRESS_SIM + '  - {name: motor.current, address: "hr:33", type: uint16, poll: fast}\n'
    machine = BARE + y("""
        signals:
          - {name: motor.current, poll: slow}
        """)
    root = config(tmp_path, {"press-07": machine}, {"press-sim": template})
    assert errors_of(root) == [
        f"{T}:16: signals[3].name: 'motor.current' is already defined at {M}:6{NOTE}"]


def test_template_signal_in_a_group_the_template_does_not_define(tmp_path: Path) -> None:
    template = sim_with(15, '  - {name: press.die_height, address: "hr:30", type: int32, '
                        'unit: mm, poll: slowest}')
    root = config(tmp_path, {"press-07": BARE}, {"press-sim": template})
    assert errors_of(root) == [
        (f"{T}:15: signals[2].poll: 'slowest' is not a poll group of this machine (fast, slow)"
         f"{NOTE}")]
    # The machine file can fix it by adding the group.
    write(root, {M: BARE + "poll: {slowest: 1m}\n"})
    [machine] = load_config(root, DRIVERS).machines
    assert list(machine.signals_by_group()) == ["fast", "slowest"]


def test_several_groups_and_a_signal_without_one(tmp_path: Path) -> None:
    template = sim_with(13, '  - {name: cycle.count, address: "hr:4", type: uint32}')
    root = config(tmp_path, {"press-07": BARE}, {"press-sim": template})
    assert errors_of(root) == [
        (f"{T}:13: signals[0].poll: required when the machine has several poll groups "
         f"(fast, slow){NOTE}")]


def test_duplicate_machine_id_with_templates(tmp_path: Path) -> None:
    root = config(tmp_path, {"press-07": BARE, "press-07b": "# a copy\n" + BARE},
                  {"press-sim": PRESS_SIM})
    assert errors_of(root) == [
        ("machines.d/press-07b.yaml:3: id: machine id 'press-07' is already used in "
         f"{M}")]


def test_shared_line_conflict_from_a_template(tmp_path: Path) -> None:
    gateway = sim_with(5, "  protocol: modbus-rtu-tcp")
    other = BARE.replace("press-07", "press-08")
    root = config(tmp_path, {"press-07": BARE, "press-08": other}, {"press-sim": gateway})
    assert errors_of(root) == [
        (f"{T}:4: connection.unit_id: unit 1 on this line is already polled by {M} "
         "(template press-sim, used by machines.d/press-08.yaml)")]
    write(root, {"machines.d/press-08.yaml": other + "connection: {unit_id: 2}\n"})
    assert len(load_config(root, DRIVERS).machines) == 2


# --------------------------------------------------------------------------- unusable templates


def test_yaml_syntax_error_in_a_template(tmp_path: Path) -> None:
    template = sim_with(14, '  - {name: motor.current, address: "hr:32"')   # unclosed
    root = config(tmp_path, {"press-07": BARE}, {"press-sim": template})
    [error] = errors_of(root)
    assert re.fullmatch(rf"{T}:1[45]: invalid YAML: .+ \(template press-sim, used by {M}:1\)",
                        error), error


def test_template_that_is_not_a_mapping(tmp_path: Path) -> None:
    root = config(tmp_path, {"press-07": BARE, "press-08": BARE.replace("press-07", "press-08")
                             .replace("use: press-sim", "use: empty")},
                  {"press-sim": "- family: press\n", "empty": "# to do\n"})
    assert errors_of(root) == [
        (f"{T}:1: expected a mapping of fields, the template is a list (template press-sim, "
         f"used by {M}:1)"),
        ("templates/empty.yaml:1: expected a mapping of fields, the template is empty "
         "(template empty, used by machines.d/press-08.yaml:1)"),
    ]


def test_unreadable_template(tmp_path: Path) -> None:
    root = config(tmp_path, {"press-07": BARE}, {})
    (root / "templates").mkdir()
    (root / "templates" / "press-sim.yaml").write_bytes(b"family: \xff\n")
    [error] = errors_of(root)
    assert error.startswith(f"{T}: cannot read: 'utf-8' codec can't decode byte 0xff")
    assert error.endswith(f"(template press-sim, used by {M}:1)")


def test_machine_without_use_is_unchanged(tmp_path: Path) -> None:
    root = config(tmp_path, {"press-07": PRESS_SIM.replace("# A press", "id: press-07\n#")
                             .replace("description:", "area: a\nline: l\ndescription:")}, {})
    [machine] = load_config(root, DRIVERS).machines
    # Its values are located in the file itself (no template in between).
    assert machine.locate(("signals", 0)).file == M
    # The digest of a machine file without templates stays the hash of the file.
    assert machine.digest == hashlib.sha256((root / M).read_bytes()).hexdigest()


# --------------------------------------------------------------------------- digest, schema, CLI


def test_digest_changes_with_any_template_of_the_chain(tmp_path: Path) -> None:
    sim = "use: press-base\nconnection: {port: 5020}\n"
    root = config(tmp_path, {"press-07": BARE}, {"press-sim": sim, "press-base": PRESS_SIM})

    def digest() -> str:
        [machine] = load_config(root, DRIVERS).machines
        return machine.digest

    first = digest()
    assert digest() == first
    write(root, {"templates/press-base.yaml": PRESS_SIM.replace("5s", "10s")})
    second = digest()
    assert second != first
    write(root, {"templates/press-sim.yaml": sim + "description: changed\n"})
    third = digest()
    assert third not in (first, second)
    write(root, {M: BARE + "description: mine\n"})
    assert digest() not in (first, second, third)


def test_schema_knows_use() -> None:
    machine = full_schema(DRIVERS)["machine"]
    use = machine["properties"]["use"]
    assert use["type"] == "string" and use["pattern"] == tpl.TEMPLATE_NAME.pattern
    assert "template" in use["description"]
    assert "use" not in machine["required"]
    for ref in machine["oneOf"]:  # each protocol variant accepts it too
        assert "use" in machine["$defs"][ref["$ref"].rsplit("/", 1)[1]]["properties"]


def test_cli_validate_prints_the_template_file_and_line(tmp_path: Path) -> None:
    template = sim_with(14, '  - {name: motor.current, address: "hr:abc", type: uint16, '
                        'poll: fast}')
    machine = BARE + y("""
        signals:
          - {name: x.extra, address: "co:1.3", poll: slow}
        """)
    root = config(tmp_path, {"press-07": machine}, {"press-sim": template})
    result = edge_agent("validate", "-c", root)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines() == [
        f"{T}:14: signals[1].address: 'hr:abc' {NOT_MODBUS}{NOTE}",
        f"{M}:6: signals[0].address: 'co:1.3': a bit index only applies to registers (hr, ir)",
        f"2 error(s) in {root}",
    ]

    write(root, {"templates/press-sim.yaml": PRESS_SIM, M: BARE})
    result = edge_agent("validate", "-c", root)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"{root}: OK (1 machine(s), 3 signal(s))")
