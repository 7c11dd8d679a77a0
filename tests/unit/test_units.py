"""Exact unit conversion (agent/signals/units.py)."""

from __future__ import annotations

import math

import pytest

from agent.signals.units import _TABLE, CANONICAL, conversion, dimension, units_for


def convert(value: float, device: str, published: str) -> float:
    factor, offset = conversion(device, published)
    return value * factor + offset


@pytest.mark.parametrize("value, device, published, expected", [
    (10, "tf", "kN", 98.0665),
    (2.5, "bar", "kPa", 250.0),
    (212, "[degF]", "Cel", 100.0),
    (300, "K", "Cel", 26.85),
    (1, "[in_i]", "mm", 25.4),
    (1, "1", "%", 100.0),
    # psi = lbf/in2 = 0.45359237 kg * 9.80665 m/s2 / 0.0254**2 m2
    (1, "[psi]", "kPa", 6.894757293168361),
    (1, "lbf", "kN", 0.0044482216152605),
    (1, "[lbf_av]", "N", 4.4482216152605),
    (1, "tonf_us", "kN", 2000 * 0.0044482216152605),
    (1, "kip", "kN", 4.4482216152605),
    (1, "kgf/cm2", "kPa", 98.0665),
    (1, "kgf", "N", 9.80665),
    (3.5, "MPa", "kPa", 3500.0),
    (1, "N/mm2", "MPa", 1.0),
    (1013.25, "hPa", "kPa", 101.325),
    (40, "mbar", "kPa", 4.0),
    (98.6, "degF", "Cel", 37.0),
    (-40, "[degF]", "Cel", -40.0),
    (100, "Cel", "[degF]", 212.0),
    (0, "Cel", "K", 273.15),
    (1500, "um", "mm", 1.5),
    (2, "m", "mm", 2000.0),
    (10, "[in_i]/min", "mm/min", 254.0),
    (1, "m/s", "mm/min", 60000.0),
    (50, "mm/s", "mm/min", 3000.0),
    (math.pi, "rad", "deg", 180.0),
    (50, "Hz", "rev/min", 3000.0),
    (2, "rev/s", "rev/min", 120.0),
    (30, "spm", "1/min", 30.0),
    (1.5, "kHz", "Hz", 1500.0),
    (250, "ms", "s", 0.25),
    (2, "h", "s", 7200.0),
    (1, "d", "s", 86400.0),
    (1, "kWh", "kJ", 3600.0),
    (1500, "W.h", "kW.h", 1.5),
    (2, "MJ", "kJ", 2000.0),
    (1500, "W", "kW", 1.5),
    (250, "mA", "A", 0.25),
    (1, "t", "kg", 1000.0),
    (1, "[lb_av]", "kg", 0.45359237),
    (1, "L", "cm3", 1000.0),
    (500, "mm3", "cm3", 0.5),
    (5, "[ppth]", "%", 0.5),
])
def test_exact_conversions(value: float, device: str, published: str,
                           expected: float) -> None:
    assert convert(value, device, published) == pytest.approx(expected, rel=1e-12, abs=1e-12)


def test_factors_are_exact_to_the_last_bit() -> None:
    # Computed as Fractions, so the float factor is the nearest double to the exact value.
    assert conversion("tf", "kN") == (9.80665, 0.0)
    assert conversion("bar", "kPa") == (100.0, 0.0)
    assert conversion("[psi]", "kPa") == (6.894757293168361, 0.0)
    assert conversion("[degF]", "Cel") == (5 / 9, -160 / 9)
    assert conversion("K", "Cel") == (1.0, -273.15)


def test_every_alias_converts_like_its_ucum_spelling() -> None:
    aliases = {
        "kgf": "[kgf]", "tf": "tnf", "t_f": "tf", "lbf": "[lbf_av]", "[stonf]": "tonf_us",
        "psi": "[psi]", "at": "kgf/cm2", "att": "kgf/cm2", "degF": "[degF]", "degC": "Cel",
        "in": "[in_i]", "in/min": "[in_i]/min", "1/min": "rev/min", "/min": "1/min",
        "{stroke}/min": "1/min", "spm": "1/min", "rpm": "rev/min", "1/s": "Hz",
        "rev/s": "Hz", "kWh": "kW.h", "Wh": "W.h", "lb": "[lb_av]", "ml": "cm3",
        "mL": "cm3", "l": "dm3", "L": "dm3", "N/mm2": "MPa",
    }
    for alias, spelling in aliases.items():
        for published in units_for(spelling):
            assert conversion(alias, published) == conversion(spelling, published), alias


def test_same_unit_is_identity() -> None:
    for rows in _TABLE.values():
        for row in rows:
            for unit in row[0]:
                assert conversion(unit, unit) == (1.0, 0.0), unit


def test_every_unit_converts_to_each_unit_of_its_dimension_and_back() -> None:
    for rows in _TABLE.values():
        units = [u for row in rows for u in row[0]]
        for a in units:
            assert units_for(a) == sorted(units)
            for b in units:
                assert convert(convert(7.25, a, b), b, a) == pytest.approx(7.25, rel=1e-12)


def test_units_for_lists_the_dimension_sorted() -> None:
    assert units_for("kPa") == sorted(units_for("kPa"))
    assert {"bar", "mbar", "[psi]", "psi", "MPa", "Pa", "kgf/cm2", "kPa"} <= set(
        units_for("kPa"))
    assert "kN" not in units_for("kPa")
    assert units_for("furlong") == []


def test_canonical_units_are_known() -> None:
    for unit in CANONICAL:
        assert dimension(unit) is not None, unit
        assert unit in units_for(unit)


def test_a_unit_is_in_one_dimension_only() -> None:
    seen: set[str] = set()
    for rows in _TABLE.values():
        for row in rows:
            for unit in row[0]:
                assert unit not in seen, unit
                seen.add(unit)


@pytest.mark.parametrize("device, published", [
    ("kN", "kPa"), ("bar", "kN"), ("Cel", "mm"), ("s", "Hz"), ("kW", "kW.h"), ("%", "mm"),
])
def test_refuses_across_dimensions(device: str, published: str) -> None:
    with pytest.raises(ValueError) as err:
        conversion(device, published)
    message = str(err.value)
    assert repr(device) in message and repr(published) in message
    # The units that would have been accepted are listed.
    for accepted in units_for(published):
        assert accepted in message


def test_refuses_an_unknown_device_unit_naming_both_and_suggesting() -> None:
    with pytest.raises(ValueError) as err:
        conversion("KN", "kN")
    message = str(err.value)
    assert "'KN'" in message and "'kN'" in message
    assert "not a known unit" in message
    assert "did you mean 'kN'" in message
    assert "tf" in message and "[lbf_av]" in message


def test_refuses_an_unknown_published_unit() -> None:
    with pytest.raises(ValueError) as err:
        conversion("kN", "tonnes")
    message = str(err.value)
    assert "'kN'" in message and "'tonnes'" in message and "not a known unit" in message
    with pytest.raises(ValueError):
        conversion("furlong", "furlong")


def test_dimension() -> None:
    assert dimension("tf") == "force"
    assert dimension("[degF]") == "temperature"
    assert dimension("spm") == dimension("rev/min") == dimension("Hz")
    assert dimension("furlong") is None
