"""The canonical signal vocabulary: every published signal's name, unit, type and meaning.

Names follow MTConnect data items, OPC 40501 (machine tools), OPC 40077/40083 (EUROMAP
77/83, injection moulding) and OPC 40503 (metal forming), so that one name means one
thing in one unit on every machine. docs/vocabulary.md is generated from this module
(`python -m agent.signals.vocabulary > docs/vocabulary.md`) and a test keeps the two equal.
"""

from __future__ import annotations

import difflib
import re
import sys
from dataclasses import dataclass

from agent.signals.units import dimension, units_for

__all__ = ["TERMS", "TYPES", "VENDOR_PREFIX", "Term", "check", "lookup", "markdown"]


@dataclass(frozen=True, slots=True)
class Term:
    """One vocabulary entry; `name` may hold the placeholders <n>, <id> and a final *."""

    name: str
    unit: str | None  # published UCUM unit; None for text, booleans, enums, counts, alarm.*
    type: str         # "number", "integer", "boolean", "string", "enum" or "any"
    meaning: str
    source: str       # the standard item(s) the term corresponds to
    values: tuple[str, ...] = ()  # the allowed labels of an "enum" term


VENDOR_PREFIX = "x."
TYPES = ("number", "integer", "boolean", "string", "enum", "any")

_MACHINE = (
    Term("machine.availability", None, "enum",
         "Whether the agent has a working link to the machine's controller; set by the "
         "agent from the device link, never read from the device.",
         "MTConnect Availability", ("AVAILABLE", "UNAVAILABLE")),
    Term("machine.execution", None, "enum",
         "Execution state of the machine's program or cycle; a controller's own states are "
         "mapped onto these (OPC 40501 ChannelState Active -> ACTIVE, Interrupted -> "
         "INTERRUPTED, Reset -> READY).",
         "MTConnect Execution; OPC 40501 ChannelState; OPC 40502 CncChannelProgramStatus",
         ("READY", "ACTIVE", "INTERRUPTED", "FEED_HOLD", "STOPPED", "OPTIONAL_STOP",
          "PROGRAM_STOPPED", "PROGRAM_COMPLETED", "WAIT", "PROGRAM_OPTIONAL_STOP")),
    Term("machine.mode", None, "string",
         "Operating mode as the controller labels it; labels vary by machine (CNC: "
         "AUTOMATIC, MANUAL, MANUAL_DATA_INPUT, SEMI_AUTOMATIC, EDIT; press: inch, single, "
         "continuous; injection moulding: AUTOMATIC, SEMI_AUTOMATIC, MANUAL, SETUP).",
         "MTConnect ControllerMode; OPC 40501 ChannelMode; OPC 40083 MachineMode"),
    Term("machine.state", None, "string",
         "The controller's own machine or channel state, as the device names it (e.g. "
         "active/interrupted/reset, running/stopped/alarm); `derive.execution` maps it onto "
         "machine.execution.",
         "OPC 40501 ChannelState; OPC 40083 MachineStatus; vendor state registers"),
    Term("machine.estop", None, "boolean",
         "Emergency stop: true while it is triggered, false when armed.",
         "MTConnect EmergencyStop"),
    Term("machine.operating_time", "s", "number",
         "Accumulated power-on time of the machine, as its controller counts it.",
         "MTConnect AccumulatedTime; OPC 40501 PowerOnDuration"),
    Term("machine.production_status", None, "string",
         "Production status set by the machine or its operator; EUROMAP 77 machines report "
         "OTHER, NO_PRODUCTION, START_UP, READY_FOR_PRODUCTION, PRODUCTION or DRY_RUN.",
         "OPC 40077/40083 MachineStatus ProductionStatus (EUROMAP 77)"),
    Term("machine.manufacturer", None, "string", "Name of the machine's manufacturer.",
         "OPC 40001-1 Identification Manufacturer; MTConnect Description manufacturer"),
    Term("machine.model", None, "string", "Model designation of the machine.",
         "OPC 40001-1 Identification Model; MTConnect Description model"),
    Term("machine.serial_number", None, "string", "Manufacturer's serial number of the machine.",
         "OPC 40001-1 Identification SerialNumber; MTConnect Description serialNumber"),
    Term("machine.software_revision", None, "string", "Revision of the controller's software.",
         "OPC 40001-1 Identification SoftwareRevision"),
)

_ALARM = (
    Term("alarm.*", None, "any",
         "Alarm and message state, one signal per aspect. The names after `alarm.` are "
         "free-form; by convention alarm.active (boolean: an alarm is active), alarm.code "
         "(number of the active alarm), alarm.text, alarm.severity, alarm.active_code.",
         "MTConnect Condition; OPC 40501 Notification (Messages)"),
)

_PRODUCTION = (
    Term("program.name", None, "string",
         "Name or number of the active part program, recipe or dataset.",
         "MTConnect Program; OPC 40501 ProductionProgram Name"),
    Term("program.state", None, "string",
         "State of the active program as the controller labels it (e.g. running, stopped, "
         "interrupted, aborted).",
         "OPC 40501 ProductionProgram State; OPC 40502 CncChannelProgramStatus"),
    Term("program.line", None, "integer",
         "Line or block number being executed in the active program.",
         "MTConnect LineNumber"),
    Term("part_count.total", None, "integer",
         "Parts produced, good and bad, by the machine's counter.",
         "MTConnect PartCount (ALL)"),
    Term("part_count.good", None, "integer", "Good parts produced.",
         "MTConnect PartCount (GOOD); OPC 40501 PartsGood; OPC 40083 JobGoodPartsCounter"),
    Term("part_count.bad", None, "integer", "Rejected (bad) parts produced.",
         "MTConnect PartCount (BAD); OPC 40083 JobBadPartsCounter"),
    Term("part_count.job", None, "integer", "Parts produced since the current job started.",
         "OPC 40083 JobPartsCounter; OPC 40501 ProductionJob PartsCompleted"),
    Term("part_count.target", None, "integer", "Parts the current job is to produce.",
         "MTConnect PartCount (TARGET); OPC 40083 NominalParts"),
    Term("cycle.count", None, "integer",
         "Machine cycles completed (program runs, moulding shots, forming cycles), by the "
         "controller's counter.",
         "MTConnect CycleCount; OPC 40503 CycleCount; OPC 40083 MachineCycleCounter"),
    Term("cycle.time", "s", "number", "Duration of the last completed cycle.",
         "OPC 40083 LastCycleTime; MTConnect ProcessTimer"),
)

_SPINDLE_PATH = (
    Term("spindle.speed.actual", "rev/min", "number", "Actual spindle speed.",
         "MTConnect RotaryVelocity (ACTUAL); OPC 40502 CncSpindle ActSpeed"),
    Term("spindle.speed.commanded", "rev/min", "number",
         "Commanded spindle speed (the programmed speed with the override applied).",
         "MTConnect RotaryVelocity (COMMANDED); OPC 40502 CncSpindle CmdSpeed"),
    Term("spindle.override", "%", "number", "Spindle speed override set at the operator panel.",
         "MTConnect RotaryVelocityOverride; OPC 40501 SpindleMonitoring Override"),
    Term("spindle.load", "%", "number", "Spindle drive load as a percentage of its rated load.",
         "MTConnect Load (spindle)"),
    Term("path.feedrate.actual", "mm/min", "number", "Actual feedrate along the tool path.",
         "MTConnect PathFeedrate (ACTUAL)"),
    Term("path.feedrate.commanded", "mm/min", "number", "Commanded feedrate along the tool path.",
         "MTConnect PathFeedrate (COMMANDED)"),
    Term("path.feed_override", "%", "number", "Feed override of the channel.",
         "MTConnect PathFeedrateOverride (PROGRAMMED); OPC 40501 ChannelMonitoring "
         "FeedOverride"),
    Term("path.rapid_override", "%", "number", "Rapid traverse override of the channel.",
         "MTConnect PathFeedrateOverride (RAPID); OPC 40501 ChannelMonitoring "
         "RapidOverride"),
    Term("axis.<id>.position", "mm", "number",
         "Actual position of linear axis <id> (x, y, z, ...).",
         "MTConnect Position (ACTUAL) of a Linear axis"),
    Term("axis.<id>.angle", "deg", "number",
         "Actual angular position of rotary axis <id> (a, b, c, ...).",
         "MTConnect Angle (ACTUAL) of a Rotary axis"),
    Term("axis.<id>.load", "%", "number",
         "Drive load of axis <id> as a percentage of its rated load.",
         "MTConnect Load (axis)"),
    Term("tool.number", None, "integer", "Number of the active tool.", "MTConnect ToolNumber"),
)

_PRESS = (
    Term("press.stroke_rate", "1/min", "number", "Stroke rate: strokes per minute.",
         "OPC 40503 forming cycle (3.2); MTConnect CycleCount rate"),
    Term("press.stroke_count", None, "integer",
         "Strokes made, by the press's stroke counter (every stroke, with or without a "
         "part).",
         "OPC 40503 CycleCount; MTConnect CycleCount"),
    Term("press.slide.position", "mm", "number",
         "Slide (ram) position along its stroke, as the press measures it.",
         "OPC 40503 FormingPositions; MTConnect Position"),
    Term("press.slide.at_tdc", None, "boolean", "The slide is at top dead centre.",
         "OPC 40503 FormingPositions TDC"),
    Term("press.crank_angle", "deg", "number",
         "Crankshaft angle: 0 deg at top dead centre, 180 deg at bottom dead centre.",
         "MTConnect Angle; OPC 40503 dead centre (3.2.2)"),
    Term("press.die_height", "mm", "number",
         "Die (shut) height set on the press: slide to bolster at bottom dead centre.",
         "OPC 40503 FormingTool; OPC 40503 FormingPositions BDC"),
    Term("press.force.ch<n>", "kN", "number",
         "Instantaneous force on tonnage-monitor channel <n> (one strain sensor per "
         "column or connection); compression positive.",
         "MTConnect Force; OPC 40503 CyclicProcessValue"),
    Term("press.force.peak.ch<n>", "kN", "number",
         "Peak force of the last stroke on tonnage-monitor channel <n>.",
         "OPC 40503 CyclicProcessValue; MTConnect Force"),
    Term("press.force.total_peak", "kN", "number",
         "Peak of the channels' summed force during the last stroke (the stroke's tonnage).",
         "OPC 40503 CyclicProcessValue; MTConnect Force"),
    Term("press.force.reverse_peak", "kN", "number",
         "Peak reverse (snap-through) force of the last stroke; negative (tension).",
         "OPC 40503 CyclicProcessValue; MTConnect Force"),
    Term("press.counterbalance_pressure", "kPa", "number",
         "Air pressure in the slide counterbalance cylinders.",
         "MTConnect Pressure"),
    Term("press.flywheel.speed", "rev/min", "number", "Flywheel speed.",
         "MTConnect RotaryVelocity"),
    Term("press.overload", None, "boolean",
         "Overload protection has tripped (hydraulic overload or tonnage limit exceeded).",
         "MTConnect Condition (LOAD); OPC 40503 FormingConditionClass"),
)

_FORGING = (
    Term("forging.blow_energy", "kJ", "number",
         "Energy of the last blow (hammer or screw press).",
         "OPC 40503 CyclicProcessValue"),
    Term("forging.force.peak", "kN", "number", "Peak forming force of the last blow.",
         "OPC 40503 CyclicProcessValue; MTConnect Force"),
    Term("forging.blows_on_billet", None, "integer", "Blows struck on the current billet.",
         "OPC 40503 cycle and run (3.2)"),
)

_IMM = (
    Term("imm.cushion", "mm", "number",
         "Cushion of the last cycle: the screw's position at the end of hold pressure.",
         "OPC 40077 InjectionUnitCycleParameters CushionStroke"),
    Term("imm.dosing_time", "s", "number", "Dosing (plasticising) time of the last cycle.",
         "OPC 40077 InjectionUnitCycleParameters DosingTime"),
    Term("imm.injection_time", "s", "number", "Injection time of the last cycle.",
         "OPC 40077 InjectionUnitCycleParameters InjectionTime"),
    Term("imm.injection_pressure", "kPa", "number",
         "Actual injection pressure (specific pressure where the machine reports it, "
         "otherwise hydraulic).",
         "OPC 40077 injection unit; MTConnect Pressure"),
    Term("imm.injection_pressure.peak", "kPa", "number",
         "Peak injection pressure of the last cycle.",
         "OPC 40077 InjectionUnitCycleParameters SpecificPressureMaximum, "
         "HydraulicPressureMaximum"),
    Term("imm.hold_pressure.peak", "kPa", "number",
         "Peak hold (packing) pressure of the last cycle.",
         "OPC 40077 InjectionUnitCycleParameters HoldSpecificPressureMaximum, "
         "HoldHydraulicPressureMaximum"),
    Term("imm.back_pressure", "kPa", "number", "Back pressure during dosing in the last cycle.",
         "OPC 40077 InjectionUnitCycleParameters BackPressure"),
    Term("imm.screw_position", "mm", "number", "Actual screw position (stroke).",
         "OPC 40077 InjectionUnit (MaxScrewStroke); MTConnect Position"),
    Term("imm.part_good", None, "boolean",
         "The machine's process monitoring judged the last cycle's parts good.",
         "OPC 40083 JobGoodPartsCounter, JobBadPartsCounter"),
)

_TEMPERATURE = (
    Term("temperature.zone<n>", "Cel", "number",
         "Actual temperature of heating or control zone <n> (temperature controller, "
         "furnace, heater).",
         "MTConnect Temperature; OPC 40083 TemperatureZone"),
    Term("temperature.zone<n>.setpoint", "Cel", "number", "Temperature setpoint of zone <n>.",
         "OPC 40083 TemperatureZone setpoint"),
    Term("temperature.barrel.zone<n>", "Cel", "number",
         "Actual temperature of barrel zone <n> of the injection unit, numbered as on the "
         "machine.",
         "OPC 40077 InjectionUnit TemperatureZones"),
    Term("temperature.mould.zone<n>", "Cel", "number",
         "Actual temperature of mould zone <n> (tempering or hot runner).",
         "OPC 40083 Mould TemperatureZones"),
    Term("temperature.oil", "Cel", "number", "Hydraulic or lubricating oil temperature.",
         "MTConnect Temperature (Hydraulic)"),
    Term("temperature.motor", "Cel", "number", "Main drive motor temperature.",
         "MTConnect Temperature (Motor)"),
    Term("temperature.die", "Cel", "number", "Die (tool) temperature.",
         "MTConnect Temperature; OPC 40503 FormingTool"),
    Term("temperature.billet_at_blow", "Cel", "number",
         "Billet temperature measured at the press when the blow is struck.",
         "MTConnect Temperature; OPC 40503 CyclicProcessValue"),
    Term("temperature.billet_exit", "Cel", "number", "Billet temperature at the heater exit.",
         "MTConnect Temperature"),
)

_DRIVES_UTILITIES = (
    Term("motor.current", "A", "number", "Main drive motor current.", "MTConnect Amperage"),
    Term("motor.power", "kW", "number", "Electrical power drawn by the main drive.",
         "MTConnect Wattage"),
    Term("motor.energy", "kW.h", "number",
         "Electrical energy consumed by the main drive (or the machine's meter), "
         "cumulative.",
         "MTConnect ElectricalEnergy"),
    Term("motor.on", None, "boolean", "The main drive motor is switched on.",
         "MTConnect PowerState"),
    Term("motor.running", None, "boolean", "The main drive motor is turning.",
         "OPC 40501 IsRotating; MTConnect RotaryVelocity"),
    Term("lubrication.pressure", "kPa", "number", "Central lubrication pressure.",
         "MTConnect Pressure (Lubrication)"),
    Term("lubrication.ok", None, "boolean",
         "The lubrication system reports no fault (level, pressure, cycle).",
         "MTConnect Condition (Lubrication)"),
    Term("lubrication.pump_on", None, "boolean", "The lubrication pump is running.",
         "MTConnect Lubrication component"),
    Term("air.pressure", "kPa", "number", "Compressed-air supply pressure.",
         "MTConnect Pressure (Pneumatic)"),
    Term("hydraulic.pressure", "kPa", "number", "Hydraulic system pressure.",
         "MTConnect Pressure (Hydraulic)"),
    Term("clutch.engaged", None, "boolean",
         "The press clutch is engaged (the flywheel drives the slide).",
         "OPC 40503 ProcessWorkingUnit (press drive)"),
    Term("brake.released", None, "boolean", "The press brake is released (the slide may move).",
         "OPC 40503 ProcessWorkingUnit (press drive)"),
    Term("die.id", None, "string", "Identifier of the mounted die or mould.",
         "OPC 40503 FormingTool Identification; OPC 40083 MouldId"),
    Term("die.clamp_closed", None, "boolean", "The die clamps are closed.",
         "OPC 40503 FormingTool"),
    Term("safety.light_curtain.clear", None, "boolean",
         "The light curtain guarding the working area is clear (status for monitoring "
         "only, never a safety function).",
         "IEC 61496 light curtain status"),
)

_HEATER_BILLET = (
    Term("heater.state", None, "string",
         "State of the billet heater as it labels it (e.g. off, heating, ready, fault).",
         "OPC 40001-1 MachineryItemState"),
    Term("heater.power", "kW", "number", "Power delivered by the induction heater.",
         "MTConnect Wattage"),
    Term("heater.frequency", "Hz", "number", "Output frequency of the induction heater's inverter.",
         "MTConnect Frequency"),
    Term("heater.zone<n>.output", "%", "number",
         "Output of zone <n>'s controller as a percentage of full heating power.",
         "OPC 40083 TemperatureZone (controller output)"),
    Term("heater.billet_count", None, "integer", "Billets heated, by the heater's counter.",
         "MTConnect PartCount"),
    Term("billet.count", None, "integer", "Billets delivered to the line, by the line's counter.",
         "MTConnect PartCount"),
    Term("billet.weight", "kg", "number", "Weight of the last billet.", "MTConnect Mass"),
    Term("billet.weight_stable", None, "boolean", "The scale reports its reading as settled.",
         "OIML R 76 stable equilibrium"),
    Term("billet.weight_out_of_tolerance", None, "boolean",
         "The last billet's weight lies outside its tolerance.",
         "MTConnect Condition; OPC 40503 CyclicProcessValue EURange"),
    Term("scale.gross_weight", "kg", "number", "Gross weight on the scale (tare included).",
         "MTConnect Mass; OIML R 76 gross value"),
)

_SECTIONS: tuple[tuple[str, tuple[Term, ...]], ...] = (
    ("Machine", _MACHINE),
    ("Alarm", _ALARM),
    ("Program & production", _PRODUCTION),
    ("Spindle & path", _SPINDLE_PATH),
    ("Press", _PRESS),
    ("Forging", _FORGING),
    ("Injection moulding", _IMM),
    ("Temperatures", _TEMPERATURE),
    ("Drives & utilities", _DRIVES_UTILITIES),
    ("Heater & billet", _HEATER_BILLET),
)

TERMS: tuple[Term, ...] = tuple(t for _, terms in _SECTIONS for t in terms)

_PLACEHOLDER = re.compile(r"<n>|<id>|\.\*$")
_PLACEHOLDER_REGEX = {
    "<n>": r"[1-9][0-9]*",
    "<id>": r"[a-z][a-z0-9_]*",
    ".*": r"\.[a-z0-9_]+(?:\.[a-z0-9_]+)*",
}
_PLACEHOLDER_HELP = {
    "<n>": "<n> is a number from 1, without leading zeros",
    "<id>": "<id> is one lower-case name segment",
    ".*": "* is one or more further name segments",
}


def _compile(name: str) -> re.Pattern[str]:
    parts: list[str] = []
    pos = 0
    for m in _PLACEHOLDER.finditer(name):
        parts += [re.escape(name[pos:m.start()]), _PLACEHOLDER_REGEX[m.group()]]
        pos = m.end()
    parts.append(re.escape(name[pos:]))
    return re.compile("".join(parts))


_EXACT: dict[str, Term] = {t.name: t for t in TERMS if not _PLACEHOLDER.search(t.name)}
# Keyed by the literal first segment, so a lookup tries only the few patterns that can match.
_PATTERNS: dict[str, list[tuple[re.Pattern[str], Term]]] = {}
for _term in TERMS:
    if _term.name not in _EXACT:
        _PATTERNS.setdefault(_term.name.split(".", 1)[0], []).append(
            (_compile(_term.name), _term))
del _term
_ALL_NAMES = tuple(t.name for t in TERMS)


def lookup(name: str) -> Term | None:
    """The term a signal name belongs to (exact or placeholder match); None if unknown,
    vendor-specific `x.` names included."""
    term = _EXACT.get(name)
    if term is not None:
        return term
    for pattern, term in _PATTERNS.get(name.split(".", 1)[0], ()):
        if pattern.fullmatch(name):
            return term
    return None


def check(name: str) -> Term | None:
    """The term of a signal name; None for a vendor-specific `x.` name; ValueError naming
    the closest term otherwise."""
    if name.startswith(VENDOR_PREFIX) and len(name) > len(VENDOR_PREFIX):
        return None
    term = lookup(name)
    if term is not None:
        return term
    message = f"{name!r} is not in the vocabulary (docs/vocabulary.md)"
    close = difflib.get_close_matches(name, _ALL_NAMES, n=1)
    if close:
        message += f"; did you mean {close[0]!r}"
        hints = [text for ph, text in _PLACEHOLDER_HELP.items()
                 if ph in close[0] and (ph != ".*" or close[0].endswith(ph))]
        if hints:
            message += f" ({'; '.join(hints)})"
        message += "?"
    else:
        message += "."
    raise ValueError(message + f" Vendor-specific names start with {VENDOR_PREFIX!r}")


_INTRO = """\
# Signal vocabulary

<!-- Generated by agent/signals/vocabulary.py: do not edit by hand. After changing the
vocabulary, run `python -m agent.signals.vocabulary > docs/vocabulary.md`. -->

The agent publishes every signal under a canonical name from this vocabulary, in the
unit and with the type fixed here, so that `press.force.peak.ch1` is a peak force in kN
from every press, whatever its controller. Names and meanings follow MTConnect data
items, OPC 40501 (machine tools, umati), OPC 40077/40083 (EUROMAP 77/83, injection
moulding) and OPC 40503 (metal forming); the source column names the corresponding item.

**Validation.** Loading the configuration checks every signal name against this list
and refuses a name that is not in it, suggesting the closest term, unless the name
starts with `x.`: that prefix is the escape for vendor-specific signals
(`x.hydraulic.valve3_current`), which are published as configured.

**Units.** `unit:` in a machine file is the unit the *device* reports in. The agent
converts values on the way in to the unit fixed here, with factors computed exactly
from the units' definitions: a tonnage monitor reporting in `tf` is published in `kN`
(x 9.80665), `bar` becomes `kPa` (x 100), `[degF]` becomes `Cel` ((F - 32) x 5/9),
`K` becomes `Cel` (K - 273.15), `[psi]` becomes `kPa`, `[in_i]` becomes `mm` (x 25.4)
and `1` (a 0..1 fraction) becomes `%` (x 100). A device unit of another quantity
(`kN` for a pressure) is refused. The device units accepted for each published unit
are listed under [Units](#units). Terms without a unit (text, booleans, enums, counts)
take none.

**Placeholders.** `<n>` stands for a number from 1 without leading zeros
(`temperature.zone1`, `temperature.zone12`; not `zone0` or `zone01`); `<id>` for one
lower-case name segment, `[a-z][a-z0-9_]*` (`axis.x.position`, `axis.c2.angle`); a final
`*` for one or more further segments (`alarm.active`, `alarm.spindle.overtemp`).

**Types.** `number` (a float), `integer`, `boolean`, `string` (free text, labels as the
machine gives them), `enum` (exactly one of the listed values), `any` (whatever the
device reports).

## Terms
"""


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def markdown() -> str:
    """The full text of docs/vocabulary.md."""
    out = [_INTRO]
    for title, terms in _SECTIONS:
        out.append(f"\n### {title}\n\n")
        out.append("| name | unit | type | meaning | source |\n")
        out.append("|---|---|---|---|---|\n")
        for t in terms:
            meaning = t.meaning
            if t.values:
                meaning += " Values: " + ", ".join(f"`{v}`" for v in t.values) + "."
            unit = f"`{t.unit}`" if t.unit else "-"
            out.append(f"| `{t.name}` | {unit} | {t.type} | {_cell(meaning)} "
                       f"| {_cell(t.source)} |\n")
    out.append("\n## Units\n\n")
    out.append("The device units (`unit:` in a machine file) accepted for each published "
               "unit.\n\n")
    out.append("| published unit | quantity | device units accepted |\n")
    out.append("|---|---|---|\n")
    for unit in sorted({t.unit for t in TERMS if t.unit}):
        accepted = ", ".join(f"`{u}`" for u in units_for(unit))
        out.append(f"| `{unit}` | {dimension(unit)} | {_cell(accepted)} |\n")
    return "".join(out)


if __name__ == "__main__":
    sys.stdout.write(markdown())
