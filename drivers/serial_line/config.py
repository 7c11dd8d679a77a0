"""Config models of the serial-line driver: port or TCP, framing, checksum, poll groups, signals.

Every text that stands for bytes on the wire (terminator, start, separator, delimiter,
command) accepts backslash escapes (`\\r`, `\\n`, `\\t`, `\\0`, `\\e`, `\\\\`, `\\xHH`), so
a single-quoted or plain YAML string `'\\r\\n'` means the same as the double-quoted `"\\r\\n"`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal

from pydantic import (AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field,
                      field_validator, model_validator)

from drivers.config_types import Duration

ChecksumType = Literal["none", "sum8", "xor8", "lrc", "crc16-modbus"]
ChecksumOver = Literal["body", "start+body", "body+separator", "start+body+separator"]
ValueType = Literal["float", "int", "bool", "str"]

DEFAULT_TERMINATOR = "\r\n"
DEFAULT_MAX_PENDING = 10_000
DEFAULT_TRUE = ("1", "true", "on", "yes")
DEFAULT_FALSE = ("0", "false", "off", "no")

_SIMPLE_ESCAPES = {"r": "\r", "n": "\n", "t": "\t", "0": "\0", "e": "\x1b", "\\": "\\"}
_HEX = set("0123456789abcdefABCDEF")


def unescape(text: str) -> str:
    """Resolve backslash escapes; every character must then be a single byte (\\x00-\\xff)."""
    if "\\" in text:
        out: list[str] = []
        i = 0
        while i < len(text):
            char = text[i]
            if char != "\\":
                out.append(char)
                i += 1
                continue
            code = text[i + 1:i + 2]
            if code in _SIMPLE_ESCAPES:
                out.append(_SIMPLE_ESCAPES[code])
                i += 2
            elif code == "x" and len(text) >= i + 4 and set(text[i + 2:i + 4]) <= _HEX:
                out.append(chr(int(text[i + 2:i + 4], 16)))
                i += 4
            else:
                shown = "\\" + (text[i + 1:i + 4] if code == "x" else code)
                raise ValueError(f"{text!r}: unknown escape {shown!r} "
                                 "(use \\r, \\n, \\t, \\0, \\e, \\\\ or \\xHH)")
        text = "".join(out)
    if any(ord(c) > 0xFF for c in text):
        raise ValueError(f"{text!r}: only single-byte characters (\\x00-\\xff) are allowed")
    return text


def _not_empty(text: str) -> str:
    if not text:
        raise ValueError("must not be empty")
    return text


def wire_bytes(text: str) -> bytes:
    """The bytes an (unescaped) config text stands for."""
    return text.encode("latin-1")


Escaped = Annotated[str, AfterValidator(unescape), AfterValidator(_not_empty)]
"""Text for bytes on the wire, backslash escapes resolved; never empty."""


def _compiles(text: str) -> str:
    try:
        re.compile(text)
    except re.error as exc:
        raise ValueError(f"{text!r} is not a valid regular expression: {exc}") from None
    return text


Regex = Annotated[str, Field(min_length=1), AfterValidator(_compiles)]


def _tokens(value: Any) -> Any:
    # YAML reads `1` / `true` as numbers and booleans; tokens are compared as text.
    if isinstance(value, list):
        return [str(v).lower() if isinstance(v, bool) else str(v) if isinstance(v, (int, float))
                else v for v in value]
    return value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SerialPortConfig(_Strict):
    """A local serial port (RS-232/RS-485 adapter)."""

    port: str = Field(min_length=1, description="device path, e.g. /dev/ttyUSB0 or "
                      "/dev/serial/by-id/... (stable across reboots)")
    baudrate: int = Field(9600, ge=50, le=4_000_000)
    parity: Literal["N", "E", "O"] = Field("N", description="N (none), E (even) or O (odd)")
    stopbits: int = Field(1, description="1 or 2")
    bytesize: int = Field(8, description="7 or 8")
    rtscts: bool = Field(False, description="RTS/CTS hardware flow control")
    xonxoff: bool = Field(False, description="XON/XOFF software flow control")

    @field_validator("parity", mode="before")
    @classmethod
    def _parity_words(cls, value: Any) -> Any:
        if isinstance(value, str):
            word = value.strip()
            named = {"none": "N", "even": "E", "odd": "O"}.get(word.lower())
            return named or (word.upper() if len(word) == 1 else value)
        return value

    @field_validator("stopbits")
    @classmethod
    def _stopbits(cls, value: int) -> int:
        if value not in (1, 2):
            raise ValueError(f"{value!r}: stopbits must be 1 or 2")
        return value

    @field_validator("bytesize")
    @classmethod
    def _bytesize(cls, value: int) -> int:
        if value not in (7, 8):
            raise ValueError(f"{value!r}: bytesize must be 7 or 8")
        return value


class TcpConfig(_Strict):
    """A TCP byte stream: a serial device server (Moxa, Lantronix...) in raw TCP mode, or a
    device with its own Ethernet port speaking the same lines."""

    host: str = Field(min_length=1)
    port: int = Field(ge=1, le=65535)


class FramingConfig(_Strict):
    """How the byte stream is cut into frames."""

    terminator: Escaped | None = Field(
        None, description='end of every frame, e.g. "\\r\\n" (the default unless `length`)')
    start: Escaped | None = Field(
        None, description='start of every frame, e.g. "$" or ":"; bytes before it are garbage')
    length: int | None = Field(
        None, ge=1, le=65536, description="fixed-length frames: bytes per frame, start included")
    max_frame: int = Field(512, ge=4, le=65536, description="longest frame in bytes, start "
                           "and terminator included; a longer one is discarded as garbage")
    resync_on_start: bool = Field(
        True, description="a start marker inside an unfinished frame begins a new frame (the "
        "partial one is garbage); turn off if the start character can occur in the data")

    @model_validator(mode="after")
    def _one_way(self) -> FramingConfig:
        if self.terminator is not None and self.length is not None:
            raise ValueError("give `terminator` or `length` (fixed-length frames), not both")
        if self.length is None and self.terminator is None:
            self.terminator = DEFAULT_TERMINATOR
        if self.length is not None:
            if self.length > self.max_frame:
                raise ValueError(f"length {self.length} is more than max_frame {self.max_frame}")
            if self.start is not None and len(self.start) >= self.length:
                raise ValueError(f"length {self.length} leaves no room after the start "
                                 f"{self.start!r}")
        elif self.terminator is not None and len(self.terminator) + len(self.start or "") >= self.max_frame:
            raise ValueError(f"max_frame {self.max_frame} leaves no room between start and terminator")
        if "resync_on_start" in self.model_fields_set and self.start is None:
            raise ValueError("resync_on_start needs a `start` marker")
        return self


class ChecksumConfig(_Strict):
    """Where the checksum of a frame is and what it covers.

    The checksum is hex text at the end of the frame (before the terminator): 2 digits for
    the 8-bit sums, 4 for CRC-16, after `separator`. It covers the frame body - the bytes
    between the start marker and the separator, both exclusive - plus the start and/or the
    separator when `over` says so. `checksum: xor8` is short for `checksum: {type: xor8}`.
    """

    type: ChecksumType = "none"
    separator: str | None = Field(
        ",", description='character(s) before the checksum digits, e.g. "*" (NMEA) or ","; '
        'null or "" when the digits follow the data directly')
    over: ChecksumOver = Field("body", description="what the checksum covers: body (between "
                               "start and separator), with the start marker and/or separator")
    crc_order: Literal["big", "little"] = Field(
        "big", description="crc16-modbus: digits of the value most significant byte first "
        "(big), or low byte first as Modbus RTU sends it (little)")

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        return {"type": data} if isinstance(data, str) else data

    @field_validator("separator")
    @classmethod
    def _separator(cls, value: str | None) -> str | None:
        return unescape(value) or None if value is not None else None

    @model_validator(mode="after")
    def _consistent(self) -> ChecksumConfig:
        if "separator" in self.over and self.separator is None:
            raise ValueError(f"over: {self.over} includes the separator, but there is none")
        if "crc_order" in self.model_fields_set and self.type != "crc16-modbus":
            raise ValueError("crc_order applies to crc16-modbus only")
        return self

    @property
    def digits(self) -> int:
        return 4 if self.type == "crc16-modbus" else 2


class GroupConfig(_Strict):
    """How one poll group gets its frames: ask with `command` and take the reply, or take
    what the device sends by itself (`mode: stream`)."""

    mode: Literal["request", "stream"] | None = Field(
        None, description="request (the default with a command) or stream")
    command: Escaped | None = Field(None, description='request: what to send, e.g. ":01RD\\r\\n"')
    match: Regex | None = Field(
        None, description="regex the frame text must start with to belong to this group "
        "(a reply to its command, or a streamed frame of this kind); others are ignored")
    regex: Regex | None = Field(None, description="named groups (?P<name>...) that signals "
                                "take by `field`; default: the connection's")
    delimiter: Escaped | None = Field(None, description="splits the frame text for signals "
                                      "that take a field by `index`; default: the connection's")
    timeout: Duration | None = Field(None, gt=0, le=600,
                                     description="request: wait this long for the reply; "
                                     "default: the connection's")
    stale_after: Duration | None = Field(
        None, gt=0, description="stream: no frame for this long makes the signals bad "
        "(reason timeout) once; default: off (a device may be idle)")
    max_pending: int | None = Field(
        None, ge=1, le=1_000_000, description="stream: frames kept between two polls; "
        f"beyond it the oldest are dropped and counted (default {DEFAULT_MAX_PENDING})")

    @model_validator(mode="after")
    def _one_mode(self) -> GroupConfig:
        if self.mode is None:
            if self.command is None:
                raise ValueError("give a `command` to send (request/response) or `mode: stream` "
                                 "(the device sends by itself)")
            self.mode = "request"
        if self.mode == "stream":
            if self.command is not None:
                raise ValueError("a streaming group sends no command: remove `command`, "
                                 "or `mode: stream` for request/response")
            if "timeout" in self.model_fields_set:
                raise ValueError("timeout applies to request groups only "
                                 "(a silent stream: use stale_after)")
        else:
            if self.command is None:
                raise ValueError("a request group needs a `command` to send")
            for name in ("stale_after", "max_pending"):
                if name in self.model_fields_set:
                    raise ValueError(f"{name} applies to streaming groups only")
        return self

    def pending_bound(self) -> int:
        return self.max_pending or DEFAULT_MAX_PENDING


class SerialLineConnection(_Strict):
    """`connection:` block of a machine that speaks an ASCII line protocol."""

    protocol: Literal["serial-line"]
    serial: SerialPortConfig | None = None
    tcp: TcpConfig | None = None
    framing: FramingConfig = Field(default_factory=FramingConfig)
    checksum: ChecksumConfig = Field(default_factory=ChecksumConfig)
    encoding: Literal["latin-1", "utf-8"] = Field(
        "latin-1", description="of the frame text (latin-1: every byte is one character)")
    regex: Regex | None = Field(None, description="default regex of every group")
    delimiter: Escaped | None = Field(None, description='default delimiter of every group, '
                                      'e.g. ","')
    timeout: Duration = Field(1.0, gt=0, le=600, description="request: wait this long for "
                              "the reply")
    connect_timeout: Duration = Field(5.0, gt=0, le=600)
    groups: dict[str, GroupConfig] = Field(
        min_length=1, description="poll group -> how it gets its frames (command or stream)")

    @model_validator(mode="after")
    def _one_link(self) -> SerialLineConnection:
        if (self.serial is None) == (self.tcp is None):
            raise ValueError("give exactly one of `serial` (a serial port) or `tcp` "
                             "(a serial device server)")
        return self

    def regex_of(self, group: GroupConfig) -> str | None:
        return group.regex if group.regex is not None else self.regex

    def delimiter_of(self, group: GroupConfig) -> str | None:
        return group.delimiter if group.delimiter is not None else self.delimiter

    def timeout_of(self, group: GroupConfig) -> float:
        return group.timeout if group.timeout is not None else self.timeout


Tokens = Annotated[list[Annotated[str, Field(min_length=1)]], BeforeValidator(_tokens),
                   Field(min_length=1)]


class SerialLineSignalFields(_Strict):
    """Where in the frame a signal's value is, and its type."""

    field: str | None = Field(None, description="named group (?P<name>...) of the group's regex")
    index: int | None = Field(None, description="field number after splitting the frame text "
                              "by `delimiter`: 0 the first, -1 the last (checksum not counted)")
    type: ValueType = Field("float", description="float, int, bool or str")
    base: int | None = Field(None, ge=2, le=36, description="int: number base, e.g. 16")
    true_tokens: Tokens | None = Field(
        None, description=f"bool: texts meaning true (any case; default {', '.join(DEFAULT_TRUE)})")
    false_tokens: Tokens | None = Field(
        None, description=f"bool: texts meaning false (default {', '.join(DEFAULT_FALSE)})")

    @model_validator(mode="after")
    def _addressed(self) -> SerialLineSignalFields:
        if (self.field is None) == (self.index is None):
            raise ValueError("give exactly one of `field` (a named group of the regex) "
                             "or `index` (a position after splitting by the delimiter)")
        if self.base is not None and self.type != "int":
            raise ValueError(f"base applies to type int only (this one is {self.type})")
        if (self.true_tokens or self.false_tokens) and self.type != "bool":
            raise ValueError(f"true_tokens/false_tokens apply to type bool only "
                             f"(this one is {self.type})")
        true, false = self.bool_tokens()
        both = sorted(true & false)
        if self.type == "bool" and both:
            raise ValueError(f"{', '.join(both)}: both a true and a false token")
        return self

    def bool_tokens(self) -> tuple[set[str], set[str]]:
        true = {t.strip().casefold() for t in (self.true_tokens or DEFAULT_TRUE)}
        false = {t.strip().casefold() for t in (self.false_tokens or DEFAULT_FALSE)}
        return true, false


Problems = list[tuple[tuple[str | int, ...], str]]


def check_machine(conn: SerialLineConnection, signals: Sequence[Any],
                  poll: Mapping[str, float]) -> Problems:
    """Cross-field rules: every poll group with signals has a group entry and vice versa;
    `field` names a group of the regex in effect, `index` has a delimiter; frames can be
    routed (a `match` per group when streams mix with requests or with each other)."""
    problems: Problems = []
    only = next(iter(poll)) if len(poll) == 1 else None
    for name in conn.groups:
        if name not in poll:
            problems.append((("connection", "groups", name),
                             f"{name!r} is not a poll group of this machine ({', '.join(poll)})"))
    used: dict[str, int] = {}  # poll group -> its first signal
    for i, sig in enumerate(signals):
        used.setdefault(str(sig.poll or only), i)
    for group in used:
        if group not in conn.groups:
            problems.append((("connection", "groups"),
                             (f"poll group {group!r} has signals but no entry here: give it a "
                             "`command` (request/response) or `mode: stream`")))
    compiled: dict[str, re.Pattern[str] | None] = {}
    for i, sig in enumerate(signals):
        group = str(sig.poll or only)
        entry = conn.groups.get(group)
        if entry is None:
            continue
        if sig.field is not None:
            if group not in compiled:
                text = conn.regex_of(entry)
                compiled[group] = re.compile(text) if text is not None else None
            pattern = compiled[group]
            if pattern is None:
                problems.append((("signals", i, "field"),
                                 (f"needs a `regex` with named groups (in connection.groups."
                                 f"{group} or on the connection)")))
            elif sig.field not in pattern.groupindex:
                names = ", ".join(pattern.groupindex) or "none; name them (?P<name>...)"
                problems.append((("signals", i, "field"),
                                 (f"{sig.field!r} is not a named group of the regex of poll "
                                 f"group {group!r} (it has: {names})")))
        if sig.index is not None and conn.delimiter_of(entry) is None:
            problems.append((("signals", i, "index"),
                             (f"needs a `delimiter` (in connection.groups.{group} or on the "
                             "connection)")))
    active = [g for g in conn.groups if g in used]
    streams = [g for g in active if conn.groups[g].mode == "stream"]
    requests = [g for g in active if conn.groups[g].mode == "request"]
    if len(streams) > 1 or (streams and requests):
        why = ("the device both streams and answers requests" if requests
               else "several groups take streamed frames")
        for group in active:
            if conn.groups[group].match is None:
                problems.append((("connection", "groups", group),
                                 (f"needs `match` (a regex the frame text starts with): {why}, "
                                 "so every frame must name its group")))
    if conn.checksum.type != "none" and "start" in conn.checksum.over and conn.framing.start is None:
        problems.append((("connection", "checksum", "over"),
                         (f"{conn.checksum.over} includes the start marker, but "
                         "connection.framing has no `start`")))
    return problems
