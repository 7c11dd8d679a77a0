"""Generic hand-written asyncio Modbus TCP server (MBAP framing) with fault injection.

Deliberately independent of pymodbus so it can catch client bugs. One DataModel per
listening port, answering its configured unit id and 255 (the server itself).

Faults can be switched on a running server: assign a new FaultConfig to ``server.faults``
(or call ``set_faults``, which also re-seeds the random generator); it applies from the
next request on, also to connections already open. ``restart()`` stops listening, drops
every connection and listens again on the same port. Assigning ``faults`` from another
thread than the server's loop is safe (one reference swap); ``restart`` must run on the
server's loop (``asyncio.run_coroutine_threadsafe``).
"""

from __future__ import annotations

import asyncio
import logging
import random
import struct
from dataclasses import dataclass, fields
from typing import Any, Mapping

from simulators.common import Lifecycle
from simulators.modbus.model import (
    DataModel,
    ExceptionCode,
    ModbusError,
    RegisterBank,
    Table,
)
from simulators.modbus.pdu import READ_FUNCTIONS, exception_pdu, handle_pdu

__all__ = [
    "DataModel",
    "ExceptionCode",
    "FAULT_MODES",
    "FaultConfig",
    "MBAP_HEADER",
    "MAX_MBAP_LENGTH",
    "ModbusError",
    "ModbusTcpServer",
    "RegisterBank",
    "Table",
]

logger = logging.getLogger(__name__)

# Modbus Messaging on TCP/IP: 0xFF addresses the server itself ("directly connected"),
# the unit id libmodbus and many TCP masters send by default.
DIRECT_UNIT = 0xFF
# transaction id, protocol id, length (unit id + PDU), unit id
MBAP_HEADER = struct.Struct(">HHHB")
# Anything longer cannot be a Modbus TCP ADU (260 bytes max); treat it as a desynchronised
# or hostile stream rather than trying to resync inside it.
MAX_MBAP_LENGTH = 260
_INJECTED_EXCEPTIONS = (ExceptionCode.SERVER_DEVICE_FAILURE, ExceptionCode.SERVER_DEVICE_BUSY)


# What the server does to each answer (see FaultConfig.mode).
FAULT_MODES = frozenset({
    "none",
    "delay",  # only delay_ms; a name of its own so a fault file can say what it means
    "short_reply",
    "short_adu",
    "wrong_tid",
    "wrong_unit",
    "exception",
    "dribble",
    "close_mid_reply",
})
_EXCEPTION_CODES = frozenset(int(c) for c in ExceptionCode)


@dataclass(frozen=True)
class FaultConfig:
    """Fault-injection switches; the defaults inject nothing.

    drop_every: close the connection instead of answering every N-th request (per server).
    delay_ms: wait this long before answering each request (non-blocking).
    exception_rate: probability of answering a read with exception 04 or 06.
    seed: seed of the random generator driving exception_rate.
    mode: how every answer is mangled:
      none             answer correctly;
      delay            answer correctly after delay_ms (delay_ms applies in any mode);
      short_reply      the PDU cut to half its length, the MBAP length matching the cut;
      short_adu        the MBAP length of the full reply, but only half the ADU sent (the
                       rest never comes; the connection stays open);
      wrong_tid        transaction id of the request + 1;
      wrong_unit       unit id of the request + 1;
      exception        every read answered with exception_code;
      dribble          the reply sent one byte at a time, dribble_ms between bytes;
      close_mid_reply  half the reply sent, then the connection closed.
    exception_code: the code of mode "exception" (1, 2, 3, 4, 6 or 11).
    dribble_ms: the pause between bytes of mode "dribble".
    """

    drop_every: int = 0
    delay_ms: float = 0.0
    exception_rate: float = 0.0
    seed: int = 0
    mode: str = "none"
    exception_code: int = int(ExceptionCode.SERVER_DEVICE_FAILURE)
    dribble_ms: float = 1.0

    def __post_init__(self) -> None:
        if self.drop_every < 0:
            raise ValueError("drop_every must be >= 0")
        if self.delay_ms < 0:
            raise ValueError("delay_ms must be >= 0")
        if not 0.0 <= self.exception_rate <= 1.0:
            raise ValueError("exception_rate must be within 0..1")
        if self.mode not in FAULT_MODES:
            raise ValueError(f"mode must be one of {', '.join(sorted(FAULT_MODES))}")
        if self.exception_code not in _EXCEPTION_CODES:
            raise ValueError(
                f"exception_code must be one of {', '.join(map(str, sorted(_EXCEPTION_CODES)))}"
            )
        if self.dribble_ms < 0:
            raise ValueError("dribble_ms must be >= 0")

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> FaultConfig:
        """A FaultConfig from a JSON object of its fields ("code" standing for
        exception_code); ValueError for unknown fields or bad values."""
        known = {f.name for f in fields(cls)}
        values = dict(data)
        if "code" in values:
            values["exception_code"] = values.pop("code")
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"unknown fault fields: {', '.join(sorted(unknown))}")
        try:
            return cls(**values)
        except TypeError as exc:
            raise ValueError(str(exc)) from None


class ModbusTcpServer(Lifecycle):
    """Serve one DataModel over Modbus TCP on host:port for a single unit id."""

    def __init__(
        self,
        model: DataModel,
        *,
        host: str = "127.0.0.1",
        port: int = 502,
        unit_id: int = 1,
        faults: FaultConfig | None = None,
    ) -> None:
        if not 0 <= unit_id <= 255:
            raise ValueError("unit_id must be within 0..255")
        self.model = model
        self.unit_id = unit_id
        self.faults = faults or FaultConfig()
        self._host = host
        self._port = port
        self._rng = random.Random(self.faults.seed)
        self._request_count = 0
        self._server: asyncio.Server | None = None
        # Tracked so stop() can end live connections: in 3.11 Server.close() leaves them open.
        self._clients: dict[asyncio.Task[None], asyncio.StreamWriter] = {}

    @property
    def host(self) -> str:
        """Address the server was asked to bind."""
        return self._host

    @property
    def port(self) -> int:
        """Actually bound port (resolves port 0 once started)."""
        return self._port

    def set_faults(self, faults: FaultConfig) -> None:
        """Switch fault injection from the next request on; re-seeds the generator."""
        self._rng = random.Random(faults.seed)
        self.faults = faults

    async def restart(self, down_seconds: float = 0.0) -> None:
        """Stop listening and drop every connection, stay down for `down_seconds`, then
        listen again on the same port (as a device power-cycling)."""
        await self.stop()
        await asyncio.sleep(down_seconds)
        await self.start()

    @property
    def request_count(self) -> int:
        """Complete requests received so far, over all connections."""
        return self._request_count

    async def start(self) -> None:
        """Bind and start accepting connections."""
        if self._server is not None:
            raise RuntimeError("server already started")
        self._server = await asyncio.start_server(self._serve_client, self._host, self._port)
        self._port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Stop listening and close every client connection."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        tasks = list(self._clients)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _serve_client(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._clients[task] = writer
        peer = writer.get_extra_info("peername")
        try:
            await self._serve_frames(reader, writer, peer)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # peer went away mid-frame: nothing to answer
        except asyncio.CancelledError:
            # Cancelled by stop() (or loop shutdown). Finishing normally instead of
            # re-raising: on 3.11 asyncio's stream callback calls task.exception() on a
            # cancelled handler task and logs a spurious traceback per connection.
            pass
        finally:
            self._clients.pop(task, None)
            # abort, not close: a dropped/rejected connection must not flush anything more
            writer.transport.abort()

    async def _serve_frames(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        peer: object,
    ) -> None:
        # readexactly buffers partial frames and leaves pipelined frames for the next loop.
        while True:
            try:
                header = await reader.readexactly(MBAP_HEADER.size)
            except asyncio.IncompleteReadError as exc:
                if exc.partial:
                    logger.debug("%s: connection closed mid-header", peer)
                return
            transaction_id, protocol_id, length, unit_id = MBAP_HEADER.unpack(header)
            if protocol_id != 0 or length < 2 or length > MAX_MBAP_LENGTH:
                logger.warning(
                    "%s: bad MBAP header (protocol %d, length %d), closing",
                    peer, protocol_id, length,
                )
                return
            pdu = await reader.readexactly(length - 1)
            faults = self.faults  # one switch per request, even if it changes mid-answer
            response = await self._answer(unit_id, pdu, faults)
            if response is None:
                logger.info("%s: fault injection dropping connection", peer)
                return
            if not await self._send(writer, transaction_id, unit_id, response, faults):
                logger.info("%s: fault injection closing mid-reply", peer)
                return

    async def _send(
        self,
        writer: asyncio.StreamWriter,
        transaction_id: int,
        unit_id: int,
        response: bytes,
        faults: FaultConfig,
    ) -> bool:
        """Frame and send one answer as `faults` says; False to close the connection."""
        mode = faults.mode
        if mode == "wrong_tid":
            transaction_id = (transaction_id + 1) & 0xFFFF
        elif mode == "wrong_unit":
            unit_id = (unit_id + 1) & 0xFF
        elif mode == "short_reply":
            # Keeps at least the function code so the frame is still a Modbus frame, just
            # one whose data is shorter than its own byte count says.
            response = response[: max(1, len(response) // 2)]
        adu = MBAP_HEADER.pack(transaction_id, 0, len(response) + 1, unit_id) + response
        if mode in ("short_adu", "close_mid_reply"):
            writer.write(adu[: len(adu) // 2])
            await writer.drain()
            return mode == "short_adu"
        if mode == "dribble":
            for i in range(len(adu)):
                writer.write(adu[i : i + 1])
                await writer.drain()
                await asyncio.sleep(faults.dribble_ms / 1000.0)
            return True
        writer.write(adu)
        await writer.drain()
        return True

    async def _answer(self, unit_id: int, pdu: bytes, faults: FaultConfig) -> bytes | None:
        """Response PDU for one request, or None to drop the connection."""
        self._request_count += 1
        if faults.drop_every and self._request_count % faults.drop_every == 0:
            return None
        if faults.delay_ms > 0:
            await asyncio.sleep(faults.delay_ms / 1000.0)
        function = pdu[0]
        if unit_id != self.unit_id and unit_id != DIRECT_UNIT:
            return exception_pdu(function, ExceptionCode.GATEWAY_TARGET_FAILED)
        if faults.mode == "exception" and function in READ_FUNCTIONS:
            return exception_pdu(function, ExceptionCode(faults.exception_code))
        if (
            faults.exception_rate > 0.0
            and function in READ_FUNCTIONS
            and self._rng.random() < faults.exception_rate
        ):
            return exception_pdu(function, self._rng.choice(_INJECTED_EXCEPTIONS))
        return handle_pdu(self.model, pdu)
