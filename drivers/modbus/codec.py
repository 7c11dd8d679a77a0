"""Decode Modbus replies into values with struct formats compiled once per block.

Byte orders name the wire order of a value's bytes, A being the most significant:
ABCD big-endian, DCBA little-endian, BADC bytes swapped in each word, CDAB words swapped.
Each block is packed once into two byte images: `be` (registers as sent) and `sw` (bytes
swapped inside each word). Then ABCD = '>' on be, DCBA = '<' on be, BADC = '>' on sw,
CDAB = '<' on sw, for any width; so every point is a single unpack_from call.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Sequence

from drivers.base import Value
from drivers.modbus.planner import Block

_STRUCT_CHAR = {
    "int16": "h", "uint16": "H", "int32": "i", "uint32": "I",
    "int64": "q", "uint64": "Q", "float32": "f", "float64": "d",
}
# (image, endianness) per order: image 0 = as sent, 1 = bytes swapped inside each word.
_ORDER_PLAN = {"ABCD": (0, ">"), "DCBA": (0, "<"), "BADC": (1, ">"), "CDAB": (1, "<")}
_ORDER_16 = {"ABCD": (0, ">"), "CDAB": (0, ">"), "BADC": (0, "<"), "DCBA": (0, "<")}

KIND_STRUCT, KIND_BIT_OF_REGISTER, KIND_STRING, KIND_BIT = 0, 1, 2, 3


class MalformedReply(ValueError):
    """The reply does not carry what the request asked for."""


@dataclass(frozen=True, slots=True)
class PointCodec:
    """How to pull one signal's value out of a block reply."""

    index: int
    kind: int
    offset: int  # registers (register tables) or bits (bit tables) into the block
    unpack: struct.Struct | None = None
    image: int = 0
    bit: int = 0
    length: int = 0


def point_codec(index: int, offset: int, kind_name: str, order: str,
                bit: int | None = None, length: int = 0, bit_table: bool = False) -> PointCodec:
    """Compile the decoder of one point."""
    if bit_table:
        return PointCodec(index, KIND_BIT, offset)
    if bit is not None:
        # The bit is numbered in the decoded word: with bytes swapped, bit b sits at b ^ 8.
        return PointCodec(index, KIND_BIT_OF_REGISTER, offset,
                          bit=bit ^ 8 if order in ("BADC", "DCBA") else bit)
    if kind_name == "string":
        # A string's byte order is that of its words; word order does not apply.
        image = 1 if order in ("BADC", "DCBA") else 0
        return PointCodec(index, KIND_STRING, offset, image=image, length=length)
    char = _STRUCT_CHAR[kind_name]
    image, endian = (_ORDER_16 if char in "hH" else _ORDER_PLAN)[order]
    return PointCodec(index, KIND_STRUCT, offset, struct.Struct(endian + char), image)


class BlockCodec:
    """Decodes one block's reply into (index, value) pairs."""

    __slots__ = ("count", "points", "bits", "_be", "_sw", "_needs_sw")

    def __init__(self, block: Block, points: Sequence[PointCodec]) -> None:
        self.count = block.count
        self.points = tuple(points)
        self.bits = block.table in ("co", "di")
        self._be = struct.Struct(f">{block.count}H")
        self._sw = struct.Struct(f"<{block.count}H")
        self._needs_sw = any(p.image == 1 for p in points)

    def decode(self, words: Sequence[int] | Sequence[bool]) -> list[tuple[int, Value]]:
        """Values of every point; raises MalformedReply if the reply is short or invalid."""
        # Bit replies come padded to whole bytes; register replies must be exact.
        if len(words) < self.count or (not self.bits and len(words) != self.count):
            raise MalformedReply(f"expected {self.count} values, got {len(words)}")
        if self.bits:
            return [(p.index, bool(words[p.offset])) for p in self.points]
        try:
            images = (self._be.pack(*words[: self.count]),
                      self._sw.pack(*words[: self.count]) if self._needs_sw else b"")
        except struct.error as exc:
            raise MalformedReply(f"register value out of range: {exc}") from None
        out: list[tuple[int, Value]] = []
        for p in self.points:
            if p.kind == KIND_STRUCT:
                out.append((p.index, p.unpack.unpack_from(images[p.image], p.offset * 2)[0]))  # type: ignore[union-attr]
            elif p.kind == KIND_BIT_OF_REGISTER:
                out.append((p.index, bool((words[p.offset] >> p.bit) & 1)))
            else:
                raw = images[p.image][p.offset * 2 : p.offset * 2 + p.length]
                out.append((p.index, raw.split(b"\0", 1)[0].decode("latin-1").rstrip()))
        return out


# -- writes: the inverse of point_codec ---------------------------------------------------

def encode_value(kind_name: str, order: str, value: float | str,
                 length: int = 0) -> list[int]:
    """The registers (as sent) that `point_codec(kind_name, order)` decodes to `value`.
    Raises ValueError when the value does not fit the type (struct's range checks)."""
    if kind_name == "string":
        image = 1 if order in ("BADC", "DCBA") else 0
        count = (length + 1) // 2
        data = str(value).encode("latin-1")
        if len(data) > 2 * count:
            raise ValueError(f"longer than {length} characters")
        padded = data.ljust(2 * count, b"\0")
        return list(struct.unpack(("<" if image else ">") + f"{count}H", padded))
    char = _STRUCT_CHAR[kind_name]
    image, endian = (_ORDER_16 if char in "hH" else _ORDER_PLAN)[order]
    try:
        data = struct.pack(endian + char, value)
    except (struct.error, OverflowError) as exc:
        raise ValueError(f"{value!r} does not fit {kind_name}: {exc}") from None
    return list(struct.unpack(("<" if image else ">") + f"{len(data) // 2}H", data))


def with_bit(word: int, bit: int, order: str, on: bool) -> int:
    """`word` (a register as read) with bit `bit` of the decoded value set or cleared."""
    if order in ("BADC", "DCBA"):
        bit ^= 8  # as in point_codec: the bytes of the word are swapped
    return word | (1 << bit) if on else word & ~(1 << bit) & 0xFFFF
