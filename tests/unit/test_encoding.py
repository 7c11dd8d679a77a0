"""Telemetry payloads (agent/core/encoding.py): JSON and msgpack carry the same map."""

from __future__ import annotations

import json
import math

import msgpack
import pytest

from agent.core.encoding import PayloadCodec, decode, reading_map
from agent.core.model import BAD, GOOD, UNCERTAIN, Reading

TS = 1795462093170733749
EPOCH = "4f9c0a1b2c3d4e5f60718293a4b5c6d7"

READINGS = [
    Reading("press.force.peak.ch1", 812.5, "kN", GOOD, None, TS),
    Reading("cycle.count", 123456, None, GOOD, None, TS + 1),
    Reading("die.clamped", True, None, GOOD, None, TS + 2),
    Reading("machine.state", "running", None, GOOD, None, TS + 3),
    Reading("machine.mode", 7, None, UNCERTAIN, "enum_unmapped", TS + 4),
    Reading("spindle.speed.actual", None, "rev/min", BAD, "timeout", TS + 5),
    Reading("die.id", "Pressenwerkzeug Ø 42 – 型号 🙂", None, GOOD, None, TS + 6),
]

EXPECTED = [
    {"signal": "press.force.peak.ch1", "value": 812.5, "unit": "kN", "quality": "good",
     "ts": TS},
    {"signal": "cycle.count", "value": 123456, "quality": "good", "ts": TS + 1},
    {"signal": "die.clamped", "value": True, "quality": "good", "ts": TS + 2},
    {"signal": "machine.state", "value": "running", "quality": "good", "ts": TS + 3},
    {"signal": "machine.mode", "value": 7, "quality": "uncertain", "reason": "enum_unmapped",
     "ts": TS + 4},
    {"signal": "spindle.speed.actual", "value": None, "unit": "rev/min", "quality": "bad",
     "reason": "timeout", "ts": TS + 5},
    {"signal": "die.id", "value": "Pressenwerkzeug Ø 42 – 型号 🙂", "quality": "good",
     "ts": TS + 6},
]

ENCODINGS = ["json", "msgpack"]


def test_reading_map_key_order_and_optional_fields() -> None:
    good = reading_map(READINGS[0])
    assert list(good) == ["signal", "value", "unit", "quality", "ts"]
    no_unit = reading_map(READINGS[1])
    assert list(no_unit) == ["signal", "value", "quality", "ts"]
    assert "unit" not in no_unit and "reason" not in no_unit
    bad = reading_map(READINGS[5])
    assert list(bad) == ["signal", "value", "unit", "quality", "reason", "ts"]
    assert bad["value"] is None and bad["reason"] == "timeout" and bad["quality"] == "bad"


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_frame_decodes_to_exact_map_in_key_order(encoding: str) -> None:
    codec = PayloadCodec("gw-01", encoding)
    payload = codec.frame("press-07", EPOCH, 1234, codec.readings(READINGS))
    doc = decode(payload)
    assert doc == {"agent": "gw-01", "machine": "press-07", "epoch": EPOCH, "seq": 1234,
                   "readings": EXPECTED}
    assert list(doc) == ["agent", "machine", "epoch", "seq", "readings"]
    for item, expected in zip(doc["readings"], EXPECTED):
        assert list(item) == list(expected)
        # Types survive: bool stays bool, int stays int, float stays float.
        assert type(item["value"]) is type(expected["value"])


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_json_and_msgpack_carry_the_same_map(encoding: str) -> None:
    ref = PayloadCodec("gw-01", "json")
    codec = PayloadCodec("gw-01", encoding)
    a = decode(ref.frame("m-1", EPOCH, 9, ref.readings(READINGS)))
    b = decode(codec.frame("m-1", EPOCH, 9, codec.readings(READINGS)))
    assert a == b


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_empty_readings(encoding: str) -> None:
    codec = PayloadCodec("gw-01", encoding)
    doc = decode(codec.frame("m", EPOCH, 1, codec.readings([])))
    assert doc == {"agent": "gw-01", "machine": "m", "epoch": EPOCH, "seq": 1, "readings": []}


@pytest.mark.parametrize("encoding", ENCODINGS)
@pytest.mark.parametrize("seq", [1, 2**31, 2**32 + 1, 2**53 + 1, 2**63 - 1])
def test_large_seq_values_are_exact(encoding: str, seq: int) -> None:
    codec = PayloadCodec("gw-01", encoding)
    doc = decode(codec.frame("m", EPOCH, seq, codec.readings(READINGS[:1])))
    assert doc["seq"] == seq and type(doc["seq"]) is int


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_one_codec_frames_many_machines_and_epochs(encoding: str) -> None:
    # The codec caches a prefix per (machine, epoch): every combination must stay distinct.
    codec = PayloadCodec("gw-01", encoding)
    body = codec.readings(READINGS[:2])
    for epoch in (EPOCH, "0" * 32):
        for machine in ("press-07", "cnc-1", "press-07", "ÿ-machine"):
            for seq in (1, 2, 3):
                doc = decode(codec.frame(machine, epoch, seq, body))
                assert (doc["agent"], doc["machine"], doc["epoch"], doc["seq"]) == (
                    "gw-01", machine, epoch, seq)
                assert doc["readings"] == EXPECTED[:2]


def test_json_is_compact_utf8_without_nan() -> None:
    codec = PayloadCodec("gw-01", "json")
    payload = codec.frame("press-07", EPOCH, 5, codec.readings(READINGS))
    text = payload.decode("utf-8")
    # Compact: exactly what json.dumps with the tightest separators gives.
    expected = json.dumps({"agent": "gw-01", "machine": "press-07", "epoch": EPOCH, "seq": 5,
                           "readings": EXPECTED}, separators=(",", ":"), ensure_ascii=False)
    assert text == expected
    assert ": " not in text and ", " not in text
    # Unicode is written as UTF-8, not escaped.
    assert "Ø 42 – 型号 🙂" in text and "\\u" not in text
    assert "NaN" not in text and "Infinity" not in text
    assert text.startswith('{"agent":"gw-01","machine":"press-07","epoch":')
    # Strictly valid JSON: a parser that rejects NaN/Infinity reads it.
    json.loads(text, parse_constant=lambda c: pytest.fail(f"non-standard constant {c}"))


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_json_refuses_nan_rather_than_emitting_it(bad: float) -> None:
    codec = PayloadCodec("gw-01", "json")
    with pytest.raises(ValueError):
        codec.readings([Reading("a.b", bad, None, GOOD, None, TS)])


def test_msgpack_payload_is_a_plain_msgpack_map() -> None:
    codec = PayloadCodec("gw-01", "msgpack")
    payload = codec.frame("press-07", EPOCH, 77, codec.readings(READINGS))
    assert payload[:1] == b"\x85"  # fixmap with 5 entries
    doc = msgpack.unpackb(payload, raw=False)
    assert doc == {"agent": "gw-01", "machine": "press-07", "epoch": EPOCH, "seq": 77,
                   "readings": EXPECTED}
    assert list(doc) == ["agent", "machine", "epoch", "seq", "readings"]
    # Strings are msgpack str (not bin): a strict reader with raw=True sees bytes of str type.
    raw = msgpack.unpackb(payload, raw=True)
    assert raw[b"machine"] == b"press-07"
    # Exactly one object, no trailing bytes.
    unpacker = msgpack.Unpacker(raw=False)
    unpacker.feed(payload)
    assert len(list(unpacker)) == 1
    # The same map packed in one go is byte-identical to the framed payload.
    assert payload == msgpack.packb(doc, use_bin_type=True)


def test_msgpack_unicode_and_floats_survive() -> None:
    codec = PayloadCodec("gw-ü", "msgpack")
    readings = [Reading("die.id", "型号 ✓", None, GOOD, None, TS),
                Reading("temp.mould", 0.1, "Cel", GOOD, None, TS)]
    doc = decode(codec.frame("presse-ä", EPOCH, 3, codec.readings(readings)))
    assert doc["agent"] == "gw-ü" and doc["machine"] == "presse-ä"
    assert doc["readings"][0]["value"] == "型号 ✓"
    assert doc["readings"][1]["value"] == 0.1  # float64, not truncated to float32


def test_decode_tells_encodings_apart() -> None:
    j = PayloadCodec("gw", "json")
    m = PayloadCodec("gw", "msgpack")
    pj = j.frame("m", EPOCH, 123, j.readings(READINGS))
    pm = m.frame("m", EPOCH, 123, m.readings(READINGS))
    assert pj[:1] == b"{" and pm[:1] != b"{"
    assert decode(pj) == decode(pm)


def test_unknown_encoding_is_refused() -> None:
    with pytest.raises(ValueError, match="cbor"):
        PayloadCodec("gw", "cbor")
