"""One OPC UA session, built from config every time it connects.

A new asyncua Client per connect, so a reconnect applies exactly the configured security,
identity and limits again (nothing is carried over from a broken session). asyncua's own
auto-reconnect stays off: the driver owns reconnection and rebuilds its subscriptions.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from asyncua import ua
from asyncua.client.ua_client import UaClientState
# From their defining modules: asyncua and asyncua.ua expose these only as implicit
# re-exports, which mypy --strict does not accept.
from asyncua.client.client import Client
from asyncua.ua.attribute_ids import AttributeIds
from asyncua.ua.object_ids import ObjectIds
from asyncua.ua.uaerrors import UaError, UaStatusCodeError

from drivers.opcua.config import OpcUaConnection, default_application_uri
from drivers.opcua.resolve import NamespaceMap, Resolver
from drivers.opcua.security import (
    MODES,
    POLICIES,
    TrustFolder,
    UntrustedServer,
    certificate_uri,
)
from drivers.secrets import SecretError

MAX_NODES_PER_READ = ua.NodeId(ObjectIds.Server_ServerCapabilities_OperationLimits_MaxNodesPerRead)
MAX_NODES_PER_TRANSLATE = ua.NodeId(
    ObjectIds.Server_ServerCapabilities_OperationLimits_MaxNodesPerTranslateBrowsePathsToNodeIds)
NAMESPACE_ARRAY = ua.NodeId(ObjectIds.Server_NamespaceArray)


def read_password(conn: OpcUaConnection) -> str | None:
    """The configured password (drivers/secrets.py); ConnectionError if it cannot be had,
    since the session cannot be opened without it. Blocking: call it in a thread."""
    try:
        return conn.auth.password_source().read()
    except SecretError as exc:
        raise ConnectionError(str(exc)) from None


class Session:
    """A connected client plus what was learnt about the server at connect."""

    def __init__(self, conn: OpcUaConnection) -> None:
        self.conn = conn
        self.client: Client | None = None
        self.namespaces: NamespaceMap | None = None
        self.resolver: Resolver | None = None
        self.read_chunk = conn.max_nodes_per_read
        self.lost: str | None = None

    @property
    def connected(self) -> bool:
        client = self.client
        return (client is not None and self.lost is None
                and client.uaclient.state is UaClientState.CONNECTED)

    @property
    def uaclient(self) -> Any:
        assert self.client is not None
        return self.client.uaclient

    async def open(self) -> None:
        """Connect, secure, authenticate, learn namespaces and limits. Raises ConnectionError
        (UntrustedServer for a certificate we do not trust) or TimeoutError."""
        conn = self.conn
        client = Client(conn.url, timeout=conn.timeout,
                        watchdog_intervall=max(1.0, min(conn.timeout, 5.0)))
        client.name = client.description = "edge-agent"
        client.application_uri = conn.security.application_uri or default_application_uri()
        client.product_uri = "urn:edge-agent"
        client.session_timeout = int(conn.session_timeout * 1000)
        client.connection_lost_callback = self._on_lost
        self.lost = None
        try:
            async with asyncio.timeout(conn.timeout * 4):
                await self._secure(client)
                await self._identify(client)
                await client.connect()
            self.client = client
            async with asyncio.timeout(conn.timeout * 2):
                await self._learn(client)
        except (UntrustedServer, ConnectionError, TimeoutError):
            await self._abandon(client)
            raise
        except (OSError, UaError, ValueError) as exc:
            await self._abandon(client)
            raise ConnectionError(_describe(exc)) from exc

    async def _secure(self, client: Client) -> None:
        sec = self.conn.security
        if sec.policy == "None":
            return
        policy, mode = POLICIES[sec.policy], MODES[sec.mode or "SignAndEncrypt"]
        endpoints = await client.connect_and_get_server_endpoints()
        endpoint = next((ep for ep in endpoints if ep.SecurityPolicyUri == policy.URI
                         and ep.SecurityMode == mode), None)
        if endpoint is None:
            offered = sorted({f"{ep.SecurityPolicyUri.rsplit('#', 1)[-1]}/{ep.SecurityMode.name}"
                              for ep in endpoints})
            raise ConnectionError(f"the server offers no endpoint with {sec.policy}/{sec.mode}; "
                                  f"it offers {', '.join(offered)}")
        der = _first_certificate(endpoint.ServerCertificate)
        assert sec.trust is not None and sec.certificate and sec.private_key
        problem = await asyncio.to_thread(TrustFolder(sec.trust, sec.trust_on_first_use).check, der)
        if problem:
            raise UntrustedServer(problem)
        for path, what in ((sec.certificate, "security.certificate"),
                           (sec.private_key, "security.private_key")):
            if not Path(path).is_file():
                raise ConnectionError(f"{what} {path} does not exist "
                                      "(`edge-agent certs create` makes one)")
        if sec.application_uri is None:
            # Servers check the announced URI against the certificate's: take it from there.
            uri = await asyncio.to_thread(certificate_uri, Path(sec.certificate))
            if uri:
                client.application_uri = uri
        await client.set_security(policy, certificate=sec.certificate,
                                  private_key=sec.private_key, server_certificate=der, mode=mode)

    async def _identify(self, client: Client) -> None:
        auth = self.conn.auth
        if auth.username is not None:
            client.set_user(auth.username)
            password = await asyncio.to_thread(read_password, self.conn)
            if password is not None:
                client.set_password(password)
        elif auth.certificate is not None and auth.private_key is not None:
            await client.load_client_certificate(auth.certificate)
            await client.load_private_key(Path(auth.private_key))

    async def _learn(self, client: Client) -> None:
        values = await client.uaclient.read_attributes(
            [NAMESPACE_ARRAY, MAX_NODES_PER_READ, MAX_NODES_PER_TRANSLATE], AttributeIds.Value)
        array = values[0].Value.Value if values[0].StatusCode.is_good() else None
        if not isinstance(array, list):
            raise ConnectionError("the server did not return its NamespaceArray")
        self.namespaces = NamespaceMap(array, self.conn.namespaces, self.conn.default_namespace)

        def limit(dv: Any, cap: int) -> int:
            value = dv.Value.Value if dv.StatusCode.is_good() and dv.Value is not None else 0
            return min(cap, int(value)) if isinstance(value, int) and value > 0 else cap

        self.read_chunk = limit(values[1], self.conn.max_nodes_per_read)
        self.resolver = Resolver(client.uaclient, self.namespaces, limit(values[2], 1000))

    async def _on_lost(self, exc: Exception) -> None:
        self.lost = _describe(exc)

    def mark_lost(self, why: str) -> None:
        self.lost = why

    async def close(self) -> None:
        client, self.client = self.client, None
        if client is not None:
            await self._abandon(client)

    async def _abandon(self, client: Client) -> None:
        try:
            async with asyncio.timeout(min(self.conn.timeout, 2.0)):
                await client.disconnect()
        except Exception:  # closing a broken session: nothing left to save
            client.disconnect_socket()


def _first_certificate(chain: bytes) -> bytes:
    """The leaf certificate of a DER chain (its length is in the DER header)."""
    if len(chain) < 4 or chain[0] != 0x30:
        return chain
    length = chain[1]
    if length < 0x80:
        return chain[:2 + length]
    size = length & 0x7F
    return chain[:2 + size + int.from_bytes(chain[2:2 + size], "big")]


def _describe(exc: BaseException) -> str:
    if isinstance(exc, UaStatusCodeError):
        name = ua.StatusCode(exc.code).name if hasattr(exc, "code") else type(exc).__name__
        hints = {
            "BadUserAccessDenied": "wrong username or password",
            "BadIdentityTokenInvalid": "the server does not accept this kind of identity",
            "BadIdentityTokenRejected": "the server rejected the identity",
            "BadCertificateUntrusted": "the server does not trust our certificate: add it to "
                                       "the server's trusted clients",
            "BadSecurityChecksFailed": "security checks failed (certificate or policy not "
                                       "accepted by the server)",
            "BadTooManySessions": "the server has no session left for us",
        }
        return f"{name}: {hints.get(name, str(exc) or name)}"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
