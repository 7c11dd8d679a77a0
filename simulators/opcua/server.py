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

``MachineSimulator`` (machine.py) is the common base of the machine simulators: it owns a SimServer,
rebuilds the address space on every (re)start and runs the model on a fixed update period,
writing only values that changed (through ``SimServer.write_values``, which bypasses asyncua's
per-write checks) and emitting events from the machine object and the Server object.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path

from asyncua import Server, ua
from asyncua.common import events as ua_events
from asyncua.server.address_space import AttributeValue

from simulators.common import Lifecycle
from simulators.opcua.address_space import string_nodeid
from simulators.opcua.faults import (
    Faults,
    UaServer,
    install_subscription_hooks,
)
from simulators.opcua.pki import (
    SECURITY_CHOICES,
    SimUserManager,
    TrustedClients,
    ensure_server_certificate,
    parse_security,
)

logger = logging.getLogger("simulators.opcua")

# A tick writing thousands of values would otherwise hold the event loop for the whole batch;
# yielding every so many monitored-item callbacks lets Read/Publish interleave.
_YIELD_EVERY_CALLBACKS = 2000

DUMMY_NAMESPACE = "urn:edge-agent:sim:dummy:{}"




Populate = Callable[["SimServer"], Awaitable[None]]


class SimServer(Lifecycle):
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
        self._faults = Faults(delay)
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

    async def _boot(self) -> None:
        server = UaServer(self._faults)
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
        install_subscription_hooks(server.iserver, self._faults, self.namespace_index)
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
