"""Write-back: MQTT commands that change writable signals of machines. Off by default.

    {prefix}/{site}/{area}/{line}/{machine}/cmd         {"signal": ..., "value": ..., "request_id": ...}
    {prefix}/{site}/{area}/{line}/{machine}/cmd/reply   {"request_id": ..., "ok": ..., "reason": ...}

When `write.enabled`, the uplink subscribes to `{prefix}/{site}/+/+/+/cmd` (QoS 1) on every
connection and hands each message to `CommandHub.submit`, in the event loop. Before reading
the payload, the hub drops (counted, logged once a burst, unanswered) what an attacker could
use to flood it: topics with over-long levels, commands for machines this agent does not run
(unless write.unknown_machines is reply), and commands beyond a machine's rate (token
bucket, write.max_rate and write.burst). Then it checks all that needs no device (size, JSON,
fields, its sent time `ts` against write.max_age, a request_id not seen before, machine,
signal, writable, type, range), turns the value into the raw device value (enum label ->
number, scale/offset reversed) and queues the command on its machine's inbox. The machine's
runner executes its inbox between polls, in its own task, so a driver is never used by two
tasks at once; a command's deadline (`write.timeout`) runs from its arrival, so a command
never executes late. Every command that gets past the flood guards gets exactly one reply
(on its machine's configured topic, never one the sender chose) and one audit log line.
Sparkplug DCMDs come in through `submit_values` and take the same checks, rate and audit.
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
from structlog.typing import FilteringBoundLogger as Log

from agent.config.models import AgentFile
from agent.core.admission import SeenRecently, TokenBucket, age_problem, sent_ns
from agent.runtime.metrics import Metrics
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
STALE = "stale"
DUPLICATE = "duplicate"
BUSY = "busy"
INTERNAL_ERROR = "internal_error"
# Dropped unanswered: an answer would let a flood steer the agent's own publishing.
RATE_LIMITED = "rate_limited"
BAD_TOPIC = "bad_topic"

MAX_PAYLOAD = 4096  # bytes; a command with the longest Modbus string (250 characters) fits
MAX_REQUEST_ID = 128  # characters
MAX_LEVEL = 128  # characters of a topic level (area, line, machine) a reply may echo
MAX_DETAIL = 300  # characters of a reply's detail
MAX_REPLIES = 1000  # replies waiting for the broker; beyond, the oldest are dropped
FIELDS = ("request_id", "signal", "value", "ts")


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

    reply_topic: str | None  # None: the command's encoding has no replies (Sparkplug)
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
    if not isinstance(value, (bool, int, float, str)):
        raise WriteRefused(WRONG_TYPE, "value must be a number, a string or true/false, not "
                           + ("null" if value is None else type(value).__name__))
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
        self.reply_topic = ""  # set by the hub
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
        """The runner stops: commands for it are refused from now on, what still waits too."""
        self.hub.detach(self)

    def refuse_waiting(self) -> None:
        while self._queue:
            self.hub.finish(self.id, self._queue.popleft(), NOT_CONNECTED,
                            "the machine's task stopped")


class CommandHub:
    """Routes command messages to machine inboxes; builds replies and audit lines."""

    def __init__(self, agent_file: AgentFile, metrics: Metrics | None, log: Log) -> None:
        cfg = agent_file.write
        self.enabled: bool = cfg.enabled
        self.timeout: float = cfg.timeout
        self.queue_size: int = cfg.queue_size
        self.max_age: float = cfg.max_age
        self._ignore_unknown = cfg.unknown_machines == "ignore"
        self._rate, self._burst = cfg.max_rate, cfg.burst
        self.log = log
        self._base = f"{agent_file.mqtt.topic_prefix}/{agent_file.agent.site}/"
        self.subscription = self._base + "+/+/+/cmd"
        self._inboxes: dict[str, MachineInbox] = {}
        self._buckets: dict[str, TokenBucket] = {}  # per running machine
        self._unknown = TokenBucket(cfg.max_rate, cfg.burst)  # all unknown machines together
        # Older and newer commands are refused by their ts: a replay has 2 * max_age to use.
        self._seen = SeenRecently(2 * cfg.max_age)
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
        self._buckets[inbox.id] = TokenBucket(self._rate, self._burst)
        inbox.reply_topic = f"{self._base}{inbox.area}/{inbox.line}/{inbox.id}/cmd/reply"
        return inbox

    def detach(self, inbox: MachineInbox) -> None:
        """A runner stops: commands for it are refused from now on."""
        if self._inboxes.get(inbox.id) is inbox:
            del self._inboxes[inbox.id]
            del self._buckets[inbox.id]
        inbox.refuse_waiting()

    # -- the uplink's side ------------------------------------------------------------

    def submit(self, topic: str, payload: bytes, retain: bool = False) -> None:
        """One message from the command subscription. Never raises."""
        try:
            self._submit(topic, payload, retain)
        except Exception:  # a bug here must not take the uplink down
            self.log.exception("write command handling failed", topic=topic[:200])

    def submit_values(self, machine_id: str, request_id: str, values: Sequence[tuple[str, Any]],
                      ts: Any, retain: bool) -> None:
        """Commands decoded from another encoding (a Sparkplug DCMD: names and values sent
        together at `ts`): the same flood guards, checks, rate and audit; no reply, the new
        value in the data is the answer. Never raises."""
        try:
            self._submit_values(machine_id, request_id, values, ts, retain)
        except Exception:
            self.log.exception("write command handling failed", machine=machine_id[:200])

    def take_reply(self) -> tuple[str, bytes] | None:
        """The oldest reply waiting to be published (topic, payload), or None."""
        return self._replies.popleft() if self._replies else None

    def put_back(self, reply: tuple[str, bytes]) -> None:
        """A reply taken but not published (the connection dropped): first in line again."""
        self._replies.appendleft(reply)

    def _submit(self, topic: str, payload: bytes, retain: bool) -> None:
        parts = topic[len(self._base):].split("/", 4) if topic.startswith(self._base) else []
        if len(parts) != 4 or parts[3] != "cmd":
            return  # not a command topic of ours (the subscription makes this impossible)
        area, line, machine_id = parts[:3]
        inbox = self._inboxes.get(machine_id)
        if inbox is not None and (inbox.area != area or inbox.line != line):
            inbox = None
        if inbox is None:
            if self._ignore_unknown:
                # Another agent of the site may run it: that one answers, whatever it carries.
                self._drop("", UNKNOWN_MACHINE, "write commands for machines this agent does "
                           "not run are ignored (write.unknown_machines: ignore)")
                return
            if max(len(area), len(line), len(machine_id)) > MAX_LEVEL:
                self._drop("", BAD_TOPIC, f"write commands whose topic levels are longer than "
                           f"{MAX_LEVEL} characters are ignored")
                return
            if not self._unknown.take():
                self._drop("", RATE_LIMITED, "write commands for unknown machines rate limited: "
                           "dropped without a reply", rate=self._rate)
                return
            reply_topic = topic + "/reply"
        else:
            if not self._buckets[machine_id].take():
                self._drop(machine_id, RATE_LIMITED, "write commands rate limited: dropped "
                           "without a reply (write.max_rate, write.burst)", machine=machine_id,
                           rate=self._rate)
                return
            reply_topic = inbox.reply_topic

        def refuse(reason: str, detail: str, request_id: Any = None, signal: Any = None,
                   value: Any = None) -> None:
            known = machine_id if inbox is not None else ""
            self._done(reply_topic, machine_id, known, request_id, signal, value, None,
                       reason, detail, "refused")

        if not self.enabled:
            refuse(WRITE_DISABLED, "write.enabled is false in agent.yaml")
            return
        if len(payload) > MAX_PAYLOAD:
            refuse(PAYLOAD_TOO_LARGE, f"{len(payload)} bytes; at most {MAX_PAYLOAD}")
            return
        try:
            data = json.loads(payload, parse_constant=_no_constant)
        except (ValueError, RecursionError) as exc:
            refuse(BAD_JSON, f"not JSON: {str(exc)[:100]}")
            return
        if not isinstance(data, dict):
            refuse(BAD_JSON, f"expected a JSON object, got {type(data).__name__}")
            return
        request_id = data.get("request_id")
        if request_id is not None and not _valid_request_id(request_id):
            refuse(WRONG_TYPE, REQUEST_ID_HELP)
            return
        name = data.get("signal")
        signal = name[:200] if isinstance(name, str) else None  # as shown in replies and logs
        value = data.get("value")
        shown = _shown(value)
        missing = [field for field in FIELDS if field not in data]
        if missing:
            refuse(MISSING_FIELD, f"missing {', '.join(missing)}", request_id, signal, shown)
            return
        if request_id is None:
            refuse(WRONG_TYPE, REQUEST_ID_HELP, request_id, signal, shown)
            return
        if not isinstance(name, str):
            refuse(WRONG_TYPE, "signal must be a signal name (a string)", request_id)
            return
        refused = self._admit(machine_id, request_id, data["ts"], retain)
        if refused is not None:
            refuse(*refused, request_id, signal, shown)
            return
        if inbox is None:
            refuse(UNKNOWN_MACHINE, f"no machine {_short(machine_id)} in area {_short(area)}, "
                   f"line {_short(line)} runs on this agent", request_id, signal, shown)
            return
        self._queue(inbox, reply_topic, request_id, name, value, refuse)

    def _submit_values(self, machine_id: str, request_id: str,
                       values: Sequence[tuple[str, Any]], ts: Any, retain: bool) -> None:
        if not self.enabled:
            self._drop("", WRITE_DISABLED, "write commands refused: write.enabled is false")
            return
        inbox = self._inboxes.get(machine_id)
        if inbox is None:
            self._drop("", UNKNOWN_MACHINE, "write commands for machines this agent does not "
                       "run are ignored")
            return
        if not self._buckets[machine_id].take(len(values)):
            self._drop(machine_id, RATE_LIMITED, "write commands rate limited: dropped "
                       "(write.max_rate, write.burst)", machine=machine_id, rate=self._rate)
            return
        refused = self._admit(machine_id, request_id, ts, retain)
        for name, value in values:
            def refuse(reason: str, detail: str, request_id: Any = request_id,
                       signal: Any = name[:200], value: Any = value) -> None:
                self._done(None, machine_id, machine_id, request_id, signal, _shown(value),
                           None, reason, detail, "refused")
            if refused is not None:
                refuse(*refused)
            else:
                self._queue(inbox, None, request_id, name, value, refuse)

    def _admit(self, machine_id: str, request_id: Any, ts: Any,
               retain: bool) -> tuple[str, str] | None:
        """(reason, detail) when a command must not run whatever it asks; None: go on."""
        if retain:
            return RETAINED, ("retained commands are never executed (they would run again on "
                              "every reconnect): publish with retain false")
        try:
            sent = sent_ns(ts)
        except ValueError as exc:
            return WRONG_TYPE, str(exc)
        problem = age_problem(sent, self.max_age)
        if problem is not None:
            return STALE, problem
        if not self._seen.first_time((machine_id, request_id)):
            return DUPLICATE, (f"request_id {_short(str(request_id))} was already received: "
                               "a command runs once")
        return None

    def _queue(self, inbox: MachineInbox, reply_topic: str | None, request_id: Any, name: str,
               value: Any, refuse: Callable[..., None]) -> None:
        """The machine-specific checks, then the command on the machine's inbox."""
        shown = _shown(value)
        target = inbox.targets.get(name)
        if target is None:
            known = name in inbox.signals
            refuse(NOT_WRITABLE if known else UNKNOWN_SIGNAL,
                   "the signal is not marked writable" if known
                   else f"{inbox.id} has no signal {_short(name)}", request_id, name[:200], shown)
            return
        try:
            raw = raw_value(target.config, target.spec, value)
        except WriteRefused as exc:
            refuse(exc.reason, exc.detail, request_id, name, shown)
            return
        deadline = asyncio.get_running_loop().time() + self.timeout
        command = Command(reply_topic, request_id, name, value, raw, target, deadline)
        if not inbox.offer(command):
            refuse(BUSY, f"{self.queue_size} commands are already waiting for {inbox.id}",
                   request_id, name, shown)

    def _drop(self, label: str, reason: str, message: str, **fields: Any) -> None:
        """Counted, and logged once a burst (the log's rate limit folds repeats of a line
        whose fields do not change: nothing the sender chose is in it)."""
        self._results.labels(label, reason).inc()
        self.log.warning(message, **fields)

    # -- replies and audit --------------------------------------------------------------

    def finish(self, machine: str, command: Command, reason: str | None, detail: str | None,
               attempted: bool = False) -> None:
        """A queued command is done: ok when `reason` is None."""
        result = "ok" if reason is None else "failed" if attempted else "refused"
        self._done(command.reply_topic, machine, machine, command.request_id, command.signal,
                   command.value, command.raw, reason, detail, result)

    def _done(self, topic: str | None, machine: str, label: str, request_id: Any, signal: Any,
              value: Any, raw: Any, reason: str | None, detail: str | None,
              result: str) -> None:
        ok = reason is None
        if detail is not None and len(detail) > MAX_DETAIL:
            detail = detail[:MAX_DETAIL - 3] + "..."
        self._results.labels(label, "ok" if ok else reason).inc()
        audit = self.log.info if ok else self.log.warning
        audit("write command", machine=machine[:200], signal=signal, value=value, raw=raw,
              request_id=request_id, result=result, reason=reason, detail=detail)
        if topic is None:
            return  # no reply topic: the value in the data answers
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
            self.log.warning(f"write replies dropped: {MAX_REPLIES} were already waiting to be "
                             "published (the broker is not acknowledging them as fast as "
                             "commands come)")
        self._replies.append((topic, payload))
        self.on_reply()


REQUEST_ID_HELP = (f"request_id must be a string of 1..{MAX_REQUEST_ID} characters or an "
                   "integer: commands are de-duplicated by it")


def _no_constant(name: str) -> Any:
    # Python's json reads NaN and Infinity, which JSON does not have: refused like any typo.
    raise ValueError(f"{name} is not JSON")


def _valid_request_id(value: Any) -> bool:
    if isinstance(value, str):
        return 0 < len(value) <= MAX_REQUEST_ID
    return isinstance(value, int) and not isinstance(value, bool) and abs(value) < 2**63


def _shown(value: Any) -> Any:
    """A command's value as replies and audit lines show it: small scalars only."""
    if isinstance(value, str):
        return value if len(value) <= 300 else None
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    return value if isinstance(value, (bool, int)) and abs(value) < 2**64 else None


def _short(value: str) -> str:
    return repr(value if len(value) <= 60 else value[:57] + "...")
