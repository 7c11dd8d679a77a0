"""Simulated CNC machining centre speaking OPC UA (modelled loosely on umati / OPC 40501).

Run: ``python -m simulators.opcua.cnc --port 4840 --name CNC-01 --seed 1 --time-scale 1.0
--alarm-every 10 [--update-ms 100] [--security all --pki-dir DIR] [--trusted-clients DIR]
[--user NAME:PASSWORD ...] [--no-anonymous] [--extra-namespaces N] [--delay-ms N]``.
When listening it prints ``cnc listening on opc.tcp://HOST:PORT``. SIGUSR1 toggles paused
publishing, SIGUSR2 restarts the server, SIGTERM/SIGINT exit 0.

Address space. Namespace ``urn:edge-agent:sim:cnc`` (index ``ns`` = 2 + extra namespaces).
Every node below has the string NodeId ``ns=<ns>;s=<NAME>.<path with dots>`` (e.g.
``CNC-01.Monitoring.Spindle.ActSpeed``) and browse names in ``ns``; the path starts at
Objects/Machines/<NAME> (folder ``s=Machines``, machine object ``s=<NAME>``). All read-only
but the two overrides (FeedOverride, Spindle/Override: AccessLevel CurrentRead|CurrentWrite),
which a client may write as an operator would turn the knob: the machine then keeps that
override (clamped to 0..200 %) instead of drawing one per cycle. A write must carry a Double.

=====================================  ==========  ===========================================
path below Objects/Machines/<NAME>     type        meaning
=====================================  ==========  ===========================================
Identification/Manufacturer            String      constant
Identification/Model                   String      constant
Identification/SerialNumber            String      constant
Identification/SoftwareRevision        String      constant
Identification/YearOfConstruction      UInt16      2019
Monitoring/Channel1/ChannelState       Int32 enum  0 Active, 1 Interrupted, 2 Reset
                                                   (DataType s=ChannelStateEnumeration)
Monitoring/Channel1/ChannelMode        Int32 enum  0 Automatic, 1 MDI, 2 Manual
                                                   (DataType s=ChannelModeEnumeration)
Monitoring/Channel1/FeedOverride       Double      %
Monitoring/Channel1/RapidOverride      Double      %
Monitoring/Channel1/FeedRate           Double      actual path feed, mm/min
Monitoring/Spindle/ActSpeed            Double      rev/min
Monitoring/Spindle/CmdSpeed            Double      programmed speed, rev/min
Monitoring/Spindle/Override            Double      %
Monitoring/Spindle/Load                Double      %
Monitoring/Axes/X, .../Y, .../Z        Double      actual position, mm
Monitoring/Tool/ToolNumber             UInt32      tool in the spindle
Monitoring/EStop                       Boolean     emergency stop pressed
Monitoring/Diagnostics/<T>             <T>         one per type T: SByte, Byte, Int16, UInt16,
                                                   Int32, UInt32, Int64, UInt64, Float, Double,
                                                   Boolean, String, DateTime, LocalizedText,
                                                   ByteString; DoubleArray (Double[3]);
                                                   ServerStateEnum (Int32, DataType i=852);
                                                   change every 5 simulated s
Production/ActiveProgram/Name          String      program name
Production/ActiveProgram/State         Int32 enum  0 Running, 1 Stopped, 2 Aborted, 3 Ended
                                                   (DataType s=ProgramStateEnumeration)
Production/ActiveProgram/NumberInList  UInt32      program index in the list (0-based)
Production/PartCountGood               UInt32      good parts since start
Production/PartCountBad                UInt32      bad parts (incl. aborted cycles)
Production/CycleTime                   Double      last completed cycle, simulated s
Production/CycleCount                  UInt64      ended cycles (= good + bad)
Notification/ActiveAlarm               UInt32      active alarm code, 0 = none
=====================================  ==========  ===========================================

Events: the machine object (EventNotifier set, Server HasNotifier it) and the Server object
emit ``CncAlarmEventType`` (``s=CncAlarmEventType``, subtype of BaseEventType) when an alarm
is raised: AlarmCode (UInt32), AlarmText (String), Severity, Message "<code>: <text>",
SourceNode the machine object. Clearing is visible through Notification/ActiveAlarm only.

Behaviour (simulated seconds = real seconds x time_scale): programs run cycles of 20-40 s made
of operations (tool change, spindle ramp-up, cut, ramp-down); between cycles 3-5 s part change
(ChannelState Reset, program Ended). Overrides are redrawn per cycle unless written by a
client, about 5 % of parts are bad.
Every ``alarm_every``-th cycle (0 = never) an alarm interrupts a cut: ChannelState Interrupted,
program Aborted, ChannelMode Manual, spindle braked, for 6 s; then 3 s reset (ChannelState
Reset, program Stopped, ChannelMode MDI) and the next cycle. Cycle-level decisions come from
``seed`` only, so the sequence of cycles, alarms and bad parts does not depend on timing.
"""

from __future__ import annotations

import argparse
import math
import random
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import IntEnum
from typing import Any, ClassVar

from asyncua import ua
from asyncua.common.callback import CallbackType

from simulators.opcua.address_space import AddressSpaceBuilder, VarSpec, ns0
from simulators.opcua.machine import (
    MachineSimulator,
    add_machine_arguments,
    add_server_arguments,
    machine_main,
)
from simulators.opcua.server import SimServer

V = ua.VariantType
NAMESPACE_URI = "urn:edge-agent:sim:cnc"
ALARM_EVENT_TYPE = "CncAlarmEventType"
DIAG_PERIOD = 5.0  # simulated s between Diagnostics changes


class ChannelState(IntEnum):
    ACTIVE = 0
    INTERRUPTED = 1
    RESET = 2


class ChannelMode(IntEnum):
    AUTOMATIC = 0
    MDI = 1
    MANUAL = 2


class ProgramState(IntEnum):
    RUNNING = 0
    STOPPED = 1
    ABORTED = 2
    ENDED = 3


class Phase(IntEnum):
    LOAD = 0
    TOOL_CHANGE = 1
    RAMP_UP = 2
    CUT = 3
    RAMP_DOWN = 4
    ALARM = 5
    RESET = 6


@dataclass(frozen=True)
class Operation:
    """One machining step; radius 0 means drilling four holes, else circular milling."""

    tool: int
    speed: float  # rev/min
    feed: float  # mm/min
    cut_time: float  # s at 100 % feed override
    load: float  # spindle load while cutting, %
    depth: float  # mm
    radius: float  # mm
    centre: tuple[float, float] = (250.0, 200.0)


@dataclass(frozen=True)
class Program:
    name: str
    operations: tuple[Operation, ...]


PROGRAMS: tuple[Program, ...] = (
    Program(
        "O1001_FLANGE_A",
        (
            Operation(1, 3200, 900, 7.0, 48, 2.0, 60),
            Operation(7, 2400, 320, 5.5, 36, 12.0, 0),
            Operation(12, 800, 1000, 3.5, 22, 10.0, 0),
        ),
    ),
    Program(
        "O2040_HOUSING_B",
        (
            Operation(3, 4500, 1500, 4.0, 55, 1.5, 80, (200.0, 180.0)),
            Operation(4, 6000, 1200, 3.5, 41, 0.5, 75, (200.0, 180.0)),
            Operation(9, 2000, 250, 3.0, 33, 18.0, 0, (200.0, 180.0)),
            Operation(15, 1200, 600, 3.0, 27, 6.0, 20, (200.0, 180.0)),
        ),
    ),
    Program(
        "O3300_SHAFT_C",
        (
            Operation(2, 2800, 700, 4.0, 62, 3.0, 35, (300.0, 220.0)),
            Operation(7, 2400, 320, 4.0, 38, 15.0, 0, (300.0, 220.0)),
        ),
    ),
)

# (code, text, severity, emergency stop)
ALARMS: tuple[tuple[int, str, int, bool], ...] = (
    (2001, "Spindle overload", 700, False),
    (3005, "Axis Z following error", 800, False),
    (1010, "Emergency stop pressed", 900, True),
    (4021, "Tool breakage detected", 700, False),
)

TOOL_CHANGE_POS = (480.0, 0.0, 280.0)
LOAD_POS = (250.0, 380.0, 300.0)
SAFE_Z = 50.0
RAMP_UP_TIME = 1.2
RAMP_DOWN_TIME = 0.8
ALARM_TIME = 6.0
RESET_TIME = 3.0
SPINDLE_RATE = 4000.0  # rev/min per s
SPINDLE_BRAKE_RATE = 12000.0
RAPID_FEED = 24000.0  # mm/min at 100 % rapid override

IDENTIFICATION = {
    "Identification/Manufacturer": "Musterwerke Werkzeugmaschinen GmbH",
    "Identification/Model": "MX-500 5-Axis Machining Centre",
    "Identification/SerialNumber": "MX5-2019-0471",
    "Identification/SoftwareRevision": "CNC V4.8 SP3",
}

DIAG_TYPES = (
    "SByte", "Byte", "Int16", "UInt16", "Int32", "UInt32", "Int64", "UInt64",
    "Float", "Double", "Boolean", "String", "DateTime", "LocalizedText", "ByteString",
)  # fmt: skip
EPOCH = datetime(2024, 1, 1, tzinfo=UTC)


def diagnostics_values(seq: int, now: datetime) -> dict[str, object]:
    """Values of Monitoring/Diagnostics for change number seq (ranges exercise edge cases)."""
    d = "Monitoring/Diagnostics/"
    return {
        d + "SByte": (seq * 37) % 256 - 128,
        d + "Byte": (seq * 53) % 256,
        d + "Int16": (seq * 7919) % 65536 - 32768,
        d + "UInt16": (seq * 7919) % 65536,
        d + "Int32": -2_000_000_000 + (seq * 104_729) % 4_000_000_000,
        d + "UInt32": 4_000_000_000 + seq % 290_000_000,
        # beyond 2**53: a client converting through float loses the last digits
        d + "Int64": -(2**62) + 9_007_199_254_740_993 + seq,
        d + "UInt64": 18_000_000_000_000_000_001 + seq,
        d + "Float": 1.5 + 0.25 * seq,
        d + "Double": round(math.pi * (seq + 1), 12),
        d + "Boolean": seq % 2 == 1,
        d + "String": f"diag #{seq} – ÄÖÜ µm",
        d + "DateTime": now.replace(microsecond=(now.microsecond // 1000) * 1000),
        d + "LocalizedText": ua.LocalizedText(f"Zustand {seq}", "de-DE"),
        d + "ByteString": bytes([seq % 256, 0x00, 0xAB, 0xCD, 0xFF]),
        d + "DoubleArray": [round(0.1 * seq, 6), round(-0.2 * seq, 6), round(0.3 * seq + 1, 6)],
        d + "ServerStateEnum": seq % 8,
    }


def _variables() -> tuple[VarSpec, ...]:
    specs = [VarSpec(path, V.String, value) for path, value in IDENTIFICATION.items()]
    specs.append(VarSpec("Identification/YearOfConstruction", V.UInt16, 2019))
    c = "Monitoring/Channel1/"
    specs += [
        VarSpec(c + "ChannelState", V.Int32, int(ChannelState.RESET), "ChannelStateEnumeration"),
        VarSpec(c + "ChannelMode", V.Int32, int(ChannelMode.AUTOMATIC), "ChannelModeEnumeration"),
        VarSpec(c + "FeedOverride", V.Double, 100.0, unit="%"),
        VarSpec(c + "RapidOverride", V.Double, 100.0, unit="%"),
        VarSpec(c + "FeedRate", V.Double, 0.0, unit="mm/min"),
    ]
    s = "Monitoring/Spindle/"
    specs += [
        VarSpec(s + "ActSpeed", V.Double, 0.0, unit="rev/min"),
        VarSpec(s + "CmdSpeed", V.Double, 0.0, unit="rev/min"),
        VarSpec(s + "Override", V.Double, 100.0, unit="%"),
        VarSpec(s + "Load", V.Double, 0.0, unit="%"),
    ]
    specs += [
        VarSpec(f"Monitoring/Axes/{a}", V.Double, p, unit="mm") for a, p in zip("XYZ", LOAD_POS)
    ]
    specs += [
        VarSpec("Monitoring/Tool/ToolNumber", V.UInt32, 0),
        VarSpec("Monitoring/EStop", V.Boolean, False),
    ]
    diag = diagnostics_values(0, EPOCH)
    for t in DIAG_TYPES:
        path = "Monitoring/Diagnostics/" + t
        specs.append(VarSpec(path, getattr(V, t), diag[path]))
    specs.append(
        VarSpec(
            "Monitoring/Diagnostics/DoubleArray",
            V.Double,
            diag["Monitoring/Diagnostics/DoubleArray"],
        )
    )
    specs.append(
        VarSpec(
            "Monitoring/Diagnostics/ServerStateEnum",
            V.Int32,
            0,
            ns0(ua.ObjectIds.ServerState),
        )
    )
    p = "Production/"
    specs += [
        VarSpec(p + "ActiveProgram/Name", V.String, PROGRAMS[0].name),
        VarSpec(
            p + "ActiveProgram/State", V.Int32, int(ProgramState.ENDED), "ProgramStateEnumeration"
        ),
        VarSpec(p + "ActiveProgram/NumberInList", V.UInt32, 0),
        VarSpec(p + "PartCountGood", V.UInt32, 0),
        VarSpec(p + "PartCountBad", V.UInt32, 0),
        VarSpec(p + "CycleTime", V.Double, 0.0, unit="s"),
        VarSpec(p + "CycleCount", V.UInt64, 0),
        VarSpec("Notification/ActiveAlarm", V.UInt32, 0),
    ]
    return tuple(specs)


@dataclass
class Segment:
    phase: Phase
    duration: float
    op: int = -1  # operation index, -1 outside operations


@dataclass
class CyclePlan:
    program: int
    segments: list[Segment]
    feed_override: float
    rapid_override: float
    spindle_override: float
    bad: bool
    alarm: tuple[int, float, int] | None  # (segment index, offset into it, ALARMS index)

    @property
    def duration(self) -> float:
        return sum(s.duration for s in self.segments)


def _smooth(p: float) -> float:
    p = min(max(p, 0.0), 1.0)
    return p * p * (3 - 2 * p)


def _lerp(
    a: tuple[float, float, float], b: tuple[float, float, float], p: float
) -> tuple[float, float, float]:
    k = _smooth(p)
    return (a[0] + (b[0] - a[0]) * k, a[1] + (b[1] - a[1]) * k, a[2] + (b[2] - a[2]) * k)


class CncModel:
    """The machine's behaviour, independent of OPC UA: ``advance(dt)`` then read ``outputs()``."""

    def __init__(self, seed: int = 0, alarm_every: int = 10) -> None:
        if alarm_every < 0:
            raise ValueError("alarm_every must be >= 0")
        self.plan_rng = random.Random(seed)
        self.noise_rng = random.Random(seed + 1_000_003)
        self.alarm_every = alarm_every
        self.time = 0.0
        self.program = 0
        self.job_left = self.plan_rng.randint(4, 8)
        self.cycle_no = 0
        self.good = 0
        self.bad = 0
        self.cycle_count = 0
        self.cycle_time = 0.0
        self.alarms_raised = 0
        self.plan: CyclePlan | None = None
        self.phase = Phase.LOAD
        self.seg_index = -1
        self.seg_elapsed = 0.0
        self.seg_duration = 1.0  # first part change is short
        self.seg_start_pos = LOAD_POS
        self.pos = LOAD_POS
        self.tool = 1
        self.speed = 0.0
        self.alarm: tuple[int, str, int, bool] | None = None
        self.alarm_code = 0
        self.channel_state = ChannelState.RESET
        self.channel_mode = ChannelMode.AUTOMATIC
        self.program_state = ProgramState.ENDED
        self.feed_override = 100.0
        self.rapid_override = 100.0
        self.spindle_override = 100.0
        self.events: list[tuple[int, str, int]] = []  # raised alarms (code, text, severity)
        self.held: dict[str, float] = {}  # overrides written by a client: "feed", "spindle"

    def hold_override(self, which: str, percent: float) -> float:
        """A client set the feed or spindle override: it holds from now on (clamped)."""
        value = min(max(float(percent), 0.0), 200.0)
        self.held[which] = value
        setattr(self, f"{which}_override", value)
        return value

    # -- planning -------------------------------------------------------------------------

    def _new_plan(self) -> CyclePlan:
        rng = self.plan_rng
        self.cycle_no += 1
        if self.cycle_no > 1:
            self.job_left -= 1
            if self.job_left <= 0:
                self.program = (self.program + 1) % len(PROGRAMS)
                self.job_left = rng.randint(4, 8)
        feed = rng.choices([100.0, 90.0, 110.0, 120.0, 80.0], [70, 8, 10, 6, 6])[0]
        rapid = rng.choices([100.0, 50.0, 25.0], [80, 15, 5])[0]
        spindle = rng.choices([100.0, 95.0, 105.0], [80, 10, 10])[0]
        segments: list[Segment] = []
        tool = self.tool
        for i, op in enumerate(PROGRAMS[self.program].operations):
            if op.tool != tool or i == 0:
                segments.append(Segment(Phase.TOOL_CHANGE, 2.0 + 100.0 / rapid, i))
                tool = op.tool
            segments.append(Segment(Phase.RAMP_UP, RAMP_UP_TIME, i))
            cut = op.cut_time * rng.uniform(0.97, 1.03) * 100.0 / feed
            segments.append(Segment(Phase.CUT, cut, i))
            segments.append(Segment(Phase.RAMP_DOWN, RAMP_DOWN_TIME, i))
        bad = rng.random() < 0.05
        alarm = None
        if self.alarm_every and self.cycle_no % self.alarm_every == 0:
            cuts = [j for j, s in enumerate(segments) if s.phase == Phase.CUT]
            j = rng.choice(cuts)
            alarm = (j, segments[j].duration * rng.uniform(0.2, 0.8), rng.randrange(len(ALARMS)))
        return CyclePlan(self.program, segments, feed, rapid, spindle, bad, alarm)

    # -- state machine --------------------------------------------------------------------

    def _enter(self, phase: Phase, duration: float) -> None:
        self.phase = phase
        self.seg_elapsed = 0.0
        self.seg_duration = duration
        self.seg_start_pos = self.pos

    def _start_cycle(self) -> None:
        self.plan = self._new_plan()
        self.feed_override = self.held.get("feed", self.plan.feed_override)
        self.rapid_override = self.plan.rapid_override
        self.spindle_override = self.held.get("spindle", self.plan.spindle_override)
        self.channel_state = ChannelState.ACTIVE
        self.channel_mode = ChannelMode.AUTOMATIC
        self.program_state = ProgramState.RUNNING
        self.seg_index = 0
        seg = self.plan.segments[0]
        self._enter(seg.phase, seg.duration)

    def _end_cycle(self, good: bool) -> None:
        self.cycle_count += 1
        if good:
            self.good += 1
        else:
            self.bad += 1

    def _next(self) -> None:
        """The current segment is over: move on."""
        if self.phase == Phase.LOAD or self.phase == Phase.RESET:
            if self.phase == Phase.RESET:
                self.channel_mode = ChannelMode.AUTOMATIC
            self._start_cycle()
            return
        if self.phase == Phase.ALARM:
            self.alarm = None
            self.alarm_code = 0
            self.channel_state = ChannelState.RESET
            self.channel_mode = ChannelMode.MDI
            self.program_state = ProgramState.STOPPED
            self._enter(Phase.RESET, RESET_TIME)
            return
        assert self.plan is not None
        self.seg_index += 1
        if self.seg_index < len(self.plan.segments):
            seg = self.plan.segments[self.seg_index]
            if seg.phase == Phase.TOOL_CHANGE:
                pass  # tool number switches when the change completes (see outputs)
            self._enter(seg.phase, seg.duration)
            return
        self.cycle_time = self.plan.duration
        self._end_cycle(not self.plan.bad)
        self.plan = None
        self.channel_state = ChannelState.RESET
        self.program_state = ProgramState.ENDED
        self._enter(Phase.LOAD, self.plan_rng.uniform(3.0, 5.0))

    def _raise_alarm(self, index: int) -> None:
        code, text, severity, _ = ALARMS[index]
        self.alarm = ALARMS[index]
        self.alarm_code = code
        self.alarms_raised += 1
        self.events.append((code, text, severity))
        self._end_cycle(False)
        self.plan = None
        self.channel_state = ChannelState.INTERRUPTED
        self.channel_mode = ChannelMode.MANUAL
        self.program_state = ProgramState.ABORTED
        self._enter(Phase.ALARM, ALARM_TIME)

    def _op(self) -> Operation | None:
        if self.plan is None or self.seg_index < 0:
            return None
        seg = self.plan.segments[self.seg_index]
        return PROGRAMS[self.plan.program].operations[seg.op]

    def _spindle_target(self) -> float:
        op = self._op()
        if op is None or self.phase not in (Phase.RAMP_UP, Phase.CUT):
            return 0.0
        return op.speed * self.spindle_override / 100.0

    def advance(self, dt: float) -> None:
        """Advance by dt simulated seconds, crossing as many phase boundaries as needed."""
        remaining = dt
        while remaining > 1e-9:
            limit = self.seg_duration
            alarm_here = (
                self.plan is not None
                and self.plan.alarm is not None
                and self.plan.alarm[0] == self.seg_index
                and self.phase == Phase.CUT
            )
            if alarm_here:
                assert self.plan is not None and self.plan.alarm is not None
                limit = min(limit, self.plan.alarm[1])
            take = min(remaining, max(limit - self.seg_elapsed, 0.0))
            self._integrate(take)
            self.seg_elapsed += take
            self.time += take
            remaining -= take
            if self.seg_elapsed >= limit - 1e-9:
                alarm = self.plan.alarm if alarm_here and self.plan is not None else None
                if alarm is not None and self.seg_elapsed >= alarm[1] - 1e-9:
                    self._raise_alarm(alarm[2])
                    continue
                self._next()
        self.pos = self._position()

    def _integrate(self, dt: float) -> None:
        target = self._spindle_target()
        rate = SPINDLE_BRAKE_RATE if self.phase == Phase.ALARM else SPINDLE_RATE
        step = rate * dt
        self.speed += max(-step, min(step, target - self.speed))
        if self.phase == Phase.TOOL_CHANGE and self.seg_elapsed + dt >= self.seg_duration * 0.5:
            op = self._op()
            if op is not None:
                self.tool = op.tool

    # -- outputs --------------------------------------------------------------------------

    def _cut_position(self, op: Operation, p: float) -> tuple[float, float, float]:
        cx, cy = op.centre
        if op.radius > 0:
            a = 2 * math.pi * 2 * p  # two passes round the contour
            return (cx + op.radius * math.cos(a), cy + op.radius * math.sin(a), -op.depth)
        holes = 4
        k = min(int(p * holes), holes - 1)
        q = p * holes - k
        hx = cx + (-30.0 if k in (0, 3) else 30.0)
        hy = cy + (-30.0 if k < 2 else 30.0)
        return (hx, hy, 2.0 - (op.depth + 2.0) * (1 - abs(2 * q - 1)))

    def _position(self) -> tuple[float, float, float]:
        p = self.seg_elapsed / self.seg_duration if self.seg_duration > 0 else 1.0
        op = self._op()
        if self.phase == Phase.LOAD:
            return _lerp(self.seg_start_pos, LOAD_POS, p * 3)
        if self.phase == Phase.TOOL_CHANGE:
            return _lerp(self.seg_start_pos, TOOL_CHANGE_POS, p * 2)
        if self.phase == Phase.RAMP_UP and op is not None:
            return _lerp(self.seg_start_pos, self._cut_position(op, 0.0)[:2] + (2.0,), p)
        if self.phase == Phase.CUT and op is not None:
            return self._cut_position(op, p)
        if self.phase == Phase.RAMP_DOWN:
            x, y, _ = self.seg_start_pos
            return _lerp(self.seg_start_pos, (x, y, SAFE_Z), p)
        if self.phase == Phase.RESET:
            x, y, z = self.seg_start_pos
            return _lerp(self.seg_start_pos, (x, y, max(z, SAFE_Z * 2)), p)
        return self.pos  # ALARM: axes stopped

    def outputs(self) -> dict[str, object]:
        """Current values by variable path (noise drawn from the noise generator)."""
        n = self.noise_rng
        op = self._op()
        cutting = self.phase == Phase.CUT and op is not None
        rapid_move = self.phase in (Phase.TOOL_CHANGE, Phase.RAMP_UP, Phase.LOAD, Phase.RESET)
        p = self.seg_elapsed / self.seg_duration if self.seg_duration > 0 else 1.0
        if cutting and op is not None:
            feed = op.feed * self.feed_override / 100.0 * (1 + n.gauss(0, 0.003))
        elif rapid_move and p < 0.5:
            feed = RAPID_FEED * self.rapid_override / 100.0
        else:
            feed = 0.0
        speed = self.speed
        if speed > 1:
            speed *= 1 + n.gauss(0, 0.001)
        if cutting and op is not None:
            load = op.load * (0.9 + 0.1 * self.feed_override / 100.0) + n.gauss(0, 1.5)
        elif self.speed > 1:
            load = 6.0 + 10.0 * abs(self._spindle_target() - self.speed) / 6000.0 + n.gauss(0, 0.5)
        else:
            load = 0.0
        cmd = op.speed if (op is not None and self.phase in (Phase.RAMP_UP, Phase.CUT)) else 0.0
        x, y, z = self.pos
        jitter = 0.002 if self.phase not in (Phase.ALARM,) else 0.0
        plan_program = self.plan.program if self.plan is not None else self.program
        return {
            "Monitoring/Channel1/ChannelState": int(self.channel_state),
            "Monitoring/Channel1/ChannelMode": int(self.channel_mode),
            "Monitoring/Channel1/FeedOverride": self.feed_override,
            "Monitoring/Channel1/RapidOverride": self.rapid_override,
            "Monitoring/Channel1/FeedRate": round(max(feed, 0.0), 1),
            "Monitoring/Spindle/ActSpeed": round(max(speed, 0.0), 1),
            "Monitoring/Spindle/CmdSpeed": float(cmd),
            "Monitoring/Spindle/Override": self.spindle_override,
            "Monitoring/Spindle/Load": round(min(max(load, 0.0), 150.0), 2),
            "Monitoring/Axes/X": round(x + n.gauss(0, jitter), 4),
            "Monitoring/Axes/Y": round(y + n.gauss(0, jitter), 4),
            "Monitoring/Axes/Z": round(z + n.gauss(0, jitter), 4),
            "Monitoring/Tool/ToolNumber": self.tool,
            "Monitoring/EStop": bool(self.alarm is not None and self.alarm[3]),
            "Production/ActiveProgram/Name": PROGRAMS[plan_program].name,
            "Production/ActiveProgram/State": int(self.program_state),
            "Production/ActiveProgram/NumberInList": plan_program,
            "Production/PartCountGood": self.good,
            "Production/PartCountBad": self.bad,
            "Production/CycleTime": round(self.cycle_time, 3),
            "Production/CycleCount": self.cycle_count,
            "Notification/ActiveAlarm": self.alarm_code,
        }


class CncSimulator(MachineSimulator):
    """CNC machine served over OPC UA; ``async with CncSimulator(port=0, ...) as sim:``.

    Faults: ``sim.server.pause_publishing(bool)``, ``sim.server.delay_responses(s)``,
    ``await sim.server.restart()``. Other keyword arguments go to SimServer.
    """

    kind = "cnc"
    namespace_uri = NAMESPACE_URI
    default_name = "CNC-01"
    VARIABLES = _variables()
    WRITABLE: ClassVar[dict[str, str]] = {
        "Monitoring/Channel1/FeedOverride": "feed", "Monitoring/Spindle/Override": "spindle"}

    def __init__(self, *, alarm_every: int = 10, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.model = CncModel(seed=self.seed, alarm_every=alarm_every)
        self._diag_seq = -1
        self.out.update(self.model.outputs())

    async def _populate(self, srv: SimServer) -> None:
        await super()._populate(srv)
        assert srv.server is not None
        for path in self.WRITABLE:
            await srv.server.get_node(self._nodeids[path]).set_writable()
        srv.server.subscribe_server_callback(CallbackType.PostWrite, self._client_wrote)

    def _client_wrote(self, event: Any, dispatcher: Any) -> None:
        """After a client's Write: an accepted override becomes the machine's."""
        paths = {self._nodeids[p].to_string(): p for p in self.WRITABLE if p in self._nodeids}
        for item, status in zip(event.request_params.NodesToWrite, event.response_params):
            path = paths.get(item.NodeId.to_string())
            if path is None or not status.is_good() or item.AttributeId != ua.AttributeIds.Value:
                continue
            written = item.Value.Value.Value if item.Value.Value is not None else None
            if not isinstance(written, float) or not math.isfinite(written):
                continue  # a null (a bad-status write) leaves the model as it was
            value = self.model.hold_override(self.WRITABLE[path], written)
            self._written[path] = written  # as the server holds it now
            self.out[path] = value  # the next update writes the clamped value if it differs

    async def build_types(self, builder: AddressSpaceBuilder) -> list[ua.NodeId]:
        await builder.enum_type("ChannelStateEnumeration", ["Active", "Interrupted", "Reset"])
        await builder.enum_type("ChannelModeEnumeration", ["Automatic", "MDI", "Manual"])
        await builder.enum_type(
            "ProgramStateEnumeration", ["Running", "Stopped", "Aborted", "Ended"]
        )
        etype = await builder.event_type(
            ALARM_EVENT_TYPE, [("AlarmCode", V.UInt32, 0), ("AlarmText", V.String, "")]
        )
        return [etype.nodeid]

    def step(self, dt: float) -> None:
        self.model.advance(dt)
        self.out.update(self.model.outputs())
        seq = int(self.model.time // DIAG_PERIOD)
        if seq != self._diag_seq:
            self._diag_seq = seq
            self.out.update(diagnostics_values(seq, datetime.now(UTC)))
        for code, text, severity in self.model.events:
            self.queue_event(
                ALARM_EVENT_TYPE,
                {"AlarmCode": code, "AlarmText": text},
                f"{code}: {text}",
                severity,
            )
        self.model.events.clear()


def build_parser() -> argparse.ArgumentParser:
    """Command-line options of this simulator."""
    p = argparse.ArgumentParser(prog="python -m simulators.opcua.cnc", description="Simulated CNC (OPC UA).")
    add_server_arguments(p, default_port=4840)
    add_machine_arguments(p, CncSimulator, alarm_every=10)
    return p


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the process exit code."""
    return machine_main(CncSimulator, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
