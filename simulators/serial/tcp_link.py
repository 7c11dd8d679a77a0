"""Raw serial bytes on TCP: a server on 127.0.0.1 with no MBAP and no framing, the way a
serial-to-Ethernet converter in "TCP server" mode forwards a serial line. Each accepted
connection is an independent conversation with its own line timeline.
"""

from __future__ import annotations

import asyncio
import contextlib

from simulators.serial.line import LineSettings
from simulators.serial.link import READ_SIZE, SerialLink
from simulators.serial.port import LinkClosed, LinePort, PortHandler

MAX_TCP_BACKLOG = 64 * 1024


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
            # spurious traceback per connection (see simulators.modbus.tcp_server).
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
