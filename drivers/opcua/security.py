"""Secure-channel policies, server certificate trust and the client application certificate.

Trust is decided by us, before the session exists: the server's certificate (from its
endpoint description) must be in the trust folder, or be issued by a CA certificate that is.
An unknown certificate is copied to a `rejected` folder beside the trust folder, so an
integrator can inspect it and move it over; `trust_on_first_use` stores it instead.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import os
import socket
from pathlib import Path

from asyncua import ua
from asyncua.crypto import security_policies
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

POLICIES: dict[str, type[security_policies.SecurityPolicy]] = {
    "None": security_policies.SecurityPolicyNone,
    "Basic256Sha256": security_policies.SecurityPolicyBasic256Sha256,
    "Aes128_Sha256_RsaOaep": security_policies.SecurityPolicyAes128Sha256RsaOaep,
    "Aes256_Sha256_RsaPss": security_policies.SecurityPolicyAes256Sha256RsaPss,
}
MODES = {
    "None": ua.MessageSecurityMode.None_,
    "Sign": ua.MessageSecurityMode.Sign,
    "SignAndEncrypt": ua.MessageSecurityMode.SignAndEncrypt,
}


class UntrustedServer(ConnectionError):
    """The server's certificate is not trusted; the message says where to put it."""


def thumbprint(der: bytes) -> str:
    return hashlib.sha1(der).hexdigest()


def load_certificate(path: Path) -> x509.Certificate:
    data = path.read_bytes()
    if b"-----BEGIN CERTIFICATE-----" in data:
        return x509.load_pem_x509_certificate(data)
    return x509.load_der_x509_certificate(data)


def certificate_uri(path: Path) -> str | None:
    """The application URI in a certificate's subject alternative name, if any."""
    try:
        cert = load_certificate(path)
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except (OSError, ValueError, x509.ExtensionNotFound):
        return None
    uris = san.value.get_values_for_type(x509.UniformResourceIdentifier)
    return uris[0] if uris else None


class TrustFolder:
    """Server certificates (or issuing CAs) this client trusts: one file each, DER or PEM."""

    def __init__(self, folder: str, trust_on_first_use: bool = False) -> None:
        self.folder = Path(folder)
        self.rejected = self.folder.parent / "rejected"
        self.trust_on_first_use = trust_on_first_use

    def _trusted(self) -> list[x509.Certificate]:
        certs = []
        if self.folder.is_dir():
            for path in sorted(self.folder.iterdir()):
                if path.is_file() and path.suffix.lower() in (".der", ".pem", ".crt", ".cer"):
                    try:
                        certs.append(load_certificate(path))
                    except ValueError:
                        continue  # not a certificate: ignored rather than trusted
        return certs

    def check(self, der: bytes) -> str | None:
        """None when `der` is trusted (or was just trusted on first use), else why not.

        Blocking file I/O: call it in a thread."""
        cert = x509.load_der_x509_certificate(der)
        now = dt.datetime.now(dt.timezone.utc)
        if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
            return (f"server certificate {thumbprint(der)} is outside its validity "
                    f"({cert.not_valid_before_utc:%Y-%m-%d} .. {cert.not_valid_after_utc:%Y-%m-%d})")
        for trusted in self._trusted():
            if trusted.public_bytes(serialization.Encoding.DER) == der:
                return None
            try:
                cert.verify_directly_issued_by(trusted)
                return None
            except Exception:  # not its issuer, or not a CA: keep looking
                continue
        name = f"{thumbprint(der)}.der"
        if self.trust_on_first_use and not any(self.folder.glob("*")):
            self.folder.mkdir(parents=True, exist_ok=True)
            (self.folder / name).write_bytes(der)
            return None
        where = ""
        try:
            self.rejected.mkdir(parents=True, exist_ok=True)
            (self.rejected / name).write_bytes(der)
            where = f"; it was saved as {self.rejected / name}: move it to {self.folder} to trust it"
        except OSError:
            where = f"; put it in {self.folder} to trust it"
        subject = cert.subject.rfc4514_string()
        return f"server certificate {subject} ({thumbprint(der)}) is not trusted{where}"


def create_certificate(cert_path: Path, key_path: Path, application_uri: str,
                       hostname: str | None = None, days: int = 3650,
                       common_name: str = "edge-agent") -> None:
    """A self-signed OPC UA application instance certificate (DER) and its key (PEM).

    The subject alternative name carries the application URI, which servers check against
    the client's ApplicationDescription, and the host name."""
    hostname = hostname or socket.gethostname()
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "edge-agent")])
    alt: list[x509.GeneralName] = [x509.UniformResourceIdentifier(application_uri),
                                   x509.DNSName(hostname)]
    try:
        alt.append(x509.IPAddress(ipaddress.ip_address(hostname)))
    except ValueError:
        pass
    now = dt.datetime.now(dt.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=True,
                                     key_encipherment=True, data_encipherment=True,
                                     key_agreement=False, key_cert_sign=False, crl_sign=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH,
                                              ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path.parent.mkdir(parents=True, exist_ok=True)
    key_path.parent.mkdir(parents=True, exist_ok=True)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.DER))
    # The key is private from its first byte on, also when an older file is replaced.
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(key.private_bytes(serialization.Encoding.PEM,
                                    serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()))
