"""Fuzzing with hypothesis, device side: hostile replies and bytes never make an exception
escape, except the one error each entry point documents.

Targets: Modbus reply handling and register decoding, serial framing and field extraction,
OPC UA value conversion. Examples per target: tests/support/fuzzing.py. The other side (write
commands, Sparkplug payloads, config files) is in test_fuzz_inputs.py.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import struct
from dataclasses import dataclass
from typing import Any

import pytest
from asyncua import ua
from asyncua.common.utils import Buffer
from asyncua.ua.ua_binary import struct_from_binary, struct_to_binary
from hypothesis import assume, given
from hypothesis import strategies as st
from pymodbus.pdu import DecodePDU

from drivers.base import RawSample
from drivers.modbus.codec import BlockCodec, MalformedReply, encode_value, point_codec
from drivers.modbus.pdu import DeviceException, result, write_result
from drivers.modbus.planner import Block
from drivers.opcua.codec import ValueCodec
from drivers.serial_line.config import SerialLineSignalFields
from drivers.serial_line.extract import PARSE_ERROR, UNEXPECTED_FRAME, Extractor
from drivers.serial_line.framing import ALGORITHMS, FrameChecker, FrameSplitter
from tests.support.fuzzing import FUZZ

pytestmark = pytest.mark.slow

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


def test_an_overlong_frame_whose_start_marker_is_also_its_terminator() -> None:
    """Found by the fuzzer: when the start marker equals the terminator, skipping an
    over-long frame took the frame's own marker for its end."""
    config = {"terminator": b"$", "start": b"$", "max_frame": 4, "resync_on_start": False}
    pieces, whole = FrameSplitter(**config), FrameSplitter(**config)  # type: ignore[arg-type]
    split = pieces.feed(b"$") + pieces.feed(b"\0\0\0") + pieces.feed(b"$$")
    assert split == whole.feed(b"$\0\0\0$$") == []


def test_an_overlong_frame_whose_start_marker_is_also_its_terminator_with_resync() -> None:
    """Found by the fuzzer: with resync on, an over-long frame seen whole was dropped up to
    its terminator, but seen in pieces its terminator was taken for the next start."""
    config = {"terminator": b"*", "start": b"*", "max_frame": 4, "resync_on_start": True}
    pieces, whole = FrameSplitter(**config), FrameSplitter(**config)  # type: ignore[arg-type]
    split = pieces.feed(b"*$") + pieces.feed(b"\0\0") + pieces.feed(b"**")
    assert split == whole.feed(b"*$\0\0**") == []
    assert pieces.buffered == whole.buffered == 1  # the last '*' begins the next frame


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


def _variant_array_length(raw: bytes | bytearray) -> int:
    """The array length a DataValue's encoded Variant announces (0: none)."""
    if len(raw) < 6 or not raw[0] & 0x01 or not raw[1] & 0x80:  # no value, or not an array
        return 0
    return int.from_bytes(raw[2:6], "little", signed=True)


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
        # An array length beyond the bytes left can only be met by elements of no size (Null):
        # asyncua then builds that many Nones, minutes of work for a length near 2**31.
        assume(_variant_array_length(raw) <= len(raw))
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
