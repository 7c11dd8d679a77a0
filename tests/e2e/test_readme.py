"""The README's two set-up commands: the demo runs, and CI runs the same test command."""

from __future__ import annotations

import re
import subprocess
import sys
import zipfile
from pathlib import Path

from tests.support.harness import REPO


def _setup_commands() -> list[str]:
    text = (REPO / "README.md").read_text()
    first_section = text.split("\n## ", 1)[0]
    return re.findall(r"```sh\n(.+?)\n```", first_section, flags=re.S)


def test_readme_starts_with_exactly_two_commands_and_ci_runs_the_second() -> None:
    commands = _setup_commands()
    assert len(commands) == 2, commands
    assert all("\n" not in c for c in commands), "each set-up command is one line"
    assert "edge-agent demo" in commands[0]
    ci = (REPO / ".ci" / "run").read_text().strip().splitlines()
    assert ci[-1] == commands[1]


def test_demo_runs_the_pipeline_and_exits_cleanly() -> None:
    # 8 s: on a loaded machine the agent may take a few seconds to start polling.
    out = subprocess.run([sys.executable, "-m", "agent", "demo", "--duration", "8"], cwd=REPO,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    # Not a terminal: the live view's plain periodic lines, one per machine.
    assert re.search(r"^  press-01 +up +", out.stdout, re.M), out.stdout
    summary = out.stdout.strip().splitlines()[-1]
    assert re.search(r"demo: \d+ batches, \d+ readings .* 0 bad; agent exit code 0", summary), summary


def test_wheel_ships_the_example_config_for_the_demo(tmp_path: Path) -> None:
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path),
                    str(REPO)], check=True, capture_output=True, timeout=300)
    wheel = next(tmp_path.glob("edge_agent-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    shipped = {n.split(".data/data/", 1)[1] for n in names if ".data/data/" in n}
    assert "share/edge-agent/examples/agent.yaml" in shipped
    assert "share/edge-agent/examples/machines.d/press.yaml" in shipped
    assert "agent/cli/main.py" in names and "drivers/registry.py" in names
    assert "simulators/modbus/press.py" in names
