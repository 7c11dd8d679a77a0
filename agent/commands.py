"""Write-back: MQTT commands that change writable signals of machines. Off by default.

    {prefix}/{site}/{area}/{line}/{machine}/cmd         {"signal": ..., "value": ..., "request_id": ...}
    {prefix}/{site}/{area}/{line}/{machine}/cmd/reply   {"request_id": ..., "ok": ..., "reason": ...}

When `write.enabled`, the uplink subscribes to `{prefix}/{site}/+/+/+/cmd` (QoS 1) on every
connection and hands each message to `CommandHub.submit`, in the event loop. The hub checks
all that needs no device (size, JSON, fields, machine, signal, writable, type, range), turns
the value into the raw device value (enum label -> number, scale/offset reversed) and queues
the command on its machine's inbox. The machine's runner executes its inbox between polls,
in its own task, so a driver is never used by two tasks at once; a command's deadline
(`write.timeout`) runs from its arrival, so a command never executes late. Every command gets
exactly one reply and one audit log line, whatever it carried.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from prometheus_client import Counter

from drivers.base import (DEVICE_ERROR, NOT_CONNECTED, NOT_WRITABLE, OUT_OF_RANGE, TIMEOUT,
                          WRONG_TYPE, Driver, Value, WriteRefused, WriteSpec, coerce_write)

# Reasons of a refusal (besides the drivers' wrong_type, out_of_range, not_writable,
# not_connected, device_error and timeout).
WRITE_DISABLED = "write_disabled"
UNKNOWN_MACHINE = "unknown_machine"
UNKNOWN_SIGNAL = "unknown_signal"
BAD_JSON = "bad_json"
PAYLOAD_TOO_LARGE = "payload_too_large"
MISSING_FIELD = "missing_field"
RETAINED = "retained"
BUSY = "busy"
INTERNAL_ERROR = "internal_error"

MAX_PAYLOAD = 4096  # bytes; a command with the longest Modbus string (250 characters) fits
MAX_REQUEST_ID = 128  # characters
MAX_REPLIES = 1000  # replies waiting for the broker; beyond, the oldest are dropped
FIELDS = ("request_id", "signal", "value")


@dataclass(frozen=True, slots=True)
class _Target:
    """A writable signal of a machine: where the runner finds it and what it accepts."""

    group: str
    index: int
    config: Any  # the signal's config model (CommonSignal + the protocol's fields)
    spec: WriteSpec


@dataclass(slots=True)
class Command:
    """A checked command waiting for its machine's runner."""

    reply_topic: str
    request_id: Any  # a string or an integer, checked
    signal: str
    value: Value  # as requested, in the signal's unit (or an enum label)
    raw: Value  # what the driver writes
    target: _Target
    deadline: float  # event-loop time after which it is not executed any more


def raw_value(signal: Any, spec: WriteSpec, value: Any) -> Value:
    """The device value for a command's `value` (WriteRefused: wrong_type, out_of_range):
    an enum label (or one of its numbers) for an enum signal; a number within min..max
    with scale, offset and unit conversion reversed; true/false for a bit or coil; a string for a string."""
    if value is None or isinstance(value, (dict, list)):
        raise WriteRefused(WRONG_TYPE, "value must be a number, a string or true/false")
    enum: Mapping[int, str] | None = signal.enum
    if enum is not None:
        if isinstance(value, str):
            number = next((k for k, label in enum.items() if label == value), None)
            if number is None:
                raise WriteRefused(OUT_OF_RANGE, f"{_short(value)} is not one of "
                                   f"{', '.join(enum.values())}")
        elif isinstance(value, int) and not isinstance(value, bool):
            if value not in enum:
                raise WriteRefused(OUT_OF_RANGE,
                                   f"{value} is not one of {', '.join(map(str, enum))}")
            number = value
        else:
            raise WriteRefused(WRONG_TYPE, f"expected one of {', '.join(enum.values())}")
        return coerce_write(number, spec)
    if spec.kind in ("bool", "str") or (spec.kind == "any" and isinstance(value, (bool, str))):
        return coerce_write(value, spec)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise WriteRefused(WRONG_TYPE, "expected a number")
    if isinstance(value, float) and not math.isfinite(value):
        raise WriteRefused(OUT_OF_RANGE, f"{value} is not a finite number")
    low, high = signal.min, signal.max
    if (low is not None and value < low) or (high is not None and value > high):
        bounds = "..".join("" if b is None else f"{b:g}" for b in (low, high))
        raise WriteRefused(OUT_OF_RANGE, f"{value} is outside {bounds}")
    _, scale, offset = signal.transform()  # the published unit back to the device's
    if scale != 1.0 or offset != 0.0:
        try:
            value = (value - offset) / scale
        except OverflowError:
            raise WriteRefused(OUT_OF_RANGE, "too large") from None
    return coerce_write(value, spec)


class MachineInbox:
    """One machine's pending commands, executed by its runner between polls."""

    def __init__(self, hub: CommandHub, machine: Any, groups: Mapping[str, Sequence[Any]]) -> None:
        self.hub = hub
        self.id: str = machine.id
        self.area: str = machine.model.area
        self.line: str = machine.model.line
        self.signals: set[str] = set()
        self.targets: dict[str, _Target] = {}
        for group, signals in groups.items():
            for index, signal in enumerate(signals):
                self.signals.add(signal.name)
                if signal.writable:
                    self.targets[signal.name] = _Target(group, index, signal, signal.write_spec())
        self._queue: deque[Command] = deque()
        self._wake = asyncio.Event()

    def offer(self, command: Command) -> bool:
        """Queue a command; False when the inbox is full."""
        if len(self._queue) >= self.hub.queue_size:
            return False
        self._queue.append(command)
        self._wake.set()
        return True

    async def serve(self, deadline: float, driver: Driver) -> None:
        """Until the loop time `deadline` (the next poll): execute commands as they come.
        A poll that is due goes first: then at most one command runs before it."""
        loop = asyncio.get_running_loop()
        while True:
            if self._queue:
                await self._execute(self._queue.popleft(), driver)
                if loop.time() >= deadline:
                    return
                continue
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            self._wake.clear()
            try:
                async with asyncio.timeout(remaining):
                    await self._wake.wait()
            except TimeoutError:
                return

    async def _execute(self, command: Command, driver: Driver) -> None:
        hub = self.hub
        remaining = command.deadline - asyncio.get_running_loop().time()
        write = getattr(driver, "write", None)
        if remaining <= 0:
            hub.finish(self.id, command, TIMEOUT, "expired waiting for the machine's turn")
        elif write is None:
            hub.finish(self.id, command, NOT_WRITABLE, "this protocol's driver cannot write")
        elif not driver.connected:
            hub.finish(self.id, command, NOT_CONNECTED, "the device is not connected")
        else:
            target = command.target
            try:
                async with asyncio.timeout(remaining):
                    await write(target.group, target.index, command.raw)
            except WriteRefused as exc:
                hub.finish(self.id, command, exc.reason, exc.detail, attempted=True)
            except TimeoutError:
                hub.finish(self.id, command, TIMEOUT, "no confirmation within write.timeout: "
                           "the write may or may not have been applied", attempted=True)
            except asyncio.CancelledError:  # the agent stops or reloads this machine
                hub.finish(self.id, command, NOT_CONNECTED, "the machine's task stopped during "
                           "the write: it may or may not have been applied", attempted=True)
                raise
            except Exception as exc:  # a driver bug must not take the machine down
                hub.log.exception("write failed in the driver", machine=self.id,
                                  signal=command.signal)
                hub.finish(self.id, command, DEVICE_ERROR, f"{INTERNAL_ERROR}: "
                           f"{type(exc).__name__}", attempted=True)
            else:
                hub.finish(self.id, command, None, None, attempted=True)

    def close(self) -> None:
        """The runner stops: what is still queued is refused."""
        while self._queue:
            self.hub.finish(self.id, self._queue.popleft(), NOT_CONNECTED,
                            "the machine's task stopped")


class CommandHub:
    """Routes command messages to machine inboxes; builds replies and audit lines."""

    def __init__(self, agent_file: Any, metrics: Any, log: Any) -> None:
        cfg = agent_file.write
        self.enabled: bool = cfg.enabled
        self.timeout: float = cfg.timeout
        self.queue_size: int = cfg.queue_size
        self._ignore_unknown = cfg.unknown_machines == "ignore"
        self.log = log
        self._base = f"{agent_file.mqtt.topic_prefix}/{agent_file.agent.site}/"
        self.subscription = self._base + "+/+/+/cmd"
        self._inboxes: dict[str, MachineInbox] = {}
        self._replies: deque[tuple[str, bytes]] = deque()
        self.on_reply: Callable[[], None] = lambda: None  # the uplink's wake-up
        registry = getattr(metrics, "registry", None)
        self._results = Counter(
            "edge_agent_write_commands", "Write commands by machine and result (ok or the "
            "reason of the refusal; machine is empty when unknown)", ["machine", "result"],
            registry=registry)
        self._replies_dropped = Counter(
            "edge_agent_write_replies_dropped", "Replies to write commands dropped because "
            f"more than {MAX_REPLIES} waited for the broker", registry=registry)

    # -- the runners' side ------------------------------------------------------------

    def attach(self, machine: Any, groups: Mapping[str, Sequence[Any]]) -> MachineInbox:
        """A runner starts: its inbox (commands for it are accepted from now on)."""
        inbox = MachineInbox(self, machine, groups)
        self._inboxes[inbox.id] = inbox
        return inbox

    def detach(self, inbox: MachineInbox) -> None:
        """A runner stops: commands for it are refused from now on."""
        if self._inboxes.get(inbox.id) is inbox:
            del self._inboxes[inbox.id]
        inbox.close()

    # -- the uplink's side ------------------------------------------------------------

    def submit(self, topic: str, payload: bytes, retain: bool = False) -> None:
        """One message from the command subscription. Never raises."""
        try:
            self._submit(topic, payload, retain)
        except Exception:  # a bug here must not take the uplink down
            self.log.exception("write command handling failed", topic=topic[:200])

    def take_reply(self) -> tuple[str, bytes] | None:
        """The oldest reply waiting to be published (topic, payload), or None."""
        return self._replies.popleft() if self._replies else None

    def put_back(self, reply: tuple[str, bytes]) -> None:
        """A reply taken but not published (the connection dropped): first in line again."""
        self._replies.appendleft(reply)

    def _submit(self, topic: str, payload: bytes, retain: bool) -> None:
        reply_topic = topic + "/reply"
        parts = topic[len(self._base):].split("/") if topic.startswith(self._base) else []
        if len(parts) != 4 or parts[3] != "cmd":
            return  # not a command topic of ours (the subscription makes this impossible)
        area, line, machine_id = parts[:3]

        def refuse(reason: str, detail: str, request_id: Any = None, signal: Any = None,
                   value: Any = None) -> None:
            known = machine_id if machine_id in self._inboxes else ""
            self._done(reply_topic, machine_id, known, request_id, signal, value, None,
                       reason, detail, "refused")

        if not self.enabled:
            refuse(WRITE_DISABLED, "write.enabled is false in agent.yaml")
            return
        inbox = self._inboxes.get(machine_id)
        if inbox is not None and (inbox.area != area or inbox.line != line):
            inbox = None
        if inbox is None and self._ignore_unknown:
            # Another agent of the site may run it: that one answers, whatever it carries.
            self._results.labels("", UNKNOWN_MACHINE).inc()
            return
        if len(payload) > MAX_PAYLOAD:
            refuse(PAYLOAD_TOO_LARGE, f"{len(payload)} bytes; at most {MAX_PAYLOAD}")
            return
        try:
            data = json.loads(payload)
        except (ValueError, RecursionError) as exc:
            refuse(BAD_JSON, f"not JSON: {str(exc)[:100]}")
            return
        if not isinstance(data, dict):
            refuse(BAD_JSON, f"expected a JSON object, got {type(data).__name__}")
            return
        request_id = data.get("request_id")
        if request_id is not None and not _valid_request_id(request_id):
            refuse(WRONG_TYPE, f"request_id must be a string of 1..{MAX_REQUEST_ID} characters "
                   "or an integer")
            return
        name = data.get("signal")
        signal = name[:200] if isinstance(name, str) else None  # as shown in replies and logs
        value = data.get("value")
        shown = value if isinstance(value, (bool, int, float, str)) and _small(value) else None
        missing = [field for field in FIELDS if field not in data]
        if missing:
            refuse(MISSING_FIELD, f"missing {', '.join(missing)}", request_id, signal, shown)
            return
        if not isinstance(name, str):
            refuse(WRONG_TYPE, "signal must be a signal name (a string)", request_id)
            return
        if retain:
            refuse(RETAINED, "retained commands are never executed (they would run again on "
                   "every reconnect): publish with retain false", request_id, signal, shown)
            return
        if inbox is None:
            refuse(UNKNOWN_MACHINE, f"no machine {machine_id!r} in area {area!r}, line "
                   f"{line!r} runs on this agent", request_id, signal, shown)
            return
        target = inbox.targets.get(name)
        if target is None:
            known = name in inbox.signals
            refuse(NOT_WRITABLE if known else UNKNOWN_SIGNAL,
                   "the signal is not marked writable" if known
                   else f"{machine_id} has no signal {_short(name)}", request_id, signal, shown)
            return
        try:
            raw = raw_value(target.config, target.spec, value)
        except WriteRefused as exc:
            refuse(exc.reason, exc.detail, request_id, signal, shown)
            return
        deadline = asyncio.get_running_loop().time() + self.timeout
        command = Command(reply_topic, request_id, name, value, raw, target, deadline)
        if not inbox.offer(command):
            refuse(BUSY, f"{self.queue_size} commands are already waiting for {machine_id}",
                   request_id, signal, shown)

    # -- replies and audit --------------------------------------------------------------

    def finish(self, machine: str, command: Command, reason: str | None, detail: str | None,
               attempted: bool = False) -> None:
        """A queued command is done: ok when `reason` is None."""
        result = "ok" if reason is None else "failed" if attempted else "refused"
        self._done(command.reply_topic, machine, machine, command.request_id, command.signal,
                   command.value, command.raw, reason, detail, result)

    def _done(self, topic: str, machine: str, label: str, request_id: Any, signal: Any,
              value: Any, raw: Any, reason: str | None, detail: str | None,
              result: str) -> None:
        ok = reason is None
        self._results.labels(label, "ok" if ok else reason).inc()
        audit = self.log.info if ok else self.log.warning
        audit("write command", machine=machine[:200], signal=signal, value=value, raw=raw,
              request_id=request_id, result=result, reason=reason, detail=detail)
        body = {"request_id": request_id, "ok": ok, "reason": reason, "detail": detail,
                "machine": machine[:200], "signal": signal, "value": value if ok else None,
                "raw": raw if ok else None, "ts": time.time_ns()}
        try:
            payload = json.dumps(body, separators=(",", ":"), allow_nan=False).encode()
        except ValueError:  # a non-finite number cannot be written, so this is defensive
            body["value"] = body["raw"] = None
            payload = json.dumps(body, separators=(",", ":")).encode()
        if len(self._replies) >= MAX_REPLIES:
            self._replies.popleft()
            self._replies_dropped.inc()
            self.log.warning("write replies dropped: the broker is not taking them")
        self._replies.append((topic, payload))
        self.on_reply()


def _valid_request_id(value: Any) -> bool:
    if isinstance(value, str):
        return 0 < len(value) <= MAX_REQUEST_ID
    return isinstance(value, int) and not isinstance(value, bool) and abs(value) < 2**63


def _small(value: Any) -> bool:
    return not isinstance(value, str) or len(value) <= 300


def _short(value: str) -> str:
    return repr(value if len(value) <= 60 else value[:57] + "...")
