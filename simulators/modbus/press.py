"""Simulated mechanical stamping press speaking Modbus TCP, and its command line.

Run: ``python -m simulators.modbus.press --host 127.0.0.1 --port 5020 --unit 1 --spm 30 --count 1
--seed 0 --alarm-every 300 [--drop-every N] [--delay-ms MS] [--exception-rate P]
[--fault-file PATH]``.
``--count N`` serves N independent presses on ports port..port+N-1 (seeds seed+i).
After each server is listening one line ``press listening on HOST:PORT unit U`` is printed.
Runs until SIGTERM/SIGINT, then exits 0.

Faults at runtime: with ``--fault-file PATH`` the simulator re-reads PATH at most every
100 ms and, when its content changed, applies it to every press. The content is a JSON
object of simulators.modbus.tcp_server.FaultConfig fields, overriding the ones given on
the command line, e.g. ``{"mode": "exception", "code": 4}``, ``{"mode": "delay",
"delay_ms": 500}``, ``{"mode": "dribble", "dribble_ms": 2}``, ``{"mode": "none"}``
(modes: none, delay, short_reply, short_adu, wrong_tid, wrong_unit, exception, dribble,
close_mid_reply). ``{"mode": "restart", "down_ms": 500}`` restarts every server once
(stops listening, drops connections, listens again on the same port after down_ms) and
then injects nothing; write another content before restarting again. A missing or
empty file means the command-line faults; unreadable JSON or bad values are reported
on stderr and leave the faults as they were.

Behaviour: the crank turns at SPM strokes/min while running; a cycle is running for
``--alarm-every`` s (rounded up to a whole stroke, so the crank parks at TDC), alarm for
10 s (codes alternate 310 die protection / 205 lube pressure low), stopped for 5 s.
Outside running the crank rests at TDC, forces are 0 and the motor current is idle.

Register map. Multi-register values are big-endian words "ABCD" unless stated
(A = most significant byte; CDAB = words swapped; BADC = bytes swapped inside each
word; DCBA = fully little-endian).

============  ===========  =====  ===================================================
address       type         order  meaning
============  ===========  =====  ===================================================
hr:0          uint16              state: 0 stopped, 1 running, 2 alarm, 3 setup
hr:1          uint16              mode: 0 off, 1 inch, 2 single, 3 continuous (always 3)
hr:2          uint16              active alarm code (0 none, 205 lube low, 310 die protection)
hr:3          uint16              stroke rate actual, 0.1 SPM (0 when not running)
hr:4-5        uint32       ABCD   stroke counter (lifetime; starts at 2_345_678)
hr:6-7        float32      ABCD   crank angle, deg (0 = TDC, 180 = BDC)
hr:8-9        float32      ABCD   slide position, mm below TDC (0..120)
hr:10-17      float32 x4   ABCD   instantaneous tonnage ch1..ch4, kN
hr:20-27      float32 x4   CDAB   last-stroke peak tonnage ch1..ch4, kN
hr:28-29      float32      CDAB   last-stroke total peak (sum of the 4), kN
hr:30-31      int32        ABCD   die height, 0.01 mm (35000)
hr:32         uint16              motor current, 0.1 A
hr:33         uint16              lubrication pressure, 0.01 bar
hr:34         int16               last-stroke reverse peak tonnage, 0.1 kN (negative)
hr:35         uint16              status bits: 0 motor on, 1 clutch engaged, 2 brake
                                  released, 3 lube ok, 4 overload (never set),
                                  5 light curtain clear
hr:36-39      uint64       ABCD   operating seconds (1_234_567 + elapsed)
hr:40-47      string 16           die id "DIE-4711-B", ASCII, 2 chars/register, first
                                  char in the high byte, NUL padded
hr:48-51      float64      ABCD   motor energy, kWh
hr:52-53      uint32       DCBA   parts since job start (0 at simulator start)
hr:54-55      float32      BADC   flywheel speed, rev/min (~1450 motor on, 0 stopped)
ir:0          int16               oil temperature, 0.1 Cel (35 -> 48)
ir:1          int16               motor temperature, 0.1 Cel
ir:2          uint16              main air pressure, 0.01 bar (~6.0 bar)
co:0          bool                lube pump on (writable; off drops lube pressure)
co:1          bool                die clamp closed (writable)
di:0          bool                motor running
di:1          bool                clutch engaged
di:2          bool                light curtain clear
di:3          bool                slide at TDC (within 10 deg of 0/360)
di:4          bool                alarm active
============  ===========  =====  ===================================================

Mapped: hr 0..63, ir 0..7, co 0..7, di 0..7; unlisted addresses read 0, anything beyond
is exception 02. Holding registers are read-only and so are co:2..7: writes to them
answer exception 02 (illegal data address).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import struct
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from simulators.modbus import word_order as wo
from simulators.modbus.model import Table
from simulators.modbus.press_physics import (
    DIE_HEIGHT_MM,
    DIE_ID,
    PressConfig,
    PressPhysics,
    PressSnapshot,
    PressState,
    stroke_peaks,
)
from simulators.modbus.tcp_server import FaultConfig, ModbusTcpServer

HOLDING_REGISTERS = 64
INPUT_REGISTERS = 8
COILS = 8
DISCRETE_INPUTS = 8
WRITABLE_COILS = range(0, 2)
# Polled by up to 100 presses per process: recompute the image at most every 5 ms.
IMAGE_CACHE_SECONDS = 0.005
FAULT_FILE_POLL_SECONDS = 0.1


@dataclass(frozen=True)
class PressImage:
    """Encoded register image of the read-only tables."""

    holding: tuple[int, ...]
    inputs: tuple[int, ...]
    discrete: tuple[bool, ...]


def build_image(snap: PressSnapshot) -> PressImage:
    """Encode a snapshot into the register map documented in this module."""
    hr = [0] * HOLDING_REGISTERS

    def put(address: int, words: list[int]) -> None:
        hr[address : address + len(words)] = words

    running = snap.running
    last = snap.last_stroke
    put(0, wo.uint16(snap.state))
    put(1, wo.uint16(3))
    put(2, wo.uint16(snap.alarm_code))
    put(3, wo.uint16(round(snap.stroke_rate * 10)))
    put(4, wo.uint32(snap.stroke_counter))
    put(6, wo.float32(snap.crank_angle))
    put(8, wo.float32(snap.slide_position))
    for ch in range(4):
        put(10 + 2 * ch, wo.float32(snap.tonnage[ch]))
        put(20 + 2 * ch, wo.float32(last.channels[ch], "CDAB"))
    put(28, wo.float32(last.total, "CDAB"))
    put(30, wo.int32(round(DIE_HEIGHT_MM * 100)))
    put(32, wo.uint16(round(snap.motor_current * 10)))
    put(33, wo.uint16(round(snap.lube_pressure * 100)))
    put(34, wo.int16(round(last.reverse * 10)))
    status = (
        snap.motor_on << 0
        | running << 1
        | running << 2
        | snap.lube_ok << 3
        | snap.light_curtain_clear << 5
    )
    put(35, wo.uint16(status))
    put(36, wo.uint64(snap.operating_seconds))
    put(40, wo.ascii_string(DIE_ID, 8))
    put(48, wo.float64(snap.energy_kwh))
    put(52, wo.uint32(snap.strokes, "DCBA"))
    put(54, wo.float32(snap.flywheel_rpm, "BADC"))

    ir = [0] * INPUT_REGISTERS
    ir[0:1] = wo.int16(round(snap.oil_temperature * 10))
    ir[1:2] = wo.int16(round(snap.motor_temperature * 10))
    ir[2:3] = wo.uint16(round(snap.air_pressure * 100))

    di = [False] * DISCRETE_INPUTS
    di[0:5] = [
        snap.motor_on,
        running,
        snap.light_curtain_clear,
        snap.at_tdc,
        snap.state == PressState.ALARM,
    ]
    return PressImage(holding=tuple(hr), inputs=tuple(ir), discrete=tuple(di))


def stroke_ground_truth(seed: int, stroke_counter: int) -> dict[str, float]:
    """What a press with `seed` latches for the stroke that brought its counter (hr:4) to
    `stroke_counter`, as its registers carry it (float32 peaks, reverse in 0.1 kN): the
    reference a test compares the agent's cycle records with."""
    peaks = stroke_peaks(seed, stroke_counter)
    single = [struct.unpack(">f", struct.pack(">f", v))[0] for v in (*peaks.channels, peaks.total)]
    truth = {f"press.force.peak.ch{i + 1}": v for i, v in enumerate(single[:4])}
    truth["press.force.total_peak"] = single[4]
    truth["press.force.reverse_peak"] = round(peaks.reverse * 10) / 10
    return truth


class PressDevice:
    """A press as a Modbus DataModel: the image is computed lazily from elapsed time."""

    def __init__(
        self,
        config: PressConfig | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        cache_seconds: float = IMAGE_CACHE_SECONDS,
    ) -> None:
        self.config = config or PressConfig()
        self.physics = PressPhysics(self.config)
        self._clock = clock
        self._t0 = clock()
        self._cache_seconds = cache_seconds
        self._cached_at = float("-inf")
        self._image: PressImage | None = None
        self.coils = [True, True] + [False] * (COILS - 2)

    def elapsed(self) -> float:
        """Seconds since the press was created."""
        return self._clock() - self._t0

    def snapshot(self) -> PressSnapshot:
        """Current physical state (uncached)."""
        return self.physics.snapshot(self.elapsed(), lube_pump_on=self.coils[0])

    def image(self) -> PressImage:
        """Current register image, recomputed at most every cache_seconds."""
        now = self._clock()
        if self._image is None or now - self._cached_at >= self._cache_seconds:
            self._image = build_image(
                self.physics.snapshot(now - self._t0, lube_pump_on=self.coils[0])
            )
            self._cached_at = now
        return self._image

    def read_bits(self, table: Table, address: int, count: int) -> list[bool] | None:
        """Coils or discrete inputs."""
        if table == Table.COILS:
            source: Sequence[bool] = self.coils
        elif table == Table.DISCRETE_INPUTS:
            source = self.image().discrete
        else:
            return None
        if address < 0 or address + count > len(source):
            return None
        return list(source[address : address + count])

    def read_registers(self, table: Table, address: int, count: int) -> list[int] | None:
        """Holding or input registers."""
        if table == Table.HOLDING_REGISTERS:
            source: Sequence[int] = self.image().holding
        elif table == Table.INPUT_REGISTERS:
            source = self.image().inputs
        else:
            return None
        if address < 0 or address + count > len(source):
            return None
        return list(source[address : address + count])

    def write_coils(self, address: int, values: Sequence[bool]) -> bool:
        """Only co:0 (lube pump) and co:1 (die clamp) are writable."""
        if address not in WRITABLE_COILS or address + len(values) - 1 not in WRITABLE_COILS:
            return False
        self.coils[address : address + len(values)] = [bool(v) for v in values]
        self._image = None  # the lube pump coil changes lube pressure right away
        return True

    def write_registers(self, address: int, values: Sequence[int]) -> bool:
        """All holding registers are measurements, hence read-only."""
        return False


def build_parser() -> argparse.ArgumentParser:
    """Command-line options of the press simulator."""
    p = argparse.ArgumentParser(
        prog="python -m simulators.modbus.press", description="Simulated stamping press (Modbus TCP)."
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=5020, help="first TCP port (0 = OS picks)")
    p.add_argument("--unit", type=int, default=1, help="Modbus unit id served")
    p.add_argument("--spm", type=float, default=30.0, help="strokes per minute while running")
    p.add_argument("--count", type=int, default=1, help="number of presses, on consecutive ports")
    p.add_argument("--seed", type=int, default=0, help="seed of the first press (press i: seed+i)")
    p.add_argument("--alarm-every", type=float, default=300.0, help="seconds running per cycle")
    p.add_argument("--drop-every", type=int, default=0, help="drop connection every N-th request")
    p.add_argument("--delay-ms", type=float, default=0.0, help="delay before each answer, ms")
    p.add_argument("--exception-rate", type=float, default=0.0, help="P(read answers 04/06)")
    p.add_argument(
        "--fault-file",
        type=Path,
        default=None,
        help="JSON fault switches, re-read every 100 ms (see the module docstring)",
    )
    return p


async def start_presses(
    *,
    host: str,
    port: int,
    unit_id: int,
    count: int,
    config: PressConfig,
    faults: FaultConfig,
    announce: Callable[[ModbusTcpServer], None] | None = None,
) -> list[ModbusTcpServer]:
    """Start `count` presses on port..port+count-1 (each OS-picked if port is 0).

    Press i uses seed config.seed + i for physics and faults. On a bind failure the
    presses already started are stopped and the OSError propagates.
    """
    servers: list[ModbusTcpServer] = []
    try:
        for i in range(count):
            device = PressDevice(replace(config, seed=config.seed + i))
            server = ModbusTcpServer(
                device,
                host=host,
                port=port + i if port else 0,
                unit_id=unit_id,
                faults=replace(faults, seed=faults.seed + i),
            )
            await server.start()
            servers.append(server)
            if announce is not None:
                announce(server)
    except BaseException:
        await asyncio.gather(*(s.stop() for s in servers), return_exceptions=True)
        raise
    return servers


def _announce(server: ModbusTcpServer) -> None:
    print(f"press listening on {server.host}:{server.port} unit {server.unit_id}", flush=True)


async def _run(args: argparse.Namespace) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        servers = await start_presses(
            host=args.host,
            port=args.port,
            unit_id=args.unit,
            count=args.count,
            config=PressConfig(spm=args.spm, seed=args.seed, alarm_every=args.alarm_every),
            faults=FaultConfig(
                drop_every=args.drop_every,
                delay_ms=args.delay_ms,
                exception_rate=args.exception_rate,
                seed=args.seed,
            ),
            announce=_announce,
        )
    except OSError as exc:
        print(f"press: cannot listen: {exc}", file=sys.stderr)
        return 1
    watcher = None
    if args.fault_file is not None:
        base = FaultConfig(
            drop_every=args.drop_every,
            delay_ms=args.delay_ms,
            exception_rate=args.exception_rate,
            seed=args.seed,
        )
        watcher = asyncio.create_task(_watch_fault_file(args.fault_file, base, servers))
    await stop.wait()
    if watcher is not None:
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
    await asyncio.gather(*(s.stop() for s in servers))
    return 0


async def _watch_fault_file(
    path: Path, base: FaultConfig, servers: list[ModbusTcpServer]
) -> None:
    """Apply the fault file to every server whenever its content changes."""
    seen: str | None = None
    while True:
        try:
            text = path.read_text()
        except FileNotFoundError:
            text = ""
        except OSError as exc:
            print(f"press: cannot read fault file: {exc}", file=sys.stderr, flush=True)
            text = seen or ""
        if text != seen:
            seen = text
            await _apply_fault_text(text, base, servers)
        await asyncio.sleep(FAULT_FILE_POLL_SECONDS)


async def _apply_fault_text(text: str, base: FaultConfig, servers: list[ModbusTcpServer]) -> None:
    try:
        data = json.loads(text) if text.strip() else {}
        if not isinstance(data, dict):
            raise ValueError("fault file must hold a JSON object")
        if data.get("mode") == "restart":
            down = float(data.get("down_ms", 0.0)) / 1000.0
            faults = base
        else:
            down = None
            # Fields the file leaves out keep their command-line values.
            faults = FaultConfig.from_mapping({**vars(base), **data})
    except (ValueError, TypeError) as exc:
        print(f"press: ignoring fault file: {exc}", file=sys.stderr, flush=True)
        return
    for i, server in enumerate(servers):
        server.set_faults(replace(faults, seed=faults.seed + i))
    if down is not None:
        await asyncio.gather(*(s.restart(down) for s in servers))


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.count < 1:
        parser.error("--count must be >= 1")
    if args.port and args.port + args.count - 1 > 65535:
        parser.error("port range exceeds 65535")
    if not 0 <= args.unit <= 255:
        parser.error("--unit must be within 0..255")
    try:
        PressConfig(spm=args.spm, alarm_every=args.alarm_every)
        FaultConfig(
            drop_every=args.drop_every, delay_ms=args.delay_ms, exception_rate=args.exception_rate
        )
    except ValueError as exc:
        parser.error(str(exc))
    return asyncio.run(_run(args))


if __name__ == "__main__":
    sys.exit(main())
