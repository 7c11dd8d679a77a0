"""Simulated injection-moulding machine speaking OPC UA (modelled loosely on EUROMAP 77 / 83).

Run: ``python -m simulators.opcua.injection --port 4841 --name IMM-01 --seed 1 --time-scale 1.0
--alarm-every 0 [--update-ms 100]`` plus the shared options of simulators.opcua.cnc (security,
pki dir, trusted clients, users, extra namespaces, delay). When listening it prints
``injection listening on opc.tcp://HOST:PORT``. SIGUSR1 toggles paused publishing, SIGUSR2
restarts the server, SIGTERM/SIGINT exit 0.

Address space. Namespace ``urn:edge-agent:sim:injection``; every node has the string NodeId
``ns=<ns>;s=<NAME>.<path with dots>`` (e.g. ``IMM-01.Production.ShotCounter``) and browse names
in that namespace, below Objects/Machines/<NAME> (folder ``s=Machines``, machine ``s=<NAME>``).

=====================================  ==========  ===========================================
path below Objects/Machines/<NAME>     type        meaning
=====================================  ==========  ===========================================
MachineInformation/Manufacturer        String      constant
MachineInformation/Model               String      constant
MachineInformation/SerialNumber        String      constant
MachineStatus/MachineMode              Int32 enum  0 OTHER, 1 AUTOMATIC, 2 SEMI_AUTOMATIC,
                                                   3 MANUAL, 4 SETUP, 5 SLEEP
                                                   (DataType s=MachineModeEnumeration)
MachineStatus/ProductionStatus         Int32 enum  0 OTHER, 1 PRODUCING, 2 STOPPED, 3 SETUP,
                                                   4 ALARM (s=ProductionStatusEnumeration)
MachineStatus/ActiveAlarm              Boolean     an alarm is active
Mould/MouldId                          String      constant
Mould/Temperatures/Zone1..Zone4        Double      mould temperature, Cel
InjectionUnit/BarrelZones/Zone1..Zone5 Double      barrel temperature, Cel (Zone1 = nozzle)
InjectionUnit/ScrewPosition            Double      mm (0 = fully forward, ~62 dosed)
InjectionUnit/InjectionPressure        Double      current hydraulic/melt pressure, bar
Production/ShotCounter                 UInt32      shots since start (+1 at injection start)
Production/GoodParts                   UInt32      good parts
Production/BadParts                    UInt32      bad parts
Production/LastCycleTime               Double      last cycle, simulated s
Production/JobName                     String      constant
=====================================  ==========  ===========================================

Events: at the end of every cycle the machine object (EventNotifier set, Server HasNotifier it)
and the Server object emit ``CycleParametersEventType`` (``s=CycleParametersEventType``,
subtype of BaseEventType) with CycleCounter (UInt32, = ShotCounter), CycleTime, Cushion (mm),
DosingTime, InjectionTime (s), InjectionPressurePeak, HoldPressurePeak (bar),
MouldTemperatureAvg (Cel), PartGood (Boolean); Message "cycle N", Severity 100, SourceNode =
the machine object. Variables are written before the event is sent.

Behaviour (simulated s = real s x time_scale): mould close 1.6 s, injection ~1.3 s (pressure
rising to ~1000 bar), hold 3 s (~520 bar), cooling 9-12 s with dosing ~4.4 s (screw back to
~62 mm at ~60 bar back pressure), mould open 1.5 s, eject 1 s, sometimes a handling delay:
15-25 s per cycle. Temperatures drift slowly (deterministic in simulated time) with noise;
peak pressure follows melt temperature. A part is bad if its cushion < 4.2 mm or peak pressure
> 1060 bar, or at random (2 %). Every ``alarm_every``-th cycle (0 = never) is followed by an
8 s alarm (ActiveAlarm, ProductionStatus ALARM, MachineMode MANUAL). Cycle parameters depend
only on ``seed``.
"""

from __future__ import annotations

import argparse
import math
import random
import sys
from dataclasses import dataclass
from enum import IntEnum

from asyncua import ua

from simulators.opcua.address_space import AddressSpaceBuilder, VarSpec
from simulators.opcua.machine import (
    MachineSimulator,
    add_machine_arguments,
    add_server_arguments,
    machine_main,
)

V = ua.VariantType
NAMESPACE_URI = "urn:edge-agent:sim:injection"
CYCLE_EVENT_TYPE = "CycleParametersEventType"
BARREL_SETPOINTS = (230.0, 235.0, 228.0, 220.0, 210.0)
MOULD_SETPOINTS = (40.0, 40.0, 45.0, 45.0)
DOSED_POSITION = 62.0
BACK_PRESSURE = 60.0
ALARM_TIME = 8.0


class MachineMode(IntEnum):
    OTHER = 0
    AUTOMATIC = 1
    SEMI_AUTOMATIC = 2
    MANUAL = 3
    SETUP = 4
    SLEEP = 5


class ProductionStatus(IntEnum):
    OTHER = 0
    PRODUCING = 1
    STOPPED = 2
    SETUP = 3
    ALARM = 4


class Phase(IntEnum):
    MOULD_CLOSE = 0
    INJECTION = 1
    HOLD = 2
    COOLING = 3
    MOULD_OPEN = 4
    EJECT = 5
    ALARM = 6


EVENT_PROPERTIES: tuple[tuple[str, ua.VariantType, object], ...] = (
    ("CycleCounter", V.UInt32, 0),
    ("CycleTime", V.Double, 0.0),
    ("Cushion", V.Double, 0.0),
    ("DosingTime", V.Double, 0.0),
    ("InjectionTime", V.Double, 0.0),
    ("InjectionPressurePeak", V.Double, 0.0),
    ("HoldPressurePeak", V.Double, 0.0),
    ("MouldTemperatureAvg", V.Double, 0.0),
    ("PartGood", V.Boolean, True),
)


def _variables() -> tuple[VarSpec, ...]:
    specs = [
        VarSpec("MachineInformation/Manufacturer", V.String, "Beispiel Kunststofftechnik AG"),
        VarSpec("MachineInformation/Model", V.String, "IMX 1800-610 hydraulic"),
        VarSpec("MachineInformation/SerialNumber", V.String, "IMX-18-2021-00317"),
        VarSpec(
            "MachineStatus/MachineMode",
            V.Int32,
            int(MachineMode.AUTOMATIC),
            "MachineModeEnumeration",
        ),
        VarSpec(
            "MachineStatus/ProductionStatus",
            V.Int32,
            int(ProductionStatus.PRODUCING),
            "ProductionStatusEnumeration",
        ),
        VarSpec("MachineStatus/ActiveAlarm", V.Boolean, False),
        VarSpec("Mould/MouldId", V.String, "MLD-0815-4C"),
    ]
    specs += [
        VarSpec(f"Mould/Temperatures/Zone{i + 1}", V.Double, t, unit="Cel")
        for i, t in enumerate(MOULD_SETPOINTS)
    ]
    specs += [
        VarSpec(f"InjectionUnit/BarrelZones/Zone{i + 1}", V.Double, t, unit="Cel")
        for i, t in enumerate(BARREL_SETPOINTS)
    ]
    specs += [
        VarSpec("InjectionUnit/ScrewPosition", V.Double, DOSED_POSITION, unit="mm"),
        VarSpec("InjectionUnit/InjectionPressure", V.Double, 0.0, unit="bar"),
        VarSpec("Production/ShotCounter", V.UInt32, 0),
        VarSpec("Production/GoodParts", V.UInt32, 0),
        VarSpec("Production/BadParts", V.UInt32, 0),
        VarSpec("Production/LastCycleTime", V.Double, 0.0, unit="s"),
        VarSpec("Production/JobName", V.String, "JOB-4711 Cap 28mm PP"),
    ]
    return tuple(specs)


@dataclass
class Shot:
    """Parameters of one cycle, drawn at its start."""

    number: int
    phases: list[tuple[Phase, float]]
    injection_time: float
    dosing_time: float
    cushion: float
    peak: float
    hold_peak: float
    good: bool
    alarm_after: bool

    @property
    def duration(self) -> float:
        return sum(d for _, d in self.phases)


class InjectionModel:
    """The machine's behaviour, independent of OPC UA: ``advance(dt)`` then ``outputs()``."""

    def __init__(self, seed: int = 0, alarm_every: int = 0) -> None:
        if alarm_every < 0:
            raise ValueError("alarm_every must be >= 0")
        self.plan_rng = random.Random(seed)
        self.noise_rng = random.Random(seed + 7_777_777)
        drift_rng = random.Random(seed + 99)
        self._drift_phase = [drift_rng.uniform(0, 2 * math.pi) for _ in range(9)]
        self.alarm_every = alarm_every
        self.time = 0.0
        self.shots = 0
        self.good = 0
        self.bad = 0
        self.last_cycle_time = 0.0
        self.shot: Shot | None = None
        self.phase_index = 0
        self.phase = Phase.MOULD_CLOSE
        self.elapsed = 0.0
        self.duration = 0.0
        self.cycle_started = 0.0
        self.mould_heat = 0.0  # transient mould temperature rise from the last shot, Cel
        self.alarm_active = False
        self.completed: list[dict[str, object]] = []  # cycle event fields, oldest first
        self._start_shot()

    def drift(self, k: int, period: float, amplitude: float) -> float:
        """Slow deterministic drift (function of simulated time only)."""
        return amplitude * math.sin(2 * math.pi * self.time / period + self._drift_phase[k])

    def barrel_temperature(self, i: int) -> float:
        return BARREL_SETPOINTS[i] + self.drift(i, 900.0 + 70 * i, 1.6)

    def mould_temperature(self, i: int) -> float:
        return (
            MOULD_SETPOINTS[i]
            + self.drift(5 + i % 4, 1300.0 + 90 * i, 1.2)
            + self.mould_heat * (1 - 0.15 * i)
        )

    def _start_shot(self) -> None:
        rng = self.plan_rng
        number = self.shots + 1
        melt = sum(self.barrel_temperature(i) for i in range(5)) / 5
        injection = rng.uniform(1.15, 1.45)
        dosing = rng.uniform(4.1, 4.8)
        cooling = rng.uniform(9.0, 12.0)
        handling = rng.uniform(1.0, 3.5) if rng.random() < 0.1 else 0.0
        cushion = rng.gauss(5.0, 0.35)
        peak = 1000.0 - 9.0 * (melt - 224.6) + rng.gauss(0, 14)
        hold_peak = 0.52 * peak + rng.gauss(0, 5)
        good = cushion >= 4.2 and peak <= 1060.0 and rng.random() >= 0.02
        alarm_after = bool(self.alarm_every) and number % self.alarm_every == 0
        phases = [
            (Phase.MOULD_CLOSE, 1.6),
            (Phase.INJECTION, injection),
            (Phase.HOLD, 3.0),
            (Phase.COOLING, cooling),
            (Phase.MOULD_OPEN, 1.5),
            (Phase.EJECT, 1.0 + handling),
        ]
        self.shot = Shot(
            number, phases, injection, dosing, cushion, peak, hold_peak, good, alarm_after
        )
        self.cycle_started = self.time
        self.phase_index = 0
        self._enter(*phases[0])

    def _enter(self, phase: Phase, duration: float) -> None:
        self.phase = phase
        self.elapsed = 0.0
        self.duration = duration
        if phase == Phase.INJECTION:
            self.shots += 1

    def _finish_shot(self) -> None:
        shot = self.shot
        assert shot is not None
        self.last_cycle_time = shot.duration
        if shot.good:
            self.good += 1
        else:
            self.bad += 1
        mould_avg = sum(self.mould_temperature(i) for i in range(4)) / 4
        self.completed.append(
            {
                "CycleCounter": shot.number,
                "CycleTime": round(shot.duration, 3),
                "Cushion": round(shot.cushion, 3),
                "DosingTime": round(shot.dosing_time, 3),
                "InjectionTime": round(shot.injection_time, 3),
                "InjectionPressurePeak": round(shot.peak, 1),
                "HoldPressurePeak": round(shot.hold_peak, 1),
                "MouldTemperatureAvg": round(mould_avg, 2),
                "PartGood": shot.good,
            }
        )
        if shot.alarm_after:
            self.alarm_active = True
            self.phase = Phase.ALARM
            self.elapsed = 0.0
            self.duration = ALARM_TIME
        else:
            self._start_shot()

    def _next(self) -> None:
        if self.phase == Phase.ALARM:
            self.alarm_active = False
            self._start_shot()
            return
        assert self.shot is not None
        self.phase_index += 1
        if self.phase_index < len(self.shot.phases):
            self._enter(*self.shot.phases[self.phase_index])
        else:
            self._finish_shot()

    def advance(self, dt: float) -> None:
        remaining = dt
        while remaining > 1e-9:
            take = min(remaining, max(self.duration - self.elapsed, 0.0))
            self.elapsed += take
            self.time += take
            remaining -= take
            if self.phase == Phase.INJECTION:
                self.mould_heat = min(self.mould_heat + 1.2 * take, 1.8)
            else:
                self.mould_heat *= math.exp(-take / 6.0)
            if self.elapsed >= self.duration - 1e-9:
                self._next()

    def _screw_and_pressure(self) -> tuple[float, float]:
        shot = self.shot
        p = self.elapsed / self.duration if self.duration > 0 else 1.0
        if shot is None or self.phase in (
            Phase.ALARM,
            Phase.MOULD_OPEN,
            Phase.EJECT,
            Phase.MOULD_CLOSE,
        ):
            return DOSED_POSITION, 0.0
        if self.phase == Phase.INJECTION:
            travel = DOSED_POSITION - (shot.cushion + 0.3)
            pos = DOSED_POSITION - travel * (1 - (1 - p) ** 2)
            pressure = shot.peak * (0.15 + 0.85 * p**3)
            return pos, pressure
        if self.phase == Phase.HOLD:
            return shot.cushion + 0.3 * (1 - p), shot.hold_peak * (1 - 0.25 * p)
        # cooling: dosing first, then decompressed and idle
        t = self.elapsed
        if t < shot.dosing_time:
            q = t / shot.dosing_time
            return shot.cushion + (DOSED_POSITION - shot.cushion) * q, BACK_PRESSURE
        return DOSED_POSITION, 0.0

    def outputs(self) -> dict[str, object]:
        n = self.noise_rng
        screw, pressure = self._screw_and_pressure()
        if pressure > 0:
            pressure = max(pressure * (1 + n.gauss(0, 0.004)), 0.0)
        out: dict[str, object] = {
            "MachineStatus/MachineMode": int(
                MachineMode.MANUAL if self.alarm_active else MachineMode.AUTOMATIC
            ),
            "MachineStatus/ProductionStatus": int(
                ProductionStatus.ALARM if self.alarm_active else ProductionStatus.PRODUCING
            ),
            "MachineStatus/ActiveAlarm": self.alarm_active,
            "InjectionUnit/ScrewPosition": round(screw + n.gauss(0, 0.01), 3),
            "InjectionUnit/InjectionPressure": round(pressure, 1),
            "Production/ShotCounter": self.shots,
            "Production/GoodParts": self.good,
            "Production/BadParts": self.bad,
            "Production/LastCycleTime": round(self.last_cycle_time, 3),
        }
        for i in range(4):
            out[f"Mould/Temperatures/Zone{i + 1}"] = round(
                self.mould_temperature(i) + n.gauss(0, 0.05), 2
            )
        for i in range(5):
            out[f"InjectionUnit/BarrelZones/Zone{i + 1}"] = round(
                self.barrel_temperature(i) + n.gauss(0, 0.1), 2
            )
        return out


class InjectionSimulator(MachineSimulator):
    """Injection-moulding machine over OPC UA; ``async with InjectionSimulator(port=0) as sim:``.

    Faults: ``sim.server.pause_publishing(bool)``, ``sim.server.delay_responses(s)``,
    ``await sim.server.restart()``. Other keyword arguments go to SimServer.
    """

    kind = "injection"
    namespace_uri = NAMESPACE_URI
    default_name = "IMM-01"
    VARIABLES = _variables()

    def __init__(self, *, alarm_every: int = 0, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.model = InjectionModel(seed=self.seed, alarm_every=alarm_every)
        self.out.update(self.model.outputs())

    async def build_types(self, builder: AddressSpaceBuilder) -> list[ua.NodeId]:
        await builder.enum_type("MachineModeEnumeration", [m.name for m in MachineMode])
        await builder.enum_type("ProductionStatusEnumeration", [s.name for s in ProductionStatus])
        etype = await builder.event_type(CYCLE_EVENT_TYPE, EVENT_PROPERTIES)
        return [etype.nodeid]

    def step(self, dt: float) -> None:
        self.model.advance(dt)
        self.out.update(self.model.outputs())
        for fields in self.model.completed:
            self.queue_event(CYCLE_EVENT_TYPE, dict(fields), f"cycle {fields['CycleCounter']}", 100)
        self.model.completed.clear()


def build_parser() -> argparse.ArgumentParser:
    """Command-line options of this simulator."""
    p = argparse.ArgumentParser(prog="python -m simulators.opcua.injection", description="Simulated injection-moulding machine (OPC UA).")
    add_server_arguments(p, default_port=4841)
    add_machine_arguments(p, InjectionSimulator, alarm_every=0)
    return p


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the process exit code."""
    return machine_main(InjectionSimulator, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
