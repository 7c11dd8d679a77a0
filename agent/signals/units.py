"""Exact conversion from the unit a device reports in to the unit the agent publishes.

Units are UCUM-style strings plus the aliases found on shop-floor HMIs and data sheets
("lbf", "psi", "degF", "kWh", "spm"). Every unit's size is an exact Fraction of its
dimension's base unit, so a factor like tf -> kN (9.80665) or psi -> kPa is computed
without rounding and converted to float once, at the end.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass
from fractions import Fraction as F

__all__ = ["CANONICAL", "conversion", "dimension", "units_for"]


@dataclass(frozen=True, slots=True)
class _Unit:
    dimension: str
    size: F       # one of this unit in the dimension's base unit
    offset: F     # base-unit value of this unit's zero (non-zero for temperatures only)


# Exact by definition: the international pound (0.45359237 kg), standard gravity
# (9.80665 m/s2, which makes 1 kgf = 9.80665 N) and the international inch (25.4 mm).
_G = F("9.80665")
_LB_KG = F("0.45359237")
_LBF_N = _LB_KG * _G
_IN_M = F("0.0254")
_ZERO_CELSIUS_K = F("273.15")

_Spellings = tuple[str, ...]
_Row = tuple[_Spellings, F] | tuple[_Spellings, F, F]

# Per dimension: (spellings of one unit, size in the base unit[, offset]). The first
# spelling is the UCUM one where UCUM has it; the others are accepted aliases.
_TABLE: dict[str, tuple[_Row, ...]] = {
    # base: newton
    "force": (
        (("N",), F(1)),
        (("daN",), F(10)),
        (("kN",), F(1000)),
        (("MN",), F(10**6)),
        (("kgf", "[kgf]"), _G),
        (("tf", "tnf", "t_f"), 1000 * _G),
        (("[lbf_av]", "lbf"), _LBF_N),
        (("kip", "[kip]"), 1000 * _LBF_N),
        (("tonf_us", "[stonf]", "[stonf_av]"), 2000 * _LBF_N),
    ),
    # base: pascal
    "pressure": (
        (("Pa",), F(1)),
        (("hPa",), F(100)),
        (("kPa",), F(1000)),
        (("MPa", "N/mm2"), F(10**6)),
        (("mbar",), F(100)),
        (("bar",), F(10**5)),
        (("[psi]", "psi"), _LBF_N / (_IN_M * _IN_M)),
        (("kgf/cm2", "att", "at"), _G * 10**4),
    ),
    # base: kelvin; value_K = value * size + offset
    "temperature": (
        (("K",), F(1), F(0)),
        (("Cel", "degC"), F(1), _ZERO_CELSIUS_K),
        (("[degF]", "degF"), F(5, 9), _ZERO_CELSIUS_K - F(32) * F(5, 9)),
    ),
    # base: millimetre
    "length": (
        (("um",), F(1, 1000)),
        (("mm",), F(1)),
        (("cm",), F(10)),
        (("m",), F(1000)),
        (("[in_i]", "in"), _IN_M * 1000),
        (("[ft_i]", "ft"), 12 * _IN_M * 1000),
    ),
    # base: millimetre per minute
    "velocity": (
        (("mm/min",), F(1)),
        (("mm/s",), F(60)),
        (("m/min",), F(1000)),
        (("m/s",), F(60_000)),
        (("[in_i]/min", "in/min"), _IN_M * 1000),
    ),
    # base: degree. pi has no exact Fraction: the radian is as exact as the float pi.
    "angle": (
        (("deg",), F(1)),
        (("rad",), F(180) / F(math.pi)),
    ),
    # base: per minute. Revolutions, strokes and cycles are counts, so a spindle's
    # rev/min, a press's strokes per minute and a frequency in Hz share one dimension.
    "frequency": (
        (("rev/min", "rpm", "{rev}/min"), F(1)),
        (("1/min", "/min", "{stroke}/min", "spm"), F(1)),
        (("1/s", "/s", "rev/s", "Hz"), F(60)),
        (("kHz",), F(60_000)),
    ),
    # base: second
    "time": (
        (("ms",), F(1, 1000)),
        (("s",), F(1)),
        (("min",), F(60)),
        (("h",), F(3600)),
        (("d",), F(86_400)),
    ),
    # base: joule
    "energy": (
        (("J",), F(1)),
        (("kJ",), F(1000)),
        (("MJ",), F(10**6)),
        (("W.h", "Wh"), F(3600)),
        (("kW.h", "kWh"), F(3_600_000)),
        (("MW.h", "MWh"), F(3_600_000_000)),
    ),
    # base: watt
    "power": (
        (("W",), F(1)),
        (("kW",), F(1000)),
        (("MW",), F(10**6)),
    ),
    # base: ampere
    "current": (
        (("mA",), F(1, 1000)),
        (("A",), F(1)),
    ),
    # base: volt
    "voltage": (
        (("mV",), F(1, 1000)),
        (("V",), F(1)),
        (("kV",), F(1000)),
    ),
    # base: kilogram
    "mass": (
        (("g",), F(1, 1000)),
        (("kg",), F(1)),
        (("t",), F(1000)),
        (("[lb_av]", "lb"), _LB_KG),
    ),
    # base: cubic centimetre
    "volume": (
        (("mm3",), F(1, 1000)),
        (("cm3", "ml", "mL"), F(1)),
        (("dm3", "l", "L"), F(1000)),
        (("m3",), F(10**6)),
    ),
    # base: percent. "1" is a plain 0..1 fraction.
    "ratio": (
        (("%",), F(1)),
        (("1",), F(100)),
        (("[ppth]",), F(1, 10)),
        (("[ppm]",), F(1, 10**4)),
    ),
}

# The units the agent publishes in (the vocabulary's units come from this set). Some
# dimensions have two: strokes are counted per minute but spindles turn in rev/min; blow
# energy is kJ but metered energy kW.h.
CANONICAL: frozenset[str] = frozenset({
    "kN", "kPa", "Cel", "mm", "mm/min", "deg", "rev/min", "1/min", "s", "kJ", "kW.h",
    "kW", "A", "V", "Hz", "kg", "cm3", "%",
})


def _build() -> dict[str, _Unit]:
    units: dict[str, _Unit] = {}
    for dim, rows in _TABLE.items():
        for row in rows:
            offset = row[2] if len(row) == 3 else F(0)
            for spelling in row[0]:
                if spelling in units:
                    raise AssertionError(f"unit {spelling!r} is listed twice")
                units[spelling] = _Unit(dim, row[1], offset)
    return units


_UNITS = _build()
_BY_DIMENSION: dict[str, list[str]] = {
    dim: sorted(u for u, unit in _UNITS.items() if unit.dimension == dim) for dim in _TABLE
}


def dimension(unit: str) -> str | None:
    """The quantity a unit measures ("force", "pressure", ...); None for an unknown unit."""
    known = _UNITS.get(unit)
    return known.dimension if known else None


def units_for(published: str) -> list[str]:
    """The device units convertible to `published` (itself included), sorted; [] if it
    is not a known unit."""
    known = _UNITS.get(published)
    return list(_BY_DIMENSION[known.dimension]) if known else []


def conversion(device: str, published: str) -> tuple[float, float]:
    """(factor, offset) with published_value = device_value * factor + offset.

    Same unit -> (1.0, 0.0). ValueError naming both units, and the units accepted for
    `published`, when there is no conversion (different dimension, or unknown unit)."""
    if device == published and device in _UNITS:
        return 1.0, 0.0
    to = _UNITS.get(published)
    if to is None:
        raise ValueError(
            f"no conversion from {device!r} to {published!r}: {published!r} is not a known "
            f"unit; published units: {', '.join(sorted(CANONICAL))}")
    accepted = _BY_DIMENSION[to.dimension]
    src = _UNITS.get(device)
    if src is None:
        # A wrong case (KN, Kpa) is the usual slip, and difflib ranks it below shorter units.
        close = ([u for u in accepted if u.lower() == device.lower()]
                 or difflib.get_close_matches(device, accepted, n=1))
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(
            f"no conversion from {device!r} to {published!r}: {device!r} is not a known "
            f"unit{hint}; units accepted for {published!r}: {', '.join(accepted)}")
    if src.dimension != to.dimension:
        raise ValueError(
            f"no conversion from {device!r} ({src.dimension}) to {published!r} "
            f"({to.dimension}); units accepted for {published!r}: {', '.join(accepted)}")
    # v_base = v * size_d + offset_d and v_pub = (v_base - offset_p) / size_p.
    factor = src.size / to.size
    offset = (src.offset - to.offset) / to.size
    return float(factor), float(offset)
