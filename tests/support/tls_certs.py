"""A throwaway PKI for TLS tests: certificate authorities that issue server and client
certificates as PEM files, made with `cryptography`.

Certificates follow RFC 5280 closely enough for OpenSSL's strict mode (VERIFY_X509_STRICT,
the default of Python 3.13's ssl.create_default_context): basic constraints and key usage
are critical, subject and authority key identifiers are present.

    pki = CA.create(tmp_path / "pki", "Test CA")
    server = pki.issue("broker", ips=["127.0.0.1"], dns=["localhost"])
    client = pki.issue("gw-test", client=True)
    other = CA.create(tmp_path / "other", "Wrong CA")       # trusted by nobody
    old = pki.issue("broker-old", ips=["127.0.0.1"], expired=True)
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_PEM = serialization.Encoding.PEM


@dataclass(frozen=True)
class Issued:
    """A certificate and its private key, as PEM files."""

    name: str
    cert: Path
    key: Path


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())  # fast to make, and every OpenSSL has it


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path, password: bytes | None = None) -> None:
    encryption = (serialization.BestAvailableEncryption(password) if password
                  else serialization.NoEncryption())
    path.write_bytes(key.private_bytes(_PEM, serialization.PrivateFormat.PKCS8, encryption))
    path.chmod(0o600)


def _validity(expired: bool) -> tuple[dt.datetime, dt.datetime]:
    now = dt.datetime.now(dt.UTC)
    if expired:
        return now - dt.timedelta(days=30), now - dt.timedelta(days=1)
    return now - dt.timedelta(minutes=5), now + dt.timedelta(days=2)


class CA:
    """A self-signed certificate authority in `folder` (ca.pem, ca.key)."""

    def __init__(self, folder: Path, cert: x509.Certificate,
                 key: ec.EllipticCurvePrivateKey) -> None:
        self.folder, self.certificate, self._key = folder, cert, key
        self.cert = folder / "ca.pem"
        self.key = folder / "ca.key"

    @classmethod
    def create(cls, folder: Path, common_name: str = "edge-agent test CA") -> CA:
        folder.mkdir(parents=True, exist_ok=True)
        key = _key()
        name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "edge-agent tests"),
                          x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        not_before, not_after = _validity(False)
        ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
        cert = (
            x509.CertificateBuilder()
            .subject_name(name).issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before).not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                encipher_only=False, decipher_only=False), critical=True)
            .add_extension(ski, critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski),
                           critical=False)
            .sign(key, hashes.SHA256())
        )
        ca = cls(folder, cert, key)
        ca.cert.write_bytes(cert.public_bytes(_PEM))
        _write_key(key, ca.key)
        return ca

    def issue(self, common_name: str, *, dns: Iterable[str] = (), ips: Iterable[str] = (),
              client: bool = False, expired: bool = False,
              key_password: bytes | None = None) -> Issued:
        """A leaf certificate: a server certificate naming `dns`/`ips` in its subjectAltName,
        or (client=True) a client certificate whose common name is the MQTT identity
        (mosquitto's use_identity_as_username)."""
        key = _key()
        not_before, not_after = _validity(expired)
        names: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
        names += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
        usage = ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(self.certificate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before).not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=True, key_cert_sign=False, crl_sign=False,
                encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                           critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                self._key.public_key()), critical=False)
        )
        if names:
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        cert = builder.sign(self._key, hashes.SHA256())
        issued = Issued(common_name, self.folder / f"{common_name}.pem",
                        self.folder / f"{common_name}.key")
        issued.cert.write_bytes(cert.public_bytes(_PEM))
        _write_key(key, issued.key, key_password)
        return issued
