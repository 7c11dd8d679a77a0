"""Serial-line driver: ASCII frames over a serial port or TCP, request/response or streamed.

Received bytes are cut into frames as they arrive (on the event loop, never blocking it).
Each frame's checksum is checked and the frame goes to whoever wants it: the request
waiting for a reply, if the frame matches that group's `match`; else the first streaming
group whose `match` it fits; else it is counted as stray. A streaming group keeps its
frames (bounded; the oldest are dropped and counted) until the agent drains the group, and
only then extracts values, so a flood costs little more than the splitting.

Trouble is counted in attributes (frames, garbage_bytes, overlong_frames, checksum_errors,
stray_frames, unexpected_frames, parse_errors, dropped, timeouts, disconnects) and logged
once per burst on the `edge_agent.serial_line` logger, never once per frame.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from drivers.base import (COMM_FAILURE, CONFIG_ERROR, TIMEOUT, Drained, DriverSpec, RawSample,
                          bad_sample)
from drivers.serial_line.config import (GroupConfig, SerialLineConnection,
                                        SerialLineSignalFields, check_machine, wire_bytes)
from drivers.serial_line.extract import CHECKSUM, Extractor
from drivers.serial_line.framing import FrameChecker, FrameSplitter
from drivers.serial_line.transport import SerialTransport, TcpTransport, Transport

log = logging.getLogger("edge_agent.serial_line")

BURST_QUIET = 10.0  # seconds without a problem that end its burst
BURST_REPEAT = 60.0  # during a long burst, report again this often


class BurstLog:
    """Logs one kind of trouble at the start of a burst, then at most every `repeat`
    seconds with how many occurred since the last line."""

    __slots__ = ("_clock", "count", "last_logged", "last_seen", "quiet", "repeat", "what")

    def __init__(self, what: str, quiet: float = BURST_QUIET, repeat: float = BURST_REPEAT,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.what, self.quiet, self.repeat, self._clock = what, quiet, repeat, clock
        self.count = 0
        self.last_seen = self.last_logged = -1e18

    def note(self, count: int = 1, detail: str = "") -> bool:
        """Count `count` occurrences; True when this call logged."""
        now = self._clock()
        self.count += count
        logged = False
        if now - self.last_seen >= self.quiet or now - self.last_logged >= self.repeat:
            log.warning("%s: %d since the last report%s", self.what, self.count,
                        f" ({detail})" if detail else "")
            self.count, self.last_logged, logged = 0, now, True
        self.last_seen = now
        return logged


def _shown(text: str | bytes, limit: int = 80) -> str:
    shown = repr(text[:limit])
    return shown + "..." if len(text) > limit else shown


class _RequestGroup:
    __slots__ = ("command", "extractor", "match", "name", "timeout")

    def __init__(self, name: str, entry: GroupConfig, conn: SerialLineConnection,
                 extractor: Extractor) -> None:
        self.name = name
        self.command = wire_bytes(entry.command or "")
        self.match = re.compile(entry.match) if entry.match is not None else None
        self.timeout = conn.timeout_of(entry)
        self.extractor = extractor


# A streamed frame waiting for the next drain: (ts_ns, text, None) for a good frame,
# (ts_ns, None, reason) for a bad sample set of the whole group. The union, not two
# optionals, so that a bad entry is known to carry its reason.
_Entry = tuple[int, str, None] | tuple[int, None, str]


class _StreamGroup:
    __slots__ = (
        "bound",
        "dropped",
        "extractor",
        "flagged",
        "last_frame",
        "match",
        "name",
        "pending",
        "stale_after",
        "stale_reported",
    )

    def __init__(self, name: str, entry: GroupConfig, extractor: Extractor) -> None:
        self.name = name
        self.match = re.compile(entry.match) if entry.match is not None else None
        self.extractor = extractor
        self.bound = entry.pending_bound()
        self.pending: deque[_Entry] = deque(maxlen=self.bound)
        self.flagged: set[str] = set()  # bad reasons already queued since the last drain
        self.dropped = 0
        self.stale_after = entry.stale_after
        self.last_frame = time.monotonic()
        self.stale_reported = False

    def push(self, entry: _Entry) -> bool:
        """Queue one entry; False when that pushed the oldest one out."""
        full = len(self.pending) == self.bound
        self.pending.append(entry)
        if full:
            self.dropped += 1
        return not full

    def push_bad(self, ts_ns: int, reason: str) -> bool:
        """A bad sample set for the group, at most one per reason between two drains (a
        burst of bad frames is one bad reading per signal, not thousands)."""
        if reason in self.flagged:
            return True
        self.flagged.add(reason)
        return self.push((ts_ns, None, reason))


class SerialLineDriver:
    """One machine speaking an ASCII line protocol. Never raises for device trouble."""

    def __init__(self, conn: SerialLineConnection,
                 groups: Mapping[str, Sequence[SerialLineSignalFields]],
                 intervals: Mapping[str, float]) -> None:
        framing = conn.framing
        start = wire_bytes(framing.start) if framing.start is not None else None
        self._splitter = FrameSplitter(
            terminator=wire_bytes(framing.terminator) if framing.terminator is not None else None,
            start=start, length=framing.length, max_frame=framing.max_frame,
            resync_on_start=framing.resync_on_start)
        checksum = conn.checksum
        self._checker = FrameChecker(
            checksum.type, wire_bytes(checksum.separator) if checksum.separator else None,
            start=start or b"", over=checksum.over, crc_order=checksum.crc_order)
        self._encoding = conn.encoding
        self._requests: dict[str, _RequestGroup] = {}
        self._streams: dict[str, _StreamGroup] = {}
        for name, signals in groups.items():
            entry = conn.groups.get(name)
            if entry is None:
                raise ValueError(f"poll group {name!r} has no entry in connection.groups")
            extractor = Extractor(signals, conn.regex_of(entry), conn.delimiter_of(entry))
            if entry.mode == "stream":
                self._streams[name] = _StreamGroup(name, entry, extractor)
            else:
                self._requests[name] = _RequestGroup(name, entry, conn, extractor)
        self._stream_order = list(self._streams.values())
        self._sizes = {name: len(signals) for name, signals in groups.items()}
        self._transport: Transport
        if conn.serial is not None:
            self._transport = SerialTransport(conn.serial, self._on_data, self._on_lost)
        else:
            assert conn.tcp is not None
            self._transport = TcpTransport(conn.tcp, conn.connect_timeout, self._on_data,
                                           self._on_lost)
        self._waiter: tuple[_RequestGroup, asyncio.Future[tuple[str, int, bool]]] | None = None
        self._lock = asyncio.Lock()  # one request on the line at a time
        # Counters (cumulative over reconnects), for metrics and tests.
        self.frames = 0  # complete frames received (good or not)
        self.checksum_errors = 0
        self.stray_frames = 0  # good frames nobody waited for (late replies, echoes, noise)
        self.timeouts = 0  # requests without a reply, silent streams (stale_after)
        self.disconnects = 0  # links lost (not counting close())
        self._bursts = {kind: BurstLog(what) for kind, what in (
            ("garbage", "garbage on the line (bytes outside frames, over-long frames)"),
            ("checksum", "frames with a wrong or missing checksum"),
            ("stray", "frames no request or stream group wanted"),
            ("unexpected", "frames that do not have the configured form"),
            ("parse", "fields that do not convert to the signal's type"),
            ("dropped", "streamed frames dropped: more arrived than the poll interval takes"),
            ("timeout", "no reply / no frames within the timeout"),
            ("bug", "internal error while processing received data"),
        )}

    # -- counters owned by the parts ------------------------------------------------------

    @property
    def garbage_bytes(self) -> int:
        return self._splitter.garbage_bytes

    @property
    def overlong_frames(self) -> int:
        return self._splitter.overlong

    @property
    def dropped(self) -> int:
        """Streamed frames pushed out of a full pending queue (the agent drained too slowly)."""
        return sum(s.dropped for s in self._stream_order)

    overruns = dropped

    @property
    def unexpected_frames(self) -> int:
        return sum(g.extractor.unexpected for g in self._all_groups())

    @property
    def parse_errors(self) -> int:
        return sum(g.extractor.parse_errors for g in self._all_groups())

    def _all_groups(self) -> list[_RequestGroup | _StreamGroup]:
        return [*self._requests.values(), *self._stream_order]

    # -- Driver protocol --------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._transport.connected

    async def connect(self) -> None:
        self._transport.close()
        self._splitter.reset()  # a partial frame of the last connection is garbage
        await self._transport.open()
        now = time.monotonic()
        for stream in self._stream_order:
            stream.last_frame, stream.stale_reported = now, False

    async def close(self) -> None:
        try:
            self._transport.close()
        finally:
            self._fail_waiter("connection closed")
        await self._transport.wait_closed()

    def request_count(self, group: str) -> int:
        return 1 if group in self._requests else 0

    async def read(self, group: str) -> list[RawSample]:
        request = self._requests.get(group)
        size = self._sizes.get(group, 0)
        if request is None:  # a streaming group is drained, never read
            return [bad_sample(CONFIG_ERROR)] * size
        if not self._transport.connected:
            return [bad_sample(COMM_FAILURE)] * size
        async with self._lock:
            future: asyncio.Future[tuple[str, int, bool]] = (
                asyncio.get_running_loop().create_future())
            self._waiter = (request, future)
            failure: str | None = None
            try:
                async with asyncio.timeout(request.timeout):
                    await self._transport.write(request.command)
                    text, ts_ns, good = await future
            except TimeoutError:
                failure = TIMEOUT
                self.timeouts += 1
                self._bursts["timeout"].note(detail=f"group {group}, no reply to "
                                             f"{_shown(request.command)} within "
                                             f"{request.timeout:g}s")
            except (ConnectionError, OSError):
                failure = COMM_FAILURE
            finally:
                if self._waiter is not None and self._waiter[1] is future:
                    self._waiter = None
        if failure is not None:
            return [bad_sample(failure)] * size
        if not good:
            return [bad_sample(CHECKSUM, ts_ns)] * size
        return self._extract(request, text, ts_ns)

    async def drain(self, group: str) -> Drained | None:
        stream = self._streams.get(group)
        if stream is None:
            return None
        entries, stream.pending = stream.pending, deque(maxlen=stream.bound)
        stream.flagged.clear()
        samples: list[tuple[int, RawSample]] = []
        size = stream.extractor.size
        for entry in entries:
            if entry[1] is not None:  # narrows the union: unpacking it would not
                ts_ns, text, _ = entry
                samples.extend(enumerate(self._extract(stream, text, ts_ns)))
            else:
                ts_ns, _, reason = entry
                bad = bad_sample(reason, ts_ns)
                samples.extend((i, bad) for i in range(size))
        stale = stream.stale_after
        if (stale is not None and not stream.stale_reported and self._transport.connected
                and time.monotonic() - stream.last_frame >= stale):
            stream.stale_reported = True
            self.timeouts += 1
            self._bursts["timeout"].note(detail=f"group {group}: no frame for {stale:g}s")
            bad = bad_sample(TIMEOUT)
            samples.extend((i, bad) for i in range(size))
        return Drained(samples, [])

    # -- receiving ----------------------------------------------------------------------------

    def _extract(self, group: _RequestGroup | _StreamGroup, text: str,
                 ts_ns: int) -> list[RawSample]:
        extractor = group.extractor
        unexpected, parse = extractor.unexpected, extractor.parse_errors
        samples = extractor.extract(text, ts_ns)
        if extractor.unexpected != unexpected:
            self._bursts["unexpected"].note(detail=f"group {group.name}: {_shown(text)}")
        if extractor.parse_errors != parse:
            self._bursts["parse"].note(detail=f"group {group.name}: {_shown(text)}")
        return samples

    def _on_data(self, chunk: bytes) -> None:
        """Called by the transport for every chunk received; never raises."""
        try:
            splitter = self._splitter
            garbage = splitter.garbage_bytes
            bodies = splitter.feed(chunk)
            if splitter.garbage_bytes != garbage:
                self._bursts["garbage"].note(splitter.garbage_bytes - garbage,
                                             f"last chunk {_shown(chunk)}")
            if bodies:
                ts_ns = time.time_ns()
                for body in bodies:
                    self._on_frame(body, ts_ns)
        except Exception:  # a bug here must not stop reception
            if self._bursts["bug"].note():
                log.exception("processing received data failed")
            self._splitter.reset()

    def _on_frame(self, body: bytes, ts_ns: int) -> None:
        self.frames += 1
        payload, good = self._checker.split(body)
        text = payload.decode(self._encoding, errors="replace")
        if not good:
            self.checksum_errors += 1
            self._bursts["checksum"].note(detail=_shown(body))
        waiter = self._waiter
        if waiter is not None:
            request, future = waiter
            if not future.done() and (request.match is None or request.match.match(text)):
                self._waiter = None
                future.set_result((text, ts_ns, good))
                return
        for stream in self._stream_order:
            if stream.match is None or stream.match.match(text):
                stream.last_frame, stream.stale_reported = time.monotonic(), False
                if not (stream.push((ts_ns, text, None)) if good
                        else stream.push_bad(ts_ns, CHECKSUM)):
                    self._bursts["dropped"].note(detail=f"group {stream.name} keeps "
                                                 f"{stream.bound} frames")
                return
        if good:
            self.stray_frames += 1
            self._bursts["stray"].note(detail=_shown(text))

    def _on_lost(self, why: str) -> None:
        self.disconnects += 1
        log.warning("connection to %s lost: %s", self._transport.name, why)
        self._fail_waiter(why)
        ts_ns = time.time_ns()
        for stream in self._stream_order:
            stream.push_bad(ts_ns, COMM_FAILURE)

    def _fail_waiter(self, why: str) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter[1].done():
            waiter[1].set_exception(ConnectionError(why))


def _build(conn: SerialLineConnection, groups: Mapping[str, Sequence[SerialLineSignalFields]],
           intervals: Mapping[str, float], shared: dict[str, Any] | None = None) -> SerialLineDriver:
    # `shared` is not used: one machine owns its port (opened exclusively).
    return SerialLineDriver(conn, groups, intervals)


SERIAL_LINE = DriverSpec("serial-line", SerialLineConnection, SerialLineSignalFields, _build,
                         check_machine)
