"""The contract between the agent and a protocol driver.

A driver is built once per machine from its validated connection settings and the
protocol-specific part of its signals, grouped by poll group. It plans its reads at
construction and executes the plan on every `read(group)`. It never raises for device
trouble: a failed request becomes bad samples with a reason, in signal order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Protocol, Sequence

from pydantic import BaseModel

Value = float | int | bool | str | None

# Reasons a sample can be bad; drivers may add `device_exception:<code>` and the like.
COMM_FAILURE = "comm_failure"
TIMEOUT = "timeout"
MALFORMED_REPLY = "malformed_reply"
OUT_OF_RANGE = "out_of_range"
CONFIG_ERROR = "config_error"


@dataclass(slots=True)
class RawSample:
    """One decoded device value before normalization. `reason` is None when good.

    Treat as immutable (one bad sample may stand for every signal of a failed request); not
    frozen only because frozen dataclasses cost four times as much to create, per value."""

    value: Value
    ts_ns: int
    quality: str = "good"
    reason: str | None = None


@dataclass(slots=True)
class DeviceEvent:
    """One event a device reported on its own (an alarm, a finished cycle), with its fields."""

    source: str  # the configured event source it came from
    ts_ns: int
    fields: dict[str, Any]


@dataclass(slots=True)
class Drained:
    """What arrived from the device by itself since the last poll of a push group."""

    samples: list[tuple[int, RawSample]]  # (signal index within the group, sample), in order
    events: list[DeviceEvent]


class Driver(Protocol):
    """What the agent's scheduler calls. One instance per machine, one connection."""

    @property
    def connected(self) -> bool: ...

    async def connect(self) -> None:
        """Open the connection; raises OSError/TimeoutError/ConnectionError on failure."""

    async def close(self) -> None:
        """Close the connection; never raises."""

    async def read(self, group: str) -> list[RawSample]:
        """Read one poll group; one sample per signal of the group, in config order."""

    def request_count(self, group: str) -> int:
        """Requests one poll of `group` costs (for metrics and benchmarks)."""

    async def drain(self, group: str) -> Drained | None:
        """For a push group (values the device sends by itself): what arrived since the last
        call. None for a polled group, which the agent reads with `read` instead."""


# (connection, signals by poll group, poll interval in seconds by group, shared) -> driver.
# `shared` is one dict per agent, the same for every machine: drivers of different machines
# find a connection they must share (a serial bus) in it under a key of their choosing.
DriverFactory = Callable[[Any, Mapping[str, Sequence[Any]], Mapping[str, float],
                          dict[str, Any]], Driver]
# A connection shared by several machines: (key, settings they must agree on, the machine's
# own address on it that no other may use, e.g. a unit id) or None.
SharedResource = Callable[[Any], tuple[str, Any, Any] | None]
# Cross-field checks of one machine at load time: (connection, signals, poll groups) ->
# [(location inside the machine file, message)], e.g. (("signals", 3, "mode"), "...").
MachineCheck = Callable[[Any, Sequence[Any], Mapping[str, float]],
                        list[tuple[tuple[str | int, ...], str]]]


@dataclass(frozen=True, slots=True)
class DriverSpec:
    """A protocol plug-in: its config models and how to build a driver.

    `signal_model` holds only the protocol's own signal fields (address, type, ...);
    the agent adds the common ones (name, unit, scale, poll group, deadband).
    """

    protocol: str
    connection_model: type[BaseModel]
    signal_model: type[BaseModel]
    factory: DriverFactory
    check: MachineCheck | None = None
    shared_resource: SharedResource | None = None


class BusMeter(Protocol):
    """A shared connection the agent reports on (utilisation of a serial bus)."""

    name: str
    busy_seconds: float  # time the line carried a request, a reply or a guard interval
