"""`edge-agent validate` and `edge-agent schema`, run as real processes (`python -m agent`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


REPO = Path(__file__).resolve().parents[2]

from tests.unit.test_config_errors import AGENT, HEAD as MACHINE  # 11 lines; first signal on 12


def edge_agent(*args: str | Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGE_AGENT")}
    return subprocess.run(
        [sys.executable, "-m", "agent", *map(str, args)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=60,
    )


def write(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root


def test_validate_example_config_is_ok() -> None:
    result = edge_agent("validate", "-c", "config/examples")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert result.stdout.startswith("config/examples: OK (8 machine(s), ")
    assert result.stdout.rstrip().endswith("signal(s))")


def test_validate_broken_folder_prints_every_error(tmp_path: Path) -> None:
    write(tmp_path, {
        "agent.yaml": AGENT + "mqtt:\n  password: hunter2\nbuffer:\n  max_bytes: 1 GiBB\n",
        "machines.d/press-07.yaml": MACHINE
        + '  - {name: press.force.ch1, address: "hr:10", type: flaot32}\n'   # 12
        + '  - {name: die.clamp_closed, address: "co:1.3"}\n',                # 13
        "machines.d/press-08.yaml": MACHINE.replace("id: press-07", "id: press-08")
        + '  - {name: cycle.count, address: "hr:4", type: uint32}\n'         # 12
        + '  - {name: cycle.count, address: "hr:52", type: uint32}\n',       # 13
    })
    result = edge_agent("validate", "-c", tmp_path)
    assert result.returncode == 2
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert lines[0] == ("agent.yaml:5: mqtt.password: inline passwords are not allowed: "
                        "use password_env or password_file")
    assert lines[1] == ("agent.yaml:7: buffer.max_bytes: '1 GiBB' is not a size "
                        "(use e.g. 512MiB, 1GiB)")
    assert lines[2].startswith(
        "machines.d/press-07.yaml:12: signals[0].type: 'flaot32' is not one of bool, int16, ")
    assert lines[3] == ("machines.d/press-07.yaml:13: signals[1].address: 'co:1.3': "
                        "a bit index only applies to registers (hr, ir)")
    assert lines[4] == ("machines.d/press-08.yaml:13: signals[1].name: "
                        "'cycle.count' is already defined at signals[0]")
    assert lines[5] == f"5 error(s) in {tmp_path}"
    assert len(lines) == 6


def test_validate_yaml_syntax_error_exits_2_without_traceback(tmp_path: Path) -> None:
    write(tmp_path, {
        "agent.yaml": AGENT,
        "machines.d/press-07.yaml": MACHINE
        + "  - name: cycle.count\n"      # 12
        + '    address: "hr:4"\n'        # 13
        + "   type: uint32\n",           # 14: one space short
    })
    result = edge_agent("validate", "-c", tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert lines[0].startswith("machines.d/press-07.yaml:14: invalid YAML: ")
    assert lines[1:] == [f"1 error(s) in {tmp_path}"]


def test_validate_syntax_error_in_agent_yaml(tmp_path: Path) -> None:
    write(tmp_path, {
        "agent.yaml": "agent:\n  id: gw-01\n   site: changwon\n",
        "machines.d/press-07.yaml": MACHINE + '  - {name: cycle.count, address: "hr:4"}\n',
    })
    result = edge_agent("validate", "-c", tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines() == [
        "agent.yaml:3: invalid YAML: mapping values are not allowed here",
        f"1 error(s) in {tmp_path}",
    ]


def test_validate_missing_folder(tmp_path: Path) -> None:
    result = edge_agent("validate", "-c", tmp_path / "nowhere")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines()[:2] == [
        "agent.yaml: file not found",
        "agent.yaml: machines: machine folder machines.d does not exist",
    ]


def test_schema_is_json_for_agent_and_machine_files() -> None:
    result = edge_agent("schema")
    assert result.returncode == 0, result.stderr
    schema = json.loads(result.stdout)
    assert {"agent", "machine"} <= set(schema)
    agent, machine = schema["agent"], schema["machine"]
    assert agent["type"] == machine["type"] == "object"
    assert "mqtt" in agent["properties"]
    assert {"agent", "buffer", "machines"} <= set(agent["properties"])
    assert "agent" in agent["required"]
    assert "signals" in machine["properties"]
    assert {"id", "family", "connection", "poll"} <= set(machine["properties"])
    assert {"id", "family", "connection", "signals"} <= set(machine["required"])
    # the signal items know the Modbus fields and the common ones
    text = json.dumps(machine)
    for name in ("address", "word_order", "deadband", "modbus-tcp"):
        assert f'"{name}"' in text
    # unknown fields are errors in the files, so editors should flag them too
    assert agent.get("additionalProperties") is False
    assert machine.get("additionalProperties") is False


def test_validate_infinite_size_is_a_config_error(tmp_path: Path) -> None:
    write(tmp_path, {
        "agent.yaml": AGENT + "buffer:\n  max_bytes: .inf\n",
        "machines.d/press-07.yaml": MACHINE + '  - {name: cycle.count, address: "hr:4"}\n',
    })
    result = edge_agent("validate", "-c", tmp_path)
    assert "Traceback" not in result.stderr
    assert result.returncode == 2


def test_schema_part_is_a_self_contained_schema_file() -> None:
    for part in ("agent", "machine"):
        result = edge_agent("schema", part)
        assert result.returncode == 0, result.stderr
        schema = json.loads(result.stdout)
        assert schema["$schema"].startswith("https://json-schema.org/")
        assert schema["type"] == "object"
        refs: list[str] = []

        def walk(node: object) -> None:
            if isinstance(node, dict):
                if "$ref" in node:
                    refs.append(node["$ref"])
                for value in node.values():
                    walk(value)
            elif isinstance(node, list):
                for value in node:
                    walk(value)

        walk(schema)
        for ref in refs:  # every reference resolves inside this one document
            assert ref.startswith("#/$defs/") and ref.removeprefix("#/$defs/") in schema["$defs"], ref


def test_vocabulary_command_prints_the_documented_vocabulary() -> None:
    result = edge_agent("vocabulary")
    assert result.returncode == 0, result.stderr
    assert result.stdout == (REPO / "docs" / "vocabulary.md").read_text()


def test_c_takes_the_folder_or_its_agent_yaml_and_says_so_in_help() -> None:
    examples = REPO / "config" / "examples"
    by_file = edge_agent("validate", "-c", str(examples / "agent.yaml"))
    assert by_file.returncode == 0 and "OK (" in by_file.stdout, by_file.stderr
    for command in (["validate"], ["read", "m"], ["buffer", "stats"], ["run"], ["status"]):
        helped = edge_agent(*command, "--help")
        assert "the config folder (agent.yaml and machines.d/)" in helped.stdout, command


def test_output_cut_short_by_a_pipe_is_no_error() -> None:
    """`edge-agent schema | head`: the reader leaves early; no BrokenPipeError traceback."""
    out = subprocess.run(f"{sys.executable} -m agent schema | head -1", shell=True, cwd=REPO,
                         capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "{" and out.stderr == "", out.stderr
