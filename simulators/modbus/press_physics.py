"""Time-driven physics of a mechanical stamping press; pure functions of elapsed time.

Nothing here integrates step by step: every quantity is computed in closed form from
the elapsed time, so a device can be sampled lazily at any rate and stays deterministic.
"""

from __future__ import annotations

import enum
import math
import random
from dataclasses import dataclass

from simulators.common import noise

STROKE_MM = 120.0
CONROD_MM = 600.0
NOMINAL_PEAK_KN = 400.0
ASYMMETRY = (1.00, 0.95, 1.05, 0.90)
PEAK_NOISE = 0.02
PEAK_ANGLE_DEG = 172.0
PEAK_WIDTH_DEG = 8.0
# The blank breaks through at BDC: forming load collapses and the stored frame
# energy shows up as a short reverse (snap-through) load.
BREAKTHROUGH_DEG = 180.0
SNAP_END_DEG = 192.0
REVERSE_FRACTION = 0.10
FORMING_START_DEG = PEAK_ANGLE_DEG - 4 * PEAK_WIDTH_DEG

IDLE_CURRENT_A = 20.0
LOAD_CURRENT_A = 40.0
# 400 V three-phase, cos(phi) 0.85: kW drawn per ampere of motor current.
KW_PER_AMPERE = math.sqrt(3) * 0.400 * 0.85
FLYWHEEL_RPM = 1450.0
LUBE_BAR = 3.5
LUBE_ALARM_BAR = 1.2
LUBE_PUMP_OFF_BAR = 0.3
LUBE_OK_BAR = 2.0
AIR_BAR = 6.0

DIE_HEIGHT_MM = 350.0
DIE_ID = "DIE-4711-B"
OPERATING_SECONDS_AT_START = 1_234_567
STROKE_COUNTER_AT_START = 2_345_678
ENERGY_KWH_AT_START = 18_250.0

ALARM_DIE_PROTECTION = 310
ALARM_LUBE_PRESSURE_LOW = 205


class PressState(enum.IntEnum):
    """Machine state as reported in hr:0."""

    STOPPED = 0
    RUNNING = 1
    ALARM = 2
    SETUP = 3


@dataclass(frozen=True)
class PressConfig:
    """Parameters of one simulated press."""

    spm: float = 30.0
    seed: int = 0
    alarm_every: float = 300.0
    alarm_duration: float = 10.0
    stopped_duration: float = 5.0

    def __post_init__(self) -> None:
        if not 0.0 < self.spm <= 6000.0:
            raise ValueError("spm must be within (0, 6000]")
        if self.alarm_every <= 0 or self.alarm_duration < 0 or self.stopped_duration < 0:
            raise ValueError("phase durations must be positive")


@dataclass(frozen=True)
class StrokePeaks:
    """Peak loads of one stroke, kN."""

    channels: tuple[float, float, float, float]
    reverse: float  # total snap-through peak over all channels, negative

    @property
    def total(self) -> float:
        """Sum of the four channel peaks."""
        return sum(self.channels)


@dataclass(frozen=True)
class PressSnapshot:
    """Everything the press reports at one instant (engineering units)."""

    elapsed: float
    state: PressState
    alarm_code: int
    strokes: int  # completed since simulation start
    stroke_rate: float  # actual SPM, 0 unless running
    crank_angle: float  # deg, 0 = TDC
    slide_position: float  # mm below TDC
    tonnage: tuple[float, float, float, float]  # instantaneous, kN
    last_stroke: StrokePeaks
    motor_current: float  # A
    lube_pressure: float  # bar
    oil_temperature: float  # Cel
    motor_temperature: float  # Cel
    air_pressure: float  # bar
    flywheel_rpm: float
    energy_kwh: float
    operating_seconds: int

    @property
    def stroke_counter(self) -> int:
        """Lifetime stroke counter."""
        return STROKE_COUNTER_AT_START + self.strokes

    @property
    def motor_on(self) -> bool:
        """Main motor energised (it is switched off only in the stopped state)."""
        return self.state != PressState.STOPPED

    @property
    def running(self) -> bool:
        """Clutch engaged and crank turning."""
        return self.state == PressState.RUNNING

    @property
    def lube_ok(self) -> bool:
        """Lubrication pressure above the interlock threshold."""
        return self.lube_pressure >= LUBE_OK_BAR

    @property
    def light_curtain_clear(self) -> bool:
        """The operator reaches into the die area only while the press is stopped."""
        return self.state != PressState.STOPPED

    @property
    def at_tdc(self) -> bool:
        """Slide within 10 deg of top dead centre."""
        return self.crank_angle <= 10.0 or self.crank_angle >= 350.0


def slide_position_mm(angle_deg: float) -> float:
    """Slider-crank slide displacement below TDC, mm (0 at TDC, STROKE_MM at BDC)."""
    r = STROKE_MM / 2
    theta = math.radians(angle_deg)
    s = math.sin(theta)
    return r * (1 - math.cos(theta)) + CONROD_MM - math.sqrt(CONROD_MM**2 - (r * s) ** 2)


def forming_shape(angle_deg: float) -> float:
    """Fraction (0..1) of the stroke's peak load acting at a crank angle."""
    if FORMING_START_DEG <= angle_deg < BREAKTHROUGH_DEG:
        return math.exp(-0.5 * ((angle_deg - PEAK_ANGLE_DEG) / PEAK_WIDTH_DEG) ** 2)
    return 0.0


def snap_shape(angle_deg: float) -> float:
    """Fraction (0..1) of the reverse peak acting at a crank angle."""
    if BREAKTHROUGH_DEG <= angle_deg < SNAP_END_DEG:
        return math.sin(math.pi * (angle_deg - BREAKTHROUGH_DEG) / (SNAP_END_DEG - BREAKTHROUGH_DEG))
    return 0.0


# Average forming load over a revolution, as a fraction of the peak; lets energy be
# computed in closed form instead of integrating sampled (aliased) current.
MEAN_LOAD_FRACTION = sum(forming_shape(a / 10) for a in range(3600)) / 3600


def stroke_peaks(seed: int, stroke_number: int) -> StrokePeaks:
    """Deterministic peaks of the stroke that brings the counter to `stroke_number`."""
    rng = random.Random(seed * 1_000_003 + stroke_number)
    channels = tuple(
        NOMINAL_PEAK_KN * factor * (1 + rng.uniform(-PEAK_NOISE, PEAK_NOISE))
        for factor in ASYMMETRY
    )
    reverse = -REVERSE_FRACTION * (1 + rng.uniform(-0.1, 0.1)) * sum(channels)
    return StrokePeaks(channels=channels, reverse=reverse)  # type: ignore[arg-type]


class PressPhysics:
    """Computes PressSnapshot for any elapsed time since simulation start."""

    # noise channels, so each signal gets an independent sequence
    _N_CURRENT, _N_LUBE, _N_OIL, _N_MOTOR_T, _N_AIR, _N_FLYWHEEL = range(6)

    def __init__(self, config: PressConfig) -> None:
        self.config = config
        self.strokes_per_second = config.spm / 60.0
        # A run always ends on a completed stroke so the crank parks at TDC.
        self.strokes_per_run = max(1, math.ceil(config.alarm_every * self.strokes_per_second - 1e-9))
        self.run_duration = self.strokes_per_run / self.strokes_per_second
        self.cycle_duration = self.run_duration + config.alarm_duration + config.stopped_duration
        self._peaks_cache: dict[int, StrokePeaks] = {}

    def peaks(self, stroke_number: int) -> StrokePeaks:
        """stroke_peaks() for this press's seed, memoised for the few strokes in use."""
        peaks = self._peaks_cache.get(stroke_number)
        if peaks is None:
            if len(self._peaks_cache) > 16:
                self._peaks_cache.clear()
            peaks = stroke_peaks(self.config.seed, stroke_number)
            self._peaks_cache[stroke_number] = peaks
        return peaks

    def snapshot(self, elapsed: float, *, lube_pump_on: bool = True) -> PressSnapshot:
        """State of the press `elapsed` seconds after simulation start."""
        cfg = self.config
        elapsed = max(0.0, elapsed)
        cycle, phase = divmod(elapsed, self.cycle_duration)
        cycles = int(cycle)
        bucket = int(elapsed * 10)  # noise changes at 10 Hz, like a filtered analog input

        def jitter(channel: int) -> float:
            return noise(cfg.seed, channel, bucket)

        alarm_code = 0
        angle = 0.0
        if phase < self.run_duration:
            state = PressState.RUNNING
            revolutions = phase * self.strokes_per_second
            strokes_in_cycle = min(int(revolutions), self.strokes_per_run - 1)
            angle = (revolutions - strokes_in_cycle) * 360.0 % 360.0
            run_time = cycles * self.run_duration + phase
        else:
            strokes_in_cycle = self.strokes_per_run
            run_time = (cycles + 1) * self.run_duration
            if phase < self.run_duration + cfg.alarm_duration:
                state = PressState.ALARM
                alarm_code = ALARM_DIE_PROTECTION if cycles % 2 == 0 else ALARM_LUBE_PRESSURE_LOW
            else:
                state = PressState.STOPPED
        strokes = cycles * self.strokes_per_run + strokes_in_cycle
        counter = STROKE_COUNTER_AT_START + strokes

        if state == PressState.RUNNING:
            current_peaks = self.peaks(counter + 1)
            form = forming_shape(angle)
            snap = snap_shape(angle)
            total_peak = current_peaks.total
            tonnage = tuple(
                p * form + current_peaks.reverse * (p / total_peak) * snap
                for p in current_peaks.channels
            )
            load = min(max(sum(tonnage) / (NOMINAL_PEAK_KN * len(ASYMMETRY)), 0.0), 1.0)
            motor_current = IDLE_CURRENT_A + LOAD_CURRENT_A * load + 0.3 * jitter(self._N_CURRENT)
            flywheel = FLYWHEEL_RPM - 25.0 * load + 2.0 * jitter(self._N_FLYWHEEL)
        else:
            tonnage = (0.0, 0.0, 0.0, 0.0)
            motor_current = IDLE_CURRENT_A + 0.3 * jitter(self._N_CURRENT)
            flywheel = FLYWHEEL_RPM + 2.0 * jitter(self._N_FLYWHEEL) if state == PressState.ALARM else 0.0

        if not lube_pump_on:
            lube = LUBE_PUMP_OFF_BAR + 0.02 * jitter(self._N_LUBE)
        elif alarm_code == ALARM_LUBE_PRESSURE_LOW:
            lube = LUBE_ALARM_BAR + 0.03 * jitter(self._N_LUBE)
        else:
            lube = LUBE_BAR + 0.05 * jitter(self._N_LUBE)

        mean_amps = IDLE_CURRENT_A * elapsed + LOAD_CURRENT_A * MEAN_LOAD_FRACTION * run_time
        return PressSnapshot(
            elapsed=elapsed,
            state=state,
            alarm_code=alarm_code,
            strokes=strokes,
            stroke_rate=cfg.spm if state == PressState.RUNNING else 0.0,
            crank_angle=angle,
            slide_position=slide_position_mm(angle),
            tonnage=tonnage,  # type: ignore[arg-type]
            last_stroke=self.peaks(counter),
            motor_current=max(0.0, motor_current),
            lube_pressure=max(0.0, lube),
            oil_temperature=48.0 - 13.0 * math.exp(-elapsed / 1800.0) + 0.1 * jitter(self._N_OIL),
            motor_temperature=62.0 - 22.0 * math.exp(-elapsed / 1200.0) + 0.1 * jitter(self._N_MOTOR_T),
            air_pressure=AIR_BAR + 0.05 * jitter(self._N_AIR),
            flywheel_rpm=flywheel,
            energy_kwh=ENERGY_KWH_AT_START + KW_PER_AMPERE * mean_amps / 3600.0,
            operating_seconds=OPERATING_SECONDS_AT_START + int(elapsed),
        )
