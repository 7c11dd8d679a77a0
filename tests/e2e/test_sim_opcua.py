"""Tests of the OPC UA simulators (CNC, injection moulding, bulk) through asyncua's Client."""

from __future__ import annotations

import asyncio
import contextlib
import math
import signal
import socket
import sys
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from asyncua import Client, ua
from asyncua.crypto import cert_gen, security_policies
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID

from simulators.opcua.bulk import BulkServer
from simulators.opcua.cnc import ALARMS, CncModel, CncSimulator
from simulators.opcua.injection import EVENT_PROPERTIES, InjectionSimulator
from simulators.opcua.pki import SECURITY_CHOICES, parse_security
from simulators.opcua.server import SimServer

REPO_ROOT = Path(__file__).resolve().parents[2]
CNC_NS = "urn:edge-agent:sim:cnc"
IMM_NS = "urn:edge-agent:sim:injection"
BULK_NS = "urn:edge-agent:sim:bulk"
CLIENT_URI = "urn:edge-agent:test:client"
TIMEOUT = 5.0


def sid(identifier: str | int, ns: int = 0) -> ua.NodeId:
    """NodeId (asyncua annotates NodeId with its own int/str subclasses)."""
    return ua.NodeId(identifier, ns)  # type: ignore[arg-type]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@asynccontextmanager
async def connect(url: str, **setup: Any) -> AsyncIterator[Client]:
    client = Client(url, timeout=TIMEOUT)
    client.application_uri = CLIENT_URI
    if setup.get("user"):
        client.set_user(setup["user"])
        client.set_password(setup["password"])
    await client.connect()
    try:
        yield client
    finally:
        with contextlib.suppress(Exception):
            await client.disconnect()


async def wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    # Deadlines, not speed claims: generous, so a loaded 2-core CI machine does not flake.
    deadline = time.monotonic() + 4 * timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)


class Recorder:
    """Subscription handler keeping everything it gets."""

    def __init__(self) -> None:
        self.changes: list[tuple[ua.NodeId, Any]] = []
        self.events: list[Any] = []

    def datachange_notification(self, node: Any, val: Any, data: Any) -> None:
        self.changes.append((node.nodeid, val))

    def event_notification(self, event: Any) -> None:
        self.events.append(event)

    def values(self, nodeid: ua.NodeId) -> list[Any]:
        return [v for n, v in self.changes if n == nodeid]


@dataclass(frozen=True)
class ClientCert:
    cert: Path
    key: Path


def make_client_cert(folder: Path, name: str) -> ClientCert:
    folder.mkdir(parents=True, exist_ok=True)
    key = cert_gen.generate_private_key()
    cert = cert_gen.generate_self_signed_app_certificate(
        key,
        name,
        {},
        [x509.UniformResourceIdentifier(CLIENT_URI), x509.DNSName("localhost")],
        extended=[ExtendedKeyUsageOID.CLIENT_AUTH],
    )
    out = ClientCert(folder / f"{name}.der", folder / f"{name}.pem")
    out.cert.write_bytes(cert.public_bytes(Encoding.DER))
    out.key.write_bytes(cert_gen.dump_private_key_as_pem(key))
    return out


@pytest.fixture(scope="module")
def client_certs(tmp_path_factory: pytest.TempPathFactory) -> tuple[ClientCert, ClientCert]:
    """(trusted, untrusted) client certificates with application URI CLIENT_URI."""
    folder = tmp_path_factory.mktemp("client-pki")
    return make_client_cert(folder, "trusted"), make_client_cert(folder, "untrusted")


POLICY_CLASSES: dict[str, Any] = {
    "Basic256Sha256": security_policies.SecurityPolicyBasic256Sha256,
    "Aes128_Sha256_RsaOaep": security_policies.SecurityPolicyAes128Sha256RsaOaep,
    "Aes256_Sha256_RsaPss": security_policies.SecurityPolicyAes256Sha256RsaPss,
}


async def secure_client(url: str, security: str, cert: ClientCert, server_cert: Path) -> Client:
    policy, mode = security.split("-")
    client = Client(url, timeout=TIMEOUT)
    client.application_uri = CLIENT_URI
    await client.set_security(
        POLICY_CLASSES[policy],
        str(cert.cert),
        str(cert.key),
        server_certificate=str(server_cert),
        mode=getattr(ua.MessageSecurityMode, mode),
    )
    return client


# --------------------------------------------------------------------------- shared bits


def test_parse_security() -> None:
    assert parse_security("all") == list(SECURITY_CHOICES)
    assert parse_security(["None", "Basic256Sha256-Sign,None"]) == ["None", "Basic256Sha256-Sign"]
    with pytest.raises(ValueError):
        parse_security("Basic128Rsa15-Sign")


def test_cnc_model_is_deterministic_and_timing_independent() -> None:
    a, b = CncModel(seed=3, alarm_every=3), CncModel(seed=3, alarm_every=3)
    for _ in range(3000):
        a.advance(0.1)
    for _ in range(30):
        b.advance(10.0)
    assert math.isclose(a.time, b.time)
    assert a.cycle_count == b.cycle_count >= 8
    assert (a.good, a.bad, a.alarms_raised) == (b.good, b.bad, b.alarms_raised)
    assert a.alarms_raised >= 2 and a.good + a.bad == a.cycle_count
    assert 20.0 <= a.cycle_time <= 40.0 or a.cycle_time == 0.0


# --------------------------------------------------------------------------- CNC


async def test_cnc_address_space_types_and_changing_values() -> None:
    port = free_port()
    async with CncSimulator(port=port, time_scale=30.0, seed=1, alarm_every=0) as sim:
        assert sim.endpoint == f"opc.tcp://127.0.0.1:{port}/"
        async with connect(sim.endpoint) as c:
            ns = await c.get_namespace_index(CNC_NS)
            assert ns == 2
            machine = await c.nodes.objects.get_child([f"{ns}:Machines", f"{ns}:CNC-01"])
            assert machine.nodeid == sid("CNC-01", ns)
            for spec in CncSimulator.VARIABLES:
                node = await machine.get_child([f"{ns}:{seg}" for seg in spec.segments])
                assert node.nodeid == sid("CNC-01." + spec.path.replace("/", "."), ns)
                variant = (await node.read_data_value()).Value
                assert variant is not None and variant.VariantType == spec.vtype, spec.path
            speed = c.get_node(sid("CNC-01.Monitoring.Spindle.ActSpeed", ns))
            assert await speed.read_data_type() == sid(ua.ObjectIds.Double)
            state = c.get_node(sid("CNC-01.Monitoring.Channel1.ChannelState", ns))
            enum_type = await state.read_data_type()
            assert enum_type == sid("ChannelStateEnumeration", ns)
            strings = await c.get_node(enum_type).get_child("0:EnumStrings")
            assert [t.Text for t in await strings.read_value()] == [
                "Active",
                "Interrupted",
                "Reset",
            ]
            diag = "CNC-01.Monitoring.Diagnostics."
            server_state = c.get_node(sid(diag + "ServerStateEnum", ns))
            assert await server_state.read_data_type() == sid(ua.ObjectIds.ServerState)
            array = c.get_node(sid(diag + "DoubleArray", ns))
            assert await array.read_value_rank() == 1 and len(await array.read_value()) == 3
            assert (await c.get_node(sid(diag + "UInt64", ns)).read_value()) > 2**64 - 2**60
            assert isinstance(await c.get_node(sid(diag + "DateTime", ns)).read_value(), datetime)
            assert isinstance(await c.get_node(sid(diag + "ByteString", ns)).read_value(), bytes)
            year = c.get_node(sid("CNC-01.Identification.YearOfConstruction", ns))
            assert await year.read_value() == 2019

            watched = ["Monitoring.Spindle.ActSpeed", "Monitoring.Axes.X", "Monitoring.Axes.Z",
                       "Monitoring.Diagnostics.Int64", "Production.CycleCount"]  # fmt: skip
            nodes = [c.get_node(sid("CNC-01." + w, ns)) for w in watched]
            rec = Recorder()
            sub = await c.create_subscription(50, rec)
            await sub.subscribe_data_change(nodes)
            await wait_for(lambda: all(len(set(rec.values(n.nodeid))) >= 3 for n in nodes), 8.0)
            good = await c.get_node(sid("CNC-01.Production.PartCountGood", ns)).read_value()
            bad = await c.get_node(sid("CNC-01.Production.PartCountBad", ns)).read_value()
            count = await c.get_node(sid("CNC-01.Production.CycleCount", ns)).read_value()
            assert good + bad == count >= 1
            cycle = await c.get_node(sid("CNC-01.Production.CycleTime", ns)).read_value()
            assert 20.0 <= cycle <= 40.0


async def test_cnc_alarm_events_reach_machine_and_server_subscriptions() -> None:
    async with (
        CncSimulator(port=free_port(), time_scale=25.0, seed=2, alarm_every=1) as sim,
        connect(sim.endpoint) as c,
    ):
        ns = await c.get_namespace_index(CNC_NS)
        machine = c.get_node(sid("CNC-01", ns))
        etype = c.get_node(sid("CncAlarmEventType", ns))
        on_machine, on_server, values = Recorder(), Recorder(), Recorder()
        sub1 = await c.create_subscription(50, on_machine)
        await sub1.subscribe_events(machine, etype)
        sub2 = await c.create_subscription(50, on_server)
        await sub2.subscribe_events(c.nodes.server, etype)
        active = c.get_node(sid("CNC-01.Notification.ActiveAlarm", ns))
        sub3 = await c.create_subscription(20, values)
        await sub3.subscribe_data_change(active)
        await wait_for(lambda: bool(on_machine.events and on_server.events), 6.0)
        ev = on_machine.events[0]
        codes = {code: (text, severity) for code, text, severity, _ in ALARMS}
        assert ev.AlarmCode in codes
        assert ev.AlarmText == codes[ev.AlarmCode][0]
        assert ev.Severity == codes[ev.AlarmCode][1]
        assert ev.Message.Text == f"{ev.AlarmCode}: {ev.AlarmText}"
        assert ev.SourceNode == machine.nodeid and ev.SourceName == "CNC-01"
        assert ev.EventType == etype.nodeid
        assert on_server.events[0].EventId == ev.EventId
        await wait_for(lambda: ev.AlarmCode in values.values(active.nodeid), 2.0)
        await wait_for(lambda: values.values(active.nodeid)[-1] == 0, 3.0)
        notifier = await c.nodes.server.get_referenced_nodes(ua.ObjectIds.HasNotifier)
        assert machine.nodeid in [n.nodeid for n in notifier]


# --------------------------------------------------------------------------- injection


async def test_injection_address_space_and_cycle_events() -> None:
    async with (
        InjectionSimulator(port=free_port(), time_scale=40.0, seed=5, extra_namespaces=2) as sim,
        connect(sim.endpoint) as c,
    ):
        ns = await c.get_namespace_index(IMM_NS)
        assert ns == 4
        machine = await c.nodes.objects.get_child([f"{ns}:Machines", f"{ns}:IMM-01"])
        for spec in InjectionSimulator.VARIABLES:
            node = await machine.get_child([f"{ns}:{seg}" for seg in spec.segments])
            assert node.nodeid == sid("IMM-01." + spec.path.replace("/", "."), ns)
            variant = (await node.read_data_value()).Value
            assert variant is not None and variant.VariantType == spec.vtype, spec.path
        mode = c.get_node(sid("IMM-01.MachineStatus.MachineMode", ns))
        assert await mode.read_data_type() == sid("MachineModeEnumeration", ns)
        assert await mode.read_value() == 1
        notifier = await machine.read_event_notifier()
        assert ua.EventNotifier.SubscribeToEvents in notifier

        etype = c.get_node(sid("CycleParametersEventType", ns))
        on_machine, on_server, temps = Recorder(), Recorder(), Recorder()
        sub1 = await c.create_subscription(50, on_machine)
        await sub1.subscribe_events(machine, etype)
        sub2 = await c.create_subscription(50, on_server)
        await sub2.subscribe_events(c.nodes.server, etype)
        zone = c.get_node(sid("IMM-01.InjectionUnit.BarrelZones.Zone3", ns))
        pressure = c.get_node(sid("IMM-01.InjectionUnit.InjectionPressure", ns))
        sub3 = await c.create_subscription(50, temps)
        await sub3.subscribe_data_change([zone, pressure])
        await wait_for(lambda: len(on_machine.events) >= 2 and len(on_server.events) >= 2, 6.0)
        first, second = on_machine.events[:2]
        assert (first.CycleCounter, second.CycleCounter) == (1, 2)
        for ev in (first, second):
            for name, _, _ in EVENT_PROPERTIES:
                assert getattr(ev, name) is not None, name
            assert ev.Message.Text == f"cycle {ev.CycleCounter}"
            assert ev.Severity == 100 and ev.SourceNode == machine.nodeid
            assert 15.0 <= ev.CycleTime <= 25.0
            assert 3.0 < ev.Cushion < 7.0 and 0.5 < ev.InjectionTime < 2.0
            assert (
                850 < ev.InjectionPressurePeak < 1150
                and 0 < ev.HoldPressurePeak < ev.InjectionPressurePeak
            )
            assert 35 < ev.MouldTemperatureAvg < 50 and isinstance(ev.PartGood, bool)
        assert [e.EventId for e in on_server.events[:2]] == [first.EventId, second.EventId]
        shots = await c.get_node(sid("IMM-01.Production.ShotCounter", ns)).read_value()
        good = await c.get_node(sid("IMM-01.Production.GoodParts", ns)).read_value()
        bad = await c.get_node(sid("IMM-01.Production.BadParts", ns)).read_value()
        assert shots >= good + bad >= 2
        assert len(set(temps.values(zone.nodeid))) >= 3
        assert max(temps.values(pressure.nodeid)) > 300  # sampled: hold phase at least


# --------------------------------------------------------------------------- faults


async def test_pause_publishing_silences_data_and_keepalives_but_not_reads() -> None:
    async with (
        CncSimulator(port=free_port(), time_scale=20.0, seed=1, alarm_every=0) as sim,
        connect(sim.endpoint) as c,
    ):
        # asyncua 2.x clients recreate a silent subscription after >= 1 s: keep that out
        c._stale_check_margin = 100.0
        ns = await c.get_namespace_index(CNC_NS)
        speed = c.get_node(sid("CNC-01.Monitoring.Axes.X", ns))
        model = c.get_node(sid("CNC-01.Identification.Model", ns))
        params = ua.CreateSubscriptionParameters(
            RequestedPublishingInterval=50,
            RequestedLifetimeCount=300,
            RequestedMaxKeepAliveCount=3,
            PublishingEnabled=True,
        )
        data, idle = Recorder(), Recorder()
        sub_data = await c.create_subscription(params, data)
        await sub_data.subscribe_data_change(speed)
        sub_idle = await c.create_subscription(params, idle)  # keep-alives only
        await sub_idle.subscribe_data_change(model)
        await wait_for(lambda: len(data.changes) >= 3, 3.0)
        ka_before = sub_idle.last_publish_at
        await wait_for(lambda: sub_idle.last_publish_at != ka_before, 1.0)

        sim.server.pause_publishing(True)
        assert sim.server.publishing_paused
        await asyncio.sleep(0.5)  # let anything already on the wire arrive
        n_data, ka = len(data.changes), (sub_data.last_publish_at, sub_idle.last_publish_at)
        reads = []
        for _ in range(4):  # 0.6 s = 4 keep-alive periods (3 x 50 ms)
            await asyncio.sleep(0.15)
            reads.append(await speed.read_value())
            assert (await c.nodes.server.get_child("0:ServerStatus")) is not None
        assert len(set(reads)) >= 2, "values keep changing and Read works while paused"
        assert len(data.changes) == n_data
        assert (sub_data.last_publish_at, sub_idle.last_publish_at) == ka

        sim.server.pause_publishing(False)
        await wait_for(lambda: len(data.changes) > n_data, 2.0)
        await wait_for(lambda: sub_idle.last_publish_at != ka[1], 2.0)


async def test_delay_responses() -> None:
    async with (
        BulkServer(port=free_port(), variables=3, rate=5.0, delay=0.3) as bulk,
        connect(bulk.endpoint) as c,
    ):
        node = c.get_node(bulk.nodeid(0))
        started = time.monotonic()
        await node.read_value()
        assert time.monotonic() - started >= 0.3
        bulk.server.delay_responses(0)
        started = time.monotonic()
        await node.read_value()
        assert time.monotonic() - started < 0.25


async def test_restart_keeps_port_nodeids_and_values_evolving() -> None:
    port = free_port()
    async with CncSimulator(port=port, time_scale=20.0, seed=4, alarm_every=0) as sim:
        async with connect(sim.endpoint) as c:
            ns = await c.get_namespace_index(CNC_NS)
            ids = [sid("CNC-01." + s.path.replace("/", "."), ns) for s in CncSimulator.VARIABLES]
            before = await c.read_values([c.get_node(i) for i in ids])
            started = await c.get_node(ua.ObjectIds.Server_ServerStatus_StartTime).read_value()
            sub = await c.create_subscription(100, Recorder())
            await sub.subscribe_data_change(c.get_node(ids[0]))
            sim_time = sim.model.time
            await sim.server.restart()
            assert sim.server.port == port and sim.server.boots == 2
            assert sim.server.server is not None
            assert sim.server.server.iserver.subscription_service.subscriptions == {}
            with pytest.raises(ConnectionError):  # the old session is gone with its connection
                await c.get_node(ids[0]).read_value()
        async with connect(f"opc.tcp://127.0.0.1:{port}/") as c2:
            assert await c2.get_namespace_index(CNC_NS) == ns
            after = await c2.read_values([c2.get_node(i) for i in ids])
            assert len(after) == len(before)
            assert after[:5] == before[:5]  # identification is constant
            restarted = await c2.get_node(ua.ObjectIds.Server_ServerStatus_StartTime).read_value()
            assert restarted > started
            assert sim.model.time > sim_time
            x = c2.get_node(sid("CNC-01.Monitoring.Axes.X", ns))
            first = await x.read_value()
            await wait_for(lambda: sim.out["Monitoring/Axes/X"] != first, 2.0)


async def test_extra_namespaces_move_the_namespace_index() -> None:
    indexes = []
    for extra in (0, 3):
        async with (
            BulkServer(port=free_port(), variables=2, rate=2.0, extra_namespaces=extra) as bulk,
            connect(bulk.endpoint) as c,
        ):
            array = await c.get_namespace_array()
            ns = array.index(BULK_NS)
            assert array[2:ns] == [f"urn:edge-agent:sim:dummy:{i}" for i in range(extra)]
            node = c.get_node(sid("Bulk.V00001", ns))
            assert await node.read_browse_name() == ua.QualifiedName("V00001", ns)
            indexes.append(ns)
    assert indexes == [2, 5]


# --------------------------------------------------------------------------- security


async def test_every_security_policy_with_client_certificate_and_users(
    tmp_path: Path, client_certs: tuple[ClientCert, ClientCert]
) -> None:
    trusted, untrusted = client_certs
    trust_dir = tmp_path / "trusted"
    trust_dir.mkdir()
    trust_dir.joinpath("trusted.der").write_bytes(trusted.cert.read_bytes())
    pki = tmp_path / "pki"
    async with BulkServer(
        port=free_port(),
        variables=2,
        rate=2.0,
        security="all",
        pki_dir=pki,
        trusted_clients_dir=trust_dir,
        users={"operator": "s3cret"},
    ) as bulk:
        server_cert = bulk.server.certificate_path
        assert (
            server_cert is not None and server_cert.parent == pki and server_cert.suffix == ".der"
        )
        cert = x509.load_der_x509_certificate(server_cert.read_bytes())
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert bulk.server.application_uri in san.get_values_for_type(
            x509.UniformResourceIdentifier
        )

        async with connect(bulk.endpoint) as c:  # None + anonymous still works
            endpoints = await c.get_endpoints()
            offered = {
                (e.SecurityPolicyUri.rsplit("#", 1)[1], e.SecurityMode.name) for e in endpoints
            }
            assert len(offered) == 7
            secure = [e for e in endpoints if e.SecurityMode != ua.MessageSecurityMode.None_]
            tokens = {t.TokenType for t in secure[0].UserIdentityTokens}
            assert tokens == {
                ua.UserTokenType.Anonymous,
                ua.UserTokenType.UserName,
                ua.UserTokenType.Certificate,
            }

        for security in SECURITY_CHOICES:
            if security == "None":
                continue
            client = await secure_client(bulk.endpoint, security, trusted, server_cert)
            client.set_user("operator")
            client.set_password("s3cret")
            async with client:
                assert await client.get_node(bulk.nodeid(1)).read_value() >= 0, security

        # certificate identity token (X509) instead of a password
        client = await secure_client(
            bulk.endpoint, "Basic256Sha256-SignAndEncrypt", trusted, server_cert
        )
        await client.load_client_certificate(str(trusted.cert))
        await client.load_private_key(trusted.key)
        async with client:
            assert await client.get_node(bulk.nodeid(0)).read_value() >= 0

        refused = await secure_client(
            bulk.endpoint, "Basic256Sha256-SignAndEncrypt", untrusted, server_cert
        )
        with pytest.raises(ua.UaStatusCodeError) as err:
            await refused.connect()
        assert err.value.code == ua.StatusCodes.BadCertificateUntrusted
        with contextlib.suppress(Exception):
            await refused.disconnect()

        wrong = await secure_client(
            bulk.endpoint, "Aes256_Sha256_RsaPss-Sign", trusted, server_cert
        )
        wrong.set_user("operator")
        wrong.set_password("wrong")
        with pytest.raises(ua.UaStatusCodeError) as err:
            await wrong.connect()
        assert err.value.code == ua.StatusCodes.BadUserAccessDenied
        with contextlib.suppress(Exception):
            await wrong.disconnect()

        with pytest.raises(ua.UaStatusCodeError):
            async with connect(bulk.endpoint, user="nobody", password="s3cret"):
                pass


async def test_anonymous_can_be_refused() -> None:
    async with BulkServer(
        port=free_port(), variables=1, rate=2.0, users={"u": "p"}, allow_anonymous=False
    ) as bulk:
        with pytest.raises(ua.UaStatusCodeError):
            async with connect(bulk.endpoint):
                pass
        async with connect(bulk.endpoint, user="u", password="p") as c:
            assert await c.get_node(bulk.nodeid(0)).read_value() >= 0
    with pytest.raises(ValueError):
        SimServer(namespace_uri="urn:x", allow_anonymous=False)


# --------------------------------------------------------------------------- bulk


async def test_bulk_every_variable_changes_every_tick() -> None:
    count = 300
    async with (
        BulkServer(port=free_port(), variables=count, rate=10.0) as bulk,
        connect(bulk.endpoint) as c,
    ):
        ns = await c.get_namespace_index(BULK_NS)
        folder = await c.nodes.objects.get_child(f"{ns}:Bulk")
        children = await folder.get_children()
        assert [n.nodeid for n in children] == [sid(f"Bulk.V{i:05d}", ns) for i in range(count)]
        rec = Recorder()
        sub = await c.create_subscription(20, rec)
        await sub.subscribe_data_change(children, queuesize=1)
        first_tick = bulk.tick
        await wait_for(lambda: bulk.tick >= first_tick + 4, 10.0)
        await asyncio.sleep(0.15)
        by_tick: dict[int, set[ua.NodeId]] = defaultdict(set)
        index = {n.nodeid: i for i, n in enumerate(children)}
        for nodeid, value in rec.changes:
            tick = math.floor(value)
            assert math.isclose(value - tick, index[nodeid] / 1_000_000, abs_tol=1e-9)
            by_tick[tick].add(nodeid)
        complete = [t for t in range(first_tick + 1, bulk.tick + 1) if len(by_tick[t]) == count]
        assert len(complete) >= 3, {t: len(v) for t, v in by_tick.items()}


# --------------------------------------------------------------------------- CLI


async def test_cli_prints_listening_line_handles_signals_and_stops_on_sigterm() -> None:
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "simulators.opcua.cnc",
        "--port", str(port), "--name", "CNC-07", "--seed", "1", "--time-scale", "10",
        "--alarm-every", "0", "--extra-namespaces", "1",
        cwd=REPO_ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        assert proc.stdout is not None

        async def line() -> str:
            assert proc.stdout is not None
            return (await asyncio.wait_for(proc.stdout.readline(), 15.0)).decode()

        assert await line() == f"cnc listening on opc.tcp://127.0.0.1:{port}\n"
        async with connect(f"opc.tcp://127.0.0.1:{port}/") as c:
            ns = await c.get_namespace_index(CNC_NS)
            assert ns == 3
            name = c.get_node(sid("CNC-07.Production.ActiveProgram.Name", ns))
            assert (await name.read_value()).startswith("O")
        proc.send_signal(signal.SIGUSR1)
        assert await line() == "cnc publishing paused\n"
        proc.send_signal(signal.SIGUSR1)
        assert await line() == "cnc publishing resumed\n"
        proc.send_signal(signal.SIGUSR2)
        assert await line() == f"cnc restarted on opc.tcp://127.0.0.1:{port}\n"
        async with connect(f"opc.tcp://127.0.0.1:{port}/") as c:
            name = c.get_node(sid("CNC-07.Production.ActiveProgram.Name", ns))
            assert (await name.read_value()).startswith("O")
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 10.0) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
