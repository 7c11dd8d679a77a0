"""Property-based fuzzing (hypothesis): hostile input never makes an exception escape, except
the one error each entry point documents.

Targets: Modbus reply handling and register decoding, serial framing and field extraction,
OPC UA value conversion, MQTT write commands, Sparkplug payload decoding, and the YAML config
loader (mutated example files). 10,000 examples per target (EDGE_AGENT_FUZZ_EXAMPLES sets
another number); about four minutes of one core in all. No example database: every run is
stateless.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import json
import os
import re
import shutil
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from asyncua import ua
from asyncua.common.utils import Buffer
from asyncua.ua.ua_binary import struct_from_binary, struct_to_binary
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from pymodbus.pdu import DecodePDU

import agent.config.loader as loader
import agent.config.templates as templates_mod
from agent.commands import CommandHub
from agent.config.loader import ConfigError, ConfigInvalid, LoadedConfig, load_config
from agent.config.models import AgentFile, signal_model
from agent.sparkplug.codec import Metric, decode, encode
from agent.sparkplug.datatypes import DataType
from drivers.base import RawSample
from drivers.modbus.codec import BlockCodec, MalformedReply, encode_value, point_codec
from drivers.modbus.planner import Block
from drivers.modbus.transport import DeviceException, result, write_result
from drivers.opcua.codec import ValueCodec
from drivers.registry import DRIVERS
from drivers.serial_line.config import SerialLineSignalFields
from drivers.serial_line.extract import PARSE_ERROR, UNEXPECTED_FRAME, Extractor
from drivers.serial_line.framing import ALGORITHMS, FrameChecker, FrameSplitter
from tests.harness import REPO

pytestmark = pytest.mark.slow

EXAMPLES = int(os.environ.get("EDGE_AGENT_FUZZ_EXAMPLES", "10000"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                           HealthCheck.function_scoped_fixture],
    database=None,
    derandomize=False,
    print_blob=False,
)

# ======================================================================== 1. Modbus

_WIDTH = {"int16": 1, "uint16": 1, "int32": 2, "uint32": 2, "float32": 2,
          "int64": 4, "uint64": 4, "float64": 4}
ORDERS = ("ABCD", "DCBA", "BADC", "CDAB")
_INT_RANGE = {"int16": (-2**15, 2**15 - 1), "uint16": (0, 2**16 - 1),
              "int32": (-2**31, 2**31 - 1), "uint32": (0, 2**32 - 1),
              "int64": (-2**63, 2**63 - 1), "uint64": (0, 2**64 - 1)}


@dataclass(frozen=True)
class _Point:
    kind: str  # a struct type name, "string", "bit" (of a register) or "coil"
    order: str
    offset: int
    bit: int | None = None
    length: int = 0


@st.composite
def modbus_blocks(draw: st.DrawFn) -> tuple[Block, list[_Point]]:
    table = draw(st.sampled_from(("hr", "ir", "co", "di")))
    bits = table in ("co", "di")
    count = draw(st.integers(1, 300 if bits else 125))
    points: list[_Point] = []
    for _ in range(draw(st.integers(0, 8))):
        if bits:
            points.append(_Point("coil", "ABCD", draw(st.integers(0, count - 1))))
            continue
        kind = draw(st.sampled_from([*_WIDTH, "string", "bit"]))
        order = draw(st.sampled_from(ORDERS))
        if kind == "string":
            length = draw(st.integers(1, 2 * count))
            words = (length + 1) // 2
            points.append(_Point(kind, order, draw(st.integers(0, count - words)), length=length))
        elif kind == "bit":
            points.append(_Point(kind, order, draw(st.integers(0, count - 1)),
                                 bit=draw(st.integers(0, 15))))
        elif _WIDTH[kind] <= count:
            points.append(_Point(kind, order, draw(st.integers(0, count - _WIDTH[kind]))))
    return Block(table, 0, count), points


def _codec(block: Block, points: list[_Point]) -> BlockCodec:
    compiled = [point_codec(i, p.offset, p.kind, p.order, bit=p.bit, length=p.length,
                            bit_table=p.kind == "coil") for i, p in enumerate(points)]
    return BlockCodec(block, compiled)


_ODD_WORDS = st.lists(st.one_of(st.integers(), st.booleans(), st.floats(), st.none()),
                      max_size=3)


@st.composite
def register_replies(draw: st.DrawFn, count: int, bits: bool) -> tuple[list[Any], bool]:
    """(words, well formed): a reply as a device sends it, or anything at all."""
    kind = draw(st.integers(0, 3))
    if kind < 2:  # well formed (bit replies come padded to whole bytes)
        size = count + (draw(st.integers(0, 7)) if bits else 0)
        raw = draw(st.binary(min_size=2 * size, max_size=2 * size))
        words = list(struct.unpack(f">{size}H", raw))
        return ([w & 1 == 1 for w in words] if bits else words), True
    # too short or long, and/or values that are not registers spliced in
    size = max(0, count + draw(st.integers(-3, 3)))
    words = list(struct.unpack(f">{size}H", draw(st.binary(min_size=2 * size,
                                                           max_size=2 * size))))
    at = draw(st.integers(0, size))
    words[at:at + draw(st.integers(0, 2))] = draw(_ODD_WORDS)
    return words, False


_FUNCTION_CODES = (1, 2, 3, 4, 5, 6, 15, 16, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x8F, 0x90)
_DECODER = DecodePDU(False)


def _reply_pdu(code: int, body: bytes) -> Any:
    """A reply PDU as pymodbus decodes it from the wire, or None."""
    try:
        return _DECODER.decode(bytes([code]) + body)
    except Exception:  # pymodbus's own decoding is not under test
        return None


@FUZZ
@given(st.data())
def test_modbus_replies_decode_to_values_or_documented_errors(data: st.DataObject) -> None:
    """A reply from the wire through `result`/`write_result` (DeviceException or
    MalformedReply), and a register block of any length and content through the block's
    codec (values, or MalformedReply)."""
    block, points = data.draw(modbus_blocks())
    codec = _codec(block, points)
    code = data.draw(st.one_of(st.sampled_from(_FUNCTION_CODES), st.integers(0, 255)))
    body = data.draw(st.binary(max_size=260))
    if data.draw(st.booleans()):
        body = bytes([len(body) & 0xFF]) + body  # a byte count, as in a real reply
    pdu = _reply_pdu(code, body)
    if pdu is not None:
        try:
            write_result(pdu, "co" if codec.bits else "hr", data.draw(st.integers(1, 5)))
        except (DeviceException, MalformedReply):
            pass
        try:
            from_wire = result(pdu, block.table)
        except (DeviceException, MalformedReply):
            pass
        else:
            try:
                codec.decode(from_wire)
            except MalformedReply:
                pass
    words, well_formed = data.draw(register_replies(block.count, codec.bits))
    try:
        values = codec.decode(words)
    except MalformedReply:
        assert not well_formed, "a well-formed reply must decode"
        return
    assert [i for i, _ in values] == list(range(len(points)))
    for (_, value), p in zip(values, points):
        if p.kind in ("coil", "bit"):
            assert type(value) is bool
        elif p.kind == "string":
            assert type(value) is str and len(value) <= p.length
        elif p.kind.startswith("float"):
            assert type(value) is float
        else:
            low, high = _INT_RANGE[p.kind]
            assert type(value) is int and low <= value <= high
            # Writing the decoded value gives back the registers it came from.
            if well_formed:
                assert encode_value(p.kind, p.order, value) == list(
                    words[p.offset:p.offset + _WIDTH[p.kind]])


# ======================================================================== 2. Serial line

_WIRE = b"$:\r\n*,;ABab09 \x00\xff"


def _wire_bytes(min_size: int, max_size: int) -> st.SearchStrategy[bytes]:
    return st.lists(st.sampled_from(_WIRE), min_size=min_size, max_size=max_size).map(bytes)


_STARTS = st.one_of(st.none(), _wire_bytes(1, 2))
_TERMINATORS = st.one_of(st.sampled_from([b"\r\n", b"\n", b"\r", b"*", b"\n\n"]),
                         _wire_bytes(1, 3))


@st.composite
def splitter_configs(draw: st.DrawFn) -> dict[str, Any]:
    """Keyword arguments of FrameSplitter within what FramingConfig accepts."""
    start = draw(_STARTS)
    max_frame = draw(st.integers(4, 40))
    if draw(st.booleans()):
        low = len(start) + 1 if start else 1
        assume(low <= max_frame)
        length = draw(st.integers(low, max_frame))
        return {"length": length, "start": start, "max_frame": max_frame}
    terminator = draw(_TERMINATORS)
    assume(len(terminator) + len(start or b"") < max_frame)
    resync = draw(st.booleans()) if start else True
    return {"terminator": terminator, "start": start, "max_frame": max_frame,
            "resync_on_start": resync}


_CHECKSUMS = st.tuples(
    st.sampled_from([*ALGORITHMS, "none"]),
    st.one_of(st.none(), st.sampled_from([b"*", b",", b";", b"**", b"|"]), _wire_bytes(1, 2)),
    st.sampled_from(["body", "start+body", "body+separator", "start+body+separator"]),
    st.sampled_from(["big", "little"]))


@FUZZ
@given(splitter_configs(), st.lists(st.one_of(_wire_bytes(0, 30), st.binary(max_size=30)),
                                    max_size=8), _CHECKSUMS, _wire_bytes(0, 30))
def test_serial_framing_takes_any_bytes_in_any_split(
        config: dict[str, Any], chunks: list[bytes],
        checksum: tuple[str, bytes | None, str, str], text: bytes) -> None:
    """Random bytes, in random pieces, through a frame splitter of any (valid) config, and
    its frames through a checksum checker of any (valid) config."""
    splitter = FrameSplitter(**config)
    frames: list[bytes] = []
    start, term, length = config["start"] or b"", config.get("terminator"), config.get("length")
    for chunk in chunks:
        frames += splitter.feed(chunk)
        assert splitter.buffered <= config["max_frame"]
    for body in frames:
        if length is not None:
            assert len(body) == length - len(start)
        else:
            assert len(start) + len(body) + len(term) <= config["max_frame"]
            assert term not in body
            if start and config["resync_on_start"]:
                assert start not in body
            if not start:
                assert body
    assert splitter.frames == len(frames)
    whole = FrameSplitter(**config)
    in_one = whole.feed(b"".join(chunks))
    assert in_one == frames, "the split of the stream changed the frames"

    kind, separator, over, crc_order = checksum
    # ChecksumConfig refuses an `over` with the separator when there is none.
    assume(separator is not None or "separator" not in over)
    checker = FrameChecker(kind, separator, start=start, over=over, crc_order=crc_order)
    for body in frames:
        payload, ok = checker.split(body)
        assert isinstance(payload, bytes) and isinstance(ok, bool)
    if separator is None or not re.search(rb"[0-9A-Fa-f]", separator):
        assert checker.split(checker.append(text)) == (text, True)


def test_an_overlong_frame_without_resync_does_not_depend_on_the_split() -> None:
    config = {"terminator": b":", "start": b"$", "max_frame": 4, "resync_on_start": False}
    pieces, whole = FrameSplitter(**config), FrameSplitter(**config)  # type: ignore[arg-type]
    assert pieces.feed(b"$$$$") + pieces.feed(b"$:") == whole.feed(b"$$$$$:")


_REGEXES = [
    r"^(?P<a>[-+]?\d+(?:\.\d+)?),(?P<b>\w+)",
    r"(?P<a>\S+)\s+(?P<b>\S*)",
    r"^(?P<a>\d+)?;(?P<b>[A-Za-z]+)?$",  # optional groups: may not take part in a match
    r"T=(?P<a>[^,]*)(?:,S=(?P<b>.*))?",
]
_TEXT = st.text(alphabet=st.sampled_from(list("0123456789+-.,;:eE xXabAB_TS=\t\u00e9\u00a0"
                                              "\u0663nNaIfinity")), max_size=40)


@st.composite
def extractors(draw: st.DrawFn) -> tuple[Extractor, int]:
    by_regex = draw(st.booleans())
    regex = draw(st.sampled_from(_REGEXES)) if by_regex else None
    delimiter = draw(st.sampled_from([",", ";", " ", "=", ", "]))
    signals = []
    for _ in range(draw(st.integers(1, 5))):
        kind = draw(st.sampled_from(["float", "int", "bool", "str"]))
        fields: dict[str, Any] = {"type": kind}
        if by_regex and draw(st.booleans()):
            fields["field"] = draw(st.sampled_from(["a", "b"]))
        else:
            fields["index"] = draw(st.integers(-6, 6))
        if kind == "int" and draw(st.booleans()):
            fields["base"] = draw(st.integers(2, 36))
        if kind == "bool" and draw(st.booleans()):
            fields["true_tokens"] = draw(st.sampled_from([["on", "1"], ["T"], ["+", "yes"]]))
            fields["false_tokens"] = draw(st.sampled_from([["off", "0"], ["F"], ["-"]]))
        try:
            signals.append(SerialLineSignalFields.model_validate(fields))
        except ValueError:
            assume(False)
    return Extractor(signals, regex, delimiter), len(signals)


@FUZZ
@given(extractors(), st.one_of(_TEXT, st.text(max_size=40)), st.integers(0, 2**63))
def test_extractor_gives_a_sample_per_signal_for_any_frame(
        extractor_size: tuple[Extractor, int], text: str, ts_ns: int) -> None:
    extractor, size = extractor_size
    samples = extractor.extract(text, ts_ns)
    assert len(samples) == size
    for s in samples:
        assert isinstance(s, RawSample) and s.ts_ns == ts_ns
        assert (s.quality, s.reason) == ("good", None) or (
            s.quality == "bad" and s.reason in (PARSE_ERROR, UNEXPECTED_FRAME) and s.value is None)


def test_extractor_bool_on_unmatched_optional_group() -> None:
    signal = SerialLineSignalFields.model_validate({"field": "b", "type": "bool"})
    extractor = Extractor([signal], r"^(?P<a>\d+)(?:;(?P<b>\w+))?$", None)
    assert extractor.extract("12", 0) == [RawSample(None, 0, "bad", PARSE_ERROR)]


# ======================================================================== 3. OPC UA

VT = ua.VariantType
_STATUS_CODES = [getattr(ua.StatusCodes, n) for n in dir(ua.StatusCodes) if not n.startswith("_")]
_DATETIMES = st.datetimes(min_value=dt.datetime(1601, 1, 1), max_value=dt.datetime(9999, 12, 31),
                          timezones=st.one_of(st.none(), st.just(dt.timezone.utc),
                                              st.builds(dt.timezone, st.timedeltas(
                                                  min_value=dt.timedelta(hours=-23),
                                                  max_value=dt.timedelta(hours=23)))))
_NODE_IDS = st.one_of(
    st.builds(ua.NodeId, st.integers(0, 2**32 - 1), st.integers(0, 65535)),
    st.builds(ua.NodeId, st.text(max_size=20), st.integers(0, 65535)),
    st.builds(ua.NodeId, st.binary(max_size=20), st.integers(0, 65535)),
    st.builds(ua.NodeId, st.uuids(), st.integers(0, 65535)),
)


def _ints(low: int, high: int) -> st.SearchStrategy[int]:
    return st.integers(low, high)


_SCALARS: list[tuple[ua.VariantType, st.SearchStrategy[Any]]] = [
    (VT.Boolean, st.booleans()),
    (VT.SByte, _ints(-128, 127)), (VT.Byte, _ints(0, 255)),
    (VT.Int16, _ints(-2**15, 2**15 - 1)), (VT.UInt16, _ints(0, 2**16 - 1)),
    (VT.Int32, _ints(-2**31, 2**31 - 1)), (VT.UInt32, _ints(0, 2**32 - 1)),
    (VT.Int64, _ints(-2**63, 2**63 - 1)), (VT.UInt64, _ints(0, 2**64 - 1)),
    (VT.Float, st.floats(width=32)), (VT.Double, st.floats()),
    (VT.String, st.one_of(st.none(), st.text(max_size=30))),
    (VT.DateTime, _DATETIMES),
    (VT.Guid, st.uuids()),
    (VT.ByteString, st.one_of(st.none(), st.binary(max_size=30))),
    (VT.XmlElement, st.builds(ua.XmlElement, st.text(max_size=10))),
    (VT.NodeId, _NODE_IDS),
    (VT.ExpandedNodeId, _NODE_IDS.map(lambda n: ua.ExpandedNodeId(n.Identifier, n.NamespaceIndex))),
    (VT.StatusCode, st.builds(ua.StatusCode, st.one_of(st.sampled_from(_STATUS_CODES),
                                                       _ints(0, 2**32 - 1)))),
    (VT.QualifiedName, st.builds(ua.QualifiedName, st.one_of(st.none(), st.text(max_size=10)),
                                 _ints(0, 65535))),
    (VT.LocalizedText, st.builds(ua.LocalizedText, st.one_of(st.none(), st.text(max_size=10)),
                                 st.one_of(st.none(), st.sampled_from(["en", "de"])))),
    (VT.ExtensionObject, st.builds(ua.Argument, Name=st.text(max_size=5))),
    (VT.DiagnosticInfo, st.just(ua.DiagnosticInfo())),
]


@st.composite
def variants(draw: st.DrawFn) -> ua.Variant:
    kind, values = draw(st.sampled_from(_SCALARS))
    shape = draw(st.sampled_from(["scalar", "scalar", "array", "matrix", "null"]))
    if shape == "null":
        return ua.Variant()
    if shape == "scalar":
        value = draw(values)
        if value is None and kind not in (VT.String, VT.ByteString):
            return ua.Variant()
        return ua.Variant(value, kind)
    if shape == "array":
        items = draw(st.lists(values, max_size=4))
        if items and draw(st.booleans()):
            items = items * draw(st.integers(1, 40))  # beyond max_array, cheaply
        return ua.Variant(items, kind)
    rows, cols = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    return ua.Variant([[draw(values) for _ in range(cols)] for _ in range(rows)], kind,
                      Dimensions=[rows, cols])


_CODES = st.one_of(st.sampled_from(_STATUS_CODES), st.integers(0, 2**32 - 1))
_MAYBE_VARIANT = st.one_of(st.none(), variants())
_MAYBE_DATETIME = st.one_of(st.none(), _DATETIMES)


@st.composite
def data_values(draw: st.DrawFn) -> ua.DataValue:
    code = draw(_CODES)
    dv = ua.DataValue(draw(_MAYBE_VARIANT),
                      StatusCode=ua.StatusCode(code) if draw(st.booleans()) else None,
                      SourceTimestamp=draw(_MAYBE_DATETIME),
                      ServerTimestamp=draw(_MAYBE_DATETIME))
    if draw(st.integers(0, 3)) == 0:
        # Through the wire: encode, damage a few bytes, decode as a client would.
        try:
            raw = bytearray(struct_to_binary(dv))
        except Exception:  # asyncua cannot encode every combination it can construct
            return dv
        for _ in range(draw(st.integers(0, 4))):
            if raw:
                raw[draw(st.integers(0, len(raw) - 1))] = draw(st.integers(0, 255))
        try:
            dv = struct_from_binary(ua.DataValue, Buffer(bytes(raw)))
        except Exception:  # asyncua's decoder refuses it: never reaches the codec
            assume(False)
    return dv


@FUZZ
@given(data_values(), st.one_of(st.none(), st.integers(0, 5)), st.integers(0, 100),
       st.one_of(st.none(), st.dictionaries(st.integers(-3, 10), st.text(max_size=5),
                                            max_size=4)))
def test_opcua_values_become_samples(dv: ua.DataValue, index: int | None, max_array: int,
                                     names: dict[int, str] | None) -> None:
    codec = ValueCodec(index=index, max_array=max_array, names=names)
    sample = codec.sample(dv, 123)
    assert isinstance(sample, RawSample) and isinstance(sample.ts_ns, int)
    assert sample.quality in ("good", "uncertain", "bad")
    if sample.quality == "bad":
        assert sample.value is None and isinstance(sample.reason, str) and sample.reason
    else:
        assert sample.value is not None
        json.dumps(sample.value)  # a reading value: bool, int, float, str or a list of them


# ======================================================================== 4. MQTT commands

_TOPIC_PARTS = st.one_of(st.sampled_from(["a1", "l1", "m1", "m2", "cmd", "+", "#", "", "a1/l1"]),
                         st.text(max_size=8))


@st.composite
def command_topics(draw: st.DrawFn) -> str:
    kind = draw(st.integers(0, 3))
    if kind == 0:
        return "factory/s1/a1/l1/m1/cmd"
    if kind == 1:
        return "factory/s1/" + "/".join(draw(st.lists(_TOPIC_PARTS, min_size=0, max_size=6)))
    if kind == 2:
        return "/".join(draw(st.lists(_TOPIC_PARTS, max_size=8)))
    return draw(st.text(max_size=40))


_JSON_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(),
                          st.text(max_size=20), st.integers(-2**70, 2**70))
_JSON = st.recursive(_JSON_SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=10)
_SIGNALS = ["x.speed", "x.mode", "x.recipe", "x.clamp", "x.any", "x.ro", "no.such"]
_VALUES = st.one_of(_JSON, st.sampled_from(["off", "auto", "manual", "AB", "", "1e5"]),
                    st.sampled_from([0, 1, 2, -1, 100, 100.0001, 1e308, -0.0, True, False]),
                    st.text(max_size=300))


_REQUEST_IDS = st.one_of(st.text(max_size=130), st.integers(-2**64, 2**64), _JSON)
_SIGNAL_FIELDS = st.one_of(st.sampled_from(_SIGNALS), _JSON)
_EXTRA_FIELDS = st.dictionaries(st.text(max_size=5), _JSON, max_size=2)
_ENCODINGS = st.sampled_from(["utf-8", "utf-8", "utf-16", "latin-1"])


@st.composite
def command_payloads(draw: st.DrawFn) -> bytes:
    kind = draw(st.integers(0, 4))
    if kind == 0:
        return draw(st.binary(max_size=100))
    if kind == 1:
        return json.dumps(draw(_JSON)).encode()
    body: dict[str, Any] = {}
    if draw(st.integers(0, 5)):
        body["request_id"] = draw(_REQUEST_IDS)
    if draw(st.integers(0, 5)):
        body["signal"] = draw(_SIGNAL_FIELDS)
    if draw(st.integers(0, 5)):
        body["value"] = draw(_VALUES)
    body.update(draw(_EXTRA_FIELDS))
    text = json.dumps(body)  # NaN, Infinity written as JSON's extensions, as Python reads them
    if kind == 4:  # damaged on the way
        cut = draw(st.integers(0, len(text)))
        text = text[:cut] + draw(st.text(max_size=3)) + text[cut + draw(st.integers(0, 3)):]
    return text.encode(draw(_ENCODINGS), errors="replace")


class _RecordingLog:
    def __init__(self) -> None:
        self.exceptions: list[str] = []

    def exception(self, message: str, **fields: Any) -> None:
        self.exceptions.append(message)

    def __getattr__(self, name: str) -> Any:
        return lambda *args, **kwargs: None


@dataclass
class _Machine:
    id: str
    model: Any


@functools.cache
def _hub_signals() -> list[Any]:
    modbus = signal_model(DRIVERS["modbus-tcp"])
    opcua = signal_model(DRIVERS["opcua"])
    return [
        modbus.model_validate({"name": "x.speed", "address": "hr:1", "scale": 0.1,
                               "offset": 3, "min": -5, "max": 100, "writable": True}),
        modbus.model_validate({"name": "x.mode", "address": "hr:2", "type": "uint16",
                               "enum": {0: "off", 1: "auto", 2: "manual"}, "writable": True}),
        modbus.model_validate({"name": "x.recipe", "address": "hr:3", "type": "string(4)",
                               "writable": True}),
        modbus.model_validate({"name": "x.clamp", "address": "co:1", "writable": True}),
        modbus.model_validate({"name": "x.ro", "address": "hr:9"}),
        opcua.model_validate({"name": "x.any", "node": "ns=2;s=X", "writable": True}),
    ]


@pytest.fixture(scope="module")
def event_loop_for_hub() -> Iterator[asyncio.AbstractEventLoop]:
    """`submit` runs in the event loop (a queued command's deadline is loop time)."""
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


@pytest.fixture(scope="module")
def hubs() -> Iterator[dict[tuple[bool, bool], tuple[CommandHub, Any, _RecordingLog]]]:
    """(enabled, unknown machines ignored) -> (hub, m1's inbox, log)."""
    out = {}
    for enabled in (False, True):
        for ignore in (False, True):
            cfg = AgentFile.model_validate({"agent": {"id": "gw", "site": "s1"}, "write": {
                "enabled": enabled, "queue_size": 1,
                "unknown_machines": "ignore" if ignore else "reply"}})
            log = _RecordingLog()
            hub = CommandHub(cfg, None, log)
            inbox = hub.attach(_Machine("m1", SimpleNamespace(area="a1", line="l1")),
                               {"fast": _hub_signals()})
            out[enabled, ignore] = hub, inbox, log
    yield out


@FUZZ
@given(command_topics(), command_payloads(), st.booleans(), st.booleans(), st.booleans())
def test_command_hub_answers_once_or_ignores(
        event_loop_for_hub: asyncio.AbstractEventLoop,
        hubs: dict[tuple[bool, bool], tuple[CommandHub, Any, _RecordingLog]], topic: str,
        payload: bytes, retain: bool, enabled: bool, ignore_unknown: bool) -> None:
    hub, inbox, log = hubs[enabled, ignore_unknown]
    inbox._queue.clear()  # queued by the previous example: never executed here

    async def submit() -> None:
        hub.submit(topic, payload, retain)

    event_loop_for_hub.run_until_complete(submit())
    replies = []
    while (reply := hub.take_reply()) is not None:
        replies.append(reply)
    queued = len(inbox._queue)
    assert not log.exceptions, log.exceptions
    assert len(replies) + queued <= 1
    ours = topic.startswith("factory/s1/") and topic.count("/") == 5 and topic.endswith("/cmd")
    if not ours:
        assert not replies and not queued
    elif not ignore_unknown or not enabled or topic == "factory/s1/a1/l1/m1/cmd":
        assert len(replies) + queued == 1
    for reply_topic, body in replies:
        assert reply_topic == topic + "/reply"
        answer = json.loads(body)
        assert answer["ok"] is False and isinstance(answer["reason"], str)


# ======================================================================== 5. Sparkplug


def _varint(n: int) -> bytes:
    out = bytearray()
    n &= (1 << 64) - 1
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _wire_message(depth: int) -> st.SearchStrategy[bytes]:
    """Protobuf wire data: fields of Payload/Metric/PropertySet numbers with any wire type."""
    field_no = st.one_of(st.integers(1, 20), st.integers(1, 2**29 - 1))
    varint = st.one_of(st.integers(0, 40), st.integers(0, 2**64 - 1), st.integers(-2**63, -1))
    nested = _wire_message(depth - 1) if depth > 0 else st.binary(max_size=12)
    field = st.one_of(
        st.tuples(field_no, st.just(0), varint).map(lambda t: _varint(t[0] << 3) + _varint(t[2])),
        st.tuples(field_no, st.sampled_from([1, 5]), st.binary(min_size=8, max_size=8)).map(
            lambda t: _varint(t[0] << 3 | t[1]) + (t[2] if t[1] == 1 else t[2][:4])),
        st.tuples(field_no, st.one_of(nested, st.text(max_size=8).map(str.encode),
                                      st.binary(max_size=8))).map(
            lambda t: _varint(t[0] << 3 | 2) + _varint(len(t[1])) + t[1]),
    )
    return st.lists(field, max_size=6).map(b"".join)


_WIRE_MESSAGES = _wire_message(2)  # built once: building the nested strategy costs more than a draw


@st.composite
def sparkplug_bytes(draw: st.DrawFn) -> bytes:
    kind = draw(st.integers(0, 2))
    if kind == 0:
        return draw(st.binary(max_size=200))
    if kind == 1:
        return draw(_WIRE_MESSAGES)
    datatype = draw(st.sampled_from([DataType.Int32, DataType.Double, DataType.String,
                                     DataType.Boolean, DataType.UInt64]))
    value = {DataType.Int32: 7, DataType.Double: 1.5, DataType.String: "s",
             DataType.Boolean: True, DataType.UInt64: 2**64 - 1}[datatype]
    data = bytearray(encode([Metric("m", value, datatype, 5, 1, False,
                                    {"Quality": (DataType.Int32, 192)})], 3, 10))
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(data)))
        op = draw(st.integers(0, 2))
        if op == 0 and at < len(data):
            data[at] = draw(st.integers(0, 255))
        elif op == 1:
            del data[at:at + draw(st.integers(1, 4))]
        else:
            data[at:at] = draw(st.binary(min_size=1, max_size=4))
    return bytes(data)


@FUZZ
@given(sparkplug_bytes())
def test_sparkplug_decode_raises_only_value_error(data: bytes) -> None:
    try:
        timestamp, seq, metrics = decode(data)
    except ValueError:
        return
    assert timestamp is None or isinstance(timestamp, int)
    assert seq is None or isinstance(seq, int)
    assert all(isinstance(m, Metric) for m in metrics)


# ======================================================================== 6. YAML config

CONFIG = REPO / "config"
_MUTABLE: list[str] = (["agent.yaml"]
                       + [f"machines.d/{p.name}" for p in sorted((CONFIG / "examples" / "machines.d")
                                                                 .glob("*.yaml"))]
                       + [f"templates/{p.name}" for p in sorted((CONFIG / "templates")
                                                                .glob("*.yaml"))])
_YAML_SCALARS = ["null", "~", "true", "yes", "no", "0", "-1", "1e999", ".nan", "-.inf", '""',
                 "''", "0x1F", "0o17", "1_000", "2024-01-01", "12:30:00", "1s", "-5ms", "1GiB",
                 "!!binary aGk=", "&a x", "*a", "[]", "{}", "[1, [2]]", "{a: {b: c}}", "|\n  x",
                 "'\\x00'", '"\\u0000"', "9" * 40, "-", "?", ":", "#", "%", "@", "`", "!", "\t",
                 "ns=2;s=X", "hr:99999", "hr:1.99", "co:-1", "string(0)", "float128", "\u00e9",
                 "opc.tcp://", "mqtt://", "modbus-tcp", "opcua", "serial-line", "press-sim"]
_CHARS = st.sampled_from(list(":-[]{}#&*!|>'\",?%@` \n\t\\0123456789.aZ_~=+\u00e9\x00"))


def _mutate(data: st.DataObject, text: str) -> str:
    """The text with a few edits: characters or lines deleted, duplicated, replaced or
    swapped, values swapped, random YAML scalars put in as values or lines."""
    for _ in range(data.draw(st.integers(1, 3))):
        lines = text.split("\n")
        op = data.draw(st.integers(0, 8))
        at = data.draw(st.integers(0, max(len(text) - 1, 0)))
        row = data.draw(st.integers(0, len(lines) - 1))
        other = data.draw(st.integers(0, len(lines) - 1))
        if op == 0:  # delete characters
            text = text[:at] + text[at + data.draw(st.integers(1, 8)):]
        elif op == 1:  # duplicate characters
            text = text[:at] + text[at:at + data.draw(st.integers(1, 8))] + text[at:]
        elif op == 2:  # replace or insert a character
            keep = data.draw(st.integers(0, 1))
            text = text[:at] + data.draw(_CHARS) + text[at + keep:]
        elif op == 3:  # delete a line
            del lines[row]
            text = "\n".join(lines)
        elif op == 4:  # duplicate a line
            lines.insert(other, lines[row])
            text = "\n".join(lines)
        elif op == 5:  # swap two lines
            lines[row], lines[other] = lines[other], lines[row]
            text = "\n".join(lines)
        elif op in (6, 7):  # a value replaced by a random scalar, or two values swapped
            valued = [i for i, line in enumerate(lines) if re.search(r":\s+\S", line)]
            if not valued:
                continue
            i = valued[data.draw(st.integers(0, len(valued) - 1))]
            key, _, value = lines[i].partition(": ")
            if op == 6:
                value = data.draw(st.one_of(st.sampled_from(_YAML_SCALARS), st.text(max_size=6)))
            else:
                j = valued[data.draw(st.integers(0, len(valued) - 1))]
                key2, _, value2 = lines[j].partition(": ")
                lines[j] = f"{key2}: {value}"
                value = value2
            lines[i] = f"{key}: {value}"
            text = "\n".join(lines)
        else:  # a random scalar or mapping line inserted, at some indentation
            indent = " " * data.draw(st.sampled_from([0, 2, 4, 6, 1]))
            scalar = data.draw(st.sampled_from(_YAML_SCALARS))
            new = data.draw(st.sampled_from([f"{scalar}", f"k: {scalar}", f"- {scalar}",
                                             f"- {{name: x.y, address: {scalar}}}"]))
            lines.insert(row, indent + new)
            text = "\n".join(lines)
    return text


def _uses(path: Path) -> str | None:
    found = re.search(r"^use:\s*(\S+)", path.read_text(), re.M)
    return found.group(1) if found else None


@dataclass(frozen=True)
class _Roots:
    """One config root per example machine (agent.yaml, that machine alone in machines.d,
    the bundled templates as `templates/`), and which root each mutable file is in."""

    roots: dict[str, Path]  # machine file name -> root
    users: dict[str, list[str]]  # template file -> machine files whose chain uses it


@pytest.fixture(scope="module")
def config_roots(tmp_path_factory: pytest.TempPathFactory) -> Iterator[_Roots]:
    """Per example only the mutated file is parsed again (parsing is most of a load's
    cost; unchanged files are parsed once), machine models are built once per protocol,
    and a load validates one machine rather than all eight."""
    machines = sorted((CONFIG / "examples" / "machines.d").glob("*.yaml"))
    roots: dict[str, Path] = {}
    pristine: dict[str, bytes] = {}
    for machine in machines:
        root = tmp_path_factory.mktemp(f"fuzz-{machine.stem}")
        shutil.copy(CONFIG / "examples" / "agent.yaml", root / "agent.yaml")
        (root / "machines.d").mkdir()
        shutil.copy(machine, root / "machines.d" / machine.name)
        shutil.copytree(CONFIG / "templates", root / "templates")
        roots[machine.name] = root
        for path in root.rglob("*.yaml"):
            pristine[str(path)] = path.read_bytes()
    users: dict[str, list[str]] = {}
    for machine in machines:
        name = _uses(machine)
        while name is not None:
            users.setdefault(f"{name}.yaml", []).append(machine.name)
            name = _uses(CONFIG / "templates" / f"{name}.yaml")
    real_load_yaml = loader.load_yaml
    parsed: dict[tuple[str, str | None], Any] = {}

    def load_yaml(path: Path, name: str | None = None) -> Any:
        raw = path.read_bytes()
        if pristine.get(str(path)) != raw:
            return real_load_yaml(path, name)
        key = (str(path), name)
        if key not in parsed:
            parsed[key] = real_load_yaml(path, name)
        return parsed[key]

    models: dict[str, Any] = {}
    real_machine_model = loader.machine_model

    def machine_model(spec: Any) -> Any:
        if spec.protocol not in models:
            models[spec.protocol] = real_machine_model(spec)
        return models[spec.protocol]

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(loader, "load_yaml", load_yaml)
        mp.setattr(templates_mod, "load_yaml", load_yaml)
        mp.setattr(loader, "machine_model", machine_model)
        for root in roots.values():
            assert len(load_config(root, DRIVERS).machines) == 1
        yield _Roots(roots, users)
        # The parsed documents were shared by thousands of loads: none was changed by one.
        for root in roots.values():
            assert len(load_config(root, DRIVERS).machines) == 1


@FUZZ
@given(st.data())
def test_mutated_config_loads_or_gives_config_errors(config_roots: _Roots,
                                                     data: st.DataObject) -> None:
    rel = data.draw(st.sampled_from(_MUTABLE))
    folder, name = rel.split("/") if "/" in rel else ("", rel)
    if folder == "templates":
        machine = data.draw(st.sampled_from(config_roots.users[name]))
    elif folder == "machines.d":
        machine = name
    else:
        machine = data.draw(st.sampled_from(sorted(config_roots.roots)))
    root = config_roots.roots[machine]
    path = root / rel
    original = path.read_bytes()
    mutated = _mutate(data, original.decode())
    try:
        path.write_bytes(mutated.encode("utf-8", errors="surrogatepass"))
        try:
            loaded = load_config(root, DRIVERS)
        except ConfigInvalid as exc:
            assert exc.errors
            for error in exc.errors:
                assert isinstance(error, ConfigError)
                assert isinstance(error.file, str) and error.file
                assert isinstance(error.message, str) and error.message
                assert error.line is None or isinstance(error.line, int)
        else:
            assert isinstance(loaded, LoadedConfig)
    finally:
        path.write_bytes(original)
