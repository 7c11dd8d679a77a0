"""One conversation on a simulated serial line: received chunks with their line timing, and
paced sending (character time from ``simulators.serial.line.LineSettings``).

* receive: a chunk of n bytes delivered instantly at time t occupies the line until
  ``max(t, end of the previous chunk) + n*c`` (``rx_line_end``). A real device delivers bytes
  at line pace already, so there the chunk's arrival time is its end.
* send(data, start=s): transmission begins no earlier than s (nor before the previous
  transmission ended); byte k (0-based) is written to the transport no earlier than
  ``begin + (k+1)*c`` (the moment a receiver would have it), in chunks of about
  ``WRITE_CHUNK_SECONDS`` so a 2 ms sleep is not needed per byte at high baud rates. Hence the
  last byte of an n-byte reply is written no earlier than n character times after the start.

All timings are lower bounds: asyncio sleeps never end early, but may end late on a loaded
machine. The line is modelled full duplex and without collisions: bytes a client sends while a
reply is going out are queued and handled afterwards (a real RS-485 slave would garble both).

Overrun. If the peer does not read (pty buffer full, socket buffer above
``simulators.serial.tcp_link.MAX_TCP_BACKLOG``), bytes that cannot be written are dropped and
counted in ``LinePort.bytes_overrun``, as a UART drops characters nobody collects. Received
chunks beyond ``MAX_RX_CHUNKS`` waiting for the handler are dropped likewise.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable

from simulators.serial.line import LineSettings

# Granularity of paced writes: one write per ~2 ms of line time keeps the event loop cheap
# at 115200 baud while still looking like a trickle of bytes to the reader.
WRITE_CHUNK_SECONDS = 0.002
MAX_RX_CHUNKS = 1024


class LinkClosed(EOFError):
    """The conversation ended (TCP peer closed, device gone, link stopped)."""


async def sleep_until(deadline: float) -> None:
    """Sleep until time.monotonic() >= deadline (asyncio's clock is time.monotonic)."""
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return
        await asyncio.sleep(remaining)


class LinePort:
    """One conversation on a line: received chunks with their line timing, paced sending.

    `write` is the transport's non-blocking write; it returns how many bytes it accepted
    (the rest is dropped as overrun). `instant_delivery` is True where the transport moves
    bytes faster than the line would (pty, socket), False for a real serial device.
    """

    def __init__(
        self,
        settings: LineSettings,
        write: Callable[[bytes], int],
        *,
        instant_delivery: bool = True,
        name: str = "line",
    ) -> None:
        self.settings = settings
        self.name = name
        self._write = write
        self._instant = instant_delivery
        self._chunks: deque[tuple[bytes, float] | None] = deque()
        self._wakeup: asyncio.Event = asyncio.Event()
        self._feed_line_end = 0.0
        self._send_lock = asyncio.Lock()
        self.closed = False
        self.rx_line_end = 0.0  # line end of the last chunk handed out by receive()
        self.tx_line_end = 0.0
        self.bytes_received = 0
        self.bytes_sent = 0
        self.bytes_overrun = 0

    # -- transport side

    def feed(self, data: bytes, arrival: float | None = None) -> None:
        """Called by the transport with bytes read at `arrival` (default: now)."""
        if not data or self.closed:
            return
        now = time.monotonic() if arrival is None else arrival
        if self._instant:
            self._feed_line_end = max(now, self._feed_line_end) + self.settings.line_time(len(data))
        else:
            self._feed_line_end = now
        self.bytes_received += len(data)
        if len(self._chunks) >= MAX_RX_CHUNKS:
            self.bytes_overrun += len(data)  # nobody is reading: behave like a UART overrun
            return
        self._chunks.append((bytes(data), self._feed_line_end))
        self._wakeup.set()

    def feed_eof(self) -> None:
        """Called by the transport when the conversation ends."""
        if not self.closed:
            self.closed = True
            self._chunks.append(None)
            self._wakeup.set()

    # -- protocol side

    def pending(self) -> bool:
        """True if a chunk is waiting to be received."""
        return bool(self._chunks)

    def discard_input(self) -> None:
        """Drop every chunk not received yet (keeps an EOF marker)."""
        eof = None in self._chunks
        self._chunks.clear()
        if eof:
            self._chunks.append(None)

    async def receive(self, timeout: float | None = None) -> bytes | None:
        """Next received chunk; None if `timeout` seconds pass first; LinkClosed at the end."""
        deadline = None if timeout is None else time.monotonic() + max(0.0, timeout)
        while not self._chunks:
            self._wakeup.clear()
            if deadline is None:
                await self._wakeup.wait()
                continue
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            try:
                await asyncio.wait_for(self._wakeup.wait(), remaining)
            except TimeoutError:
                if not self._chunks:
                    return None
        item = self._chunks.popleft()
        if item is None:
            self._chunks.appendleft(None)  # stay closed for later calls
            raise LinkClosed(self.name)
        data, line_end = item
        self.rx_line_end = line_end
        return data

    async def send(self, data: bytes, *, start: float | None = None) -> float:
        """Transmit `data` at line pace, beginning no earlier than `start`; returns its line end."""
        async with self._send_lock:
            if self.closed:
                raise LinkClosed(self.name)
            c = self.settings.char_time
            begin = max(time.monotonic(), start or 0.0, self.tx_line_end)
            n = len(data)
            per_chunk = max(1, int(WRITE_CHUNK_SECONDS / c))
            sent = 0
            while sent < n:
                # Bytes whose last bit is on the line by now; never write one earlier.
                due = min(n, int((time.monotonic() - begin) / c))
                if due > sent:
                    self._transmit(data[sent:due])
                    sent = due
                if sent < n:
                    await sleep_until(begin + min(n, sent + per_chunk) * c)
            self.tx_line_end = begin + n * c
            return self.tx_line_end

    def _transmit(self, data: bytes) -> None:
        try:
            accepted = self._write(data)
        except LinkClosed:
            self.feed_eof()
            raise
        self.bytes_sent += accepted
        self.bytes_overrun += len(data) - accepted


PortHandler = Callable[[LinePort], Awaitable[None]]
