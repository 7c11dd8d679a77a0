"""Edge derivations (agent/acquire/derive/): counters, rates, machine execution, cycles and their
features, and the engine that feeds them from readings and events."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from agent.config.derive import DeriveConfig
from agent.acquire.derive.counters import MonotonicCount, RateMeter, Unwrapper
from agent.acquire.derive.cycles import CycleDetector
from agent.acquire.derive.engine import Derivations
from agent.acquire.derive.execution import ExecutionMapper, matches
from agent.acquire.derive.store import CounterStore
from agent.core.model import BAD, GOOD, Reading
from drivers.base import COMM_FAILURE

S = 1_000_000_000
T0 = 1_795_462_093_000_000_000


def at(t: float) -> int:
    return T0 + int(t * S)


def derive(**block: Any) -> DeriveConfig:
    return DeriveConfig.model_validate(block)


def r(name: str, value: Any, t: float, quality: str = GOOD) -> Reading:
    return Reading(name, value, None, quality, None if quality == GOOD else COMM_FAILURE, at(t))


# ---- counters -------------------------------------------------------------------------------

def test_unwrapper_steps_wraps_and_resets() -> None:
    u = Unwrapper(65536)
    assert u.step(65530) is None  # the first value is a baseline
    assert u.step(65534) == 4
    assert u.step(3) == 5  # wrapped: 65535, 0, 1, 2, 3 -> 65534 + 5
    assert u.step(3) == 0
    assert u.step(40000) == 39997
    assert u.step(2) == 0  # a drop from the middle of the range is a reset, not a wrap
    assert u.resets == 1
    plain = Unwrapper(None)
    assert plain.step(100) is None
    assert plain.step(0) == 0  # reset to zero: nothing counted
    assert plain.step(5) == 5
    assert plain.step(3) == 0  # a reset adds nothing; counting goes on from 3
    assert plain.step(4) == 1
    assert plain.resets == 2


def test_a_counter_that_steps_back_adds_nothing_and_the_rate_stays_plausible() -> None:
    """A press restarts and its stroke counter comes back 4 counts lower (2,345,685 ->
    2,345,681): no increments, the rate stays at the real 30 strokes a minute, and the
    total goes on by the strokes made after the restart."""
    rate, total = RateMeter(60.0, None), MonotonicCount(None)
    raw, t = 2_345_655, 0.0
    for _ in range(31):  # 30 strokes a minute: one every 2 s
        rate.update(raw, at(t))
        total.update(raw)
        raw, t = raw + 1, t + 2
    before = total.total
    assert before is not None and rate.rate(at(t - 2)) == 30.0
    raw -= 5  # the restart: the last value read was 2,345,685, now 2,345,681
    rates = []
    for _ in range(40):
        rate.update(raw, at(t))
        total.update(raw)
        rates.append(rate.rate(at(t)))
        raw, t = raw + 1, t + 2
    assert max(r for r in rates if r is not None) <= 30.0
    assert total.total == before + 39  # the 39 strokes after the restart, nothing else
    assert rate.resets == total.resets == 1


def test_a_counter_reset_is_said_once_on_the_event_stream() -> None:
    d = Derivations(derive(availability=False,
                           counters={"part_count.total": {"counter": "x.parts"}},
                           rates={"press.stroke_rate": {"counter": "x.parts"}}))
    records = []
    for i, raw in enumerate([100, 101, 102, 3, 4]):
        records += d.step([r("x.parts", raw, i)], [], True, at(i), push=False)[1]
    assert records == [{"event": "counter.reset", "ts": at(3),
                        "fields": {"signal": "x.parts", "from": 102, "to": 3}}]


def test_monotonic_count_survives_wraps_and_resets() -> None:
    c = MonotonicCount(65536)
    assert [c.update(v) for v in (65000, 65535, 0, 10, 0, 4)] == [65000, 65535, 65536, 65546,
                                                                   65546, 65550]


def test_rate_from_counter_increments() -> None:
    m = RateMeter(60.0, None)
    m.update(100, at(0))
    assert m.rate(at(0)) is None  # nothing known yet
    m.update(101, at(2))
    assert m.rate(at(2)) is None  # one increment: no interval yet
    for i in range(2, 31):
        m.update(100 + i, at(2 * i))
    assert m.rate(at(60)) == 30.0
    assert m.rate(at(63.9)) == 30.0
    assert m.rate(at(64.1)) == 0.0  # no stroke for twice the interval: stopped
    idle = RateMeter(10.0, None)
    idle.update(5, at(0))
    assert idle.rate(at(9)) is None
    assert idle.rate(at(11)) == 0.0  # a whole window without an increment


def test_rate_window_forgets_old_increments() -> None:
    m = RateMeter(10.0, None)
    n = 0
    for i in range(20):  # 60 per minute for 20 s ...
        m.update(n, at(i))
        n += 1
    for i in range(30):  # ... then 120 per minute for 15 s
        m.update(n, at(20 + 0.5 * i))
        n += 1
    assert m.rate(at(34.5)) == 120.0  # only the last 10 s count


# ---- execution ------------------------------------------------------------------------------

def test_execution_map_and_rules() -> None:
    by_map = ExecutionMapper(derive(execution={
        "signal": "x.state", "map": {"running": "ACTIVE", "alarm": "INTERRUPTED", 0: "STOPPED"},
        "otherwise": "READY"}).execution)  # type: ignore[arg-type]
    assert by_map.evaluate({}) is None
    assert by_map.evaluate({"x.state": "running"}) == "ACTIVE"
    assert by_map.evaluate({"x.state": "alarm"}) == "INTERRUPTED"
    assert by_map.evaluate({"x.state": 0}) == "STOPPED"
    assert by_map.evaluate({"x.state": False}) == "READY"  # false is not 0 here
    assert by_map.evaluate({"x.state": "setup"}) == "READY"
    by_rules = ExecutionMapper(derive(execution={"rules": [
        {"when": {"machine.estop": True}, "then": "STOPPED"},
        {"when": {"alarm.active": True}, "then": "INTERRUPTED"},
        {"when": {"motor.running": True, "x.mode": ["auto", "single"]}, "then": "ACTIVE"},
    ], "otherwise": "READY"}).execution)  # type: ignore[arg-type]
    assert by_rules.evaluate({"machine.estop": True, "alarm.active": True}) == "STOPPED"
    assert by_rules.evaluate({"alarm.active": True}) == "INTERRUPTED"
    assert by_rules.evaluate({"motor.running": True, "x.mode": "single"}) == "ACTIVE"
    assert by_rules.evaluate({"motor.running": True, "x.mode": "inch"}) == "READY"
    assert by_rules.evaluate({"motor.running": True}) == "READY"  # x.mode unknown: no match


def test_matches_tells_booleans_from_numbers() -> None:
    assert matches(1, [1]) and matches(1.0, [1]) and matches(True, [True])
    assert not matches(True, [1]) and not matches(1, [True]) and not matches(None, [None])


@pytest.mark.parametrize("block,message", [
    ({"execution": {"signal": "x.s", "map": {1: "RUNNING"}}}, "'RUNNING' is not one of READY"),
    ({"execution": {"signal": "x.s"}}, "signal and map go together"),
    ({"execution": {"signal": "x.s", "map": {1: "ACTIVE"}, "rules": [
        {"when": {"x.s": 1}, "then": "ACTIVE"}]}}, "either signal \\+ map, or rules"),
    ({"execution": {"rules": [{"when": {"x.s": 1}, "then": "ACTIVE"}], "otherwise": "IDLE"}},
     "'IDLE' is not one of"),
    ({"cycle": {"trigger": {"counter": "cycle.count", "signal": "x.s", "to": 1}}},
     "exactly one of counter"),
    ({"cycle": {"trigger": {"signal": "x.s"}}}, "signal and to go together"),
    ({"cycle": {"trigger": {"event": "e", "rollover": 10}}}, "rollover applies to a counter"),
    ({"cycle": {"trigger": {"event": "e"}, "features": {"f": {"signal": "a", "field": "b"}}}},
     "either signal or field"),
    ({"cycle": {"trigger": {"event": "e"}, "features": {"f": {"field": "b", "take": "max"}}}},
     "take applies to signals"),
    ({"rates": {"press.strokes_per_minute": {"counter": "cycle.count"}}}, "not in the vocabulary"),
])
def test_derive_block_errors(block: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        derive(**block)


# ---- cycles ---------------------------------------------------------------------------------

def press_cycles() -> CycleDetector:
    return CycleDetector(derive(cycle={"trigger": {"counter": "cycle.count"}, "features": {
        "peak": {"signal": "x.peak"},  # end
        "load_max": {"signal": "x.load", "take": "max"},
        "load_min": {"signal": "x.load", "take": "min"},
        "load_mean": {"signal": "x.load", "take": "mean"},
        "parts": {"signal": "x.parts", "take": "delta"},
        "program": {"signal": "x.program", "take": "start"},
    }}).cycle)  # type: ignore[arg-type]


def feed(c: CycleDetector, t: float, **values: Any) -> dict[str, Any] | None:
    latest.update({k.replace("_", "."): v for k, v in values.items()})
    for name, value in values.items():
        c.update(name.replace("_", "."), value, at(t))
    return c.check(latest, at(t))


latest: dict[str, Any] = {}


def test_counter_cycles_with_features() -> None:
    latest.clear()
    c = press_cycles()
    assert feed(c, 0, cycle_count=100, x_peak=1.0, x_load=10.0, x_parts=5,
                x_program="P1") is None  # a baseline
    assert feed(c, 1, x_load=30.0) is None
    first = feed(c, 2, cycle_count=101, x_peak=2.0, x_load=20.0, x_parts=6)
    assert first is not None and first["event"] == "machine.cycle" and first["ts"] == at(2)
    f = first["fields"]
    # The first cycle after a start began before anyone looked: no start, no cycle time.
    assert (f["cycle"], f["start"], f["end"], f["cycle_time"]) == (101, None, at(2), None)
    assert f["features"] == {"peak": 2.0, "load_max": 30.0, "load_min": 10.0,
                             "load_mean": pytest.approx((10 * 1 + 30 * 1) / 2),
                             "parts": 1, "program": "P1"}
    assert "missed" not in f
    assert feed(c, 3, x_program="P2", x_load=40.0) is None
    second = feed(c, 4.5, cycle_count=102, x_peak=3.0)
    assert second is not None
    g = second["fields"]
    assert (g["cycle"], g["start"], g["end"], g["cycle_time"]) == (102, at(2), at(4.5), 2.5)
    # The window holds the value the cycle began with (20) until the next reading (40).
    assert g["features"]["load_max"] == 40.0 and g["features"]["load_min"] == 20.0
    assert g["features"]["load_mean"] == pytest.approx((20 * 1 + 40 * 1.5) / 2.5)
    assert g["features"]["program"] == "P1"  # at the start of this cycle
    assert g["features"]["parts"] == 0
    jump = feed(c, 9, cycle_count=105)
    assert jump is not None and jump["fields"]["missed"] == 2 and jump["fields"]["cycle"] == 105
    assert feed(c, 10, cycle_count=105) is None  # unchanged
    assert feed(c, 11, cycle_count=0) is None  # reset: a new baseline
    restarted = feed(c, 12, cycle_count=1)
    assert restarted is not None and restarted["fields"]["start"] is None


def test_edge_and_event_triggers() -> None:
    latest.clear()
    edge = CycleDetector(derive(cycle={"trigger": {"signal": "x.state", "to": ["ejecting"]},
                                       "features": {"e": {"signal": "x.energy"}}}).cycle)  # type: ignore[arg-type]
    assert feed(edge, 0, x_state="ejecting", x_energy=1.0) is None  # baseline
    assert feed(edge, 1, x_state="forging", x_energy=2.0) is None
    one = feed(edge, 2, x_state="ejecting", x_energy=3.0)
    assert one is not None and one["fields"]["cycle"] == 1 and one["fields"]["start"] is None
    assert feed(edge, 3, x_state="ejecting") is None  # no change, no edge
    assert feed(edge, 4, x_state="forging") is None
    two = feed(edge, 5, x_state="ejecting")
    assert two is not None and two["fields"]["cycle"] == 2 and two["fields"]["cycle_time"] == 3.0
    event = CycleDetector(derive(cycle={"trigger": {"event": "shot"}, "features": {
        "cushion": {"field": "Cushion"}, "missing": {"field": "Nope"}}}).cycle)  # type: ignore[arg-type]
    assert event.on_event("alarms", {"Cushion": 1}, at(1)) is None
    rec = event.on_event("shot", {"Cushion": 4.2}, at(2))
    assert rec is not None and rec["fields"]["features"] == {"cushion": 4.2, "missing": None}


# ---- the engine -----------------------------------------------------------------------------

def test_engine_availability_execution_and_events() -> None:
    d = Derivations(derive(execution={"signal": "x.state", "map": {1: "ACTIVE", 0: "STOPPED"}},
                           heartbeat="10s"))
    assert d.watched == {"x.state"}
    out, records = d.step([r("x.state", 1, 0)], [], True, at(0), push=False)
    assert [(x.signal, x.value) for x in out] == [("machine.execution", "ACTIVE"),
                                                  ("machine.availability", "AVAILABLE")]
    assert records == [{"event": "machine.execution", "ts": at(0), "fields": {"from": None, "to": "ACTIVE"}}]
    out, records = d.step([r("x.state", 1, 1)], [], True, at(1), push=False)
    assert out == [] and records == []  # nothing changed: nothing published
    out, records = d.step([r("x.state", None, 2, BAD)], [], False, at(2), push=False)
    assert [(x.signal, x.value, x.quality) for x in out] == [
        ("machine.execution", None, BAD), ("machine.availability", "UNAVAILABLE", GOOD)]
    assert records == []
    out, records = d.step([r("x.state", 0, 3)], [], True, at(3), push=False)
    assert [x.value for x in out] == ["STOPPED", "AVAILABLE"]
    assert records[0]["fields"] == {"from": None, "to": "STOPPED"}
    out, _ = d.step([r("x.state", 0, 13.5)], [], True, at(13.5), push=False)
    assert [x.value for x in out] == ["STOPPED", "AVAILABLE"]  # the heartbeat


def test_engine_push_groups_take_events_and_readings_in_order() -> None:
    d = Derivations(derive(availability=False, cycle={
        "trigger": {"counter": "cycle.count"},
        "features": {"cushion": {"signal": "imm.cushion"}}}))
    # Two shots drained at once: each shot's fields share its timestamp.
    taps = [r("cycle.count", 7, 0), r("imm.cushion", 4.0, 0),
            r("cycle.count", 8, 1), r("imm.cushion", 4.5, 1),
            r("cycle.count", 9, 2), r("imm.cushion", 4.7, 2)]
    _, records = d.step(taps, [], True, at(2.1), push=True)
    assert [(x["fields"]["cycle"], x["fields"]["features"]["cushion"]) for x in records] == [
        (8, 4.5), (9, 4.7)]
    assert d.last_cycle == records[-1]["fields"]


def test_engine_counters_and_rates() -> None:
    d = Derivations(derive(availability=False,
                           counters={"part_count.total": {"counter": "x.parts", "rollover": 100}},
                           rates={"press.stroke_rate": {"counter": "x.parts", "window": "30s",
                                                        "rollover": 100}}))
    values = []
    for i, raw in enumerate([90, 95, 99, 2, 5]):
        out, _ = d.step([r("x.parts", raw, i)], [], True, at(i), push=False)
        values.append({x.signal: x.value for x in out})
    assert [v.get("part_count.total") for v in values] == [90, 95, 99, 102, 105]
    # Per minute over the increments seen: 4 in 1 s, 7 in 2 s, 10 in 3 s.
    assert [v.get("press.stroke_rate") for v in values[1:]] == [None, 240.0, 210.0, 200.0]
    assert "press.stroke_rate" not in values[0]  # unknown until two increments


def test_a_rate_is_bad_with_its_inputs_reason_while_the_device_is_down() -> None:
    """A stopped device is not a machine running at 0 strokes a minute: while its counter
    reads bad, the rate is bad with the counter's reason; good again once it is back."""
    d = Derivations(derive(availability=True,
                           rates={"press.stroke_rate": {"counter": "x.parts", "window": "30s"}}))
    for i in range(4):
        d.step([r("x.parts", 10 + i, 2 * i)], [], True, at(2 * i), push=False)
    out, _ = d.step([r("x.parts", None, 8, quality=BAD)], [], False, at(8), push=False)
    rate = next(x for x in out if x.signal == "press.stroke_rate")
    assert (rate.value, rate.quality, rate.reason) == (None, BAD, COMM_FAILURE)
    out, _ = d.step([r("x.parts", None, 70, quality=BAD)], [], False, at(70), push=False)
    assert all(x.quality == BAD for x in out if x.signal == "press.stroke_rate")
    back = []
    for t in (72, 74, 76):
        out, _ = d.step([r("x.parts", 14 + (t - 72) // 2, t)], [], True, at(t), push=False)
        back += [x for x in out if x.signal == "press.stroke_rate"]
    assert back and all(x.quality == GOOD and x.value == 30.0 for x in back)


def test_derived_counters_continue_across_a_restart(tmp_path: Path) -> None:
    """The saved (device value, total) lets the count go on, a wrap while away included;
    a damaged file starts over instead of failing."""
    path = tmp_path / "counters.json"
    config = derive(availability=False,
                    counters={"part_count.total": {"counter": "x.parts", "rollover": 65536}})

    def run(raw_values: list[int]) -> list[Any]:
        store = CounterStore(path)
        asyncio.run(store.open(_Log()))
        d = Derivations(config, store.view("press-01"))
        totals = []
        for i, raw in enumerate(raw_values):
            out, _ = d.step([r("x.parts", raw, i)], [], True, at(i), push=False)
            totals += [x.value for x in out]
        asyncio.run(store.flush())
        return totals

    assert run([65000, 65530]) == [65000, 65530]
    # Restarted after the device counter wrapped: 65530 -> 65535, 0 .. 3.
    assert run([3, 5]) == [65539, 65541]
    assert json.loads(path.read_text()) == {"press-01": {"part_count.total": [5, 65541]}}
    path.write_text("{not json")
    log = _Log()
    store = CounterStore(path)
    asyncio.run(store.open(log))
    assert store.get("press-01", "part_count.total") is None and log.warnings


class _Log:
    def __init__(self) -> None:
        self.warnings: list[str] = []

    def warning(self, event: str, **fields: Any) -> None:
        self.warnings.append(event)
