"""Load a config folder: agent.yaml plus one file per machine, every problem reported at once
as `file:line: field: message`.

A machine file may `use:` a template (agent/config/templates.py). Every error is located
through the document's `locate`, so it names the file and line the offending value is
written at, a template's included, and the field path as numbered in that file.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from agent.config.derive import check_derive
from agent.config import names as topic_names
from agent.config.models import AgentFile, MachineBase, machine_model
from agent.config.templates import Problem, TemplateLibrary
from agent.config.yaml_source import (
    Location,
    SourceDocument,
    YamlDocument,
    YamlLimitError,
    YamlSyntaxError,
    load_yaml,
)
from drivers.base import DriverSpec

AGENT_FILE = "agent.yaml"


@dataclass(frozen=True, slots=True)
class ConfigError:
    """One problem: where it is and what is wrong."""

    file: str
    line: int | None
    field: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.field}: {self.message}" if self.field else f"{where}: {self.message}"


class ConfigInvalid(Exception):
    """The config folder has problems; `errors` lists all of them."""

    def __init__(self, errors: Sequence[ConfigError]) -> None:
        super().__init__("\n".join(str(e) for e in errors))
        self.errors = list(errors)


@dataclass(slots=True)
class MachineConfig:
    """A validated machine file."""

    model: Any  # the protocol's machine model (MachineBase + connection + signals)
    spec: DriverSpec
    source: Path
    # Content hash of the machine file and every template it uses, so a reload can tell
    # changed machines from unchanged.
    digest: str
    # The config folder, to find the file (and templates) again for later errors: the
    # parsed YAML trees are not kept, they would cost a running agent megabytes.
    root: Path | None = field(default=None, repr=False, compare=False)

    @property
    def id(self) -> str:
        return self.model.id  # type: ignore[no-any-return]

    def signals_by_group(self) -> dict[str, list[Any]]:
        """Signals per poll group, in file order; a signal without `poll` is in the only group."""
        groups: dict[str, list[Any]] = {name: [] for name in self.model.poll}
        only = next(iter(self.model.poll)) if len(self.model.poll) == 1 else None
        for signal in self.model.signals:
            group = signal.poll or only  # validation guarantees one of the two
            groups[group].append(signal)  # type: ignore[index]
        return {name: signals for name, signals in groups.items() if signals}

    def locate(self, loc: Sequence[str | int]) -> Location:
        """Where `loc` of this machine's data is written (in a template, for inherited values);
        reads the file and its templates again (for the rare error found after loading)."""
        root = self.root if self.root is not None else self.source.parent
        rel = _rel(self.source, root)
        read = load_yaml(self.source, rel)
        document = TemplateLibrary(root).resolve(read, rel, [])
        return (document if document is not None else read).locate(loc)


@dataclass(slots=True)
class LoadedConfig:
    """A whole validated config folder."""

    root: Path
    agent: AgentFile
    machines: list[MachineConfig] = field(default_factory=list)


def load_config(root: Path, drivers: Mapping[str, DriverSpec]) -> LoadedConfig:
    """Validate `root/agent.yaml` and its machine folder; raise ConfigInvalid with every error."""
    errors: list[ConfigError] = []
    agent_path = root / AGENT_FILE
    agent_doc = _read(agent_path, root, errors)
    agent = _validate(agent_doc, AgentFile, errors) if agent_doc else None
    # Even when agent.yaml is invalid, check the machine folder it names (or the default).
    raw_folder = agent_doc.data.get("machines") if agent_doc else None
    folder = agent.machines if agent else (raw_folder if isinstance(raw_folder, str) else "machines.d")
    machines_dir = root / folder
    machines: list[MachineConfig] = []
    models: dict[str, type[BaseModel]] = {}  # per protocol: building one costs milliseconds
    templates = TemplateLibrary(root)  # reads each template once, however many machines use it
    if not machines_dir.is_dir():
        line = agent_doc.line_of(["machines"]) if agent_doc and "machines" in agent_doc.data else None
        errors.append(ConfigError(AGENT_FILE, line, "machines",
                                  f"machine folder {_rel(machines_dir, root)} does not exist"))
    else:
        files = sorted([*machines_dir.glob("*.yaml"), *machines_dir.glob("*.yml")])
        if not files:
            errors.append(ConfigError(_rel(machines_dir, root), None, "",
                                      "no machine files (*.yaml) in this folder"))
        seen: dict[str, str] = {}
        for path in files:
            machine = _load_machine(path, root, drivers, models, templates, errors)
            if machine is None:
                continue
            rel = _rel(path, root)
            if machine.id in seen:
                errors.append(error_at(machine.locate(("id",)),
                                     f"machine id {machine.id!r} is already used in {seen[machine.id]}"))
                continue
            seen[machine.id] = rel
            machines.append(machine)
        _check_shared(machines, root, errors)
    if agent is not None and agent_doc is not None:
        _check_topics(agent, agent_doc, machines, errors)
    if errors or agent is None:
        raise ConfigInvalid(errors)
    return LoadedConfig(root, agent, machines)


def _check_shared(machines: list[MachineConfig], root: Path, errors: list[ConfigError]) -> None:
    """Machines on one shared line (a serial bus) must agree on its settings and may not
    use the same address on it."""
    lines: dict[str, tuple[Any, str]] = {}
    members: dict[tuple[str, Any], str] = {}
    for machine in machines:
        if machine.spec.shared_resource is None:
            continue
        shared = machine.spec.shared_resource(machine.model.connection)
        if shared is None:
            continue
        key, settings, member = shared
        rel = _rel(machine.source, root)
        first = lines.setdefault(key, (settings, rel))
        at = machine.locate(("connection",))
        if first[0] != settings:
            differ = ", ".join(f"{k} {first[0][k]!r}" for k in first[0]
                               if first[0][k] != settings.get(k))
            errors.append(error_at(at, f"shares its line with {first[1]}, which sets {differ}: "
                                 "every unit on one line needs the same settings"))
        elif member is not None:
            other = members.setdefault((key, member), rel)
            if other != rel:
                errors.append(error_at(at, f"unit {member} on this line is already polled by {other}",
                                     field="connection.unit_id"))


def _check_topics(agent: AgentFile, agent_doc: YamlDocument, machines: list[MachineConfig],
                  errors: list[ConfigError]) -> None:
    """Every topic the agent will publish or subscribe to is one the broker takes. The
    per-name limits keep them far below MQTT's; this holds should those limits grow."""
    for loc, topic in topic_names.agent_topics(agent):
        problem = topic_names.topic_problem(topic)
        if problem is not None:
            errors.append(ConfigError(AGENT_FILE, agent_doc.line_of(loc), _field_path(loc),
                                      f"{problem} (with mqtt.topic_prefix and agent.site, or "
                                      "the Sparkplug ids)"))
            break
    for machine in machines:
        for topic in topic_names.machine_topics(agent, machine.model):
            problem = topic_names.topic_problem(topic)
            if problem is not None:
                errors.append(error_at(machine.locate(("id",)), f"{problem} (made of this "
                                       "machine's area, line and id under agent.yaml's names)"))
                break


def _rel(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def error_at(at: Location, message: str, field: str | None = None) -> ConfigError:
    """An error at `at`, its field path as numbered in that file unless `field` is given."""
    return ConfigError(at.file, at.line, _field_path(at.loc) if field is None else field,
                       message + at.note)


def _read(path: Path, root: Path, errors: list[ConfigError]) -> YamlDocument | None:
    rel = _rel(path, root)
    try:
        doc = load_yaml(path, rel)
    except FileNotFoundError:
        errors.append(ConfigError(rel, None, "", "file not found"))
        return None
    except (OSError, UnicodeDecodeError) as exc:
        errors.append(ConfigError(rel, None, "", f"cannot read: {exc}"))
        return None
    except YamlLimitError as exc:
        errors.append(ConfigError(rel, exc.line, "", str(exc)))
        return None
    except YamlSyntaxError as exc:
        errors.append(ConfigError(rel, exc.line, "", f"invalid YAML: {exc}"))
        return None
    if not isinstance(doc.data, dict):
        kind = "empty" if doc.data is None else f"a {type(doc.data).__name__}"
        errors.append(ConfigError(rel, 1, "", f"expected a mapping of fields, the file is {kind}"))
        return None
    return doc


def _validate(doc: SourceDocument, model: type[BaseModel],
              errors: list[ConfigError], data: Any = None, base_dir: Path | None = None) -> Any:
    try:
        # base_dir: relative file names in a config file are relative to that file.
        return model.model_validate(doc.data if data is None else data,
                                    context={"base_dir": base_dir})
    except ValidationError as exc:
        for err in exc.errors():
            loc = tuple(err["loc"])
            known = _fields_at(model, loc[:-1]) if err["type"] == "extra_forbidden" else set()
            errors.append(error_at(doc.locate(loc), _message(err, known)))
        return None


def _load_machine(path: Path, root: Path, drivers: Mapping[str, DriverSpec],
                  models: dict[str, type[BaseModel]], templates: TemplateLibrary,
                  errors: list[ConfigError]) -> MachineConfig | None:
    read = _read(path, root, errors)
    if read is None:
        return None
    problems: list[Problem] = []
    doc = templates.resolve(read, _rel(path, root), problems)
    errors.extend(error_at(p.where, p.message, field=p.field) for p in problems)
    if doc is None:
        return None
    data = doc.data
    connection = data.get("connection")
    protocol = connection.get("protocol") if isinstance(connection, dict) else None
    spec = drivers.get(protocol) if isinstance(protocol, str) else None
    if spec is None:
        # Check the protocol-independent fields anyway so one run shows every problem.
        partial = {k: v for k, v in data.items() if k not in ("connection", "signals")}
        _validate(doc, MachineBase, errors, partial)
        if not isinstance(connection, dict):
            errors.append(error_at(doc.locate(("connection",)),
                                 "required: a mapping with at least `protocol`"))
        else:
            choices = ", ".join(sorted(drivers))
            errors.append(error_at(doc.locate(("connection", "protocol")),
                                 f"{protocol!r} is not one of {choices}" if protocol is not None
                                 else f"required field is missing (one of {choices})"))
        return None
    before = len(errors)
    if spec.protocol not in models:
        models[spec.protocol] = machine_model(spec)
    model = _validate(doc, models[spec.protocol], errors, base_dir=path.parent)
    _check_signals(data, doc, errors)
    if model is not None and len(errors) == before:
        found = list(check_derive(model.derive, model.signals))
        if spec.check is not None:
            found += spec.check(model.connection, model.signals, model.poll)
        for loc, message in found:
            errors.append(error_at(doc.locate(loc), message))
    if model is None or len(errors) > before:
        return None
    return MachineConfig(model, spec, path, doc.digest, root)


def _check_signals(data: dict[str, Any], doc: SourceDocument, errors: list[ConfigError]) -> None:
    # On the raw data, so that these show up alongside field errors of the same file.
    signals = data.get("signals")
    poll = data.get("poll")
    if not isinstance(signals, list):
        return
    groups = [str(g) for g in poll] if isinstance(poll, dict) else None
    names: dict[str, int] = {}
    for i, signal in enumerate(signals):
        if not isinstance(signal, dict):
            continue
        name = signal.get("name")
        if isinstance(name, str):
            if name in names:
                at = doc.locate(("signals", i, "name"))
                first = doc.locate(("signals", names[name]))
                # Index numbering is per file: name the first one's file when it differs.
                shown = (_field_path(first.loc) if first.file == at.file
                         else f"{first.file}:{first.line}")
                errors.append(error_at(at, f"{name!r} is already defined at {shown}"))
            else:
                names[name] = i
        if groups is None:
            continue
        group = signal.get("poll")
        if group is None and len(groups) > 1:
            errors.append(error_at(doc.locate(("signals", i, "poll")),
                                 f"required when the machine has several poll groups "
                                 f"({', '.join(groups)})"))
        elif group is not None and str(group) not in groups:
            errors.append(error_at(doc.locate(("signals", i, "poll")),
                                 f"{group!r} is not a poll group of this machine "
                                 f"({', '.join(groups)})"))


def _field_path(loc: Sequence[str | int]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _fields_at(model: type[BaseModel], loc: Sequence[str | int]) -> set[str]:
    """Field names valid at `loc` inside `model` (for did-you-mean hints)."""
    current: Any = model
    for part in loc:
        if isinstance(current, type) and issubclass(current, BaseModel):
            info = current.model_fields.get(str(part))
            if info is None:
                return set()
            current = info.annotation
        else:
            current = next(iter(_models_in(current)), None)
            if current is None:
                return set()
            if isinstance(part, str):
                info = current.model_fields.get(part)
                if info is None:
                    return set()
                current = info.annotation
    found = current if isinstance(current, type) and issubclass(current, BaseModel) else next(
        iter(_models_in(current)), None)
    return set(found.model_fields) if found is not None else set()


def _models_in(annotation: Any) -> list[Any]:
    found = []
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        found.append(annotation)
    for arg in getattr(annotation, "__args__", ()) or ():
        found.extend(_models_in(arg))
    return found


_QUOTED = re.compile(r"'([^']*)'")


def _message(err: Mapping[str, Any], known: set[str]) -> str:
    kind, value, ctx = err["type"], err.get("input"), err.get("ctx") or {}
    if kind == "missing":
        return "required field is missing"
    if kind == "extra_forbidden":
        name = str(err["loc"][-1]) if err["loc"] else ""
        close = difflib.get_close_matches(name, sorted(known), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return f"unknown field{hint}"
    if kind in ("literal_error", "enum"):
        choices = _QUOTED.findall(str(ctx.get("expected", "")))
        return f"{value!r} is not one of {', '.join(choices)}"
    if kind in ("value_error", "assertion_error"):
        return str(err["msg"]).removeprefix("Value error, ").removeprefix("Assertion failed, ")
    if kind == "string_pattern_mismatch":
        return f"{_shown(value)} does not match the pattern {ctx.get('pattern')}"
    if kind == "string_too_long" and isinstance(value, str):
        return (f"{_shown(value)} is {len(value)} characters long; "
                f"at most {ctx.get('max_length')}")
    msg = str(err["msg"])
    msg = msg[0].lower() + msg[1:] if msg else msg
    return f"{_shown(value)}: {msg}" if not isinstance(value, (dict, list)) else msg


def _shown(value: Any) -> str:
    # A value echoed in full could be megabytes long (a 70,000-character id).
    text = repr(value)
    return text if len(text) <= 80 else f"{text[:60]}...{text[-1]}"
