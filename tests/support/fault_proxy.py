"""A loopback TCP fault proxy for tests: between the agent and the broker, or the agent and a
device simulator, it passes, delays, drops, black-holes, resets or throttles the traffic,
switchable at any moment, so network faults are injected without root.

It runs its own event loop in a daemon thread; the test drives it with plain calls.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import threading
from dataclasses import dataclass

from tests.support.harness import free_port

PASS, DELAY, DROP, BLACK_HOLE, RESET, THROTTLE = (
    "pass", "delay", "drop", "black_hole", "reset", "throttle")


@dataclass(frozen=True)
class Mode:
    kind: str = PASS
    value: float = 0.0  # seconds for delay, bytes per second for throttle


class FaultProxy:
    """127.0.0.1:<port> -> 127.0.0.1:<target>."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.port = free_port()
        self.mode = Mode()
        self.connections = 0  # accepted so far
        self._writers: set[asyncio.StreamWriter] = set()
        self._loop = asyncio.new_event_loop()
        started = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(started,), daemon=True)
        self._thread.start()
        if not started.wait(10):
            raise RuntimeError("fault proxy did not start")

    # -- switches ------------------------------------------------------------------------

    def pass_through(self) -> None:
        """Forward everything (the default)."""
        self._set(Mode())

    def delay(self, seconds: float) -> None:
        """Hold every chunk this long before forwarding it."""
        self._set(Mode(DELAY, seconds))

    def throttle(self, bytes_per_second: float) -> None:
        """Forward at most this many bytes per second each way."""
        self._set(Mode(THROTTLE, bytes_per_second))

    def black_hole(self) -> None:
        """Keep connections open (and accept new ones) but let nothing through, like a
        cable pulled behind a switch: the peers only find out by their own timeouts. As with
        TCP retransmitting, what was sent goes through once the mode changes (if the peers
        still wait for it)."""
        self._set(Mode(BLACK_HOLE))

    def drop(self) -> None:
        """Close every connection (FIN) and refuse new ones."""
        self._set(Mode(DROP))
        self._close_all(abort=False)

    def reset(self) -> None:
        """Abort every connection with RST and reset new ones."""
        self._set(Mode(RESET))
        self._close_all(abort=True)

    def close(self) -> None:
        """Stop the proxy and its connections."""
        self._set(Mode(DROP))
        self._close_all(abort=True)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    def _set(self, mode: Mode) -> None:
        self.mode = mode  # read by the pumps on their next chunk

    def _close_all(self, abort: bool) -> None:
        done = threading.Event()

        def close() -> None:
            for writer in list(self._writers):
                _close(writer, abort)
            self._writers.clear()
            done.set()
        self._loop.call_soon_threadsafe(close)
        done.wait(5)

    # -- the loop ------------------------------------------------------------------------

    def _run(self, started: threading.Event) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(
            asyncio.start_server(self._client, "127.0.0.1", self.port))
        started.set()
        try:
            self._loop.run_forever()
        finally:
            server.close()
            self._loop.close()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        mode = self.mode
        if mode.kind in (DROP, RESET):
            _close(writer, abort=mode.kind == RESET)
            return
        self._writers.add(writer)
        await self._while_black_hole()
        if self.mode.kind in (DROP, RESET):
            _close(writer, abort=self.mode.kind == RESET)
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)
        except OSError:
            _close(writer, abort=True)
            return
        self._writers.add(up_writer)
        await asyncio.gather(self._pump(reader, up_writer), self._pump(up_reader, writer))
        for w in (writer, up_writer):
            self._writers.discard(w)
            _close(w, abort=False)

    async def _while_black_hole(self) -> None:
        while self.mode.kind == BLACK_HOLE:
            await asyncio.sleep(0.02)

    async def _pump(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        try:
            while data := await src.read(65536):
                await self._while_black_hole()
                mode = self.mode
                if mode.kind in (DROP, RESET):
                    break
                if mode.kind == DELAY:
                    await asyncio.sleep(mode.value)
                if mode.kind == THROTTLE and mode.value > 0:
                    step = max(1, int(mode.value / 20))  # 20 slices a second
                    for i in range(0, len(data), step):
                        dst.write(data[i:i + step])
                        await dst.drain()
                        await asyncio.sleep(step / mode.value)
                    continue
                dst.write(data)
                await dst.drain()
        except (OSError, ConnectionError):
            pass
        finally:
            _close(dst, abort=False)


def _close(writer: asyncio.StreamWriter, abort: bool) -> None:
    sock = writer.get_extra_info("socket")
    if abort and sock is not None:
        try:  # SO_LINGER 0: the close sends RST instead of FIN
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
    try:
        writer.close()
    except (OSError, RuntimeError):
        pass
