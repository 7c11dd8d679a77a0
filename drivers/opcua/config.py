"""Config models of the OPC UA driver: connection, security, identity, event sources, signals."""

from __future__ import annotations

import socket
from typing import Any, Literal, Mapping, Sequence

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from drivers.base import WriteSpec
from drivers.config_types import Duration, FilePath
from drivers.opcua.addressing import is_node_id, parse_browse_path, parse_node_id
from drivers.secrets import CREDENTIAL_NAME, PasswordSource

Policy = Literal["None", "Basic256Sha256", "Aes128_Sha256_RsaOaep", "Aes256_Sha256_RsaPss"]
Mode = Literal["read", "subscribe", "event"]
WhereOp = Literal["==", "!=", ">", ">=", "<", "<="]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def default_application_uri() -> str:
    """The client application URI `edge-agent certs create` writes into the certificate."""
    return f"urn:{socket.gethostname()}:edge-agent"


class SecurityConfig(_Strict):
    """Message security of the secure channel, and which server certificates to trust."""

    policy: Policy = "None"
    mode: Literal["None", "Sign", "SignAndEncrypt"] | None = Field(
        None, description="default: SignAndEncrypt with a policy, None without")
    certificate: FilePath | None = Field(None, description="client application certificate (DER or PEM)")
    private_key: FilePath | None = Field(None, description="its private key (PEM)")
    trust: FilePath | None = Field(
        None, description="folder of trusted server certificates (or of the CAs that issued them)")
    trust_on_first_use: bool = Field(
        False, description="trust an unknown server certificate once and store it in `trust`")
    application_uri: str | None = Field(
        None, description="the client's application URI; default: the URI in `certificate`, "
        "else urn:<hostname>:edge-agent")

    @model_validator(mode="after")
    def _consistent(self) -> SecurityConfig:
        if self.mode is None:
            self.mode = "None" if self.policy == "None" else "SignAndEncrypt"
        if (self.policy == "None") != (self.mode == "None"):
            raise ValueError(f"policy {self.policy} cannot be used with mode {self.mode}")
        if self.policy != "None":
            missing = [n for n in ("certificate", "private_key", "trust") if getattr(self, n) is None]
            if missing:
                raise ValueError(f"policy {self.policy} needs {', '.join(missing)} "
                                 "(`edge-agent certs create` makes the certificate and key)")
        if self.trust_on_first_use and self.trust is None:
            raise ValueError("trust_on_first_use needs a `trust` folder to store the certificate in")
        return self


class AuthConfig(_Strict):
    """User identity: anonymous (default), username + password, or an X.509 certificate."""

    username: str | None = Field(None, min_length=1)
    password_env: str | None = Field(None, min_length=1, description="environment variable with the password")
    password_file: FilePath | None = Field(None, description="file whose first line is the password")
    password_credential: str | None = Field(
        None, pattern=CREDENTIAL_NAME, description="systemd credential whose first line is the "
        "password: the file $CREDENTIALS_DIRECTORY/NAME (LoadCredential=NAME:PATH in the unit)")
    password: Any = Field(None, description="not allowed: use password_env or password_file")
    certificate: FilePath | None = Field(None, description="user certificate for certificate identity")
    private_key: FilePath | None = None
    allow_plaintext_password: bool = Field(
        False, description="accept a password with security policy None, where it crosses the "
        "network unencrypted for anyone on the path to read (an isolated test cell only)")

    @model_validator(mode="after")
    def _one_identity(self) -> AuthConfig:
        if self.password is not None:
            raise ValueError("an inline password is not allowed: use password_env or password_file")
        if self.username is None and (self.password_env or self.password_file
                                      or self.password_credential):
            raise ValueError("a password needs a username")
        if self.password_env and self.password_file:
            raise ValueError("give password_env or password_file, not both")
        if self.password_credential and (self.password_env or self.password_file):
            raise ValueError("give one of password_env, password_file or password_credential")
        if (self.certificate is None) != (self.private_key is None):
            raise ValueError("certificate identity needs both certificate and private_key")
        if self.certificate is not None and self.username is not None:
            raise ValueError("give a username or a certificate identity, not both")
        return self

    def password_source(self) -> PasswordSource:
        # The loader has made password_file absolute (relative to the machine file).
        return PasswordSource(("connection", "auth"), self.password_env, self.password_file,
                              self.password_credential)


class WhereTerm(_Strict):
    """One condition of an event filter's where clause; the terms are AND-ed."""

    field: str = Field(min_length=1, description="event field by browse path, e.g. Severity")
    op: WhereOp = "=="
    value: float | int | bool | str

    @field_validator("field")
    @classmethod
    def _path(cls, value: str) -> str:
        parse_browse_path(value, relative=True)
        return value


class EventSource(_Strict):
    """An event subscription: which notifier, which event type, which fields."""

    notifier: str = Field("i=2253", description="NodeId or browse path of the object that "
                          "emits the events (default: the Server object)")
    type: str | None = Field(None, description="only events of this type (NodeId or browse "
                             "path under /Types/EventTypes/...) or its subtypes")
    where: list[WhereTerm] = Field(default_factory=list)
    fields: list[str] = Field(default_factory=list, description="extra event fields (browse "
                              "paths) for the event record, beyond the signals that map fields")
    poll: str | None = Field(None, description="poll group that collects it; default: that of "
                             "its signals, or the only group")
    queue_size: int = Field(1000, ge=1, le=100_000)

    @field_validator("notifier")
    @classmethod
    def _notifier(cls, value: str) -> str:
        check_node_reference(value)
        return value

    @field_validator("type")
    @classmethod
    def _type(cls, value: str | None) -> str | None:
        if value is not None:
            check_node_reference(value)
        return value

    @field_validator("fields")
    @classmethod
    def _fields(cls, value: list[str]) -> list[str]:
        for item in value:
            parse_browse_path(item, relative=True)
        return value


class OpcUaConnection(_Strict):
    """`connection:` block of a machine read over OPC UA."""

    protocol: Literal["opcua"]
    url: str = Field(pattern=r"^opc\.tcp://[^/\s:]+(:\d{1,5})?(/\S*)?$",
                     description="opc.tcp://HOST:PORT[/path]")
    timeout: Duration = Field(5.0, gt=0, le=600, description="per request")
    session_timeout: Duration = Field(60.0, ge=1, le=3600)
    security: SecurityConfig = Field(default_factory=SecurityConfig)
    auth: AuthConfig = Field(default_factory=AuthConfig)
    mode: Literal["read", "subscribe"] = Field(
        "read", description="acquisition mode of signals that do not name one")
    max_nodes_per_read: int = Field(
        500, ge=1, le=100_000,
        description="cap on nodes per Read call (the server's own limit applies too)")
    namespaces: dict[str, str] = Field(
        default_factory=dict,
        description="alias -> namespace URI, for `alias:Name` steps in browse paths")
    default_namespace: str | None = Field(
        None, description="namespace URI (or alias) of browse-path steps without a prefix; "
        "the first step of an absolute path (Objects, Types, ...) is always namespace 0")
    root: str | None = Field(None, description="browse path that relative signal paths start from")
    keepalive_count: int = Field(10, ge=1, le=1000, description="publishing intervals "
                                 "without data after which the server sends a keep-alive")
    lifetime_count: int = Field(60, ge=3, le=100_000)
    events: dict[str, EventSource] = Field(default_factory=dict)

    @field_validator("url")
    @classmethod
    def _port(cls, value: str) -> str:
        port = value.split("//", 1)[1].split("/", 1)[0].rpartition(":")[2]
        if port.isdigit() and not 1 <= int(port) <= 65535:
            raise ValueError(f"port {port} is not 1..65535")
        return value

    @field_validator("auth")
    @classmethod
    def _no_password_in_clear(cls, auth: AuthConfig, info: ValidationInfo) -> AuthConfig:
        security = info.data.get("security")
        if security is None or security.policy != "None" or auth.allow_plaintext_password:
            return auth  # an invalid security block is reported on its own
        source = next((name for name in ("password_env", "password_file", "password_credential")
                       if getattr(auth, name)), None)
        if source is not None:
            raise ValueError(
                f"a password ({source}) with security policy None would cross the network in "
                "clear, readable by anyone on the path: give connection.security a policy "
                "(e.g. Basic256Sha256), or set allow_plaintext_password: true to accept that")
        return auth

    @field_validator("namespaces")
    @classmethod
    def _aliases(cls, value: dict[str, str]) -> dict[str, str]:
        for alias in value:
            if not alias.isidentifier():
                raise ValueError(f"namespace alias {alias!r} must be a plain name (letters, digits, _)")
        return value

    @field_validator("root")
    @classmethod
    def _root(cls, value: str | None) -> str | None:
        if value is not None:
            parse_browse_path(value, relative=False)
        return value


class ServerDeadband(_Strict):
    """A deadband the server applies before it sends a change (DataChangeFilter)."""

    absolute: float | None = Field(None, ge=0)
    percent: float | None = Field(None, ge=0, le=100)

    @model_validator(mode="after")
    def _one(self) -> ServerDeadband:
        if (self.absolute is None) == (self.percent is None):
            raise ValueError("give exactly one of absolute or percent")
        return self


class OpcUaSignalFields(_Strict):
    """The OPC UA part of a signal: where the value lives and how it is acquired."""

    node: str | None = Field(None, description="NodeId: nsu=URI;s=... (preferred), ns=N;i=...")
    path: str | None = Field(None, description="browse path: /Objects/... or relative to `root`")
    mode: Mode | None = Field(None, description="read, subscribe or event; default: the "
                              "connection's mode, or event when `event` is set")
    sampling_interval: Duration | None = Field(
        None, ge=0, description="subscribe: server sampling; default: the publishing interval")
    queue_size: int | None = Field(
        None, ge=1, le=10_000, description="subscribe: values the server keeps per publishing "
        "interval; default: every sample of one interval plus one")
    server_deadband: ServerDeadband | None = None
    event: str | None = Field(None, description="event: name of an event source of the connection")
    field: str | None = Field(None, description="event: the field (browse path), e.g. CycleTime")
    value_as: Literal["value", "name"] = Field(
        "value", description="enumerations: the integer, or its name from the server")
    index: int | None = Field(None, ge=0, description="arrays: take this element only")
    max_array: int = Field(64, ge=1, le=10_000, description="longest array published as a list")

    @field_validator("node")
    @classmethod
    def _node(cls, value: str | None) -> str | None:
        if value is not None:
            parse_node_id(value)
        return value

    @field_validator("path")
    @classmethod
    def _path(cls, value: str | None) -> str | None:
        if value is not None:
            parse_browse_path(value, relative=not value.startswith("/"))
        return value

    @field_validator("field")
    @classmethod
    def _field(cls, value: str | None) -> str | None:
        if value is not None:
            parse_browse_path(value, relative=True)
        return value

    @model_validator(mode="after")
    def _addressed(self) -> OpcUaSignalFields:
        if self.event is not None or self.mode == "event":
            if self.event is None or self.field is None:
                raise ValueError("an event signal needs `event` (a source) and `field`")
            if self.node is not None or self.path is not None:
                raise ValueError("an event signal takes its value from the event: "
                                 "no `node` or `path`")
            if self.mode not in (None, "event"):
                raise ValueError(f"a signal with `event` has mode event, not {self.mode}")
            if self.value_as != "value":
                raise ValueError("value_as: name applies to read and subscribed signals")
            self.mode = "event"
        elif (self.node is None) == (self.path is None):
            raise ValueError("give exactly one of `node` or `path`")
        return self

    def resolved_mode(self, connection: OpcUaConnection) -> Mode:
        return self.mode or connection.mode

    def write_spec(self) -> WriteSpec:
        """Writes go to the node with the Write service; its DataType (read from the server)
        decides the value's type, so any JSON scalar passes here (ValueError: not writable)."""
        if self.event is not None or self.mode == "event":
            raise ValueError("an event field cannot be written: only a node (`node` or `path`)")
        if self.index is not None:
            raise ValueError("one element of an array (`index`) cannot be written")
        return WriteSpec("any")


def check_node_reference(text: str) -> None:
    """A NodeId string or a browse path (raises ValueError otherwise)."""
    if is_node_id(text):
        parse_node_id(text)
    else:
        parse_browse_path(text, relative=not text.startswith("/"))


def check_machine(conn: OpcUaConnection, signals: Sequence[Any],
                  poll: Mapping[str, float]) -> list[tuple[tuple[str | int, ...], str]]:
    """Cross-field rules: one acquisition mode per poll group; event sources exist and are
    collected by one group; relative paths need a root; aliases are defined."""
    problems: list[tuple[tuple[str | int, ...], str]] = []
    only = next(iter(poll)) if len(poll) == 1 else None
    group_mode: dict[str, tuple[str, int]] = {}
    source_group: dict[str, str] = {}
    for name, source in conn.events.items():
        if source.poll is not None:
            if source.poll not in poll:
                problems.append((("connection", "events", name, "poll"),
                                 f"{source.poll!r} is not a poll group of this machine "
                                 f"({', '.join(poll)})"))
            else:
                source_group[name] = source.poll
    aliases = set(conn.namespaces)
    problems += _alias_problems(conn, aliases)
    subscribe_only = ("sampling_interval", "queue_size", "server_deadband")
    for i, sig in enumerate(signals):
        group = sig.poll or only
        mode = "push" if sig.resolved_mode(conn) in ("subscribe", "event") else "read"
        if sig.resolved_mode(conn) != "subscribe":
            for name in subscribe_only:
                if name in sig.model_fields_set:
                    problems.append((("signals", i, name),
                                     f"applies to subscribed signals only (this one is "
                                     f"{sig.resolved_mode(conn)})"))
        seen = group_mode.setdefault(group, (mode, i))
        if seen[0] != mode:
            problems.append((("signals", i, "mode"),
                             f"poll group {group!r} mixes read signals with subscribed/event "
                             f"ones (signals[{seen[1]}]); give them separate poll groups"))
        if sig.path is not None and not sig.path.startswith("/") and conn.root is None:
            problems.append((("signals", i, "path"),
                             "a relative browse path needs `connection.root`; or start it with /"))
        for text in (sig.path, sig.field):
            if text:
                for step in parse_browse_path(text, relative=not text.startswith("/")).steps:
                    if step.alias is not None and not step.alias.isdigit() and step.alias not in aliases:
                        problems.append((("signals", i, "path" if text is sig.path else "field"),
                                         f"namespace alias {step.alias!r} is not defined in "
                                         "connection.namespaces"))
        if sig.event is not None:
            if sig.event not in conn.events:
                known = ", ".join(sorted(conn.events)) or "none defined"
                problems.append((("signals", i, "event"),
                                 f"{sig.event!r} is not an event source of connection.events "
                                 f"({known})"))
                continue
            wanted = source_group.setdefault(sig.event, group)
            if wanted != group:
                problems.append((("signals", i, "poll"),
                                 f"event source {sig.event!r} is collected by poll group "
                                 f"{wanted!r}; its signals must be in that group"))
    groups_with_signals = {sig.poll or only for sig in signals}
    if only is not None:
        for name, source in conn.events.items():
            if source.poll is None:
                source_group.setdefault(name, only)
    for name in conn.events:
        if name in source_group and source_group[name] not in groups_with_signals:
            problems.append((("connection", "events", name, "poll"),
                             f"poll group {source_group[name]!r} has no signals; collect the "
                             "events with a group that has some"))
        if name not in source_group and only is None:
            problems.append((("connection", "events", name, "poll"),
                             "required when the machine has several poll groups "
                             "and no signal maps a field of this source"))
        if name in source_group:
            wanted_mode = group_mode.get(source_group[name])
            if wanted_mode is not None and wanted_mode[0] == "read":
                problems.append((("connection", "events", name, "poll"),
                                 f"poll group {source_group[name]!r} holds read signals; "
                                 "an event source needs a group of its own (or of subscriptions)"))
    return problems


def _alias_problems(conn: OpcUaConnection, aliases: set[str]
                    ) -> list[tuple[tuple[str | int, ...], str]]:
    """Browse paths of the connection block that use a namespace alias nobody defined."""
    problems: list[tuple[tuple[str | int, ...], str]] = []
    places: list[tuple[tuple[str | int, ...], str]] = []
    if conn.root:
        places.append((("connection", "root"), conn.root))
    for name, source in conn.events.items():
        base: tuple[str | int, ...] = ("connection", "events", name)
        places.append(((*base, "notifier"), source.notifier))
        if source.type:
            places.append(((*base, "type"), source.type))
        places += [((*base, "fields", k), text) for k, text in enumerate(source.fields)]
        places += [((*base, "where", k, "field"), t.field) for k, t in enumerate(source.where)]
    for loc, text in places:
        if is_node_id(text):
            continue
        for step in parse_browse_path(text, relative=not text.startswith("/")).steps:
            if step.alias is not None and not step.alias.isdigit() and step.alias not in aliases:
                problems.append((loc, f"namespace alias {step.alias!r} is not defined in "
                                      "connection.namespaces"))
                break
    default = conn.default_namespace
    if default is not None and ":" not in default and default not in aliases:
        problems.append((("connection", "default_namespace"),
                         f"{default!r} is neither a URI nor an alias of `namespaces`"))
    return problems
