"""The serial-line driver (drivers.serial_line): framing, checksums, extraction, config
validation through the real loader, and the driver end to end against devices the tests play
themselves - on the master side of a pty pair (os.openpty) and as a TCP server on 127.0.0.1.

Two real devices are the reference:

* a tonnage monitor that streams `$TON,<stroke>,<ch1>,<ch2>,<ch3>,<ch4>,<total>,<reverse>*XX`
  + CR LF, XX = XOR of the bytes strictly between `$` and `*`, uppercase hex;
* a temperature controller that answers `:<AA>RD` CR LF with
  `:<AA>RD,<pv>,<sp>,<out>,<status>,<LL>` CR LF, LL = LRC of the bytes strictly between `:`
  and the comma before LL.

Checksums in literal frames below were computed by hand (see the comments) and checked with
an independent one-liner, never with the code under test. No test asserts wall-clock time:
waits poll a condition with a generous deadline that only bounds a failing run.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import textwrap
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from agent.config.loader import ConfigError, ConfigInvalid, load_config
from agent.config.models import signal_model
from agent.config.schema import full_schema
from agent.acquire.normalize import GroupNormalizer
from drivers.base import Drained, RawSample
from drivers.registry import DRIVERS
from drivers.serial_line.config import SerialLineConnection, SerialLineSignalFields, unescape
from drivers.serial_line.driver import SERIAL_LINE, BurstLog, SerialLineDriver
from drivers.serial_line.extract import Extractor, converter
from drivers.serial_line.framing import (FrameChecker, FrameSplitter, crc16_modbus, lrc, sum8,
                                         xor8)

pytestmark = pytest.mark.timeout(60)

ALL_DRIVERS = {**DRIVERS, "serial-line": SERIAL_LINE}

# --------------------------------------------------------------------------- reference frames

# XOR of b"TON,1234,101.5,99.0,100.2,98.7,399.4,-12.1" = 0x65
TON_1234 = b"$TON,1234,101.5,99.0,100.2,98.7,399.4,-12.1*65\r\n"
TON_1234_VALUES = [1234, 101.5, 99.0, 100.2, 98.7, 399.4, -12.1]
# LRC of b"01RD,25.3,30.0,45,0": byte sum 969 = 0x3C9, low byte 0xC9, 0x100 - 0xC9 = 0x37
TEMP_01 = b":01RD,25.3,30.0,45,0,37\r\n"
# LRC of b"02RD,180.5,200.0,75,1" = 0xCF
TEMP_02 = b":02RD,180.5,200.0,75,1,CF\r\n"


def xor_hex(body: bytes) -> bytes:
    value = 0
    for byte in body:
        value ^= byte
    return b"%02X" % value


def lrc_hex(body: bytes) -> bytes:
    return b"%02X" % ((0x100 - sum(body) % 0x100) % 0x100)


def ton(stroke: int, ch: tuple[float, ...] = (100.0, 101.0, 102.0, 103.0),
        total: float = 406.0, reverse: float = -10.0, *, bad_checksum: bool = False) -> bytes:
    body = ",".join(["TON", str(stroke), *map(str, ch), str(total), str(reverse)]).encode()
    checksum = xor_hex(body)
    if bad_checksum:
        checksum = b"%02X" % (int(checksum, 16) ^ 0x01)
    return b"$" + body + b"*" + checksum + b"\r\n"


def temp_reply(addr: int, pv: str, sp: str, out: str, status: str, *,
               bad_checksum: bool = False) -> bytes:
    body = f"{addr:02d}RD,{pv},{sp},{out},{status}".encode()
    checksum = lrc_hex(body)
    if bad_checksum:
        checksum = b"%02X" % (int(checksum, 16) ^ 0x10)
    return b":" + body + b"," + checksum + b"\r\n"


def test_reference_frames_are_what_the_helpers_build() -> None:
    assert ton(1234, (101.5, 99.0, 100.2, 98.7), 399.4, -12.1) == TON_1234
    assert temp_reply(1, "25.3", "30.0", "45", "0") == TEMP_01
    assert temp_reply(2, "180.5", "200.0", "75", "1") == TEMP_02


# --------------------------------------------------------------------------- checksums


def test_crc16_modbus_check_value() -> None:
    assert crc16_modbus(b"123456789") == 0x4B37  # the CRC catalogue's check value
    # Modbus RTU "read 10 holding registers from unit 1": 01 03 00 00 00 0A C5 CD (low first)
    assert crc16_modbus(bytes.fromhex("01030000000A")) == 0xCDC5
    assert crc16_modbus(b"") == 0xFFFF


def test_xor8_nmea_sentences() -> None:
    assert xor8(b"GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,") == 0x47
    assert xor8(b"GPRMC,123519,A,4807.038,N,01131.000,E,022.4,084.4,230394,003.1,W") == 0x6A
    assert xor8(b"") == 0
    assert xor8(b"\x0f\xf0") == 0xFF


def test_lrc_known_values() -> None:
    # Modbus ASCII spec example: F7 03 13 89 00 0A -> sum 0x1A0, LRC 0x60
    assert lrc(bytes.fromhex("F7031389000A")) == 0x60
    assert lrc(bytes.fromhex("010300000001")) == 0xFB  # sum 5 -> 0x100 - 5
    assert lrc(b"01RD,25.3,30.0,45,0") == 0x37  # worked out above TEMP_01
    assert lrc(b"") == 0


def test_sum8_known_values() -> None:
    assert sum8(b"123456789") == 0xDD  # 0x31 + ... + 0x39 = 477 = 0x1DD
    assert sum8(b"\xff\x02") == 0x01
    assert sum8(b"") == 0


NMEA = b"GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,*47"


@pytest.mark.parametrize(("checker", "body", "text", "good"), [
    (FrameChecker("xor8", b"*"), NMEA, NMEA[:-3], True),
    (FrameChecker("xor8", b"*"), NMEA[:-2] + b"46", NMEA[:-3], False),
    (FrameChecker("xor8", b"*"), TON_1234[1:-2], TON_1234[1:-5], True),
    (FrameChecker("xor8", b"*"), b"TON,1234,101.5,99.0,100.2,98.7,399.4,-12.1*65".lower(),
     b"ton,1234,101.5,99.0,100.2,98.7,399.4,-12.1", False),  # lower-case text: other sum
    (FrameChecker("lrc", b","), TEMP_01[1:-2], b"01RD,25.3,30.0,45,0", True),
    (FrameChecker("lrc", b","), TEMP_02[1:-2], b"02RD,180.5,200.0,75,1", True),
    (FrameChecker("lrc", b","), b"02RD,180.5,200.0,75,1,cf", b"02RD,180.5,200.0,75,1", True),
    (FrameChecker("lrc", b","), b"01RD,25.3,30.0,45,0,38", b"01RD,25.3,30.0,45,0", False),
    (FrameChecker("sum8", b","), b"123456789,DD", b"123456789", True),
    (FrameChecker("crc16-modbus", b","), b"123456789,4B37", b"123456789", True),
    (FrameChecker("crc16-modbus", b",", crc_order="little"), b"123456789,374B",
     b"123456789", True),
    (FrameChecker("crc16-modbus", b","), b"123456789,374B", b"123456789", False),
    # no separator: the digits follow the data directly
    (FrameChecker("sum8", None), b"123456789DD", b"123456789", True),
    # what the checksum covers: the start marker and/or the separator too
    # sum8("$AB") = 0x24 + 0x41 + 0x42 = 0xA7; sum8("AB*") = 0x41 + 0x42 + 0x2A = 0xAD
    (FrameChecker("sum8", b"*", start=b"$", over="start+body"), b"AB*A7", b"AB", True),
    (FrameChecker("sum8", b"*", start=b"$", over="body+separator"), b"AB*AD", b"AB", True),
    # 0x24 + 0x41 + 0x42 + 0x2A = 0xD1
    (FrameChecker("sum8", b"*", start=b"$", over="start+body+separator"), b"AB*D1", b"AB", True),
    (FrameChecker("sum8", b"*", start=b"$", over="body"), b"AB*83", b"AB", True),
    # missing or malformed checksum fields
    (FrameChecker("xor8", b"*"), b"TON,1,2", b"TON,1,2", False),
    (FrameChecker("xor8", b"*"), b"TON,1,2*6", b"TON,1,2", False),
    (FrameChecker("xor8", b"*"), b"TON,1,2*6G", b"TON,1,2", False),
    (FrameChecker("xor8", b"*"), b"TON,1,2* 6", b"TON,1,2", False),
    (FrameChecker("xor8", b"*"), b"TON,1,2*+6", b"TON,1,2", False),
    (FrameChecker("crc16-modbus", None), b"4B3", b"4B3", False),
    (FrameChecker("none"), b"anything*00", b"anything*00", True),
])
def test_frame_checker(checker: FrameChecker, body: bytes, text: bytes, good: bool) -> None:
    assert checker.split(body) == (text, good)


def test_frame_checker_append_round_trips() -> None:
    for checker in (FrameChecker("xor8", b"*"), FrameChecker("lrc", b","),
                    FrameChecker("sum8", None), FrameChecker("crc16-modbus", b";"),
                    FrameChecker("crc16-modbus", b";", crc_order="little"),
                    FrameChecker("sum8", b"*", start=b"$", over="start+body+separator")):
        framed = checker.append(b"01RD,25.3")
        assert checker.split(framed) == (b"01RD,25.3", True)
    assert FrameChecker("xor8", b"*").append(TON_1234[1:-5]) == TON_1234[1:-2]


# --------------------------------------------------------------------------- framing


def feed_in_pieces(splitter: FrameSplitter, data: bytes, sizes: list[int]) -> list[bytes]:
    out: list[bytes] = []
    at = 0
    for size in sizes:
        out += splitter.feed(data[at:at + size])
        at += size
    out += splitter.feed(data[at:])
    return out


def pieces(data: bytes, how: str) -> list[int]:
    if how == "whole":
        return [len(data)]
    if how == "bytewise":
        return [1] * len(data)
    rng = random.Random(7)  # fixed: every run splits the same way
    sizes: list[int] = []
    while sum(sizes) < len(data):
        sizes.append(rng.randint(1, 9))
    return sizes


SPLITS = ["whole", "bytewise", "random"]

MODES: dict[str, tuple[dict[str, Any], bytes, list[bytes]]] = {
    # name: (splitter settings, stream, frames expected)
    "terminator-crlf": ({"terminator": b"\r\n"},
                        b"A,1\r\nB,2\r\n\r\nC,3\r\n", [b"A,1", b"B,2", b"C,3"]),
    "terminator-cr": ({"terminator": b"\r"}, b"A,1\rB,2\r", [b"A,1", b"B,2"]),
    "terminator-lf": ({"terminator": b"\n"}, b"A,1\nB,2\n", [b"A,1", b"B,2"]),
    "terminator-etx": ({"terminator": b"\x03"}, b"\x02A\x03\x02B\x03", [b"\x02A", b"\x02B"]),
    "start-terminator": ({"start": b"$", "terminator": b"\r\n"},
                         TON_1234 + b"junk" + TON_1234, [TON_1234[1:-2]] * 2),
    "start-colon": ({"start": b":", "terminator": b"\r\n"}, TEMP_01 + TEMP_02,
                    [TEMP_01[1:-2], TEMP_02[1:-2]]),
    "multibyte-start": ({"start": b"\x10\x02", "terminator": b"\x10\x03"},
                        b"\x10\x02AB\x10\x03\x10\x10\x02CD\x10\x03", [b"AB", b"CD"]),
    "fixed-length": ({"length": 4}, b"ABCDEFGH12", [b"ABCD", b"EFGH"]),
    "fixed-length-with-start": ({"length": 5, "start": b"#"}, b"xx#ABCD#EFGHyy#1",
                                [b"ABCD", b"EFGH"]),
}


@pytest.mark.parametrize("how", SPLITS)
@pytest.mark.parametrize("mode", list(MODES))
def test_every_framing_mode_in_any_split(mode: str, how: str) -> None:
    settings, stream, frames = MODES[mode]
    splitter = FrameSplitter(max_frame=64, **settings)
    assert feed_in_pieces(splitter, stream, pieces(stream, how)) == frames
    assert splitter.frames == len(frames)


@pytest.mark.parametrize("how", SPLITS)
def test_garbage_before_between_and_after_frames_with_a_start_marker(how: str) -> None:
    stream = b"\x00\xffnoise" + TON_1234 + b"more noise" + TEMP_01.replace(b":", b"") + TON_1234 + b"tail"
    splitter = FrameSplitter(start=b"$", terminator=b"\r\n", max_frame=128)
    assert feed_in_pieces(splitter, stream, pieces(stream, how)) == [TON_1234[1:-2]] * 2
    # everything but the two frames; "tail" is garbage too (no start in it)
    assert splitter.garbage_bytes == len(stream) - 2 * len(TON_1234)
    assert splitter.buffered == 0


def test_a_start_marker_in_an_unfinished_frame_starts_over() -> None:
    # a cable pulled mid-frame and plugged back: the half frame is garbage, the next is whole
    splitter = FrameSplitter(start=b"$", terminator=b"\r\n", max_frame=128)
    half = TON_1234[:20]
    assert splitter.feed(half) == []
    assert splitter.feed(TON_1234) == [TON_1234[1:-2]]
    assert splitter.garbage_bytes == len(half)
    # ... also when both halves arrive in one read
    assert splitter.feed(half + half + TON_1234) == [TON_1234[1:-2]]
    assert splitter.garbage_bytes == 3 * len(half)


def test_resync_on_start_off_keeps_start_characters_in_the_data() -> None:
    splitter = FrameSplitter(start=b":", terminator=b"\r\n", max_frame=64, resync_on_start=False)
    assert splitter.feed(b":T,12:30:00\r\n") == [b"T,12:30:00"]
    on = FrameSplitter(start=b":", terminator=b"\r\n", max_frame=64)
    assert on.feed(b":T,12:30:00\r\n") == [b"00"]  # why it can be turned off


@pytest.mark.parametrize("how", SPLITS)
def test_overlong_frame_without_start_is_dropped_up_to_the_next_terminator(how: str) -> None:
    long_line = b"X" * 100 + b"\r\n"
    stream = b"A,1\r\n" + long_line + b"B,2\r\n"
    splitter = FrameSplitter(terminator=b"\r\n", max_frame=16)
    assert feed_in_pieces(splitter, stream, pieces(stream, how)) == [b"A,1", b"B,2"]
    assert splitter.overlong == 1
    assert splitter.garbage_bytes == len(long_line)


@pytest.mark.parametrize("how", SPLITS)
def test_overlong_frame_with_start_resyncs_on_the_next_start(how: str) -> None:
    long_frame = b"$" + b"9" * 200 + b"\r\n"
    stream = TON_1234 + long_frame + TON_1234
    splitter = FrameSplitter(start=b"$", terminator=b"\r\n", max_frame=64)
    assert feed_in_pieces(splitter, stream, pieces(stream, how)) == [TON_1234[1:-2]] * 2
    assert splitter.overlong == 1
    assert splitter.garbage_bytes == len(long_frame)


def test_frame_of_exactly_max_frame_bytes_passes_one_more_does_not() -> None:
    splitter = FrameSplitter(start=b"$", terminator=b"\r\n", max_frame=10)
    assert splitter.feed(b"$1234567\r\n") == [b"1234567"]  # 10 bytes
    assert splitter.feed(b"$12345678\r\n") == []  # 11 bytes
    assert splitter.overlong == 1
    plain = FrameSplitter(terminator=b"\r\n", max_frame=10)
    assert plain.feed(b"12345678\r\n123456789\r\nok\r\n") == [b"12345678", b"ok"]
    assert plain.overlong == 1


@pytest.mark.parametrize("settings", [
    {"terminator": b"\r\n"}, {"start": b"$", "terminator": b"\r\n"},
    {"length": 32, "start": b"$"}])
def test_receive_buffer_stays_bounded(settings: dict[str, Any]) -> None:
    splitter = FrameSplitter(max_frame=64, **settings)
    rng = random.Random(3)
    most = 0
    for _ in range(2000):  # 1 MB of noise without a single terminator
        chunk = bytes(rng.choice(b"abc$,0123") for _ in range(512)).replace(b"\r", b"")
        splitter.feed(chunk)
        most = max(most, splitter.buffered)
    assert most <= 64 + 512  # one frame's worth plus the chunk just received


def test_a_partial_terminator_or_start_at_a_chunk_edge_is_kept() -> None:
    splitter = FrameSplitter(start=b"\x10\x02", terminator=b"\x10\x03", max_frame=64)
    assert splitter.feed(b"junk\x10") == []
    assert splitter.feed(b"\x02AB\x10") == []
    assert splitter.feed(b"\x03") == [b"AB"]
    assert splitter.garbage_bytes == 4


def test_reset_drops_a_partial_frame() -> None:
    splitter = FrameSplitter(start=b"$", terminator=b"\r\n", max_frame=64)
    splitter.feed(b"$TON,1,2")
    assert splitter.reset() == 8
    assert splitter.feed(b",3*00\r\n") == []  # no start: garbage, not a frame
    assert splitter.feed(TON_1234) == [TON_1234[1:-2]]


# --------------------------------------------------------------------------- extraction


def sig(**fields: Any) -> SerialLineSignalFields:
    return SerialLineSignalFields.model_validate(fields)


TEMP_REGEX = (r"^(?P<addr>\d{2})RD,(?P<pv>[^,]*),(?P<sp>[^,]*),(?P<out>[^,]*),"
              r"(?P<status>[^,]*)$")


def values(samples: list[RawSample]) -> list[Any]:
    return [s.value if s.reason is None else s.reason for s in samples]


def test_extract_by_delimiter_and_index() -> None:
    signals = [sig(index=1, type="int"), sig(index=2), sig(index=-1), sig(index=0, type="str")]
    ext = Extractor(signals, None, ",")
    out = ext.extract("TON,1234,101.5,99.0,100.2,98.7,399.4,-12.1", 7)
    assert values(out) == [1234, 101.5, -12.1, "TON"]
    assert all(s.ts_ns == 7 and s.quality == "good" for s in out)
    assert type(out[0].value) is int and type(out[1].value) is float


def test_extract_by_regex_named_groups() -> None:
    signals = [sig(field="pv"), sig(field="sp"), sig(field="out", type="int"),
               sig(field="status", type="str"), sig(field="addr", type="int")]
    ext = Extractor(signals, TEMP_REGEX, None)
    assert values(ext.extract("01RD,25.3,30.0,45,0", 1)) == [25.3, 30.0, 45, "0", 1]


def test_regex_and_delimiter_together() -> None:
    # the regex checks the form; signals take fields either way
    ext = Extractor([sig(field="addr", type="int"), sig(index=1)], TEMP_REGEX, ",")
    assert values(ext.extract("02RD,180.5,200.0,75,1", 1)) == [2, 180.5]


@pytest.mark.parametrize(("kind", "extra", "text", "value"), [
    ("int", {}, "42", 42), ("int", {}, " -7 ", -7), ("int", {}, "+0012", 12),
    ("int", {"base": 16}, "1F", 31), ("int", {"base": 16}, "ff", 255),
    ("int", {"base": 2}, "101", 5),
    ("float", {}, "3.25", 3.25), ("float", {}, "  -0.5", -0.5), ("float", {}, "1e3", 1000.0),
    ("float", {}, "7", 7.0),
    ("bool", {}, "1", True), ("bool", {}, "0", False), ("bool", {}, "ON", True),
    ("bool", {}, " off ", False), ("bool", {}, "True", True), ("bool", {}, "no", False),
    ("bool", {"true_tokens": ["RUN"], "false_tokens": ["STOP", "IDLE"]}, "run", True),
    ("bool", {"true_tokens": ["RUN"], "false_tokens": ["STOP", "IDLE"]}, "IDLE", False),
    ("bool", {"true_tokens": [1], "false_tokens": [2]}, "2", False),  # YAML numbers as tokens
    ("str", {}, " AUTO ", "AUTO"), ("str", {}, "", ""),
])
def test_typed_conversion(kind: str, extra: dict[str, Any], text: str, value: Any) -> None:
    signal = sig(index=0, type=kind, **extra)
    out = Extractor([signal], None, ";").extract(text, 1)
    assert out[0].reason is None
    assert out[0].value == value and type(out[0].value) is type(value)


@pytest.mark.parametrize(("kind", "extra", "text"), [
    ("int", {}, "12.5"), ("int", {}, ""), ("int", {}, "abc"), ("int", {"base": 16}, "G1"),
    ("float", {}, ""), ("float", {}, "1,5"), ("float", {}, "--1"),
    ("bool", {}, "maybe"), ("bool", {}, ""), ("bool", {"true_tokens": ["RUN"]}, "on"),
])
def test_field_that_does_not_convert_is_a_parse_error(kind: str, extra: dict[str, Any],
                                                      text: str) -> None:
    ext = Extractor([sig(index=0, type=kind, **extra), sig(index=1, type="str")], None, ";")
    out = ext.extract(text + ";ok", 5)
    assert values(out) == ["parse_error", "ok"]
    assert out[0].quality == "bad" and out[0].value is None and out[0].ts_ns == 5
    assert ext.parse_errors == 1


def test_frame_not_matching_the_regex_is_unexpected_for_every_signal() -> None:
    ext = Extractor([sig(field="pv"), sig(field="sp")], TEMP_REGEX, None)
    out = ext.extract("01WR,OK", 3)
    assert values(out) == ["unexpected_frame", "unexpected_frame"]
    assert ext.unexpected == 1


def test_missing_index_is_unexpected_for_that_signal_only() -> None:
    ext = Extractor([sig(index=1, type="int"), sig(index=9)], None, ",")
    assert values(ext.extract("TON,5,1.0", 1)) == [5, "unexpected_frame"]


def test_optional_regex_group_that_did_not_match_is_a_parse_error() -> None:
    ext = Extractor([sig(field="a", type="int"), sig(field="b", type="int")],
                    r"^(?P<a>\d+)(?:,(?P<b>\d+))?$", None)
    assert values(ext.extract("12", 1)) == [12, "parse_error"]


def test_converter_rejects_unknown_type() -> None:
    with pytest.raises(ValueError):
        converter("complex")


# --------------------------------------------------------------------------- escapes


@pytest.mark.parametrize(("text", "expected"), [
    ("\\r\\n", "\r\n"), ("\r\n", "\r\n"), ("\\x02", "\x02"), ("\\x1B[0m", "\x1b[0m"),
    ("\\\\", "\\"), ("a\\tb", "a\tb"), ("\\0", "\0"), ("\\e", "\x1b"), (":01RD\\r\\n", ":01RD\r\n"),
])
def test_unescape(text: str, expected: str) -> None:
    assert unescape(text) == expected


@pytest.mark.parametrize("text", ["\\q", "\\x1", "\\xZZ", "abc\\", "\u20ac"])
def test_unescape_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        unescape(text)


# --------------------------------------------------------------------------- config files

AGENT = "agent:\n  id: gw-01\n  site: plant\n"
F = "machines.d/m.yaml"

TONNAGE_YAML = textwrap.dedent(r"""
    # Tonnage monitor of a mechanical press. It prints one line per stroke by itself:
    #   $TON,<stroke>,<ch1>,<ch2>,<ch3>,<ch4>,<total>,<reverse>*<XX>\r\n
    # XX is the XOR of the bytes between $ and *, in uppercase hex (NMEA style).
    id: press-07-tonnage
    family: press
    area: stamping
    line: line-2
    description: tonnage monitor of press 7 (streams one line per stroke)

    connection:
      protocol: serial-line
      serial: {port: /dev/ttyUSB0, baudrate: 19200, parity: N, stopbits: 1, bytesize: 8}
      framing: {start: "$", terminator: "\r\n", max_frame: 128}
      checksum: {type: xor8, separator: "*"}     # over the bytes between $ and *
      delimiter: ","
      groups:
        strokes:
          mode: stream       # the monitor talks by itself; each line is one sample set
          match: "TON,"      # other sentences it may print are not strokes
          max_pending: 10000 # lines kept between two polls (beyond: oldest dropped, counted)

    poll:
      strokes: 500ms         # how often the agent collects the lines received meanwhile

    signals:
      # index 0 is the sentence name (TON); the checksum is not a field. The monitor prints
      # tonnes-force with one decimal; scale makes kN like the other presses (1 tf = 9.80665 kN)
      - {name: cycle.count, index: 1, type: int}
      - {name: press.force.ch1, index: 2, scale: 9.80665, unit: kN}
      - {name: press.force.ch2, index: 3, scale: 9.80665, unit: kN}
      - {name: press.force.ch3, index: 4, scale: 9.80665, unit: kN}
      - {name: press.force.ch4, index: 5, scale: 9.80665, unit: kN}
      - {name: press.force.total_peak, index: 6, scale: 9.80665, unit: kN}
      - {name: press.force.reverse_peak, index: 7, scale: 9.80665, unit: kN}
    """).lstrip()

TEMPCTL_YAML = textwrap.dedent(r"""
    # Two-zone temperature controller (RS-485, ASCII). Each zone answers its own request:
    #   request  :<AA>RD\r\n
    #   reply    :<AA>RD,<pv>,<sp>,<out>,<status>,<LL>\r\n
    # LL is the LRC (two's complement of the 8-bit sum) of the bytes between ':' and the
    # comma before LL, in hex.
    id: furnace-02-tempctl
    family: forging
    area: forging
    line: line-1
    description: billet furnace temperature controller, zones 1 and 2

    connection:
      protocol: serial-line
      serial: {port: /dev/ttyUSB1, baudrate: 9600, parity: E, stopbits: 1, bytesize: 7}
      framing: {start: ":", terminator: "\r\n"}
      checksum: {type: lrc, separator: ","}   # over the bytes between ':' and the last comma
      timeout: 500ms                          # per request
      # the frame text is <AA>RD,<pv>,<sp>,<out>,<status> (start, checksum, terminator off)
      regex: '^(?P<addr>\d{2})RD,(?P<pv>[^,]*),(?P<sp>[^,]*),(?P<out>[^,]*),(?P<status>[^,]*)$'
      groups:
        # match: only a frame from that address is the answer (a late reply of zone 2 is
        # never taken for zone 1's); an error reply :01ER,LL is, and reads unexpected_frame
        zone1: {command: ":01RD\r\n", match: "01"}
        zone2: {command: ":02RD\r\n", match: "02"}

    poll:
      zone1: 1s
      zone2: 1s

    signals:
      - {name: temperature.zone1, field: pv, unit: Cel, poll: zone1}
      - {name: temperature.zone1.setpoint, field: sp, unit: Cel, poll: zone1}
      - {name: heater.zone1.output, field: out, unit: "%", poll: zone1}
      - {name: x.tempctl.zone1.status, field: status, type: int, poll: zone1,
         enum: {0: ok, 1: high_alarm, 2: sensor_break}}
      - {name: temperature.zone2, field: pv, unit: Cel, poll: zone2}
      - {name: temperature.zone2.setpoint, field: sp, unit: Cel, poll: zone2}
      - {name: heater.zone2.output, field: out, unit: "%", poll: zone2}
      - {name: x.tempctl.zone2.status, field: status, type: int, poll: zone2,
         enum: {0: ok, 1: high_alarm, 2: sensor_break}}
    """).lstrip()


def write(root: Path, files: dict[str, str]) -> Path:
    (root / "machines.d").mkdir(parents=True, exist_ok=True)
    (root / "agent.yaml").write_text(AGENT, encoding="utf-8")
    for name, text in files.items():
        (root / "machines.d" / name).write_text(text, encoding="utf-8")
    return root


def errors_of(root: Path) -> list[str]:
    with pytest.raises(ConfigInvalid) as info:
        load_config(root, ALL_DRIVERS)
    assert all(isinstance(e, ConfigError) for e in info.value.errors)
    return [str(e) for e in info.value.errors]


def test_sample_machine_files_load(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, {"tonnage.yaml": TONNAGE_YAML,
                                          "tempctl.yaml": TEMPCTL_YAML}), ALL_DRIVERS)
    temp, tonnage = config.machines
    assert temp.spec is tonnage.spec is SERIAL_LINE
    conn = tonnage.model.connection
    assert isinstance(conn, SerialLineConnection)
    assert conn.framing.start == "$" and conn.framing.terminator == "\r\n"
    assert (conn.checksum.type, conn.checksum.separator, conn.checksum.over) == ("xor8", "*", "body")
    assert conn.groups["strokes"].mode == "stream"
    assert [s.index for s in tonnage.model.signals] == [1, 2, 3, 4, 5, 6, 7]
    conn = temp.model.connection
    assert conn.serial is not None and (conn.serial.parity, conn.serial.bytesize) == ("E", 7)
    assert conn.timeout == pytest.approx(0.5)
    assert {g: (e.mode, e.command) for g, e in conn.groups.items()} == {
        "zone1": ("request", ":01RD\r\n"), "zone2": ("request", ":02RD\r\n")}
    assert list(temp.signals_by_group()) == ["zone1", "zone2"]
    # the driver builds from the loaded models, without opening anything
    driver = temp.spec.factory(conn, temp.signals_by_group(), {"zone1": 1.0, "zone2": 1.0}, {})
    assert driver.request_count("zone1") == 1 and not driver.connected
    driver = tonnage.spec.factory(tonnage.model.connection, tonnage.signals_by_group(),
                                  {"strokes": 0.5}, {})
    assert driver.request_count("strokes") == 0


def test_json_schema_includes_the_serial_line_variant() -> None:
    schema = full_schema(ALL_DRIVERS)
    assert "SerialLineMachine" in schema["machine"]["$defs"]


HEAD = textwrap.dedent("""\
    id: m-01
    family: other
    area: a1
    line: l1
    connection:
      protocol: serial-line
    """)  # 6 lines: the case's connection lines start on line 7


def machine(conn: str, *signals: str, poll: str = "  g: 1s\n") -> str:
    return (HEAD + textwrap.indent(textwrap.dedent(conn), "  ") + "poll:\n" + poll
            + "signals:\n" + "".join(s + "\n" for s in signals))


SERIAL = "serial: {port: /dev/ttyUSB0}\n"
STREAM = SERIAL + "delimiter: ','\ngroups:\n  g: {mode: stream}\n"
IDX = "  - {name: x.a.b, index: 1}"


def test_head_has_the_documented_length() -> None:
    assert HEAD.count("\n") == 6
    text = machine(STREAM, IDX)
    lines = text.splitlines()
    # STREAM is 4 connection lines (7-10), then poll: (11), g (12), signals: (13), IDX (14)
    assert lines[6] == "  " + SERIAL.strip() and lines[13] == IDX


def test_single_quoted_and_plain_escapes_mean_the_same_bytes(tmp_path: Path) -> None:
    text = machine(SERIAL + textwrap.dedent(r"""
        framing: {start: '\x02', terminator: \x03, max_frame: 64}
        checksum: {type: sum8, separator: '\t'}
        delimiter: '\x1f'
        groups:
          g: {command: ':01RD\r\n'}
          h: {command: ":02RD\r\n"}
        """), "  - {name: x.a.b, index: 1, poll: g}", "  - {name: x.a.c, index: 1, poll: h}",
                   poll="  g: 1s\n  h: 1s\n")
    config = load_config(write(tmp_path, {"m.yaml": text}), ALL_DRIVERS)
    conn = config.machines[0].model.connection
    assert conn.framing.start == "\x02" and conn.framing.terminator == "\x03"
    assert conn.checksum.separator == "\t" and conn.delimiter == "\x1f"
    assert conn.groups["g"].command == conn.groups["h"].command.replace("2", "1") == ":01RD\r\n"


def test_checksum_shorthand_and_tcp(tmp_path: Path) -> None:
    text = machine("tcp: {host: 10.0.0.7, port: 4001}\nchecksum: crc16-modbus\n"
                   "delimiter: ','\ngroups:\n  g: {command: 'R\\r\\n', timeout: 2s}\n", IDX)
    conn = load_config(write(tmp_path, {"m.yaml": text}), ALL_DRIVERS).machines[0].model.connection
    assert conn.tcp.host == "10.0.0.7" and conn.tcp.port == 4001 and conn.serial is None
    assert conn.checksum.type == "crc16-modbus" and conn.checksum.separator == ","
    assert conn.timeout_of(conn.groups["g"]) == pytest.approx(2.0)


# Line numbers: HEAD is lines 1-6, the connection lines follow from 7. With STREAM (lines
# 7-10) and one poll group the first signal is on line 14; with SERIAL + `groups:` + one group
# (lines 7-9) it is on line 13.
BROKEN: list[tuple[str, str, list[str]]] = [
    ("serial-and-tcp", machine(STREAM.replace(SERIAL, SERIAL + "tcp: {host: h, port: 1}\n"), IDX),
     [(f"{F}:5: connection: give exactly one of `serial` (a serial port) or `tcp` "
      "(a serial device server)")]),
    ("neither-serial-nor-tcp", machine("delimiter: ','\ngroups:\n  g: {mode: stream}\n", IDX),
     [(f"{F}:5: connection: give exactly one of `serial` (a serial port) or `tcp` "
      "(a serial device server)")]),
    ("groups-missing", machine(SERIAL, IDX),
     [f"{F}:5: connection.groups: required field is missing"]),
    ("group-neither-command-nor-stream", machine(SERIAL + "delimiter: ','\ngroups:\n  g: {}\n", IDX),
     [(f"{F}:10: connection.groups.g: give a `command` to send (request/response) or "
      "`mode: stream` (the device sends by itself)")]),
    ("stream-with-command", machine(SERIAL + "delimiter: ','\ngroups:\n"            # 7-9
                                    "  g:\n    mode: stream\n    command: 'R\\r'\n", IDX),  # 10
     [(f"{F}:10: connection.groups.g: a streaming group sends no command: remove `command`, "
      "or `mode: stream` for request/response")]),
    ("request-without-command", machine(SERIAL + "delimiter: ','\ngroups:\n  g: {mode: request}\n", IDX),
     [f"{F}:10: connection.groups.g: a request group needs a `command` to send"]),
    ("timeout-on-stream", machine(SERIAL + "delimiter: ','\ngroups:\n  g: {mode: stream, timeout: 1s}\n", IDX),
     [(f"{F}:10: connection.groups.g: timeout applies to request groups only "
      "(a silent stream: use stale_after)")]),
    ("stale-after-on-request", machine(SERIAL + "delimiter: ','\ngroups:\n  g: {command: R, stale_after: 5s}\n", IDX),
     [f"{F}:10: connection.groups.g: stale_after applies to streaming groups only"]),
    ("unknown-mode", machine(SERIAL + "delimiter: ','\ngroups:\n  g: {mode: push}\n", IDX),
     [f"{F}:10: connection.groups.g.mode: 'push' is not one of request, stream"]),
    ("regex-does-not-compile", machine(SERIAL + "groups:\n  g:\n    mode: stream\n"   # 7-10
                                       "    regex: '^(?P<a>\\d+'\n",                  # 11
                                       "  - {name: x.a.b, field: a}"),
     [(f"{F}:11: connection.groups.g.regex: '^(?P<a>\\\\d+' is not a valid regular expression: "
      "missing ), unterminated subpattern at position 1")]),
    ("field-not-in-regex", machine(SERIAL + "regex: '^T,(?P<stroke>\\d+),(?P<ch1>.*)$'\n"  # 8
                                   "groups:\n  g: {mode: stream}\n",                 # 9-10
                                   "  - {name: x.a.b, field: stroke}",                 # 14
                                   "  - name: x.a.c",                                  # 15
                                   "    field: ch2"),                                # 16
     [(f"{F}:16: signals[1].field: 'ch2' is not a named group of the regex of poll group 'g' "
      "(it has: stroke, ch1)")]),
    ("field-without-regex", machine(STREAM, "  - {name: x.a.b, field: pv}"),
     [(f"{F}:14: signals[0].field: needs a `regex` with named groups (in connection.groups.g "
      "or on the connection)")]),
    ("regex-without-named-groups", machine(SERIAL + "groups:\n  g: {mode: stream, regex: 'T,(\\d+)'}\n",
                                           "  - {name: x.a.b, field: pv}"),
     [(f"{F}:13: signals[0].field: 'pv' is not a named group of the regex of poll group 'g' "
      "(it has: none; name them (?P<name>...))")]),
    ("index-without-delimiter", machine(SERIAL + "groups:\n  g: {mode: stream}\n", IDX),
     [f"{F}:13: signals[0].index: needs a `delimiter` (in connection.groups.g or on the connection)"]),
    ("field-and-index", machine(STREAM, "  - {name: x.a.b, index: 1, field: x}"),
     [(f"{F}:14: signals[0]: give exactly one of `field` (a named group of the regex) or "
      "`index` (a position after splitting by the delimiter)")]),
    ("neither-field-nor-index", machine(STREAM, "  - {name: x.a.b, unit: kN}"),
     [(f"{F}:14: signals[0]: give exactly one of `field` (a named group of the regex) or "
      "`index` (a position after splitting by the delimiter)")]),
    ("unknown-type", machine(STREAM, "  - {name: x.a.b, index: 1, type: double}"),
     [f"{F}:14: signals[0].type: 'double' is not one of float, int, bool, str"]),
    ("tokens-on-float", machine(STREAM, "  - {name: x.a.b, index: 1, true_tokens: [RUN]}"),
     [f"{F}:14: signals[0]: true_tokens/false_tokens apply to type bool only (this one is float)"]),
    ("token-both-ways", machine(STREAM, "  - {name: x.a.b, index: 1, type: bool, true_tokens: [1],"
                                        " false_tokens: ['1', 'off']}"),
     [f"{F}:14: signals[0]: 1: both a true and a false token"]),
    ("base-on-float", machine(STREAM, "  - {name: x.a.b, index: 1, base: 16}"),
     [f"{F}:14: signals[0]: base applies to type int only (this one is float)"]),
    ("unknown-checksum", machine(STREAM + "checksum: {type: crc32}\n", IDX),          # 11
     [(f"{F}:11: connection.checksum.type: 'crc32' is not one of none, sum8, xor8, lrc, "
      "crc16-modbus")]),
    ("unknown-checksum-shorthand", machine(STREAM + "checksum: crc8\n", IDX),
     [(f"{F}:11: connection.checksum.type: 'crc8' is not one of none, sum8, xor8, lrc, "
      "crc16-modbus")]),
    ("checksum-over-start-without-start", machine(
        STREAM + "checksum:\n  type: sum8\n  over: start+body\n", IDX),               # 11-13
     [(f"{F}:13: connection.checksum.over: start+body includes the start marker, but "
      "connection.framing has no `start`")]),
    ("checksum-over-separator-without-one", machine(
        STREAM + "checksum: {type: sum8, separator: '', over: body+separator}\n", IDX),
     [(f"{F}:11: connection.checksum: over: body+separator includes the separator, but there "
      "is none")]),
    ("unknown-escape", machine(STREAM + "framing: {terminator: '\\q'}\n", IDX),
     [(f"{F}:11: connection.framing.terminator: '\\\\q': unknown escape '\\\\q' (use \\r, \\n, "
      "\\t, \\0, \\e, \\\\ or \\xHH)")]),
    ("empty-terminator", machine(STREAM + "framing: {terminator: ''}\n", IDX),
     [f"{F}:11: connection.framing.terminator: must not be empty"]),
    ("terminator-and-length", machine(STREAM + "framing: {terminator: '\\n', length: 8}\n", IDX),
     [f"{F}:11: connection.framing: give `terminator` or `length` (fixed-length frames), not both"]),
    ("length-over-max-frame", machine(STREAM + "framing: {length: 600}\n", IDX),
     [f"{F}:11: connection.framing: length 600 is more than max_frame 512"]),
    ("stopbits", machine(STREAM.replace(SERIAL, "serial: {port: /dev/ttyS0, stopbits: 3}\n"), IDX),
     [f"{F}:7: connection.serial.stopbits: 3: stopbits must be 1 or 2"]),
    ("parity", machine(STREAM.replace(SERIAL, "serial: {port: /dev/ttyS0, parity: mark}\n"), IDX),
     [f"{F}:7: connection.serial.parity: 'mark' is not one of N, E, O"]),
    ("group-not-a-poll-group", machine(STREAM + "  h: {command: R}\n", IDX),         # 11
     [f"{F}:11: connection.groups.h: 'h' is not a poll group of this machine (g)"]),
    ("poll-group-without-entry", machine(STREAM, "  - {name: x.a.b, index: 1, poll: g}",  # 9
                                         "  - {name: x.a.c, index: 2, poll: h}",
                                         poll="  g: 1s\n  h: 1s\n"),
     [(f"{F}:9: connection.groups: poll group 'h' has signals but no entry here: give it a "
      "`command` (request/response) or `mode: stream`")]),
    ("stream-and-request-without-match", machine(
        SERIAL + "delimiter: ','\ngroups:\n"                                          # 7-9
        "  g: {mode: stream}\n"                                                        # 10
        "  h: {command: 'R\\r\\n', match: 'R,'}\n",                                    # 11
        "  - {name: x.a.b, index: 1, poll: g}", "  - {name: x.a.c, index: 1, poll: h}",
        poll="  g: 1s\n  h: 1s\n"),
     [(f"{F}:10: connection.groups.g: needs `match` (a regex the frame text starts with): the "
      "device both streams and answers requests, so every frame must name its group")]),
    ("two-streams-without-match", machine(
        SERIAL + "delimiter: ','\ngroups:\n  g: {mode: stream}\n  h: {mode: stream}\n",
        "  - {name: x.a.b, index: 1, poll: g}", "  - {name: x.a.c, index: 1, poll: h}",
        poll="  g: 1s\n  h: 1s\n"),
     [(f"{F}:10: connection.groups.g: needs `match` (a regex the frame text starts with): "
      "several groups take streamed frames, so every frame must name its group"),
      (f"{F}:11: connection.groups.h: needs `match` (a regex the frame text starts with): "
      "several groups take streamed frames, so every frame must name its group")]),
    ("match-does-not-compile", machine(SERIAL + "delimiter: ','\ngroups:\n  g: {mode: stream, match: '[A'}\n", IDX),
     [(f"{F}:10: connection.groups.g.match: '[A' is not a valid regular expression: unterminated "
      "character set at position 0")]),
    ("unknown-connection-field", machine(STREAM + "baudrate: 9600\n", IDX),
     [f"{F}:11: connection.baudrate: unknown field"]),
    ("unknown-serial-field-did-you-mean", machine(
        STREAM.replace(SERIAL, "serial: {port: /dev/ttyS0, baud: 9600}\n"), IDX),
     [f"{F}:7: connection.serial.baud: unknown field (did you mean 'baudrate'?)"]),
]


@pytest.mark.parametrize(("text", "expected"), [pytest.param(t, e, id=i) for i, t, e in BROKEN])
def test_broken_machine_files(tmp_path: Path, text: str, expected: list[str]) -> None:
    assert errors_of(write(tmp_path, {"m.yaml": text})) == expected


# --------------------------------------------------------------------------- devices


async def until(condition: Callable[[], bool], what: str, deadline: float = 10.0) -> None:
    """Wait for `condition`; the deadline only bounds a failing run."""
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline
    while not condition():
        if loop.time() > end:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.002)


class PtyDevice:
    """A device on the master side of a pty pair; the driver opens the slave by its path.

    `reply(request line)` (CR LF off) returns the bytes to answer with, or None."""

    def __init__(self, reply: Callable[[bytes], bytes | None] | None = None) -> None:
        self.master, self._slave = os.openpty()
        self.path = os.ttyname(self._slave)
        os.set_blocking(self.master, False)
        self.reply = reply
        self.requests: list[bytes] = []
        self._inbox = bytearray()
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self.master, self._readable)
        self.open = True

    def _readable(self) -> None:
        try:
            data = os.read(self.master, 4096)
        except OSError:
            return
        self._inbox += data
        while b"\n" in self._inbox:
            line, _, rest = bytes(self._inbox).partition(b"\n")
            self._inbox = bytearray(rest)
            request = line.rstrip(b"\r")
            self.requests.append(request)
            answer = self.reply(request) if self.reply else None
            if answer:
                self._loop.create_task(self.send(answer))

    async def send(self, data: bytes) -> None:
        view = memoryview(data)
        while view and self.open:
            try:
                view = view[os.write(self.master, view):]
            except BlockingIOError:  # the pty buffer is full until the driver reads
                await asyncio.sleep(0.001)

    def pull_cable(self) -> None:
        if self.open:
            self.open = False
            self._loop.remove_reader(self.master)
            os.close(self.master)

    def close(self) -> None:
        self.pull_cable()
        os.close(self._slave)


@asynccontextmanager
async def pty_device(reply: Callable[[bytes], bytes | None] | None = None
                     ) -> AsyncIterator[PtyDevice]:
    device = PtyDevice(reply)
    try:
        yield device
    finally:
        device.close()


def tonnage_driver(port: str | None = None, *, tcp: tuple[str, int] | None = None,
                   **group: Any) -> SerialLineDriver:
    link: dict[str, Any] = {"serial": {"port": port}} if tcp is None else {
        "tcp": {"host": tcp[0], "port": tcp[1]}}
    conn = SerialLineConnection.model_validate({
        "protocol": "serial-line", **link,
        "framing": {"start": "$", "terminator": "\r\n", "max_frame": 128},
        "checksum": {"type": "xor8", "separator": "*"}, "delimiter": ",",
        "groups": {"strokes": {"mode": "stream", "match": "TON,", **group}}})
    signals = [sig(index=1, type="int")] + [sig(index=i) for i in range(2, 8)]
    return SerialLineDriver(conn, {"strokes": signals}, {"strokes": 0.5})


def tempctl_driver(port: str | None = None, *, tcp: tuple[str, int] | None = None,
                   timeout: float = 5.0, match: bool = True,
                   short: int | None = None) -> SerialLineDriver:
    """The controller's two zones; zone `short` waits only 0.1 s (for tests that expect it
    to time out - the others wait long, so a loaded machine does not make them time out)."""
    link: dict[str, Any] = {"serial": {"port": port, "baudrate": 9600, "parity": "E",
                                       "bytesize": 7}} if tcp is None else {
        "tcp": {"host": tcp[0], "port": tcp[1]}}
    conn = SerialLineConnection.model_validate({
        "protocol": "serial-line", **link,
        "framing": {"start": ":", "terminator": "\r\n"},
        "checksum": {"type": "lrc", "separator": ","},
        "timeout": timeout, "regex": TEMP_REGEX,
        "groups": {f"zone{z}": {"command": f":0{z}RD\\r\\n",
                                **({"match": f"0{z}"} if match else {}),
                                **({"timeout": 0.1} if z == short else {})} for z in (1, 2)}})
    signals = [sig(field="pv"), sig(field="sp"), sig(field="out", type="int"),
               sig(field="status", type="int")]
    return SerialLineDriver(conn, {"zone1": signals, "zone2": signals},
                            {"zone1": 1.0, "zone2": 1.0})


class TempController:
    """Answers :01RD and :02RD like the real controller (used on a pty and over TCP)."""

    def __init__(self) -> None:
        self.zones = {1: ("25.3", "30.0", "45", "0"), 2: ("180.5", "200.0", "75", "1")}
        self.silent: set[int] = set()
        self.corrupt: set[int] = set()
        self.before: dict[int, bytes] = {}  # sent ahead of the reply (stray, late replies)
        self.error: set[int] = set()  # answer :<AA>ER,<LL> (the controller's error reply)

    def __call__(self, request: bytes) -> bytes | None:
        if not (request.startswith(b":") and request.endswith(b"RD") and len(request) == 5):
            return None
        zone = int(request[1:3])
        if zone in self.silent or zone not in self.zones:
            return None
        if zone in self.error:
            body = b"%02dER" % zone
            return b":" + body + b"," + lrc_hex(body) + b"\r\n"
        return self.before.pop(zone, b"") + temp_reply(zone, *self.zones[zone],
                                                       bad_checksum=zone in self.corrupt)


async def drain(driver: Any, group: str = "strokes") -> Drained:
    drained = await driver.drain(group)
    assert isinstance(drained, Drained)
    return drained


def drained_values(drained: Drained, size: int = 7) -> list[list[Any]]:
    """The drained samples regrouped per frame (they arrive in signal order per frame)."""
    rows: list[list[Any]] = []
    for index, sample in drained.samples:
        if index == 0:
            rows.append([])
        rows[-1].append(sample.value if sample.reason is None else sample.reason)
    assert all(len(r) == size for r in rows)
    return rows


# --------------------------------------------------------------------------- pty: streaming


async def test_tonnage_stream_over_a_pty() -> None:
    async with pty_device() as device:
        driver = tonnage_driver(device.path)
        assert not driver.connected
        await driver.connect()
        try:
            assert driver.connected
            assert await driver.drain("strokes") is not None
            # a push group is drained, never read (the agent does not call read for it)
            assert values(await driver.read("strokes")) == ["config_error"] * 7
            await device.send(TON_1234)
            await device.send(ton(1235)[:17])  # half a line ...
            await until(lambda: driver.frames == 1, "the first frame")
            await device.send(ton(1235)[17:] + ton(1236))  # ... the rest
            await until(lambda: driver.frames == 3, "three frames")
            drained = await drain(driver)
            assert drained.events == []
            assert drained_values(drained) == [
                TON_1234_VALUES,
                [1235, 100.0, 101.0, 102.0, 103.0, 406.0, -10.0],
                [1236, 100.0, 101.0, 102.0, 103.0, 406.0, -10.0]]
            assert all(s.quality == "good" for _, s in drained.samples)
            assert (await drain(driver)).samples == []  # nothing new
            assert driver.request_count("strokes") == 0
            assert (driver.garbage_bytes, driver.checksum_errors, driver.dropped) == (0, 0, 0)
        finally:
            await driver.close()
        assert not driver.connected


async def test_stream_garbage_bad_checksums_and_foreign_sentences() -> None:
    async with pty_device() as device:
        driver = tonnage_driver(device.path)
        await driver.connect()
        try:
            await device.send(b"\x00\xfe@@garbage" + ton(1) + b"noise\r\n" + ton(2, bad_checksum=True)
                              + ton(3, bad_checksum=True) + b"$STA,OK*" + xor_hex(b"STA,OK")
                              + b"\r\n" + TON_1234[:12] + ton(4) + b"$TON,5,1,2*ZZ\r\n" + ton(6))
            await until(lambda: driver.frames == 7, "seven frames")
            rows = drained_values(await drain(driver))
            # one bad set for the burst of bad checksums (not one per frame), in its place
            assert [r[0] for r in rows] == [1, "checksum", 4, 6]
            assert rows[1] == ["checksum"] * 7
            assert driver.checksum_errors == 3
            assert driver.stray_frames == 1  # the STA sentence: no group wants it
            assert driver.garbage_bytes == len(b"\x00\xfe@@garbage") + len(b"noise\r\n") + 12
            await device.send(ton(7, bad_checksum=True) + ton(8))
            await until(lambda: driver.frames == 9, "nine frames")
            assert [r[0] for r in drained_values(await drain(driver))] == ["checksum", 8]
        finally:
            await driver.close()


async def test_stream_with_fields_that_do_not_convert() -> None:
    async with pty_device() as device:
        driver = tonnage_driver(device.path)
        await driver.connect()
        try:
            body = b"TON,77,1.5,x,2.5,3.5,9.0,-1.0"
            await device.send(b"$" + body + b"*" + xor_hex(body) + b"\r\n")
            body = b"TON,78,1.5"  # too few fields
            await device.send(b"$" + body + b"*" + xor_hex(body) + b"\r\n")
            await until(lambda: driver.frames == 2, "two frames")
            rows = drained_values(await drain(driver))
            assert rows == [[77, 1.5, "parse_error", 2.5, 3.5, 9.0, -1.0],
                            [78, 1.5] + ["unexpected_frame"] * 5]
            assert driver.parse_errors == 1 and driver.unexpected_frames == 1
        finally:
            await driver.close()


async def test_a_flood_faster_than_drain_keeps_the_newest_and_counts_the_rest(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="edge_agent.serial_line")
    async with pty_device() as device:
        driver = tonnage_driver(device.path, max_pending=50)
        await driver.connect()
        try:
            total = 3000
            await device.send(b"".join(ton(n) for n in range(total)))
            await until(lambda: driver.frames == total, f"{total} frames")
            rows = drained_values(await drain(driver))
            assert [r[0] for r in rows] == list(range(total - 50, total))
            assert driver.dropped == driver.overruns == total - 50
        finally:
            await driver.close()
    drops = [r for r in caplog.records if "dropped" in r.getMessage()]
    assert len(drops) == 1  # logged once for the burst, not per frame


async def test_pulled_cable_then_reconnect_through_a_symlink(tmp_path: Path) -> None:
    link = tmp_path / "ttyTONNAGE"
    async with pty_device() as first:
        os.symlink(first.path, link)
        driver = tonnage_driver(str(link))
        await driver.connect()
        await first.send(ton(1) + ton(2)[:15])  # the cable goes mid-frame
        await until(lambda: driver.frames == 1, "one frame")
        first.pull_cable()
        await until(lambda: not driver.connected, "the driver to notice")
        assert driver.disconnects == 1
        rows = drained_values(await drain(driver))
        assert rows == [[1, 100.0, 101.0, 102.0, 103.0, 406.0, -10.0], ["comm_failure"] * 7]
        with pytest.raises(OSError):  # the old pty is gone: the agent backs off and retries
            await driver.connect()
    async with pty_device() as second:
        tmp = tmp_path / "ttyTONNAGE.new"
        os.symlink(second.path, tmp)
        os.replace(tmp, link)
        await driver.connect()
        try:
            assert driver.connected
            await second.send(ton(3))
            await until(lambda: driver.frames == 2, "a frame after the reconnect")
            assert [r[0] for r in drained_values(await drain(driver))] == [3]
            assert driver.garbage_bytes == 15  # the half frame from before the cut
        finally:
            await driver.close()


async def test_silent_stream_is_stale_once() -> None:
    async with pty_device() as device:
        driver = tonnage_driver(device.path, stale_after=0.2)
        await driver.connect()
        try:
            loop = asyncio.get_running_loop()
            end = loop.time() + 10
            while not (drained := await drain(driver)).samples:  # poll like the agent
                assert loop.time() < end, "no timeout samples"
                await asyncio.sleep(0.01)
            assert drained_values(drained) == [["timeout"] * 7]
            assert (await drain(driver)).samples == []  # once per silence
            await device.send(ton(9))
            await until(lambda: driver.frames == 1, "a frame")
            # (a slow machine may take 0.2 s to get here: then the frame is followed by the
            # next silence's timeout set, which is right too)
            assert drained_values(await drain(driver))[0][0] == 9
            assert driver.timeouts >= 1
        finally:
            await driver.close()


# --------------------------------------------------------------------------- pty: request/response


async def test_tempctl_request_response_two_zones() -> None:
    controller = TempController()
    async with pty_device(controller) as device:
        driver = tempctl_driver(device.path)
        assert values(await driver.read("zone1")) == ["comm_failure"] * 4  # not connected yet
        await driver.connect()
        try:
            assert await driver.drain("zone1") is None  # a polled group
            assert values(await driver.read("zone1")) == [25.3, 30.0, 45, 0]
            assert values(await driver.read("zone2")) == [180.5, 200.0, 75, 1]
            assert device.requests == [b":01RD", b":02RD"]
            controller.zones[1] = ("26.0", "30.0", "50", "2")
            samples = await driver.read("zone1")
            assert values(samples) == [26.0, 30.0, 50, 2]
            assert all(s.quality == "good" and s.ts_ns > 0 for s in samples)
            assert driver.request_count("zone1") == 1
        finally:
            await driver.close()


async def test_tempctl_timeout_checksum_and_parse_error() -> None:
    controller = TempController()
    async with pty_device(controller) as device:
        driver = tempctl_driver(device.path, short=2)
        await driver.connect()
        try:
            controller.silent.add(2)
            assert values(await driver.read("zone2")) == ["timeout"] * 4
            assert driver.timeouts == 1 and driver.connected  # a silent unit is not a lost link
            controller.corrupt.add(1)
            assert values(await driver.read("zone1")) == ["checksum"] * 4
            controller.corrupt.clear()
            controller.zones[1] = ("25.3", "30.0", "4x5", "0")
            assert values(await driver.read("zone1")) == [25.3, 30.0, "parse_error", 0]
            controller.error.add(1)  # an error reply is the answer, but not in the regex's form
            assert values(await driver.read("zone1")) == ["unexpected_frame"] * 4
            controller.error.clear()
            controller.zones[1] = ("25.3", "30.0", "45", "0")
            assert values(await driver.read("zone1")) == [25.3, 30.0, 45, 0]
            assert driver.checksum_errors == 1 and driver.parse_errors == 1
            assert driver.unexpected_frames == 1
        finally:
            await driver.close()


async def test_stray_and_late_replies_are_not_taken_as_the_answer() -> None:
    controller = TempController()
    async with pty_device(controller) as device:
        driver = tempctl_driver(device.path, short=1)
        await driver.connect()
        try:
            # zone 1 does not answer in time; its reply turns up while zone 2 is asked
            controller.silent.add(1)
            assert values(await driver.read("zone1")) == ["timeout"] * 4
            controller.before[2] = TEMP_01 + b":01WR,OK,00\r\n"  # late reply + noise
            assert values(await driver.read("zone2")) == [180.5, 200.0, 75, 1]
            assert driver.stray_frames == 1  # the late zone-1 reply
            assert driver.checksum_errors == 1  # the noise line (wrong LRC), not taken either
        finally:
            await driver.close()


async def test_without_match_the_first_frame_is_the_answer() -> None:
    controller = TempController()
    async with pty_device(controller) as device:
        driver = tempctl_driver(device.path, match=False)
        await driver.connect()
        try:
            controller.before[1] = TEMP_02
            assert values(await driver.read("zone1")) == [180.5, 200.0, 75, 1]  # why `match`
        finally:
            await driver.close()


async def test_cable_pulled_during_a_request_fails_at_once() -> None:
    async with pty_device() as device:  # a device that never answers
        driver = tempctl_driver(device.path, timeout=60.0)
        await driver.connect()
        task = asyncio.create_task(driver.read("zone1"))
        await until(lambda: device.requests == [b":01RD"], "the request")
        device.pull_cable()
        # comm_failure, not timeout: the read ends with the link, not after 60 s
        assert values(await task) == ["comm_failure"] * 4
        assert not driver.connected
        assert values(await driver.read("zone2")) == ["comm_failure"] * 4
        await driver.close()


async def test_requests_do_not_overlap() -> None:
    controller = TempController()
    async with pty_device(controller) as device:
        driver = tempctl_driver(device.path)
        await driver.connect()
        try:
            first, second = await asyncio.gather(driver.read("zone1"), driver.read("zone2"))
            assert values(first) == [25.3, 30.0, 45, 0]
            assert values(second) == [180.5, 200.0, 75, 1]
            assert device.requests == [b":01RD", b":02RD"]
        finally:
            await driver.close()


async def test_a_device_that_streams_and_answers_requests_on_one_line() -> None:
    # the tonnage monitor also answers `$STA?` with `$STA,<die>,<mode>*XX` while it streams
    def reply(request: bytes) -> bytes | None:
        if request != b"$STA?":
            return None
        body = b"STA,DIE-42,RUN"
        # a stroke line arrives between the request and its answer
        return ton(500) + b"$" + body + b"*" + xor_hex(body) + b"\r\n" + ton(501)

    async with pty_device(reply) as device:
        conn = SerialLineConnection.model_validate({
            "protocol": "serial-line", "serial": {"port": device.path},
            "framing": {"start": "$"}, "checksum": {"type": "xor8", "separator": "*"},
            "delimiter": ",",
            "groups": {"strokes": {"mode": "stream", "match": "TON,"},
                       "status": {"command": "$STA?\\r\\n", "match": "STA,"}}})
        driver = SerialLineDriver(conn, {
            "strokes": [sig(index=1, type="int")],
            "status": [sig(index=1, type="str"), sig(index=2, type="bool", true_tokens=["RUN"],
                                                      false_tokens=["STOP"])]},
            {"strokes": 0.5, "status": 5.0})
        await driver.connect()
        try:
            await device.send(ton(499))
            assert values(await driver.read("status")) == ["DIE-42", True]
            await until(lambda: driver.frames == 4, "four frames")
            assert drained_values(await drain(driver), size=1) == [[499], [500], [501]]
            assert driver.stray_frames == 0
        finally:
            await driver.close()


async def test_missing_port_raises_oserror(tmp_path: Path) -> None:
    driver = tempctl_driver(str(tmp_path / "no-such-tty"))
    with pytest.raises(OSError):
        await driver.connect()
    assert not driver.connected
    await driver.close()  # never raises


# --------------------------------------------------------------------------- TCP


@asynccontextmanager
async def tcp_device(handler: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Any]
                     ) -> AsyncIterator[tuple[str, int]]:
    """A device server on 127.0.0.1; every connection it accepted is closed on the way out."""
    writers: list[asyncio.StreamWriter] = []
    tasks: list[asyncio.Task[Any]] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        tasks.append(asyncio.current_task())  # type: ignore[arg-type]
        result = handler(reader, writer)
        if asyncio.iscoroutine(result):
            await result

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield "127.0.0.1", server.sockets[0].getsockname()[1]
    finally:
        server.close()
        for task in tasks:
            task.cancel()
        for writer in writers:
            writer.close()
        for writer in writers:
            try:
                await writer.wait_closed()
            except (ConnectionError, asyncio.CancelledError):
                pass
        await server.wait_closed()


async def test_tempctl_over_tcp_and_reconnect() -> None:
    controller = TempController()
    writers: list[asyncio.StreamWriter] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        try:
            while line := await reader.readline():
                answer = controller(line.rstrip(b"\r\n"))
                if answer:
                    writer.write(answer[:9])  # in two TCP segments
                    await writer.drain()
                    writer.write(answer[9:])
                    await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    async with tcp_device(serve) as address:
        driver = tempctl_driver(tcp=address)
        await driver.connect()
        try:
            assert values(await driver.read("zone1")) == [25.3, 30.0, 45, 0]
            assert values(await driver.read("zone2")) == [180.5, 200.0, 75, 1]
            writers[0].close()  # the device server drops the connection
            await until(lambda: not driver.connected, "the driver to notice")
            assert values(await driver.read("zone1")) == ["comm_failure"] * 4
            await driver.connect()
            assert len(writers) == 2
            assert values(await driver.read("zone1")) == [25.3, 30.0, 45, 0]
        finally:
            await driver.close()


async def test_tonnage_stream_over_tcp() -> None:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"junk" + TON_1234 + ton(2)[:10])
        await writer.drain()
        writer.write(ton(2)[10:])
        await writer.drain()
        await reader.read()  # until the driver closes
        writer.close()

    async with tcp_device(serve) as address:
        driver = tonnage_driver(tcp=address)
        await driver.connect()
        try:
            await until(lambda: driver.frames == 2, "two frames")
            rows = drained_values(await drain(driver))
            assert [r[0] for r in rows] == [1234, 2]
            assert driver.garbage_bytes == 4
        finally:
            await driver.close()


async def test_connection_refused_raises_oserror() -> None:
    async with tcp_device(lambda r, w: w.close()) as (host, port):
        pass  # closed again: nothing listens on that port now
    driver = tempctl_driver(tcp=(host, port))
    with pytest.raises(OSError):
        await driver.connect()
    assert not driver.connected


# --------------------------------------------------------------------------- agent side


async def test_drained_samples_normalize_like_any_push_group(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, {"tonnage.yaml": TONNAGE_YAML.replace(
        "/dev/ttyUSB0", str(tmp_path / "tty"))}), ALL_DRIVERS)
    machine = config.machines[0]
    groups = machine.signals_by_group()
    async with pty_device() as device:
        os.symlink(device.path, tmp_path / "tty")
        driver: Any = machine.spec.factory(machine.model.connection, groups, {"strokes": 0.5}, {})
        await driver.connect()
        try:
            await device.send(TON_1234 + ton(5, bad_checksum=True))
            await until(lambda: driver.frames == 2, "two frames")
            readings = GroupNormalizer(groups["strokes"]).apply_sparse(
                (await drain(driver)).samples)
        finally:
            await driver.close()
    assert [(r.signal, r.quality, r.reason, r.unit) for r in readings[:7]] == [
        ("cycle.count", "good", None, None)] + [
        (f"press.force.{n}", "good", None, "kN")
        for n in ("ch1", "ch2", "ch3", "ch4", "total_peak", "reverse_peak")]
    # the driver hands over raw values; scale (tf -> kN) is the agent's
    assert [r.value for r in readings[:7]] == [1234] + [
        pytest.approx(v * 9.80665) for v in TON_1234_VALUES[1:]]
    assert {(r.quality, r.reason) for r in readings[7:]} == {("bad", "checksum")}
    assert len(readings) == 14


def test_burst_log_logs_the_start_of_a_burst_then_at_most_every_repeat(
        caplog: pytest.LogCaptureFixture) -> None:
    clock = [1000.0]
    caplog.set_level(logging.WARNING, logger="edge_agent.serial_line")
    burst = BurstLog("checksum errors", quiet=10, repeat=60, clock=lambda: clock[0])
    logged = []
    for step in range(200):  # one every second for 200 s: a long burst
        logged.append(burst.note())
        clock[0] += 1
    assert [i for i, flag in enumerate(logged) if flag] == [0, 60, 120, 180]
    clock[0] += 30  # calm, then a new burst
    assert burst.note() is True
    # the first line of the new burst also counts the tail of the last one (steps 181-199)
    assert "checksum errors: 20 since the last report" in caplog.records[-1].getMessage()
    assert "checksum errors: 60 since the last report" in caplog.records[1].getMessage()


def test_full_signal_model_accepts_the_driver_fields() -> None:
    model = signal_model(SERIAL_LINE)
    signal: Any = model.model_validate({"name": "x.a.b", "index": 2, "type": "int", "scale": 0.1})
    assert (signal.index, signal.type, signal.scale) == (2, "int", 0.1)
