"""Tests of the Modbus reply codec (drivers.modbus.codec).

Every expectation is a literal: the registers are written out word by word as a device
would send them, and the decoded value is written out as a number or text. Nothing here
derives an expectation from the codec's own struct formats or order tables.

Order letters name the bytes of the big-endian value, A = most significant byte:
ABCD big-endian, BADC bytes swapped inside each word, CDAB words swapped (for 64-bit
values: the four words in reverse order), DCBA fully little-endian.
"""

from __future__ import annotations

import math

import pytest

from drivers.modbus.codec import BlockCodec, MalformedReply, point_codec
from drivers.modbus.config import ModbusSignalFields
from drivers.modbus.planner import Block

ORDERS = ("ABCD", "BADC", "CDAB", "DCBA")


def decode_one(kind: str, order: str, registers: list[int], **kwargs: object) -> object:
    """Decode a single point sitting at offset 0 of a holding-register block."""
    block = Block("hr", 0, len(registers))
    codec = BlockCodec(block, [point_codec(0, 0, kind, order, **kwargs)])  # type: ignore[arg-type]
    result = codec.decode(registers)
    assert [index for index, _ in result] == [0]
    return result[0][1]


# --------------------------------------------------------------------------- 16-bit types
# For a one-register value only the byte swap matters: ABCD and CDAB read the register as
# sent (high byte first), BADC and DCBA read it with its two bytes swapped.

CASES_16 = [
    # (type, order, registers, value)
    ("uint16", "ABCD", [0x1234], 0x1234),
    ("uint16", "CDAB", [0x1234], 0x1234),
    ("uint16", "BADC", [0x3412], 0x1234),
    ("uint16", "DCBA", [0x3412], 0x1234),
    ("uint16", "ABCD", [0xFFFF], 65535),
    ("uint16", "BADC", [0xFFFF], 65535),
    ("uint16", "ABCD", [0x0000], 0),
    ("uint16", "ABCD", [0x8000], 32768),
    ("uint16", "DCBA", [0x0080], 32768),
    ("uint16", "ABCD", [0x00FF], 255),
    ("uint16", "BADC", [0x00FF], 0xFF00),
    ("int16", "ABCD", [0xFFFE], -2),
    ("int16", "CDAB", [0xFFFE], -2),
    ("int16", "BADC", [0xFEFF], -2),
    ("int16", "DCBA", [0xFEFF], -2),
    ("int16", "ABCD", [0x8000], -32768),
    ("int16", "CDAB", [0x8000], -32768),
    ("int16", "BADC", [0x0080], -32768),
    ("int16", "DCBA", [0x0080], -32768),
    ("int16", "ABCD", [0x7FFF], 32767),
    ("int16", "BADC", [0xFF7F], 32767),
    ("int16", "ABCD", [0xFFFF], -1),
    ("int16", "DCBA", [0xFFFF], -1),
    ("int16", "ABCD", [0xFF85], -123),  # -123 = FF 85
    ("int16", "BADC", [0x85FF], -123),
    ("int16", "ABCD", [0x0000], 0),
]


@pytest.mark.parametrize(("kind", "order", "registers", "value"), CASES_16)
def test_16_bit_types(kind: str, order: str, registers: list[int], value: int) -> None:
    decoded = decode_one(kind, order, registers)
    assert decoded == value
    assert type(decoded) is int


# --------------------------------------------------------------------------- 32-bit types
# float32 123.456 = 42 F6 E9 79, int32 -2 = FF FF FF FE, 0x12345678 = 12 34 56 78,
# uint32 0xDEADBEEF = DE AD BE EF, int32 min = 80 00 00 00, float32 -1.5 = BF C0 00 00.

CASES_32 = [
    # float32 123.456
    ("float32", "ABCD", [0x42F6, 0xE979], 123.456),
    ("float32", "CDAB", [0xE979, 0x42F6], 123.456),
    ("float32", "BADC", [0xF642, 0x79E9], 123.456),
    ("float32", "DCBA", [0x79E9, 0xF642], 123.456),
    # float32 -1.5
    ("float32", "ABCD", [0xBFC0, 0x0000], -1.5),
    ("float32", "CDAB", [0x0000, 0xBFC0], -1.5),
    ("float32", "BADC", [0xC0BF, 0x0000], -1.5),
    ("float32", "DCBA", [0x0000, 0xC0BF], -1.5),
    # float32 +inf = 7F 80 00 00
    ("float32", "ABCD", [0x7F80, 0x0000], math.inf),
    ("float32", "DCBA", [0x0000, 0x807F], math.inf),
    # uint32 0x12345678
    ("uint32", "ABCD", [0x1234, 0x5678], 0x12345678),
    ("uint32", "CDAB", [0x5678, 0x1234], 0x12345678),
    ("uint32", "BADC", [0x3412, 0x7856], 0x12345678),
    ("uint32", "DCBA", [0x7856, 0x3412], 0x12345678),
    # uint32 0xDEADBEEF
    ("uint32", "ABCD", [0xDEAD, 0xBEEF], 0xDEADBEEF),
    ("uint32", "CDAB", [0xBEEF, 0xDEAD], 0xDEADBEEF),
    ("uint32", "BADC", [0xADDE, 0xEFBE], 0xDEADBEEF),
    ("uint32", "DCBA", [0xEFBE, 0xADDE], 0xDEADBEEF),
    # uint32 extremes
    ("uint32", "ABCD", [0xFFFF, 0xFFFF], 4294967295),
    ("uint32", "BADC", [0xFFFF, 0xFFFF], 4294967295),
    ("uint32", "ABCD", [0x0000, 0x0001], 1),
    ("uint32", "CDAB", [0x0001, 0x0000], 1),
    ("uint32", "BADC", [0x0000, 0x0100], 1),
    ("uint32", "DCBA", [0x0100, 0x0000], 1),
    # int32 0x12345678 (positive)
    ("int32", "ABCD", [0x1234, 0x5678], 305419896),
    ("int32", "CDAB", [0x5678, 0x1234], 305419896),
    ("int32", "BADC", [0x3412, 0x7856], 305419896),
    ("int32", "DCBA", [0x7856, 0x3412], 305419896),
    # int32 -2
    ("int32", "ABCD", [0xFFFF, 0xFFFE], -2),
    ("int32", "CDAB", [0xFFFE, 0xFFFF], -2),
    ("int32", "BADC", [0xFFFF, 0xFEFF], -2),
    ("int32", "DCBA", [0xFEFF, 0xFFFF], -2),
    # int32 min -2147483648 = 80 00 00 00
    ("int32", "ABCD", [0x8000, 0x0000], -2147483648),
    ("int32", "CDAB", [0x0000, 0x8000], -2147483648),
    ("int32", "BADC", [0x0080, 0x0000], -2147483648),
    ("int32", "DCBA", [0x0000, 0x0080], -2147483648),
    # int32 max 2147483647 = 7F FF FF FF
    ("int32", "ABCD", [0x7FFF, 0xFFFF], 2147483647),
    ("int32", "DCBA", [0xFFFF, 0xFF7F], 2147483647),
    # int32 -100000 = FF FE 79 60
    ("int32", "ABCD", [0xFFFE, 0x7960], -100000),
    ("int32", "CDAB", [0x7960, 0xFFFE], -100000),
    ("int32", "BADC", [0xFEFF, 0x6079], -100000),
    ("int32", "DCBA", [0x6079, 0xFEFF], -100000),
]


@pytest.mark.parametrize(("kind", "order", "registers", "value"), CASES_32)
def test_32_bit_types(kind: str, order: str, registers: list[int], value: float) -> None:
    decoded = decode_one(kind, order, registers)
    if kind == "float32":
        assert isinstance(decoded, float)
        if math.isinf(value):
            assert decoded == value
        else:
            assert decoded == pytest.approx(value, rel=1e-7)
    else:
        assert decoded == value
        assert type(decoded) is int


# --------------------------------------------------------------------------- 64-bit types
# Bytes A..H of the value; CDAB extends to four words as "word order reversed"
# (least significant word first), BADC swaps the bytes inside each word.
# float64 123.456 = 40 5E DD 2F 1A 9F BE 77, float64 -2.5 = C0 04 00 00 00 00 00 00.

CASES_64 = [
    # uint64 0x0102030405060708
    ("uint64", "ABCD", [0x0102, 0x0304, 0x0506, 0x0708], 0x0102030405060708),
    ("uint64", "BADC", [0x0201, 0x0403, 0x0605, 0x0807], 0x0102030405060708),
    ("uint64", "CDAB", [0x0708, 0x0506, 0x0304, 0x0102], 0x0102030405060708),
    ("uint64", "DCBA", [0x0807, 0x0605, 0x0403, 0x0201], 0x0102030405060708),
    # uint64 max
    ("uint64", "ABCD", [0xFFFF, 0xFFFF, 0xFFFF, 0xFFFF], 18446744073709551615),
    ("uint64", "DCBA", [0xFFFF, 0xFFFF, 0xFFFF, 0xFFFF], 18446744073709551615),
    # uint64 1
    ("uint64", "ABCD", [0x0000, 0x0000, 0x0000, 0x0001], 1),
    ("uint64", "BADC", [0x0000, 0x0000, 0x0000, 0x0100], 1),
    ("uint64", "CDAB", [0x0001, 0x0000, 0x0000, 0x0000], 1),
    ("uint64", "DCBA", [0x0100, 0x0000, 0x0000, 0x0000], 1),
    # uint64 above 2**63: 0x8000000000000001
    ("uint64", "ABCD", [0x8000, 0x0000, 0x0000, 0x0001], 9223372036854775809),
    ("uint64", "CDAB", [0x0001, 0x0000, 0x0000, 0x8000], 9223372036854775809),
    # int64 0x0102030405060708
    ("int64", "ABCD", [0x0102, 0x0304, 0x0506, 0x0708], 72623859790382856),
    ("int64", "BADC", [0x0201, 0x0403, 0x0605, 0x0807], 72623859790382856),
    ("int64", "CDAB", [0x0708, 0x0506, 0x0304, 0x0102], 72623859790382856),
    ("int64", "DCBA", [0x0807, 0x0605, 0x0403, 0x0201], 72623859790382856),
    # int64 min -9223372036854775808 = 80 00 .. 00
    ("int64", "ABCD", [0x8000, 0x0000, 0x0000, 0x0000], -9223372036854775808),
    ("int64", "BADC", [0x0080, 0x0000, 0x0000, 0x0000], -9223372036854775808),
    ("int64", "CDAB", [0x0000, 0x0000, 0x0000, 0x8000], -9223372036854775808),
    ("int64", "DCBA", [0x0000, 0x0000, 0x0000, 0x0080], -9223372036854775808),
    # int64 max = 7F FF .. FF
    ("int64", "ABCD", [0x7FFF, 0xFFFF, 0xFFFF, 0xFFFF], 9223372036854775807),
    ("int64", "BADC", [0xFF7F, 0xFFFF, 0xFFFF, 0xFFFF], 9223372036854775807),
    ("int64", "CDAB", [0xFFFF, 0xFFFF, 0xFFFF, 0x7FFF], 9223372036854775807),
    ("int64", "DCBA", [0xFFFF, 0xFFFF, 0xFFFF, 0xFF7F], 9223372036854775807),
    # int64 -1 and -2 (FF .. FE)
    ("int64", "ABCD", [0xFFFF, 0xFFFF, 0xFFFF, 0xFFFF], -1),
    ("int64", "ABCD", [0xFFFF, 0xFFFF, 0xFFFF, 0xFFFE], -2),
    ("int64", "BADC", [0xFFFF, 0xFFFF, 0xFFFF, 0xFEFF], -2),
    ("int64", "CDAB", [0xFFFE, 0xFFFF, 0xFFFF, 0xFFFF], -2),
    ("int64", "DCBA", [0xFEFF, 0xFFFF, 0xFFFF, 0xFFFF], -2),
    # float64 123.456
    ("float64", "ABCD", [0x405E, 0xDD2F, 0x1A9F, 0xBE77], 123.456),
    ("float64", "BADC", [0x5E40, 0x2FDD, 0x9F1A, 0x77BE], 123.456),
    ("float64", "CDAB", [0xBE77, 0x1A9F, 0xDD2F, 0x405E], 123.456),
    ("float64", "DCBA", [0x77BE, 0x9F1A, 0x2FDD, 0x5E40], 123.456),
    # float64 -2.5
    ("float64", "ABCD", [0xC004, 0x0000, 0x0000, 0x0000], -2.5),
    ("float64", "BADC", [0x04C0, 0x0000, 0x0000, 0x0000], -2.5),
    ("float64", "CDAB", [0x0000, 0x0000, 0x0000, 0xC004], -2.5),
    ("float64", "DCBA", [0x0000, 0x0000, 0x0000, 0x04C0], -2.5),
]


@pytest.mark.parametrize(("kind", "order", "registers", "value"), CASES_64)
def test_64_bit_types(kind: str, order: str, registers: list[int], value: float) -> None:
    decoded = decode_one(kind, order, registers)
    assert decoded == value  # float64 round-trips exactly
    assert type(decoded) is (float if kind == "float64" else int)


def test_every_type_and_order_is_covered_by_a_literal_case() -> None:
    covered = {(kind, order) for kind, order, _, _ in CASES_16 + CASES_32 + CASES_64}
    numeric = ("int16", "uint16", "int32", "uint32", "int64", "uint64", "float32", "float64")
    assert covered == {(kind, order) for kind in numeric for order in ORDERS}


def test_float32_nan_decodes_as_nan() -> None:
    # 7F C0 00 00 is the canonical quiet NaN.
    assert math.isnan(decode_one("float32", "ABCD", [0x7FC0, 0x0000]))  # type: ignore[arg-type]
    assert math.isnan(decode_one("float32", "CDAB", [0x0000, 0x7FC0]))  # type: ignore[arg-type]


# --------------------------------------------------------------------------- orders from config


@pytest.mark.parametrize(
    ("byte_order", "word_order", "registers"),
    [
        ("big", "big", [0x42F6, 0xE979]),
        ("big", "little", [0xE979, 0x42F6]),
        ("little", "big", [0xF642, 0x79E9]),
        ("little", "little", [0x79E9, 0xF642]),
    ],
)
def test_byte_and_word_order_fields_select_the_right_layout(
    byte_order: str, word_order: str, registers: list[int]
) -> None:
    sig = ModbusSignalFields.model_validate(
        {"address": "hr:0", "type": "float32", "byte_order": byte_order, "word_order": word_order}
    )
    value = decode_one("float32", sig.resolved_order(), registers)
    assert value == pytest.approx(123.456, rel=1e-7)


def test_explicit_order_overrides_byte_and_word_order() -> None:
    sig = ModbusSignalFields.model_validate(
        {"address": "hr:0", "type": "uint32", "byte_order": "little", "word_order": "little",
         "order": "CDAB"}
    )
    assert decode_one("uint32", sig.resolved_order(), [0x5678, 0x1234]) == 0x12345678


# --------------------------------------------------------------------------- bits of registers


@pytest.mark.parametrize(
    ("bit", "expected"),
    [(0, True), (1, False), (2, True), (3, False), (7, True), (8, False), (14, False), (15, True)],
)
def test_bit_of_register_big_endian(bit: int, expected: bool) -> None:
    # register 0x8085 = 1000 0000 1000 0101: bits 0, 2, 7 and 15 set
    value = decode_one("bool", "ABCD", [0x8085], bit=bit)
    assert value is expected


@pytest.mark.parametrize("bit", range(16))
def test_single_bit_set_in_register(bit: int) -> None:
    register = 1 << bit
    for probe in range(16):
        assert decode_one("bool", "ABCD", [register], bit=probe) is (probe == bit)


@pytest.mark.parametrize("order", ["ABCD", "CDAB"])
def test_bit_of_register_unswapped_orders(order: str) -> None:
    # CDAB only swaps words; a single register is read as sent. 0x0108: bits 3 and 8.
    assert decode_one("bool", order, [0x0108], bit=3) is True
    assert decode_one("bool", order, [0x0108], bit=8) is True
    assert decode_one("bool", order, [0x0108], bit=0) is False
    assert decode_one("bool", order, [0x0108], bit=11) is False


@pytest.mark.parametrize("order", ["BADC", "DCBA"])
def test_bit_of_register_follows_the_byte_order_of_the_word(order: str) -> None:
    # A device with swapped bytes sends status word 0x0008 (bit 3 set) as register 0x0800.
    # uint16 in this order reads it as 0x0008; bit 3 of that word must then be True.
    assert decode_one("uint16", order, [0x0800]) == 0x0008
    assert decode_one("bool", order, [0x0800], bit=3) is True
    assert decode_one("bool", order, [0x0800], bit=11) is False


# --------------------------------------------------------------------------- coils / inputs


@pytest.mark.parametrize("table", ["co", "di"])
def test_bits_from_a_padded_coil_reply(table: str) -> None:
    # 10 bits asked; a coil reply carries whole bytes, so 16 bits come back. The padding
    # (bits 10..15, set here on purpose) must be ignored.
    block = Block(table, 100, 10)
    offsets = [0, 1, 3, 7, 8, 9]
    codec = BlockCodec(
        block, [point_codec(i, off, "bool", "ABCD", bit_table=True) for i, off in enumerate(offsets)]
    )
    reply = [True, False, False, True, False, False, False, True,
             False, True, True, True, True, True, True, True]
    assert dict(codec.decode(reply)) == {0: True, 1: False, 2: True, 3: True, 4: False, 5: True}
    for _, value in codec.decode(reply):
        assert type(value) is bool


def test_single_coil_padded_to_eight_bits() -> None:
    block = Block("co", 5, 1)
    codec = BlockCodec(block, [point_codec(0, 0, "bool", "ABCD", bit_table=True)])
    assert codec.decode([True] + [False] * 7) == [(0, True)]
    assert codec.decode([False] + [True] * 7) == [(0, False)]


def test_coil_reply_with_fewer_bits_than_asked_is_malformed() -> None:
    block = Block("co", 0, 10)
    codec = BlockCodec(block, [point_codec(0, 9, "bool", "ABCD", bit_table=True)])
    with pytest.raises(MalformedReply):
        codec.decode([True] * 8)


def test_bit_reply_one_short_is_malformed_even_if_no_point_needs_the_missing_bit() -> None:
    block = Block("di", 0, 10)
    codec = BlockCodec(block, [point_codec(0, 0, "bool", "ABCD", bit_table=True)])
    with pytest.raises(MalformedReply):
        codec.decode([True] * 9)


def test_register_reply_one_short_is_malformed() -> None:
    block = Block("hr", 0, 3)
    codec = BlockCodec(block, [point_codec(0, 0, "uint16", "ABCD")])
    with pytest.raises(MalformedReply):
        codec.decode([1, 2])


# --------------------------------------------------------------------------- strings
# ASCII, two characters per register, first character in the high byte (ABCD/CDAB), or in
# the low byte when bytes are swapped (BADC/DCBA). Word order does not apply to strings.


@pytest.mark.parametrize(
    ("order", "registers"),
    [
        ("ABCD", [0x4449, 0x452D, 0x3437, 0x3131, 0x2D42, 0x0000, 0x0000, 0x0000]),
        ("CDAB", [0x4449, 0x452D, 0x3437, 0x3131, 0x2D42, 0x0000, 0x0000, 0x0000]),
        ("BADC", [0x4944, 0x2D45, 0x3734, 0x3131, 0x422D, 0x0000, 0x0000, 0x0000]),
        ("DCBA", [0x4944, 0x2D45, 0x3734, 0x3131, 0x422D, 0x0000, 0x0000, 0x0000]),
    ],
)
def test_string_with_nul_padding(order: str, registers: list[int]) -> None:
    assert decode_one("string", order, registers, length=16) == "DIE-4711-B"


@pytest.mark.parametrize(
    ("order", "registers"),
    [
        ("ABCD", [0x4845, 0x4C4C, 0x4F00]),  # "HE" "LL" "O\0"
        ("CDAB", [0x4845, 0x4C4C, 0x4F00]),
        ("BADC", [0x4548, 0x4C4C, 0x004F]),
        ("DCBA", [0x4548, 0x4C4C, 0x004F]),
    ],
)
def test_string_odd_length(order: str, registers: list[int]) -> None:
    assert decode_one("string", order, registers, length=5) == "HELLO"


def test_string_odd_length_ignores_the_spare_byte() -> None:
    # Length 5 in 3 registers: the sixth byte ('!') is outside the string.
    assert decode_one("string", "ABCD", [0x4845, 0x4C4C, 0x4F21], length=5) == "HELLO"
    assert decode_one("string", "BADC", [0x4548, 0x4C4C, 0x214F], length=5) == "HELLO"


def test_string_full_length_without_terminator() -> None:
    assert decode_one("string", "ABCD", [0x4142, 0x4344], length=4) == "ABCD"


def test_string_stops_at_first_nul() -> None:
    # "AB\0CD" - anything after the first NUL is not part of the value
    assert decode_one("string", "ABCD", [0x4142, 0x0043, 0x4400], length=6) == "AB"


def test_string_all_nul_is_empty() -> None:
    assert decode_one("string", "ABCD", [0, 0, 0, 0], length=8) == ""


def test_string_trailing_spaces_are_stripped() -> None:
    # "OK  " space padded
    assert decode_one("string", "ABCD", [0x4F4B, 0x2020], length=4) == "OK"


def test_string_high_bytes_decode_as_latin1() -> None:
    # C9 = 'É' in Latin-1
    assert decode_one("string", "ABCD", [0xC941, 0x0000], length=4) == "\u00c9A"


# --------------------------------------------------------------------------- whole blocks


def test_several_points_in_one_block_at_different_offsets() -> None:
    # Block hr:100..111 (12 registers):
    #   off 0      uint16 ABCD      0x0102               -> 258
    #   off 1..2   float32 CDAB     E979 42F6            -> 123.456
    #   off 3      int16 BADC       FEFF                 -> -2
    #   off 4..5   string(3) ABCD   "XYZ"                -> 5859 5A00
    #   off 6..9   float64 DCBA     77BE 9F1A 2FDD 5E40  -> 123.456
    #   off 10     bit 15           0x8000 (first word of the uint32 below)
    #   off 10..11 uint32 ABCD      8000 0001            -> 2147483649
    #   off 11     bit 0            0x0001
    #   off 7..8   int32 ABCD overlapping the float64    9F1A 2FDD -> 0x9F1A2FDD signed
    block = Block("hr", 100, 12)
    codecs = [
        point_codec(7, 0, "uint16", "ABCD"),
        point_codec(3, 1, "float32", "CDAB"),
        point_codec(0, 3, "int16", "BADC"),
        point_codec(5, 4, "string", "ABCD", length=3),
        point_codec(1, 6, "float64", "DCBA"),
        point_codec(2, 10, "bool", "ABCD", bit=15),
        point_codec(4, 10, "uint32", "ABCD"),
        point_codec(6, 11, "bool", "ABCD", bit=0),
        point_codec(8, 7, "int32", "ABCD"),
        point_codec(9, 11, "bool", "ABCD", bit=1),
    ]
    codec = BlockCodec(block, codecs)
    registers = [
        0x0102,
        0xE979, 0x42F6,
        0xFEFF,
        0x5859, 0x5A00,
        0x77BE, 0x9F1A, 0x2FDD, 0x5E40,
        0x8000, 0x0001,
    ]
    result = codec.decode(registers)
    assert [index for index, _ in result] == [7, 3, 0, 5, 1, 2, 4, 6, 8, 9]
    values = dict(result)
    assert values[7] == 258
    assert values[3] == pytest.approx(123.456, rel=1e-7)
    assert values[0] == -2
    assert values[5] == "XYZ"
    assert values[1] == 123.456
    assert values[2] is True
    assert values[4] == 2147483649
    assert values[6] is True
    assert values[8] == -1625673763  # 0x9F1A2FDD - 2**32
    assert values[9] is False


def test_block_with_only_unswapped_orders() -> None:
    block = Block("ir", 0, 3)
    codec = BlockCodec(block, [point_codec(0, 0, "uint32", "ABCD"),
                               point_codec(1, 2, "int16", "ABCD")])
    assert codec.decode([0x0001, 0x0002, 0xFFFF]) == [(0, 65538), (1, -1)]


def test_register_reply_longer_than_the_block_is_malformed() -> None:
    block = Block("ir", 0, 3)
    codec = BlockCodec(block, [point_codec(0, 0, "uint32", "ABCD"),
                               point_codec(1, 2, "int16", "ABCD")])
    with pytest.raises(MalformedReply):
        codec.decode([0x0001, 0x0002, 0xFFFF, 0x1234])


def test_decode_can_be_repeated_with_new_data() -> None:
    block = Block("hr", 0, 2)
    codec = BlockCodec(block, [point_codec(0, 0, "float32", "BADC")])
    assert codec.decode([0xF642, 0x79E9])[0][1] == pytest.approx(123.456, rel=1e-7)
    assert codec.decode([0xC0BF, 0x0000])[0][1] == -1.5


# --------------------------------------------------------------------------- malformed replies


def test_short_register_reply_is_malformed() -> None:
    block = Block("hr", 0, 4)
    codec = BlockCodec(block, [point_codec(0, 0, "uint64", "ABCD")])
    with pytest.raises(MalformedReply):
        codec.decode([0x0001, 0x0002, 0x0003])


def test_empty_reply_is_malformed() -> None:
    block = Block("hr", 0, 1)
    codec = BlockCodec(block, [point_codec(0, 0, "uint16", "ABCD")])
    with pytest.raises(MalformedReply):
        codec.decode([])


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("bad", [0x10000, 0x1FFFF, -1])
def test_register_value_out_of_16_bit_range_is_malformed(order: str, bad: int) -> None:
    block = Block("hr", 0, 2)
    codec = BlockCodec(block, [point_codec(0, 0, "uint32", order)])
    with pytest.raises(MalformedReply):
        codec.decode([0x0001, bad])


def test_out_of_range_register_under_a_bit_point_is_malformed() -> None:
    # 0x10001 has bit 0 set; it must not be read as a bit of a valid register.
    block = Block("hr", 0, 1)
    codec = BlockCodec(block, [point_codec(0, 0, "bool", "ABCD", bit=0)])
    with pytest.raises(MalformedReply):
        codec.decode([0x10001])


def test_malformed_reply_is_a_value_error() -> None:
    assert issubclass(MalformedReply, ValueError)
