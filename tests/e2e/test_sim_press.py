"""Tests of the hand-written Modbus TCP server and the stamping-press simulator.

The client here is a deliberately tiny raw-socket implementation (no pymodbus), and
multi-register values are decoded independently of simulators.modbus.word_order.
"""

from __future__ import annotations

import asyncio
import math
import signal
import socket
import struct
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from simulators.modbus.model import DataModel, RegisterBank, Table
from simulators.modbus.press import PressDevice, build_image
from simulators.modbus.press_physics import (
    ALARM_DIE_PROTECTION,
    ALARM_LUBE_PRESSURE_LOW,
    PressConfig,
    PressPhysics,
    PressState,
    slide_position_mm,
    stroke_peaks,
)
from simulators.modbus.tcp_server import FaultConfig, ModbusTcpServer

REPO_ROOT = Path(__file__).resolve().parents[2]
IO_TIMEOUT = 5.0


# --------------------------------------------------------------------------- client


class RawClient:
    """Minimal Modbus TCP client: frames requests, reads whole response ADUs."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self._tid = 0x1200

    @classmethod
    async def connect(cls, port: int) -> RawClient:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    @staticmethod
    def frame(tid: int, unit: int, pdu: bytes, protocol: int = 0) -> bytes:
        return struct.pack(">HHHB", tid, protocol, len(pdu) + 1, unit) + pdu

    async def send_raw(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def recv(self) -> tuple[int, int, int, bytes]:
        """(transaction id, protocol id, unit id, pdu) of the next response."""
        header = await asyncio.wait_for(self.reader.readexactly(7), IO_TIMEOUT)
        tid, protocol, length, unit = struct.unpack(">HHHB", header)
        pdu = await asyncio.wait_for(self.reader.readexactly(length - 1), IO_TIMEOUT)
        return tid, protocol, unit, pdu

    async def request(self, pdu: bytes, unit: int = 1) -> bytes:
        self._tid = (self._tid + 1) & 0xFFFF
        await self.send_raw(self.frame(self._tid, unit, pdu))
        tid, protocol, resp_unit, resp = await self.recv()
        assert (tid, protocol, resp_unit) == (self._tid, 0, unit)
        return resp

    async def read_registers(self, address: int, count: int, function: int = 3) -> list[int]:
        resp = await self.request(struct.pack(">BHH", function, address, count))
        assert resp[0] == function, f"exception {resp.hex()}"
        assert resp[1] == 2 * count
        return list(struct.unpack(f">{count}H", resp[2:]))

    async def read_bits(self, address: int, count: int, function: int = 1) -> list[bool]:
        resp = await self.request(struct.pack(">BHH", function, address, count))
        assert resp[0] == function, f"exception {resp.hex()}"
        assert resp[1] == (count + 7) // 8 == len(resp) - 2
        return [bool(resp[2 + i // 8] >> (i % 8) & 1) for i in range(count)]

    async def at_eof(self) -> bool:
        """True if the server closed the connection (without sending anything more)."""
        try:
            data = await asyncio.wait_for(self.reader.read(1), IO_TIMEOUT)
        except ConnectionResetError:
            return True
        return data == b""

    async def close(self) -> None:
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except ConnectionError:
            pass


@asynccontextmanager
async def serve(model: DataModel, **kwargs: object) -> AsyncIterator[ModbusTcpServer]:
    server = ModbusTcpServer(model, host="127.0.0.1", port=0, **kwargs)  # type: ignore[arg-type]
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@asynccontextmanager
async def client_for(server: ModbusTcpServer) -> AsyncIterator[RawClient]:
    client = await RawClient.connect(server.port)
    try:
        yield client
    finally:
        await client.close()


def to_big_endian(words: list[int], order: str) -> bytes:
    """Undo a word order: registers as read -> the value's big-endian bytes."""
    raw = b"".join(struct.pack(">H", w) for w in words)
    if order == "ABCD":
        return raw
    if order == "DCBA":
        return raw[::-1]
    pairs = [raw[i : i + 2] for i in range(0, len(raw), 2)]
    if order == "CDAB":
        return b"".join(pairs[::-1])
    if order == "BADC":
        return b"".join(p[::-1] for p in pairs)
    raise ValueError(order)


def f32(words: list[int], order: str = "ABCD") -> float:
    return struct.unpack(">f", to_big_endian(words, order))[0]


def exception_code(resp: bytes, function: int) -> int:
    assert resp[0] == function | 0x80, resp.hex()
    assert len(resp) == 2
    return resp[1]


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# --------------------------------------------------------------------------- fixtures


@pytest.fixture
async def press() -> AsyncIterator[ModbusTcpServer]:
    # High SPM so strokes complete within a test; long run phase so no alarm interferes.
    async with serve(PressDevice(PressConfig(spm=600, seed=3, alarm_every=3600)), unit_id=1) as s:
        yield s


@pytest.fixture
async def press_client(press: ModbusTcpServer) -> AsyncIterator[RawClient]:
    async with client_for(press) as client:
        yield client


# --------------------------------------------------------------------------- framing


async def test_port_zero_is_resolved(press: ModbusTcpServer) -> None:
    assert press.port > 0


async def test_mbap_echoes_transaction_and_unit(press_client: RawClient) -> None:
    for tid in (0, 1, 0xBEEF, 0xFFFF):
        await press_client.send_raw(RawClient.frame(tid, 1, struct.pack(">BHH", 3, 0, 2)))
        resp_tid, protocol, unit, pdu = await press_client.recv()
        assert (resp_tid, protocol, unit) == (tid, 0, 1)
        assert pdu[:2] == bytes((3, 4))


async def test_partial_frames_are_buffered(press_client: RawClient) -> None:
    frame = RawClient.frame(0x0101, 1, struct.pack(">BHH", 3, 40, 8))
    for i in range(len(frame)):
        await press_client.send_raw(frame[i : i + 1])
        await asyncio.sleep(0.005)
    tid, _, _, pdu = await press_client.recv()
    assert tid == 0x0101
    assert pdu[2:12] == b"DIE-4711-B"


async def test_two_requests_in_one_write(press_client: RawClient) -> None:
    first = RawClient.frame(7, 1, struct.pack(">BHH", 3, 1, 1))
    second = RawClient.frame(8, 1, struct.pack(">BHH", 4, 2, 1))
    # plus half of a third frame, completed later
    third = RawClient.frame(9, 1, struct.pack(">BHH", 1, 0, 2))
    await press_client.send_raw(first + second + third[:5])
    tid1, _, _, pdu1 = await press_client.recv()
    tid2, _, _, pdu2 = await press_client.recv()
    assert (tid1, pdu1) == (7, bytes((3, 2, 0, 3)))  # mode: continuous
    assert tid2 == 8 and pdu2[:2] == bytes((4, 2))
    await press_client.send_raw(third[5:])
    tid3, _, _, pdu3 = await press_client.recv()
    assert (tid3, pdu3) == (9, bytes((1, 1, 0b11)))


async def test_bad_protocol_id_closes(press_client: RawClient) -> None:
    await press_client.send_raw(RawClient.frame(1, 1, struct.pack(">BHH", 3, 0, 1), protocol=1))
    assert await press_client.at_eof()


async def test_absurd_length_closes(press_client: RawClient) -> None:
    await press_client.send_raw(struct.pack(">HHHB", 1, 0, 1000, 1) + b"\x03")
    assert await press_client.at_eof()


# --------------------------------------------------------------------------- function codes


async def test_read_coils_and_discrete_inputs(press_client: RawClient) -> None:
    coils = await press_client.read_bits(0, 8, function=1)
    assert coils == [True, True] + [False] * 6
    inputs = await press_client.read_bits(0, 5, function=2)
    motor, clutch, curtain, _tdc, alarm = inputs
    assert motor and clutch and curtain and not alarm


async def test_read_holding_and_input_registers(press_client: RawClient) -> None:
    assert len(await press_client.read_registers(0, 64, function=3)) == 64
    assert len(await press_client.read_registers(0, 8, function=4)) == 8
    assert (await press_client.read_registers(60, 4))[:] == [0, 0, 0, 0]


async def test_write_single_and_multiple_coils(press_client: RawClient) -> None:
    lube_before = (await press_client.read_registers(33, 1))[0]
    assert 300 <= lube_before <= 400
    request = struct.pack(">BHH", 5, 0, 0x0000)
    assert await press_client.request(request) == request  # FC5 echoes the request
    assert (await press_client.read_bits(0, 2)) == [False, True]
    assert (await press_client.read_registers(33, 1))[0] < 100  # pump off: pressure collapses
    status = (await press_client.read_registers(35, 1))[0]
    assert not status & (1 << 3)  # lube not ok

    resp = await press_client.request(struct.pack(">BHHBB", 15, 0, 2, 1, 0b01))
    assert resp == struct.pack(">BHH", 15, 0, 2)
    assert (await press_client.read_bits(0, 2)) == [True, False]
    # read-only / invalid value
    assert exception_code(await press_client.request(struct.pack(">BHH", 5, 5, 0xFF00)), 5) == 2
    assert exception_code(await press_client.request(struct.pack(">BHH", 5, 0, 0x1234)), 5) == 3


async def test_press_holding_registers_are_read_only(press_client: RawClient) -> None:
    assert exception_code(await press_client.request(struct.pack(">BHH", 6, 0, 1)), 6) == 2
    resp = await press_client.request(struct.pack(">BHHBHH", 16, 56, 2, 4, 1, 2))
    assert exception_code(resp, 16) == 2


async def test_register_bank_writes() -> None:
    bank = RegisterBank(coils=16, discrete_inputs=4, holding_registers=10, input_registers=2)
    bank.set_registers(Table.INPUT_REGISTERS, 0, [0xABCD, 7])
    bank.set_bits(Table.DISCRETE_INPUTS, 1, [True])
    async with serve(bank, unit_id=17) as server, client_for(server) as client:
        req6 = struct.pack(">BHH", 6, 3, 0xBEEF)
        assert await client.request(req6, unit=17) == req6
        req16 = struct.pack(">BHHB3H", 16, 5, 3, 6, 1, 2, 0xFFFF)
        assert await client.request(req16, unit=17) == struct.pack(">BHH", 16, 5, 3)
        resp = await client.request(struct.pack(">BHH", 3, 0, 10), unit=17)
        assert struct.unpack(">10H", resp[2:]) == (0, 0, 0, 0xBEEF, 0, 1, 2, 0xFFFF, 0, 0)
        resp = await client.request(struct.pack(">BHH", 4, 0, 2), unit=17)
        assert resp == bytes((4, 4, 0xAB, 0xCD, 0, 7))
        resp = await client.request(struct.pack(">BHH", 2, 0, 4), unit=17)
        assert resp == bytes((2, 1, 0b0010))
        # FC15 over 10 coils spans two data bytes, LSB first
        req15 = struct.pack(">BHHB2B", 15, 3, 10, 2, 0b1000_0001, 0b10)
        assert await client.request(req15, unit=17) == struct.pack(">BHH", 15, 3, 10)
        resp = await client.request(struct.pack(">BHH", 1, 0, 16), unit=17)
        assert resp == bytes((1, 2, 0b0000_1000, 0b0001_0100))
        # write past the end of the bank
        req = struct.pack(">BHHB2H", 16, 9, 2, 4, 1, 2)
        assert exception_code(await client.request(req, unit=17), 16) == 2


# --------------------------------------------------------------------------- exceptions


async def test_exception_illegal_function(press_client: RawClient) -> None:
    for function in (0x07, 0x2B, 0x11, 0x7F):
        resp = await press_client.request(bytes((function, 0, 0, 0, 1)))
        assert exception_code(resp, function) == 1


async def test_exception_illegal_data_address(press_client: RawClient) -> None:
    cases = [(3, 64, 1), (3, 60, 5), (4, 8, 1), (4, 0, 9), (1, 8, 1), (1, 0, 9), (2, 7, 2),
             (3, 0xFFFF, 2)]
    for function, address, count in cases:
        resp = await press_client.request(struct.pack(">BHH", function, address, count))
        assert exception_code(resp, function) == 2, (function, address, count)


async def test_exception_illegal_data_value(press_client: RawClient) -> None:
    cases = [
        struct.pack(">BHH", 3, 0, 0),
        struct.pack(">BHH", 3, 0, 126),
        struct.pack(">BHH", 4, 0, 0),
        struct.pack(">BHH", 1, 0, 0),
        struct.pack(">BHH", 2, 0, 2001),
        struct.pack(">BHHBH", 16, 0, 1, 3, 5),  # byte count says 3 for one register
        struct.pack(">BHHB2H", 16, 0, 2, 2, 1, 2),  # byte count too small for data
        struct.pack(">BHHBB", 15, 0, 9, 1, 0xFF),  # 9 coils need 2 bytes
        struct.pack(">BH", 3, 0),  # truncated PDU
    ]
    for pdu in cases:
        assert exception_code(await press_client.request(pdu), pdu[0]) == 3, pdu.hex()


async def test_exception_unknown_unit_id(press_client: RawClient) -> None:
    resp = await press_client.request(struct.pack(">BHH", 3, 0, 1), unit=9)
    assert exception_code(resp, 3) == 0x0B
    resp = await press_client.request(struct.pack(">BHH", 3, 0, 1), unit=0)
    assert exception_code(resp, 3) == 0x0B  # 0 is a serial line's broadcast, not a TCP unit


async def test_unit_255_is_the_server_itself(press_client: RawClient) -> None:
    """Modbus on TCP: unit 0xFF addresses the server directly (libmodbus's default)."""
    resp = await press_client.request(struct.pack(">BHH", 3, 0, 4), unit=255)
    assert resp[0] == 3 and resp[1] == 8  # a normal answer: 4 registers
    direct = resp[2:]
    resp = await press_client.request(struct.pack(">BHH", 3, 0, 4))
    assert len(direct) == len(resp[2:]) == 8
    # the connection stays usable for the right unit
    assert len(await press_client.read_registers(0, 1)) == 1


# --------------------------------------------------------------------------- register map


async def test_register_map_decodes_plausibly(press_client: RawClient) -> None:
    hr = await press_client.read_registers(0, 64)
    assert hr[0] == 1  # running
    assert hr[1] == 3  # continuous
    assert hr[2] == 0  # no alarm
    assert hr[3] == 6000  # 600.0 SPM
    counter = hr[4] << 16 | hr[5]
    assert 2_345_678 <= counter < 2_345_678 + 100
    angle = f32(hr[6:8])
    assert 0.0 <= angle < 360.0
    slide = f32(hr[8:10])
    assert 0.0 <= slide <= 120.0
    assert slide == pytest.approx(slide_position_mm(angle), abs=0.5)
    for ch in range(4):
        assert -200.0 < f32(hr[10 + 2 * ch : 12 + 2 * ch]) < 450.0
    peaks = [f32(hr[20 + 2 * ch : 22 + 2 * ch], "CDAB") for ch in range(4)]
    assert all(300.0 < p < 450.0 for p in peaks), peaks
    # words really are swapped: read as ABCD the same registers are not a sane load
    assert not all(300.0 < f32(hr[20 + 2 * ch : 22 + 2 * ch]) < 450.0 for ch in range(4))
    assert f32(hr[28:30], "CDAB") == pytest.approx(sum(peaks), rel=1e-5)
    assert struct.unpack(">i", to_big_endian(hr[30:32], "ABCD"))[0] == 35000
    assert 150 <= hr[32] <= 650  # 15..65 A
    assert 300 <= hr[33] <= 400  # ~3.5 bar
    reverse = struct.unpack(">h", struct.pack(">H", hr[34]))[0]
    assert -0.13 * sum(peaks) * 10 < reverse < -0.07 * sum(peaks) * 10
    assert hr[35] == 0b10_1111  # motor, clutch, brake, lube ok, light curtain
    op_seconds = struct.unpack(">Q", to_big_endian(hr[36:40], "ABCD"))[0]
    assert 1_234_567 <= op_seconds < 1_234_567 + 60
    assert to_big_endian(hr[40:48], "ABCD") == b"DIE-4711-B\0\0\0\0\0\0"
    energy = struct.unpack(">d", to_big_endian(hr[48:52], "ABCD"))[0]
    assert 1_000.0 < energy < 1_000_000.0
    parts = struct.unpack(">I", to_big_endian(hr[52:54], "DCBA"))[0]
    assert parts == counter - 2_345_678
    flywheel = f32(hr[54:56], "BADC")
    assert 1400.0 < flywheel < 1460.0
    assert hr[56:64] == [0] * 8

    ir = await press_client.read_registers(0, 8, function=4)
    assert 340 <= ir[0] <= 490  # oil 34..49 C
    assert 350 <= ir[1] <= 700
    assert 590 <= ir[2] <= 610
    assert ir[3:] == [0] * 5


async def test_stroke_counter_increases(press_client: RawClient) -> None:
    async def counter() -> tuple[int, int]:
        hr = await press_client.read_registers(4, 50)
        parts = struct.unpack(">I", to_big_endian(hr[48:50], "DCBA"))[0]
        return hr[0] << 16 | hr[1], parts

    first, parts_first = await counter()
    await asyncio.sleep(0.35)  # 600 SPM = 10 strokes/s
    second, parts_second = await counter()
    assert second - first >= 2
    assert parts_second - parts_first == second - first


# --------------------------------------------------------------------------- physics (fake clock)


def test_state_cycle_and_alarm_codes() -> None:
    clock = FakeClock()
    device = PressDevice(PressConfig(spm=60, seed=1, alarm_every=10), clock=clock)
    physics = device.physics
    assert physics.run_duration == 10.0
    samples: dict[float, tuple[PressState, int, int]] = {}
    for t in (0.0, 5.25, 9.9, 10.5, 19.9, 20.5, 24.9, 25.5, 36.0, 46.0, 55.5):
        clock.now = 1000.0 + t
        snap = device.snapshot()
        samples[t] = (snap.state, snap.alarm_code, snap.strokes)
        if snap.state != PressState.RUNNING:
            assert snap.crank_angle == 0.0 and snap.tonnage == (0.0,) * 4
            assert snap.motor_current == pytest.approx(20.0, abs=1.0)
            assert snap.stroke_rate == 0.0
    assert samples[0.0] == (PressState.RUNNING, 0, 0)
    assert samples[5.25] == (PressState.RUNNING, 0, 5)
    assert samples[9.9] == (PressState.RUNNING, 0, 9)
    assert samples[10.5] == (PressState.ALARM, ALARM_DIE_PROTECTION, 10)
    assert samples[19.9] == (PressState.ALARM, ALARM_DIE_PROTECTION, 10)
    assert samples[20.5] == (PressState.STOPPED, 0, 10)
    assert samples[24.9] == (PressState.STOPPED, 0, 10)
    assert samples[25.5] == (PressState.RUNNING, 0, 10)
    assert samples[36.0] == (PressState.ALARM, ALARM_LUBE_PRESSURE_LOW, 20)
    assert samples[46.0] == (PressState.STOPPED, 0, 20)
    assert samples[55.5] == (PressState.RUNNING, 0, 25)

    clock.now = 1000.0 + 36.0  # lube alarm: pressure low, status/di reflect it
    image = build_image(device.snapshot())
    assert image.holding[0] == 2 and image.holding[2] == 205
    assert 100 <= image.holding[33] <= 140
    assert image.discrete[4] and not image.discrete[1]
    clock.now = 1000.0 + 46.0
    image = build_image(device.snapshot())
    assert f32(list(image.holding[54:56]), "BADC") == 0.0
    assert image.holding[3] == 0


def test_crank_slide_and_tonnage_shape() -> None:
    physics = PressPhysics(PressConfig(spm=60, seed=5, alarm_every=3600))
    assert slide_position_mm(0.0) == pytest.approx(0.0, abs=1e-9)
    assert slide_position_mm(180.0) == pytest.approx(120.0)
    assert slide_position_mm(90.0) == pytest.approx(60 + 600 - math.sqrt(600**2 - 60**2))

    at = {deg: physics.snapshot(2.0 + deg / 360.0) for deg in (90, 165, 172, 186, 270)}
    assert at[90].crank_angle == pytest.approx(90.0)
    assert at[90].tonnage == (0.0,) * 4 and at[270].tonnage == (0.0,) * 4
    peaks = physics.peaks(at[172].stroke_counter + 1)
    assert at[172].tonnage == pytest.approx(peaks.channels)
    assert all(0 < f < p for f, p in zip(at[165].tonnage, peaks.channels))
    assert sum(at[186].tonnage) == pytest.approx(peaks.reverse)
    assert at[172].motor_current > 50.0 > 25.0 > at[90].motor_current
    # when that stroke completes it becomes the last stroke
    assert physics.snapshot(3.01).last_stroke == peaks


def test_stroke_peaks_are_deterministic() -> None:
    a = stroke_peaks(7, 2_345_700)
    assert a == stroke_peaks(7, 2_345_700)
    assert a != stroke_peaks(8, 2_345_700)
    assert a != stroke_peaks(7, 2_345_701)
    for peak, factor in zip(a.channels, (1.00, 0.95, 1.05, 0.90)):
        assert peak == pytest.approx(400.0 * factor, rel=0.021)
    assert a.reverse == pytest.approx(-0.10 * a.total, rel=0.11)


def test_image_is_cached_briefly() -> None:
    clock = FakeClock()
    device = PressDevice(PressConfig(spm=60), clock=clock)
    first = device.image()
    clock.now += 0.004
    assert device.image() is first
    clock.now += 0.002
    assert device.image() is not first


def test_slow_warmup_and_operating_seconds() -> None:
    clock = FakeClock()
    device = PressDevice(PressConfig(spm=30, alarm_every=300), clock=clock)
    start = build_image(device.snapshot())
    clock.now += 7200.0
    later = build_image(device.snapshot())
    assert 345 <= start.inputs[0] <= 355
    assert 470 <= later.inputs[0] <= 480
    seconds = struct.unpack(">Q", to_big_endian(list(later.holding[36:40]), "ABCD"))[0]
    assert seconds == 1_234_567 + 7200
    energy = [
        struct.unpack(">d", to_big_endian(list(img.holding[48:52]), "ABCD"))[0]
        for img in (start, later)
    ]
    # ~20 A at 400 V for 2 h: roughly 20-30 kWh
    assert 15.0 < energy[1] - energy[0] < 35.0


# --------------------------------------------------------------------------- faults


async def test_drop_every_closes_on_schedule() -> None:
    device = PressDevice(PressConfig(spm=60))
    async with serve(device, faults=FaultConfig(drop_every=3)) as server:
        async with client_for(server) as client:
            await client.read_registers(0, 1)
            await client.read_registers(0, 1)
            await client.send_raw(RawClient.frame(3, 1, struct.pack(">BHH", 3, 0, 1)))
            assert await client.at_eof()
        # counting is per server, across connections
        async with client_for(server) as client:
            await client.read_registers(0, 1)
            await client.read_registers(0, 1)
            await client.send_raw(RawClient.frame(6, 1, struct.pack(">BHH", 3, 0, 1)))
            assert await client.at_eof()
        assert server.request_count == 6


async def test_delay_does_not_block_other_connections() -> None:
    delay = 0.3
    device = PressDevice(PressConfig(spm=60))
    async with serve(device, faults=FaultConfig(delay_ms=delay * 1000)) as server:
        clients = [await RawClient.connect(server.port) for _ in range(5)]
        try:
            async def timed(client: RawClient) -> float:
                start = time.monotonic()
                await client.read_registers(0, 2)
                return time.monotonic() - start

            start = time.monotonic()
            durations = await asyncio.gather(*(timed(c) for c in clients))
            total = time.monotonic() - start
        finally:
            for c in clients:
                await c.close()
    assert all(d >= delay * 0.9 for d in durations), durations
    assert total < 5 * delay * 0.7, total  # served serially this would take 1.5 s


async def test_exception_rate_one_always_fails_reads() -> None:
    device = PressDevice(PressConfig(spm=60))
    async with serve(device, faults=FaultConfig(exception_rate=1.0, seed=4)) as server:
        async with client_for(server) as client:
            seen = set()
            for i in range(40):
                function = 1 + i % 4
                resp = await client.request(struct.pack(">BHH", function, 0, 1))
                seen.add(exception_code(resp, function))
            assert seen == {4, 6}
            # writes are not affected
            request = struct.pack(">BHH", 5, 1, 0xFF00)
            assert await client.request(request) == request


async def test_stop_closes_open_and_delayed_connections() -> None:
    server = ModbusTcpServer(PressDevice(), port=0, faults=FaultConfig(delay_ms=10_000))
    await server.start()
    idle = await RawClient.connect(server.port)
    busy = await RawClient.connect(server.port)
    await busy.send_raw(RawClient.frame(1, 1, struct.pack(">BHH", 3, 0, 1)))
    await asyncio.sleep(0.05)  # let the request reach its delay
    start = time.monotonic()
    await server.stop()
    assert time.monotonic() - start < 2.0
    assert await idle.at_eof() and await busy.at_eof()
    await idle.close()
    await busy.close()


# --------------------------------------------------------------------------- CLI


def _free_port_pair() -> int:
    """A port p such that p and p+1 are currently free on 127.0.0.1."""
    for _ in range(50):
        with socket.socket() as a:
            a.bind(("127.0.0.1", 0))
            port = a.getsockname()[1]
            if port >= 65535:
                continue
            with socket.socket() as b:
                try:
                    b.bind(("127.0.0.1", port + 1))
                except OSError:
                    continue
                return port
    raise RuntimeError("no free port pair")


async def test_cli_subprocess_serves_and_stops_on_sigterm() -> None:
    port = _free_port_pair()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "simulators.modbus.press",
        "--host", "127.0.0.1", "--port", str(port), "--count", "2", "--unit", "5",
        "--spm", "120", "--seed", "9",
        cwd=REPO_ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        lines = [
            (await asyncio.wait_for(proc.stdout.readline(), 10.0)).decode() for _ in range(2)
        ]
        assert lines == [
            f"press listening on 127.0.0.1:{port} unit 5\n",
            f"press listening on 127.0.0.1:{port + 1} unit 5\n",
        ]
        images = []
        for p in (port, port + 1):
            client = await RawClient.connect(p)
            try:
                resp = await client.request(struct.pack(">BHH", 3, 0, 30), unit=5)
                assert resp[:2] == bytes((3, 60))
                images.append(struct.unpack(">30H", resp[2:]))
            finally:
                await client.close()
        assert images[0][0] == images[1][0] == 1
        # different seeds give different last-stroke peaks
        assert images[0][20:30] != images[1][20:30]
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 10.0) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
