"""The byte pipe under the serial simulators: a pty pair, a real serial device or a TCP socket,
with the timing of a real RS-232/RS-485 line.

Transports (all deliver the conversation to a handler coroutine as a ``LinePort``):

* ``PtyLink``: ``os.openpty()``; both ends are put in raw mode (no echo, no CR/LF mangling,
  no signal characters). The simulator reads/writes the MASTER fd; a client opens the SLAVE
  path (``link.address``, e.g. ``/dev/pts/7``) like any serial port. The simulator keeps its
  own slave fd open for the lifetime of the link: otherwise, each time the client closes the
  port, reads on the master fail with EIO and the master polls readable (HUP) forever.
* ``DeviceLink``: an existing serial device (``/dev/ttyUSB0``, or one end of a pty/socat pair)
  opened with pyserial at the configured baud/parity/stop bits.
* ``TcpLink``: a TCP server on 127.0.0.1, raw bytes on the socket (no MBAP, no framing), the
  way a serial-to-Ethernet converter in "TCP server" mode forwards a serial line. Each
  accepted connection is an independent conversation with its own line timeline.

Line timing. A pty (or a socket) moves bytes instantly; a serial line does not. With
``LineSettings`` the character time is ``c = (1 start + data bits + 1 parity bit unless
parity N + stop bits) / baud`` (10 bits at 8N1, 11 at 8E1). ``LinePort`` models it:

* receive: a chunk of n bytes delivered instantly at time t occupies the line until
  ``max(t, end of the previous chunk) + n*c`` (``rx_line_end``). A real device delivers bytes
  at line pace already, so there the chunk's arrival time is its end.
* send(data, start=s): transmission begins no earlier than s (nor before the previous
  transmission ended); byte k (0-based) is written to the transport no earlier than
  ``begin + (k+1)*c`` (the moment a receiver would have it), in chunks of about
  ``WRITE_CHUNK_SECONDS`` so a 2 ms sleep is not needed per byte at high baud rates. Hence the
  last byte of an n-byte reply is written no earlier than n character times after the start.
* servers answer a request at ``rx_line_end + turnaround (+ injected delay)``. The default
  turnaround is 1 ms at >= 19200 baud, else 3.5 character times. The inter-frame silence is
  3.5 character times, fixed at 1.75 ms above 19200 baud (Modbus over serial line v1.02,
  2.5.1.1).

All timings are lower bounds: asyncio sleeps never end early, but may end late on a loaded
machine. The line is modelled full duplex and without collisions: bytes a client sends while a
reply is going out are queued and handled afterwards (a real RS-485 slave would garble both).

Overrun. If the peer does not read (pty buffer full, socket buffer above
``MAX_TCP_BACKLOG``), bytes that cannot be written are dropped and counted in
``LinePort.bytes_overrun``, as a UART drops characters nobody collects. Received chunks beyond
``MAX_RX_CHUNKS`` waiting for the handler are dropped likewise.

Fault switches shared by the serial simulators (``LineFaults``; frozen, replace the whole
object at runtime): ``noise`` (probability per reply/line of a burst of 1..8 random bytes in
front of it), ``drop_every`` (N-th reply/line not sent), ``slow_ms`` (extra delay before each
reply), ``corrupt_every`` (N-th reply/line with a wrong checksum), ``cut_every`` (N-th
reply/line truncated to its first half). One counter per simulator numbers the replies/lines
1, 2, 3, ... over all connections; reply N is dropped if N % drop_every == 0, else cut if
N % cut_every == 0, else corrupted if N % corrupt_every == 0 (0 disables a switch).

CLI helpers: ``add_link_arguments`` (``--pty | --serial DEVICE | --tcp PORT``, ``--baud``,
``--parity``, ``--stopbits``, ``--bytesize``, ``--turnaround-ms``), ``add_fault_arguments``
(``--noise --drop-every --slow-ms --corrupt-every --cut-every``), ``link_from_args`` and
``run_cli`` (print ``<kind> listening on <address>``, serve until SIGTERM/SIGINT, exit 0).

Use from Python. In an asyncio test the simulator runs on the test's own loop::

    async with ForgingSimulator(PtyLink(LineSettings(baud=19200, parity="N"))) as sim:
        port = sim.address          # "/dev/pts/N", open it with the client under test

Tests whose client blocks (pyserial, sockets) run it in a background thread instead:
``with in_thread(sim): serial.Serial(sim.address, ...)``.

Ptys and termios. A pty has no baud rate, parity or character size: Linux forces CS8 and clears
PARENB on every tcsetattr of a pty. On some kernels (seen on 6.18 in the sandbox this was
written in) tcsetattr then fails with EINVAL when none of the requested changes could be
applied, so pyserial - and pymodbus, which reconfigures right after opening - cannot open a pty
with parity E/O or 7 data bits. Clients should open the slave as 8N1; the simulator's
``--parity`` still sets the simulated character time. Ptys also accept any standard baud rate.
"""

from __future__ import annotations

import abc
import argparse
import asyncio
import contextlib
import enum
import errno
import logging
import os
import random
import signal
import sys
import termios
import threading
import time
import tty
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

from simulators.lifecycle import Lifecycle

logger = logging.getLogger("simulators.serial")

PARITIES = ("N", "E", "O", "M", "S")
STOPBITS = (1.0, 1.5, 2.0)
BYTESIZES = (5, 6, 7, 8)
# Above this baud rate the Modbus spec fixes the inter-frame silence instead of 3.5 chars.
FIXED_TIMING_BAUD = 19200
FIXED_INTERFRAME_S = 0.00175
DEFAULT_FAST_TURNAROUND_S = 0.001
# Granularity of paced writes: one write per ~2 ms of line time keeps the event loop cheap
# at 115200 baud while still looking like a trickle of bytes to the reader.
WRITE_CHUNK_SECONDS = 0.002
MAX_RX_CHUNKS = 1024
MAX_TCP_BACKLOG = 64 * 1024
READ_SIZE = 4096
NOISE_MIN_BYTES = 1
NOISE_MAX_BYTES = 8

# --------------------------------------------------------------------------- line settings


@dataclass(frozen=True)
class LineSettings:
    """Serial line parameters; on a pty/socket they only drive the simulated timing."""

    baud: int = 19200
    bytesize: int = 8
    parity: str = "E"
    stopbits: float = 1.0
    turnaround_s: float | None = None  # None: 1 ms at >= 19200 baud, else 3.5 chars

    def __post_init__(self) -> None:
        if self.baud <= 0:
            raise ValueError("baud must be > 0")
        if self.bytesize not in BYTESIZES:
            raise ValueError("bytesize must be 5, 6, 7 or 8")
        if self.parity not in PARITIES:
            raise ValueError("parity must be one of N, E, O, M, S")
        if float(self.stopbits) not in STOPBITS:
            raise ValueError("stopbits must be 1, 1.5 or 2")
        if self.turnaround_s is not None and self.turnaround_s < 0:
            raise ValueError("turnaround must be >= 0")

    @property
    def bits_per_char(self) -> float:
        """Start bit + data bits + parity bit (unless N) + stop bits."""
        return 1 + self.bytesize + (0 if self.parity == "N" else 1) + float(self.stopbits)

    @property
    def char_time(self) -> float:
        """Seconds one character occupies the line."""
        return self.bits_per_char / self.baud

    def line_time(self, nbytes: int) -> float:
        """Seconds `nbytes` characters occupy the line."""
        return nbytes * self.char_time

    @property
    def interframe(self) -> float:
        """Silence that ends an RTU frame: 3.5 chars, 1.75 ms above 19200 baud."""
        if self.baud > FIXED_TIMING_BAUD:
            return FIXED_INTERFRAME_S
        return 3.5 * self.char_time

    @property
    def turnaround(self) -> float:
        """Delay between the end of a request and the start of its reply."""
        if self.turnaround_s is not None:
            return self.turnaround_s
        if self.baud >= FIXED_TIMING_BAUD:
            return DEFAULT_FAST_TURNAROUND_S
        return 3.5 * self.char_time

    def describe(self) -> str:
        """E.g. '19200 8E1'."""
        stop = int(self.stopbits) if float(self.stopbits).is_integer() else self.stopbits
        return f"{self.baud} {self.bytesize}{self.parity}{stop}"


# --------------------------------------------------------------------------- faults


@dataclass(frozen=True)
class LineFaults:
    """Fault switches common to the serial simulators; the defaults inject nothing."""

    noise: float = 0.0
    drop_every: int = 0
    slow_ms: float = 0.0
    corrupt_every: int = 0
    cut_every: int = 0
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0.0 <= self.noise <= 1.0:
            raise ValueError("noise must be a probability within 0..1")
        for name in ("drop_every", "corrupt_every", "cut_every"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")
        if self.slow_ms < 0:
            raise ValueError("slow_ms must be >= 0")


class FaultAction(enum.Enum):
    """What to do with one outgoing reply/line."""

    SEND = "send"
    DROP = "drop"
    CUT = "cut"
    CORRUPT = "corrupt"


@dataclass
class FaultStats:
    """Counts of injected faults."""

    dropped: int = 0
    cut: int = 0
    corrupted: int = 0
    noise_bursts: int = 0


class FaultInjector:
    """Numbers outgoing replies/lines and decides their fate; draws the noise bytes."""

    def __init__(self, seed: int = 0) -> None:
        self.count = 0
        self.stats = FaultStats()
        self._rng = random.Random(seed)

    def next_action(self, faults: LineFaults) -> FaultAction:
        """Action for the next reply (counted even when nothing is injected)."""
        self.count += 1
        n = self.count
        if faults.drop_every and n % faults.drop_every == 0:
            self.stats.dropped += 1
            return FaultAction.DROP
        if faults.cut_every and n % faults.cut_every == 0:
            self.stats.cut += 1
            return FaultAction.CUT
        if faults.corrupt_every and n % faults.corrupt_every == 0:
            self.stats.corrupted += 1
            return FaultAction.CORRUPT
        return FaultAction.SEND

    def noise_burst(self, faults: LineFaults, exclude: bytes = b"") -> bytes:
        """b'' or, with probability faults.noise, 1..8 random bytes none of which is in `exclude`."""
        if faults.noise <= 0.0 or self._rng.random() >= faults.noise:
            return b""
        allowed = [b for b in range(256) if b not in exclude]
        n = self._rng.randint(NOISE_MIN_BYTES, NOISE_MAX_BYTES)
        self.stats.noise_bursts += 1
        return bytes(self._rng.choice(allowed) for _ in range(n))


# --------------------------------------------------------------------------- the port


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


# --------------------------------------------------------------------------- transports


class SerialLink(abc.ABC):
    """A place a serial simulator serves: start(handler) runs handler(port) per conversation."""

    def __init__(self, settings: LineSettings | None = None) -> None:
        self.settings = settings or LineSettings()
        self._handler: PortHandler | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.ports: list[LinePort] = []

    @property
    @abc.abstractmethod
    def address(self) -> str:
        """What a client opens: a device path or '127.0.0.1:PORT'."""

    @abc.abstractmethod
    async def start(self, handler: PortHandler) -> None:
        """Open the transport and begin serving."""

    @abc.abstractmethod
    async def stop(self) -> None:
        """Close everything; idempotent."""

    def _spawn(self, port: LinePort) -> asyncio.Task[None]:
        assert self._handler is not None
        self.ports.append(port)
        task = asyncio.create_task(self._run_handler(port), name=f"serial:{port.name}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _run_handler(self, port: LinePort) -> None:
        assert self._handler is not None
        try:
            await self._handler(port)
        except LinkClosed:
            pass
        except asyncio.CancelledError:
            raise
        except Exception:  # a protocol bug must be visible, but must not kill the link
            logger.exception("%s: handler failed", port.name)
        finally:
            with contextlib.suppress(ValueError):
                self.ports.remove(port)

    async def _cancel_tasks(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


class _FdLink(SerialLink):
    """A single conversation on a file descriptor, read with loop.add_reader."""

    _fd: int | None = None
    _port: LinePort | None = None
    _instant_delivery = True

    def _attach(self, fd: int) -> None:
        os.set_blocking(fd, False)
        self._fd = fd
        port = LinePort(
            self.settings, self._write_fd, instant_delivery=self._instant_delivery,
            name=self.address,
        )
        self._port = port
        asyncio.get_running_loop().add_reader(fd, self._on_readable)
        self._spawn(port)

    def _on_readable(self) -> None:
        fd, port = self._fd, self._port
        if fd is None or port is None:
            return
        now = time.monotonic()
        while True:
            try:
                data = os.read(fd, READ_SIZE)
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno == errno.EIO:  # pty without any open slave: nothing to read
                    return
                logger.warning("%s: read failed (%s), closing", self.address, exc)
                self._detach()
                port.feed_eof()
                return
            if not data:
                self._detach()
                port.feed_eof()
                return
            port.feed(data, now)

    def _write_fd(self, data: bytes) -> int:
        fd = self._fd
        if fd is None:
            raise LinkClosed(self.address)
        written = 0
        while written < len(data):
            try:
                written += os.write(fd, data[written:])
            except BlockingIOError:
                break  # peer not reading: the rest is lost like on a real line
            except OSError as exc:
                if exc.errno == errno.EIO:
                    break
                raise LinkClosed(f"{self.address}: {exc}") from exc
        return written

    def _detach(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(self._fd)

    async def stop(self) -> None:
        self._detach()
        if self._port is not None:
            self._port.feed_eof()
        await self._cancel_tasks()
        self._close_fds()
        self._fd = None

    @abc.abstractmethod
    def _close_fds(self) -> None:
        ...


class PtyLink(_FdLink):
    """A pseudo-terminal pair; the client opens `address`, the slave path."""

    def __init__(self, settings: LineSettings | None = None) -> None:
        super().__init__(settings)
        self._slave_fd: int | None = None
        self._slave_path = ""

    @property
    def address(self) -> str:
        return self._slave_path

    @property
    def master_fd(self) -> int | None:
        """The simulator's end (for tests that want to peek)."""
        return self._fd

    async def start(self, handler: PortHandler) -> None:
        if self._handler is not None:
            raise RuntimeError("link already started")
        self._handler = handler
        master, slave = os.openpty()
        # Raw on both ends: no echo of our replies back to us, no CR/LF translation, no
        # ^C/^S interpretation of binary bytes, 8-bit clean.
        tty.setraw(master)
        tty.setraw(slave)
        self._slave_fd = slave
        self._slave_path = os.ttyname(slave)
        self._attach(master)

    def _close_fds(self) -> None:
        for fd in (self._fd, self._slave_fd):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._slave_fd = None


class DeviceLink(_FdLink):
    """An existing serial device (e.g. /dev/ttyUSB0), configured through pyserial."""

    _instant_delivery = False

    def __init__(self, device: str, settings: LineSettings | None = None) -> None:
        super().__init__(settings)
        self.device = device
        self._serial: Any = None

    @property
    def address(self) -> str:
        return self.device

    async def start(self, handler: PortHandler) -> None:
        if self._handler is not None:
            raise RuntimeError("link already started")
        import serial  # only this transport needs pyserial

        s = self.settings
        stopbits = int(s.stopbits) if float(s.stopbits).is_integer() else s.stopbits
        self._serial = serial.Serial(
            self.device, baudrate=s.baud, bytesize=s.bytesize, parity=s.parity,
            stopbits=stopbits, timeout=0, exclusive=True,
        )
        fd = self._serial.fileno()
        # pyserial leaves VMIN=0/VTIME=0, where read() returns b"" when no byte is waiting -
        # indistinguishable from a hang-up. VMIN=1 makes an empty non-blocking read EAGAIN.
        attrs = termios.tcgetattr(fd)
        attrs[6][termios.VMIN] = 1
        attrs[6][termios.VTIME] = 0
        termios.tcsetattr(fd, termios.TCSANOW, attrs)
        self._handler = handler
        self._attach(fd)

    def _close_fds(self) -> None:
        if self._serial is not None:
            with contextlib.suppress(Exception):
                self._serial.close()
            self._serial = None


class TcpLink(SerialLink):
    """Raw serial bytes on TCP (serial-to-Ethernet converter); one conversation per connection."""

    def __init__(
        self, port: int = 0, settings: LineSettings | None = None, *, host: str = "127.0.0.1"
    ) -> None:
        super().__init__(settings)
        self.host = host
        self.port = port
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    async def start(self, handler: PortHandler) -> None:
        if self._handler is not None:
            raise RuntimeError("link already started")
        self._handler = handler
        self._server = await asyncio.start_server(self._on_client, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _on_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        transport = writer.transport

        def write(data: bytes) -> int:
            if transport.is_closing():
                raise LinkClosed(str(peer))
            if transport.get_write_buffer_size() > MAX_TCP_BACKLOG:
                return 0  # peer not reading
            transport.write(data)
            return len(data)

        port = LinePort(self.settings, write, name=f"{self.address}<-{peer}")
        self._writers.add(writer)
        handler_task = self._spawn(port)
        try:
            while True:
                data = await reader.read(READ_SIZE)
                if not data:
                    break
                port.feed(data)
        except (ConnectionError, asyncio.CancelledError):
            # Finishing normally on cancel: on 3.11 asyncio's stream callback otherwise logs a
            # spurious traceback per connection (see modbus_tcp_server).
            pass
        finally:
            port.feed_eof()
            handler_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await handler_task
            self._writers.discard(writer)
            transport.abort()

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._writers):
            writer.transport.abort()
        await self._cancel_tasks()


def open_link(
    *,
    pty: bool = False,
    serial_device: str | None = None,
    tcp_port: int | None = None,
    settings: LineSettings | None = None,
) -> SerialLink:
    """The link for exactly one of: a new pty, an existing device, a TCP port (0 = OS picks)."""
    chosen = [pty, serial_device is not None, tcp_port is not None]
    if sum(chosen) != 1:
        raise ValueError("choose exactly one of pty, serial_device, tcp_port")
    if pty:
        return PtyLink(settings)
    if serial_device is not None:
        return DeviceLink(serial_device, settings)
    assert tcp_port is not None
    return TcpLink(tcp_port, settings)


# --------------------------------------------------------------------------- helpers


class Startable(Protocol):
    """Anything with async start/stop and an address (the serial simulators)."""

    @property
    def address(self) -> str: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


F = TypeVar("F", bound=LineFaults)


class SimulatorBase(Lifecycle, Generic[F]):
    """Lifecycle shared by the serial simulators: a link plus the protocol handler on it,
    and the fault switches it obeys."""

    link: SerialLink
    _faults: F
    _injector: FaultInjector

    def _use_faults(self, faults: F) -> None:
        self._faults = faults
        self._injector = FaultInjector(faults.seed)

    @property
    def faults(self) -> F:
        """Current fault switches."""
        return self._faults

    @faults.setter
    def faults(self, value: F) -> None:
        kind = type(self._faults)
        if not isinstance(value, kind):
            raise TypeError(f"faults must be an {kind.__name__}")
        self._faults = value

    @property
    def fault_stats(self) -> FaultStats:
        """Counts of injected faults (dropped, cut, corrupted, noise bursts)."""
        return self._injector.stats

    async def _serve(self, port: LinePort) -> None:
        raise NotImplementedError

    @property
    def address(self) -> str:
        """What a client opens (slave pty path, device path or 127.0.0.1:PORT)."""
        return self.link.address

    async def start(self) -> None:
        """Open the link and serve."""
        await self.link.start(self._serve)

    async def stop(self) -> None:
        """Close the link and end every conversation."""
        await self.link.stop()


@dataclass
class _ThreadRunner:
    sim: Any
    loop: asyncio.AbstractEventLoop = field(default_factory=asyncio.new_event_loop)
    thread: threading.Thread | None = None

    def run(self, coro: Awaitable[Any], timeout: float = 10.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)  # type: ignore[arg-type]


@contextlib.contextmanager
def in_thread(sim: Any) -> Iterator[Any]:
    """Run `sim` (start/stop coroutines) on an event loop in a daemon thread; yields sim.

    For tests whose client blocks (pyserial, sockets). Change faults from the test thread by
    assigning a new frozen config (an atomic reference swap).
    """
    runner = _ThreadRunner(sim)
    runner.thread = threading.Thread(target=runner.loop.run_forever, daemon=True,
                                     name=f"sim:{type(sim).__name__}")
    runner.thread.start()
    try:
        runner.run(sim.start())
        yield sim
    finally:
        try:
            runner.run(sim.stop())
        finally:
            runner.loop.call_soon_threadsafe(runner.loop.stop)
            runner.thread.join(10.0)
            runner.loop.close()


def add_link_arguments(
    p: argparse.ArgumentParser, *, baud: int, parity: str, bytesize: int = 8, stopbits: float = 1
) -> None:
    """--pty | --serial DEVICE | --tcp PORT and the line parameters."""
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--pty", action="store_true",
                       help="create a pty pair and print the slave path to open")
    where.add_argument("--serial", metavar="DEVICE", help="serve on an existing serial device")
    where.add_argument("--tcp", type=int, metavar="PORT",
                       help="serve raw serial bytes on 127.0.0.1:PORT (0 = OS picks)")
    p.add_argument("--baud", type=int, default=baud, help=f"baud rate (default {baud})")
    p.add_argument("--parity", choices=PARITIES, default=parity,
                   help=f"parity (default {parity})")
    p.add_argument("--stopbits", type=float, choices=STOPBITS, default=float(stopbits),
                   help=f"stop bits (default {stopbits})")
    p.add_argument("--bytesize", type=int, choices=BYTESIZES, default=bytesize,
                   help=f"data bits (default {bytesize})")
    p.add_argument("--turnaround-ms", type=float, default=None,
                   help="request end to reply start, ms (default 1 at >= 19200 baud, else 3.5 chars)")


def add_fault_arguments(p: argparse.ArgumentParser) -> None:
    """The LineFaults switches."""
    p.add_argument("--noise", type=float, default=0.0,
                   help="probability of a burst of random bytes before a reply/line")
    p.add_argument("--drop-every", type=int, default=0, help="do not send every N-th reply/line")
    p.add_argument("--slow-ms", type=float, default=0.0, help="extra delay before each reply, ms")
    p.add_argument("--corrupt-every", type=int, default=0,
                   help="wrong checksum on every N-th reply/line")
    p.add_argument("--cut-every", type=int, default=0,
                   help="send only the first half of every N-th reply/line")


def settings_from_args(args: argparse.Namespace) -> LineSettings:
    """LineSettings from add_link_arguments' options (ValueError if invalid)."""
    turnaround = None if args.turnaround_ms is None else args.turnaround_ms / 1000.0
    return LineSettings(baud=args.baud, bytesize=args.bytesize, parity=args.parity,
                        stopbits=args.stopbits, turnaround_s=turnaround)


def link_from_args(args: argparse.Namespace) -> SerialLink:
    """The link chosen by add_link_arguments' options."""
    if args.tcp is not None and not 0 <= args.tcp <= 65535:
        raise ValueError("--tcp port must be within 0..65535")
    return open_link(pty=args.pty, serial_device=args.serial, tcp_port=args.tcp,
                     settings=settings_from_args(args))


async def run_cli(sim: Startable, kind: str) -> int:
    """Start sim, print '<kind> listening on <address>', serve until SIGTERM/SIGINT; exit code."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await sim.start()
    except OSError as exc:  # includes serial.SerialException
        print(f"{kind}: cannot listen: {exc}", file=sys.stderr)
        with contextlib.suppress(Exception):
            await sim.stop()
        return 1
    print(f"{kind} listening on {sim.address}", flush=True)
    await stop.wait()
    await sim.stop()
    return 0
