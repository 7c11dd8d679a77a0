"""The files an OPC UA connection names, as `edge-agent validate` checks them: client and
user certificates and keys, the trust folder of server certificates and the password.

Paths are absolute here: the loader resolved them against the machine file's folder.
Imported only when validate checks files: it needs cryptography, never asyncua.
"""

from __future__ import annotations

from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization

from drivers.file_checks import FileChecker, FileProblem
from drivers.opcua.config import OpcUaConnection

# What TrustFolder (drivers/opcua/security.py) loads from the trust folder.
CERTIFICATE_SUFFIXES = (".der", ".pem", ".crt", ".cer")


def check_files(conn: OpcUaConnection, files: FileChecker) -> list[FileProblem]:
    """Every problem with the files `conn` names, at their place in the machine file."""
    sec, auth = conn.security, conn.auth
    problems: list[FileProblem] = []
    for where, cert, key in ((("connection", "security"), sec.certificate, sec.private_key),
                             (("connection", "auth"), auth.certificate, auth.private_key)):
        if cert is not None:
            problems += _certificate((*where, "certificate"), Path(cert), files)
        if key is not None:
            problems += _private_key((*where, "private_key"), Path(key), files)
    if sec.trust is not None:
        problems += _trust_folder(("connection", "security", "trust"), Path(sec.trust), files)
    problems += auth.password_source().check(files)
    return problems


def _certificate(loc: tuple[str, ...], path: Path, files: FileChecker) -> list[FileProblem]:
    problems = files.check(loc, path)
    if problems:
        return problems
    data = path.read_bytes()
    try:
        if b"-----BEGIN CERTIFICATE-----" in data:
            x509.load_pem_x509_certificate(data)
        else:
            x509.load_der_x509_certificate(data)
    except ValueError:
        return [FileProblem(loc, f"{path} holds no certificate (DER or PEM)")]
    return []


def _private_key(loc: tuple[str, ...], path: Path, files: FileChecker) -> list[FileProblem]:
    problems = files.check(loc, path, secret=True)
    if any(not p.warning for p in problems):
        return problems
    data = path.read_bytes()
    try:
        if b"-----BEGIN" in data:
            serialization.load_pem_private_key(data, password=None)
        else:
            serialization.load_der_private_key(data, password=None)
    except TypeError:  # cryptography's way of saying that it needs a passphrase
        return problems + [FileProblem(loc, f"{path} is encrypted with a passphrase: the agent "
                                       "needs it unencrypted, readable by its user only")]
    except (ValueError, UnsupportedAlgorithm):
        return problems + [FileProblem(loc, f"{path} holds no private key (PEM or DER)")]
    return problems


def _trust_folder(loc: tuple[str, ...], path: Path, files: FileChecker) -> list[FileProblem]:
    problems = files.check(loc, path, folder=True)
    if problems:
        return problems
    # A server certificate the service cannot read would fail the connect, not be skipped.
    for item in sorted(path.iterdir()):
        if item.suffix.lower() in CERTIFICATE_SUFFIXES and item.is_file():
            problems += files.check(loc, item)
    return problems
