"""Normalization (agent/acquire/normalize.py): raw samples -> readings of one poll group."""

from __future__ import annotations

import math
from typing import Any

import pytest

from agent.config.models import CommonSignal
from agent.core.model import BAD, GOOD, UNCERTAIN, Reading
from agent.acquire.normalize import GroupNormalizer
from drivers.base import COMM_FAILURE, OUT_OF_RANGE, TIMEOUT, RawSample

S = 1_000_000_000  # ns per second
T0 = 1_795_462_093_000_000_000


def sig(name: str, **kw: Any) -> CommonSignal:
    return CommonSignal(name=name, **kw)


def good(value: Any, t: float = 0.0) -> RawSample:
    return RawSample(value, T0 + int(t * S))


def bad(reason: str, t: float = 0.0, quality: str = BAD) -> RawSample:
    return RawSample(None, T0 + int(t * S), quality, reason)


def one(n: GroupNormalizer, sample: RawSample) -> list[Reading]:
    return n.apply([sample])


# ---- scale, offset, types -----------------------------------------------------------------

def test_scale_turns_ints_into_floats_without_rounding_noise() -> None:
    n = GroupNormalizer([sig("x.press.force", scale=0.1, unit="kN")])
    [r] = one(n, good(1234))
    assert r.value == 123.4 and type(r.value) is float
    [r] = one(n, good(3))
    assert r.value == 0.3
    assert 3 * 0.1 != 0.3  # the noise that must not reach the wire
    assert (r.signal, r.unit, r.quality, r.reason, r.ts) == ("x.press.force", "kN", GOOD, None, T0)


@pytest.mark.parametrize("raw,scale,offset,expected", [
    (250, 0.1, -40.0, -15.0),
    (3, 0.1, 0.0, 0.3),
    (7, 0.7, 0.0, 4.9),
    (1, 0.01, 0.0, 0.01),
    (-32768, 0.01, 0.0, -327.68),
    (65535, 0.001, 0.0, 65.535),
    (12.5, 2.0, 1.0, 26.0),
    (100, 1.0, 0.5, 100.5),
    (4_000_000_000, 0.001, 0.0, 4_000_000.0),
])
def test_scale_and_offset(raw: float, scale: float, offset: float, expected: float) -> None:
    n = GroupNormalizer([sig("x.y", scale=scale, offset=offset)])
    [r] = one(n, good(raw))
    assert r.value == expected and type(r.value) is float


def test_without_scale_values_keep_their_type() -> None:
    n = GroupNormalizer([sig("x.a.int"), sig("x.a.float"), sig("x.a.str"), sig("x.a.bool")])
    readings = n.apply([good(42), good(2.5), good("DIE-7"), good(False)])
    assert [(r.value, type(r.value)) for r in readings] == [
        (42, int), (2.5, float), ("DIE-7", str), (False, bool)]
    assert all(r.quality == GOOD and r.reason is None for r in readings)


def test_bool_and_str_are_never_scaled() -> None:
    n = GroupNormalizer([sig("x.a.bool", scale=10.0, offset=1.0),
                         sig("x.a.str", scale=10.0, offset=1.0)])
    readings = n.apply([good(True), good("7")])
    assert readings[0].value is True
    assert readings[1].value == "7"


# ---- enums ----------------------------------------------------------------------------------

def test_enum_maps_ints_to_labels_and_flags_unmapped_values() -> None:
    n = GroupNormalizer([sig("machine.state", enum={0: "stopped", 1: "running"})])
    [r] = one(n, good(1))
    assert (r.value, r.quality, r.reason) == ("running", GOOD, None)
    [r] = one(n, good(0))
    assert (r.value, r.quality, r.reason) == ("stopped", GOOD, None)
    [r] = one(n, good(9))
    assert (r.value, r.quality, r.reason) == (9, UNCERTAIN, "enum_unmapped")
    assert type(r.value) is int


def test_enum_wins_over_scale() -> None:
    n = GroupNormalizer([sig("machine.mode", enum={2: "auto"}, scale=0.5)])
    assert one(n, good(2))[0].value == "auto"
    r = one(n, good(3))[0]
    assert (r.value, r.quality, r.reason) == (3, UNCERTAIN, "enum_unmapped")


def test_enum_does_not_apply_to_bools() -> None:
    n = GroupNormalizer([sig("x.door.closed", enum={1: "one", 0: "zero"})])
    r = one(n, good(True))[0]
    assert (r.value, r.quality, r.reason) == (True, GOOD, None)


# ---- validity and bad samples ---------------------------------------------------------------

@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("scale", [1.0, 0.1])
def test_non_finite_floats_become_bad_out_of_range(value: float, scale: float) -> None:
    n = GroupNormalizer([sig("x.temp.oil", scale=scale, unit="Cel")])
    [r] = one(n, good(value))
    assert (r.value, r.quality, r.reason, r.unit) == (None, BAD, OUT_OF_RANGE, "Cel")


@pytest.mark.parametrize("reason", [TIMEOUT, COMM_FAILURE, "device_exception:2"])
def test_bad_samples_become_bad_readings_with_reason(reason: str) -> None:
    n = GroupNormalizer([sig("x.a.one", scale=0.1, unit="mm"), sig("x.a.two", enum={1: "x"}),
                         sig("x.a.three")])
    readings = n.apply([bad(reason), bad(reason), bad(reason)])
    assert [r.signal for r in readings] == ["x.a.one", "x.a.two", "x.a.three"]
    for r in readings:
        assert (r.value, r.quality, r.reason, r.ts) == (None, BAD, reason, T0)
    assert readings[0].unit == "mm"


def test_bad_sample_keeps_its_value_out_and_its_quality() -> None:
    n = GroupNormalizer([sig("x.a.b"), sig("x.a.c")])
    # A bad sample is never reported with a value, even if the driver left one in; an
    # uncertain one keeps its value (OPC UA's UncertainLastUsableValue and the like).
    samples = [RawSample(17, T0, BAD, "malformed_reply"),
               RawSample(3.5, T0, UNCERTAIN, "stale")]
    r1, r2 = n.apply(samples)
    assert (r1.value, r1.quality, r1.reason) == (None, BAD, "malformed_reply")
    assert (r2.value, r2.quality, r2.reason) == (3.5, UNCERTAIN, "stale")
    [r3] = GroupNormalizer([sig("x.a.e")]).apply([RawSample(None, T0, UNCERTAIN, "stale")])
    assert (r3.value, r3.quality, r3.reason) == (None, UNCERTAIN, "stale")
    # A reason with quality 'good' makes no sense: it is reported as bad.
    [r] = GroupNormalizer([sig("x.a.d")]).apply([RawSample(None, T0, GOOD, TIMEOUT)])
    assert (r.value, r.quality, r.reason) == (None, BAD, TIMEOUT)


def test_mixed_poll_keeps_signal_order_and_every_signal() -> None:
    sigs = [sig(f"x.s.n{i}", scale=0.1 if i % 2 else 1.0) for i in range(12)]
    n = GroupNormalizer(sigs)
    samples = [bad(TIMEOUT) if i % 3 == 0 else good(i * 10) for i in range(12)]
    readings = n.apply(samples)
    assert [r.signal for r in readings] == [s.name for s in sigs]
    for i, r in enumerate(readings):
        if i % 3 == 0:
            assert (r.value, r.quality, r.reason) == (None, BAD, TIMEOUT)
        elif i % 2:
            assert (r.value, type(r.value), r.quality) == (float(i), float, GOOD)
        else:
            assert (r.value, type(r.value), r.quality) == (i * 10, int, GOOD)


def test_timestamps_come_from_the_samples() -> None:
    n = GroupNormalizer([sig("x.a.b"), sig("x.a.c")])
    readings = n.apply([RawSample(1, 111), RawSample(2, 222)])
    assert [r.ts for r in readings] == [111, 222]


# ---- deadband / report by exception ---------------------------------------------------------

def test_deadband_suppresses_small_changes_and_passes_big_ones() -> None:
    n = GroupNormalizer([sig("x.press.force", deadband=0.5, unit="kN")])
    assert [r.value for r in one(n, good(10.0, 0))] == [10.0]  # first value always reported
    assert one(n, good(10.0, 1)) == []
    assert one(n, good(10.4, 2)) == []
    assert one(n, good(10.5, 3)) == []  # exactly the deadband: still within
    assert one(n, good(9.6, 4)) == []
    assert [r.value for r in one(n, good(10.6, 5))] == [10.6]  # > deadband from 10.0
    # Compared against the last *reported* value, so a slow drift is reported eventually.
    assert one(n, good(10.9, 6)) == []
    assert [r.value for r in one(n, good(11.2, 7))] == [11.2]
    assert [r.value for r in one(n, good(5.0, 8))] == [5.0]


def test_deadband_applies_after_scaling() -> None:
    n = GroupNormalizer([sig("x.press.force", scale=0.1, deadband=1.0)])
    assert [r.value for r in one(n, good(1000, 0))] == [100.0]
    assert one(n, good(1009, 1)) == []   # 100.9
    assert [r.value for r in one(n, good(1011, 2))] == [101.1]


def test_zero_deadband_reports_every_change_only() -> None:
    n = GroupNormalizer([sig("cycle.count", deadband=0.0)])
    out = [one(n, good(v, i)) for i, v in enumerate([1, 1, 2, 2, 2, 3, 1])]
    assert [[r.value for r in x] for x in out] == [[1], [], [2], [], [], [3], [1]]


def test_heartbeat_forces_a_reading_after_its_interval() -> None:
    n = GroupNormalizer([sig("x.temp.oil", deadband=1.0, heartbeat=10.0)])
    assert len(one(n, good(50.0, 0))) == 1
    assert one(n, good(50.0, 5)) == []
    assert one(n, good(50.0, 9.999)) == []
    hb = one(n, good(50.0, 10.0))  # exactly the heartbeat after the last report
    assert [(r.value, r.ts) for r in hb] == [(50.0, T0 + 10 * S)]
    # The heartbeat restarts from the last report.
    assert one(n, good(50.2, 15)) == []
    assert len(one(n, good(50.2, 20))) == 1
    # A real change restarts it as well.
    assert [r.value for r in one(n, good(52.0, 21))] == [52.0]
    assert one(n, good(52.0, 30.9)) == []
    assert len(one(n, good(52.0, 31))) == 1


def test_quality_change_always_passes_the_deadband() -> None:
    n = GroupNormalizer([sig("machine.mode", enum={1: "auto"}, deadband=100.0)])
    assert [(r.value, r.quality) for r in one(n, good(1, 0))] == [("auto", GOOD)]
    # good -> bad
    assert [(r.value, r.quality, r.reason) for r in one(n, bad(TIMEOUT, 1))] == [
        (None, BAD, TIMEOUT)]
    # bad -> good with the same value as before the outage
    assert [(r.value, r.quality) for r in one(n, good(1, 2))] == [("auto", GOOD)]
    # good -> uncertain (unmapped)
    assert [(r.value, r.quality) for r in one(n, good(5, 3))] == [(5, UNCERTAIN)]
    # uncertain -> good
    assert [(r.value, r.quality) for r in one(n, good(1, 4))] == [("auto", GOOD)]


def test_nan_after_good_value_passes_the_deadband() -> None:
    n = GroupNormalizer([sig("x.temp.oil", deadband=5.0)])
    assert len(one(n, good(20.0, 0))) == 1
    [r] = one(n, good(math.nan, 1))
    assert (r.value, r.quality, r.reason) == (None, BAD, OUT_OF_RANGE)
    assert [r.value for r in one(n, good(20.0, 2))] == [20.0]


@pytest.mark.parametrize("values,reported", [
    (["A", "A", "B", "B", "A"], ["A", "B", "A"]),
    ([True, True, False, False, True, True], [True, False, True]),
])
def test_strings_and_bools_with_deadband_report_on_change_only(values: list[Any],
                                                                reported: list[Any]) -> None:
    n = GroupNormalizer([sig("die.id", deadband=1000.0)])
    out = [r.value for i, v in enumerate(values) for r in one(n, good(v, i))]
    assert out == reported


def test_enum_labels_with_deadband_report_on_change_only() -> None:
    n = GroupNormalizer([sig("machine.state", enum={0: "idle", 1: "run"}, deadband=0.0)])
    out = [r.value for i, v in enumerate([0, 0, 1, 1, 0]) for r in one(n, good(v, i))]
    assert out == ["idle", "run", "idle"]


def test_deadband_is_per_signal_and_order_is_kept() -> None:
    n = GroupNormalizer([sig("x.a.one", deadband=1.0), sig("x.a.two"), sig("x.a.three", deadband=1.0)])
    first = n.apply([good(1.0, 0), good(1.0, 0), good(1.0, 0)])
    assert [r.signal for r in first] == ["x.a.one", "x.a.two", "x.a.three"]
    second = n.apply([good(1.5, 1), good(1.0, 1), good(5.0, 1)])
    assert [(r.signal, r.value) for r in second] == [("x.a.two", 1.0), ("x.a.three", 5.0)]
    third = n.apply([good(9.0, 2), good(2.0, 2), good(5.0, 2)])
    assert [(r.signal, r.value) for r in third] == [("x.a.one", 9.0), ("x.a.two", 2.0)]


def test_two_normalizers_do_not_share_state() -> None:
    signals = [sig("x.a.b", deadband=1.0)]
    n1, n2 = GroupNormalizer(signals), GroupNormalizer(signals)
    assert len(one(n1, good(1.0, 0))) == 1
    assert len(one(n2, good(1.0, 0))) == 1
    assert one(n1, good(1.0, 1)) == []


def test_consecutive_bad_samples_with_deadband_are_not_left_out() -> None:
    n = GroupNormalizer([sig("x.press.force", deadband=0.5, heartbeat=60.0)])
    assert len(one(n, good(10.0, 0))) == 1
    first = one(n, bad(TIMEOUT, 1))
    assert [(r.value, r.quality, r.reason) for r in first] == [(None, BAD, TIMEOUT)]
    second = one(n, bad(TIMEOUT, 2))
    # Actual: [] -- the failed read yields no reading at all.
    assert [(r.value, r.quality, r.reason) for r in second] == [(None, BAD, TIMEOUT)]


def test_reason_change_with_deadband_is_reported() -> None:
    n = GroupNormalizer([sig("x.press.force", deadband=0.5, heartbeat=60.0)])
    assert [r.reason for r in one(n, bad(TIMEOUT, 0))] == [TIMEOUT]
    # Actual: [] -- the reading with the new reason is dropped.
    assert [r.reason for r in one(n, bad("device_exception:4", 1))] == ["device_exception:4"]


def test_bad_samples_without_deadband_are_always_reported() -> None:
    n = GroupNormalizer([sig("x.press.force")])
    for t in range(5):
        assert [(r.value, r.quality, r.reason) for r in one(n, bad(TIMEOUT, t))] == [
            (None, BAD, TIMEOUT)]


# ---- report by exception without a deadband, percent deadbands -------------------------------

def test_booleans_enums_and_text_are_reported_on_change_and_at_the_heartbeat() -> None:
    n = GroupNormalizer([sig("motor.on", heartbeat=10.0),
                         sig("machine.mode", enum={1: "auto", 2: "manual"}, heartbeat=10.0),
                         sig("die.id", heartbeat=10.0),
                         sig("x.count", heartbeat=10.0)])

    def poll(t: float, *values: Any) -> list[tuple[str, Any]]:
        return [(r.signal, r.value) for r in n.apply([good(v, t) for v in values])]

    assert poll(0, True, 1, "D1", 5) == [("motor.on", True), ("machine.mode", "auto"),
                                         ("die.id", "D1"), ("x.count", 5)]
    # A number without a deadband is reported every poll; the others only when they change.
    assert poll(1, True, 1, "D1", 5) == [("x.count", 5)]
    assert poll(2, False, 1, "D2", 5) == [("motor.on", False), ("die.id", "D2"), ("x.count", 5)]
    assert poll(3, False, 2, "D2", 6) == [("machine.mode", "manual"), ("x.count", 6)]
    assert poll(9.9, False, 2, "D2", 6) == [("x.count", 6)]
    # At least once per heartbeat since each one's last report.
    assert poll(12, False, 2, "D2", 6) == [("motor.on", False), ("die.id", "D2"), ("x.count", 6)]
    assert poll(13, False, 2, "D2", 6) == [("machine.mode", "manual"), ("x.count", 6)]
    # A bad reading in between is reported, and so is the unchanged value after it.
    assert [r.quality for r in n.apply([bad(TIMEOUT, 14)] * 4)] == [BAD] * 4
    assert poll(15, False, 2, "D2", 6) == [("motor.on", False), ("machine.mode", "manual"),
                                          ("die.id", "D2"), ("x.count", 6)]


def test_every_poll_turns_report_by_exception_off() -> None:
    n = GroupNormalizer([sig("motor.on", report="every_poll")])
    assert [len(one(n, good(True, t))) for t in range(3)] == [1, 1, 1]


def test_percent_deadband_is_relative_to_the_last_reported_value() -> None:
    n = GroupNormalizer([sig("x.pressure", deadband="2%")])
    assert [r.value for r in one(n, good(100.0, 0))] == [100.0]
    assert one(n, good(101.9, 1)) == []
    assert one(n, good(98.0, 2)) == []  # exactly 2 %: within
    assert [r.value for r in one(n, good(102.5, 3))] == [102.5]
    assert one(n, good(104.5, 4)) == []  # 2 % of 102.5 is 2.05
    assert [r.value for r in one(n, good(104.6, 5))] == [104.6]


@pytest.mark.parametrize("value,message", [
    (-1, "must be a finite number >= 0"), ("2", r"give a number \(absolute\) or a percentage"),
    ("x%", "give a number"), (math.inf, "must be a finite number")])
def test_bad_deadbands(value: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        sig("x.a", deadband=value)


# ---- unit conversion ----------------------------------------------------------------------

@pytest.mark.parametrize("name,unit,scale,raw,expected,published", [
    ("press.force.peak.ch1", "tf", 1.0, 10, 98.0665, "kN"),
    ("press.force.peak.ch1", "tf", 0.1, 1234, 1210.14061, "kN"),  # 123.4 tf
    ("press.force.peak.ch1", "kN", 1.0, 12.5, 12.5, "kN"),
    ("press.force.peak.ch1", None, 1.0, 12.5, 12.5, "kN"),  # no unit: already the published one
    ("hydraulic.pressure", "bar", 1.0, 2.5, 250.0, "kPa"),
    ("lubrication.pressure", "bar", 0.01, 350, 350.0, "kPa"),  # 3.5 bar
    ("hydraulic.pressure", "[psi]", 1.0, 100, 689.4757293168, "kPa"),
    ("temperature.oil", "[degF]", 1.0, 212, 100.0, "Cel"),
    ("temperature.oil", "[degF]", 1.0, 32, 0.0, "Cel"),
    ("temperature.oil", "[degF]", 0.1, 986, 37.0, "Cel"),  # 98.6 degF
    ("temperature.oil", "K", 1.0, 300, 26.85, "Cel"),
    ("axis.x.position", "[in_i]", 1.0, 2, 50.8, "mm"),
    ("x.vendor", "bar", 1.0, 2.5, 2.5, "bar"),  # vendor names publish what they are given
])
def test_values_are_converted_to_the_vocabulary_unit(name: str, unit: str | None, scale: float,
                                                     raw: float, expected: float,
                                                     published: str) -> None:
    n = GroupNormalizer([sig(name, unit=unit, scale=scale)])
    [r] = one(n, good(raw))
    assert r.unit == published
    assert r.value == pytest.approx(expected, rel=1e-12, abs=1e-12)


@pytest.mark.parametrize("name,unit,message", [
    ("press.force.peak.ch1", "kPa", "kPa"),
    ("press.force.peak.ch1", "furlong", "furlong"),
    ("motor.on", "A", "motor.on has no unit"),
])
def test_units_that_cannot_be_converted_are_config_errors(name: str, unit: str,
                                                         message: str) -> None:
    with pytest.raises(ValueError, match=message):
        sig(name, unit=unit)


def test_enum_labels_of_vocabulary_enums_are_checked() -> None:
    sig("machine.execution", enum={0: "STOPPED", 1: "ACTIVE"})
    with pytest.raises(ValueError, match="'running': machine.execution takes READY"):
        sig("machine.execution", enum={0: "STOPPED", 1: "running"})


def test_taps_see_watched_signals_before_report_by_exception() -> None:
    n = GroupNormalizer([sig("cycle.count", deadband=0), sig("x.other")], watched={"cycle.count"})
    n.apply([good(5, 0), good(1, 0)])
    assert [(r.signal, r.value) for r in n.taps] == [("cycle.count", 5)]
    assert [r.signal for r in n.apply([good(5, 1), good(1, 1)])] == ["x.other"]
    assert [(r.signal, r.value) for r in n.taps] == [("cycle.count", 5)]  # filtered, still seen


def test_pushed_labels_and_text_are_occurrences_not_states() -> None:
    """Two alarms with the same text are two alarms: what a subscription, an event or a
    stream delivers is reported each time; polled text only when it changes."""
    n = GroupNormalizer([sig("alarm.text")])
    assert len(n.apply_sparse([(0, good("Spindle overload", 0))])) == 1
    assert len(n.apply_sparse([(0, good("Spindle overload", 1))])) == 1
    assert len(n.apply([good("Spindle overload", 2)])) == 0
