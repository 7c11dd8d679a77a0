"""Legacy ASCII serial devices: a streaming tonnage monitor and a polled temperature controller.

Run: ``python -m simulators.serial.ascii DEVICE (--pty | --serial DEV | --tcp PORT) [--baud 9600
--parity N --stopbits 1 --bytesize 8] [--turnaround-ms MS] [--time-scale X] [--seed N]
[--zones N] [--noise P] [--drop-every N] [--slow-ms MS] [--corrupt-every N] [--cut-every N]
[--burst N]`` with DEVICE ``tonnage`` or ``tempctl``. Prints one line ``<DEVICE> listening on
<slave pty path | device | 127.0.0.1:PORT>`` and runs until SIGTERM/SIGINT (exit 0). Bytes are
paced at the baud rate (simulators.serial.port). ``--time-scale X``: simulated s = real s x X.

Tonnage monitor (``tonnage``) - streams, without being asked, one line per press stroke, a
stroke every 1 simulated second with +-0.1 s jitter (stroke k at (k + 0.5 + j_k) s, |j_k| <= 0.1):

    $TON,<stroke>,<ch1>,<ch2>,<ch3>,<ch4>,<total>,<reverse>*<XX>\\r\\n

* stroke: decimal integer, +1 per stroke, 58201 for the first stroke after start;
* ch1..ch4: per-channel peak force, tonnes-force, exactly one decimal (``62.5``); nominal
  62.5 t x (1.00, 0.96, 1.04, 0.93) +- 3 %; 2 % of the strokes are misfeeds at 1..5 % load;
* total: ch1+ch2+ch3+ch4 computed from the printed values (exact, one decimal);
* reverse: snap-through peak, one decimal, negative (8..12 % of total, at least 0.1);
* XX: XOR of all bytes strictly between ``$`` and ``*``, two uppercase hex digits.

``--burst N`` (N >= 2): at each stroke, with probability 0.1 (seeded), the lines of strokes
k..k+N-1 are sent back to back with no pause, then the stream resumes at stroke k+N's time
(a device streaming faster than the reader for a moment). A TCP connection joins the stream at
the next stroke; each connection gets every line.

Temperature controller (``tempctl``) - answers requests, zones at addresses 01..N
(``--zones N``, 1..4, default 2):

    request:  :<AA>RD\\r\\n                                  (AA: two decimal digits)
    reply:    :<AA>RD,<pv>,<sp>,<out>,<status>,<LL>\\r\\n
    error:    :<AA>ER,<LL>\\r\\n

* pv process value Cel, sp setpoint Cel, out output %, each with exactly one decimal;
  status 0 ok, 1 high alarm (pv > sp + 10), 2 sensor break (pv reads 999.9, out 0.0);
* LL: LRC of the bytes strictly between ``:`` and the comma before LL (two's complement of
  their 8-bit sum), two uppercase hex digits;
* a request line ends at LF (a CR before it is dropped); it starts at its last ``:``; an
  address not served -> no reply; a served address with anything but ``RD`` -> the error
  reply; no ``:`` or no two-digit address -> no reply. Lines longer than 256 bytes are
  discarded. The reply starts at request end + turnaround (+ slow_ms);
* setpoints 220.0, 235.0, 180.0, 250.0 Cel (zones 1..4); pv rises from 25 Cel towards sp
  (first order, tau 90/110/70/130 simulated s) with +-0.3 Cel noise; every 600 s each zone has
  a 30 s overshoot of up to +18 Cel (high alarm in its middle), every 1800 s a 20 s sensor
  break (offsets depend on zone and seed); out = 100 x (sp - 25) / 600 + 6 x (sp - pv),
  clamped to 0..100.

Faults (``AsciiFaults``; assign ``device.faults`` to change them at runtime): noise (probability
that a line/reply is preceded by 1..8 random bytes, none of them ``$ : CR LF``), drop_every
(the N-th line/reply is not sent; for the tonnage monitor its stroke number is then missing),
slow_ms (extra delay before each tempctl reply / tonnage line), corrupt_every (the N-th
line/reply carries a wrong checksum: the right one XOR 0x5A), cut_every (only the first half
of the N-th line/reply is sent, without CR LF; the next line follows directly). Numbering and
precedence as in simulators.serial.faults, one counter per device over all connections.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import random
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass

from simulators.common import noise
from simulators.serial.cli import add_fault_arguments, add_link_arguments, link_from_args, run_cli
from simulators.serial.faults import FaultAction, LineFaults
from simulators.serial.link import SerialLink
from simulators.serial.port import LinePort, sleep_until
from simulators.serial.simulator import SimulatorBase

DEVICES = ("tonnage", "tempctl")
NOISE_EXCLUDE = b"$:\r\n"
CORRUPT_XOR = 0x5A
MAX_REQUEST_LINE = 256

TONNAGE_STROKE_START = 58_201
TONNAGE_PERIOD_S = 1.0
TONNAGE_JITTER_S = 0.1
TONNAGE_NOMINAL_T = 62.5
TONNAGE_ASYMMETRY = (1.00, 0.96, 1.04, 0.93)
TONNAGE_NOISE = 0.03
MISFEED_PROBABILITY = 0.02
BURST_PROBABILITY = 0.1

MAX_ZONES = 4
SETPOINTS_C = (220.0, 235.0, 180.0, 250.0)
ZONE_TAU_S = (90.0, 110.0, 70.0, 130.0)
AMBIENT_C = 25.0
HIGH_ALARM_MARGIN_C = 10.0
OVERSHOOT_PERIOD_S = 600.0
OVERSHOOT_DURATION_S = 30.0
OVERSHOOT_C = 18.0
BREAK_PERIOD_S = 1800.0
BREAK_DURATION_S = 20.0
SENSOR_BREAK_PV = 999.9
STATUS_OK, STATUS_HIGH, STATUS_BREAK = 0, 1, 2


def xor_checksum(body: bytes) -> int:
    """NMEA-style XOR of all bytes."""
    value = 0
    for byte in body:
        value ^= byte
    return value


def lrc(body: bytes) -> int:
    """Two's complement of the 8-bit sum."""
    return -sum(body) & 0xFF


def tenths(value_tenths: int) -> str:
    """An integer count of tenths as text with exactly one decimal (-123 -> '-12.3')."""
    sign = "-" if value_tenths < 0 else ""
    whole, frac = divmod(abs(value_tenths), 10)
    return f"{sign}{whole}.{frac}"


@dataclass(frozen=True)
class AsciiFaults(LineFaults):
    """LineFaults plus the tonnage monitor's bursts (0 or 1: none)."""

    burst: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.burst < 0:
            raise ValueError("burst must be >= 0")


class AsciiDevice(SimulatorBase[AsciiFaults]):
    """Shared parts: time scale, faults, sending one line with its faults applied."""

    kind = "ascii"

    def __init__(
        self,
        link: SerialLink,
        *,
        seed: int = 0,
        time_scale: float = 1.0,
        faults: AsciiFaults | None = None,
    ) -> None:
        if time_scale <= 0:
            raise ValueError("time scale must be > 0")
        self.link = link
        self.seed = seed
        self.time_scale = time_scale
        self._use_faults(faults or AsciiFaults())
        self._t0 = time.monotonic()
        self.lines_sent = 0

    def sim_time(self, real: float | None = None) -> float:
        """Simulated seconds since start at monotonic time `real` (default now)."""
        return ((time.monotonic() if real is None else real) - self._t0) * self.time_scale

    def real_time(self, sim: float) -> float:
        """Monotonic time at which simulated time `sim` is reached."""
        return self._t0 + sim / self.time_scale

    async def start(self) -> None:
        """Simulated time 0 is now; open the link."""
        self._t0 = time.monotonic()
        await super().start()

    def build(self, payload: str, corrupt: bool) -> bytes:
        """Complete line for `payload`; overridden per device."""
        raise NotImplementedError

    async def emit(self, port: LinePort, payload: str, start: float | None = None) -> None:
        """Send one line with the configured faults applied, paced, not before `start`."""
        faults = self._faults
        action = self._injector.next_action(faults)
        if action is FaultAction.DROP:
            return
        line = self.build(payload, corrupt=action is FaultAction.CORRUPT)
        if action is FaultAction.CUT:
            line = line[: len(line) // 2]
        line = self._injector.noise_burst(faults, NOISE_EXCLUDE) + line
        self.lines_sent += 1
        await port.send(line, start=start)


# --------------------------------------------------------------------------- tonnage


@dataclass(frozen=True)
class TonnageStroke:
    """One stroke's peaks in tenths of a tonne-force."""

    stroke: int
    channels: tuple[int, int, int, int]
    reverse: int

    @property
    def total(self) -> int:
        """Sum of the channel peaks."""
        return sum(self.channels)

    def payload(self) -> str:
        """The text between '$' and '*'."""
        fields = [str(self.stroke), *(tenths(c) for c in self.channels), tenths(self.total),
                  tenths(self.reverse)]
        return "TON," + ",".join(fields)


def tonnage_stroke(seed: int, k: int) -> TonnageStroke:
    """Deterministic peaks of the k-th stroke (0-based) after start."""
    rng = random.Random(seed * 1_000_003 + k)
    load = rng.uniform(0.01, 0.05) if rng.random() < MISFEED_PROBABILITY else 1.0
    channels = tuple(
        round(10 * TONNAGE_NOMINAL_T * f * load * (1 + rng.uniform(-TONNAGE_NOISE, TONNAGE_NOISE)))
        for f in TONNAGE_ASYMMETRY
    )
    total = sum(channels)
    reverse = -max(1, round(total * rng.uniform(0.08, 0.12)))
    return TonnageStroke(TONNAGE_STROKE_START + k, channels, reverse)  # type: ignore[arg-type]


def tonnage_line(payload: str, corrupt: bool = False) -> bytes:
    """'$' payload '*' XX CR LF."""
    body = payload.encode("ascii")
    checksum = xor_checksum(body) ^ (CORRUPT_XOR if corrupt else 0)
    return b"$" + body + b"*" + f"{checksum:02X}".encode() + b"\r\n"


class TonnageMonitor(AsciiDevice):
    """Streams one $TON line per stroke."""

    kind = "tonnage"

    def __init__(
        self,
        link: SerialLink,
        *,
        seed: int = 0,
        time_scale: float = 1.0,
        faults: AsciiFaults | None = None,
        burst_probability: float = BURST_PROBABILITY,
        period_s: float = TONNAGE_PERIOD_S,
    ) -> None:
        super().__init__(link, seed=seed, time_scale=time_scale, faults=faults)
        if not 0.0 <= burst_probability <= 1.0:
            raise ValueError("burst probability must be within 0..1")
        if period_s <= 0:
            raise ValueError("stroke period must be > 0")
        self.burst_probability = burst_probability
        self.period_s = period_s

    def stroke_time(self, k: int) -> float:
        """Simulated time of stroke k (0-based)."""
        jitter = TONNAGE_JITTER_S * noise(self.seed, 1, k)
        return (k + 0.5) * self.period_s + jitter * self.period_s

    def build(self, payload: str, corrupt: bool) -> bytes:
        return tonnage_line(payload, corrupt)

    def _burst_at(self, k: int) -> int:
        burst = self._faults.burst
        if burst < 2:
            return 1
        draw = random.Random(self.seed * 7_919 + k).random()
        return burst if draw < self.burst_probability else 1

    async def _serve(self, port: LinePort) -> None:
        # Join the stream at the next stroke (a TCP client connecting late misses the past).
        now = self.sim_time()
        k = max(0, math.floor(now / self.period_s) - 1)
        while self.stroke_time(k) < now:
            k += 1
        while True:
            at = self.real_time(self.stroke_time(k))
            await sleep_until(at)
            slow = self._faults.slow_ms / 1000.0
            count = self._burst_at(k)
            for i in range(count):
                stroke = tonnage_stroke(self.seed, k + i)
                await self.emit(port, stroke.payload(), start=at + slow)
            k += count


# --------------------------------------------------------------------------- tempctl


@dataclass(frozen=True)
class ZoneReading:
    """One controller zone, in tenths."""

    pv: int
    sp: int
    out: int
    status: int


def tempctl_line(payload: str, corrupt: bool = False) -> bytes:
    """':' payload ',' LL CR LF; LL over the payload."""
    body = payload.encode("ascii")
    checksum = lrc(body) ^ (CORRUPT_XOR if corrupt else 0)
    return b":" + body + b"," + f"{checksum:02X}".encode() + b"\r\n"


class TemperatureController(AsciiDevice):
    """Answers ':AARD' for zones 01..zones."""

    kind = "tempctl"

    def __init__(
        self,
        link: SerialLink,
        *,
        zones: int = 2,
        seed: int = 0,
        time_scale: float = 1.0,
        faults: AsciiFaults | None = None,
    ) -> None:
        super().__init__(link, seed=seed, time_scale=time_scale, faults=faults)
        if not 1 <= zones <= MAX_ZONES:
            raise ValueError(f"zones must be within 1..{MAX_ZONES}")
        self.zones = zones

    def zone(self, address: int, t: float) -> ZoneReading:
        """Zone `address` (1-based) at simulated time t."""
        i = address - 1
        sp = SETPOINTS_C[i]
        break_offset = (419 * address + 97 * self.seed) % BREAK_PERIOD_S
        if (t - break_offset) % BREAK_PERIOD_S < BREAK_DURATION_S and t >= break_offset:
            return ZoneReading(round(SENSOR_BREAK_PV * 10), round(sp * 10), 0, STATUS_BREAK)
        pv = sp - (sp - AMBIENT_C) * math.exp(-t / ZONE_TAU_S[i])
        overshoot_offset = (137 * address + 53 * self.seed) % OVERSHOOT_PERIOD_S
        phase = (t - overshoot_offset) % OVERSHOOT_PERIOD_S
        if t >= overshoot_offset and phase < OVERSHOOT_DURATION_S:
            pv += OVERSHOOT_C * math.sin(math.pi * phase / OVERSHOOT_DURATION_S)
        pv += 0.3 * noise(self.seed, 10 + address, int(t * 10))
        out = 100 * (sp - AMBIENT_C) / 600 + 6 * (sp - pv)
        out = min(max(out, 0.0), 100.0)
        status = STATUS_HIGH if pv > sp + HIGH_ALARM_MARGIN_C else STATUS_OK
        return ZoneReading(round(pv * 10), round(sp * 10), round(out * 10), status)

    def build(self, payload: str, corrupt: bool) -> bytes:
        return tempctl_line(payload, corrupt)

    def answer(self, line: bytes, t: float | None = None) -> str | None:
        """Reply payload (between ':' and ',LL') for one request line, or None for silence."""
        start = line.rfind(b":")
        if start < 0:
            return None
        text = line[start + 1 :]
        digits = text[:2]
        if len(digits) != 2 or not digits.isdigit():
            return None
        address = int(digits)
        if not 1 <= address <= self.zones:
            return None
        aa = digits.decode()
        if text[2:] != b"RD":
            return f"{aa}ER"
        z = self.zone(address, self.sim_time() if t is None else t)
        return f"{aa}RD,{tenths(z.pv)},{tenths(z.sp)},{tenths(z.out)},{z.status}"

    async def _serve(self, port: LinePort) -> None:
        buf = bytearray()
        while True:
            chunk = await port.receive()
            assert chunk is not None
            buf += chunk
            while True:
                end = buf.find(b"\n")
                if end < 0:
                    break
                line = bytes(buf[:end]).rstrip(b"\r")
                del buf[: end + 1]
                payload = self.answer(line)
                if payload is None:
                    continue
                # Bytes behind the request in the same chunk were still on the line.
                line_end = port.rx_line_end - port.settings.line_time(len(buf))
                start = line_end + port.settings.turnaround + self._faults.slow_ms / 1000.0
                await self.emit(port, payload, start=start)
            if len(buf) > MAX_REQUEST_LINE:
                buf.clear()  # no terminator in sight: line noise, not a request


# --------------------------------------------------------------------------- CLI


def build_parser() -> argparse.ArgumentParser:
    """Command-line options of the ASCII device simulator."""
    p = argparse.ArgumentParser(
        prog="python -m simulators.serial.ascii",
        description="Legacy ASCII serial devices: tonnage monitor (streaming), temperature "
                    "controller (request/response).",
    )
    p.add_argument("device", choices=DEVICES, help="which device to simulate")
    add_link_arguments(p, baud=9600, parity="N")
    p.add_argument("--seed", type=int, default=0, help="seed of values and noise")
    p.add_argument("--time-scale", type=float, default=1.0,
                   help="simulated seconds per real second")
    p.add_argument("--zones", type=int, default=2, help="tempctl: zones 01..N (1..4)")
    p.add_argument("--burst", type=int, default=0,
                   help="tonnage: now and then send N lines back to back")
    add_fault_arguments(p)
    return p


def make_device(args: argparse.Namespace, link: SerialLink) -> AsciiDevice:
    """The device chosen on the command line (ValueError on bad options)."""
    faults = AsciiFaults(
        noise=args.noise, drop_every=args.drop_every, slow_ms=args.slow_ms,
        corrupt_every=args.corrupt_every, cut_every=args.cut_every, burst=args.burst,
        seed=args.seed,
    )
    if args.device == "tonnage":
        return TonnageMonitor(link, seed=args.seed, time_scale=args.time_scale, faults=faults)
    return TemperatureController(link, zones=args.zones, seed=args.seed,
                                 time_scale=args.time_scale, faults=faults)


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.burst and args.device != "tonnage":
        parser.error("--burst applies to the tonnage monitor only")
    try:
        device = make_device(args, link_from_args(args))
    except ValueError as exc:
        parser.error(str(exc))
    return asyncio.run(run_cli(device, args.device))


if __name__ == "__main__":
    sys.exit(main())
