"""Physics of a hot-forging line: induction heater -> hot-billet scale -> screw forging press.

Event-driven but deterministic: billet k's random draws all come from
``random.Random(seed * 1_000_003 + k)``, so the seed fixes the whole production, and
``ForgingLine.snapshot(t)`` can be sampled lazily at any simulated time t (seconds since
start). Plans are generated forward and kept in a short window; asking for a time before the
window regenerates from the start (correct, only slower).

Timeline of billet k (simulated seconds):

* the press becomes free (end of billet k-1) -> idle for 0.8..2.0 s (``IDLE``);
* then it waits for a hot billet (``HEATING_WAIT``) until the heater pushes one out
  (``push_k = max(press ready, heater done)``) plus 0.4 s transfer and 1.5 s on the scale;
* the heater starts billet k when billet k-1 has left it (0.4 s after its push) and needs
  4..7 s (``HEATING``), then holds it at temperature (``READY``) until the push (``PUSHING``,
  0.4 s). The exit pyrometer latches each billet's temperature at its push, ~N(1180, 10) Cel;
* the scale gets the billet at push + 0.4 s, reads unstable for 0.6 s (damped oscillation),
  then stable: last weight (~N(2.450, 0.010) kg, 3 decimals) and count are updated; the pan is
  empty again at push + 1.9 s;
* ``FORGING``: 1, 2 or 3 blows (probabilities 1/4, 1/2, 1/4), one per 1.2 s: the ram descends
  in 0.35 s to the billet (impact: stroke count +1, force/energy/billet temperature of the
  blow latched), returns in 0.5 s, rests 0.35 s. The billet loses 30 Cel in transfer and
  15 Cel per blow; it flattens to 62..72 % of its height per blow (110 mm at first);
* ``EJECTING`` 1.0 s; the part counts as forged at its end;
* with probability 2.5 % an ``ALARM`` of 8..20 s follows (codes 1107 die lubrication fault,
  1201 hydraulic pressure low - pressure reads ~150 bar meanwhile -, 1402 ejector jam). A
  billet arriving below 1155 Cel is not forged: alarm 1305 billet too cold at arrival, no blows,
  no part.

Blow force ~ 11000 kN x (1 + 0.004/Cel below 1180) x (1.00, 1.25, 1.50 for blow 1, 2, 3)
x (1 +- 3 %); energy 95 kJ first blow, 75 kJ later ones, +- 4 %. Die temperature starts at
195 Cel, relaxes towards 180 Cel (die heating) with tau 240 s and gains 1.0 Cel per blow.
Hydraulic pressure 210 bar, each blow draws it down by 35 bar recovering with tau 0.5 s.
Before the first blow (weighing, push) the "last" values come from draws with k = -1 (-2), as
a real controller shows the last values it retained.
"""

from __future__ import annotations

import enum
import math
import random
from dataclasses import dataclass

from simulators.common import noise

IDLE_GAP_S = (0.8, 2.0)
HEAT_DURATION_S = (4.0, 7.0)
PUSH_S = 0.4
SCALE_DWELL_S = 1.5
SCALE_SETTLE_S = 0.6
BLOW_PERIOD_S = 1.2
RAM_DESCENT_S = 0.35
RAM_RETURN_S = 0.5
EJECT_S = 1.0
ALARM_DURATION_S = (8.0, 20.0)
ALARM_PROBABILITY = 0.025
BLOW_COUNTS = (1, 2, 3)
BLOW_COUNT_WEIGHTS = (1, 2, 1)

EXIT_TEMP_MEAN_C = 1180.0
EXIT_TEMP_SD_C = 10.0
COLD_LIMIT_C = 1155.0
TRANSFER_COOLING_C = 30.0
COOLING_PER_BLOW_C = 15.0
AMBIENT_C = 25.0

RAM_CLOSED_MM = 420.0  # ram position at which the dies would touch
BILLET_HEIGHT_MM = 110.0
FLATTEN_RANGE = (0.62, 0.72)
NOMINAL_FORCE_KN = 11000.0
FORCE_PER_COLD_C = 0.004
BLOW_FORCE_FACTOR = (1.00, 1.25, 1.50)
FORCE_NOISE = 0.03
FIRST_BLOW_ENERGY_KJ = 95.0
LATER_BLOW_ENERGY_KJ = 75.0
ENERGY_NOISE = 0.04

DIE_START_C = 195.0
DIE_HEATING_C = 180.0
DIE_TAU_S = 240.0
DIE_HEAT_PER_BLOW_C = 1.0
HYDRAULIC_BAR = 210.0
HYDRAULIC_LOW_BAR = 150.0
HYDRAULIC_DRAW_BAR = 35.0
HYDRAULIC_TAU_S = 0.5

HEATING_POWER_KW = 340.0
HOLDING_POWER_KW = 60.0
HEATING_FREQUENCY_HZ = 2760.0
HOT_FREQUENCY_HZ = 2930.0

WEIGHT_NOMINAL_KG = 2.450
WEIGHT_SD_KG = 0.010
WEIGHT_TOLERANCE_KG = 0.030
EMPTY_BELOW_KG = 0.005

STROKES_AT_START = 1_204_311
BPM_WINDOW_S = 60.0

ALARM_DIE_LUBRICATION = 1107
ALARM_HYDRAULIC_LOW = 1201
ALARM_BILLET_COLD = 1305
ALARM_EJECTOR_JAM = 1402
RANDOM_ALARMS = (ALARM_DIE_LUBRICATION, ALARM_HYDRAULIC_LOW, ALARM_EJECTOR_JAM)

# Keep at least this much history for the blows-per-minute window and the hydraulics.
HISTORY_S = BPM_WINDOW_S + 10.0
MAX_PLANS = 64


class CycleState(enum.IntEnum):
    """Press cycle state (unit 1, hr:0)."""

    IDLE = 0
    HEATING_WAIT = 1
    FORGING = 2
    EJECTING = 3
    ALARM = 4


class HeaterState(enum.IntEnum):
    """Induction heater state (unit 2, hr:100); OFF is never simulated."""

    OFF = 0
    HEATING = 1
    READY = 2
    PUSHING = 3


@dataclass(frozen=True)
class Blow:
    """One blow of the press."""

    start: float  # ram leaves the top
    impact: float
    force_kn: float
    energy_kj: float
    billet_temp_c: float
    depth_mm: float  # ram position at impact


@dataclass(frozen=True)
class BilletPlan:
    """Everything that happens to billet k, in absolute simulated seconds."""

    index: int
    press_free: float
    press_ready: float
    heat_start: float
    heat_done: float
    push: float
    arrive: float
    blows: tuple[Blow, ...]
    eject_start: float
    eject_end: float
    alarm_code: int  # 0 = none
    alarm_start: float
    end: float  # the press is free for billet k+1
    exit_temp_c: float
    weight_kg: float
    strokes_before: int
    parts_before: int
    die_temp_start_c: float
    last_blow_before: Blow  # latest blow of an earlier billet (or the retained one)

    @property
    def on_scale(self) -> float:
        """Billet lands on the scale."""
        return self.push + PUSH_S

    @property
    def weighed(self) -> float:
        """Scale reading becomes stable."""
        return self.on_scale + SCALE_SETTLE_S

    @property
    def off_scale(self) -> float:
        """Pan empty again."""
        return self.on_scale + SCALE_DWELL_S


@dataclass(frozen=True)
class PressReading:
    """Unit 1 in engineering units."""

    state: CycleState
    alarm_code: int
    ram_position_mm: float
    stroke_count: int
    last_force_kn: float
    last_energy_kj: float
    hydraulic_bar: float
    die_temp_c: float
    last_billet_temp_c: float
    blows_per_minute: float
    blows_on_billet: int
    parts_forged: int


@dataclass(frozen=True)
class HeaterReading:
    """Unit 2 in engineering units."""

    state: HeaterState
    exit_temp_c: float
    power_kw: float
    frequency_hz: float
    billets_heated: int


@dataclass(frozen=True)
class ScaleReading:
    """Unit 3 in engineering units."""

    last_weight_kg: float
    stable: bool
    empty: bool
    out_of_tolerance: bool
    count: int
    live_weight_kg: float


@dataclass(frozen=True)
class LineSnapshot:
    """The whole line at simulated time t."""

    t: float
    press: PressReading
    heater: HeaterReading
    scale: ScaleReading


def _ram_position(blow: Blow, t: float) -> float:
    """Ram position during one blow (0 at the top), cosine motion down and back up."""
    phase = t - blow.start
    if 0.0 <= phase < RAM_DESCENT_S:
        return blow.depth_mm * (1 - math.cos(math.pi * phase / RAM_DESCENT_S)) / 2
    phase -= RAM_DESCENT_S
    if 0.0 <= phase < RAM_RETURN_S:
        return blow.depth_mm * (1 + math.cos(math.pi * phase / RAM_RETURN_S)) / 2
    return 0.0


class ForgingLine:
    """The three machines of the line, sampled by snapshot(t)."""

    # independent noise channels
    (_N_HYD, _N_DIE, _N_RAM, _N_POWER, _N_FREQ, _N_LIVE) = range(6)

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed
        self._plans: list[BilletPlan] = []
        self._initial_blow = self._draw_blows(
            random.Random(self._rng_key(-1)), EXIT_TEMP_MEAN_C - TRANSFER_COOLING_C, 1, -10.0
        )[0]
        retained = random.Random(self._rng_key(-2))
        self._initial_weight = round(retained.gauss(WEIGHT_NOMINAL_KG, WEIGHT_SD_KG), 3)
        self._initial_exit_temp = retained.gauss(EXIT_TEMP_MEAN_C, EXIT_TEMP_SD_C)

    def _rng_key(self, k: int) -> int:
        return self.seed * 1_000_003 + k

    # -- plan generation

    @staticmethod
    def _draw_blows(rng: random.Random, temp_at_arrival: float, count: int,
                    first_start: float = 0.0) -> list[Blow]:
        blows = []
        height = BILLET_HEIGHT_MM
        # Always draw for three blows so the RNG stream does not depend on the count.
        draws = [(rng.gauss(0, FORCE_NOISE / 2), rng.uniform(-ENERGY_NOISE, ENERGY_NOISE),
                  rng.gauss(0, 2.0), rng.uniform(*FLATTEN_RANGE)) for _ in range(3)]
        for j in range(count):
            f_noise, e_noise, t_noise, flatten = draws[j]
            temp = temp_at_arrival - COOLING_PER_BLOW_C * j + t_noise
            height *= flatten
            force = (NOMINAL_FORCE_KN * (1 + FORCE_PER_COLD_C * (EXIT_TEMP_MEAN_C - TRANSFER_COOLING_C - temp))
                     * BLOW_FORCE_FACTOR[j] * (1 + f_noise))
            energy = (FIRST_BLOW_ENERGY_KJ if j == 0 else LATER_BLOW_ENERGY_KJ) * (1 + e_noise)
            start = first_start + j * BLOW_PERIOD_S
            blows.append(Blow(start=start, impact=start + RAM_DESCENT_S, force_kn=force,
                              energy_kj=energy, billet_temp_c=temp,
                              depth_mm=RAM_CLOSED_MM - height))
        return blows

    def _make_plan(self, k: int, prev: BilletPlan | None) -> BilletPlan:
        rng = random.Random(self._rng_key(k))
        gap = rng.uniform(*IDLE_GAP_S)
        heat_duration = rng.uniform(*HEAT_DURATION_S)
        exit_temp = rng.gauss(EXIT_TEMP_MEAN_C, EXIT_TEMP_SD_C)
        weight = round(rng.gauss(WEIGHT_NOMINAL_KG, WEIGHT_SD_KG), 3)
        blow_count = rng.choices(BLOW_COUNTS, weights=BLOW_COUNT_WEIGHTS)[0]
        random_alarm = rng.random() < ALARM_PROBABILITY
        alarm_choice = rng.choice(RANDOM_ALARMS)
        alarm_duration = rng.uniform(*ALARM_DURATION_S)
        if prev is None:
            press_free, heat_start = 0.0, 0.0
            strokes_before, parts_before, die_start = STROKES_AT_START, 0, DIE_START_C
            last_blow = self._initial_blow
        else:
            press_free = prev.end
            heat_start = prev.push + PUSH_S
            strokes_before = prev.strokes_before + len(prev.blows)
            parts_before = prev.parts_before + (1 if prev.blows else 0)
            die_start = self._die_temp(prev, prev.end)
            last_blow = prev.blows[-1] if prev.blows else prev.last_blow_before
        press_ready = press_free + gap
        heat_done = heat_start + heat_duration
        push = max(press_ready, heat_done)
        arrive = push + PUSH_S + SCALE_DWELL_S
        blows = self._draw_blows(rng, exit_temp - TRANSFER_COOLING_C, blow_count, arrive)
        if exit_temp < COLD_LIMIT_C:
            blows = []
            alarm_code, alarm_start = ALARM_BILLET_COLD, arrive
            eject_start = eject_end = arrive
            end = arrive + alarm_duration
        else:
            eject_start = arrive + blow_count * BLOW_PERIOD_S
            eject_end = eject_start + EJECT_S
            alarm_start = eject_end
            alarm_code = alarm_choice if random_alarm else 0
            end = eject_end + (alarm_duration if random_alarm else 0.0)
        return BilletPlan(
            index=k, press_free=press_free, press_ready=press_ready, heat_start=heat_start,
            heat_done=heat_done, push=push, arrive=arrive, blows=tuple(blows),
            eject_start=eject_start, eject_end=eject_end, alarm_code=alarm_code,
            alarm_start=alarm_start, end=end, exit_temp_c=exit_temp, weight_kg=weight,
            strokes_before=strokes_before, parts_before=parts_before, die_temp_start_c=die_start,
            last_blow_before=last_blow,
        )

    def _ensure(self, t: float) -> None:
        """Plans cover t with one more plan after the one holding t (for the heater)."""
        if self._plans and t < self._plans[0].press_free:
            self._plans.clear()  # before the window: regenerate deterministically
        if not self._plans:
            self._plans.append(self._make_plan(0, None))
        # Until the last plan starts after t: plans[-2] holds t for the press and the heater
        # may already be working on plans[-1]'s billet.
        while self._plans[-1].press_free <= t:
            last = self._plans[-1]
            self._plans.append(self._make_plan(last.index + 1, last))
        if len(self._plans) > MAX_PLANS:
            keep = [p for p in self._plans if p.end >= t - HISTORY_S]
            drop = len(self._plans) - max(len(keep), 3)
            if drop > 0:
                del self._plans[:drop]

    def plan(self, k: int) -> BilletPlan:
        """Billet k's plan (generated from the start if needed; for tests and inspection)."""
        plan = self._make_plan(0, None)
        for i in range(1, k + 1):
            plan = self._make_plan(i, plan)
        return plan

    # -- sampling

    def _die_temp(self, plan: BilletPlan, t: float) -> float:
        decay = math.exp(-(t - plan.press_free) / DIE_TAU_S)
        temp = DIE_HEATING_C + (plan.die_temp_start_c - DIE_HEATING_C) * decay
        for blow in plan.blows:
            if blow.impact <= t:
                temp += DIE_HEAT_PER_BLOW_C * math.exp(-(t - blow.impact) / DIE_TAU_S)
        return temp

    def snapshot(self, t: float) -> LineSnapshot:
        """State of the line at simulated time t >= 0."""
        t = max(0.0, t)
        self._ensure(t)
        plans = self._plans
        pi = next(i for i in range(len(plans) - 1, -1, -1) if plans[i].press_free <= t)
        return LineSnapshot(t=t, press=self._press(t, pi), heater=self._heater(t),
                            scale=self._scale(t))

    def _jitter(self, channel: int, t: float) -> float:
        return noise(self.seed, channel, int(t * 10))

    def _press(self, t: float, pi: int) -> PressReading:
        plans = self._plans
        plan = plans[pi]
        past_blows = [b for p in plans[: pi + 1] for b in p.blows if b.impact <= t]
        on_billet = [b for b in plan.blows if b.impact <= t]
        last = on_billet[-1] if on_billet else plan.last_blow_before

        alarm = 0
        ram = 0.0
        if t < plan.press_ready:
            state = CycleState.IDLE
        elif t < plan.arrive:
            state = CycleState.HEATING_WAIT
        elif t < plan.eject_start:
            state = CycleState.FORGING
            for blow in plan.blows:
                ram = max(ram, _ram_position(blow, t))
        elif t < plan.eject_end:
            state = CycleState.EJECTING
        else:
            state = CycleState.ALARM
            alarm = plan.alarm_code
        if state == CycleState.ALARM and alarm == 0:  # cannot happen: end == eject_end then
            state = CycleState.IDLE

        if alarm == ALARM_HYDRAULIC_LOW:
            hydraulic = HYDRAULIC_LOW_BAR
        else:
            hydraulic = HYDRAULIC_BAR - sum(
                HYDRAULIC_DRAW_BAR * math.exp(-(t - b.impact) / HYDRAULIC_TAU_S)
                for b in past_blows[-3:]
            )
        hydraulic += 0.5 * self._jitter(self._N_HYD, t)
        bpm = sum(1 for b in past_blows if b.impact > t - BPM_WINDOW_S)
        return PressReading(
            state=state,
            alarm_code=alarm,
            ram_position_mm=max(0.0, ram + (0.05 * self._jitter(self._N_RAM, t) if ram else 0.0)),
            stroke_count=plan.strokes_before + len(on_billet),
            last_force_kn=last.force_kn,
            last_energy_kj=last.energy_kj,
            hydraulic_bar=hydraulic,
            die_temp_c=self._die_temp(plan, t) + 0.3 * self._jitter(self._N_DIE, t),
            last_billet_temp_c=last.billet_temp_c,
            blows_per_minute=float(bpm),
            blows_on_billet=len(on_billet),
            parts_forged=plan.parts_before + (1 if plan.blows and t >= plan.eject_end else 0),
        )

    def _heater(self, t: float) -> HeaterReading:
        plans = self._plans
        mi = next((i for i in range(len(plans) - 1, -1, -1) if plans[i].heat_start <= t), 0)
        m = plans[mi]
        if t < m.heat_done:
            x = (t - m.heat_start) / (m.heat_done - m.heat_start)
            state = HeaterState.HEATING
            power = HEATING_POWER_KW * (1 - 0.25 * x)
            frequency = HEATING_FREQUENCY_HZ + (HOT_FREQUENCY_HZ - HEATING_FREQUENCY_HZ) * x
        else:
            state = HeaterState.READY if t < m.push else HeaterState.PUSHING
            power, frequency = HOLDING_POWER_KW, HOT_FREQUENCY_HZ
        pushed = t >= m.push
        heated = m.index + (1 if pushed else 0)
        if pushed:
            exit_temp = m.exit_temp_c
        elif mi > 0:
            exit_temp = plans[mi - 1].exit_temp_c
        else:
            exit_temp = self._initial_exit_temp
        return HeaterReading(
            state=state,
            exit_temp_c=exit_temp,
            power_kw=power + 3.0 * self._jitter(self._N_POWER, t),
            frequency_hz=frequency + 4.0 * self._jitter(self._N_FREQ, t),
            billets_heated=heated,
        )

    def _scale(self, t: float) -> ScaleReading:
        plans = self._plans
        landed = [p for p in plans if p.on_scale <= t]
        weighed = [p for p in plans if p.weighed <= t]
        last_weight = weighed[-1].weight_kg if weighed else self._initial_weight
        count = weighed[-1].index + 1 if weighed else 0
        stable = True
        live = 0.0
        if landed and t < landed[-1].off_scale:
            billet = landed[-1]
            dt = t - billet.on_scale
            live = billet.weight_kg
            if dt < SCALE_SETTLE_S:
                stable = False
                live += 0.4 * billet.weight_kg * math.exp(-dt / 0.15) * math.cos(2 * math.pi * dt / 0.2)
            live += 0.0008 * self._jitter(self._N_LIVE, t)
        live = round(live, 3)
        if abs(live) < 0.0005:
            live = 0.0  # no "-0.000" on the display
        return ScaleReading(
            last_weight_kg=last_weight,
            stable=stable,
            empty=live < EMPTY_BELOW_KG,
            out_of_tolerance=abs(last_weight - WEIGHT_NOMINAL_KG) > WEIGHT_TOLERANCE_KG + 1e-9,
            count=count,
            live_weight_kg=live,
        )
