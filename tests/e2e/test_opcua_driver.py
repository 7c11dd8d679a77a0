"""The OPC UA driver against the bundled simulators (in-process, on loopback): every
acquisition mode, the silent-subscription watchdog, reconnects, namespace renumbering,
security policies and trust, identities, slow servers."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any, AsyncIterator

import pytest

from agent.cli.processes import free_port
from drivers.base import RawSample
from drivers.opcua.config import OpcUaConnection, OpcUaSignalFields
from drivers.opcua.driver import SUBSCRIPTION_STALLED, UNRESOLVED, OpcUaDriver
from drivers.opcua.security import UntrustedServer, create_certificate
from simulators.opcua.cnc import CncSimulator
from simulators.opcua.injection import InjectionSimulator

CNC_NS = "urn:edge-agent:sim:cnc"
IMM_NS = "urn:edge-agent:sim:injection"
ROOT = "/Objects/Machines/CNC-01"


def connection(port: int, **extra: Any) -> OpcUaConnection:
    data = {"protocol": "opcua", "url": f"opc.tcp://127.0.0.1:{port}", "timeout": "2s",
            "namespaces": {"cnc": CNC_NS, "imm": IMM_NS}, "default_namespace": "cnc",
            "root": ROOT, **extra}
    return OpcUaConnection.model_validate(data)


def signals(*items: dict[str, Any]) -> list[OpcUaSignalFields]:
    return [OpcUaSignalFields.model_validate(item) for item in items]


@pytest.fixture
async def cnc() -> AsyncIterator[CncSimulator]:
    sim = CncSimulator(port=free_port(), seed=1, time_scale=20.0, alarm_every=2)
    async with sim:
        yield sim


async def drain_until(driver: OpcUaDriver, group: str, want: Any, timeout: float = 10.0,
                      every: float = 0.1) -> list[tuple[int, RawSample]]:
    """Drain like the agent does until `want(all samples so far)` holds."""
    seen: list[tuple[int, RawSample]] = []
    events: list[Any] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not driver.connected:
            try:
                await driver.connect()
            except (ConnectionError, TimeoutError, OSError):
                await asyncio.sleep(0.2)
                continue
        drained = await driver.drain(group)
        assert drained is not None
        seen += drained.samples
        events += drained.events
        if want(seen, events):
            return seen
        await asyncio.sleep(every)
    raise AssertionError(f"condition not met in {timeout}s; saw {seen[-5:]} {events[-2:]}")


# -- read ---------------------------------------------------------------------------------

DIAGNOSTICS = {
    "SByte": int, "Byte": int, "Int16": int, "UInt16": int, "Int32": int, "UInt32": int,
    "Int64": int, "UInt64": int, "Float": float, "Double": float, "Boolean": bool,
    "String": str, "DateTime": str, "LocalizedText": str, "ByteString": str,
    "DoubleArray": list, "ServerStateEnum": int,
}


async def test_read_every_builtin_type_by_relative_browse_path(cnc: CncSimulator) -> None:
    sigs = signals(*({"path": f"Monitoring/Diagnostics/{name}"} for name in DIAGNOSTICS))
    driver = OpcUaDriver(connection(cnc.server.port), {"diag": sigs}, {"diag": 1.0})
    await driver.connect()
    try:
        assert await driver.drain("diag") is None  # a read group is polled, not drained
        samples = await driver.read("diag")
        for (name, kind), sample in zip(DIAGNOSTICS.items(), samples):
            assert sample.quality == "good", (name, sample)
            assert type(sample.value) is kind, (name, sample.value)
            assert abs(sample.ts_ns - time.time_ns()) < 60e9  # a source timestamp, in ns
        by_name = dict(zip(DIAGNOSTICS, samples))
        assert by_name["DateTime"].value.endswith("Z")
        assert len(by_name["DoubleArray"].value) == 3
    finally:
        await driver.close()


async def test_read_enumeration_as_integer_and_as_name(cnc: CncSimulator) -> None:
    sigs = signals({"path": "Monitoring/Channel1/ChannelMode"},
                   {"path": "Monitoring/Channel1/ChannelMode", "value_as": "name"},
                   {"path": "Monitoring/Diagnostics/ServerStateEnum", "value_as": "name"})
    driver = OpcUaDriver(connection(cnc.server.port), {"g": sigs}, {"g": 1.0})
    await driver.connect()
    try:
        as_int, as_name, standard = await driver.read("g")
        assert as_int.value == 0 and as_name.value == "Automatic"
        assert standard.quality == "good" and standard.value == "Running"  # ServerState 0
    finally:
        await driver.close()


async def test_read_is_chunked_and_unresolvable_nodes_are_bad_not_fatal(cnc: CncSimulator) -> None:
    names = list(DIAGNOSTICS)[:10]
    sigs = signals(*({"node": f"nsu={CNC_NS};s=CNC-01.Monitoring.Diagnostics.{n}"} for n in names),
                   {"path": "Monitoring/NoSuchThing"},
                   {"node": f"nsu={CNC_NS};s=CNC-01.Missing"},
                   {"node": "nsu=urn:not-on-this-server;i=5"})
    driver = OpcUaDriver(connection(cnc.server.port, max_nodes_per_read=3), {"g": sigs}, {"g": 1.0})
    await driver.connect()
    try:
        assert driver.request_count("g") == 4  # 11 resolved nodes in chunks of 3
        samples = await driver.read("g")
        assert all(s.quality == "good" for s in samples[:10])
        assert samples[10].reason == UNRESOLVED  # browse path not found
        assert samples[11].reason == "BadNodeIdUnknown"  # the server says so on read
        assert samples[12].reason == UNRESOLVED  # namespace URI not on the server
    finally:
        await driver.close()


async def test_slow_server_gives_timeout_readings_and_recovers(cnc: CncSimulator) -> None:
    sigs = signals({"path": "Monitoring/Spindle/ActSpeed"})
    driver = OpcUaDriver(connection(cnc.server.port, timeout="300ms"), {"g": sigs}, {"g": 1.0})
    await driver.connect()
    try:
        cnc.server.delay_responses(1.0)
        [sample] = await driver.read("g")
        assert (sample.quality, sample.reason) == ("bad", "timeout")
        cnc.server.delay_responses(0)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if not driver.connected:
                try:
                    await driver.connect()
                except (ConnectionError, TimeoutError, OSError):
                    await asyncio.sleep(0.2)
                    continue
            [sample] = await driver.read("g")
            if sample.quality == "good":
                break
            await asyncio.sleep(0.2)
        assert sample.quality == "good"
    finally:
        await driver.close()


# -- subscribe ----------------------------------------------------------------------------

async def test_subscription_delivers_changes_with_queue_and_server_deadband(cnc: CncSimulator) -> None:
    sigs = signals(
        {"path": "Monitoring/Axes/X", "mode": "subscribe", "sampling_interval": "50ms", "queue_size": 10},
        {"path": "Monitoring/Spindle/Load", "mode": "subscribe", "server_deadband": {"absolute": 0.5}},
        {"path": "Production/ActiveProgram/Name", "mode": "subscribe"},
    )
    driver = OpcUaDriver(connection(cnc.server.port), {"fast": sigs}, {"fast": 0.2})
    await driver.connect()
    try:
        assert driver.request_count("fast") == 0
        seen = await drain_until(driver, "fast", lambda s, e: len({i for i, x in s if i == 0}) and
                                 sum(1 for i, _ in s if i == 0) >= 10 and any(i == 2 for i, _ in s))
        xs = [x for i, x in seen if i == 0]
        assert all(x.quality == "good" and isinstance(x.value, float) for x in xs)
        assert [x.ts_ns for x in xs] == sorted(x.ts_ns for x in xs)  # arrival order kept
        assert any(i == 2 and x.value for i, x in seen)
    finally:
        await driver.close()


async def test_silent_subscription_is_detected_and_rebuilt(cnc: CncSimulator) -> None:
    sigs = signals({"path": "Monitoring/Axes/X", "mode": "subscribe"})
    driver = OpcUaDriver(connection(cnc.server.port, keepalive_count=1), {"fast": sigs}, {"fast": 0.1})
    await driver.connect()
    try:
        await drain_until(driver, "fast", lambda s, e: any(x.quality == "good" for _, x in s))
        cnc.server.pause_publishing(True)
        seen = await drain_until(driver, "fast", lambda s, e: any(
            x.reason == SUBSCRIPTION_STALLED for _, x in s), timeout=10)
        assert driver.rebuilds >= 1
        assert driver.connected  # the session stayed; only the subscription was rebuilt
        cnc.server.pause_publishing(False)
        stalled_at = max(x.ts_ns for _, x in seen if x.reason == SUBSCRIPTION_STALLED)
        await drain_until(driver, "fast", lambda s, e: any(
            x.quality == "good" and x.ts_ns > stalled_at for _, x in s), timeout=10)
    finally:
        await driver.close()


async def test_server_restart_restores_every_subscription(cnc: CncSimulator) -> None:
    sigs = signals({"path": "Monitoring/Axes/X", "mode": "subscribe"},
                   {"path": "Monitoring/Axes/Y", "mode": "subscribe"},
                   {"event": "alarms", "field": "AlarmCode"})
    conn = connection(cnc.server.port, events={"alarms": {"notifier": ROOT}})
    driver = OpcUaDriver(conn, {"fast": sigs}, {"fast": 0.1})
    await driver.connect()
    try:
        await drain_until(driver, "fast", lambda s, e: {0, 1} <= {i for i, x in s if x.quality == "good"})
        await cnc.server.restart()
        restarted = time.time_ns()
        # After the restart: a new session, both items and the event item again, and
        # events (alarm_every=2 at time_scale 20) still arrive.
        await drain_until(driver, "fast", lambda s, e: {0, 1} <= {
            i for i, x in s if x.quality == "good" and x.ts_ns > restarted}, timeout=20)
        await drain_until(driver, "fast", lambda s, e: any(ev.ts_ns > restarted for ev in e),
                          timeout=60)
    finally:
        await driver.close()


async def test_values_received_before_a_connection_loss_are_not_lost(cnc: CncSimulator) -> None:
    sigs = signals({"path": "Monitoring/Axes/X", "mode": "subscribe", "queue_size": 5})
    driver = OpcUaDriver(connection(cnc.server.port), {"fast": sigs}, {"fast": 0.1})
    await driver.connect()
    try:
        await asyncio.sleep(1.0)  # notifications pile up: nobody drains
        before_loss = time.time_ns()
        await cnc.server.restart()
        await drain_until(driver, "fast", lambda s, e: any(
            x.quality == "good" and x.ts_ns < before_loss - 200_000_000 for _, x in s))
    finally:
        await driver.close()


async def test_browse_paths_survive_a_namespace_index_change() -> None:
    port = free_port()
    sigs = signals({"path": "Identification/Model"},
                   {"node": f"nsu={CNC_NS};s=CNC-01.Identification.Manufacturer"})
    driver = OpcUaDriver(connection(port), {"g": sigs}, {"g": 1.0})
    async with CncSimulator(port=port, seed=1) as first:
        index_before = first.server.namespace_index
        await driver.connect()
        before = await driver.read("g")
        await driver.close()
    async with CncSimulator(port=port, seed=1, extra_namespaces=3) as second:
        assert second.server.namespace_index != index_before
        await driver.connect()
        after = await driver.read("g")
        await driver.close()
    assert [s.quality for s in before + after] == ["good"] * 4
    assert [s.value for s in before] == [s.value for s in after]


# -- events -------------------------------------------------------------------------------

async def test_cycle_events_become_samples_and_event_records() -> None:
    port = free_port()
    conn = connection(port, default_namespace="imm", root="/Objects/Machines/IMM-01", events={
        "cycle": {"notifier": "/Objects/Machines/IMM-01",
                  "type": f"nsu={IMM_NS};s=CycleParametersEventType",
                  "fields": ["Cushion", "PartGood"]},
        "heavy": {"notifier": "i=2253", "where": [{"field": "Severity", "op": ">=", "value": 900}],
                  "poll": "cycle"},
    })
    sigs = signals({"event": "cycle", "field": "CycleCounter"},
                   {"event": "cycle", "field": "CycleTime"},
                   {"event": "cycle", "field": "InjectionPressurePeak"},
                   {"event": "heavy", "field": "Message"})
    driver = OpcUaDriver(conn, {"cycle": sigs}, {"cycle": 0.2})
    async with InjectionSimulator(port=port, seed=3, time_scale=30.0):
        await driver.connect()
        try:
            records: list[Any] = []

            def enough(samples: list[Any], events: list[Any]) -> bool:
                records[:] = events
                return len(events) >= 2

            seen = await drain_until(driver, "cycle", enough, timeout=30)
        finally:
            await driver.close()
    assert {r.source for r in records} == {"cycle"}  # the where clause kept "heavy" empty
    first = records[0]
    assert {"EventType", "SourceName", "Time", "Message", "Severity", "Cushion", "PartGood",
            "CycleCounter", "CycleTime", "InjectionPressurePeak"} <= set(first.fields)
    assert first.fields["SourceName"] == "IMM-01" and isinstance(first.fields["PartGood"], bool)
    assert first.fields["EventType"] == f"nsu={IMM_NS};s=CycleParametersEventType"
    counters = [x for i, x in seen if i == 0]
    assert [c.value for c in counters][:2] == [records[0].fields["CycleCounter"],
                                              records[1].fields["CycleCounter"]]
    assert all(c.ts_ns == r.ts_ns for c, r in zip(counters, records))  # event Time is ts
    assert all(isinstance(x.value, float) for i, x in seen if i in (1, 2))
    assert not any(i == 3 for i, _ in seen)


# -- security -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def client_pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pki = tmp_path_factory.mktemp("pki")
    create_certificate(pki / "own" / "cert.der", pki / "own" / "key.pem", "urn:test:edge-agent")
    return pki


def secure(port: int, pki: Path, policy: str, mode: str, trust: Path, **extra: Any) -> OpcUaConnection:
    return connection(port, security={
        "policy": policy, "mode": mode, "certificate": str(pki / "own" / "cert.der"),
        "private_key": str(pki / "own" / "key.pem"), "trust": str(trust),
        "application_uri": "urn:test:edge-agent", **extra.pop("security", {})}, **extra)


POLICIES = ["Basic256Sha256", "Aes128_Sha256_RsaOaep", "Aes256_Sha256_RsaPss"]


async def test_every_security_policy_and_mode_connects(client_pki: Path, tmp_path: Path) -> None:
    port = free_port()
    async with CncSimulator(port=port, security="all", pki_dir=tmp_path / "server") as sim:
        trust = tmp_path / "trusted"
        trust.mkdir()
        assert sim.server.certificate_path is not None
        (trust / "server.der").write_bytes(Path(sim.server.certificate_path).read_bytes())
        for policy in POLICIES:
            for mode in ("Sign", "SignAndEncrypt"):
                driver = OpcUaDriver(secure(port, client_pki, policy, mode, trust),
                                     {"g": signals({"path": "Identification/Model"})}, {"g": 1.0})
                await driver.connect()
                try:
                    [sample] = await driver.read("g")
                    assert sample.quality == "good", (policy, mode, sample)
                finally:
                    await driver.close()


async def test_untrusted_server_is_refused_with_a_clear_message(client_pki: Path, tmp_path: Path) -> None:
    port = free_port()
    trust = tmp_path / "pki" / "trusted"
    trust.mkdir(parents=True)
    async with CncSimulator(port=port, security="all", pki_dir=tmp_path / "server"):
        driver = OpcUaDriver(secure(port, client_pki, "Basic256Sha256", "SignAndEncrypt", trust),
                             {"g": signals({"path": "Identification/Model"})}, {"g": 1.0})
        with pytest.raises(UntrustedServer, match="is not trusted; it was saved as .*rejected"):
            await driver.connect()
        assert not driver.connected
        rejected = list((tmp_path / "pki" / "rejected").iterdir())
        assert len(rejected) == 1
        # Moving it over, as the message says, makes the server trusted.
        rejected[0].rename(trust / rejected[0].name)
        await driver.connect()
        assert (await driver.read("g"))[0].quality == "good"
        await driver.close()


async def test_trust_on_first_use_stores_the_first_certificate(client_pki: Path, tmp_path: Path) -> None:
    trust = tmp_path / "trusted"
    port = free_port()
    async with CncSimulator(port=port, security="all", pki_dir=tmp_path / "server-a"):
        conn = secure(port, client_pki, "Aes256_Sha256_RsaPss", "SignAndEncrypt", trust,
                      security={"trust_on_first_use": True})
        driver = OpcUaDriver(conn, {"g": signals({"path": "Identification/Model"})}, {"g": 1.0})
        await driver.connect()
        await driver.close()
        assert len(list(trust.iterdir())) == 1
    # A different server on the same address (another certificate) is then refused.
    async with CncSimulator(port=port, security="all", pki_dir=tmp_path / "server-b"):
        with pytest.raises(UntrustedServer):
            await driver.connect()


async def test_server_that_does_not_trust_our_certificate(client_pki: Path, tmp_path: Path) -> None:
    port = free_port()
    (tmp_path / "clients").mkdir()
    async with CncSimulator(port=port, security="all", pki_dir=tmp_path / "server",
                            trusted_clients_dir=tmp_path / "clients") as sim:
        trust = tmp_path / "trusted"
        trust.mkdir()
        (trust / "server.der").write_bytes(Path(sim.server.certificate_path).read_bytes())  # type: ignore[arg-type]
        driver = OpcUaDriver(secure(port, client_pki, "Basic256Sha256", "Sign", trust),
                             {"g": signals({"path": "Identification/Model"})}, {"g": 1.0})
        with pytest.raises(ConnectionError) as refused:
            await driver.connect()
        assert not isinstance(refused.value, UntrustedServer)
        assert not driver.connected


async def test_policy_the_server_does_not_offer(client_pki: Path, tmp_path: Path) -> None:
    port = free_port()
    async with CncSimulator(port=port, security=["None", "Basic256Sha256-Sign"],
                            pki_dir=tmp_path / "server"):
        driver = OpcUaDriver(secure(port, client_pki, "Aes256_Sha256_RsaPss", "SignAndEncrypt",
                                    tmp_path / "trusted"),
                             {"g": signals({"path": "Identification/Model"})}, {"g": 1.0})
        with pytest.raises(ConnectionError, match="offers no endpoint with Aes256_Sha256_RsaPss/"
                                                  "SignAndEncrypt; it offers .*Basic256Sha256/Sign"):
            await driver.connect()


async def test_username_password_from_env_and_file(tmp_path: Path) -> None:
    port = free_port()
    sigs = {"g": signals({"path": "Identification/Model"})}
    async with CncSimulator(port=port, users={"edge": "s3cret"}, allow_anonymous=False):
        os.environ["TEST_OPCUA_PASSWORD"] = "s3cret"
        try:
            # The simulator offers policy None only: the password goes in clear, on loopback.
            driver = OpcUaDriver(connection(port, auth={"username": "edge",
                                                        "password_env": "TEST_OPCUA_PASSWORD",
                                                        "allow_plaintext_password": True}),
                                 sigs, {"g": 1.0})
            await driver.connect()
            assert (await driver.read("g"))[0].quality == "good"
            await driver.close()
        finally:
            del os.environ["TEST_OPCUA_PASSWORD"]
        (tmp_path / "pw").write_text("wrong\n")
        driver = OpcUaDriver(connection(port, auth={"username": "edge",
                                                    "password_file": str(tmp_path / "pw"),
                                                    "allow_plaintext_password": True}),
                             sigs, {"g": 1.0})
        with pytest.raises(ConnectionError, match="Bad"):
            await driver.connect()
        driver = OpcUaDriver(connection(port, auth={"username": "edge", "password_env": "UNSET_VAR_X",
                                                    "allow_plaintext_password": True}),
                             sigs, {"g": 1.0})
        with pytest.raises(ConnectionError, match="UNSET_VAR_X"):
            await driver.connect()
        anonymous = OpcUaDriver(connection(port), sigs, {"g": 1.0})
        with pytest.raises(ConnectionError):
            await anonymous.connect()


async def test_certificate_identity(client_pki: Path, tmp_path: Path) -> None:
    port = free_port()
    user = tmp_path / "user"
    create_certificate(user / "cert.der", user / "key.pem", "urn:test:operator")
    async with CncSimulator(port=port, security="all", pki_dir=tmp_path / "server",
                            users={"someone": "else"}, allow_anonymous=False) as sim:
        trust = tmp_path / "trusted"
        trust.mkdir()
        (trust / "server.der").write_bytes(Path(sim.server.certificate_path).read_bytes())  # type: ignore[arg-type]
        conn = secure(port, client_pki, "Basic256Sha256", "SignAndEncrypt", trust,
                      auth={"certificate": str(user / "cert.der"),
                            "private_key": str(user / "key.pem")})
        driver = OpcUaDriver(conn, {"g": signals({"path": "Identification/Model"})}, {"g": 1.0})
        await driver.connect()
        try:
            assert (await driver.read("g"))[0].quality == "good"
        finally:
            await driver.close()


async def test_secure_session_and_subscription_come_back_after_a_restart(
        client_pki: Path, tmp_path: Path) -> None:
    port = free_port()
    async with CncSimulator(port=port, security=["Aes256_Sha256_RsaPss-SignAndEncrypt"],
                            pki_dir=tmp_path / "server", time_scale=20.0) as sim:
        trust = tmp_path / "trusted"
        trust.mkdir()
        (trust / "server.der").write_bytes(Path(sim.server.certificate_path).read_bytes())  # type: ignore[arg-type]
        conn = secure(port, client_pki, "Aes256_Sha256_RsaPss", "SignAndEncrypt", trust)
        driver = OpcUaDriver(conn, {"fast": signals({"path": "Monitoring/Axes/X", "mode": "subscribe"})},
                             {"fast": 0.1})
        await driver.connect()
        try:
            await drain_until(driver, "fast", lambda s, e: any(x.quality == "good" for _, x in s))
            await sim.server.restart()  # the server offers only the secure endpoint
            restarted = time.time_ns()
            await drain_until(driver, "fast", lambda s, e: any(
                x.quality == "good" and x.ts_ns > restarted for _, x in s), timeout=20)
            assert driver.connected
        finally:
            await driver.close()
