"""Read planner: coalesce the signals of one poll group into as few requests as possible.

Run once at start. Greedy left-to-right merging is optimal here: with a fixed maximum span
and a maximum gap, extending the current block whenever allowed never needs more blocks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

from drivers.modbus.config import Address


@dataclass(frozen=True, slots=True)
class PlanPoint:
    """One signal's place in the group: its index in config order and what it spans."""

    index: int
    address: Address
    count: int  # registers (hr/ir) or bits (co/di)


@dataclass(slots=True)
class Block:
    """One read request: a function table, a start address, a count, and its points."""

    table: str
    start: int
    count: int
    points: list[tuple[PlanPoint, int]] = field(default_factory=list)  # (point, offset)


def plan_reads(
    points: Sequence[PlanPoint],
    *,
    max_registers: int = 125,
    max_bits: int = 2000,
    max_gap: int = 16,
    max_bit_gap: int = 256,
) -> list[Block]:
    """Blocks covering every point, never crossing a table, within size and gap limits."""
    blocks: list[Block] = []
    ordered = sorted(points, key=lambda p: (p.address.table, p.address.index, -p.count))
    current: Block | None = None
    for point in ordered:
        table, start = point.address.table, point.address.index
        end = start + point.count
        bits = table in ("co", "di")
        limit, gap = (max_bits, max_bit_gap) if bits else (max_registers, max_gap)
        if point.count > limit:
            raise ValueError(
                f"{table}:{start} spans {point.count} which exceeds one request ({limit})"
            )
        if (
            current is not None
            and current.table == table
            and start - (current.start + current.count) <= gap
            and max(end, current.start + current.count) - current.start <= limit
        ):
            current.count = max(end, current.start + current.count) - current.start
        else:
            current = Block(table, start, point.count)
            blocks.append(current)
        current.points.append((point, start - current.start))
    return blocks
