"""End-to-end tests of the Modbus TCP driver (pymodbus client) against the project's own,
independently written Modbus TCP simulator server, in-process on 127.0.0.1.

Register contents are written into the simulator's RegisterBank as literal words; the
expected values are literals too. Unhappy paths use the simulator's fault switches
(FaultConfig) and, for replies the simulator never sends, a tiny raw-socket stub server.
"""

from __future__ import annotations

import asyncio
import math
import struct
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from drivers.base import RawSample
from drivers.modbus.config import ModbusSignalFields, ModbusTcpConnection
from drivers.modbus.driver import MODBUS_TCP, ModbusDriver
from simulators.modbus.model import RegisterBank, Table
from simulators.modbus.tcp_server import FaultConfig, ModbusTcpServer

pytestmark = pytest.mark.timeout(30)

REPO_ROOT = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"
CONNECTION_ERRORS = (OSError, ConnectionError, TimeoutError)
SHORT_TIMEOUT = 0.2  # seconds; used where a timeout is expected to fire


# --------------------------------------------------------------------------- helpers


def make_bank() -> RegisterBank:
    return RegisterBank(coils=32, discrete_inputs=32, holding_registers=200, input_registers=50)


@asynccontextmanager
async def serve(model: Any, *, unit_id: int = 1,
                faults: FaultConfig | None = None) -> AsyncIterator[ModbusTcpServer]:
    server = ModbusTcpServer(model, host=HOST, port=0, unit_id=unit_id, faults=faults)
    await server.start()
    assert server.port != 0
    try:
        yield server
    finally:
        await server.stop()


def make_conn(port: int, **extra: Any) -> ModbusTcpConnection:
    return ModbusTcpConnection.model_validate(
        {"protocol": "modbus-tcp", "host": HOST, "port": port, "timeout": 1.0, **extra})


def make_driver(port: int, groups: dict[str, Sequence[dict[str, Any]]],
                **extra: Any) -> ModbusDriver:
    return MODBUS_TCP.factory(  # type: ignore[return-value]
        make_conn(port, **extra),
        {name: [ModbusSignalFields.model_validate(s) for s in sigs] for name, sigs in groups.items()},
        {}, {},
    )


@asynccontextmanager
async def connected_driver(port: int, groups: dict[str, Sequence[dict[str, Any]]],
                           **extra: Any) -> AsyncIterator[ModbusDriver]:
    driver = make_driver(port, groups, **extra)
    await driver.connect()
    assert driver.connected
    try:
        yield driver
    finally:
        await driver.close()


def assert_good(sample: RawSample, value: object) -> None:
    assert sample.quality == "good", sample
    assert sample.reason is None
    if isinstance(value, float) and not isinstance(sample.value, bool):
        assert sample.value == pytest.approx(value, rel=1e-7)
    else:
        assert sample.value == value
        assert type(sample.value) is type(value)


def assert_bad(sample: RawSample, reason: str) -> None:
    assert sample.quality == "bad", sample
    assert sample.value is None
    assert sample.reason == reason


# A group that needs two requests: hr:0..3 and ir:0.
TWO_BLOCKS = [
    {"address": "hr:0", "type": "uint16"},
    {"address": "hr:1", "type": "int16"},
    {"address": "hr:2", "type": "float32"},
    {"address": "ir:0", "type": "uint16"},
]


def fill_two_blocks(bank: RegisterBank) -> None:
    bank.set_registers(Table.HOLDING_REGISTERS, 0, [0x0007, 0xFFF9, 0x42F6, 0xE979])
    bank.set_registers(Table.INPUT_REGISTERS, 0, [0x2A2A])


def assert_two_blocks_good(samples: list[RawSample]) -> None:
    assert len(samples) == 4
    assert_good(samples[0], 7)
    assert_good(samples[1], -7)
    assert_good(samples[2], 123.456)
    assert_good(samples[3], 0x2A2A)


# --------------------------------------------------------------------------- happy path

MIXED = [
    {"address": "hr:150", "type": "uint16"},                                  # 0: own block
    {"address": "hr:0", "type": "uint16"},                                    # 1
    {"address": "hr:1", "type": "int16"},                                     # 2
    {"address": "hr:2", "type": "int16", "order": "BADC"},                    # 3
    {"address": "hr:3", "type": "uint32"},                                    # 4
    {"address": "hr:5", "type": "int32", "order": "CDAB"},                    # 5
    {"address": "hr:7", "type": "float32", "order": "BADC"},                  # 6
    {"address": "hr:9", "type": "float32", "byte_order": "little",
     "word_order": "little"},                                                 # 7 (DCBA)
    {"address": "hr:11", "type": "float32", "word_order": "little"},          # 8 (CDAB)
    {"address": "hr:13", "type": "int64"},                                    # 9
    {"address": "hr:17", "type": "uint64", "order": "DCBA"},                  # 10
    {"address": "hr:21", "type": "float64", "order": "CDAB"},                 # 11
    {"address": "hr:25", "type": "string(16)"},                               # 12
    {"address": "hr:33", "type": "string", "length": 5, "order": "BADC"},     # 13
    {"address": "hr:36.0"},                                                   # 14
    {"address": "hr:36.5"},                                                   # 15
    {"address": "hr:36.15", "type": "bool"},                                  # 16
    {"address": "hr:36"},                                                     # 17 uint16 default
    {"address": "ir:0", "type": "int16"},                                     # 18
    {"address": "ir:1", "type": "uint32", "order": "CDAB"},                   # 19
    {"address": "co:0"},                                                      # 20
    {"address": "co:3"},                                                      # 21
    {"address": "co:9"},                                                      # 22
    {"address": "di:0"},                                                      # 23
    {"address": "di:7"},                                                      # 24
    {"address": "di:8", "type": "bool"},                                      # 25
    {"address": "hr:3", "type": "uint16"},                                    # 26 overlaps #4
    {"address": "ir:3.1"},                                                    # 27 bit of ir
    {"address": "ir:3.2"},                                                    # 28
]


def fill_mixed(bank: RegisterBank) -> None:
    hr = Table.HOLDING_REGISTERS
    bank.set_registers(hr, 0, [0x1234])                                 # 4660
    bank.set_registers(hr, 1, [0xFF85])                                 # -123
    bank.set_registers(hr, 2, [0x85FF])                                 # -123 BADC
    bank.set_registers(hr, 3, [0xDEAD, 0xBEEF])                         # 0xDEADBEEF
    bank.set_registers(hr, 5, [0xFFFE, 0xFFFF])                         # -2 CDAB
    bank.set_registers(hr, 7, [0xF642, 0x79E9])                         # 123.456 BADC
    bank.set_registers(hr, 9, [0x0000, 0xC0BF])                         # -1.5 DCBA
    bank.set_registers(hr, 11, [0xE979, 0x42F6])                        # 123.456 CDAB
    bank.set_registers(hr, 13, [0x8000, 0x0000, 0x0000, 0x0000])        # int64 min
    bank.set_registers(hr, 17, [0x0807, 0x0605, 0x0403, 0x0201])        # DCBA
    bank.set_registers(hr, 21, [0xBE77, 0x1A9F, 0xDD2F, 0x405E])        # 123.456 CDAB
    bank.set_registers(hr, 25, [0x4449, 0x452D, 0x3437, 0x3131,         # "DIE-4711-B"
                                0x2D42, 0x0000, 0x0000, 0x0000])
    bank.set_registers(hr, 33, [0x4548, 0x4C4C, 0x004F])                # "HELLO" BADC
    bank.set_registers(hr, 36, [0x8001])                                # bits 0 and 15
    bank.set_registers(hr, 150, [0xFFFF])
    bank.set_registers(Table.INPUT_REGISTERS, 0, [0x8000, 0x0001, 0x0000, 0x0002])
    bank.set_bits(Table.COILS, 0, [True, False, False, True, False, False, False, False,
                                   False, True])
    bank.set_bits(Table.DISCRETE_INPUTS, 0, [True, False, False, False, False, False, False,
                                             True, False, True])


def assert_mixed(samples: list[RawSample]) -> None:
    assert len(samples) == len(MIXED)
    expected: list[object] = [
        65535, 4660, -123, -123, 0xDEADBEEF, -2, 123.456, -1.5, 123.456,
        -9223372036854775808, 0x0102030405060708, 123.456, "DIE-4711-B", "HELLO",
        True, False, True, 0x8001, -32768, 1, True, True, True, True, True, False, 0xDEAD,
        True, False,
    ]
    for i, (sample, value) in enumerate(zip(samples, expected)):
        try:
            assert_good(sample, value)
        except AssertionError as exc:
            raise AssertionError(f"signal #{i} {MIXED[i]}: {exc}") from None


async def test_reads_every_type_and_order_from_the_simulator() -> None:
    bank = make_bank()
    fill_mixed(bank)
    async with serve(bank) as server, connected_driver(server.port, {"g": MIXED}) as driver:
        # hr:0..36, hr:150, ir:0..3, co:0..9, di:0..8
        assert driver.request_count("g") == 5
        before = server.request_count
        samples = await driver.read("g")
        assert server.request_count - before == 5
        assert_mixed(samples)
        # one timestamp per request: the signals of one block share it
        assert samples[1].ts_ns == samples[12].ts_ns
        assert driver.connected


async def test_second_read_sees_new_values() -> None:
    bank = make_bank()
    fill_mixed(bank)
    async with serve(bank) as server, connected_driver(server.port, {"g": MIXED}) as driver:
        assert_mixed(await driver.read("g"))
        bank.set_registers(Table.HOLDING_REGISTERS, 7, [0xC0BF, 0x0000])  # -1.5 BADC
        bank.set_registers(Table.HOLDING_REGISTERS, 36, [0x0020])         # bit 5 only
        bank.set_bits(Table.COILS, 3, [False])
        samples = await driver.read("g")
        assert_good(samples[6], -1.5)
        assert_good(samples[14], False)
        assert_good(samples[15], True)
        assert_good(samples[16], False)
        assert_good(samples[21], False)
        assert_good(samples[1], 4660)


async def test_groups_are_read_independently() -> None:
    bank = make_bank()
    fill_two_blocks(bank)
    groups = {"fast": [{"address": "hr:0"}], "slow": [{"address": "ir:0"}, {"address": "hr:1",
                                                                           "type": "int16"}]}
    async with serve(bank) as server, connected_driver(server.port, groups) as driver:
        assert driver.request_count("fast") == 1
        assert driver.request_count("slow") == 2
        fast = await driver.read("fast")
        assert len(fast) == 1
        assert_good(fast[0], 7)
        slow = await driver.read("slow")
        assert len(slow) == 2
        assert_good(slow[0], 0x2A2A)
        assert_good(slow[1], -7)
        assert server.request_count == 3


async def test_group_larger_than_one_request() -> None:
    bank = make_bank()
    bank.set_registers(Table.HOLDING_REGISTERS, 0, [3 * i + 1 for i in range(130)])
    bank.set_bits(Table.COILS, 0, [i % 3 == 0 for i in range(32)])
    signals = [{"address": f"hr:{i}"} for i in range(130)]
    signals += [{"address": f"co:{i}"} for i in range(32)]
    async with serve(bank) as server, connected_driver(server.port, {"g": signals},
                                                       max_registers=100, max_bits=20) as driver:
        assert driver.request_count("g") == 4  # hr 100 + 30, co 20 + 12
        samples = await driver.read("g")
        assert server.request_count == 4
        for i in range(130):
            assert_good(samples[i], 3 * i + 1)
        for i in range(32):
            assert_good(samples[130 + i], i % 3 == 0)


@pytest.mark.parametrize("unit_id", [0, 1, 17, 255])
async def test_unit_ids(unit_id: int) -> None:
    bank = make_bank()
    fill_two_blocks(bank)
    async with serve(bank, unit_id=unit_id) as server, \
            connected_driver(server.port, {"g": TWO_BLOCKS}, unit_id=unit_id) as driver:
        assert_two_blocks_good(await driver.read("g"))


async def test_example_press_config_against_the_press_simulator() -> None:
    from agent.config.loader import load_config
    from drivers.registry import DRIVERS
    from simulators.modbus.press import PressDevice
    from simulators.modbus.press_physics import PressConfig

    loaded = load_config(REPO_ROOT / "config" / "examples", DRIVERS)
    press = next(m for m in loaded.machines if m.id == "press-01")
    groups = press.signals_by_group()
    async with serve(PressDevice(PressConfig(spm=30, seed=1))) as server:
        conn = press.model.connection.model_copy(update={"port": server.port})
        driver = press.spec.factory(conn, groups, {}, {})
        await driver.connect()
        try:
            before = server.request_count
            fast = await driver.read("fast")
            slow = await driver.read("slow")
            assert server.request_count - before == (driver.request_count("fast")
                                                     + driver.request_count("slow"))
        finally:
            await driver.close()
    by_name = {}
    for group, samples in (("fast", fast), ("slow", slow)):
        assert len(samples) == len(groups[group])
        for sig, sample in zip(groups[group], samples):
            assert sample.quality == "good", (sig.name, sample)
            by_name[sig.name] = sample.value
    assert by_name["machine.mode"] == 3
    assert by_name["press.die_height"] == 35000
    assert by_name["die.id"] == "DIE-4711-B"
    assert 1_234_567 <= by_name["machine.operating_time"] < 1_234_567 + 60
    assert 2_345_678 <= by_name["cycle.count"] < 2_345_678 + 100
    assert 0 <= by_name["part_count.job"] < 100          # uint32 DCBA
    assert 0 <= by_name["press.crank_angle"] < 360
    assert 0 <= by_name["press.flywheel.speed"] < 3000   # float32 BADC
    assert not math.isnan(by_name["motor.energy"])       # float64
    for name in ("motor.on", "safety.light_curtain.clear", "motor.running", "alarm.active"):
        assert isinstance(by_name[name], bool)


# --------------------------------------------------------------------------- device exceptions


async def test_exception_rate_one_gives_device_exception_4_or_6() -> None:
    bank = make_bank()
    fill_two_blocks(bank)
    faults = FaultConfig(exception_rate=1.0, seed=3)
    async with serve(bank, faults=faults) as server, \
            connected_driver(server.port, {"g": TWO_BLOCKS}) as driver:
        seen = set()
        for _ in range(6):
            samples = await driver.read("g")
            for sample in samples:
                assert sample.quality == "bad"
                assert sample.value is None
                assert sample.reason in ("device_exception:4", "device_exception:6")
                seen.add(sample.reason)
            # the three hr signals came from one request: one answer, one reason
            assert samples[0].reason == samples[1].reason == samples[2].reason
            assert driver.connected  # an exception reply is not a link failure
        assert server.request_count == 12
        assert seen == {"device_exception:4", "device_exception:6"}


async def test_partial_exception_rate_affects_only_the_failed_request() -> None:
    bank = make_bank()
    fill_two_blocks(bank)
    faults = FaultConfig(exception_rate=0.5, seed=11)
    outcomes = set()
    async with serve(bank, faults=faults) as server, \
            connected_driver(server.port, {"g": TWO_BLOCKS}) as driver:
        for _ in range(30):
            samples = await driver.read("g")
            hr_ok = samples[0].quality == "good"
            ir_ok = samples[3].quality == "good"
            outcomes.add((hr_ok, ir_ok))
            if hr_ok:
                assert_good(samples[0], 7)
                assert_good(samples[1], -7)
                assert_good(samples[2], 123.456)
            else:
                assert samples[0].reason in ("device_exception:4", "device_exception:6")
                for s in samples[:3]:
                    assert_bad(s, samples[0].reason)  # type: ignore[arg-type]
            if ir_ok:
                assert_good(samples[3], 0x2A2A)
            else:
                assert samples[3].reason in ("device_exception:4", "device_exception:6")
    assert outcomes == {(True, True), (True, False), (False, True), (False, False)}


async def test_unmapped_address_gives_device_exception_2_on_its_request_only() -> None:
    bank = make_bank()  # hr 0..199, co 0..31
    fill_two_blocks(bank)
    signals = [
        {"address": "hr:0", "type": "uint16"},     # 0  good block hr:0..3
        {"address": "hr:500", "type": "uint16"},   # 1  unmapped
        {"address": "hr:2", "type": "float32"},    # 2  good block
        {"address": "hr:199", "type": "uint32"},   # 3  199 mapped, 200 not
        {"address": "co:100"},                     # 4  unmapped coil
        {"address": "ir:0"},                       # 5  good
        {"address": "hr:501", "type": "int16"},    # 6  same request as #1
    ]
    async with serve(bank) as server, connected_driver(server.port, {"g": signals}) as driver:
        assert driver.request_count("g") == 5
        for _ in range(2):  # the connection survives exception replies
            samples = await driver.read("g")
            assert_good(samples[0], 7)
            assert_bad(samples[1], "device_exception:2")
            assert_good(samples[2], 123.456)
            assert_bad(samples[3], "device_exception:2")
            assert_bad(samples[4], "device_exception:2")
            assert_good(samples[5], 0x2A2A)
            assert_bad(samples[6], "device_exception:2")
            assert driver.connected


async def test_wrong_unit_id_gives_device_exception_11() -> None:
    bank = make_bank()
    fill_two_blocks(bank)
    async with serve(bank, unit_id=1) as server, \
            connected_driver(server.port, {"g": TWO_BLOCKS}, unit_id=7) as driver:
        samples = await driver.read("g")
        for sample in samples:
            assert_bad(sample, "device_exception:11")
        assert driver.connected
        assert server.request_count == 2


# --------------------------------------------------------------------------- timeouts, drops


async def test_delay_longer_than_timeout_gives_timeout_and_disconnects() -> None:
    bank = make_bank()
    fill_two_blocks(bank)
    async with serve(bank, faults=FaultConfig(delay_ms=1500)) as server:
        async with connected_driver(server.port, {"g": TWO_BLOCKS},
                                    timeout=SHORT_TIMEOUT) as driver:
            samples = await driver.read("g")
            hr_reason, ir_reason = samples[0].reason, samples[3].reason
            # The first request timed out and closed the link; the other was never sent.
            assert {hr_reason, ir_reason} == {"timeout", "comm_failure"}
            for sample in samples[:3]:
                assert_bad(sample, hr_reason)  # type: ignore[arg-type]
            assert_bad(samples[3], ir_reason)  # type: ignore[arg-type]
            assert driver.connected is False
            assert server.request_count == 1

            # Without a connection nothing is sent.
            samples = await driver.read("g")
            for sample in samples:
                assert_bad(sample, "comm_failure")
            assert server.request_count == 1

            # The device recovers; a reconnect brings the values back.
            server.faults = FaultConfig()
            await driver.connect()
            assert driver.connected
            assert_two_blocks_good(await driver.read("g"))


async def test_timeout_on_a_single_block_group() -> None:
    bank = make_bank()
    fill_two_blocks(bank)
    signals = [{"address": "hr:0"}, {"address": "hr:1", "type": "int16"}]
    async with serve(bank, faults=FaultConfig(delay_ms=1500)) as server, \
            connected_driver(server.port, {"g": signals}, timeout=SHORT_TIMEOUT) as driver:
        samples = await driver.read("g")
        assert_bad(samples[0], "timeout")
        assert_bad(samples[1], "timeout")
        assert not driver.connected


async def test_dropped_connection_gives_comm_failure_and_reconnect_recovers() -> None:
    bank = make_bank()
    fill_two_blocks(bank)
    async with serve(bank, faults=FaultConfig(drop_every=2)) as server, \
            connected_driver(server.port, {"g": TWO_BLOCKS}, timeout=SHORT_TIMEOUT) as driver:
        for cycle in range(2):
            # request 2k+1 is answered, request 2k+2 is dropped
            samples = await driver.read("g")
            good_hr = samples[0].quality == "good"
            assert good_hr is (samples[3].quality != "good")  # exactly one request failed
            failed = samples[3] if good_hr else samples[0]
            assert failed.reason in ("comm_failure", "timeout")
            if good_hr:
                assert_good(samples[0], 7)
                assert_good(samples[1], -7)
                assert_good(samples[2], 123.456)
            else:
                for sample in samples[:3]:
                    assert_bad(sample, failed.reason)  # type: ignore[arg-type]
                assert_good(samples[3], 0x2A2A)
            assert not driver.connected
            assert server.request_count == 2 * (cycle + 1)

            samples = await driver.read("g")
            for sample in samples:
                assert_bad(sample, "comm_failure")
            assert server.request_count == 2 * (cycle + 1)  # nothing sent while down

            await driver.connect()
            assert driver.connected


async def test_drop_is_reported_without_waiting_for_the_timeout() -> None:
    # A closed socket must fail the pending request as comm_failure, not as a timeout.
    bank = make_bank()
    fill_two_blocks(bank)
    signals = [{"address": "hr:0"}]
    async with serve(bank, faults=FaultConfig(drop_every=1)) as server, \
            connected_driver(server.port, {"g": signals}, timeout=5.0) as driver:
        samples = await asyncio.wait_for(driver.read("g"), 3.0)
        assert_bad(samples[0], "comm_failure")
        assert not driver.connected


# --------------------------------------------------------------------------- server gone


async def test_server_not_listening() -> None:
    bank = make_bank()
    async with serve(bank) as server:
        port = server.port
    driver = make_driver(port, {"g": TWO_BLOCKS}, timeout=SHORT_TIMEOUT)
    with pytest.raises(CONNECTION_ERRORS):
        await driver.connect()
    assert not driver.connected
    samples = await driver.read("g")
    assert len(samples) == 4
    for sample in samples:
        assert_bad(sample, "comm_failure")
    await driver.close()
    await driver.close()


async def test_server_stopped_while_connected() -> None:
    bank = make_bank()
    fill_two_blocks(bank)
    server = ModbusTcpServer(bank, host=HOST, port=0)
    await server.start()
    driver = make_driver(server.port, {"g": TWO_BLOCKS}, timeout=SHORT_TIMEOUT)
    try:
        await driver.connect()
        assert_two_blocks_good(await driver.read("g"))
        await server.stop()
        samples = await driver.read("g")
        for sample in samples:
            assert_bad(sample, "comm_failure")
        assert not driver.connected
        with pytest.raises(CONNECTION_ERRORS):
            await driver.connect()
        assert not driver.connected
        for sample in await driver.read("g"):
            assert_bad(sample, "comm_failure")
    finally:
        await driver.close()
        await server.stop()


async def test_read_before_connect_is_comm_failure() -> None:
    driver = make_driver(1, {"g": TWO_BLOCKS})
    assert not driver.connected
    for sample in await driver.read("g"):
        assert_bad(sample, "comm_failure")
    await driver.close()


# --------------------------------------------------------------------------- malformed replies
# The simulator always answers correctly formed PDUs, so these use a raw stub server.

Responder = Callable[[int, int, bytes], bytes | None]


def mbap(transaction_id: int, unit_id: int, pdu: bytes) -> bytes:
    return struct.pack(">HHHB", transaction_id, 0, len(pdu) + 1, unit_id) + pdu


@asynccontextmanager
async def stub_server(respond: Responder) -> AsyncIterator[int]:
    """Answer every request with respond(transaction id, unit id, request PDU)."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                header = await reader.readexactly(7)
                tid, _, length, unit = struct.unpack(">HHHB", header)
                pdu = await reader.readexactly(length - 1)
                reply = respond(tid, unit, pdu)
                if reply is not None:
                    writer.write(reply)
                    await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, HOST, 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()


UINT32_AT_HR0 = [{"address": "hr:0", "type": "uint32"}]


async def test_stub_server_sanity() -> None:
    # the stub itself, answering correctly: 00 01 00 02 -> 65538
    async with stub_server(lambda tid, unit, pdu: mbap(tid, unit, bytes([3, 4, 0, 1, 0, 2]))) \
            as port, connected_driver(port, {"g": UINT32_AT_HR0}) as driver:
        assert_good((await driver.read("g"))[0], 65538)


async def test_short_register_reply_is_malformed() -> None:
    # 2 registers asked, 1 returned (byte count 2)
    async with stub_server(lambda tid, unit, pdu: mbap(tid, unit, bytes([3, 2, 0, 1]))) as port, \
            connected_driver(port, {"g": UINT32_AT_HR0}) as driver:
        samples = await driver.read("g")
        assert_bad(samples[0], "malformed_reply")


async def test_reply_with_other_function_code_is_malformed() -> None:
    # read holding registers (3) answered as read input registers (4)
    async with stub_server(lambda tid, unit, pdu: mbap(tid, unit, bytes([4, 4, 0, 1, 0, 2]))) \
            as port, connected_driver(port, {"g": UINT32_AT_HR0}) as driver:
        samples = await driver.read("g")
        assert_bad(samples[0], "malformed_reply")


async def test_long_register_reply_is_malformed() -> None:
    # 2 registers asked, 3 returned (byte count 6): not what the request asked for
    async with stub_server(
            lambda tid, unit, pdu: mbap(tid, unit, bytes([3, 6, 0, 1, 0, 2, 0, 3]))) as port, \
            connected_driver(port, {"g": UINT32_AT_HR0}) as driver:
        samples = await driver.read("g")
        assert_bad(samples[0], "malformed_reply")


async def test_reply_for_another_unit_is_not_taken() -> None:
    # A reply carrying the wrong unit id must never be decoded as the value.
    async with stub_server(
            lambda tid, unit, pdu: mbap(tid, unit + 1, bytes([3, 4, 0, 1, 0, 2]))) as port, \
            connected_driver(port, {"g": UINT32_AT_HR0}, timeout=SHORT_TIMEOUT) as driver:
        samples = await driver.read("g")
        assert samples[0].quality == "bad"
        assert samples[0].value is None
        assert samples[0].reason in ("malformed_reply", "timeout")
        assert not driver.connected


async def test_reply_for_another_transaction_is_not_taken() -> None:
    async with stub_server(
            lambda tid, unit, pdu: mbap(tid + 5, unit, bytes([3, 4, 0, 1, 0, 2]))) as port, \
            connected_driver(port, {"g": UINT32_AT_HR0}, timeout=SHORT_TIMEOUT) as driver:
        samples = await driver.read("g")
        assert samples[0].quality == "bad"
        assert samples[0].reason in ("malformed_reply", "timeout")
        assert not driver.connected


async def test_malformed_reply_keeps_other_requests_good() -> None:
    def respond(tid: int, unit: int, pdu: bytes) -> bytes:
        if pdu[0] == 3:
            return mbap(tid, unit, bytes([3, 2, 0, 1]))      # short: malformed
        return mbap(tid, unit, bytes([4, 2, 0x2A, 0x2A]))    # input register 0 = 0x2A2A

    async with stub_server(respond) as port, \
            connected_driver(port, {"g": TWO_BLOCKS}) as driver:
        samples = await driver.read("g")
        for sample in samples[:3]:
            assert_bad(sample, "malformed_reply")
        assert_good(samples[3], 0x2A2A)
