"""The byte pipe under the serial simulators: a pty pair, a real serial device or a TCP socket,
with the timing of a real RS-232/RS-485 line.

``SerialLink`` is the common base of the transports; each delivers every conversation to a
handler coroutine as a ``simulators.serial.port.LinePort``:

* ``PtyLink`` and ``DeviceLink`` (``simulators.serial.fd_link``): a new pty pair, or an existing
  serial device opened with pyserial;
* ``TcpLink`` (``simulators.serial.tcp_link``): raw serial bytes on a TCP socket, one
  conversation per connection.

``simulators.serial.cli.open_link`` picks one of them.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import logging

from simulators.serial.line import LineSettings
from simulators.serial.port import LinkClosed, LinePort, PortHandler

logger = logging.getLogger("simulators.serial")

READ_SIZE = 4096


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
