"""Byte streams for the serial-line driver: a local serial port or a TCP connection.

Both deliver received bytes by calling `on_data(chunk)` on the event loop as they arrive and
report a dead link once through `on_lost(why)`; neither ever blocks the loop. The serial
port is opened with pyserial (non-blocking, timeout 0) and watched with `loop.add_reader`
on its file descriptor (POSIX); TCP uses asyncio streams with a reader task.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Callable
from typing import Protocol

from drivers.serial_line.config import SerialPortConfig, TcpConfig

READ_CHUNK = 65536

OnData = Callable[[bytes], None]
OnLost = Callable[[str], None]


class Transport(Protocol):
    @property
    def connected(self) -> bool: ...

    @property
    def name(self) -> str: ...

    async def open(self) -> None:
        """Open the link; raises OSError (SerialException is one), TimeoutError or
        ConnectionError."""

    async def write(self, data: bytes) -> None:
        """Send all of `data`; raises ConnectionError when the link is gone."""

    def close(self) -> None:
        """Close without reporting a loss; never raises."""

    async def wait_closed(self) -> None:
        """After `close`: until the link is released; never raises."""


class SerialTransport:
    """A serial port through pyserial, read with `loop.add_reader` (no thread)."""

    def __init__(self, config: SerialPortConfig, on_data: OnData, on_lost: OnLost) -> None:
        self._config = config
        self._on_data, self._on_lost = on_data, on_lost
        self._port: object | None = None  # serial.Serial
        self._fd: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._write_waiter: asyncio.Future[None] | None = None

    @property
    def connected(self) -> bool:
        return self._fd is not None

    @property
    def name(self) -> str:
        return self._config.port

    async def open(self) -> None:
        self.close()
        import serial  # pyserial, only for machines that use a serial port

        cfg = self._config
        port = serial.Serial()
        port.port = cfg.port
        port.baudrate = cfg.baudrate
        port.bytesize = {7: serial.SEVENBITS, 8: serial.EIGHTBITS}[cfg.bytesize]
        port.parity = {"N": serial.PARITY_NONE, "E": serial.PARITY_EVEN,
                       "O": serial.PARITY_ODD}[cfg.parity]
        port.stopbits = {1: serial.STOPBITS_ONE, 2: serial.STOPBITS_TWO}[cfg.stopbits]
        port.rtscts = cfg.rtscts
        port.xonxoff = cfg.xonxoff
        port.timeout = 0
        port.write_timeout = 0
        port.exclusive = True  # a second agent (or a terminal program) must not share it
        port.open()  # SerialException, an OSError, when the port is missing or busy
        try:
            fd = port.fileno()
            os.set_blocking(fd, False)
            port.reset_input_buffer()  # whatever queued up while nobody listened is stale
            loop = asyncio.get_running_loop()
            loop.add_reader(fd, self._readable)
        except BaseException:
            port.close()
            raise
        self._port, self._fd, self._loop = port, fd, loop

    def _readable(self) -> None:
        fd = self._fd
        if fd is None:
            return
        try:
            data = os.read(fd, READ_CHUNK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:  # EIO: adapter unplugged, pty master closed
            self._fail(f"read failed: {exc.strerror or exc}")
            return
        if not data:
            self._fail("port closed (end of file)")
            return
        self._on_data(data)

    async def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            fd = self._fd
            if fd is None:
                raise ConnectionError("serial port is not open")
            try:
                sent = os.write(fd, view)
            except (BlockingIOError, InterruptedError):
                await self._writable(fd)
                continue
            except OSError as exc:
                self._fail(f"write failed: {exc.strerror or exc}")
                raise ConnectionError(f"write failed: {exc}") from None
            view = view[sent:]

    async def _writable(self, fd: int) -> None:
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        self._write_waiter = waiter

        def ready() -> None:
            if not waiter.done():
                waiter.set_result(None)

        loop.add_writer(fd, ready)
        try:
            await waiter
        finally:
            self._write_waiter = None
            if self._fd == fd:
                loop.remove_writer(fd)

    def _fail(self, why: str) -> None:
        if self._fd is None:
            return
        self.close()
        self._on_lost(why)

    async def wait_closed(self) -> None:
        return  # close() released the port already

    def close(self) -> None:
        port, fd, loop = self._port, self._fd, self._loop
        self._port = self._fd = None
        if fd is not None and loop is not None and not loop.is_closed():
            loop.remove_reader(fd)
            loop.remove_writer(fd)
        waiter, self._write_waiter = self._write_waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(ConnectionError("serial port closed"))
        if port is not None:
            try:
                port.close()  # type: ignore[attr-defined]
            except Exception:  # a vanished adapter may fail its last ioctl
                pass


def _current_task() -> asyncio.Task[object] | None:
    try:
        return asyncio.current_task()
    except RuntimeError:  # no running loop
        return None


class TcpTransport:
    """A raw TCP byte stream (serial device server) through asyncio streams."""

    def __init__(self, config: TcpConfig, connect_timeout: float, on_data: OnData,
                 on_lost: OnLost) -> None:
        self._config = config
        self._connect_timeout = connect_timeout
        self._on_data, self._on_lost = on_data, on_lost
        self._writer: asyncio.StreamWriter | None = None
        self._task: asyncio.Task[None] | None = None
        self._closing: asyncio.StreamWriter | None = None

    @property
    def connected(self) -> bool:
        return self._writer is not None

    @property
    def name(self) -> str:
        return f"{self._config.host}:{self._config.port}"

    async def open(self) -> None:
        self.close()
        async with asyncio.timeout(self._connect_timeout):
            reader, writer = await asyncio.open_connection(self._config.host, self._config.port)
        sock = writer.get_extra_info("socket")
        if sock is not None:
            try:  # notice a peer that vanished without closing (power cut, cable)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            except OSError:
                pass
        self._writer = writer
        self._task = asyncio.get_running_loop().create_task(self._pump(reader, writer))

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                data = await reader.read(READ_CHUNK)
                if not data:
                    self._fail(writer, "connection closed by the device")
                    return
                self._on_data(data)
        except OSError as exc:
            self._fail(writer, f"read failed: {exc}")

    async def write(self, data: bytes) -> None:
        writer = self._writer
        if writer is None:
            raise ConnectionError("not connected")
        try:
            writer.write(data)
            await writer.drain()
        except OSError as exc:  # ConnectionResetError and friends
            self._fail(writer, f"write failed: {exc}")
            raise ConnectionError(f"write failed: {exc}") from None

    def _fail(self, writer: asyncio.StreamWriter, why: str) -> None:
        if self._writer is not writer:  # an old connection's news
            return
        self.close()
        self._on_lost(why)

    def close(self) -> None:
        writer, task = self._writer, self._task
        self._writer = self._task = None
        if task is not None and task is not _current_task():
            task.cancel()
        if writer is not None:
            self._closing = writer
            try:
                writer.close()
            except Exception:  # the loop may be closing
                pass

    async def wait_closed(self) -> None:
        writer, self._closing = self._closing, None
        if writer is not None:
            try:
                async with asyncio.timeout(1.0):
                    await writer.wait_closed()
            except Exception:  # reset by the peer, or slow (TimeoutError): it is closed
                pass
