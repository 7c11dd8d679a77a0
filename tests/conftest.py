"""Fixtures for tests that need real parts (broker, simulators, agent processes)."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from tests.support.harness import Broker


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


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The long files (marked slow) first, so that with `-n 3 --dist loadfile
    --no-loadscope-reorder` each starts on a worker of its own at once instead of making
    the tail of the run."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
