"""What the uplinks need of write-back: a Protocol, so that publishing never imports
agent/writeback (the hub there is one implementation; agent/app.py connects the two)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol


class CommandSink(Protocol):
    """Takes command messages from the broker, hands out replies to publish."""

    enabled: bool
    subscription: str  # the topic filter of the uns command topics
    max_age: float  # seconds: older commands (and rebirth requests) are refused
    on_reply: Callable[[], None]  # set by the uplink: a reply is waiting

    def submit(self, topic: str, payload: bytes, retain: bool = False) -> None:
        """One message of the command subscription. Never raises."""

    def submit_values(self, machine_id: str, request_id: str,
                      values: Sequence[tuple[str, Any]], ts: Any, retain: bool) -> None:
        """Commands decoded from a Sparkplug DCMD. Never raises."""

    def take_reply(self) -> tuple[str, bytes] | None:
        """The oldest reply waiting to be published, or None."""

    def put_back(self, reply: tuple[str, bytes]) -> None:
        """A reply taken but not published: first in line again."""
