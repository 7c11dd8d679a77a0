"""The files a loaded config names, checked the way `run` will open them: the broker password
and TLS files of agent.yaml here, each machine's through its driver's `check_files` hook
(drivers/base.py), so a new protocol brings its own checks and this module stays as it is.

Problems come out as `file:line: field: message`, like the loader's config errors;
warnings (a secret other users can read, a password variable not set in this shell) as
`file:line: field: warning: message`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from agent.config.loader import AGENT_FILE, ConfigError, LoadedConfig, MachineConfig, error_at
from agent.config.models import MqttConfig
from agent.config.yaml_source import load_yaml
from drivers.file_checks import FileChecker, FileProblem
from drivers.secrets import PasswordSource


def mqtt_password(cfg: MqttConfig, config_root: Path) -> PasswordSource:
    """Where the broker password comes from; a relative file is in the config folder."""
    return PasswordSource(("mqtt",), cfg.password_env, cfg.password_file,
                          cfg.password_credential, config_root)


@dataclass(slots=True)
class FileReport:
    """What `validate` prints: errors (exit 2) and warnings (exit 0), one line each."""

    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def add(self, problems: list[FileProblem], locate: Callable[[FileProblem], ConfigError]) -> None:
        for problem in problems:
            error = locate(problem)
            if not problem.warning:
                self.errors.append(str(error))
                continue
            line = str(dataclasses.replace(error, message="warning: " + error.message))
            if line not in self.warnings:  # the TLS check and the file check both see a key
                self.warnings.append(line)


def check_files(config: LoadedConfig, files: FileChecker) -> FileReport:
    """Every problem with every file `config` names. Blocking file I/O: for validate."""
    report = FileReport()
    agent_doc = load_yaml(config.root / AGENT_FILE, AGENT_FILE)

    def in_agent_file(problem: FileProblem) -> ConfigError:
        return ConfigError(AGENT_FILE, agent_doc.line_of(problem.loc), problem.field,
                           problem.message)

    mqtt = config.agent.mqtt
    report.add(mqtt_password(mqtt, config.root).check(files), in_agent_file)
    report.add(_tls_problems(mqtt, config.root, files), in_agent_file)
    for machine in config.machines:
        if machine.spec.check_files is not None:
            report.add(machine.spec.check_files(machine.model.connection, files),
                       _in_machine_file(machine))
    return report


def _in_machine_file(machine: MachineConfig) -> Callable[[FileProblem], ConfigError]:
    # Located like the loader's errors: in the template, if the value came from one.
    return lambda problem: error_at(machine.locate(problem.loc), problem.message)


def _tls_problems(mqtt: MqttConfig, config_root: Path, files: FileChecker) -> list[FileProblem]:
    from agent.config.tls import TlsFileError, tls_context
    tls = mqtt.tls
    if tls is None:
        return []
    problems: list[FileProblem] = []
    for name in ("ca", "cert", "key"):
        value = getattr(tls, name)
        if value is not None:
            # Resolved as tls_context does: relative to the config folder.
            problems += files.check(("mqtt", "tls", name), config_root / Path(value).expanduser(),
                                    secret=name == "key")
    if any(not p.warning for p in problems):
        return problems  # tls_context would only say the same again
    warnings: list[str] = []
    try:
        # What `run` does with them: PEM contents, passphrases, cert and key matching.
        tls_context(tls, config_root, warnings.append)
    except TlsFileError as exc:
        problems.append(FileProblem(("mqtt", "tls", exc.name), exc.message))
    for warning in warnings:  # "mqtt.tls.NAME: message"
        where, _, message = warning.partition(": ")
        problems.append(FileProblem(tuple(where.split(".")), message, warning=True))
    return problems
