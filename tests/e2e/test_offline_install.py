"""The offline install of the README works: a wheelhouse built here installs with
`pip install --no-index` into a fresh virtual environment, and the agent runs from it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.harness import REPO


@pytest.mark.slow
def test_wheelhouse_installs_without_an_index(tmp_path: Path) -> None:
    wheelhouse = tmp_path / "wheelhouse"
    # The README's command for the machine it runs on (a gateway of the same platform).
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", str(REPO), "--wheel-dir",
                    str(wheelhouse)], check=True, timeout=600, capture_output=True)
    assert any(p.name.startswith("edge_agent-") for p in wheelhouse.iterdir())
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    install = subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "--no-index",
                              "--find-links", str(wheelhouse), "edge-agent"],
                             capture_output=True, text=True, timeout=600)
    assert install.returncode == 0, install.stderr
    version = subprocess.run([str(venv / "bin" / "edge-agent"), "--version"],
                             capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert version.returncode == 0 and version.stdout.startswith("edge-agent "), version
    # The installed package carries the example config and validates it.
    examples = venv / "share" / "edge-agent" / "examples"
    check = subprocess.run([str(venv / "bin" / "edge-agent"), "validate", "-c", str(examples)],
                           capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert check.returncode == 0, check.stderr
