"""systemd's service notification protocol (sd_notify(3)) without libsystemd.

A message is one datagram of newline-separated `KEY=value` lines sent to the AF_UNIX
socket named by $NOTIFY_SOCKET (a leading '@' names a socket in the abstract namespace).
With `Type=notify` systemd waits for READY=1 before it calls the service started; with
`WatchdogSec=` it restarts the service when WATCHDOG=1 stops arriving in time. Outside
systemd (no $NOTIFY_SOCKET) every call here does nothing.

`Notifier` is the protocol; `ServiceNotify` is what the agent tells systemd: READY=1 once
it runs, a one-line STATUS= summary, the watchdog pings, STOPPING=1.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Mapping
from typing import Any

from agent.runtime.logs import get_logger
from agent.core.supervise import supervise


class Notifier:
    """Sends notifications to the service manager; inactive without $NOTIFY_SOCKET.

    The socket is non-blocking: a send never waits (a message that does not fit in the
    socket's buffer is dropped), so it is safe on the event loop. Send errors are logged
    once and otherwise ignored: a lost notification must never stop the agent.
    """

    def __init__(self, address: str | None, watchdog_usec: str | None = None,
                 watchdog_pid: str | None = None, log: Any = None) -> None:
        self._log = log if log is not None else get_logger(component="systemd")
        self._address: str | bytes | None = None
        if address:
            if address.startswith("@"):  # abstract namespace: a leading NUL byte
                self._address = b"\0" + address[1:].encode()
            elif address.startswith("/"):
                self._address = address
            else:  # e.g. systemd 254's vsock: addresses, which this does not speak
                self._log.warning("unsupported NOTIFY_SOCKET, not notifying systemd",
                                  notify_socket=address)
        self._watchdog_usec, self._watchdog_pid = watchdog_usec, watchdog_pid
        self._sock: socket.socket | None = None
        self._failed = False  # a send failed: logged once, later failures stay quiet

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None,
                         log: Any = None) -> Notifier:
        """The notifier systemd set up for this process (inactive outside systemd)."""
        env = os.environ if environ is None else environ
        return cls(env.get("NOTIFY_SOCKET"), env.get("WATCHDOG_USEC"), env.get("WATCHDOG_PID"),
                   log)

    @property
    def active(self) -> bool:
        return self._address is not None

    def notify(self, *assignments: str) -> bool:
        """Send `KEY=value` lines in one datagram; True if it was sent."""
        if self._address is None:
            return False
        data = "\n".join(assignments).encode()
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._sock.setblocking(False)
            self._sock.sendto(data, self._address)
            return True
        except OSError as exc:
            if not self._failed:
                self._failed = True
                self._log.warning("cannot notify systemd", error=str(exc) or type(exc).__name__,
                                  notify_socket=os.fsdecode(self._address).replace("\0", "@"))
            return False

    def ready(self, status: str | None = None) -> bool:
        """Start-up is complete (Type=notify: only now is the service 'active')."""
        return self.notify("READY=1", *(() if status is None else (_status_line(status),)))

    def status(self, text: str) -> bool:
        """A one-line status, shown by `systemctl status`."""
        return self.notify(_status_line(text))

    def stopping(self, status: str | None = None) -> bool:
        """The stop sequence has begun."""
        return self.notify("STOPPING=1", *(() if status is None else (_status_line(status),)))

    def reloading(self) -> bool:
        """A configuration reload has begun; send ready() when it is done."""
        return self.notify("RELOADING=1", f"MONOTONIC_USEC={time.monotonic_ns() // 1000}")

    def watchdog(self) -> bool:
        """One keep-alive ping."""
        return self.notify("WATCHDOG=1")

    def watchdog_interval(self) -> float | None:
        """The watchdog timeout in seconds ($WATCHDOG_USEC), or None when systemd does not
        watch this process (no watchdog, or $WATCHDOG_PID names another process)."""
        if not self.active or not self._watchdog_usec:
            return None
        if self._watchdog_pid:
            try:
                if int(self._watchdog_pid) != os.getpid():
                    return None
            except ValueError:
                return None
        try:
            usec = int(self._watchdog_usec)
        except ValueError:
            return None
        return usec / 1e6 if usec > 0 else None

    async def watchdog_loop(self) -> None:
        """Ping every half timeout, forever (returns at once when there is no watchdog).

        The pings are sent by the event loop itself: when the loop stalls (a blocking call,
        a busy task), they stop and systemd restarts the service."""
        interval = self.watchdog_interval()
        if interval is None:
            return
        while True:
            self.watchdog()
            await asyncio.sleep(interval / 2)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _status_line(text: str) -> str:
    return "STATUS=" + " ".join(text.splitlines())


class ServiceNotify:
    """The agent's side of the protocol: READY=1 when it runs, STATUS= every few seconds,
    watchdog pings from the event loop, STOPPING=1 when the stop sequence begins."""

    STATUS_INTERVAL = 5.0  # seconds between STATUS= updates of the backlog
    CHECK_INTERVAL = 1.0  # a link going up or down is reported within this

    def __init__(self, agent: Any, notifier: Notifier | None = None) -> None:
        self._agent = agent
        self._log = get_logger(component="systemd")
        self.notifier = notifier if notifier is not None else Notifier.from_environment(
            log=self._log)
        self._task: asyncio.Task[None] | None = None
        self._reported: tuple[Any, ...] | None = None  # the links of the last STATUS= sent

    @classmethod
    def started(cls, agent: Any, notifier: Notifier | None = None) -> ServiceNotify:
        """Call once the agent runs (config loaded, buffer open, tasks started): sends
        READY=1 and starts the background pings and status updates."""
        self = cls(agent, notifier)
        if self.notifier.active:
            self.notifier.ready(self._summary_or_none())
            self._task = asyncio.create_task(self._run(), name="systemd")
        return self

    def stopping(self) -> None:
        """Call when the stop sequence begins: STOPPING=1; pings and updates end (systemd
        no longer watches a stopping service: TimeoutStopSec= bounds the stop instead)."""
        if self._task is not None:
            self._task.cancel()
            self._task = None
        if self.notifier.active:
            summary = self._summary_or_none()
            self.notifier.stopping(None if summary is None else "stopping: " + summary)

    def summary(self) -> str:
        """'N/M machines up, backlog B batches (X bytes), uplink connected|disconnected'
        (agent/runtime/health.py: the same facts as /healthz and the retained status)."""
        return str(self._agent.health.summary())

    def _summary_or_none(self) -> str | None:
        """The summary; a failure to build it must not cost the READY=1 or STOPPING=1."""
        try:
            self._reported = self._links()
            return self.summary()
        except Exception:  # noqa: BLE001 - logged; READY=1 matters more
            self._log.exception("cannot build the systemd status")
            return None

    def _links(self) -> tuple[Any, ...]:
        """What is up: a change is reported at once rather than at the next update."""
        facts = self._agent.health.facts()
        return facts["machines_up"], facts["machines"], facts["uplink_connected"], facts["healthy"]

    async def _run(self) -> None:
        # Each loop under its own supervision: a failing status update must not stop the
        # watchdog pings (that would get the agent restarted for nothing).
        async with asyncio.TaskGroup() as group:
            group.create_task(supervise("systemd-watchdog", self.notifier.watchdog_loop,
                                        self._log))
            group.create_task(supervise("systemd-status", self._status_loop, self._log))

    async def _status_loop(self) -> None:
        """STATUS= every STATUS_INTERVAL, and at once when a link goes up or down."""
        sent = time.monotonic()
        while True:
            await asyncio.sleep(self.CHECK_INTERVAL)
            now, links = time.monotonic(), self._links()
            if links != self._reported or now - sent >= self.STATUS_INTERVAL:
                self.notifier.status(self.summary())
                self._reported, sent = links, now
