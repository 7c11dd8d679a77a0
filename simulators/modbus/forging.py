"""Simulated hot-forging line on one Modbus RTU line (RS-485), and its command line.

Run: ``python -m simulators.modbus.forging (--pty | --serial DEVICE | --tcp PORT) [--baud 19200
--parity E --stopbits 1 --bytesize 8] [--turnaround-ms MS] [--seed N] [--time-scale X]
[--extra-units N] [--dead-unit U ...] [--noise P] [--drop-every N] [--slow-ms MS]
[--corrupt-every N] [--cut-every N]``.

* ``--pty``: creates a pty pair and prints exactly one line ``forging listening on
  /dev/pts/N`` - the SLAVE path, which the agent opens as its serial port.
* ``--serial DEVICE``: serves on an existing serial device; prints ``forging listening on
  DEVICE``.
* ``--tcp PORT``: RTU frames (unit, PDU, CRC - no MBAP header) on a TCP socket at
  127.0.0.1:PORT, like a serial-to-Ethernet converter (``protocol: modbus-rtu-tcp``); prints
  ``forging listening on 127.0.0.1:PORT`` (the real port when PORT is 0).

Runs until SIGTERM/SIGINT, then exits 0 (1 if it cannot open the pty/device/port). The line
is paced at the baud rate (see simulators.serial.port); framing and faults are described in
simulators.modbus.rtu_server. ``--time-scale X`` runs the process X times faster than real time
(simulated s = real s x X); the benchmark units are not scaled. ``--dead-unit`` may be
repeated or given several ids. Behaviour of the machines: simulators.modbus.forging_physics.

Register map. All values are holding registers (function 03) unless stated; reads of unlisted
addresses inside a unit's mapped range return 0, anything outside it is exception 02; every
register is read-only (writes answer exception 02). 32-bit values occupy two registers,
big-endian word order "ABCD" (the high word at the lower address, A = most significant byte).

Unit 1 - screw forging press (mapped: hr 0..63):

=========  =======  =====  ========  ==================================================
address    type     order  unit      meaning
=========  =======  =====  ========  ==================================================
hr:0       uint16                    cycle state: 0 idle, 1 heating wait (waiting for a
                                     hot billet), 2 forging, 3 ejecting, 4 alarm
hr:1       uint16                    alarm code while state 4, else 0: 1107 die
                                     lubrication fault, 1201 hydraulic pressure low,
                                     1305 billet too cold, 1402 ejector jam
hr:2-3     float32  ABCD   mm        ram position below its upper rest position (0 at
                                     rest, ~340..395 at impact)
hr:4-5     uint32   ABCD   -         stroke count, lifetime blows (1204311 at start)
hr:6-7     float32  ABCD   kN        forging force of the last blow (~9000..21000)
hr:8-9     float32  ABCD   kJ        blow energy of the last blow (~72..99)
hr:10-11   float32  ABCD   bar       hydraulic pressure (~210; dips 35 after a blow;
                                     ~150 in alarm 1201)
hr:12      int16           0.1 Cel   die temperature (starts 195.0, ~240..260 in
                                     production)
hr:13      int16           0.1 Cel   billet temperature at the last blow (~1090..1190)
hr:14      uint16          0.1 /min  blows in the last 60 simulated s (starts at 0)
hr:15      uint16          -         blows on the current billet so far (0..3)
hr:16-17   uint32   ABCD   -         parts forged since simulator start
=========  =======  =====  ========  ==================================================

Unit 2 - induction heater (mapped: hr 100..139; reads below 100 are exception 02):

=========  =======  =====  ========  ==================================================
address    type     order  unit      meaning
=========  =======  =====  ========  ==================================================
hr:100     uint16                    heating state: 0 off (not simulated), 1 heating,
                                     2 ready (holding at temperature), 3 pushing out
hr:101     uint16                    reserved, 0
hr:102-103 float32  ABCD   Cel       billet exit temperature: the last billet pushed
                                     out, latched at the push (~1150..1210)
hr:104-105 float32  ABCD   kW        power (~340 -> 255 heating, ~60 holding)
hr:106-107 float32  ABCD   Hz        frequency (2760 -> 2930 while heating)
hr:108-109 uint32   ABCD   -         billets heated (pushed out) since start
=========  =======  =====  ========  ==================================================

Unit 3 - hot-billet scale (mapped: hr 0..15, di 0..7):

=========  =======  =====  ========  ==================================================
address    type     order  unit      meaning
=========  =======  =====  ========  ==================================================
hr:0-1     float32  ABCD   kg        weight of the last billet (rounded to 3 decimals
                                     before encoding, ~2.420..2.480)
hr:2       uint16                    status bits: 0 stable, 1 pan empty, 2 last weight
                                     out of tolerance (2.450 +- 0.030 kg)
hr:4-5     uint32   ABCD   -         count of billets weighed since start
hr:6-7     float32  ABCD   kg        live gross weight on the pan (3 decimals; 0.000
                                     when empty, oscillating while unstable)
di:0       bool                      stable (function 02)
di:1       bool                      pan empty
di:2       bool                      last weight out of tolerance
=========  =======  =====  ========  ==================================================

Units 10 .. 10+N-1 - benchmark units (``--extra-units N``; mapped: hr 0..99); their values
change every 100 ms of real time, whatever the time scale:

=========  =======  =====  ========  ==================================================
hr:0-1     uint32   ABCD   -         tick = floor(real seconds since start / 0.1)
hr:i       uint16          -         (tick * i + unit) mod 65536, for i = 2..99
=========  =======  =====  ========  ==================================================

Each of units 1-3 fits in one read (1: hr 0..17, 2: hr 100..109, 3: hr 0..7); a benchmark
unit in one read of 100.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Callable, Sequence

from simulators.modbus import word_order as wo
from simulators.modbus.forging_physics import ForgingLine
from simulators.modbus.model import DataModel, Table
from simulators.modbus.rtu_server import RtuFaults, RtuServer, RtuStats
from simulators.serial.cli import add_fault_arguments, add_link_arguments, link_from_args, run_cli
from simulators.serial.link import SerialLink
from simulators.serial.simulator import SimulatorBase

PRESS_UNIT = 1
HEATER_UNIT = 2
SCALE_UNIT = 3
FIRST_EXTRA_UNIT = 10
MAX_EXTRA_UNITS = 247 - FIRST_EXTRA_UNIT + 1
BENCH_REGISTERS = 100
BENCH_TICK_S = 0.1
# Polled up to every few ms on a fast line: recompute an image at most every 5 ms.
IMAGE_CACHE_SECONDS = 0.005


class SimClock:
    """Simulated seconds since reset(): real elapsed time x time_scale."""

    def __init__(self, time_scale: float = 1.0, clock: Callable[[], float] = time.monotonic) -> None:
        if time_scale <= 0:
            raise ValueError("time scale must be > 0")
        self.time_scale = time_scale
        self._clock = clock
        self._t0 = clock()

    def reset(self) -> None:
        """Simulated time 0 is now."""
        self._t0 = self._clock()

    def real_elapsed(self) -> float:
        """Real seconds since reset."""
        return self._clock() - self._t0

    def __call__(self) -> float:
        return self.real_elapsed() * self.time_scale


class ImageDevice:
    """A read-only DataModel whose holding registers (and discrete inputs) come from an image.

    Subclasses set HR_BASE/HR_SIZE/DI_SIZE and implement build().
    """

    HR_BASE = 0
    HR_SIZE = 64
    DI_SIZE = 0

    def __init__(self, clock: Callable[[], float] = time.monotonic,
                 cache_seconds: float = IMAGE_CACHE_SECONDS) -> None:
        self._clock = clock
        self._cache_seconds = cache_seconds
        self._cached_at = float("-inf")
        self._image: tuple[list[int], list[bool]] | None = None

    def build(self) -> tuple[list[int], list[bool]]:
        """(holding registers HR_BASE.., discrete inputs 0..) now."""
        raise NotImplementedError

    def image(self) -> tuple[list[int], list[bool]]:
        """Current image, recomputed at most every cache_seconds of real time."""
        now = self._clock()
        if self._image is None or now - self._cached_at >= self._cache_seconds:
            self._image = self.build()
            self._cached_at = now
        return self._image

    def read_registers(self, table: Table, address: int, count: int) -> list[int] | None:
        """Holding registers only."""
        if table != Table.HOLDING_REGISTERS:
            return None
        offset = address - self.HR_BASE
        if offset < 0 or offset + count > self.HR_SIZE:
            return None
        return self.image()[0][offset : offset + count]

    def read_bits(self, table: Table, address: int, count: int) -> list[bool] | None:
        """Discrete inputs only (if the device has any)."""
        if table != Table.DISCRETE_INPUTS or address < 0 or address + count > self.DI_SIZE:
            return None
        return self.image()[1][address : address + count]

    def write_coils(self, address: int, values: Sequence[bool]) -> bool:
        """Nothing is writable."""
        return False

    def write_registers(self, address: int, values: Sequence[int]) -> bool:
        """Nothing is writable."""
        return False


class _LineDevice(ImageDevice):
    def __init__(self, line: ForgingLine, sim_clock: SimClock) -> None:
        super().__init__()
        self.line = line
        self.sim_clock = sim_clock


class ForgingPressDevice(_LineDevice):
    """Unit 1."""

    HR_SIZE = 64

    def build(self) -> tuple[list[int], list[bool]]:
        """Encode the press reading into the unit-1 map."""
        p = self.line.snapshot(self.sim_clock()).press
        hr = [0] * self.HR_SIZE
        hr[0:1] = wo.uint16(p.state)
        hr[1:2] = wo.uint16(p.alarm_code)
        hr[2:4] = wo.float32(p.ram_position_mm)
        hr[4:6] = wo.uint32(p.stroke_count)
        hr[6:8] = wo.float32(p.last_force_kn)
        hr[8:10] = wo.float32(p.last_energy_kj)
        hr[10:12] = wo.float32(p.hydraulic_bar)
        hr[12:13] = wo.int16(round(p.die_temp_c * 10))
        hr[13:14] = wo.int16(round(p.last_billet_temp_c * 10))
        hr[14:15] = wo.uint16(round(p.blows_per_minute * 10))
        hr[15:16] = wo.uint16(p.blows_on_billet)
        hr[16:18] = wo.uint32(p.parts_forged)
        return hr, []


class InductionHeaterDevice(_LineDevice):
    """Unit 2."""

    HR_BASE = 100
    HR_SIZE = 40

    def build(self) -> tuple[list[int], list[bool]]:
        """Encode the heater reading into the unit-2 map (offsets from hr:100)."""
        h = self.line.snapshot(self.sim_clock()).heater
        hr = [0] * self.HR_SIZE
        hr[0:1] = wo.uint16(h.state)
        hr[2:4] = wo.float32(h.exit_temp_c)
        hr[4:6] = wo.float32(h.power_kw)
        hr[6:8] = wo.float32(h.frequency_hz)
        hr[8:10] = wo.uint32(h.billets_heated)
        return hr, []


class ScaleDevice(_LineDevice):
    """Unit 3."""

    HR_SIZE = 16
    DI_SIZE = 8

    def build(self) -> tuple[list[int], list[bool]]:
        """Encode the scale reading into the unit-3 map."""
        s = self.line.snapshot(self.sim_clock()).scale
        hr = [0] * self.HR_SIZE
        hr[0:2] = wo.float32(round(s.last_weight_kg, 3))
        hr[2:3] = wo.uint16(s.stable | s.empty << 1 | s.out_of_tolerance << 2)
        hr[4:6] = wo.uint32(s.count)
        hr[6:8] = wo.float32(round(s.live_weight_kg, 3))
        di = [s.stable, s.empty, s.out_of_tolerance] + [False] * (self.DI_SIZE - 3)
        return hr, di


class BenchDevice(ImageDevice):
    """A benchmark unit: 100 registers changing every 100 ms of real time."""

    HR_SIZE = BENCH_REGISTERS

    def __init__(self, unit: int, sim_clock: SimClock) -> None:
        super().__init__()
        self.unit = unit
        self.sim_clock = sim_clock

    def build(self) -> tuple[list[int], list[bool]]:
        """hr:0-1 tick, hr:i (tick*i + unit) mod 65536."""
        tick = int(self.sim_clock.real_elapsed() / BENCH_TICK_S)
        hr = [(tick * i + self.unit) & 0xFFFF for i in range(self.HR_SIZE)]
        hr[0:2] = wo.uint32(tick)
        return hr, []


def build_units(line: ForgingLine, sim_clock: SimClock, extra_units: int = 0) -> dict[int, DataModel]:
    """The unit id -> device map of the line."""
    if not 0 <= extra_units <= MAX_EXTRA_UNITS:
        raise ValueError(f"extra units must be within 0..{MAX_EXTRA_UNITS}")
    units: dict[int, DataModel] = {
        PRESS_UNIT: ForgingPressDevice(line, sim_clock),
        HEATER_UNIT: InductionHeaterDevice(line, sim_clock),
        SCALE_UNIT: ScaleDevice(line, sim_clock),
    }
    for i in range(extra_units):
        unit = FIRST_EXTRA_UNIT + i
        units[unit] = BenchDevice(unit, sim_clock)
    return units


class ForgingSimulator(SimulatorBase[RtuFaults]):
    """The forging line served by an RtuServer on `link`; simulated time starts at start()."""

    def __init__(
        self,
        link: SerialLink,
        *,
        seed: int = 0,
        time_scale: float = 1.0,
        extra_units: int = 0,
        faults: RtuFaults | None = None,
    ) -> None:
        self.link = link
        self.line = ForgingLine(seed)
        self.clock = SimClock(time_scale)
        self.units = build_units(self.line, self.clock, extra_units)
        self.server = RtuServer(self.units, link, faults=faults)

    @property
    def faults(self) -> RtuFaults:
        """Fault switches of the RTU server (assign to change at runtime)."""
        return self.server.faults

    @faults.setter
    def faults(self, value: RtuFaults) -> None:
        self.server.faults = value

    @property
    def stats(self) -> RtuStats:
        """The RTU server's counters."""
        return self.server.stats

    async def start(self) -> None:
        """Open the link; simulated time 0 is now."""
        self.clock.reset()
        await self.server.start()

    async def stop(self) -> None:
        """Close the link."""
        await self.server.stop()


def build_parser() -> argparse.ArgumentParser:
    """Command-line options of the forging-line simulator."""
    p = argparse.ArgumentParser(
        prog="python -m simulators.modbus.forging",
        description="Simulated forging line (press, induction heater, scale) on Modbus RTU.",
    )
    add_link_arguments(p, baud=19200, parity="E")
    p.add_argument("--seed", type=int, default=0, help="seed of the production plan and noise")
    p.add_argument("--time-scale", type=float, default=1.0,
                   help="simulated seconds per real second")
    p.add_argument("--extra-units", type=int, default=0,
                   help="benchmark units 10..10+N-1 with 100 changing registers each")
    p.add_argument("--dead-unit", type=int, action="extend", nargs="+", default=[],
                   metavar="U", help="unit ids that never answer (repeatable)")
    add_fault_arguments(p)
    return p


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        link = link_from_args(args)
        faults = RtuFaults(
            noise=args.noise, drop_every=args.drop_every, slow_ms=args.slow_ms,
            corrupt_every=args.corrupt_every, cut_every=args.cut_every,
            dead_units=frozenset(args.dead_unit), seed=args.seed,
        )
        sim = ForgingSimulator(link, seed=args.seed, time_scale=args.time_scale,
                               extra_units=args.extra_units, faults=faults)
    except ValueError as exc:
        parser.error(str(exc))
    return asyncio.run(run_cli(sim, "forging"))


if __name__ == "__main__":
    sys.exit(main())
