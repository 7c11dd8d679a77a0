"""Serial links on a file descriptor, read with loop.add_reader.

* ``PtyLink``: ``os.openpty()``; both ends are put in raw mode (no echo, no CR/LF mangling,
  no signal characters). The simulator reads/writes the MASTER fd; a client opens the SLAVE
  path (``link.address``, e.g. ``/dev/pts/7``) like any serial port. The simulator keeps its
  own slave fd open for the lifetime of the link: otherwise, each time the client closes the
  port, reads on the master fail with EIO and the master polls readable (HUP) forever.
* ``DeviceLink``: an existing serial device (``/dev/ttyUSB0``, or one end of a pty/socat pair)
  opened with pyserial at the configured baud/parity/stop bits.

Ptys and termios. A pty has no baud rate, parity or character size: Linux forces CS8 and clears
PARENB on every tcsetattr of a pty. On some kernels (seen on 6.18 in the sandbox this was
written in) tcsetattr then fails with EINVAL when none of the requested changes could be
applied, so pyserial - and pymodbus, which reconfigures right after opening - cannot open a pty
with parity E/O or 7 data bits. Clients should open the slave as 8N1; the simulator's
``--parity`` still sets the simulated character time. Ptys also accept any standard baud rate.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import errno
import logging
import os
import termios
import time
import tty
from typing import Any

from simulators.serial.line import LineSettings
from simulators.serial.link import READ_SIZE, SerialLink
from simulators.serial.port import LinkClosed, LinePort, PortHandler

logger = logging.getLogger("simulators.serial")


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
