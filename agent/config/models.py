"""Pydantic models of the agent file and of the protocol-independent part of a machine file.

The protocol-specific parts (connection block, signal address fields) come from each
driver's DriverSpec; `machine_model` joins them.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model, field_validator, model_validator

from drivers.base import DriverSpec
from drivers.config_types import ByteSize, Duration

# Names that end up in MQTT topics: no '/', '+', '#' or spaces.
TOPIC_SAFE = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
SIGNAL_NAME = r"^[a-z][a-z0-9_]*(\.[a-z0-9_]+)*$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AgentIdentity(_Strict):
    id: str = Field(pattern=TOPIC_SAFE, description="agent id, unique per gateway")
    site: str = Field(pattern=TOPIC_SAFE, description="ISA-95 site")


class TlsConfig(_Strict):
    ca: str | None = Field(None, description="CA bundle (PEM) that signs the broker certificate")
    cert: str | None = Field(None, description="client certificate (PEM) for mutual TLS")
    key: str | None = Field(None, description="client private key (PEM) for mutual TLS")
    min_version: Literal["1.2", "1.3"] = "1.2"

    @field_validator("min_version", mode="before")
    @classmethod
    def _version_as_text(cls, value: Any) -> Any:
        return str(value) if isinstance(value, float) else value


class MqttConfig(_Strict):
    url: str = Field(
        "mqtt://127.0.0.1:1883", pattern=r"^mqtts?://[^/:]+(:\d{1,5})?/?$",
        description="mqtt://host:port or mqtts://host:port",
    )
    client_id: str | None = Field(None, description="default: edge-agent-<agent id>")
    topic_prefix: str = Field("factory", pattern=r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$")
    encoding: Literal["json", "msgpack"] = "json"
    profile: Literal["uns"] = "uns"
    protocol: Literal["auto", "5", "3.1.1"] = Field(
        "auto", description="auto: MQTT 5, falling back to 3.1.1 if the broker refuses it"
    )
    keepalive: Duration = Field(30.0, ge=5)
    username: str | None = None
    password_env: str | None = Field(None, description="environment variable with the password")
    password_file: str | None = Field(None, description="file whose first line is the password")
    password: Any = Field(None, description="not allowed: use password_env or password_file")
    tls: TlsConfig | None = None
    max_inflight: int = Field(64, ge=1, le=65535, description="unacknowledged QoS 1 messages")
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


class BufferConfig(_Strict):
    path: str = Field("/var/lib/edge-agent/buffer.db", min_length=1)
    max_bytes: ByteSize = Field(1024**3, ge=64 * 1024)
    commit_interval: Duration = Field(
        0.05, ge=0, le=10, description="most collected data a power cut can lose"
    )

    @model_validator(mode="before")
    @classmethod
    def _milliseconds_alias(cls, data: Any) -> Any:
        # DESIGN.md's first spelling, `commit_interval_ms: 50`, stays accepted.
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


class CommonSignal(_Strict):
    """Signal fields every protocol shares; a driver adds its own (address, type, ...)."""

    name: str = Field(pattern=SIGNAL_NAME, description="canonical signal name")
    unit: str | None = Field(None, description="UCUM-style unit, e.g. kN, mm, Cel, rev/min")
    poll: str | None = Field(None, description="poll group; may be left out with one group")
    scale: float = 1.0
    offset: float = 0.0
    enum: dict[int, str] | None = Field(None, description="raw integer -> label")
    deadband: float | None = Field(
        None, ge=0, description="report by exception: publish when the value moves this much"
    )
    heartbeat: Duration = Field(
        60.0, gt=0, description="with a deadband: publish at least this often"
    )
    description: str | None = None


class MachineBase(_Strict):
    id: str = Field(pattern=TOPIC_SAFE)
    family: Literal["cnc", "press", "forging", "injection", "other"]
    area: str = Field(pattern=TOPIC_SAFE, description="ISA-95 area")
    line: str = Field(pattern=TOPIC_SAFE, description="ISA-95 line")
    description: str | None = None
    enabled: bool = True
    poll: dict[str, Annotated[Duration, Field(ge=0.001)]] = Field(
        min_length=1, description="poll group -> interval (at least 1ms)")


def signal_model(spec: DriverSpec) -> type[BaseModel]:
    """The full signal model of one protocol: common fields plus the driver's."""
    return create_model(  # type: ignore[call-overload, no-any-return]
        f"{_camel(spec.protocol)}Signal", __base__=(CommonSignal, spec.signal_model)
    )


def machine_model(spec: DriverSpec) -> type[BaseModel]:
    """The machine-file model of one protocol."""
    return create_model(  # type: ignore[call-overload, no-any-return]
        f"{_camel(spec.protocol)}Machine",
        __base__=MachineBase,
        connection=(spec.connection_model, ...),
        signals=(list[signal_model(spec)], Field(min_length=1)),  # type: ignore[misc, arg-type]
    )


def _camel(protocol: str) -> str:
    return "".join(part.capitalize() for part in protocol.replace("_", "-").split("-"))
