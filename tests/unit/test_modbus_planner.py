"""Tests of the Modbus read planner (drivers.modbus.planner) and the group plans built on it."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from drivers.modbus.config import ModbusSignalFields, ModbusTcpConnection, parse_address
from drivers.modbus.driver import MODBUS_TCP, GroupPlan
from drivers.modbus.planner import Block, PlanPoint, plan_reads

REPO_ROOT = Path(__file__).resolve().parents[2]


def pts(*specs: tuple[str, int]) -> list[PlanPoint]:
    """PlanPoints from (address, count), indices in the given order."""
    return [PlanPoint(i, parse_address(addr), count) for i, (addr, count) in enumerate(specs)]


def shape(blocks: list[Block]) -> list[tuple[str, int, int]]:
    return [(b.table, b.start, b.count) for b in blocks]


def offsets(blocks: list[Block]) -> dict[int, tuple[int, int]]:
    """point index -> (block number, offset in block)."""
    out: dict[int, tuple[int, int]] = {}
    for n, block in enumerate(blocks):
        for point, offset in block.points:
            assert point.index not in out, "a point is planned twice"
            out[point.index] = (n, offset)
    return out


def check_invariants(points: list[PlanPoint], blocks: list[Block], *, max_registers: int = 125,
                     max_bits: int = 2000) -> None:
    """Every point in exactly one block, inside it, at the right offset, same table, in limits."""
    placed = offsets(blocks)
    assert sorted(placed) == sorted(p.index for p in points)
    by_index = {p.index: p for p in points}
    for n, block in enumerate(blocks):
        limit = max_bits if block.table in ("co", "di") else max_registers
        assert 1 <= block.count <= limit
        assert 0 <= block.start
        for point, offset in block.points:
            assert point is by_index[point.index] or point == by_index[point.index]
            assert point.address.table == block.table
            assert offset == point.address.index - block.start
            assert 0 <= offset and offset + point.count <= block.count
            assert placed[point.index][0] == n


# --------------------------------------------------------------------------- coalescing


def test_adjacent_registers_make_one_block() -> None:
    points = pts(("hr:0", 1), ("hr:1", 1), ("hr:2", 2), ("hr:4", 4), ("hr:8", 1))
    blocks = plan_reads(points)
    assert shape(blocks) == [("hr", 0, 9)]
    assert offsets(blocks) == {0: (0, 0), 1: (0, 1), 2: (0, 2), 3: (0, 4), 4: (0, 8)}
    check_invariants(points, blocks)


def test_single_point() -> None:
    blocks = plan_reads(pts(("ir:300", 2)))
    assert shape(blocks) == [("ir", 300, 2)]
    assert offsets(blocks) == {0: (0, 0)}


def test_no_points_no_blocks() -> None:
    assert plan_reads([]) == []


def test_gap_equal_to_max_gap_joins() -> None:
    # hr:0 ends at 1; hr:17 leaves registers 1..16 unused: a gap of 16.
    blocks = plan_reads(pts(("hr:0", 1), ("hr:17", 1)), max_gap=16)
    assert shape(blocks) == [("hr", 0, 18)]
    assert offsets(blocks) == {0: (0, 0), 1: (0, 17)}


def test_gap_larger_than_max_gap_splits() -> None:
    blocks = plan_reads(pts(("hr:0", 1), ("hr:18", 1)), max_gap=16)
    assert shape(blocks) == [("hr", 0, 1), ("hr", 18, 1)]
    assert offsets(blocks) == {0: (0, 0), 1: (1, 0)}


def test_gap_is_measured_from_the_end_of_a_wide_point() -> None:
    # uint64 at hr:10 ends at 14; hr:19 is a gap of 5.
    assert shape(plan_reads(pts(("hr:10", 4), ("hr:19", 2)), max_gap=5)) == [("hr", 10, 11)]
    assert shape(plan_reads(pts(("hr:10", 4), ("hr:20", 2)), max_gap=5)) == [
        ("hr", 10, 4), ("hr", 20, 2)]


def test_max_gap_zero_joins_only_contiguous_points() -> None:
    blocks = plan_reads(pts(("hr:0", 2), ("hr:2", 1), ("hr:4", 1)), max_gap=0)
    assert shape(blocks) == [("hr", 0, 3), ("hr", 4, 1)]
    assert offsets(blocks) == {0: (0, 0), 1: (0, 2), 2: (1, 0)}


def test_bit_gap_uses_max_bit_gap_not_max_gap() -> None:
    points = pts(("co:0", 1), ("co:200", 1))
    assert shape(plan_reads(points, max_gap=16, max_bit_gap=256)) == [("co", 0, 201)]
    # co:0 ends at 1, so co:200 leaves a gap of 199 unused coils
    assert shape(plan_reads(points, max_gap=16, max_bit_gap=199)) == [("co", 0, 201)]
    assert shape(plan_reads(points, max_gap=300, max_bit_gap=198)) == [("co", 0, 1), ("co", 200, 1)]


def test_register_gap_uses_max_gap_not_max_bit_gap() -> None:
    points = pts(("hr:0", 1), ("hr:100", 1))
    assert shape(plan_reads(points, max_gap=16, max_bit_gap=256)) == [("hr", 0, 1), ("hr", 100, 1)]
    assert shape(plan_reads(points, max_gap=99, max_bit_gap=0)) == [("hr", 0, 101)]


# --------------------------------------------------------------------------- size limits


def test_125_registers_fit_in_one_request() -> None:
    blocks = plan_reads(pts(("hr:0", 1), ("hr:124", 1)), max_gap=124)
    assert shape(blocks) == [("hr", 0, 125)]


def test_a_126_register_span_splits() -> None:
    points = pts(("hr:0", 1), ("hr:125", 1))
    blocks = plan_reads(points, max_gap=124)
    assert shape(blocks) == [("hr", 0, 1), ("hr", 125, 1)]
    check_invariants(points, blocks)


def test_a_wide_point_ending_past_125_starts_a_new_block() -> None:
    # hr:0..121 then a uint64 at hr:122 would end at 126.
    points = pts(("hr:0", 1), ("hr:121", 1), ("hr:122", 4))
    blocks = plan_reads(points, max_gap=124)
    assert shape(blocks) == [("hr", 0, 122), ("hr", 122, 4)]
    check_invariants(points, blocks)


def test_many_contiguous_registers_never_exceed_125() -> None:
    points = [PlanPoint(i, parse_address(f"hr:{2 * i}"), 2) for i in range(200)]  # 400 regs
    blocks = plan_reads(points)
    check_invariants(points, blocks)
    assert [b.count for b in blocks] == [124, 124, 124, 28]  # 62 float32 fit, not 62.5
    assert [b.start for b in blocks] == [0, 124, 248, 372]


def test_configured_max_registers_is_never_exceeded() -> None:
    points = [PlanPoint(i, parse_address(f"ir:{i}"), 1) for i in range(50)]
    blocks = plan_reads(points, max_registers=10)
    assert shape(blocks) == [("ir", 0, 10), ("ir", 10, 10), ("ir", 20, 10), ("ir", 30, 10),
                             ("ir", 40, 10)]
    check_invariants(points, blocks, max_registers=10)


def test_configured_max_registers_with_wide_points() -> None:
    # three float32 in 6 registers with max 5: the third cannot join
    points = pts(("hr:0", 2), ("hr:2", 2), ("hr:4", 2))
    blocks = plan_reads(points, max_registers=5)
    assert shape(blocks) == [("hr", 0, 4), ("hr", 4, 2)]
    check_invariants(points, blocks, max_registers=5)


def test_2000_bits_fit_and_2001_split() -> None:
    assert shape(plan_reads(pts(("di:0", 1), ("di:1999", 1)), max_bit_gap=1999)) == [
        ("di", 0, 2000)]
    assert shape(plan_reads(pts(("di:0", 1), ("di:2000", 1)), max_bit_gap=1999)) == [
        ("di", 0, 1), ("di", 2000, 1)]


def test_many_coils_never_exceed_2000_bits() -> None:
    points = [PlanPoint(i, parse_address(f"co:{i}"), 1) for i in range(4500)]
    blocks = plan_reads(points)
    check_invariants(points, blocks)
    assert shape(blocks) == [("co", 0, 2000), ("co", 2000, 2000), ("co", 4000, 500)]


def test_configured_max_bits_is_never_exceeded() -> None:
    points = [PlanPoint(i, parse_address(f"di:{i}"), 1) for i in range(25)]
    blocks = plan_reads(points, max_bits=8)
    assert [b.count for b in blocks] == [8, 8, 8, 1]
    check_invariants(points, blocks, max_bits=8)


def test_bit_tables_are_not_limited_to_125() -> None:
    assert shape(plan_reads(pts(("co:0", 1), ("co:150", 1)), max_bit_gap=200)) == [("co", 0, 151)]


def test_a_point_larger_than_max_registers_raises() -> None:
    with pytest.raises(ValueError):
        plan_reads(pts(("hr:0", 126)))
    with pytest.raises(ValueError):
        plan_reads(pts(("hr:0", 1), ("hr:10", 8)), max_registers=5)
    # exactly the limit is fine
    assert shape(plan_reads(pts(("hr:0", 125)))) == [("hr", 0, 125)]
    assert shape(plan_reads(pts(("hr:0", 5)), max_registers=5)) == [("hr", 0, 5)]


def test_a_point_larger_than_max_bits_raises() -> None:
    with pytest.raises(ValueError):
        plan_reads(pts(("co:0", 2001)))
    with pytest.raises(ValueError):
        plan_reads(pts(("di:0", 9)), max_bits=8)


def test_a_string_longer_than_max_registers_fails_the_group_plan() -> None:
    conn = ModbusTcpConnection.model_validate(
        {"protocol": "modbus-tcp", "host": "127.0.0.1", "max_registers": 10})
    sig = ModbusSignalFields.model_validate({"address": "hr:0", "type": "string(21)"})  # 11 regs
    with pytest.raises(ValueError):
        GroupPlan([sig], conn)
    ok = ModbusSignalFields.model_validate({"address": "hr:0", "type": "string(20)"})  # 10 regs
    assert [(b.start, b.count) for b, _ in GroupPlan([ok], conn).blocks] == [(0, 10)]


# --------------------------------------------------------------------------- tables


def test_tables_are_never_crossed() -> None:
    # the same numbers in all four tables: four requests
    points = pts(("hr:10", 1), ("ir:10", 1), ("co:10", 1), ("di:10", 1),
                 ("hr:11", 1), ("ir:11", 1), ("co:11", 1), ("di:11", 1))
    blocks = plan_reads(points)
    assert sorted(shape(blocks)) == [("co", 10, 2), ("di", 10, 2), ("hr", 10, 2), ("ir", 10, 2)]
    check_invariants(points, blocks)
    for block in blocks:
        assert {p.address.table for p, _ in block.points} == {block.table}


def test_register_bit_stays_in_its_register_table() -> None:
    points = pts(("hr:5.3", 1), ("ir:5.3", 1), ("ir:6", 1))
    blocks = plan_reads(points)
    assert sorted(shape(blocks)) == [("hr", 5, 1), ("ir", 5, 2)]
    check_invariants(points, blocks)


# --------------------------------------------------------------------------- overlaps, order


def test_overlapping_points_share_a_block() -> None:
    # uint32 at hr:10..11, bit 3 of hr:10, uint16 at hr:11
    points = pts(("hr:10", 2), ("hr:10.3", 1), ("hr:11", 1))
    blocks = plan_reads(points)
    assert shape(blocks) == [("hr", 10, 2)]
    assert offsets(blocks) == {0: (0, 0), 1: (0, 0), 2: (0, 1)}
    check_invariants(points, blocks)


def test_point_inside_an_earlier_wide_point() -> None:
    # float64 at hr:0..3 and uint16 at hr:2: the block stays 4 long
    points = pts(("hr:2", 1), ("hr:0", 4))
    blocks = plan_reads(points, max_gap=0)
    assert shape(blocks) == [("hr", 0, 4)]
    assert offsets(blocks) == {0: (0, 2), 1: (0, 0)}


def test_same_address_twice() -> None:
    points = pts(("hr:7", 1), ("hr:7", 1), ("hr:7", 2))
    blocks = plan_reads(points)
    assert shape(blocks) == [("hr", 7, 2)]
    assert offsets(blocks) == {0: (0, 0), 1: (0, 0), 2: (0, 0)}


def test_unsorted_input() -> None:
    points = pts(("hr:40", 2), ("co:3", 1), ("hr:0", 1), ("ir:2", 1), ("hr:20", 2),
                 ("co:0", 1), ("hr:100", 4), ("ir:0", 1))
    blocks = plan_reads(points, max_gap=20)
    assert sorted(shape(blocks)) == [("co", 0, 4), ("hr", 0, 42), ("hr", 100, 4), ("ir", 0, 3)]
    placed = offsets(blocks)
    starts = {n: b.start for n, b in enumerate(blocks)}
    expected = {0: ("hr", 40), 1: ("co", 3), 2: ("hr", 0), 3: ("ir", 2), 4: ("hr", 20),
                5: ("co", 0), 6: ("hr", 100), 7: ("ir", 0)}
    for index, (table, address) in expected.items():
        n, offset = placed[index]
        assert blocks[n].table == table
        assert starts[n] + offset == address
    check_invariants(points, blocks)


def test_input_order_does_not_change_the_plan() -> None:
    rng = random.Random(7)
    specs = [("hr", rng.randrange(0, 600), rng.choice([1, 2, 4])) for _ in range(60)]
    specs += [("di", rng.randrange(0, 5000), 1) for _ in range(60)]
    points = [PlanPoint(i, parse_address(f"{t}:{a}"), c) for i, (t, a, c) in enumerate(specs)]
    reference = sorted(shape(plan_reads(points)))
    for _ in range(5):
        shuffled = points[:]
        rng.shuffle(shuffled)
        blocks = plan_reads(shuffled)
        assert sorted(shape(blocks)) == reference
        check_invariants(points, blocks)


@pytest.mark.parametrize("seed", range(10))
def test_random_plans_respect_all_limits(seed: int) -> None:
    rng = random.Random(seed)
    max_registers = rng.choice([4, 10, 60, 125])
    max_bits = rng.choice([8, 100, 2000])
    max_gap = rng.randrange(0, 30)
    max_bit_gap = rng.randrange(0, 300)
    points = []
    for i in range(150):
        table = rng.choice(["hr", "ir", "co", "di"])
        if table in ("co", "di"):
            points.append(PlanPoint(i, parse_address(f"{table}:{rng.randrange(0, 6000)}"), 1))
        else:
            count = rng.choice([c for c in (1, 2, 4) if c <= max_registers])
            points.append(PlanPoint(i, parse_address(f"{table}:{rng.randrange(0, 1000)}"), count))
    blocks = plan_reads(points, max_registers=max_registers, max_bits=max_bits,
                        max_gap=max_gap, max_bit_gap=max_bit_gap)
    check_invariants(points, blocks, max_registers=max_registers, max_bits=max_bits)
    # No block reads unused registers at either end.
    for block in blocks:
        assert min(p.address.index for p, _ in block.points) == block.start
        assert max(p.address.index + p.count for p, _ in block.points) == block.start + block.count
    # Greedy merging: two consecutive blocks of one table could not have been one block.
    by_table: dict[str, list[Block]] = {}
    for block in blocks:
        by_table.setdefault(block.table, []).append(block)
    for table, table_blocks in by_table.items():
        limit, gap = (max_bits, max_bit_gap) if table in ("co", "di") else (max_registers, max_gap)
        table_blocks.sort(key=lambda b: b.start)
        for a, b in zip(table_blocks, table_blocks[1:]):
            first = max(p.count for p, off in b.points if off == 0)
            end = max(a.start + a.count, b.start + first)
            assert b.start - (a.start + a.count) > gap or end - a.start > limit


# --------------------------------------------------------------------------- group plans


def make_conn(**extra: object) -> ModbusTcpConnection:
    return ModbusTcpConnection.model_validate({"protocol": "modbus-tcp", "host": "127.0.0.1",
                                              **extra})


def make_signals(*specs: dict[str, object]) -> list[ModbusSignalFields]:
    return [ModbusSignalFields.model_validate(spec) for spec in specs]


def test_group_plan_uses_register_counts_of_each_type() -> None:
    signals = make_signals(
        {"address": "hr:0", "type": "uint64"},      # 0..3
        {"address": "hr:4", "type": "string(5)"},   # 4..6
        {"address": "hr:7", "type": "float32"},     # 7..8
        {"address": "hr:9.15"},                     # 9
        {"address": "co:0"},
        {"address": "co:7"},
    )
    plan = GroupPlan(signals, make_conn())
    assert plan.size == 6
    assert sorted((b.table, b.start, b.count) for b, _ in plan.blocks) == [
        ("co", 0, 8), ("hr", 0, 10)]


def test_group_plan_honours_connection_limits() -> None:
    signals = make_signals(*({"address": f"hr:{i}"} for i in range(30)),
                           *({"address": f"di:{i}"} for i in range(0, 40, 10)))
    plan = GroupPlan(signals, make_conn(max_registers=10, max_bits=15, max_bit_gap=100))
    assert sorted((b.table, b.start, b.count) for b, _ in plan.blocks) == [
        ("di", 0, 11), ("di", 20, 11), ("hr", 0, 10), ("hr", 10, 10), ("hr", 20, 10)]


def test_group_plan_honours_max_gap() -> None:
    signals = make_signals({"address": "hr:0"}, {"address": "hr:5"})
    assert len(GroupPlan(signals, make_conn(max_gap=4)).blocks) == 1
    assert len(GroupPlan(signals, make_conn(max_gap=3)).blocks) == 2


def test_driver_request_count_per_group() -> None:
    groups = {
        "a": make_signals({"address": "hr:0"}, {"address": "hr:1"}),
        "b": make_signals({"address": "hr:0"}, {"address": "ir:0"}, {"address": "co:0"},
                          {"address": "di:0"}),
    }
    driver = MODBUS_TCP.factory(make_conn(), groups, {}, {})
    assert driver.request_count("a") == 1
    assert driver.request_count("b") == 4
    assert driver.connected is False


# --------------------------------------------------------------------------- example config


def test_example_press_config_needs_few_requests() -> None:
    from agent.config.loader import load_config
    from drivers.registry import DRIVERS

    loaded = load_config(REPO_ROOT / "config" / "examples", DRIVERS)
    press = next(m for m in loaded.machines if m.id == "press-01")
    groups = press.signals_by_group()
    assert set(groups) == {"fast", "slow"}
    conn = press.model.connection
    fast = GroupPlan(groups["fast"], conn)
    slow = GroupPlan(groups["slow"], conn)
    assert fast.size == len(groups["fast"])
    assert slow.size == len(groups["slow"])
    assert len(fast.blocks) <= 2
    assert len(slow.blocks) <= 3
    driver = press.spec.factory(conn, groups, {}, {})
    assert driver.request_count("fast") == len(fast.blocks)
    assert driver.request_count("slow") == len(slow.blocks)
    # every planned block respects the request limits
    for plan in (fast, slow):
        for block, _ in plan.blocks:
            assert block.count <= (2000 if block.table in ("co", "di") else 125)
        placed = sorted(p.index for block, _ in plan.blocks for p, _ in block.points)
        assert placed == list(range(plan.size))
