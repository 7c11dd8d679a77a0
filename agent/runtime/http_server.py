"""The small HTTP server behind /metrics and /healthz.

It runs off the event loop, so that a stalled loop still gets an answer. It serves each
connection in a thread of its own because one client that connects and sends nothing (or a
byte a second) must not blind a watchdog or a load balancer that asks /healthz meanwhile; and
it is bounded (connections served at once, time and bytes to send a request) so that many such
clients cannot make it start threads or hold memory without limit.
"""

from __future__ import annotations

import io
import ipaddress
import socket
import sys
import threading
import time
from typing import IO, Any, cast
from wsgiref.simple_server import ServerHandler, WSGIRequestHandler, WSGIServer
from wsgiref.types import WSGIApplication

from agent.runtime.logs import get_logger

MAX_CONNECTIONS = 8
"""Connections served at once; one more is answered 503 at once, without reading its request."""
REQUEST_TIMEOUT = 5.0
"""Seconds a client has to send its whole request (request line and headers), and for each
write of the answer; then the connection is closed without a word."""
MAX_REQUEST_BYTES = 32 * 1024
"""Bytes a connection may send: a scrape sends a few hundred; more is answered 431."""

_BUSY = (b"HTTP/1.0 503 Service Unavailable\r\nConnection: close\r\nRetry-After: 5\r\n"
         b"Content-Length: 0\r\n\r\n")
_TOO_LARGE = (b"HTTP/1.0 431 Request Header Fields Too Large\r\nConnection: close\r\n"
              b"Content-Length: 0\r\n\r\n")

_log = get_logger(component="metrics")


def listen_is_loopback(listen: str) -> bool:
    """Whether `host:port` (or a bare host) listens on loopback only: 127.0.0.0/8, ::1 or
    localhost. Any other name counts as reachable from elsewhere (it is not resolved)."""
    host = listen.rpartition(":")[0] if listen.count(":") == 1 else listen
    if host.startswith("["):  # [::1]:9108
        host = host[1:].partition("]")[0]
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # "" (every address), or a host name


class BoundedWSGIServer(WSGIServer):
    """A WSGI server with one daemon thread per connection, at most `max_connections` of them."""

    request_queue_size = 16  # a burst of scrapes waits in the backlog instead of being dropped

    def __init__(self, address: tuple[str, int], app: WSGIApplication, *,
                 max_connections: int = MAX_CONNECTIONS, timeout: float = REQUEST_TIMEOUT,
                 max_request_bytes: int = MAX_REQUEST_BYTES) -> None:
        self.app, self.request_timeout, self.max_request_bytes = app, timeout, max_request_bytes
        self._slots = threading.BoundedSemaphore(max_connections)
        super().__init__(address, _Handler)
        self.thread_name = f"metrics-http-{self.server_port}"

    def serve_in_thread(self) -> threading.Thread:
        """Accept connections in a daemon thread of its own, until shutdown()."""
        thread = threading.Thread(target=self.serve_forever, name=self.thread_name, daemon=True)
        thread.start()
        return thread

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self._refuse(request)
            return
        try:
            threading.Thread(target=self._serve_one, args=(request, client_address),
                             name=f"{self.thread_name}-conn", daemon=True).start()
        except BaseException:
            self._slots.release()
            raise

    def _serve_one(self, request: socket.socket, client_address: Any) -> None:
        try:
            self.finish_request(request, client_address)
        except Exception:
            self.handle_error(request, client_address)
        finally:
            self.shutdown_request(request)
            self._slots.release()

    def _refuse(self, request: socket.socket) -> None:
        # Never blocks the accepting thread: the answer fits in an empty send buffer.
        _drain(request)
        request.setblocking(False)
        try:
            request.send(_BUSY)
        except OSError:
            pass
        self.shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that goes away or stalls is no news; anything else is a bug worth one line.
        exc = sys.exception()
        if not isinstance(exc, OSError):
            _log.error("metrics request failed", client=str(client_address[0]), exc_info=exc)


class _DeadlineReader(io.RawIOBase):
    """Reads a socket with one deadline and one byte budget for all reads together: a per-read
    timeout alone would let a client that sends a byte a second hold its thread for ever."""

    def __init__(self, sock: socket.socket, timeout: float, max_bytes: int) -> None:
        self._sock, self._timeout = sock, timeout
        self._deadline = time.monotonic() + timeout
        self._left = max_bytes

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        remaining = self._deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("the request did not arrive in time")
        if self._left <= 0:
            raise _TooLarge
        self._sock.settimeout(remaining)
        try:
            n = self._sock.recv_into(memoryview(buffer)[:self._left])
        finally:
            self._sock.settimeout(self._timeout)  # writes get the whole timeout each
        self._left -= n
        return n


class _TooLarge(Exception):
    pass


class _Handler(WSGIRequestHandler):
    server: BoundedWSGIServer

    def setup(self) -> None:
        super().setup()
        self.connection.settimeout(self.server.request_timeout)
        self.rfile.close()  # the stdlib's reader, replaced by one with a deadline and a budget
        self.rfile = io.BufferedReader(_DeadlineReader(
            self.connection, self.server.request_timeout, self.server.max_request_bytes))

    def handle(self) -> None:
        """One request per connection, as wsgiref's handler, but with the answer's errors
        logged through the agent's logger and a slow or gone client closed quietly."""
        try:
            self.raw_requestline = self.rfile.readline(65537)
            if len(self.raw_requestline) > 65536:
                self.requestline = self.request_version = self.command = ""
                self.send_error(414)
                return
            if not self.parse_request():  # it has answered 400, 431, ... already
                return
            handler = _ServerHandler(self.rfile, cast(IO[bytes], self.wfile), self.get_stderr(),
                                     self.get_environ(), multithread=True)
            handler.request_handler = self  # for its log_request() at close
            handler.run(self.server.app)
        except _TooLarge:
            _drain(self.connection)  # unread bytes would make close() a reset, losing the 431
            self.connection.sendall(_TOO_LARGE)
        except OSError:
            pass  # timed out or went away: nothing to tell anyone

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass  # one line per scrape would drown the agent's own logs


class _ServerHandler(ServerHandler):
    request_handler: WSGIRequestHandler

    def log_exception(self, exc_info: Any) -> None:
        if not isinstance(exc_info[1], OSError):  # a client that stopped reading is no news
            _log.error("metrics request failed", exc_info=exc_info)


def _drain(sock: socket.socket) -> None:
    """Read what already arrived, without waiting, so that closing sends FIN and not RST."""
    timeout = sock.gettimeout()
    sock.setblocking(False)  # a socket with a timeout would wait for data even with MSG_DONTWAIT
    try:
        for _ in range(16):
            if not sock.recv(65536):
                return
    except OSError:
        pass
    finally:
        sock.settimeout(timeout)
