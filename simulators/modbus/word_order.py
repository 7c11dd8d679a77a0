"""Encode typed values into 16-bit Modbus registers with an explicit byte/word order.

Order letters name the bytes of the big-endian value, A = most significant:
ABCD big-endian, CDAB words swapped, BADC bytes swapped inside each word, DCBA little-endian.
For 64-bit values the same rules extend over four words.
"""

from __future__ import annotations

import struct
from typing import Literal

WordOrder = Literal["ABCD", "CDAB", "BADC", "DCBA"]


def reorder(big_endian: bytes, order: WordOrder = "ABCD") -> list[int]:
    """Split big-endian bytes into registers laid out in `order`."""
    if len(big_endian) % 2:
        raise ValueError("value must occupy whole registers")
    words = [big_endian[i : i + 2] for i in range(0, len(big_endian), 2)]
    if order == "ABCD":
        laid_out = words
    elif order == "CDAB":
        laid_out = words[::-1]
    elif order == "BADC":
        laid_out = [w[::-1] for w in words]
    elif order == "DCBA":
        laid_out = [w[::-1] for w in words[::-1]]
    else:
        raise ValueError(f"unknown word order {order!r}")
    return [int.from_bytes(w, "big") for w in laid_out]


def uint16(value: int) -> list[int]:
    """One register, clamped to 0..65535 (a sensor saturates rather than wraps)."""
    return [min(max(int(value), 0), 0xFFFF)]


def int16(value: int) -> list[int]:
    """One register, two's complement, clamped to the int16 range."""
    return reorder(struct.pack(">h", min(max(int(value), -0x8000), 0x7FFF)))


def uint32(value: int, order: WordOrder = "ABCD") -> list[int]:
    """Two registers."""
    return reorder(struct.pack(">I", int(value) & 0xFFFFFFFF), order)


def int32(value: int, order: WordOrder = "ABCD") -> list[int]:
    """Two registers, two's complement."""
    return reorder(struct.pack(">i", int(value)), order)


def uint64(value: int, order: WordOrder = "ABCD") -> list[int]:
    """Four registers."""
    return reorder(struct.pack(">Q", int(value) & 0xFFFFFFFFFFFFFFFF), order)


def float32(value: float, order: WordOrder = "ABCD") -> list[int]:
    """Two registers, IEEE 754 single precision."""
    return reorder(struct.pack(">f", value), order)


def float64(value: float, order: WordOrder = "ABCD") -> list[int]:
    """Four registers, IEEE 754 double precision."""
    return reorder(struct.pack(">d", value), order)


def ascii_string(text: str, registers: int) -> list[int]:
    """`registers` registers, 2 chars each, first char in the high byte, NUL padded."""
    raw = text.encode("ascii")
    if len(raw) > 2 * registers:
        raise ValueError(f"{text!r} does not fit in {registers} registers")
    return reorder(raw.ljust(2 * registers, b"\0"))
