"""The TLS context of mqtts:// from `mqtt.tls`: its files checked (PEM contents,
passphrases, the key matching the certificate, who may read the key) before the first
connection, each problem as `agent.yaml:LINE: mqtt.tls.FIELD: message`. `validate` and the
uplink both use it, so what validate accepts, run accepts.
"""

from __future__ import annotations

import re
import ssl
from datetime import UTC, datetime
from pathlib import Path
from typing import Callable

from agent.config.models import TlsConfig
from drivers.file_checks import exposure


class TlsFileError(ValueError):
    """A problem with a file of `mqtt.tls`; reads `agent.yaml:LINE: mqtt.tls.NAME: message`
    as the loader reports config errors, with `name` and `message` for validate."""

    def __init__(self, text: str, name: str, message: str) -> None:
        super().__init__(text)
        self.name = name
        self.message = message


def _config_error(config_root: Path, name: str, message: str) -> TlsFileError:
    from agent.config.loader import AGENT_FILE, ConfigError
    from agent.config.yaml_source import load_yaml
    try:
        line: int | None = load_yaml(config_root / AGENT_FILE).line_of(("mqtt", "tls", name))
    except (OSError, ValueError):  # no readable agent.yaml: the field alone still says it
        line = None
    return TlsFileError(str(ConfigError(AGENT_FILE, line, f"mqtt.tls.{name}", message)),
                        name, message)


def _read_pem(config_root: Path, name: str, path: Path) -> str:
    if not path.exists():
        raise _config_error(config_root, name, f"{path} does not exist")
    if not path.is_file():
        raise _config_error(config_root, name, f"{path} is not a file")
    try:
        return path.read_text(encoding="ascii", errors="replace")
    except OSError as exc:  # e.g. permission denied for the agent's user
        raise _config_error(config_root, name,
                            f"cannot read {path}: {exc.strerror or exc}") from None


def ssl_reason(exc: BaseException | str) -> str:
    """An OpenSSL error (or paho's log line of one) without paho's `failed to receive on
    socket:`, OpenSSL's `[SSL: CODE]` and Python's `(_ssl.c:1006)`."""
    text = exc if isinstance(exc, str) else getattr(exc, "verify_message", None) or str(exc)
    text = re.sub(r"^failed to (receive|send) on socket:\s*", "", text)
    text = re.sub(r"^\[[A-Z0-9_]+(: [A-Z0-9_]+)?\]\s*", "", text)
    return re.sub(r"\s*\(_ssl\.c:\d+\)$", "", text).rstrip(".")


def tls_context(tls: TlsConfig | None, config_root: Path,
                warn: Callable[[str], None] | None = None) -> ssl.SSLContext:
    """The TLS context of mqtts://: the broker certificate is verified against `ca` (default:
    the system CA store) and must name the host of the url (check_hostname, no opt-out);
    TLS `min_version` or newer; with `cert` and `key` the client authenticates (mutual TLS).

    Files are relative to the config folder. Every problem found before connecting raises
    TlsFileError (a ValueError) as `agent.yaml:LINE: mqtt.tls.FIELD: message`; `warn` gets
    what is allowed but unwise (a private key other users can read, an expired client
    certificate), as `mqtt.tls.FIELD: message`."""
    def resolve(path: str | None) -> Path | None:
        return None if path is None else config_root / Path(path).expanduser()  # absolute stays

    ca, cert, key = (resolve(tls.ca), resolve(tls.cert), resolve(tls.key)) if tls else (None,) * 3
    if cert is not None and key is None:  # the config model requires both; a caller may not
        raise _config_error(config_root, "key", "required with cert (mutual TLS)")
    pem = {name: _read_pem(config_root, name, path)
           for name, path in (("ca", ca), ("cert", cert), ("key", key)) if path is not None}
    if "ca" in pem and "-----BEGIN CERTIFICATE-----" not in pem["ca"]:
        raise _config_error(config_root, "ca", f"{ca} holds no PEM certificate")
    if "cert" in pem and "-----BEGIN CERTIFICATE-----" not in pem["cert"]:
        raise _config_error(config_root, "cert", f"{cert} holds no PEM certificate")
    if "key" in pem:
        if not re.search(r"-----BEGIN [A-Z ]*PRIVATE KEY-----", pem["key"]):
            raise _config_error(config_root, "key", f"{key} holds no PEM private key")
        if re.search(r"-----BEGIN ENCRYPTED PRIVATE KEY-----|Proc-Type: 4,ENCRYPTED", pem["key"]):
            # OpenSSL would ask for the passphrase on the terminal, or fail under systemd.
            raise _config_error(config_root, "key", f"{key} is encrypted with a passphrase: "
                                "the agent needs it unencrypted, readable by its user only")
        exposed = exposure(key)  # type: ignore[arg-type]
        if exposed is not None and warn is not None:
            warn(f"mqtt.tls.key: {exposed}")
    try:
        context = ssl.create_default_context(cafile=None if ca is None else str(ca))
    except ssl.SSLError as exc:
        raise _config_error(config_root, "ca", f"{ca} holds no valid PEM certificate "
                            f"({ssl_reason(exc)})") from None
    # create_default_context sets both already; they are the promise of this function.
    context.verify_mode = ssl.CERT_REQUIRED
    context.check_hostname = True
    context.minimum_version = (ssl.TLSVersion.TLSv1_3 if tls and tls.min_version == "1.3"
                               else ssl.TLSVersion.TLSv1_2)
    if cert is not None:
        def no_passphrase() -> bytes:
            raise ValueError("encrypted")
        try:
            context.load_cert_chain(str(cert), str(key), password=no_passphrase)
        except ValueError:
            raise _config_error(config_root, "key", f"{key} is encrypted with a passphrase: "
                                "the agent needs it unencrypted, readable by its user only"
                                ) from None
        except ssl.SSLError as exc:
            if exc.reason == "KEY_VALUES_MISMATCH":
                raise _config_error(config_root, "key",
                                    f"{key} is not the private key of {cert}") from None
            # OpenSSL says "PEM lib" for either file: find out which one it is.
            try:
                ssl.create_default_context(cafile=str(cert))
            except ssl.SSLError:
                raise _config_error(config_root, "cert", f"{cert} holds no valid PEM "
                                    f"certificate ({ssl_reason(exc)})") from None
            raise _config_error(config_root, "key", f"{key} holds no valid PEM private key "
                                f"({ssl_reason(exc)})") from None
        if warn is not None:
            _warn_validity(pem["cert"], cert, warn)
    return context


def _warn_validity(text: str, path: Path, warn: Callable[[str], None]) -> None:
    # The broker would refuse it with a bare TLS alert; say why before the first attempt.
    from cryptography import x509
    try:
        certificate = x509.load_pem_x509_certificate(text.encode())
    except ValueError:
        return
    now = datetime.now(UTC)
    if certificate.not_valid_after_utc < now:
        warn(f"mqtt.tls.cert: {path} expired on "
             f"{certificate.not_valid_after_utc:%Y-%m-%d %H:%M} UTC")
    elif certificate.not_valid_before_utc > now:
        warn(f"mqtt.tls.cert: {path} is not valid before "
             f"{certificate.not_valid_before_utc:%Y-%m-%d %H:%M} UTC (is the clock right?)")
