"""The /metrics and /healthz server keeps answering while clients connect and send nothing,
send a byte a second or send too much; it serves a bounded number of connections at once; and
an agent that serves them beyond loopback says at start that they have no authentication."""

from __future__ import annotations

import contextlib
import json
import select
import socket
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Iterator

import pytest

from agent.cli.processes import free_port
from agent.runtime.metrics import Metrics
from tests.support.harness import AgentConfig, AgentProcess, Broker, press_machine, wait_for

CAP = 8  # agent.runtime.http_server.MAX_CONNECTIONS; written out so that this file imports on any server


def get(url: str, timeout: float = 5) -> tuple[int, str]:
    """Status and body; 0 when the server closed or reset the connection, or did not answer."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except (urllib.error.URLError, OSError):
        return 0, ""


@pytest.fixture
def port() -> Iterator[int]:
    """A healthy agent's /metrics and /healthz on a free loopback port."""
    port = free_port()
    server: Any = Metrics().serve(f"127.0.0.1:{port}", lambda: {"healthy": True})
    yield port
    if server is not None:  # a server that cannot be stopped leaves only a daemon thread
        server.shutdown()
        server.server_close()


def connection_threads(port: int) -> int:
    return sum(1 for t in threading.enumerate() if t.name == f"metrics-http-{port}-conn")


def closed_by_server(sock: socket.socket, timeout: float) -> bytes | None:
    """What the server sent before it closed the connection, or None if it kept it open."""
    sock.settimeout(timeout)
    data = b""
    try:
        while chunk := sock.recv(4096):
            data += chunk
    except TimeoutError:
        return None
    except ConnectionError:
        pass
    return data


def test_an_idle_connection_does_not_blind_healthz_or_metrics(port: int) -> None:
    with contextlib.ExitStack() as stack:
        idle = stack.enter_context(socket.create_connection(("127.0.0.1", port), timeout=5))
        half = stack.enter_context(socket.create_connection(("127.0.0.1", port), timeout=5))
        half.sendall(b"GET /hea")  # half a request line, never finished
        status, body = get(f"http://127.0.0.1:{port}/healthz")
        assert status == 200 and json.loads(body) == {"healthy": True}
        status, body = get(f"http://127.0.0.1:{port}/metrics")
        assert status == 200 and "process_resident_memory_bytes" in body
        # And both are dropped once their time to send a request is up.
        for sock in (idle, half):
            assert closed_by_server(sock, 30) == b""


def test_connections_beyond_the_cap_get_503_and_healthz_answers_once_idle_ones_time_out(
        port: int) -> None:
    with contextlib.ExitStack() as stack:
        idle = [stack.enter_context(socket.create_connection(("127.0.0.1", port), timeout=10))
                for _ in range(CAP)]
        wait_for(lambda: connection_threads(port) == CAP, 10, "a thread for each idle connection")
        extra = [stack.enter_context(socket.create_connection(("127.0.0.1", port), timeout=10))
                 for _ in range(4)]
        for sock in extra:
            reply = closed_by_server(sock, 10)
            assert reply is not None and reply.startswith(b"HTTP/1.0 503 "), reply
        assert connection_threads(port) <= CAP
        most = [CAP]

        def answered() -> bool:
            most[0] = max(most[0], connection_threads(port))
            return get(f"http://127.0.0.1:{port}/healthz")[0] == 200

        wait_for(answered, 30, "/healthz to answer once the idle connections time out", step=0.2)
        assert most[0] <= CAP
        for sock in idle:
            assert closed_by_server(sock, 30) == b""
        wait_for(lambda: connection_threads(port) == 0, 30, "the connection threads to end")


def test_a_client_sending_a_header_byte_a_second_is_cut_off(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        deadline = time.monotonic() + 30
        cut_off = False
        while not cut_off and time.monotonic() < deadline:
            try:
                sock.sendall(b"a")
            except ConnectionError:
                cut_off = True
                break
            # Readable here means the server closed it: it never answers a request unfinished.
            if select.select([sock], [], [], 1.0)[0]:
                cut_off = closed_by_server(sock, 5) == b""
                assert cut_off
        assert cut_off, "the slow client still had its connection after 30 s"
    assert get(f"http://127.0.0.1:{port}/healthz")[0] == 200


def test_a_request_larger_than_the_budget_is_answered_431(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n"
                     + b"".join(b"X-Pad-%d: %s\r\n" % (i, b"a" * 1000) for i in range(40)))
        reply = closed_by_server(sock, 10)
        assert reply is not None and reply.startswith(b"HTTP/1.0 431 "), reply
    assert get(f"http://127.0.0.1:{port}/healthz")[0] == 200


def test_only_loopback_listen_addresses_count_as_private() -> None:
    # Imported here, so that the tests above run (and fail) on a server without it.
    from agent.runtime.http_server import listen_is_loopback
    for listen in ("127.0.0.1:9108", "127.1.2.3:9108", "localhost:9108", "LOCALHOST:1",
                   "[::1]:9108", "::1"):
        assert listen_is_loopback(listen), listen
    for listen in ("0.0.0.0:9108", ":9108", "192.168.1.10:9108", "gateway.local:9108",
                   "[::]:9108", "::"):
        assert not listen_is_loopback(listen), listen


def test_an_agent_serving_beyond_loopback_warns_that_there_is_no_authentication(
        tmp_path: Path, broker: Broker) -> None:
    port = free_port()
    # The config needs a machine; with no device behind it, it is down: still healthy.
    config = AgentConfig(tmp_path, broker.port, {"p1": press_machine("p1", free_port())}).write()
    agent_yaml = config / "agent.yaml"
    agent_yaml.write_text(agent_yaml.read_text().replace(
        "metrics: {listen: null}", f"metrics: {{listen: '0.0.0.0:{port}'}}"))
    agent = AgentProcess(config, tmp_path / "state", tmp_path / "agent.log")
    try:
        wait_for(lambda: get(f"http://127.0.0.1:{port}/healthz", timeout=1)[0] == 200, 30,
                 "the agent's /healthz")
        warnings = [line for line in agent.logs() if "no authentication" in line["event"]]
        assert len(warnings) == 1 and warnings[0]["level"] == "warning"
        assert warnings[0]["listen"] == f"0.0.0.0:{port}"
        assert "/metrics and /healthz" in warnings[0]["event"]
    finally:
        assert agent.stop() == 0
