"""Tests of the serial simulators themselves: Modbus RTU forging line, ASCII devices, the line.

The client side uses only the stdlib and pyserial: its own CRC (bitwise, not the simulator's
table), its own framing, its own checksum parsers. Simulators run in a background thread
(simulators.serial.simulator.in_thread) so the clients here can block.
"""

from __future__ import annotations

import ast
import os
import re
import select
import signal
import socket
import struct
import subprocess
import sys
import time
import tty
from collections.abc import Iterator
from pathlib import Path

import pytest
import serial

from simulators.modbus.forging import ForgingSimulator
from simulators.modbus.forging import main as forging_main
from simulators.modbus.forging_physics import (
    ALARM_BILLET_COLD,
    RANDOM_ALARMS,
    STROKES_AT_START,
    CycleState,
    ForgingLine,
    HeaterState,
)
from simulators.modbus.model import RegisterBank, Table
from simulators.modbus.rtu_server import RtuFaults, RtuServer, crc16, frame
from simulators.serial.ascii import (
    AsciiFaults,
    TemperatureController,
    TonnageMonitor,
    tonnage_stroke,
)
from simulators.serial.ascii import (
    main as ascii_main,
)
from simulators.serial.fd_link import DeviceLink, PtyLink
from simulators.serial.line import LineSettings
from simulators.serial.simulator import in_thread
from simulators.serial.tcp_link import TcpLink

REPO_ROOT = Path(__file__).resolve().parents[2]
FAST = LineSettings(baud=115200, parity="N")
QUIET = 0.25  # seconds of silence that count as "no reply" (>> any turnaround here)
RAM_LIMIT = 420.0  # mm, dies closed
SIM_FILES = ("serial/line", "serial/faults", "serial/port", "serial/link", "serial/fd_link",
             "serial/tcp_link", "serial/simulator", "serial/cli", "serial/ascii",
             "modbus/rtu_server", "modbus/forging", "modbus/forging_physics")


# --------------------------------------------------------------------------- client side


def ref_crc(data: bytes) -> int:
    """Bitwise CRC-16/Modbus, independent of the simulator's table."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


def adu(unit: int, pdu: bytes) -> bytes:
    body = bytes((unit,)) + pdu
    return body + struct.pack("<H", ref_crc(body))


def crc_ok(data: bytes) -> bool:
    return len(data) >= 4 and ref_crc(data[:-2]) == struct.unpack("<H", data[-2:])[0]


class Client:
    """Byte-level client over a pyserial port, a raw fd or a socket."""

    def __init__(self, *, ser: serial.Serial | None = None, fd: int | None = None,
                 sock: socket.socket | None = None) -> None:
        self.ser, self.fd, self.sock = ser, fd, sock

    def write(self, data: bytes) -> None:
        if self.ser is not None:
            self.ser.write(data)
            self.ser.flush()
        elif self.fd is not None:
            os.write(self.fd, data)
        else:
            assert self.sock is not None
            self.sock.sendall(data)

    def _read_some(self, n: int, timeout: float) -> bytes:
        if self.ser is not None:
            self.ser.timeout = timeout
            return self.ser.read(n)
        source = self.fd if self.fd is not None else self.sock
        assert source is not None
        ready, _, _ = select.select([source], [], [], timeout)
        if not ready:
            return b""
        if self.fd is not None:
            return os.read(self.fd, n)
        assert self.sock is not None
        return self.sock.recv(n)

    def read_exact(self, n: int, timeout: float = 3.0) -> bytes:
        """Up to n bytes; fewer only if `timeout` passes first."""
        deadline = time.monotonic() + timeout
        out = b""
        while len(out) < n:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            out += self._read_some(n - len(out), remaining)
        return out

    def read_until_silence(self, quiet: float = QUIET, limit: float = 3.0) -> bytes:
        out = b""
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            chunk = self._read_some(4096, quiet)
            if not chunk:
                break
            out += chunk
        return out

    def read_reply(self, timeout: float = 3.0) -> bytes:
        """One RTU reply, framed by its function code."""
        head = self.read_exact(2, timeout)
        if len(head) < 2:
            return head
        function = head[1]
        if function & 0x80:
            return head + self.read_exact(3)
        if function in (1, 2, 3, 4):
            count = self.read_exact(1)
            return head + count + self.read_exact(count[0] + 2) if count else head
        return head + self.read_exact(6)

    def request(self, unit: int, pdu: bytes) -> bytes:
        self.write(adu(unit, pdu))
        return self.read_reply()

    def read_registers(self, unit: int, address: int, count: int, function: int = 3) -> list[int]:
        reply = self.request(unit, struct.pack(">BHH", function, address, count))
        assert crc_ok(reply), reply.hex()
        assert reply[:3] == bytes((unit, function, 2 * count)), reply.hex()
        return list(struct.unpack(f">{count}H", reply[3:-2]))

    def silent(self, quiet: float = QUIET) -> bool:
        return self.read_until_silence(quiet) == b""


def f32(regs: list[int], i: int) -> float:
    return struct.unpack(">f", struct.pack(">HH", regs[i], regs[i + 1]))[0]


def u32(regs: list[int], i: int) -> int:
    return regs[i] << 16 | regs[i + 1]


def s16(value: int) -> int:
    return value - 0x10000 if value & 0x8000 else value


def open_serial(path: str, baud: int = 115200) -> serial.Serial:
    return serial.Serial(path, baudrate=baud, timeout=1.0)


# --------------------------------------------------------------------------- fixtures


@pytest.fixture
def forging() -> Iterator[tuple[ForgingSimulator, Client]]:
    sim = ForgingSimulator(PtyLink(FAST), seed=3, time_scale=20.0, extra_units=2)
    with in_thread(sim), open_serial(sim.address) as ser:
        yield sim, Client(ser=ser)


def bank() -> RegisterBank:
    b = RegisterBank(holding_registers=20, coils=8)
    b.set_registers(Table.HOLDING_REGISTERS, 0, list(range(100, 120)))
    return b


@pytest.fixture
def bank_server() -> Iterator[tuple[RtuServer, Client]]:
    server = RtuServer({1: bank(), 2: bank()}, PtyLink(FAST))
    with in_thread(server), open_serial(server.address) as ser:
        yield server, Client(ser=ser)


READ_1 = struct.pack(">BHH", 3, 0, 4)
REPLY_1 = adu(1, bytes((3, 8)) + struct.pack(">4H", 100, 101, 102, 103))


# --------------------------------------------------------------------------- RTU basics


def test_crc_matches_reference_vectors() -> None:
    assert crc16(b"123456789") == ref_crc(b"123456789") == 0x4B37
    assert frame(1, bytes.fromhex("030000000A")) == bytes.fromhex("01030000000AC5CD")
    for n in range(0, 300, 37):
        data = bytes((i * 7 + n) & 0xFF for i in range(n))
        assert crc16(data) == ref_crc(data)


def test_press_unit_register_map(forging: tuple[ForgingSimulator, Client]) -> None:
    _, client = forging
    hr = client.read_registers(1, 0, 18)
    assert hr[0] in {s.value for s in CycleState}
    assert hr[1] == 0 or hr[0] == CycleState.ALARM
    assert 0.0 <= f32(hr, 2) <= 400.0  # ram position mm
    assert u32(hr, 4) >= STROKES_AT_START
    assert 7000.0 < f32(hr, 6) < 25000.0  # last force kN (retained value before 1st blow)
    assert 60.0 < f32(hr, 8) < 110.0  # last energy kJ
    assert 140.0 < f32(hr, 10) < 215.0  # hydraulic bar
    assert 150.0 < s16(hr[12]) / 10 < 300.0  # die temperature
    assert 1050.0 < s16(hr[13]) / 10 < 1250.0  # billet temperature at last blow
    assert 0 <= hr[14] <= 600 and 0 <= hr[15] <= 3
    assert u32(hr, 16) >= 0
    assert hr[18:] == []
    # unlisted addresses inside the map read 0, beyond it exception 02
    assert client.read_registers(1, 18, 46) == [0] * 46
    reply = client.request(1, struct.pack(">BHH", 3, 60, 5))
    assert reply == adu(1, bytes((0x83, 2)))


def test_heater_and_scale_register_maps(forging: tuple[ForgingSimulator, Client]) -> None:
    _, client = forging
    h = client.read_registers(2, 100, 10)
    assert h[0] in {s.value for s in HeaterState} and h[1] == 0
    assert 1100.0 < f32(h, 2) < 1260.0  # exit temperature (latched)
    assert 40.0 < f32(h, 4) < 360.0  # kW
    assert 2700.0 < f32(h, 6) < 2960.0  # Hz
    assert u32(h, 8) >= 0
    assert client.request(2, struct.pack(">BHH", 3, 0, 2)) == adu(2, bytes((0x83, 2)))

    s = client.read_registers(3, 0, 8)
    weight = f32(s, 0)
    assert 2.38 < weight < 2.52
    assert abs(weight * 1000 - round(weight * 1000)) < 0.01  # 3 decimals
    assert s[2] & ~0b111 == 0 and s[3] == 0
    assert u32(s, 4) >= 0
    assert 0.0 <= f32(s, 6) < 4.0
    bits = client.request(3, struct.pack(">BHH", 2, 0, 3))
    assert crc_ok(bits) and bits[:3] == bytes((3, 2, 1))
    assert bits[3] & ~0b111 == 0  # stable, empty, out of tolerance
    assert client.request(3, struct.pack(">BHH", 1, 0, 1)) == adu(3, bytes((0x81, 2)))


def test_line_runs_billets_through_press(forging: tuple[ForgingSimulator, Client]) -> None:
    """At time scale 20 a billet is forged within ~1 s: states advance, counters grow."""
    sim, client = forging
    states, rams = set(), []
    first = client.read_registers(1, 0, 18)
    deadline = time.monotonic() + 2.5
    hr = first
    while time.monotonic() < deadline and not (u32(hr, 4) > u32(first, 4) and 3 in states):
        hr = client.read_registers(1, 0, 18)
        states.add(hr[0])
        rams.append(f32(hr, 2))
    assert CycleState.FORGING in states and CycleState.EJECTING in states
    assert u32(hr, 4) > u32(first, 4)
    assert max(rams) > 0.0
    assert client.read_registers(2, 108, 2) != [0, 0]  # billets heated
    assert sim.stats.bad_crc == 0 and sim.stats.replies >= len(rams)


def test_bench_units_change_every_100ms(forging: tuple[ForgingSimulator, Client]) -> None:
    _, client = forging
    a = client.read_registers(10, 0, 100)
    time.sleep(0.25)
    b = client.read_registers(10, 0, 100)
    c = client.read_registers(11, 0, 100)
    assert u32(b, 0) >= u32(a, 0) + 2
    tick = u32(b, 0)
    assert b[2:] == [(tick * i + 10) & 0xFFFF for i in range(2, 100)]
    assert c[2:] == [(u32(c, 0) * i + 11) & 0xFFFF for i in range(2, 100)]


def test_unknown_unit_bad_crc_and_dead_unit_are_silent(
    forging: tuple[ForgingSimulator, Client],
) -> None:
    sim, client = forging
    client.write(adu(4, READ_1))  # no such unit on the line
    assert client.silent()
    client.write(adu(12, READ_1))  # beyond --extra-units 2
    assert client.silent()
    bad = bytearray(adu(1, READ_1))
    bad[-1] ^= 0x01
    client.write(bytes(bad))
    assert client.silent()
    assert sim.stats.bad_crc == 1 and sim.stats.ignored == 2
    sim.faults = RtuFaults(dead_units=frozenset({2}))
    client.write(adu(2, struct.pack(">BHH", 3, 100, 2)))
    assert client.silent()
    assert len(client.read_registers(1, 0, 2)) == 2  # the others still answer
    sim.faults = RtuFaults()
    assert len(client.read_registers(2, 100, 2)) == 2


def test_exceptions_and_silence_framing(bank_server: tuple[RtuServer, Client]) -> None:
    server, client = bank_server
    assert client.request(1, struct.pack(">BHH", 3, 19, 2)) == adu(1, bytes((0x83, 2)))
    assert client.request(1, struct.pack(">BHH", 3, 0, 126)) == adu(1, bytes((0x83, 3)))
    # Unknown function code: no length rule, the frame ends at the 3.5-char silence.
    assert client.request(1, bytes((0x41, 0xAA, 0xBB, 0xCC))) == adu(1, bytes((0xC1, 1)))
    # A frame written in two pieces back to back is still one frame...
    whole = adu(1, READ_1)
    client.write(whole[:3])
    client.write(whole[3:])
    assert client.read_reply() == REPLY_1
    # ...but a pause far longer than 3.5 chars splits it into two bad frames.
    client.write(whole[:3])
    time.sleep(0.05)
    client.write(whole[3:])
    assert client.silent()
    assert server.stats.bad_crc == 2
    # writes work, and a pipelined pair is answered in order
    assert client.request(2, struct.pack(">BHH", 6, 5, 0xBEEF)) == adu(2, struct.pack(">BHH", 6, 5, 0xBEEF))
    client.write(adu(2, struct.pack(">BHH", 3, 5, 1)) + adu(1, struct.pack(">BHH", 3, 5, 1)))
    assert client.read_reply() == adu(2, bytes((3, 2, 0xBE, 0xEF)))
    assert client.read_reply() == adu(1, bytes((3, 2, 0, 105)))


# --------------------------------------------------------------------------- pacing


def test_pacing_reading_100_registers_at_9600_takes_the_line_time() -> None:
    settings = LineSettings(baud=9600, parity="N")
    sim = ForgingSimulator(PtyLink(settings), extra_units=1)
    with in_thread(sim), open_serial(sim.address, 9600) as ser:
        client = Client(ser=ser)
        client.read_registers(10, 0, 1)  # warm up
        request = adu(10, struct.pack(">BHH", 3, 0, 100))
        for _ in range(2):
            t0 = time.monotonic()
            client.write(request)
            reply = client.read_reply()
            elapsed = time.monotonic() - t0
            assert len(reply) == 205 and crc_ok(reply)
            # lower bound only: (8 + 205) bytes x 10 bits / 9600 baud
            assert elapsed >= (len(request) + len(reply)) * 10 / 9600


def test_line_settings_timing() -> None:
    s = LineSettings(baud=19200, parity="E")
    assert s.bits_per_char == 11 and s.char_time == pytest.approx(11 / 19200)
    assert s.turnaround == 0.001 and s.interframe == pytest.approx(3.5 * 11 / 19200)
    slow = LineSettings(baud=9600, parity="N", stopbits=2)
    assert slow.bits_per_char == 11 and slow.turnaround == pytest.approx(3.5 * 11 / 9600)
    assert LineSettings(baud=115200).interframe == 0.00175
    with pytest.raises(ValueError):
        LineSettings(parity="X")
    with pytest.raises(ValueError):
        RtuServer({1: bank()}, PtyLink(LineSettings(bytesize=7)))


# --------------------------------------------------------------------------- other transports


def test_rtu_over_tcp() -> None:
    sim = ForgingSimulator(TcpLink(0, FAST), seed=1, time_scale=5.0)
    with in_thread(sim):
        host, port = sim.address.split(":")
        assert host == "127.0.0.1" and int(port) > 0
        with socket.create_connection((host, int(port)), timeout=3) as sock:
            client = Client(sock=sock)
            s = client.read_registers(3, 0, 8)
            assert 2.38 < f32(s, 0) < 2.52
            client.write(adu(7, READ_1))
            assert client.silent()
            assert len(client.read_registers(1, 0, 18)) == 18


def test_rtu_on_existing_serial_device() -> None:
    """--serial DEVICE: the simulator opens a device path (here one end of our own pty)."""
    master, slave = os.openpty()
    tty.setraw(master)
    tty.setraw(slave)
    try:
        server = RtuServer({1: bank()}, DeviceLink(os.ttyname(slave), FAST))
        with in_thread(server):
            client = Client(fd=master)
            assert client.request(1, READ_1) == REPLY_1
            client.write(adu(9, READ_1))
            assert client.silent()
    finally:
        os.close(master)
        os.close(slave)


# --------------------------------------------------------------------------- RTU faults


def test_fault_drop_every(bank_server: tuple[RtuServer, Client]) -> None:
    server, client = bank_server
    server.faults = RtuFaults(drop_every=2)
    assert client.request(1, READ_1) == REPLY_1
    client.write(adu(1, READ_1))
    assert client.silent()
    assert client.request(1, READ_1) == REPLY_1
    assert server.fault_stats.dropped == 1


def test_fault_corrupt_every(bank_server: tuple[RtuServer, Client]) -> None:
    server, client = bank_server
    server.faults = RtuFaults(corrupt_every=2)
    assert client.request(1, READ_1) == REPLY_1
    bad = client.request(1, READ_1)
    assert len(bad) == len(REPLY_1) and bad[:-2] == REPLY_1[:-2] and not crc_ok(bad)
    assert client.request(1, READ_1) == REPLY_1


def test_fault_cut_every(bank_server: tuple[RtuServer, Client]) -> None:
    server, client = bank_server
    server.faults = RtuFaults(cut_every=2)
    assert client.request(1, READ_1) == REPLY_1
    client.write(adu(1, READ_1))
    assert client.read_until_silence() == REPLY_1[: len(REPLY_1) // 2]
    assert client.request(1, READ_1) == REPLY_1


def test_fault_slow_ms(bank_server: tuple[RtuServer, Client]) -> None:
    server, client = bank_server
    server.faults = RtuFaults(slow_ms=200)
    t0 = time.monotonic()
    assert client.request(1, READ_1) == REPLY_1
    assert time.monotonic() - t0 >= 0.2


def test_fault_noise(bank_server: tuple[RtuServer, Client]) -> None:
    server, client = bank_server
    server.faults = RtuFaults(noise=1.0, seed=5)
    for _ in range(3):
        client.write(adu(1, READ_1))
        data = client.read_until_silence()
        assert data.endswith(REPLY_1)
        assert 1 <= len(data) - len(REPLY_1) <= 8
    server.faults = RtuFaults()
    assert client.request(1, READ_1) == REPLY_1


def test_fault_switches_validate() -> None:
    for bad in ({"noise": 1.5}, {"drop_every": -1}, {"slow_ms": -1}, {"dead_units": {300}}):
        with pytest.raises(ValueError):
            RtuFaults(**bad)  # type: ignore[arg-type]
    assert RtuFaults(dead_units={3}).dead_units == frozenset({3})  # type: ignore[arg-type]


# --------------------------------------------------------------------------- forging physics


def test_forging_physics_plausible_and_deterministic() -> None:
    line = ForgingLine(seed=7)
    states: set[int] = set()
    alarms: set[int] = set()
    strokes, heated, weighed = [], [], []
    t = 0.0
    while t < 1800.0:
        s = line.snapshot(t)
        states.add(s.press.state)
        if s.press.alarm_code:
            alarms.add(s.press.alarm_code)
            assert s.press.state == CycleState.ALARM
        strokes.append(s.press.stroke_count)
        heated.append(s.heater.billets_heated)
        weighed.append(s.scale.count)
        assert 0.0 <= s.press.ram_position_mm < RAM_LIMIT
        assert 140.0 < s.press.hydraulic_bar < 215.0
        assert 150.0 < s.press.die_temp_c < 300.0
        assert 0 <= s.press.blows_on_billet <= 3
        t += 0.25
    assert states == set(CycleState)
    assert alarms and alarms <= set(RANDOM_ALARMS) | {ALARM_BILLET_COLD}
    assert strokes == sorted(strokes) and heated == sorted(heated) and weighed == sorted(weighed)
    billets = heated[-1]
    assert 1800 / 12 < billets < 1800 / 4  # "a billet every few seconds"
    blows = strokes[-1] - STROKES_AT_START
    assert billets <= blows <= 3 * billets
    # deterministic in the seed, and sampling order does not matter
    again = ForgingLine(seed=7)
    assert again.snapshot(1234.5) == ForgingLine(seed=7).snapshot(1234.5) == line.snapshot(1234.5)
    assert ForgingLine(seed=8).snapshot(1234.5) != line.snapshot(1234.5)



# --------------------------------------------------------------------------- ASCII: tonnage

TON_RE = re.compile(
    rb"^\$(TON,(\d+),(-?\d+\.\d),(-?\d+\.\d),(-?\d+\.\d),(-?\d+\.\d),(-?\d+\.\d),(-\d+\.\d))"
    rb"\*([0-9A-F]{2})\r\n$"
)


def parse_ton(line: bytes) -> tuple[int, list[int], int, int, bool]:
    """(stroke, channels in tenths, total, reverse, checksum ok); asserts the grammar."""
    m = TON_RE.match(line)
    assert m, line
    xor = 0
    for byte in m.group(1):
        xor ^= byte
    tenths = [int(g.replace(b".", b"")) for g in m.groups()[2:8]]
    return int(m.group(2)), tenths[:4], tenths[4], tenths[5], xor == int(m.group(9), 16)


@pytest.fixture
def tonnage_factory() -> Iterator:
    opened: list = []

    def make(**kwargs: object) -> tuple[TonnageMonitor, Client]:
        kwargs.setdefault("time_scale", 20.0)
        sim = TonnageMonitor(PtyLink(FAST), **kwargs)  # type: ignore[arg-type]
        ctx = in_thread(sim)
        ctx.__enter__()
        ser = open_serial(sim.address)
        opened.append((ctx, ser))
        return sim, Client(ser=ser)

    yield make
    for ctx, ser in opened:
        ser.close()
        ctx.__exit__(None, None, None)


def read_lines(client: Client, n: int, timeout: float = 3.0) -> list[tuple[float, bytes]]:
    assert client.ser is not None
    client.ser.timeout = timeout
    out = []
    for _ in range(n):
        line = client.ser.readline()
        assert line.endswith(b"\n"), line
        out.append((time.monotonic(), line))
    return out


def test_tonnage_lines_follow_the_grammar(tonnage_factory) -> None:  # type: ignore[no-untyped-def]
    _, client = tonnage_factory(seed=4)
    lines = [line for _, line in read_lines(client, 6)]
    strokes = []
    for line in lines:
        stroke, channels, total, reverse, ok = parse_ton(line)
        assert ok
        assert total == sum(channels)
        assert reverse < 0 and -reverse <= 0.13 * total + 1
        assert all(0 < c < 800 for c in channels)
        strokes.append(stroke)
    assert strokes == list(range(strokes[0], strokes[0] + 6))
    assert strokes[0] >= 58201
    assert tonnage_stroke(4, strokes[0] - 58201).payload().encode() in lines[0]


def test_tonnage_drop_corrupt_cut_noise(tonnage_factory) -> None:  # type: ignore[no-untyped-def]
    _, dropping = tonnage_factory(faults=AsciiFaults(drop_every=3))
    strokes = [parse_ton(line)[0] for _, line in read_lines(dropping, 4)]
    assert [s - 58201 for s in strokes] == [0, 1, 3, 4]  # line 3 of the stream missing

    _, corrupting = tonnage_factory(faults=AsciiFaults(corrupt_every=2))
    oks = [parse_ton(line)[4] for _, line in read_lines(corrupting, 4)]
    assert oks == [True, False, True, False]

    _, cutting = tonnage_factory(faults=AsciiFaults(cut_every=2))
    lines = [line for _, line in read_lines(cutting, 2)]
    parse_ton(lines[0])
    head, sep, tail = lines[1][1:].partition(b"$")
    assert sep and b"\r" not in head  # half a line glued to the next full one
    full = b"$" + tail
    assert full.startswith(b"$" + head[:4])
    parse_ton(full)

    _, noisy = tonnage_factory(faults=AsciiFaults(noise=1.0, seed=2))
    for _, line in read_lines(noisy, 3):
        garbage, _, rest = line.partition(b"$")
        assert 1 <= len(garbage) <= 8 and not set(garbage) & set(b":\r\n")
        assert parse_ton(b"$" + rest)[4]


def test_tonnage_burst_sends_lines_back_to_back(tonnage_factory) -> None:  # type: ignore[no-untyped-def]
    sim, client = tonnage_factory(time_scale=4.0, faults=AsciiFaults(burst=3),
                                  burst_probability=1.0)
    timed = read_lines(client, 6)
    strokes = [parse_ton(line)[0] for _, line in timed]
    assert strokes == list(range(58201, 58207))
    t = [at for at, _ in timed]
    inside = max(t[1] - t[0], t[2] - t[1], t[4] - t[3], t[5] - t[4])
    between = t[3] - t[2]
    # the next group is not sent before its stroke time (lower bound) ...
    assert t[3] >= sim.real_time(sim.stroke_time(3))
    # ... while a group arrives in one go (250 ms stroke period vs ~4 ms line time)
    assert inside < between / 3
    assert sim._burst_at(0) == 3 and TonnageMonitor(PtyLink(FAST))._burst_at(0) == 1


# --------------------------------------------------------------------------- ASCII: tempctl

TEMP_RE = re.compile(rb"^:((\d\d)RD,(-?\d+\.\d),(-?\d+\.\d),(-?\d+\.\d),([012])),([0-9A-F]{2})\r\n$")


def ref_lrc(body: bytes) -> int:
    return (0x100 - sum(body) % 0x100) % 0x100


@pytest.fixture
def tempctl() -> Iterator[tuple[TemperatureController, Client]]:
    sim = TemperatureController(PtyLink(FAST), zones=4, time_scale=50.0, seed=1)
    with in_thread(sim), open_serial(sim.address) as ser:
        yield sim, Client(ser=ser)


def ask(client: Client, request: bytes) -> bytes:
    assert client.ser is not None
    client.write(request)
    client.ser.timeout = 2.0
    return client.ser.readline()


def test_tempctl_zones_answer_with_lrc(tempctl: tuple[TemperatureController, Client]) -> None:
    _, client = tempctl
    time.sleep(0.2)  # 10 simulated seconds of warm-up
    for zone, sp in zip(range(1, 5), (220.0, 235.0, 180.0, 250.0)):
        reply = ask(client, b":%02dRD\r\n" % zone)
        m = TEMP_RE.match(reply)
        assert m, reply
        assert int(m.group(7), 16) == ref_lrc(m.group(1))
        assert int(m.group(2)) == zone
        pv, sp_read, out = (float(m.group(i)) for i in (3, 4, 5))
        assert sp_read == sp
        assert (20.0 < pv < sp + 30.0) or (m.group(6) == b"2" and pv == 999.9)
        assert 0.0 <= out <= 100.0


def test_tempctl_unknown_malformed_and_pipelined(
    tempctl: tuple[TemperatureController, Client],
) -> None:
    _, client = tempctl
    for silent in (b":05RD\r\n", b":00RD\r\n", b"hello\r\n", b":1RD\r\n", b":05XX\r\n"):
        client.write(silent)
        assert client.silent(0.15), silent
    reply = ask(client, b":02XY\r\n")
    assert reply == b":02ER,%02X\r\n" % ref_lrc(b"02ER")
    client.write(b"\x00\x13noise:01RD\r\n:03RD\n")
    first, second = ask(client, b""), ask(client, b"")
    assert first.startswith(b":01RD,") and second.startswith(b":03RD,")


@pytest.mark.parametrize("fault", ["drop", "corrupt", "cut", "slow", "noise"])
def test_tempctl_faults(tempctl: tuple[TemperatureController, Client], fault: str) -> None:
    sim, client = tempctl
    sim.faults = {
        "drop": AsciiFaults(drop_every=2),
        "corrupt": AsciiFaults(corrupt_every=2),
        "cut": AsciiFaults(cut_every=2),
        "slow": AsciiFaults(slow_ms=150),
        "noise": AsciiFaults(noise=1.0, seed=9),
    }[fault]
    t0 = time.monotonic()
    first = ask(client, b":01RD\r\n")
    if fault == "slow":
        assert time.monotonic() - t0 >= 0.15
    if fault == "noise":
        garbage, _, rest = first.partition(b":")
        assert 1 <= len(garbage) <= 8
        first = b":" + rest
    assert TEMP_RE.match(first)
    client.write(b":01RD\r\n")
    second = client.read_until_silence(0.2)
    if fault == "drop":
        assert second == b""
    elif fault == "corrupt":
        m = TEMP_RE.match(second)
        assert m and int(m.group(7), 16) != ref_lrc(m.group(1))
    elif fault == "cut":
        assert second.startswith(b":01RD,") and b"\n" not in second
        assert 10 <= len(second) <= 20
    elif fault == "noise":
        garbage, _, rest = second.partition(b":")
        assert 1 <= len(garbage) <= 8 and TEMP_RE.match(b":" + rest)
    else:
        assert TEMP_RE.match(second)


def test_tempctl_over_tcp() -> None:
    sim = TemperatureController(TcpLink(0, FAST), zones=1)
    with in_thread(sim):
        host, port = sim.address.split(":")
        with socket.create_connection((host, int(port)), timeout=3) as sock:
            client = Client(sock=sock)
            client.write(b":01RD\r\n")
            reply = client.read_until_silence(0.2)
            assert TEMP_RE.match(reply)
            client.write(b":02RD\r\n")
            assert client.silent(0.15)


# --------------------------------------------------------------------------- CLIs


def _spawn(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", *args], cwd=REPO_ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _stop(proc: subprocess.Popen[str]) -> int:
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _listening(proc: subprocess.Popen[str]) -> str:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], 15)
    assert ready, "no listening line"
    return proc.stdout.readline()


def test_forging_cli_pty_and_tcp() -> None:
    proc = _spawn("simulators.modbus.forging", "--pty", "--baud", "115200", "--seed", "2",
                  "--dead-unit", "3", "--extra-units", "1")
    try:
        m = re.fullmatch(r"forging listening on (/dev/pts/\d+)\n", _listening(proc))
        assert m
        with open_serial(m.group(1)) as ser:
            client = Client(ser=ser)
            assert len(client.read_registers(1, 0, 18)) == 18
            assert len(client.read_registers(10, 0, 100)) == 100
            client.write(adu(3, READ_1))
            assert client.silent()
    finally:
        assert _stop(proc) == 0
    proc = _spawn("simulators.modbus.forging", "--tcp", "0", "--corrupt-every", "1")
    try:
        m = re.fullmatch(r"forging listening on 127\.0\.0\.1:(\d+)\n", _listening(proc))
        assert m
        with socket.create_connection(("127.0.0.1", int(m.group(1))), timeout=3) as sock:
            reply = Client(sock=sock).request(2, struct.pack(">BHH", 3, 100, 2))
            assert len(reply) == 9 and not crc_ok(reply)
    finally:
        assert _stop(proc) == 0


def test_serial_ascii_cli_tonnage_and_tempctl() -> None:
    proc = _spawn("simulators.serial.ascii", "tonnage", "--pty", "--time-scale", "20")
    try:
        m = re.fullmatch(r"tonnage listening on (/dev/pts/\d+)\n", _listening(proc))
        assert m
        with serial.Serial(m.group(1), 9600, timeout=3) as ser:
            assert parse_ton(ser.readline())[4]
    finally:
        assert _stop(proc) == 0
    proc = _spawn("simulators.serial.ascii", "tempctl", "--tcp", "0", "--zones", "3")
    try:
        m = re.fullmatch(r"tempctl listening on 127\.0\.0\.1:(\d+)\n", _listening(proc))
        assert m
        with socket.create_connection(("127.0.0.1", int(m.group(1))), timeout=3) as sock:
            client = Client(sock=sock)
            client.write(b":03RD\r\n")
            assert TEMP_RE.match(client.read_until_silence(0.3))
    finally:
        assert _stop(proc) == 0


def test_cli_option_errors(capsys: pytest.CaptureFixture[str]) -> None:
    for main, argv in (
        (ascii_main, ["tempctl", "--pty", "--burst", "3"]),
        (ascii_main, ["tempctl", "--pty", "--zones", "5"]),
        (ascii_main, ["tonnage"]),
        (forging_main, ["--pty", "--tcp", "0"]),
        (forging_main, ["--pty", "--noise", "2"]),
        (forging_main, ["--pty", "--extra-units", "500"]),
        (forging_main, ["--pty", "--bytesize", "7"]),
    ):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 2, argv
    capsys.readouterr()


def test_agent_cli_knows_the_kinds() -> None:
    from agent.cli.main import SIMULATORS

    assert SIMULATORS["forging"] == "simulators.modbus.forging"
    assert SIMULATORS["serial"] == "simulators.serial.ascii"


def test_simulators_import_nothing_from_agent_or_drivers() -> None:
    for name in SIM_FILES:
        tree = ast.parse((REPO_ROOT / "simulators" / f"{name}.py").read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                roots = [alias.name.split(".")[0] for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                roots = [(node.module or "").split(".")[0]]
            else:
                continue
            assert not {"agent", "drivers"} & set(roots), (name, ast.dump(node))
