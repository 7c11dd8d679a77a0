"""Cut a byte stream into frames, and check the checksum at the end of a frame.

`FrameSplitter` is fed whatever the port delivered (any split, any garbage) and returns the
bodies of complete frames: the bytes after the start marker and before the terminator. Its
buffer never holds more than one frame's worth (`max_frame`); bytes that cannot belong to a
frame are counted in `garbage_bytes`, over-long frames in `overlong`, and it resynchronises
on the next start marker or terminator.
"""

from __future__ import annotations

import re
from collections.abc import Callable

# ---------------------------------------------------------------------------- checksums


def sum8(data: bytes) -> int:
    """8-bit sum of the bytes (modulo 256)."""
    return sum(data) & 0xFF


def xor8(data: bytes) -> int:
    """XOR of the bytes (NMEA 0183)."""
    value = 0
    for byte in data:
        value ^= byte
    return value


def lrc(data: bytes) -> int:
    """Longitudinal redundancy check: the two's complement of the 8-bit sum (Modbus ASCII)."""
    return -sum(data) & 0xFF


def _crc16_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
        table.append(crc)
    return table


_CRC16_TABLE = _crc16_table()


def crc16_modbus(data: bytes) -> int:
    """CRC-16/MODBUS: polynomial 0x8005 reflected, initial value 0xFFFF."""
    crc = 0xFFFF
    table = _CRC16_TABLE
    for byte in data:
        crc = (crc >> 8) ^ table[(crc ^ byte) & 0xFF]
    return crc


ALGORITHMS: dict[str, tuple[Callable[[bytes], int], int]] = {
    # name -> (function, hex digits it is written with)
    "sum8": (sum8, 2),
    "xor8": (xor8, 2),
    "lrc": (lrc, 2),
    "crc16-modbus": (crc16_modbus, 4),
}

_HEX_DIGITS = re.compile(rb"[0-9A-Fa-f]+")


class FrameChecker:
    """Takes the checksum field off a frame body and verifies it.

    `split(body)` returns (text bytes without the checksum field, verdict): verdict is True
    when the checksum is right (or there is none), False when it is wrong or missing.
    """

    __slots__ = (
        "_digits",
        "_func",
        "_prefix",
        "_separator",
        "_swap",
        "_with_separator",
        "enabled",
    )

    def __init__(self, kind: str, separator: bytes | None = None, *, start: bytes = b"",
                 over: str = "body", crc_order: str = "big") -> None:
        self.enabled = kind != "none"
        self._func, self._digits = ALGORITHMS.get(kind, (sum8, 2))
        self._separator = separator or None
        self._prefix = start if over.startswith("start+") else b""
        self._with_separator = over.endswith("+separator")
        self._swap = kind == "crc16-modbus" and crc_order == "little"

    def split(self, body: bytes) -> tuple[bytes, bool]:
        if not self.enabled:
            return body, True
        separator = self._separator
        if separator is not None:
            at = body.rfind(separator)
            if at < 0:
                return body, False
            payload, given = body[:at], body[at + len(separator):]
        else:
            if len(body) < self._digits:
                return body, False
            at = len(body) - self._digits
            payload, given = body[:at], body[at:]
        if len(given) != self._digits or not _HEX_DIGITS.fullmatch(given):
            return payload, False
        value = int(given, 16)
        if self._swap:
            value = ((value & 0xFF) << 8) | (value >> 8)
        covered = payload
        if self._prefix:
            covered = self._prefix + covered
        if self._with_separator:
            covered = covered + separator  # type: ignore[operator]
        return payload, self._func(covered) == value

    def append(self, text: bytes) -> bytes:
        """`text` with its checksum field appended (for simulators and tests)."""
        if not self.enabled:
            return text
        covered = self._prefix + text + (self._separator or b"" if self._with_separator else b"")
        value = self._func(covered)
        if self._swap:
            value = ((value & 0xFF) << 8) | (value >> 8)
        return text + (self._separator or b"") + b"%0*X" % (self._digits, value)


# ---------------------------------------------------------------------------- frames


class FrameSplitter:
    """Frames by terminator (optionally after a start marker) or by fixed length.

    - terminator only: a frame is everything up to the terminator (blank lines are
      skipped); an over-long one is dropped up to the next terminator.
    - start + terminator: bytes before the start marker are garbage; a start marker inside
      an unfinished frame begins a new frame (the partial one is garbage: a cut cable, a
      device restart) unless `resync_on_start` is off (the marker may occur in the data).
    - length (optionally after a start marker): `length` bytes per frame, start included.
    """

    def __init__(self, *, terminator: bytes | None = None, start: bytes | None = None,
                 length: int | None = None, max_frame: int = 512,
                 resync_on_start: bool = True) -> None:
        if (terminator is None) == (length is None):
            raise ValueError("give a terminator or a length")
        self._term = terminator or b""
        self._start = start or b""
        self._length = length
        self._max = max_frame
        self._resync = resync_on_start
        self._buf = bytearray()
        self._scan = 0  # where to resume the search for the terminator
        self._in_frame = False  # with a start marker: the buffer begins with it
        self._skipping = False  # terminator only: dropping the rest of an over-long frame
        self.garbage_bytes = 0
        self.overlong = 0
        self.frames = 0

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def reset(self) -> int:
        """Forget a partial frame (a new connection); returns the bytes dropped."""
        dropped = len(self._buf)
        self.garbage_bytes += dropped
        self._buf.clear()
        self._scan = 0
        self._in_frame = False
        self._skipping = False
        return dropped

    def feed(self, data: bytes) -> list[bytes]:
        """The bodies of the frames `data` completes, in order."""
        self._buf += data
        if self._length is not None:
            return self._fixed()
        if self._start:
            return self._started()
        return self._terminated()

    # -- terminator only ------------------------------------------------------------------

    def _terminated(self) -> list[bytes]:
        buf, term = self._buf, self._term
        out: list[bytes] = []
        while buf:
            end = buf.find(term, self._scan)
            if self._skipping:
                if end < 0:
                    keep = len(term) - 1
                    self._drop(len(buf) - keep)
                    return out
                self._drop(end + len(term))
                self._skipping = False
                continue
            if end < 0:
                if len(buf) >= self._max:  # cannot end within max_frame any more
                    self.overlong += 1
                    self._skipping = True
                    continue
                self._scan = max(0, len(buf) - len(term) + 1)
                return out
            size = end + len(term)
            if size > self._max:
                self.overlong += 1
                self._drop(size)
                continue
            if end == 0:  # a blank line: nothing to take, nothing wrong
                del buf[:size]
                self._scan = 0
                continue
            out.append(bytes(buf[:end]))
            del buf[:size]
            self._scan = 0
            self.frames += 1
        return out

    # -- start marker + terminator ----------------------------------------------------------

    def _started(self) -> list[bytes]:
        buf, term, start = self._buf, self._term, self._start
        out: list[bytes] = []
        while buf:
            if self._skipping:  # the rest of an over-long frame, up to its terminator
                end = buf.find(term, self._scan)
                if end < 0:
                    self._drop(len(buf) - (len(term) - 1))
                    return out
                self._drop(end + len(term))
                self._skipping = False
                continue
            if not self._in_frame:
                at = buf.find(start)
                if at < 0:
                    keep = min(len(buf), len(start) - 1)  # may be the beginning of a start
                    while keep and not start.startswith(bytes(buf[len(buf) - keep:])):
                        keep -= 1
                    self._drop(len(buf) - keep)
                    return out
                self._drop(at)
                self._in_frame = True
                self._scan = len(start)
            end = buf.find(term, self._scan)
            limit = end if end >= 0 else len(buf)
            restart = buf.rfind(start, len(start), limit) if self._resync else -1
            if restart >= 0:  # a new frame began before this one ended
                self._drop(restart)
                self._scan = len(start)
                continue
            if end < 0:
                if len(buf) >= self._max:
                    self.overlong += 1
                    self._in_frame = False
                    # The next start marker begins the next frame, unless it is also the
                    # terminator: then the next one ends this frame (as it would had it come
                    # in the same read), and resync cannot tell a restart from an end anyway.
                    if self._resync and start != term:
                        self._drop(len(buf))
                        return out
                    # The marker may occur in the data: the frame ends at its terminator,
                    # however the bytes were split into reads. The search starts after the
                    # frame's own start marker, which may look like a terminator.
                    self._skipping = True
                    self._scan = len(start)
                    continue
                self._scan = max(len(start), len(buf) - len(term) + 1)
                return out
            size = end + len(term)
            self._in_frame = False
            self._scan = 0
            if size > self._max:
                self.overlong += 1
                self._drop(size)
                continue
            out.append(bytes(buf[len(start):end]))
            del buf[:size]
            self.frames += 1
        return out

    # -- fixed length ---------------------------------------------------------------------

    def _fixed(self) -> list[bytes]:
        buf, start, length = self._buf, self._start, self._length or 0
        out: list[bytes] = []
        while buf:
            if start and not self._in_frame:
                at = buf.find(start)
                if at < 0:
                    keep = min(len(buf), len(start) - 1)
                    while keep and not start.startswith(bytes(buf[len(buf) - keep:])):
                        keep -= 1
                    self._drop(len(buf) - keep)
                    return out
                self._drop(at)
                self._in_frame = True
            if len(buf) < length:
                return out
            out.append(bytes(buf[len(start):length]))
            del buf[:length]
            self._in_frame = False
            self.frames += 1
        return out

    def _drop(self, count: int) -> None:
        if count > 0:
            del self._buf[:count]
            self.garbage_bytes += count
        self._scan = 0
