"""One agent per buffer file: an advisory lock on `<buffer>.lock`, held while the buffer is open.

Two agents on one buffer would number their batches from the same per-machine seq and
publish the same (machine, seq) twice with different readings; consumers de-duplicate on it
and would silently drop one of them. flock() is released by the kernel when its holder
exits, however it exits (kill -9 included), so a stale lock file never blocks a restart.
Readers (`edge-agent buffer stats`, `status`) never take it: SQLite's WAL lets them read
alongside the writer.
"""

from __future__ import annotations

import fcntl
import json
import os
import shlex
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

_READ_TRIES = 10  # the holder writes its details right after taking the lock: a short wait


def lock_path(buffer: Path) -> Path:
    """The lock file of a buffer file: beside it, so that --state-dir moves both."""
    return buffer.with_name(buffer.name + ".lock")


class BufferLocked(Exception):
    """Another process holds the buffer; the message names the file and the holder."""

    def __init__(self, buffer: Path, holder: dict[str, Any]) -> None:
        self.buffer, self.holder = buffer, holder
        super().__init__(f"buffer {buffer} is in use by {describe_holder(holder)}")

    @property
    def pid(self) -> int | None:
        pid = self.holder.get("pid")
        return pid if isinstance(pid, int) else None


def describe_holder(holder: dict[str, Any]) -> str:
    """`pid 1234 (agent gw-01: edge-agent run -c /etc/edge-agent, since ...)`."""
    pid = holder.get("pid")
    if not isinstance(pid, int):
        return "another process (it has not written its details yet)"
    details = [f"agent {holder['agent']}"] if holder.get("agent") else []
    if holder.get("command"):
        details.append(str(holder["command"]))
    if holder.get("since"):
        details.append(f"since {holder['since']}")
    return f"pid {pid}" + (f" ({', '.join(details)})" if details else "")


class BufferLock:
    """An exclusive flock on `<buffer>.lock`; blocking file work, so call it off the loop."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    @classmethod
    def acquire(cls, buffer: Path, owner: str = "") -> BufferLock:
        """Take the lock without waiting and write who holds it; BufferLocked if taken."""
        path = lock_path(buffer)
        path.parent.mkdir(parents=True, exist_ok=True)
        # Python opens it close-on-exec: a child process must not keep the lock alive.
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise BufferLocked(buffer, holder) from None
        except BaseException:
            os.close(fd)
            raise
        info = {"pid": os.getpid(), "agent": owner, "command": _command(),
                "since": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}
        data = (json.dumps(info) + "\n").encode()
        # Written in place, then cut to length: a reader never finds the file empty because
        # of us (it may find a stale holder's details for a moment, and retries on a torn read).
        try:
            os.pwrite(fd, data, 0)
            os.ftruncate(fd, len(data))
        except OSError:
            pass  # a full disk: the lock holds all the same, only the refusal names no pid
        return cls(path, fd)

    def release(self) -> None:
        """Give the lock up. The file stays: unlinking a lock file races with a new holder."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            os.ftruncate(fd, 0)  # no stale details for a human reading the file
        except OSError:
            pass
        os.close(fd)  # closing the last descriptor releases the flock


def _command() -> str:
    """This process's command line, as the operator would have typed it."""
    program = Path(sys.argv[0])
    if program.name == "__main__.py":  # python -m agent
        return shlex.join(["python", "-m", program.parent.name, *sys.argv[1:]])
    return shlex.join([program.name, *sys.argv[1:]])


def _read_holder(fd: int) -> dict[str, Any]:
    for attempt in range(_READ_TRIES):
        try:
            holder = json.loads(os.pread(fd, 4096, 0))
        except (OSError, ValueError):
            holder = None
        if isinstance(holder, dict) and isinstance(holder.get("pid"), int):
            # A dead pid is the last holder's, before the new one wrote over it.
            if _alive(holder["pid"]) or attempt == _READ_TRIES - 1:
                return holder
        if attempt < _READ_TRIES - 1:
            time.sleep(0.02)
    return {}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True
