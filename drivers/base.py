"""The contract between the agent and a protocol driver.

A driver is built once per machine from its validated connection settings and the
protocol-specific part of its signals, grouped by poll group. It plans its reads at
construction and executes the plan on every `read(group)`. It never raises for device
trouble: a failed request becomes bad samples with a reason, in signal order.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Final, Literal, Mapping, Protocol, Sequence

from pydantic import BaseModel

from drivers.file_checks import FileChecker, FileProblem

if TYPE_CHECKING:
    import argparse
    from collections.abc import Coroutine

Value = float | int | bool | str | None

# The three qualities of OPC UA's status severity, which every protocol maps onto; the agent
# publishes them as they are, so a new one would be a change of the payload contract.
Quality = Literal["good", "uncertain", "bad"]
GOOD: Final = "good"
UNCERTAIN: Final = "uncertain"
BAD: Final = "bad"

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
    quality: Quality = GOOD
    reason: str | None = None


def bad_sample(reason: str, ts_ns: int | None = None) -> RawSample:
    """A bad sample without a value, stamped now unless the device gave a time.

    A plain function around the positional constructor (no keywords, no validation): it
    runs for every signal of a failed request, and only there; good samples keep calling
    RawSample directly."""
    return RawSample(None, time.time_ns() if ts_ns is None else ts_ns, BAD, reason)


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
# The files a connection names (certificates, keys, password files), for `edge-agent
# validate`: (connection, checker) -> problems located inside the machine file. Optional, so
# the agent checks any protocol's files without knowing its fields.
FileCheck = Callable[[Any, FileChecker], list[FileProblem]]


@dataclass(frozen=True, slots=True)
class DriverCommand:
    """An `edge-agent NAME ...` command a protocol brings along (OPC UA's `browse`), which the
    CLI offers for every registered driver without knowing the protocol.

    `add_arguments` adds the command's arguments to its argparse subparser. `run` gets the
    parsed arguments, prints its own output (errors as `edge-agent: ...` on stderr) and
    returns the exit code, or a coroutine that the CLI runs with asyncio.run and that
    returns it: 0 done, 1 the command ran and failed (a device that did not answer), 2 the
    command line must change first. The module defining a command is loaded with the
    registry: it imports its heavy parts inside `run`.
    """

    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int | Coroutine[Any, Any, int]]


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
    check_files: FileCheck | None = None
    # Extra `edge-agent` commands of the protocol (browse a server, create certificates).
    commands: Sequence[DriverCommand] = ()
    # Reasons of bad samples (or their prefixes) that mean the config does not match the
    # device rather than a passing fault, e.g. a node or register address the device does
    # not have: `edge-agent validate --online` reports a signal read with one as an error.
    mismatch_reasons: tuple[str, ...] = ()


# -- writes to devices (off unless the agent's config allows them) -------------------------
#
# A driver that can write implements `write` (see `Writer`); its signal model implements
# `write_spec()`. The agent checks a command against the spec (type, range) and reverses the
# signal's enum, scale and offset before the driver sees the value, so a driver receives a
# raw device value of the right Python type. Writes are never retried: one command, one
# request (a Modbus bit is a read-modify-write of its register).

# Reasons a write is refused or fails (the reply's `reason`); drivers add a `detail`.
WRONG_TYPE = "wrong_type"
NOT_WRITABLE = "not_writable"
NOT_CONNECTED = "not_connected"
DEVICE_ERROR = "device_error"  # the device answered with an error, or the link broke


class WriteRefused(Exception):
    """A write that was not done (or not confirmed): a reason code and a human detail."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class WriteSpec:
    """What a writable signal accepts, in raw device units.

    kind: bool, int (low..high), float (low..high, finite), str (max_length characters that
    `encoding` can encode), or any (the driver learns the type from the device and checks
    the value itself when writing, e.g. from an OPC UA node's DataType).
    """

    kind: str
    low: float | None = None
    high: float | None = None
    max_length: int | None = None
    encoding: str | None = None

    @property
    def numeric(self) -> bool:
        return self.kind in ("int", "float", "any")


FLOAT32_MAX = 3.4028234663852886e38


def coerce_write(value: Value, spec: WriteSpec) -> Value:
    """`value` as the Python type `spec` wants, or WriteRefused (wrong_type, out_of_range).
    A float with a whole value is accepted for an int (12.0 -> 12); 12.5 is not."""
    kind = spec.kind
    if kind == "any":
        return value
    if kind == "bool":
        if type(value) is not bool:
            raise WriteRefused(WRONG_TYPE, "expected true or false")
        return value
    if kind == "str":
        if not isinstance(value, str):
            raise WriteRefused(WRONG_TYPE, "expected a string")
        if spec.max_length is not None and len(value) > spec.max_length:
            raise WriteRefused(OUT_OF_RANGE, f"longer than {spec.max_length} characters")
        if spec.encoding is not None:
            try:
                value.encode(spec.encoding)
            except UnicodeEncodeError:
                raise WriteRefused(WRONG_TYPE, f"characters that {spec.encoding} cannot "
                                   "encode") from None
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise WriteRefused(WRONG_TYPE, "expected a number")
    if isinstance(value, float) and not math.isfinite(value):
        raise WriteRefused(OUT_OF_RANGE, f"{value} is not a finite number")
    number: int | float
    if kind == "int":
        if isinstance(value, float):
            whole = round(value)
            # Scaling leaves float noise (12.3 / 0.1 = 122.99999999999999); more is a fraction.
            if abs(value - whole) > max(1e-6, abs(value) * 1e-12):
                raise WriteRefused(WRONG_TYPE, f"raw value {value:g} is not a whole number")
            number = int(whole)
        else:
            number = value
    elif kind == "float":
        try:
            number = float(value)
        except OverflowError:
            raise WriteRefused(OUT_OF_RANGE, "too large for a float") from None
    else:
        raise WriteRefused(WRONG_TYPE, f"unknown value kind {kind!r}")
    if ((spec.low is not None and number < spec.low)
            or (spec.high is not None and number > spec.high)):
        raise WriteRefused(OUT_OF_RANGE, f"raw value {_num(number)} is outside "
                           f"{_num(spec.low)}..{_num(spec.high)}")
    return number


def _num(x: float | None) -> str:
    return "" if x is None else str(x) if isinstance(x, int) else f"{x:g}"


class Writer(Protocol):
    """A driver that can write: `Driver` plus `write`. Drivers without it refuse writes."""

    async def write(self, group: str, index: int, value: Value) -> None:
        """Write the raw value of signal `index` of poll group `group` (already coerced to
        its WriteSpec). Returns when the device confirmed it; raises WriteRefused otherwise
        (not_connected before trying; timeout, device_error with a detail after). Called
        from the machine's own task, between polls: never concurrently with `read`."""


class BusMeter(Protocol):
    """A shared connection the agent reports on (utilisation of a serial bus)."""

    name: str
    busy_seconds: float  # time the line carried a request, a reply or a guard interval
