"""Shared bootstrap for the OPC UA device simulators (server side, built on asyncua).

``SimServer`` wraps one ``asyncua.Server`` and adds what the simulators need on top:

* endpoint ``opc.tcp://HOST:PORT/`` (HOST defaults to 127.0.0.1), port 0 = OS picks;
* security: any of ``None``, ``Basic256Sha256-Sign``, ``Basic256Sha256-SignAndEncrypt``,
  ``Aes128_Sha256_RsaOaep-Sign``, ``Aes128_Sha256_RsaOaep-SignAndEncrypt``,
  ``Aes256_Sha256_RsaPss-Sign``, ``Aes256_Sha256_RsaPss-SignAndEncrypt`` or ``all``. A secure
  policy makes the server create (once, in ``pki_dir``) a self-signed application certificate
  whose SubjectAltName URI is the server's application URI; ``certificate_path`` is its DER file;
* ``trusted_clients_dir``: only client certificates found (DER or PEM, compared byte-exact) in
  that folder are accepted at CreateSession and for X509 identity tokens; re-read on each use.
  Without it any client certificate is accepted. (A None-security channel carries no client
  certificate, so the folder does not restrict it.);
* ``users``: username/password login (only those credentials); anonymous stays allowed unless
  ``allow_anonymous=False``; secure endpoints also offer X509 (certificate) identity tokens;
* ``extra_namespaces``: dummy namespaces ``urn:edge-agent:sim:dummy:<i>`` registered before the
  simulator's own one, so its namespace index (2 + extra_namespaces) moves;
* faults: ``pause_publishing(on)`` (no Publish responses at all, not even keep-alives, while
  Read/Browse keep working; notifications queue up and flow again on resume; the switch
  survives restarts; CLI: SIGUSR1 toggles), ``delay_responses(seconds)`` (every response goes out
  that much later, in order; CLI ``--delay-ms``), ``restart()`` (a brand-new asyncua server on the
  same port with the same NodeIds: sockets, sessions and subscriptions are gone, ids restart
  like a real server's; values keep evolving; CLI: SIGUSR2).

``MachineSimulator`` is the common base of the machine simulators: it owns a SimServer,
rebuilds the address space on every (re)start and runs the model on a fixed update period,
writing only values that changed (through ``SimServer.write_values``, which bypasses asyncua's
per-write checks) and emitting events from the machine object and the Server object.
"""

from __future__ import annotations

import abc
import argparse
import asyncio
import contextlib
import dataclasses
import hashlib
import ipaddress
import logging
import math
import signal
import socket
import sys
import tempfile
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar, Self

from asyncua import Node, Server, ua
from asyncua.common import events as ua_events
from asyncua.common.structures104 import new_enum
from asyncua.common.utils import ServiceError
from asyncua.crypto import cert_gen
from asyncua.crypto.permission_rules import User, UserRole
from asyncua.server.address_space import AttributeValue
from asyncua.server.binary_server_asyncio import BinaryServer, OPCUAProtocol
from asyncua.server.internal_server import InternalServer
from asyncua.server.internal_subscription import InternalSubscription
from asyncua.server.monitored_item_service import MonitoredItemData, MonitoredItemValues
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID

__all__ = [
    "SECURITY_CHOICES",
    "AddressSpaceBuilder",
    "MachineSimulator",
    "SimServer",
    "VarSpec",
    "add_server_arguments",
    "ns0",
    "parse_security",
    "run_cli",
    "server_options_from_args",
]

logger = logging.getLogger(__name__)

SECURITY_CHOICES: dict[str, ua.SecurityPolicyType] = {
    "None": ua.SecurityPolicyType.NoSecurity,
    "Basic256Sha256-Sign": ua.SecurityPolicyType.Basic256Sha256_Sign,
    "Basic256Sha256-SignAndEncrypt": ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt,
    "Aes128_Sha256_RsaOaep-Sign": ua.SecurityPolicyType.Aes128Sha256RsaOaep_Sign,
    "Aes128_Sha256_RsaOaep-SignAndEncrypt": (
        ua.SecurityPolicyType.Aes128Sha256RsaOaep_SignAndEncrypt
    ),
    "Aes256_Sha256_RsaPss-Sign": ua.SecurityPolicyType.Aes256Sha256RsaPss_Sign,
    "Aes256_Sha256_RsaPss-SignAndEncrypt": ua.SecurityPolicyType.Aes256Sha256RsaPss_SignAndEncrypt,
}
DUMMY_NAMESPACE = "urn:edge-agent:sim:dummy:{}"
# A tick writing thousands of values would otherwise hold the event loop for the whole batch;
# yielding every so many monitored-item callbacks lets Read/Publish interleave.
_YIELD_EVERY_CALLBACKS = 2000
_CERT_DAYS = 3650


def ns0(identifier: int) -> ua.NodeId:
    """Numeric NodeId in namespace 0 (asyncua annotates NodeId with its own int subclasses)."""
    return ua.NodeId(identifier)  # type: ignore[arg-type]


def string_nodeid(identifier: str, ns: int) -> ua.NodeId:
    """String NodeId ``ns=<ns>;s=<identifier>``."""
    return ua.NodeId(identifier, ns)  # type: ignore[arg-type]


def parse_security(values: str | Iterable[str]) -> list[str]:
    """Expand ``all``/comma lists into known policy strings (order kept, duplicates dropped)."""
    items = [values] if isinstance(values, str) else list(values)
    out: list[str] = []
    for item in items:
        for part in (p.strip() for p in item.split(",")):
            if not part:
                continue
            names = list(SECURITY_CHOICES) if part.lower() == "all" else [part]
            for name in names:
                if name not in SECURITY_CHOICES:
                    raise ValueError(
                        f"unknown security {name!r}; "
                        f"choose from {', '.join(SECURITY_CHOICES)} or all"
                    )
                if name not in out:
                    out.append(name)
    if not out:
        raise ValueError("security list is empty")
    return out


def _der_fingerprint(der: bytes) -> str:
    return hashlib.sha256(der).hexdigest()


def _load_cert_der(path: Path) -> bytes | None:
    data = path.read_bytes()
    try:
        if b"-----BEGIN CERTIFICATE-----" in data:
            return x509.load_pem_x509_certificate(data).public_bytes(Encoding.DER)
        return x509.load_der_x509_certificate(data).public_bytes(Encoding.DER)
    except ValueError:
        return None


class TrustedClients:
    """Fingerprints of the client certificates in a folder, re-read on every check."""

    SUFFIXES = (".der", ".pem", ".crt", ".cer")

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def fingerprints(self) -> set[str]:
        found: set[str] = set()
        if not self.folder.is_dir():
            return found
        for path in sorted(self.folder.iterdir()):
            if path.suffix.lower() in self.SUFFIXES and path.is_file():
                der = _load_cert_der(path)
                if der is not None:
                    found.add(_der_fingerprint(der))
        return found

    def is_trusted(self, der: bytes) -> bool:
        return _der_fingerprint(der) in self.fingerprints()

    async def validate(self, cert: x509.Certificate, app: ua.ApplicationDescription) -> None:
        """asyncua certificate-validator hook: refuse certificates not in the folder."""
        if not self.is_trusted(cert.public_bytes(Encoding.DER)):
            logger.warning(
                "refusing untrusted client certificate %s (%s)", cert.subject, app.ApplicationUri
            )
            raise ServiceError(ua.StatusCodes.BadCertificateUntrusted)


class SimUserManager:
    """Username/password from a dict; anonymous/certificate identities pass (token types filter)."""

    def __init__(self, users: Mapping[str, str] | None, trusted: TrustedClients | None) -> None:
        self.users = dict(users or {})
        self.trusted = trusted

    def get_user(
        self,
        iserver: InternalServer,
        username: str | None = None,
        password: str | None = None,
        certificate: Any = None,
    ) -> User | None:
        if username is not None:
            if username in self.users and self.users[username] == password:
                return User(role=UserRole.User, name=username)
            logger.warning("refusing login of user %r", username)
            return None
        # certificate is the X509 token, else the secure channel's client certificate (b"" on None)
        if self.trusted is not None and certificate:
            der = (
                certificate
                if isinstance(certificate, bytes)
                else certificate.public_bytes(Encoding.DER)
            )
            if not self.trusted.is_trusted(der):
                return None
        return User(role=UserRole.User)


def ensure_server_certificate(pki_dir: Path, stem: str, application_uri: str) -> tuple[Path, Path]:
    """(DER certificate, PEM key) in pki_dir, (re)generated unless valid for application_uri."""
    pki_dir.mkdir(parents=True, exist_ok=True)
    cert_path = pki_dir / f"{stem}-cert.der"
    key_path = pki_dir / f"{stem}-key.pem"
    if cert_path.is_file() and key_path.is_file():
        try:
            cert = x509.load_der_x509_certificate(cert_path.read_bytes())
            san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            if application_uri in san.get_values_for_type(
                x509.UniformResourceIdentifier
            ) and cert.not_valid_after_utc > datetime.now(UTC):
                return cert_path, key_path
        except (ValueError, x509.ExtensionNotFound):
            pass
    key = cert_gen.generate_private_key()
    hostnames = sorted({"localhost", socket.gethostname()})
    alt_names: list[x509.GeneralName] = [x509.UniformResourceIdentifier(application_uri)]
    alt_names += [x509.DNSName(h) for h in hostnames]
    alt_names.append(x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
    cert = cert_gen.generate_self_signed_app_certificate(
        key,
        stem,
        {"organizationName": "edge-agent simulators"},
        alt_names,
        extended=[ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH],
        days=_CERT_DAYS,
    )
    key_path.write_bytes(cert_gen.dump_private_key_as_pem(key))
    key_path.chmod(0o600)
    cert_path.write_bytes(cert.public_bytes(Encoding.DER))
    return cert_path, key_path


# --------------------------------------------------------------------------- fault plumbing


class _Faults:
    """Switches read by the transport wrappers and publish gates of one SimServer."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.paused = False


class _DelayedTransport:
    """Transport proxy that sends every write ``faults.delay`` seconds later, in order."""

    def __init__(self, transport: asyncio.Transport, faults: _Faults) -> None:
        self._transport = transport
        self._faults = faults
        self._queue: deque[tuple[float, bytes]] = deque()
        self._timer: asyncio.TimerHandle | None = None

    def write(self, data: bytes) -> None:
        delay = self._faults.delay
        if delay <= 0 and not self._queue:
            self._transport.write(data)
            return
        loop = asyncio.get_running_loop()
        due = loop.time() + max(delay, 0.0)
        # Order matters (sequence numbers): never send before what is already queued.
        if self._queue and due < self._queue[-1][0]:
            due = self._queue[-1][0]
        self._queue.append((due, data))
        if self._timer is None:
            self._timer = loop.call_at(due, self._flush)

    def _flush(self) -> None:
        self._timer = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        while self._queue and self._queue[0][0] <= now:
            _, data = self._queue.popleft()
            if not self._transport.is_closing():
                self._transport.write(data)
        if self._queue:
            self._timer = loop.call_at(self._queue[0][0], self._flush)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._queue.clear()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class _SimProtocol(OPCUAProtocol):
    faults: _Faults

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        super().connection_made(_DelayedTransport(transport, self.faults))  # type: ignore[arg-type]
        processor = self.processor
        if processor is None:  # refused (too many connections)
            return
        evict = processor._evict_publish_request
        faults = self.faults

        def evict_publish_request() -> None:
            # A client piling up Publish requests would otherwise get BadTooManyPublishRequests
            # answers, i.e. Publish responses, while publishing is paused: drop them silently.
            if faults.paused and processor._publish_requests:
                processor._publish_requests.popleft()
                return
            evict()

        processor._evict_publish_request = evict_publish_request  # type: ignore[method-assign]


class _SimBinaryServer(BinaryServer):
    faults: _Faults

    def _make_protocol(self) -> OPCUAProtocol:
        proto = _SimProtocol(
            iserver=self.iserver,
            policies=self._policies,
            clients=self.clients,
            closing_tasks=self.closing_tasks,
            limits=self.limits,
        )
        proto.faults = self.faults
        return proto


class _UaServer(Server):
    """asyncua Server whose socket server wraps each connection's transport (response delay)."""

    def __init__(self, faults: _Faults) -> None:
        super().__init__()
        self._faults = faults

    async def start(self) -> None:
        # Same as Server.start, except for the BinaryServer subclass.
        await self._setup_server_nodes()
        await self.iserver.start()
        try:
            host, port = self._get_bind_socket_info()
            bserver = _SimBinaryServer(
                self.iserver,
                host,  # type: ignore[arg-type]
                port,  # type: ignore[arg-type]
                self.limits,
            )
            bserver.faults = self._faults
            bserver.set_policies(self._policies)
            self.bserver = bserver
            await bserver.start()
        except Exception:
            await self.iserver.stop()
            raise


def _gate_publishing(sub: InternalSubscription, faults: _Faults) -> None:
    """Make a client subscription publish nothing (no data, no keep-alive) while paused.

    Returning False before anything is consumed leaves queued notifications, the keep-alive
    and lifetime counters and the client's Publish requests untouched, so resuming simply
    carries on with the next publishing cycle.
    """
    original = sub.publish_results

    async def publish_results(requestdata: Any = None) -> bool:
        if faults.paused:
            return False
        return await original(requestdata)

    sub.publish_results = publish_results  # type: ignore[method-assign]


class _SharedValues(MonitoredItemValues):
    """Keeps a reference where asyncua deep-copies every sampled value (most of a bulk tick).

    Only used for simulator-namespace nodes, whose DataValues are replaced, never mutated.
    """

    def set_current_datavalue(self, cur_val: ua.DataValue) -> None:
        self.old_dvalue = self.current_dvalue
        self.current_dvalue = cur_val


def _share_sampled_values(sub: InternalSubscription, namespace_index: int) -> None:
    service = sub.monitored_item_srv
    commit = service._commit_monitored_item

    def commit_monitored_item(
        result: ua.MonitoredItemCreateResult, mdata: MonitoredItemData
    ) -> None:
        rvid = mdata.read_value_id
        if (
            rvid is not None
            and rvid.NodeId is not None
            and rvid.NodeId.NamespaceIndex == namespace_index
        ):
            mdata.mvalue = _SharedValues()
        commit(result, mdata)

    service._commit_monitored_item = commit_monitored_item  # type: ignore[method-assign]


def _install_subscription_hooks(
    iserver: InternalServer, faults: _Faults, namespace_index: int
) -> None:
    """Wrap CreateSubscription: client subscriptions get the publish gate and cheap sampling."""
    service = iserver.subscription_service
    create = service.create_subscription

    async def create_subscription(
        params: ua.CreateSubscriptionParameters,
        callback: Callable[..., Any],
        session_id: ua.NodeId,
        request_callback: Callable[..., Any] | None = None,
    ) -> ua.CreateSubscriptionResult:
        result = await create(params, callback, session_id, request_callback=request_callback)
        sub = service.subscriptions.get(result.SubscriptionId)
        if sub is not None and request_callback is not None:
            _gate_publishing(sub, faults)
            _share_sampled_values(sub, namespace_index)
        return result

    service.create_subscription = create_subscription  # type: ignore[method-assign]


# --------------------------------------------------------------------------- server


Populate = Callable[["SimServer"], Awaitable[None]]


class SimServer:
    """One simulated OPC UA server; see the module docstring for the options."""

    def __init__(
        self,
        *,
        namespace_uri: str,
        populate: Populate | None = None,
        host: str = "127.0.0.1",
        port: int = 4840,
        application_uri: str | None = None,
        server_name: str = "edge-agent OPC UA simulator",
        security: str | Sequence[str] = ("None",),
        pki_dir: str | Path | None = None,
        trusted_clients_dir: str | Path | None = None,
        users: Mapping[str, str] | None = None,
        allow_anonymous: bool = True,
        extra_namespaces: int = 0,
        delay: float = 0.0,
    ) -> None:
        if extra_namespaces < 0:
            raise ValueError("extra_namespaces must be >= 0")
        if delay < 0:
            raise ValueError("delay must be >= 0")
        self.namespace_uri = namespace_uri
        self.host = host
        self.port = port
        self.application_uri = application_uri or f"{namespace_uri}:server"
        self.server_name = server_name
        self.security = parse_security(security)
        self.users = dict(users or {})
        self.allow_anonymous = allow_anonymous
        if not allow_anonymous and not self.users and not self.secure:
            raise ValueError(
                "no identity left: give users or a secure policy with allow_anonymous=False"
            )
        self.extra_namespaces = extra_namespaces
        self.trusted_clients_dir = Path(trusted_clients_dir) if trusted_clients_dir else None
        self._pki_dir = Path(pki_dir) if pki_dir else None
        self._pki_tmp: tempfile.TemporaryDirectory[str] | None = None
        self.certificate_path: Path | None = None
        self.private_key_path: Path | None = None
        self._populate = populate
        self._faults = _Faults(delay)
        self.server: Server | None = None
        self.namespace_index = 0
        self._ready = False
        self._lifecycle = asyncio.Lock()
        self._value_cache: dict[ua.NodeId, AttributeValue] = {}
        self.boots = 0

    # -- properties -----------------------------------------------------------------------

    @property
    def secure(self) -> bool:
        return any(s != "None" for s in self.security)

    @property
    def endpoint(self) -> str:
        return f"opc.tcp://{self.host}:{self.port}/"

    @property
    def running(self) -> bool:
        return self._ready

    @property
    def publishing_paused(self) -> bool:
        return self._faults.paused

    @property
    def response_delay(self) -> float:
        return self._faults.delay

    @property
    def pki_dir(self) -> Path:
        if self._pki_dir is None:
            self._pki_tmp = tempfile.TemporaryDirectory(prefix="edge-agent-sim-pki-")
            self._pki_dir = Path(self._pki_tmp.name)
        return self._pki_dir

    # -- fault switches -------------------------------------------------------------------

    def pause_publishing(self, on: bool) -> None:
        """Stop (True) or resume (False) every Publish response of every subscription."""
        self._faults.paused = bool(on)
        logger.info("publishing %s", "paused" if on else "resumed")

    def delay_responses(self, seconds: float) -> None:
        """Delay every response by ``seconds`` (0 = off)."""
        if seconds < 0 or not math.isfinite(seconds):
            raise ValueError("delay must be a finite number >= 0")
        self._faults.delay = float(seconds)

    async def restart(self) -> None:
        """Stop everything (sockets, sessions, subscriptions) and serve again on the same port."""
        async with self._lifecycle:
            await self._shutdown()
            await self._boot()

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        async with self._lifecycle:
            if self.server is None:
                await self._boot()

    async def stop(self) -> None:
        async with self._lifecycle:
            await self._shutdown()
            if self._pki_tmp is not None:
                self._pki_tmp.cleanup()
                self._pki_tmp = None
                self._pki_dir = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def _boot(self) -> None:
        server = _UaServer(self._faults)
        await server.init()
        server.set_endpoint(self.endpoint)
        server.set_server_name(self.server_name)
        server.product_uri = "urn:edge-agent:simulators"
        server.manufacturer_name = "edge-agent"
        await server.set_application_uri(self.application_uri)
        server.set_security_policy([SECURITY_CHOICES[s] for s in self.security])
        if self.secure:
            stem = "".join(c if c.isalnum() or c in "-_" else "_" for c in self.application_uri)
            self.certificate_path, self.private_key_path = await asyncio.to_thread(
                ensure_server_certificate, self.pki_dir, stem, self.application_uri
            )
            await server.load_certificate(self.certificate_path)  # type: ignore[arg-type]
            await server.load_private_key(self.private_key_path)  # type: ignore[arg-type]
        tokens: list[type] = []
        if self.allow_anonymous:
            tokens.append(ua.AnonymousIdentityToken)
        if self.users:
            tokens.append(ua.UserNameIdentityToken)
        if self.secure:  # a certificate token needs a signing policy to be verified
            tokens.append(ua.X509IdentityToken)
        server.set_identity_tokens(tokens)
        trusted = TrustedClients(self.trusted_clients_dir) if self.trusted_clients_dir else None
        user_manager = SimUserManager(self.users, trusted)
        server.iserver.set_user_manager(user_manager)  # type: ignore[arg-type]
        if trusted is not None:
            server.set_certificate_validator(trusted.validate)
        for i in range(self.extra_namespaces):
            await server.register_namespace(DUMMY_NAMESPACE.format(i))
        self.namespace_index = await server.register_namespace(self.namespace_uri)
        _install_subscription_hooks(server.iserver, self._faults, self.namespace_index)
        self.server = server
        self._value_cache = {}
        try:
            if self._populate is not None:
                await self._populate(self)
            await server.start()
        except BaseException:
            self.server = None
            raise
        assert server.bserver is not None
        self.port = server.bserver.port
        self.boots += 1
        self._ready = True

    async def _shutdown(self) -> None:
        server, self.server = self.server, None
        self._ready = False
        self._value_cache = {}
        if server is None:
            return
        iserver = server.iserver
        # InternalServer.stop waits up to 1 s for its clock task to notice a flag.
        clock = iserver.time_task
        if clock is not None:
            clock.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await clock
            iserver.time_task = None
        await server.stop()
        # Activated sessions owning subscriptions outlive their connection in asyncua (to
        # allow a reconnect); a real restart loses them, and their tasks must not leak.
        sessions = list(getattr(iserver, "_external_sessions", {}).values())
        for session in sessions:
            await session.close_session(True)
        leftover = list(iserver.subscription_service.subscriptions)
        if leftover:
            await iserver.subscription_service.delete_subscriptions(leftover)

    # -- data -----------------------------------------------------------------------------

    def nodeid(self, identifier: str) -> ua.NodeId:
        """String NodeId in the simulator namespace."""
        return string_nodeid(identifier, self.namespace_index)

    def _attribute(self, nodeid: ua.NodeId) -> AttributeValue | None:
        av = self._value_cache.get(nodeid)
        if av is None and self.server is not None:
            node = self.server.iserver.aspace.get(nodeid)
            if node is None:
                return None
            av = node.attributes.get(ua.AttributeIds.Value)
            if av is None:
                return None
            self._value_cache[nodeid] = av
        return av

    async def write_values(
        self,
        items: Iterable[tuple[ua.NodeId, ua.Variant]],
        timestamp: datetime | None = None,
        *,
        force: bool = False,
    ) -> int:
        """Set many Value attributes at once and notify monitored items; returns count written.

        Skips asyncua's per-write type check and structure handling (the simulators always
        write the declared type); does nothing while the server is (re)starting unless force
        (for populate callbacks).
        """
        if not self._ready and not force:
            return 0
        now = timestamp or datetime.now(UTC)
        written = 0
        callbacks = 0
        for nodeid, variant in items:
            av = self._attribute(nodeid)
            if av is None:
                continue
            dv = ua.DataValue(variant, SourceTimestamp=now, ServerTimestamp=now)  # type: ignore
            av.value = dv
            av.value_callback = None
            written += 1
            if av.datachange_callbacks:
                for handle, callback in list(av.datachange_callbacks.items()):
                    try:
                        await callback(handle, dv)
                    except Exception:
                        logger.exception("datachange callback failed for %s", nodeid)
                callbacks += len(av.datachange_callbacks)
                if callbacks >= _YIELD_EVERY_CALLBACKS:
                    callbacks = 0
                    await asyncio.sleep(0)
        return written

    async def emit_event(self, event: ua_events.Event, emitters: Sequence[ua.NodeId]) -> None:
        """Fire one event (one EventId) to the monitored items of each emitter node."""
        if not self._ready or self.server is None:
            return
        now = datetime.now(UTC)
        event.EventId = uuid.uuid4().bytes  # type: ignore[attr-defined]
        event.Time = now  # type: ignore[attr-defined]
        event.ReceiveTime = now  # type: ignore[attr-defined]
        local = ua.TimeZoneDataType()
        local.Offset = (time.localtime().tm_gmtoff or 0) // 60
        event.LocalTime = local  # type: ignore[attr-defined]
        service = self.server.iserver.subscription_service
        for emitter in emitters:
            event.emitting_node = emitter
            await service.trigger_event(event)


# --------------------------------------------------------------------------- address space


@dataclasses.dataclass(frozen=True)
class VarSpec:
    """A variable below the machine object: path segments are browse names (sim namespace)."""

    path: str
    vtype: ua.VariantType
    value: Any
    datatype: ua.NodeId | str | None = None  # str: a type created by the simulator (its NodeId)
    unit: str = ""  # documentation only

    @property
    def segments(self) -> list[str]:
        return self.path.split("/")


class AddressSpaceBuilder:
    """Creates nodes with stable string NodeIds ``<prefix>.<path with dots>`` in one namespace."""

    def __init__(self, server: Server, ns: int) -> None:
        self.server = server
        self.ns = ns
        self._objects: dict[str, ua.NodeId] = {}

    def nid(self, identifier: str) -> ua.NodeId:
        return string_nodeid(identifier, self.ns)

    def qn(self, name: str) -> ua.QualifiedName:
        return ua.QualifiedName(name, self.ns)

    async def _add(self, item: ua.AddNodesItem) -> ua.NodeId:
        results = await self.server.iserver.isession.add_nodes([item])
        results[0].StatusCode.check()
        return results[0].AddedNodeId

    def object_item(
        self,
        parent: ua.NodeId,
        nodeid: ua.NodeId,
        name: str,
        *,
        folder: bool = False,
        organizes: bool = False,
    ) -> ua.AddNodesItem:
        item = ua.AddNodesItem()
        item.RequestedNewNodeId = nodeid
        item.BrowseName = self.qn(name)
        item.ParentNodeId = parent
        item.ReferenceTypeId = ns0(
            ua.ObjectIds.Organizes if organizes else ua.ObjectIds.HasComponent
        )
        item.NodeClass = ua.NodeClass.Object
        item.TypeDefinition = ns0(
            ua.ObjectIds.FolderType if folder else ua.ObjectIds.BaseObjectType
        )
        attrs = ua.ObjectAttributes()
        attrs.EventNotifier = 0
        attrs.DisplayName = ua.LocalizedText(name)
        attrs.Description = ua.LocalizedText(name)
        item.NodeAttributes = attrs
        return item

    def variable_item(
        self,
        parent: ua.NodeId,
        nodeid: ua.NodeId,
        name: str,
        variant: ua.Variant,
        datatype: ua.NodeId | None = None,
        description: str = "",
    ) -> ua.AddNodesItem:
        item = ua.AddNodesItem()
        item.RequestedNewNodeId = nodeid
        item.BrowseName = self.qn(name)
        item.NodeClass = ua.NodeClass.Variable
        item.ParentNodeId = parent
        item.ReferenceTypeId = ns0(ua.ObjectIds.HasComponent)
        item.TypeDefinition = ns0(ua.ObjectIds.BaseDataVariableType)
        attrs = ua.VariableAttributes()
        attrs.DisplayName = ua.LocalizedText(name)
        attrs.Description = ua.LocalizedText(description or name)
        attrs.DataType = datatype or ua.NodeId(getattr(ua.ObjectIds, variant.VariantType.name))
        attrs.Value = variant
        if isinstance(variant.Value, list | tuple):
            attrs.ValueRank = ua.ValueRank.OneDimension
            attrs.ArrayDimensions = [len(variant.Value)]
        else:
            attrs.ValueRank = ua.ValueRank.Scalar
        attrs.AccessLevel = ua.AccessLevel.CurrentRead.mask
        attrs.UserAccessLevel = ua.AccessLevel.CurrentRead.mask
        attrs.Historizing = False
        item.NodeAttributes = attrs
        return item

    async def folder(self, parent: ua.NodeId, identifier: str, name: str) -> ua.NodeId:
        return await self._add(
            self.object_item(parent, self.nid(identifier), name, folder=True, organizes=True)
        )

    async def add_object(self, parent: ua.NodeId, identifier: str, name: str) -> ua.NodeId:
        """BaseObjectType object ``s=<identifier>`` organized by parent."""
        return await self._add(self.object_item(parent, self.nid(identifier), name, organizes=True))

    def add_children_fast(self, parent: ua.NodeId, items: Sequence[ua.AddNodesItem]) -> None:
        """Add many children of one parent in linear time (items' ParentNodeId is replaced).

        asyncua's add_nodes scans every reference of the parent for each new child, which is
        quadratic (about 35 s for 10000 variables). So the nodes are added unparented and the
        forward/inverse references between parent and child are appended directly.
        """
        aspace = self.server.iserver.aspace
        parent_data = aspace.get(parent)
        if parent_data is None:
            raise ua.UaError(f"parent {parent} does not exist")

        def attr(name: ua.AttributeIds) -> Any:
            dv = parent_data.attributes[name].value
            return dv.Value.Value if dv is not None and dv.Value is not None else None

        parent_type = next(
            (
                r.NodeId
                for r in parent_data.references
                if r.IsForward and r.ReferenceTypeId == ns0(ua.ObjectIds.HasTypeDefinition)
            ),
            ua.NodeId(),
        )
        for item in items:
            item.ParentNodeId = ua.NodeId()
        failed = list(self.server.iserver.node_mgt_service.try_add_nodes(list(items), check=False))
        if failed:
            raise ua.UaError(
                f"could not add {len(failed)} nodes, first {failed[0].RequestedNewNodeId}"
            )
        for item in items:
            child = aspace[item.RequestedNewNodeId]
            down = ua.ReferenceDescription()
            down.ReferenceTypeId = item.ReferenceTypeId
            down.IsForward = True
            down.NodeId = item.RequestedNewNodeId
            down.NodeClass = item.NodeClass
            down.BrowseName = item.BrowseName
            down.DisplayName = item.NodeAttributes.DisplayName
            down.TypeDefinition = item.TypeDefinition
            parent_data.references.append(down)
            up = ua.ReferenceDescription()
            up.ReferenceTypeId = item.ReferenceTypeId
            up.IsForward = False
            up.NodeId = parent
            up.NodeClass = attr(ua.AttributeIds.NodeClass)
            up.BrowseName = attr(ua.AttributeIds.BrowseName)
            up.DisplayName = attr(ua.AttributeIds.DisplayName)
            up.TypeDefinition = parent_type
            child.references.append(up)

    async def machine(self, parent: ua.NodeId, name: str) -> ua.NodeId:
        """The machine object (BaseObjectType, NodeId ``s=<name>``) organized by parent."""
        nodeid = await self._add(self.object_item(parent, self.nid(name), name, organizes=True))
        self._objects[name] = nodeid
        return nodeid

    async def ensure_object(self, prefix: str, segments: Sequence[str]) -> ua.NodeId:
        """Object for ``prefix/seg0/seg1...``, creating missing components on the way."""
        key = ".".join([prefix, *segments])
        found = self._objects.get(key)
        if found is not None:
            return found
        parent = (
            await self.ensure_object(prefix, segments[:-1]) if segments else self._objects[prefix]
        )
        nodeid = await self._add(self.object_item(parent, self.nid(key), segments[-1]))
        self._objects[key] = nodeid
        return nodeid

    async def variables(self, prefix: str, specs: Iterable[VarSpec]) -> dict[str, ua.NodeId]:
        """Create the variables below object ``prefix``; returns path -> NodeId."""
        out: dict[str, ua.NodeId] = {}
        for spec in specs:
            segments = spec.segments
            parent = await self.ensure_object(prefix, segments[:-1])
            datatype = self.nid(spec.datatype) if isinstance(spec.datatype, str) else spec.datatype
            nodeid = self.nid(".".join([prefix, *segments]))
            description = f"{spec.path} [{spec.unit}]" if spec.unit else spec.path
            await self._add(
                self.variable_item(
                    parent,
                    nodeid,
                    segments[-1],
                    ua.Variant(spec.value, spec.vtype),
                    datatype,
                    description,
                )
            )
            out[spec.path] = nodeid
        return out

    async def enum_type(self, name: str, fields: Sequence[str]) -> ua.NodeId:
        """Enumeration DataType ``s=<name>`` (values 0..n-1), DataTypeDefinition + EnumStrings."""
        dtype = await new_enum(self.server, self.nid(name), self.qn(name), list(fields))
        await dtype.add_property(
            self.nid(f"{name}.EnumStrings"),
            ua.QualifiedName("EnumStrings", 0),
            [ua.LocalizedText(f) for f in fields],
            varianttype=ua.VariantType.LocalizedText,
            datatype=ns0(ua.ObjectIds.LocalizedText),
        )
        return dtype.nodeid

    async def event_type(
        self, name: str, properties: Sequence[tuple[str, ua.VariantType, Any]]
    ) -> Node:
        """Subtype ``s=<name>`` of BaseEventType with (name, type, default) properties."""
        etype = await self.server.nodes.base_event_type.add_object_type(
            self.nid(name), self.qn(name)
        )
        for prop, vtype, default in properties:
            await etype.add_property(
                self.nid(f"{name}.{prop}"), self.qn(prop), default, varianttype=vtype
            )
        return etype

    async def make_notifier(self, nodeid: ua.NodeId, event_types: Iterable[ua.NodeId]) -> None:
        """Make nodeid an event source: EventNotifier bit, Server HasNotifier, GeneratesEvent."""
        node = self.server.get_node(nodeid)
        await node.set_event_notifier([ua.EventNotifier.SubscribeToEvents])
        refs = []
        ref = ua.AddReferencesItem()
        ref.SourceNodeId = ns0(ua.ObjectIds.Server)
        ref.ReferenceTypeId = ns0(ua.ObjectIds.HasNotifier)
        ref.IsForward = True
        ref.TargetNodeId = nodeid
        ref.TargetNodeClass = ua.NodeClass.Object
        refs.append(ref)
        for etype in event_types:
            gen = ua.AddReferencesItem()
            gen.SourceNodeId = nodeid
            gen.ReferenceTypeId = ns0(ua.ObjectIds.GeneratesEvent)
            gen.IsForward = True
            gen.TargetNodeId = etype
            gen.TargetNodeClass = ua.NodeClass.ObjectType
            refs.append(gen)
        for status in await self.server.iserver.isession.add_references(refs):
            status.check()


# --------------------------------------------------------------------------- machine base


class MachineSimulator(abc.ABC):
    """A simulated machine below Objects/Machines/<name> driven by a time-stepped model.

    Subclasses declare VARIABLES, build their types/events in ``build_types``, and implement
    ``step(dt)`` (dt in simulated seconds) which updates ``self.out`` and may ``queue_event``.
    """

    kind: ClassVar[str] = "machine"
    namespace_uri: ClassVar[str] = "urn:edge-agent:sim:machine"
    default_name: ClassVar[str] = "MACHINE-01"
    VARIABLES: ClassVar[tuple[VarSpec, ...]] = ()

    def __init__(
        self,
        *,
        name: str | None = None,
        seed: int = 0,
        time_scale: float = 1.0,
        update_period: float = 0.1,
        host: str = "127.0.0.1",
        port: int = 4840,
        **server_options: Any,
    ) -> None:
        if not time_scale > 0 or not math.isfinite(time_scale):
            raise ValueError("time_scale must be > 0")
        if not update_period > 0:
            raise ValueError("update_period must be > 0")
        self.name = name or self.default_name
        if not self.name or "." in self.name or "/" in self.name:
            raise ValueError("name must be non-empty without '.' or '/'")
        self.seed = seed
        self.time_scale = time_scale
        self.update_period = update_period
        self.server = SimServer(
            namespace_uri=self.namespace_uri,
            populate=self._populate,
            host=host,
            port=port,
            application_uri=f"{self.namespace_uri}:{self.name}",
            server_name=f"edge-agent {self.kind} simulator {self.name}",
            **server_options,
        )
        self._types = {spec.path: spec.vtype for spec in self.VARIABLES}
        self.out: dict[str, Any] = {spec.path: spec.value for spec in self.VARIABLES}
        self._written: dict[str, Any] = {}
        self._nodeids: dict[str, ua.NodeId] = {}
        self._events: list[tuple[str, dict[str, Any], str, int]] = []
        self._event_objects: dict[str, ua_events.Event] = {}
        self.machine_nodeid: ua.NodeId | None = None
        self.sim_time = 0.0
        self._task: asyncio.Task[None] | None = None

    # -- subclass hooks -------------------------------------------------------------------

    @abc.abstractmethod
    async def build_types(self, builder: AddressSpaceBuilder) -> list[ua.NodeId]:
        """Create DataTypes/EventTypes; return the event type NodeIds the machine generates."""

    @abc.abstractmethod
    def step(self, dt: float) -> None:
        """Advance the model by dt simulated seconds."""

    # -- helpers for subclasses -----------------------------------------------------------

    def queue_event(
        self, event_type: str, fields: dict[str, Any], message: str, severity: int
    ) -> None:
        self._events.append((event_type, fields, message, severity))

    def nodeid(self, path: str) -> ua.NodeId:
        """NodeId of a variable path such as ``Monitoring/Spindle/ActSpeed``."""
        return self.server.nodeid(".".join([self.name, *path.split("/")]))

    # -- lifecycle ------------------------------------------------------------------------

    @property
    def endpoint(self) -> str:
        return self.server.endpoint

    async def start(self) -> None:
        await self.server.start()
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"{self.kind}-{self.name}")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.server.stop()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def _populate(self, srv: SimServer) -> None:
        assert srv.server is not None
        builder = AddressSpaceBuilder(srv.server, srv.namespace_index)
        machines = await builder.folder(ns0(ua.ObjectIds.ObjectsFolder), "Machines", "Machines")
        self.machine_nodeid = await builder.machine(machines, self.name)
        event_types = await self.build_types(builder)
        self._nodeids = await builder.variables(self.name, self._specs_with_current_values())
        await builder.make_notifier(self.machine_nodeid, event_types)
        self._event_objects = {}
        for etype in event_types:
            ev = await ua_events.get_event_obj_from_type_node(srv.server.get_node(etype))
            ev.SourceNode = self.machine_nodeid  # type: ignore[attr-defined]
            ev.SourceName = self.name  # type: ignore[attr-defined]
            self._event_objects[str(etype.Identifier)] = ev
        self._written = dict(self.out)

    def _specs_with_current_values(self) -> list[VarSpec]:
        return [dataclasses.replace(spec, value=self.out[spec.path]) for spec in self.VARIABLES]

    async def flush(self) -> None:
        """Write changed outputs, then emit queued events (so counters match the events)."""
        changed = [(p, v) for p, v in self.out.items() if self._written.get(p, _MISSING) != v]
        if changed and self.server.running:
            items = [
                (self._nodeids[p], ua.Variant(v, self._types[p]))
                for p, v in changed
                if p in self._nodeids
            ]
            await self.server.write_values(items)
            for p, v in changed:
                self._written[p] = v
        events, self._events = self._events, []
        if self.machine_nodeid is None or not self.server.running:
            return
        for etype, fields, message, severity in events:
            ev = self._event_objects.get(etype)
            if ev is None:
                continue
            for key, value in fields.items():
                setattr(ev, key, value)
            ev.Message = ua.LocalizedText(message)  # type: ignore[attr-defined]
            ev.Severity = severity  # type: ignore[attr-defined]
            await self.server.emit_event(ev, [self.machine_nodeid, ns0(ua.ObjectIds.Server)])

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        last = loop.time()
        next_tick = last
        while True:
            now = loop.time()
            dt = (now - last) * self.time_scale
            last = now
            if dt > 0:
                self.sim_time += dt
                self.step(dt)
            try:
                await self.flush()
            except Exception:
                logger.exception("%s %s: update failed", self.kind, self.name)
            next_tick += self.update_period
            delay = next_tick - loop.time()
            if delay < 0:  # overloaded: skip missed ticks instead of bursting
                next_tick = loop.time()
                delay = 0
            await asyncio.sleep(delay)


_MISSING = object()


# --------------------------------------------------------------------------- CLI helpers


def add_server_arguments(p: argparse.ArgumentParser, *, default_port: int) -> None:
    """Options shared by all OPC UA simulators (endpoint, security, identities, faults)."""
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=default_port, help="TCP port (0 = OS picks)")
    p.add_argument(
        "--security",
        action="append",
        default=None,
        help="security policy-mode, comma separated or repeated: "
        + ", ".join(SECURITY_CHOICES)
        + ", or all (default None)",
    )
    p.add_argument(
        "--pki-dir", default=None, help="folder for the server certificate/key (default temp)"
    )
    p.add_argument("--trusted-clients", default=None, help="folder of trusted client certificates")
    p.add_argument(
        "--user", action="append", default=[], metavar="NAME:PASSWORD", help="allowed user"
    )
    p.add_argument("--no-anonymous", action="store_true", help="refuse anonymous sessions")
    p.add_argument("--extra-namespaces", type=int, default=0, help="dummy namespaces before ours")
    p.add_argument("--delay-ms", type=float, default=0.0, help="delay every response, ms")


def server_options_from_args(
    p: argparse.ArgumentParser, args: argparse.Namespace
) -> dict[str, Any]:
    """SimServer keyword arguments from the shared options (errors go to parser.error)."""
    users: dict[str, str] = {}
    for item in args.user:
        name, sep, password = item.partition(":")
        if not sep or not name:
            p.error(f"--user expects NAME:PASSWORD, got {item!r}")
        users[name] = password
    try:
        security = parse_security(args.security or ["None"])
    except ValueError as exc:
        p.error(str(exc))
    if args.extra_namespaces < 0:
        p.error("--extra-namespaces must be >= 0")
    if args.delay_ms < 0:
        p.error("--delay-ms must be >= 0")
    if not 0 <= args.port <= 65535:
        p.error("--port must be within 0..65535")
    return {
        "host": args.host,
        "port": args.port,
        "security": security,
        "pki_dir": args.pki_dir,
        "trusted_clients_dir": args.trusted_clients,
        "users": users,
        "allow_anonymous": not args.no_anonymous,
        "extra_namespaces": args.extra_namespaces,
        "delay": args.delay_ms / 1000.0,
    }


async def run_cli(sim: Any, kind: str) -> int:
    """Start sim (anything with start/stop and a ``server: SimServer``), serve until SIGTERM/SIGINT.

    SIGUSR1 toggles pause_publishing, SIGUSR2 restarts the server.
    """
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    server: SimServer = sim.server
    restarts: set[asyncio.Task[None]] = set()

    def toggle_pause() -> None:
        server.pause_publishing(not server.publishing_paused)
        print(
            f"{kind} publishing {'paused' if server.publishing_paused else 'resumed'}", flush=True
        )

    async def do_restart() -> None:
        try:
            await server.restart()
            print(f"{kind} restarted on {server.endpoint.rstrip('/')}", flush=True)
        except Exception as exc:  # noqa: BLE001 - keep serving; report why
            print(f"{kind}: restart failed: {exc}", file=sys.stderr, flush=True)

    def restart() -> None:
        task = loop.create_task(do_restart())
        restarts.add(task)
        task.add_done_callback(restarts.discard)

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGUSR1, toggle_pause)
    loop.add_signal_handler(signal.SIGUSR2, restart)
    try:
        await sim.start()
    except OSError as exc:
        print(f"{kind}: cannot listen: {exc}", file=sys.stderr)
        return 1
    print(f"{kind} listening on {server.endpoint.rstrip('/')}", flush=True)
    await stop.wait()
    for task in list(restarts):
        with contextlib.suppress(Exception):
            await task
    await sim.stop()
    return 0
