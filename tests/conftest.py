"""Fixtures for tests that need real parts (broker, simulators, agent processes)."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from tests.harness import Broker


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    """A running mosquitto on a free loopback port."""
    b = Broker(tmp_path / "mosquitto")
    b.start()
    yield b
    b.stop()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--chaos-minutes", type=float, default=3.0,
                     help="how long the chaos test injects faults (default 3)")
