"""The OPC UA commissioning commands: `edge-agent browse URL` and `edge-agent certs create`.

The CLI adds them from OPCUA.commands (drivers/opcua/spec.py) like any driver's commands.
This module is loaded with the registry, so it imports nothing heavy at its top: asyncua,
pydantic's models and the certificate code load only when a command runs.

Exit codes (see DriverCommand): 0 done, 1 the command ran and failed (the server did not
answer, a certificate exists or could not be written), 2 a usage error (the options do not
make a valid connection).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

from drivers.base import DriverCommand

if TYPE_CHECKING:
    import argparse

_OK, _FAILED, _USAGE = 0, 1, 2
# The values of drivers.opcua.config.Policy, spelled out so that `--help` needs no pydantic.
_POLICIES = ["None", "Basic256Sha256", "Aes128_Sha256_RsaOaep", "Aes256_Sha256_RsaPss"]


def _browse_arguments(browse: argparse.ArgumentParser) -> None:
    browse.add_argument("url", help="opc.tcp://HOST:PORT")
    browse.add_argument("--path", default="/Objects", help="browse path or NodeId to start at")
    browse.add_argument("--depth", type=int, default=3)
    browse.add_argument("--policy", default="None", choices=_POLICIES)
    browse.add_argument("--mode", choices=["Sign", "SignAndEncrypt"])
    browse.add_argument("--certificate", help="client certificate (edge-agent certs create)")
    browse.add_argument("--private-key")
    browse.add_argument("--trust", help="folder of trusted server certificates")
    browse.add_argument("--trust-on-first-use", action="store_true")
    browse.add_argument("--username")
    browse.add_argument("--password-env", help="environment variable holding the password")
    browse.add_argument("--allow-plaintext-password", action="store_true",
                        help="send the password with --policy None (unencrypted)")
    browse.add_argument("--timeout", default="5s", help="per request (default 5s)")


async def _browse(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from drivers.opcua.browse import browse
    from drivers.opcua.config import OpcUaConnection
    security = {"policy": args.policy, "mode": args.mode, "certificate": args.certificate,
                "private_key": args.private_key, "trust": args.trust,
                "trust_on_first_use": args.trust_on_first_use}
    auth = {"username": args.username, "password_env": args.password_env,
            "allow_plaintext_password": args.allow_plaintext_password or None}
    try:
        conn = OpcUaConnection.model_validate({
            "protocol": "opcua", "url": args.url, "timeout": args.timeout,
            "security": {k: v for k, v in security.items() if v not in (None, False)},
            "auth": {k: v for k, v in auth.items() if v is not None}})
    except ValidationError as exc:
        for err in exc.errors():
            where = ".".join(str(p) for p in err["loc"])
            print(f"edge-agent: {where}: {err['msg'].removeprefix('Value error, ')}", file=sys.stderr)
        return _USAGE
    try:
        count = await browse(conn, args.path, args.depth, print)
    except (ConnectionError, TimeoutError, OSError) as exc:
        print(f"edge-agent: {args.url}: {exc or type(exc).__name__}", file=sys.stderr)
        return _FAILED
    print(f"({count} nodes)", file=sys.stderr)
    return _OK


def _certs_arguments(certs: argparse.ArgumentParser) -> None:
    certs.add_argument("action", choices=["create"])
    certs.add_argument("--dir", type=Path, default=Path("pki"),
                       help="writes DIR/own/cert.der and DIR/own/key.pem (default ./pki)")
    certs.add_argument("--uri", help="application URI (default urn:HOSTNAME:edge-agent); the "
                       "agent announces the URI it finds in its certificate")
    certs.add_argument("--hostname")
    certs.add_argument("--days", type=int, default=3650)
    certs.add_argument("--force", action="store_true", help="replace an existing certificate")


def _certs(args: argparse.Namespace) -> int:
    from drivers.opcua.config import default_application_uri
    from drivers.opcua.security import create_certificate
    folder: Path = args.dir
    cert, key = folder / "own" / "cert.der", folder / "own" / "key.pem"
    existing = [p for p in (cert, key) if p.exists()]
    if existing and not args.force:
        print(f"edge-agent: {existing[0]} exists (use --force to replace it)", file=sys.stderr)
        return _FAILED
    uri = args.uri or default_application_uri()
    try:
        create_certificate(cert, key, uri, args.hostname, args.days)
        (folder / "trusted").mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        print(f"edge-agent: {exc}", file=sys.stderr)
        return _FAILED
    print(f"certificate      {cert}\nprivate key      {key}\napplication URI  {uri}\n"
          f"trust folder     {folder / 'trusted'} (put the server certificates here)\n"
          f"Give the server {cert} to trust.")
    return _OK


COMMANDS = (
    DriverCommand("browse", "print an OPC UA server's address space", _browse_arguments, _browse),
    DriverCommand("certs", "OPC UA client application certificates", _certs_arguments, _certs),
)
