"""Hand-written Modbus RTU server on a serial link (pty, serial device or RTU-over-TCP).

Deliberately independent of pymodbus and of the agent's driver so it can catch their bugs.
Several unit ids share one line, as slaves on one RS-485 bus: ``units`` maps unit id ->
DataModel (simulators.modbus.model); the PDU is executed by simulators.modbus.pdu.

Framing (Modbus over serial line v1.02): ``unit (1) | PDU | CRC-16/Modbus (2, low byte
first)``; CRC polynomial 0xA001 (reflected 0x8005), initial value 0xFFFF, table-driven here.
A request ends

* as soon as a complete frame of a known function code is in the buffer and its CRC is valid
  (01-06, 08: 8 bytes; 07, 0B, 0C, 11: 4 bytes; 0F, 10: 9 + byte count; 16: 10 bytes;
  17: 13 + write byte count), or otherwise
* at the inter-frame silence: no byte for 3.5 character times (1.75 ms above 19200 baud)
  after the line end of the last byte received (the virtual line time of simulators.serial.port,
  because a pty delivers a whole frame instantly). The whole buffer is then one frame.

Handling of a frame:

* shorter than 4 bytes or wrong CRC: ignored, counted in ``stats.bad_crc``;
* unit 0 (broadcast): not executed, no reply (``stats.broadcasts``);
* unit not served, or in ``faults.dead_units``: ignored, no reply, as on RS-485
  (``stats.ignored``);
* otherwise the PDU is executed and the reply sent at ``request line end + turnaround +
  slow_ms``, paced at the baud rate. Exceptions as in simulators.modbus.pdu: 01 illegal function
  (anything but 01-06, 0F, 10), 02 illegal data address (outside the unit's map), 03 illegal
  data value (bad quantity/length).

Fault switches (``RtuFaults``, a frozen dataclass; assign ``server.faults`` to change them at
runtime, the reply counter keeps counting): ``noise`` probability that a reply is preceded by
1..8 random bytes followed by an inter-frame silence; ``drop_every`` N-th reply not sent;
``slow_ms`` extra delay before every reply; ``dead_units`` unit ids that stop answering;
``corrupt_every`` N-th reply with its CRC bytes inverted (XOR 0xFFFF); ``cut_every`` N-th
reply truncated to its first len//2 bytes (then silence). Replies are numbered 1, 2, 3, ... over
all units and connections; see simulators.serial.faults for the precedence (drop, then cut,
then corrupt). Dead/unknown units and bad frames are not replies and do not advance the counter.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from simulators.modbus.model import DataModel
from simulators.modbus.pdu import handle_pdu
from simulators.serial.faults import FaultAction, LineFaults
from simulators.serial.link import SerialLink
from simulators.serial.port import LinePort
from simulators.serial.simulator import SimulatorBase

logger = logging.getLogger("simulators.rtu")

MIN_FRAME = 4  # unit, function, CRC
MAX_FRAME = 256  # Modbus serial ADU limit
BROADCAST_UNIT = 0


def _crc_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


CRC_TABLE = _crc_table()


def crc16(data: bytes | bytearray | memoryview) -> int:
    """CRC-16/Modbus of `data` (send it low byte first)."""
    crc = 0xFFFF
    table = CRC_TABLE
    for byte in data:
        crc = (crc >> 8) ^ table[(crc ^ byte) & 0xFF]
    return crc


def crc_bytes(data: bytes | bytearray) -> bytes:
    """The two CRC bytes to append to `data` (low byte first)."""
    return crc16(data).to_bytes(2, "little")


def frame(unit: int, pdu: bytes) -> bytes:
    """A complete RTU ADU: unit, PDU, CRC."""
    body = bytes((unit,)) + pdu
    return body + crc_bytes(body)


def check_crc(adu: bytes | bytearray) -> bool:
    """True if the last two bytes are the CRC of the rest."""
    return len(adu) >= MIN_FRAME and crc16(adu[:-2]) == int.from_bytes(adu[-2:], "little")


_FIXED_REQUEST_LENGTH = {
    0x01: 8, 0x02: 8, 0x03: 8, 0x04: 8, 0x05: 8, 0x06: 8, 0x08: 8,
    0x07: 4, 0x0B: 4, 0x0C: 4, 0x11: 4, 0x16: 10,
}


def request_length(buf: bytes | bytearray) -> int | None:
    """Total ADU length of the request at the start of `buf`, if computable yet."""
    if len(buf) < 2:
        return None
    function = buf[1]
    fixed = _FIXED_REQUEST_LENGTH.get(function)
    if fixed is not None:
        return fixed
    if function in (0x0F, 0x10):
        return 9 + buf[6] if len(buf) >= 7 else None
    if function == 0x17:
        return 13 + buf[10] if len(buf) >= 11 else None
    return None


@dataclass(frozen=True)
class RtuFaults(LineFaults):
    """LineFaults plus units that stop answering."""

    dead_units: frozenset[int] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "dead_units", frozenset(self.dead_units))
        if any(not 0 <= u <= 247 for u in self.dead_units):
            raise ValueError("dead units must be within 0..247")


@dataclass
class RtuStats:
    """What the server saw and did."""

    frames: int = 0  # frames delimited (good or bad)
    bad_crc: int = 0
    requests: int = 0  # good-CRC frames
    broadcasts: int = 0
    ignored: int = 0  # unknown or dead unit
    replies: int = 0  # replies put on the line (including cut/corrupted ones)


class RtuServer(SimulatorBase[RtuFaults]):
    """Serve several units on one serial link."""

    def __init__(
        self,
        units: Mapping[int, DataModel],
        link: SerialLink,
        *,
        faults: RtuFaults | None = None,
    ) -> None:
        if link.settings.bytesize != 8:
            raise ValueError("Modbus RTU needs 8 data bits")
        for unit in units:
            if not 1 <= unit <= 247:
                raise ValueError(f"unit id {unit} outside 1..247")
        self.units: dict[int, DataModel] = dict(units)
        self.link = link
        self._use_faults(faults or RtuFaults())
        self.stats = RtuStats()

    async def _serve(self, port: LinePort) -> None:
        settings = port.settings
        buf = bytearray()
        while True:
            if buf:
                silence_at = port.rx_line_end + settings.interframe
                chunk = await port.receive(timeout=silence_at - time.monotonic())
                if chunk is None:  # the line went quiet: whatever we have is one frame
                    adu = bytes(buf)
                    buf.clear()
                    await self._handle(port, adu, port.rx_line_end)
                    continue
            else:
                chunk = await port.receive()
            assert chunk is not None
            buf += chunk
            # Fast path: a complete frame with a good CRC need not wait for the silence.
            while buf:
                n = request_length(buf)
                if n is None or len(buf) < n or not check_crc(buf[:n]):
                    break
                adu = bytes(buf[:n])
                del buf[:n]
                # Bytes behind the frame in the same chunk were still on the line.
                end = port.rx_line_end - settings.line_time(len(buf))
                await self._handle(port, adu, end)
            if len(buf) > 2 * MAX_FRAME:
                # No frame is this long: a stream of garbage; keep memory bounded.
                self.stats.frames += 1
                self.stats.bad_crc += 1
                buf.clear()

    async def _handle(self, port: LinePort, adu: bytes, line_end: float) -> None:
        self.stats.frames += 1
        if not check_crc(adu):
            self.stats.bad_crc += 1
            logger.debug("%s: bad frame %s", port.name, adu.hex())
            return
        self.stats.requests += 1
        unit, pdu = adu[0], adu[1:-2]
        faults = self._faults
        if unit == BROADCAST_UNIT:
            self.stats.broadcasts += 1
            return
        model = self.units.get(unit)
        if model is None or unit in faults.dead_units:
            self.stats.ignored += 1
            return
        response = handle_pdu(model, pdu)
        action = self._injector.next_action(faults)
        if action is FaultAction.DROP:
            return
        reply = bytearray(frame(unit, response))
        if action is FaultAction.CORRUPT:
            reply[-2] ^= 0xFF
            reply[-1] ^= 0xFF
        elif action is FaultAction.CUT:
            del reply[len(reply) // 2 :]
        start = line_end + port.settings.turnaround + faults.slow_ms / 1000.0
        garbage = self._injector.noise_burst(faults)
        if garbage:
            end = await port.send(garbage, start=start)
            start = end + port.settings.interframe
        self.stats.replies += 1
        await port.send(bytes(reply), start=start)
