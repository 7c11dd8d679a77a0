"""The canonical signal vocabulary (agent/signals/vocabulary.py) and docs/vocabulary.md."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from agent.signals.units import CANONICAL
from agent.signals.vocabulary import TERMS, TYPES, VENDOR_PREFIX, check, lookup, markdown

DOC = Path(__file__).resolve().parents[2] / "docs" / "vocabulary.md"

REQUIRED = {
    "machine.availability": (None, "enum"),
    "machine.execution": (None, "enum"),
    "machine.mode": (None, "string"),
    "machine.estop": (None, "boolean"),
    "machine.operating_time": ("s", "number"),
    "machine.production_status": (None, "string"),
    "machine.manufacturer": (None, "string"),
    "machine.model": (None, "string"),
    "machine.serial_number": (None, "string"),
    "machine.software_revision": (None, "string"),
    "alarm.*": (None, "any"),
    "program.name": (None, "string"),
    "program.state": (None, "string"),
    "part_count.total": (None, "integer"),
    "part_count.good": (None, "integer"),
    "part_count.bad": (None, "integer"),
    "part_count.job": (None, "integer"),
    "cycle.count": (None, "integer"),
    "cycle.time": ("s", "number"),
    "spindle.speed.actual": ("rev/min", "number"),
    "spindle.speed.commanded": ("rev/min", "number"),
    "spindle.override": ("%", "number"),
    "spindle.load": ("%", "number"),
    "path.feedrate.actual": ("mm/min", "number"),
    "path.feed_override": ("%", "number"),
    "path.rapid_override": ("%", "number"),
    "axis.<id>.position": ("mm", "number"),
    "tool.number": (None, "integer"),
    "press.stroke_rate": ("1/min", "number"),
    "press.stroke_count": (None, "integer"),
    "press.slide.position": ("mm", "number"),
    "press.slide.at_tdc": (None, "boolean"),
    "press.crank_angle": ("deg", "number"),
    "press.die_height": ("mm", "number"),
    "press.force.ch<n>": ("kN", "number"),
    "press.force.peak.ch<n>": ("kN", "number"),
    "press.force.total_peak": ("kN", "number"),
    "press.force.reverse_peak": ("kN", "number"),
    "press.counterbalance_pressure": ("kPa", "number"),
    "press.flywheel.speed": ("rev/min", "number"),
    "press.overload": (None, "boolean"),
    "forging.blow_energy": ("kJ", "number"),
    "forging.force.peak": ("kN", "number"),
    "forging.blows_on_billet": (None, "integer"),
    "imm.cushion": ("mm", "number"),
    "imm.dosing_time": ("s", "number"),
    "imm.injection_time": ("s", "number"),
    "imm.injection_pressure": ("kPa", "number"),
    "imm.injection_pressure.peak": ("kPa", "number"),
    "imm.hold_pressure.peak": ("kPa", "number"),
    "imm.screw_position": ("mm", "number"),
    "imm.part_good": (None, "boolean"),
    "temperature.zone<n>": ("Cel", "number"),
    "temperature.zone<n>.setpoint": ("Cel", "number"),
    "temperature.barrel.zone<n>": ("Cel", "number"),
    "temperature.mould.zone<n>": ("Cel", "number"),
    "temperature.oil": ("Cel", "number"),
    "temperature.motor": ("Cel", "number"),
    "temperature.die": ("Cel", "number"),
    "temperature.billet_at_blow": ("Cel", "number"),
    "temperature.billet_exit": ("Cel", "number"),
    "motor.current": ("A", "number"),
    "motor.energy": ("kW.h", "number"),
    "motor.on": (None, "boolean"),
    "motor.running": (None, "boolean"),
    "lubrication.pressure": ("kPa", "number"),
    "lubrication.ok": (None, "boolean"),
    "lubrication.pump_on": (None, "boolean"),
    "air.pressure": ("kPa", "number"),
    "hydraulic.pressure": ("kPa", "number"),
    "clutch.engaged": (None, "boolean"),
    "brake.released": (None, "boolean"),
    "die.id": (None, "string"),
    "die.clamp_closed": (None, "boolean"),
    "safety.light_curtain.clear": (None, "boolean"),
    "heater.state": (None, "string"),
    "heater.power": ("kW", "number"),
    "heater.frequency": ("Hz", "number"),
    "heater.zone<n>.output": ("%", "number"),
    "heater.billet_count": (None, "integer"),
    "billet.count": (None, "integer"),
    "billet.weight": ("kg", "number"),
    "billet.weight_stable": (None, "boolean"),
    "billet.weight_out_of_tolerance": (None, "boolean"),
    "scale.gross_weight": ("kg", "number"),
}


def test_doc_file_is_generated_from_the_vocabulary() -> None:
    assert DOC.read_text(encoding="utf-8") == markdown(), (
        "docs/vocabulary.md is stale: python -m agent.signals.vocabulary > docs/vocabulary.md")


def test_required_terms_with_their_units_and_types() -> None:
    by_name = {t.name: t for t in TERMS}
    for name, (unit, type_) in REQUIRED.items():
        assert name in by_name, name
        assert (by_name[name].unit, by_name[name].type) == (unit, type_), name


def test_execution_and_availability_values() -> None:
    execution = lookup("machine.execution")
    assert execution is not None and set(execution.values) == {
        "READY", "ACTIVE", "INTERRUPTED", "FEED_HOLD", "STOPPED", "OPTIONAL_STOP",
        "PROGRAM_STOPPED", "PROGRAM_COMPLETED", "WAIT", "PROGRAM_OPTIONAL_STOP"}
    availability = lookup("machine.availability")
    assert availability is not None and availability.values == ("AVAILABLE", "UNAVAILABLE")


def test_every_unit_is_a_canonical_published_unit() -> None:
    for term in TERMS:
        assert term.unit is None or term.unit in CANONICAL, term.name


def test_terms_are_well_formed() -> None:
    segment = r"(?:[a-z][a-z0-9_]*(?:<n>)?|<id>)"
    name_re = re.compile(rf"{segment}(?:\.{segment})*(?:\.\*)?")
    names = [t.name for t in TERMS]
    assert len(names) == len(set(names))
    for term in TERMS:
        assert name_re.fullmatch(term.name), term.name
        assert not term.name.startswith(VENDOR_PREFIX), term.name
        assert term.type in TYPES, term.name
        assert term.meaning and term.source, term.name
        assert "|" not in term.meaning + term.source, term.name
        # Enums are the only terms with values, and always have some.
        assert bool(term.values) == (term.type == "enum"), term.name
        if term.type in ("boolean", "string", "enum", "integer", "any"):
            assert term.unit is None, term.name
        if term.type == "number":
            assert term.unit is not None, term.name


def test_every_term_finds_itself() -> None:
    for term in TERMS:
        example = (term.name.replace("<n>", "3").replace("<id>", "x")
                   .replace(".*", ".active"))
        assert lookup(example) is term, example
        assert check(example) is term, example


@pytest.mark.parametrize("name, expected", [
    ("axis.x.position", "axis.<id>.position"),
    ("axis.c2.angle", "axis.<id>.angle"),
    ("axis.x_1.position", "axis.<id>.position"),
    ("temperature.zone1", "temperature.zone<n>"),
    ("temperature.zone12", "temperature.zone<n>"),
    ("temperature.zone12.setpoint", "temperature.zone<n>.setpoint"),
    ("temperature.barrel.zone5", "temperature.barrel.zone<n>"),
    ("press.force.ch4", "press.force.ch<n>"),
    ("press.force.peak.ch10", "press.force.peak.ch<n>"),
    ("heater.zone2.output", "heater.zone<n>.output"),
    ("alarm.active", "alarm.*"),
    ("alarm.anything.deep", "alarm.*"),
    ("alarm.code_2", "alarm.*"),
    ("spindle.load", "spindle.load"),
])
def test_placeholders_match(name: str, expected: str) -> None:
    term = lookup(name)
    assert term is not None and term.name == expected


@pytest.mark.parametrize("name", [
    "axis.position", "axis..position", "axis.X.position", "axis.1x.position",
    "axis.x.y.position", "temperature.zone0", "temperature.zone01", "temperature.zone",
    "temperature.zone1x", "temperature.zone-1", "press.force.ch0", "press.force.peak.ch",
    "alarm", "alarm.", "alarm..x", "alarm.Active", "alarm.x.", "spindle.load.", "",
    "temperature.zone<n>", "axis.<id>.position", "alarm.*",
])
def test_placeholders_refuse(name: str) -> None:
    assert lookup(name) is None
    with pytest.raises(ValueError):
        check(name)


def test_vendor_names_are_not_terms() -> None:
    assert lookup("x.hydraulic.valve3_current") is None
    assert check("x.hydraulic.valve3_current") is None
    assert check("x.anything") is None
    with pytest.raises(ValueError):
        check("x.")
    with pytest.raises(ValueError):
        check("X.foo")


def test_unknown_name_message_suggests_the_closest_term() -> None:
    with pytest.raises(ValueError) as err:
        check("spindel.load")
    assert str(err.value) == (
        "'spindel.load' is not in the vocabulary (docs/vocabulary.md); did you mean "
        "'spindle.load'? Vendor-specific names start with 'x.'")


def test_unknown_name_message_explains_a_suggested_placeholder() -> None:
    with pytest.raises(ValueError) as err:
        check("temperature.zone01")
    message = str(err.value)
    assert "did you mean 'temperature.zone<n>'" in message
    assert "leading zeros" in message


def test_unknown_name_without_a_close_term() -> None:
    with pytest.raises(ValueError) as err:
        check("qqq")
    message = str(err.value)
    assert "'qqq' is not in the vocabulary" in message and "did you mean" not in message
    assert "Vendor-specific names start with 'x.'" in message


def test_doc_lists_every_term_section_and_published_unit() -> None:
    text = markdown()
    for term in TERMS:
        assert f"| `{term.name}` |" in text
        for value in term.values:
            assert f"`{value}`" in text
    for heading in ("Machine", "Alarm", "Program & production", "Spindle & path", "Press",
                    "Forging", "Injection moulding", "Temperatures", "Drives & utilities",
                    "Heater & billet"):
        assert f"\n### {heading}\n" in text
    assert "\n## Units\n" in text
    assert "| `kN` | force | " in text and "`tf`" in text
    assert "| `kPa` | pressure | " in text and "`bar`" in text
    assert "| `Cel` | temperature | " in text and "`[degF]`" in text
