"""Modbus decode + normalize throughput on one core, without network.

Builds one machine with N mixed-type signals (a machine file loaded through the agent's own
config loader), plans its poll group once with the driver's planner and codecs, then for
`--duration` seconds decodes synthetic register blocks into RawSamples (as
ModbusDriver.read does, minus the transport) and normalizes them into Readings with the
agent's GroupNormalizer. Prints figures; asserts nothing.

    python bench/modbus_decode.py --signals 1000 --duration 10
"""

from __future__ import annotations

import argparse
import gc
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from agent.config.loader import load_config  # noqa: E402
from agent.acquire.normalize import GroupNormalizer  # noqa: E402
from drivers.base import RawSample  # noqa: E402
from drivers.modbus.driver import GroupPlan  # noqa: E402
from drivers.registry import DRIVERS  # noqa: E402

# (type, registers, extra fields): cycled through to make the mix.
MIX: list[tuple[str, int, str]] = [
    ("uint16", 1, ""),
    ("int16", 1, ", scale: 0.1, unit: kN"),
    ("float32", 2, ""),
    ("uint32", 2, ", order: CDAB"),
    ("int32", 2, ", scale: 0.01"),
    ("float32", 2, ", order: DCBA, deadband: 0.5"),
    ("float64", 4, ""),
    ("uint16", 1, ", enum: {0: idle, 1: running, 2: fault, 3: setup}"),
    ("bit", 1, ""),  # hr:N.b
    ("int64", 4, ", order: BADC"),
    ("uint16", 1, ", report: every_poll"),
    ("string", 4, ""),  # string(8)
]


def machine_file(signals: int) -> str:
    lines = ["id: decode-bench", "family: press", "area: bench", "line: line-1",
             "connection: {protocol: modbus-tcp, host: 127.0.0.1, port: 502, unit_id: 1}",
             "poll: {main: 1s}", "signals:"]
    register, bit_reg, coil = 0, None, 0
    for s in range(signals):
        kind, count, extra = MIX[s % len(MIX)]
        name = f"x.bench.s{s:04d}"
        if s % 10 == 9:  # every tenth signal: a coil
            lines.append(f"  - {{name: {name}, address: \"co:{coil}\"}}")
            coil += 1
            continue
        if kind == "bit":
            if bit_reg is None or bit_reg[1] == 16:
                bit_reg = (register, 0)
                register += 1
            lines.append(f"  - {{name: {name}, address: \"hr:{bit_reg[0]}.{bit_reg[1]}\"{extra}}}")
            bit_reg = (bit_reg[0], bit_reg[1] + 1)
            continue
        type_text = "string(8)" if kind == "string" else kind
        lines.append(f"  - {{name: {name}, address: \"hr:{register}\", type: {type_text}{extra}}}")
        register += count
    return "\n".join(lines) + "\n"


def synthetic_words(block: Any, variant: int, rng: random.Random) -> list[int] | list[bool]:
    """A reply for `block`: registers that decode to finite values (no NaN floats), or bits."""
    if block.table in ("co", "di"):
        return [rng.random() < 0.5 for _ in range(block.count)]
    # 0x3F80..0x4100 as every high word keeps float32/float64 finite and plausible; low words
    # vary per variant so values change between polls (as a live device's would).
    words = []
    for i in range(block.count):
        words.append(0x4000 + ((i * 7 + variant) % 0x100) if i % 2 == 0
                     else rng.randrange(0, 0x10000))
    return words


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--signals", type=int, default=1000)
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds")
    parser.add_argument("--variants", type=int, default=8,
                        help="distinct synthetic replies per block, cycled")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="edge-agent-bench-decode-"))
    (work / "machines.d").mkdir()
    (work / "agent.yaml").write_text("agent: {id: bench, site: bench}\n")
    (work / "machines.d" / "decode.yaml").write_text(machine_file(args.signals))
    config = load_config(work, DRIVERS)
    machine = config.machines[0]
    groups = machine.signals_by_group()
    signals = groups["main"]
    plan = GroupPlan(signals, machine.model.connection)
    normalizer = GroupNormalizer(signals)

    rng = random.Random(1)
    replies = [[synthetic_words(block, v, rng) for block, _ in plan.blocks]
               for v in range(args.variants)]
    kinds: dict[str, int] = {}
    for sig in signals:
        kinds[sig.resolved_type()] = kinds.get(sig.resolved_type(), 0) + 1
    size = plan.size
    blocks = [codec for _, codec in plan.blocks]

    def poll(variant: int) -> int:
        # What ModbusDriver.read does per poll once the words are in, then the normalizer.
        samples: list[RawSample | None] = [None] * size
        for codec, words in zip(blocks, replies[variant]):
            ts = time.time_ns()
            for index, value in codec.decode(words):
                samples[index] = RawSample(value, ts)
        return len(normalizer.apply(samples))  # type: ignore[arg-type]

    for v in range(args.variants * 4):  # warm up (and settle report by exception)
        poll(v % args.variants)
    gc.collect()
    polls = published = 0
    cpu0, t0 = time.process_time(), time.perf_counter()
    deadline = t0 + args.duration
    while True:
        for v in range(args.variants):
            published += poll(v)
        polls += args.variants
        if time.perf_counter() >= deadline:
            break
    cpu, elapsed = time.process_time() - cpu0, time.perf_counter() - t0
    tags = polls * size
    # The process is single-threaded: CPU time / wall time says how much of one core it got
    # (less than 100% means other work on the machine took the core at times).
    print(f"workload            1 machine x {size} signals in {len(plan.blocks)} blocks "
          f"({', '.join(f'{k} {n}' for k, n in sorted(kinds.items()))}); "
          f"{polls:,} polls in {elapsed:.1f} s, one process, {cpu / elapsed * 100:.0f}% of a core")
    print(f"tags/s decode+normalize  {tags / cpu:,.0f} per CPU-second "
          f"({tags / elapsed:,.0f} per wall second)")
    print(f"us per tag          {cpu / tags * 1e6:.2f} (CPU; "
          f"{published / polls:.0f} of {size} readings per poll survive report by exception)")
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
