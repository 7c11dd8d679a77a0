"""Can the service open the files its config names? `edge-agent validate` asks this of every
password file, certificate, private key and trust folder, so that `run` does not find out.

Readability is checked twice when it matters: with os.access for the user running validate
(which also honours ACLs), and from owner, group and mode for the user the service runs as
(`--user`, or `edge-agent` when validate runs as root: root reads everything, so its own
os.access says nothing about the service). POSIX ACLs are not looked at for the service
user; mode bits are what the install notes use.
"""

from __future__ import annotations

import grp
import os
import pwd
import stat
from dataclasses import dataclass
from pathlib import Path

DEFAULT_SERVICE_USER = "edge-agent"  # User= of systemd/edge-agent.service


@dataclass(frozen=True, slots=True)
class FileProblem:
    """A problem with a named file; `loc` is where the file is named, inside the config
    file that names it (e.g. ("connection", "security", "certificate"))."""

    loc: tuple[str | int, ...]
    message: str
    warning: bool = False

    @property
    def field(self) -> str:
        return ".".join(str(part) for part in self.loc)


@dataclass(frozen=True, slots=True)
class ServiceUser:
    """The account the service runs as: its uid and every group it is in."""

    name: str
    uid: int
    gids: frozenset[int]

    @classmethod
    def lookup(cls, name: str) -> ServiceUser:
        """ValueError if there is no such user on this machine."""
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            raise ValueError(f"there is no user {name!r} on this machine") from None
        gids = {entry.pw_gid} | {g.gr_gid for g in grp.getgrall() if name in g.gr_mem}
        return cls(name, entry.pw_uid, frozenset(gids))


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def _describe(st: os.stat_result) -> str:
    return (f"owner {_user_name(st.st_uid)}, group {_group_name(st.st_gid)}, "
            f"mode {stat.S_IMODE(st.st_mode):o}")


def exposure(path: Path) -> str | None:
    """Why a secret (password file, private key) can be read by others than its owner, or
    None. Raises OSError if it cannot be stat'ed."""
    st = path.stat()
    mode = stat.S_IMODE(st.st_mode)
    if mode & stat.S_IROTH:
        return f"{path} can be read by every user of this machine (mode {mode:o}): chmod 600 it"
    if mode & stat.S_IRGRP:
        return (f"{path} can be read by the group {_group_name(st.st_gid)} (mode {mode:o}): "
                "chmod 600 it")
    return None


class FileChecker:
    """Checks files as the service will open them; one per validate run."""

    def __init__(self, service_user: ServiceUser | None) -> None:
        self.service_user = service_user
        self._uid = os.geteuid()
        self._me = _user_name(self._uid)

    @classmethod
    def for_service(cls, user: str | None) -> FileChecker:
        """`user` given: check for that user (ValueError if unknown). Otherwise, as root,
        for the unit's user if it exists here; else only for whoever runs validate."""
        if user is not None:
            return cls(ServiceUser.lookup(user))
        if os.geteuid() == 0:
            try:
                return cls(ServiceUser.lookup(DEFAULT_SERVICE_USER))
            except ValueError:
                pass  # a development box without the service account
        return cls(None)

    def check(self, loc: tuple[str | int, ...], path: str | Path, *, secret: bool = False,
              folder: bool = False) -> list[FileProblem]:
        """Exists, is a file (a folder with `folder`), can be read by this user and by the
        service user; a secret readable by others gets a warning."""
        path = Path(path)
        try:
            st = path.stat()
        except (FileNotFoundError, NotADirectoryError):
            return [FileProblem(loc, f"{path} does not exist")]
        except OSError as exc:
            return [FileProblem(loc, f"cannot reach {path}: {exc.strerror or exc}")]
        if folder and not stat.S_ISDIR(st.st_mode):
            return [FileProblem(loc, f"{path} is not a folder")]
        if not folder and not stat.S_ISREG(st.st_mode):
            return [FileProblem(loc, f"{path} is not a file")]
        # A folder is only readable usefully when it can be listed and entered.
        need = os.R_OK | (os.X_OK if folder else 0)
        if self._uid != 0 and not os.access(path, need):
            return [FileProblem(loc, f"{path} is not readable by {self._me} ({_describe(st)})")]
        user = self.service_user
        if user is not None and user.uid != self._uid:
            problem = self._service_problem(path, st, folder)
            if problem is not None:
                return [FileProblem(loc, problem)]
        if secret and not folder:
            exposed = exposure(path)
            if exposed is not None:
                return [FileProblem(loc, exposed, warning=True)]
        return []

    def _service_problem(self, path: Path, st: os.stat_result, folder: bool) -> str | None:
        user = self.service_user
        assert user is not None
        if user.uid == 0:
            return None
        # Every folder on the way must be enterable (x), on the path as written and on the
        # one its symlinks lead to: the kernel walks both.
        absolute = Path(os.path.abspath(path))
        folders = {*absolute.parents, *Path(os.path.realpath(path)).parents}
        for parent in sorted(folders, key=lambda p: len(p.parts)):
            try:
                pst = parent.stat()
            except OSError:
                continue  # not reachable for us either: reported by the caller's stat
            if not self._allows(pst, stat.S_IXUSR, stat.S_IXGRP, stat.S_IXOTH):
                return (f"{path} is not readable by {user.name}: it cannot enter {parent} "
                        f"({_describe(pst)})")
        readable = self._allows(st, stat.S_IRUSR, stat.S_IRGRP, stat.S_IROTH)
        if folder:
            readable = readable and self._allows(st, stat.S_IXUSR, stat.S_IXGRP, stat.S_IXOTH)
        if not readable:
            return f"{path} is not readable by {user.name} ({_describe(st)})"
        return None

    def _allows(self, st: os.stat_result, owner: int, group: int, other: int) -> bool:
        # The kernel uses exactly one class: owner if the uid matches, else group if one
        # of the user's groups matches, else other (an owner without the bit is refused
        # even where other has it).
        user = self.service_user
        assert user is not None
        if st.st_uid == user.uid:
            return bool(st.st_mode & owner)
        if st.st_gid in user.gids:
            return bool(st.st_mode & group)
        return bool(st.st_mode & other)
