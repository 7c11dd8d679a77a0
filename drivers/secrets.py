"""Passwords from an environment variable, a file or a systemd credential: the one reader for
the broker password (`mqtt.*`) and for drivers (OPC UA `connection.auth.*`), so both follow
the same rules.

- `password_file`: its first line is the password; an empty first line is an error. A
  relative path is relative to the folder of the config file that names it (agent.yaml's:
  the config folder; a machine file's paths are resolved so by the loader already).
- `password_env`: the variable's value. systemd's `Environment=` puts it where
  `systemctl show` prints it to anyone; prefer a credential.
- `password_credential: NAME`: the file `$CREDENTIALS_DIRECTORY/NAME`, which systemd fills
  from `LoadCredential=NAME:/path` (readable by the service only, never in `systemctl show`).

Reading is blocking file I/O: do it at startup, or in a thread from the event loop.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from drivers.file_checks import FileChecker, FileProblem

CREDENTIALS_DIRECTORY = "CREDENTIALS_DIRECTORY"
# A file name in $CREDENTIALS_DIRECTORY: no '/', and not '.' or '..'.
CREDENTIAL_NAME = r"^[A-Za-z0-9_][A-Za-z0-9_.@-]{0,254}$"


class SecretError(ValueError):
    """A configured password that cannot be had; `field` is the config field it comes from."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True, slots=True)
class PasswordSource:
    """Where one password comes from, as configured (at most one of env, file, credential).

    `loc` is the config mapping that holds the fields, e.g. ("mqtt",) or
    ("connection", "auth"): errors name `mqtt.password_file` and so on."""

    loc: tuple[str, ...]
    env: str | None = None
    file: str | None = None
    credential: str | None = None
    base: Path | None = None  # folder that a relative `file` is in

    def field(self, name: str) -> str:
        return ".".join((*self.loc, name))

    @property
    def path(self) -> Path | None:
        """`file` resolved: ~ expanded, relative to `base`."""
        if not self.file:
            return None
        path = Path(self.file).expanduser()
        return path if path.is_absolute() or self.base is None else self.base / path

    def read(self, environ: Mapping[str, str] = os.environ) -> str | None:
        """The password, None if none is configured; SecretError if it is configured but
        cannot be had."""
        if self.env:
            value = environ.get(self.env)
            if value is None:
                raise SecretError(self.field("password_env"),
                                  f"environment variable {self.env} is not set")
            return value
        if self.file:
            assert self.path is not None
            return _first_line(self.path, self.field("password_file"))
        if self.credential:
            return _first_line(self._credential_path(environ), self.field("password_credential"))
        return None

    def _credential_path(self, environ: Mapping[str, str]) -> Path:
        field, name = self.field("password_credential"), self.credential
        directory = environ.get(CREDENTIALS_DIRECTORY)
        if not directory:
            raise SecretError(field, f"{CREDENTIALS_DIRECTORY} is not set: run the agent from a "
                              f"systemd unit with LoadCredential={name}:/path/to/the/file")
        path = Path(directory) / str(name)
        if not path.exists():
            raise SecretError(field, f"there is no credential {name} in {directory}: add "
                              f"LoadCredential={name}:/path/to/the/file to the unit")
        return path

    def check(self, files: FileChecker,
              environ: Mapping[str, str] = os.environ) -> list[FileProblem]:
        """What `validate` says about this source. The service's environment and
        credentials are not those of a shell: their absence here is only a warning."""
        if self.env:
            if self.env not in environ:
                return [FileProblem((*self.loc, "password_env"),
                                    f"environment variable {self.env} is not set here; the "
                                    "service needs it when it starts", warning=True)]
            return []
        if self.file:
            assert self.path is not None
            loc = (*self.loc, "password_file")
            problems = files.check(loc, self.path, secret=True)
            if any(not p.warning for p in problems):
                return problems
            return problems + self._readable(loc, environ)
        if self.credential:
            loc = (*self.loc, "password_credential")
            if not environ.get(CREDENTIALS_DIRECTORY):
                return [FileProblem(loc, f"{CREDENTIALS_DIRECTORY} is not set here (only the "
                                    f"service gets it, from LoadCredential={self.credential}:...)"
                                    "; the credential is read when the agent starts",
                                    warning=True)]
            return self._readable(loc, environ)
        return []

    def _readable(self, loc: tuple[str, ...], environ: Mapping[str, str]) -> list[FileProblem]:
        try:
            self.read(environ)
        except SecretError as exc:
            return [FileProblem(loc, exc.message)]
        return []


def _first_line(path: Path, field: str) -> str:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise SecretError(field, f"{path} does not exist") from None
    except OSError as exc:
        raise SecretError(field, f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise SecretError(field, f"{path} is not UTF-8 text") from None
    # Only "\n" ends the line (and a "\r" before it): a password may hold any other character.
    first = text.split("\n", 1)[0].removesuffix("\r")
    if not first:
        raise SecretError(field, f"{path} is empty (the password is its first line)")
    return first
