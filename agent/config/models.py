"""Pydantic models of the agent file and of the protocol-independent part of a machine file.

The protocol-specific parts (connection block, signal address fields) come from each
driver's DriverSpec; `machine_model` joins them.
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    create_model,
    field_validator,
    model_validator,
)

from agent.signals import units, vocabulary
from agent.config.derive import DeriveConfig
from drivers.base import DriverSpec
from drivers.config_types import ByteSize, Duration
from agent.config.names import MAX_NAME_CHARS, MAX_PREFIX_CHARS, topic_level_problem
from drivers.secrets import CREDENTIAL_NAME

# Names that end up in MQTT topics: no '/', '+', '#' or spaces.
TOPIC_SAFE = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
SIGNAL_NAME = r"^[a-z][a-z0-9_]*(\.[a-z0-9_]+)*$"
PERCENT = r"^\s*\d+(\.\d+)?\s*%\s*$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AgentIdentity(_Strict):
    id: str = Field(pattern=TOPIC_SAFE, max_length=MAX_NAME_CHARS,
                    description="agent id, unique per gateway")
    site: str = Field(pattern=TOPIC_SAFE, max_length=MAX_NAME_CHARS, description="ISA-95 site")


class TlsConfig(_Strict):
    """`mqtt.tls`, for mqtts:// (a `tls` block turns TLS on for mqtt:// as well).

    The broker certificate is always verified, its name included: it must be signed by `ca`
    and name the host of `mqtt.url` in its subjectAltName (a DNS name, or for a url with an
    IP address that IP address). There is deliberately no switch to turn either check off:
    give the broker a certificate that names it. Files are relative to the config folder;
    that they exist and can be read is checked when the agent starts.
    """

    ca: str | None = Field(None, min_length=1, description="CA bundle (PEM) that signs the "
                           "broker certificate; default: the system's trusted CAs")
    cert: str | None = Field(None, min_length=1, description="client certificate (PEM) for "
                             "mutual TLS; needs `key`")
    key: str | None = Field(None, min_length=1, validate_default=True, description="client "
                            "private key (PEM, unencrypted, readable by the agent only) for "
                            "mutual TLS; may be the same file as `cert`")
    min_version: Literal["1.2", "1.3"] = Field("1.2", description="oldest TLS version accepted")

    @field_validator("min_version", mode="before")
    @classmethod
    def _version_as_text(cls, value: Any) -> Any:
        return str(value) if isinstance(value, float) else value

    @field_validator("key")
    @classmethod
    def _cert_and_key_together(cls, value: str | None, info: ValidationInfo) -> str | None:
        if "cert" not in info.data:
            return value  # cert itself is invalid: that error is reported
        if value is None and info.data["cert"] is not None:
            raise ValueError("required with cert: mutual TLS needs the client's private key")
        if value is not None and info.data["cert"] is None:
            raise ValueError("given without cert: mutual TLS needs the client certificate too")
        return value


SPARKPLUG_ID = r"^[^/+#\s]+$"  # a Sparkplug topic level: no '/', '+', '#' or spaces
MQTT_URL = r"^mqtts?://[^/:]+(:\d{1,5})?/?$"


class SparkplugConfig(_Strict):
    """`mqtt.sparkplug`: this agent as a Sparkplug B 3.0 edge node, each machine a device."""

    group_id: str = Field(pattern=SPARKPLUG_ID, description="Sparkplug group id")
    edge_node_id: str | None = Field(None, pattern=SPARKPLUG_ID,
                                     description="default: the agent id")
    primary_host_id: str | None = Field(
        None, pattern=SPARKPLUG_ID, description="publish births only while this host "
        "application says it is online (spBv1.0/STATE/<id>)")
    aliases: bool = Field(False, description="births carry name and alias, data the alias only")

    @field_validator("group_id", "edge_node_id", "primary_host_id", mode="before")
    @classmethod
    def _topic_level(cls, value: Any) -> Any:
        # Before the pattern, so the message names the offending character.
        if isinstance(value, str) and (problem := topic_level_problem(value)):
            raise ValueError(f"{problem} (a Sparkplug id is one level of its topics)")
        return value
    max_command_bytes: ByteSize = Field(
        64 * 1024, ge=256, le=16 * 1024**2, description="largest NCMD/DCMD payload read; a "
        "larger one is refused whole")
    max_command_metrics: int = Field(64, ge=1, le=10_000, description="most metrics in one "
                                     "NCMD/DCMD; a command with more is refused whole")
    rebirth_interval: Duration = Field(
        5.0, ge=0, le=3600, description="at most one rebirth per interval: requests within "
        "it are folded into one rebirth at its end")
    state_clock_skew: Duration = Field(
        60.0, ge=0, le=86400, description="a primary host STATE stamped further ahead of this "
        "gateway's clock is ignored (it would shut out every later STATE)")


def _no_credentials(value: Any) -> Any:
    """Refuse `mqtt://user:secret@host`: the client would ignore the credentials and the url
    is logged; the message masks them."""
    if isinstance(value, str) and "@" in value:
        scheme = value.partition("://")[0] + "://" if "://" in value else ""
        shown = f"{scheme}***@{value.rpartition('@')[2]}"
        raise ValueError(f"{shown}: credentials in the url are not allowed (they would be "
                         "logged in clear): use username with password_credential, "
                         "password_file or password_env")
    return value


# The pattern first: then it is in the JSON schema, and the credentials check still runs
# before it (a pattern error would print the url, secret included).
BrokerUrl = Annotated[str, Field(pattern=MQTT_URL), BeforeValidator(_no_credentials)]


class MqttConfig(_Strict):
    url: BrokerUrl = Field(
        "mqtt://127.0.0.1:1883", description="mqtt://host:port or mqtts://host:port",
    )
    more_urls: list[BrokerUrl] = Field(
        default_factory=list, description="other brokers, tried in turn after `url` when a "
        "connection fails; never two at once")
    sparkplug: SparkplugConfig | None = Field(None, description="with profile: sparkplug")
    client_id: str | None = Field(None, description="default: edge-agent-<agent id>")
    topic_prefix: str = Field("factory", pattern=r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$",
                              max_length=MAX_PREFIX_CHARS)
    encoding: Literal["json", "msgpack"] = "json"
    profile: Literal["uns", "sparkplug"] = Field(
        "uns", description="uns: telemetry/state/event topics of the ISA-95 hierarchy; "
        "sparkplug: Eclipse Sparkplug B 3.0 (needs `sparkplug`)")
    protocol: Literal["auto", "5", "3.1.1"] = Field(
        "auto", description="auto: MQTT 5, falling back to 3.1.1 if the broker refuses it"
    )
    keepalive: Duration = Field(30.0, ge=5)
    username: str | None = None
    password_env: str | None = Field(None, description="environment variable with the password")
    password_file: str | None = Field(None, description="file whose first line is the password")
    password_credential: str | None = Field(
        None, pattern=CREDENTIAL_NAME, description="systemd credential whose first line is the "
        "password: the file $CREDENTIALS_DIRECTORY/NAME (LoadCredential=NAME:PATH in the unit)")
    password: Any = Field(None, description="not allowed: use password_env or password_file")
    tls: TlsConfig | None = None
    max_inflight: int = Field(64, ge=1, le=65535, description="unacknowledged QoS 1 messages")
    max_packet_size: ByteSize = Field(
        128 * 1024, ge=1024, le=268_435_455, description="largest packet the broker may send "
        "this agent (MQTT 5 Maximum Packet Size; the broker drops larger messages)")
    reconnect_min: Duration = Field(0.5, gt=0)
    reconnect_max: Duration = Field(30.0, gt=0)
    state_interval: Duration = Field(
        5.0, ge=0.1, description="how often the retained state topic of a changed machine "
        "is refreshed (telemetry is unaffected: it carries every poll)"
    )

    @field_validator("url")
    @classmethod
    def _port_in_range(cls, value: str) -> str:
        port = value.rstrip("/").rpartition(":")[2]
        if port.isdigit() and not 1 <= int(port) <= 65535:
            raise ValueError(f"{value!r}: port must be 1..65535")
        return value

    @field_validator("protocol", mode="before")
    @classmethod
    def _protocol_as_text(cls, value: Any) -> Any:
        return str(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else value

    @field_validator("password")
    @classmethod
    def _no_inline_password(cls, value: Any) -> Any:
        if value is not None:
            raise ValueError("inline passwords are not allowed: use password_env or password_file")
        return value

    @field_validator("password_file")
    @classmethod
    def _one_password_source(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None and info.data.get("password_env"):
            raise ValueError("give password_env or password_file, not both")
        return value

    @field_validator("password_credential")
    @classmethod
    def _credential_alone(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None and (info.data.get("password_env") or info.data.get("password_file")):
            raise ValueError("give one of password_env, password_file or password_credential")
        return value

    @model_validator(mode="after")
    def _sparkplug_block(self) -> MqttConfig:
        if self.profile == "sparkplug" and self.sparkplug is None:
            raise ValueError("profile sparkplug needs `sparkplug: {group_id: ...}`")
        if self.profile != "sparkplug" and self.sparkplug is not None:
            raise ValueError("`sparkplug` applies to profile: sparkplug")
        return self

    @model_validator(mode="after")
    def _password_needs_username(self) -> MqttConfig:
        if not self.username and (self.password_env or self.password_file
                                  or self.password_credential):
            raise ValueError("a password (password_env, password_file or password_credential) "
                             "needs a username")
        return self


class BufferConfig(_Strict):
    path: str = Field("/var/lib/edge-agent/buffer.db", min_length=1)
    max_bytes: ByteSize = Field(1024**3, ge=64 * 1024)
    commit_interval: Duration = Field(
        0.05, ge=0, le=10, description="most collected data a power cut can lose"
    )

    @model_validator(mode="before")
    @classmethod
    def _milliseconds_alias(cls, data: Any) -> Any:
        # The first spelling of the design (docs/architecture.md), `commit_interval_ms: 50`, stays accepted.
        if isinstance(data, dict) and "commit_interval_ms" in data and "commit_interval" not in data:
            data = dict(data)
            value = data.pop("commit_interval_ms")
            data["commit_interval"] = f"{value}ms" if isinstance(value, (int, float)) else value
        return data


class MetricsConfig(_Strict):
    listen: str | None = Field(
        "127.0.0.1:9108", pattern=r"^[^:\s]+:\d{1,5}$", description="host:port, or null for off"
    )


class LoggingConfig(_Strict):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "json", "console"] = Field(
        "auto", description="auto: console on a terminal, JSON lines otherwise"
    )


class WriteConfig(_Strict):
    """Write-back: commands on {prefix}/{site}/{area}/{line}/{machine}/cmd change writable
    signals of machines. Off by default: then the agent does not even subscribe."""

    enabled: bool = Field(False, description="accept write commands (signals must also be "
                          "marked writable)")
    timeout: Duration = Field(5.0, gt=0, le=300, description="most a command may take from "
                              "its arrival, waiting for its machine's turn included")
    queue_size: int = Field(8, ge=1, le=1000, description="commands waiting per machine; "
                            "more are refused as busy")
    unknown_machines: Literal["reply", "ignore"] = Field(
        "ignore", description="commands for a machine this agent does not run: ignore them "
        "(logged once a burst), or reply unknown_machine (only where one agent runs the whole "
        "site: otherwise each would answer for the others' machines)")
    max_age: Duration = Field(10.0, gt=0, le=3600, description="commands carry the time they "
                              "were sent (ts); older ones, or ones from further ahead, are "
                              "refused as stale, so a retained or replayed command never runs")
    max_rate: float = Field(10.0, gt=0, le=10_000, description="commands a second per machine "
                            "(token bucket); beyond it and its burst they are dropped unanswered "
                            "and counted as rate_limited")
    burst: int = Field(20, ge=1, le=100_000, description="commands a machine may get at once "
                       "before max_rate applies")


class AgentFile(_Strict):
    """agent.yaml"""

    agent: AgentIdentity
    mqtt: MqttConfig = Field(default_factory=MqttConfig)
    buffer: BufferConfig = Field(default_factory=BufferConfig)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    machines: str = Field("machines.d", description="folder of machine files, relative to this file")
    shutdown_grace: Duration = Field(
        5.0, ge=0, le=300, description="how long a stop keeps publishing the backlog"
    )
    write: WriteConfig = Field(default_factory=WriteConfig)


class CommonSignal(_Strict):
    """Signal fields every protocol shares; a driver adds its own (address, type, ...)."""

    name: str = Field(pattern=SIGNAL_NAME, description="canonical signal name")
    unit: str | None = Field(None, description="the device's unit (UCUM-style, e.g. kN, tf, "
                             "bar, [degF]) of the value after scale and offset; it is "
                             "converted to the unit docs/vocabulary.md fixes for the name")
    poll: str | None = Field(None, description="poll group; may be left out with one group")
    scale: float = 1.0
    offset: float = 0.0
    enum: dict[int, str] | None = Field(None, description="raw integer -> label")
    deadband: float | str | None = Field(
        None, description="report by exception for a number: publish when it moves more than "
        "this (in the published unit), or more than `N%` of the last published value",
        json_schema_extra={"anyOf": [{"type": "number", "minimum": 0},
                                     {"type": "string", "pattern": PERCENT}, {"type": "null"}]},
    )
    heartbeat: Duration = Field(
        60.0, gt=0, description="report by exception: publish at least this often, "
        "even when unchanged"
    )
    report: Literal["auto", "every_poll"] = Field(
        "auto", description="auto: a number every poll unless it has a deadband; booleans, "
        "enum labels and text only on change (and at each heartbeat). every_poll: always")
    description: str | None = None
    writable: bool = Field(False, description="accept write commands for this signal "
                           "(needs write.enabled in agent.yaml)")
    min: float | None = Field(None, description="writes: lowest value accepted, in the "
                              "published unit")
    max: float | None = Field(None, description="writes: highest value accepted, in the "
                              "published unit")

    @field_validator("name")
    @classmethod
    def _in_vocabulary(cls, value: str) -> str:
        vocabulary.check(value)  # ValueError: not a canonical name, not `x.`
        return value

    @field_validator("unit")
    @classmethod
    def _convertible(cls, value: str | None, info: ValidationInfo) -> str | None:
        term = vocabulary.lookup(info.data.get("name") or "")
        if term is None:
            return value  # a vendor-specific name publishes the unit it is given
        if term.unit is None:
            if value is not None:
                raise ValueError(f"{term.name} has no unit (it is {_a(term.type)}): leave unit out")
            return value
        if value is not None:
            units.conversion(value, term.unit)  # ValueError names both units
        return value

    @field_validator("enum")
    @classmethod
    def _labels_in_vocabulary(cls, value: dict[int, str] | None,
                              info: ValidationInfo) -> dict[int, str] | None:
        term = vocabulary.lookup(info.data.get("name") or "")
        if value is not None and term is not None and term.values:
            wrong = sorted({label for label in value.values() if label not in term.values})
            if wrong:
                raise ValueError(f"{', '.join(map(repr, wrong))}: {term.name} takes "
                                 f"{', '.join(term.values)}")
        return value

    @field_validator("deadband")
    @classmethod
    def _deadband(cls, value: float | str | None) -> float | str | None:
        if isinstance(value, str):
            if not re.match(PERCENT, value):
                raise ValueError(f"{value!r}: give a number (absolute) or a percentage like 2%")
            return value.strip()
        if value is not None and (value < 0 or not math.isfinite(value)):
            raise ValueError(f"{value:g}: must be a finite number >= 0")
        return value

    def deadband_rule(self) -> tuple[float, bool] | None:
        """(amount, is_percent) of the deadband, or None."""
        if self.deadband is None:
            return None
        if isinstance(self.deadband, str):
            return float(self.deadband.rstrip("% \t")), True
        return float(self.deadband), False

    def transform(self) -> tuple[str | None, float, float]:
        """Published unit, scale and offset: the device value times scale plus offset is in
        `unit`, then converted to the unit the vocabulary fixes for this name."""
        term = vocabulary.lookup(self.name)
        if term is None or term.unit is None or self.unit is None:
            return (self.unit if term is None else term.unit), self.scale, self.offset
        factor, shift = units.conversion(self.unit, term.unit)
        return term.unit, self.scale * factor, self.offset * factor + shift

    @model_validator(mode="after")
    def _write_rules(self) -> CommonSignal:
        """A writable signal must be writable on its protocol and address; min/max only
        bound the numbers written to it."""
        bounded = self.min is not None or self.max is not None
        if bounded and not self.writable:
            raise ValueError("min/max bound the values written: they need writable: true")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min:g} is greater than max {self.max:g}")
        if not self.writable:
            return self
        write_spec = getattr(self, "write_spec", None)
        if write_spec is None:
            raise ValueError("writable: this protocol cannot write to devices")
        spec = write_spec()  # ValueError (a read-only address) becomes the config error
        if bounded and (self.enum is not None or not spec.numeric):
            kind = ("enum labels" if self.enum is not None
                    else "true/false" if spec.kind == "bool" else "a string")
            raise ValueError(f"min/max apply to numbers; this signal takes {kind}")
        if self.transform()[1] == 0 and spec.numeric and self.enum is None:
            raise ValueError("writable: scale 0 cannot be reversed into a device value")
        return self


class MachineBase(_Strict):
    id: str = Field(pattern=TOPIC_SAFE, max_length=MAX_NAME_CHARS)
    family: Literal["cnc", "press", "forging", "injection", "other"]
    area: str = Field(pattern=TOPIC_SAFE, max_length=MAX_NAME_CHARS, description="ISA-95 area")
    line: str = Field(pattern=TOPIC_SAFE, max_length=MAX_NAME_CHARS, description="ISA-95 line")
    description: str | None = None
    enabled: bool = True
    poll: dict[str, Annotated[Duration, Field(ge=0.001)]] = Field(
        min_length=1, description="poll group -> interval (at least 1ms)")
    derive: DeriveConfig = Field(default_factory=DeriveConfig, description="signals and "
                                 "events computed at the edge from what is polled")


def _a(word: str) -> str:
    return f"an {word}" if word[0] in "aeiou" else f"a {word}"


def signal_model(spec: DriverSpec) -> type[BaseModel]:
    """The full signal model of one protocol: common fields plus the driver's."""
    return create_model(
        f"{_camel(spec.protocol)}Signal", __base__=(CommonSignal, spec.signal_model)
    )


def machine_model(spec: DriverSpec) -> type[BaseModel]:
    """The machine-file model of one protocol."""
    return create_model(
        f"{_camel(spec.protocol)}Machine",
        __base__=MachineBase,
        connection=(spec.connection_model, ...),
        signals=(list[signal_model(spec)], Field(min_length=1)),  # type: ignore[misc, arg-type]
    )


def _camel(protocol: str) -> str:
    return "".join(part.capitalize() for part in protocol.replace("_", "-").split("-"))
