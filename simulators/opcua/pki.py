"""Security of the OPC UA simulators: policies, the server's certificate, trusted client
certificates and user logins."""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import socket
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from asyncua import ua
from asyncua.common.utils import ServiceError
from asyncua.crypto import cert_gen
from asyncua.crypto.permission_rules import User, UserRole
from asyncua.server.internal_server import InternalServer
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID

logger = logging.getLogger("simulators.opcua")

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
_CERT_DAYS = 3650


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
