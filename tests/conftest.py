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
