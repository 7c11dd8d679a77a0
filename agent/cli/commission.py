"""Commissioning: one acquisition of a configured machine, printed or checked online.

`edge-agent read MACHINE` and `edge-agent validate --online` share this: connect with the
machine's own driver and config, acquire every poll group once (a push group waits one
publishing interval for its first values), and normalize as the daemon would.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from agent.config.loader import ConfigError, MachineConfig, error_at
from agent.core.model import Reading
from agent.acquire.normalize import GroupNormalizer


@dataclass(slots=True)
class Acquired:
    """One signal's outcome: its config position and the readings it produced."""

    index: int  # position in the machine file's `signals`
    signal: Any
    readings: list[Reading]


async def acquire_once(machine: MachineConfig, settle: float | None = None) -> list[Acquired]:
    """Connect, acquire every group once, close. Raises ConnectionError/TimeoutError/OSError
    when the device cannot be reached."""
    groups = machine.signals_by_group()
    intervals = {g: machine.model.poll[g] for g in groups}
    driver = machine.spec.factory(machine.model.connection, groups, intervals, {})
    position = {id(sig): i for i, sig in enumerate(machine.model.signals)}
    out: list[Acquired] = []
    await driver.connect()
    try:
        for group, signals in groups.items():
            normalizer = GroupNormalizer(signals)
            drained = await driver.drain(group)
            if drained is None:
                readings = normalizer.apply(await driver.read(group))
                by_signal = {r.signal: [r] for r in readings}
            else:
                # First values of a subscription arrive within about one publishing interval;
                # on a loaded gateway later: a signal still without one gets up to 3 s more
                # (an event field may rightly have none, so this is a cap, not a wait).
                wait = settle if settle is not None else min(intervals[group] * 2 + 0.5, 10.0)
                await asyncio.sleep(wait)
                by_signal = {}
                loop = asyncio.get_running_loop()
                patience = loop.time() + max(wait, 3.0)
                while True:
                    drained = await driver.drain(group)
                    assert drained is not None
                    for reading in normalizer.apply_sparse(drained.samples):
                        by_signal.setdefault(reading.signal, []).append(reading)
                    if len(by_signal) >= len(signals) or loop.time() >= patience:
                        break
                    await asyncio.sleep(0.2)
            for sig in signals:
                out.append(Acquired(position[id(sig)], sig, by_signal.get(sig.name, [])))
    finally:
        await driver.close()
    out.sort(key=lambda a: a.index)
    return out


def format_readings(acquired: list[Acquired]) -> list[str]:
    """One line per reading: name, value and unit, quality and reason, source time."""
    lines = []
    width = max((len(a.signal.name) for a in acquired), default=10)
    for a in acquired:
        if not a.readings:
            lines.append(f"{a.signal.name:<{width}}  (no value within the wait)")
        for r in a.readings:
            value = "null" if r.value is None else repr(r.value)
            unit = f" {r.unit}" if r.unit else ""
            status = r.quality + (f" ({r.reason})" if r.reason else "")
            stamp = time.strftime("%H:%M:%S", time.localtime(r.ts / 1e9)) + f".{r.ts // 1_000_000 % 1000:03d}"
            lines.append(f"{r.signal:<{width}}  {value}{unit}  {status}  {stamp}")
    return lines


def online_errors(machine: MachineConfig, acquired: list[Acquired]) -> list[ConfigError]:
    """Signals the live device says are misconfigured, as file:line errors (in the template
    that defines a signal, when it comes from one). Which reasons say so is the driver's
    knowledge: its DriverSpec's `mismatch_reasons`."""
    mismatch = machine.spec.mismatch_reasons
    errors = []
    for a in acquired:
        for r in a.readings:
            if r.reason and r.reason.startswith(mismatch):
                errors.append(error_at(machine.locate(("signals", a.index)),
                                       f"{a.signal.name}: the device says {r.reason}"))
                break
    return errors
