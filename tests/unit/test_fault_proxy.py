"""The test fault proxy itself, against a loopback echo server."""

from __future__ import annotations

import socket
import threading
import time
from typing import Iterator

import pytest

from tests.support.fault_proxy import FaultProxy


@pytest.fixture
def echo() -> Iterator[int]:
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return

            def loop(c: socket.socket = conn) -> None:
                with c:
                    try:
                        while data := c.recv(65536):
                            c.sendall(data)
                    except OSError:
                        pass
            threading.Thread(target=loop, daemon=True).start()
    threading.Thread(target=serve, daemon=True).start()
    yield port
    server.close()


@pytest.fixture
def proxy(echo: int) -> Iterator[FaultProxy]:
    p = FaultProxy(echo)
    yield p
    p.close()


def talk(port: int, data: bytes, timeout: float = 2.0) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        got = b""
        while len(got) < len(data):
            chunk = s.recv(65536)
            if not chunk:
                break
            got += chunk
        return got


def test_pass_and_delay(proxy: FaultProxy) -> None:
    assert talk(proxy.port, b"hello") == b"hello"
    proxy.delay(0.3)
    started = time.monotonic()
    assert talk(proxy.port, b"slow") == b"slow"
    assert time.monotonic() - started >= 0.5  # held each way (a lower bound only)
    proxy.pass_through()
    assert talk(proxy.port, b"again") == b"again"


def test_black_hole_keeps_the_connection_but_nothing_passes(proxy: FaultProxy) -> None:
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=0.5) as s:
        s.sendall(b"one")
        assert s.recv(10) == b"one"
        proxy.black_hole()
        s.sendall(b"two")
        with pytest.raises(TimeoutError):
            s.recv(10)
        with pytest.raises(TimeoutError):
            talk(proxy.port, b"new", timeout=0.5)  # accepted, then silence
        proxy.pass_through()  # as after TCP retransmits: what was sent arrives
        assert s.recv(10) == b"two"


def test_drop_and_reset_close_connections_and_refuse_new_ones(proxy: FaultProxy) -> None:
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=2) as s:
        s.sendall(b"x")
        assert s.recv(1) == b"x"
        proxy.drop()
        assert s.recv(1) == b""  # FIN
    try:  # closed at once: an empty read, or a reset when our bytes were still unread
        assert talk(proxy.port, b"refused") == b""
    except ConnectionResetError:
        pass
    proxy.pass_through()
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=2) as s:
        s.sendall(b"y")
        assert s.recv(1) == b"y"
        proxy.reset()
        with pytest.raises(ConnectionResetError):
            s.recv(1)
            s.sendall(b"z")
            s.recv(1)


def test_throttle_limits_the_rate(proxy: FaultProxy) -> None:
    proxy.throttle(20_000)  # 20 kB/s each way
    started = time.monotonic()
    assert talk(proxy.port, b"a" * 10_000, timeout=5) == b"a" * 10_000
    # A lower bound only (a loaded machine is slower, never faster): 10 kB at 20 kB/s.
    assert time.monotonic() - started >= 0.4
