"""What a machine's runner hands on, and the one thing it takes in: the seams between
acquisition and the rest. agent/app.py connects them (to the buffer, the twin state and
write-back); the runner knows none of those.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from agent.config.loader import MachineConfig
from agent.core.model import Reading
from drivers.base import Driver


class CommandInbox(Protocol):
    """Write commands for one machine, executed by its runner between polls, so a driver is
    never used by two tasks at once."""

    async def serve(self, deadline: float, driver: Driver) -> None:
        """Execute commands as they come until the loop time `deadline` (the next poll)."""

    def close(self) -> None:
        """The runner stops: what still waits is refused."""


class MachineOutput(Protocol):
    """Where one runner's results go."""

    def started(self, machine: MachineConfig, signals: Sequence[tuple[str, str | None]],
                groups: Mapping[str, Sequence[Any]]) -> CommandInbox | None:
        """A runner starts with these signals (name, unit; derived ones included); its
        command inbox, or None when write-back is off."""

    def readings(self, machine: str, readings: list[Reading], sampled_ns: int) -> None:
        """One poll's readings (never empty)."""

    def events(self, machine: str, records: list[dict[str, Any]], sampled_ns: int,
               cycle: dict[str, Any] | None) -> None:
        """Device events and derived records of one poll; the machine's last cycle."""
