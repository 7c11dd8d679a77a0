"""A broker that never acknowledges: the uplink keeps at most `max_inflight` messages (or
the broker's MQTT 5 Receive Maximum, if lower) unacknowledged; the rest waits in the
buffer, so memory does not grow with the backlog."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import pytest

from tests.support.harness import (AgentConfig, AgentProcess, Simulator, buffer_stats, free_port,
                           press_machine, wait_for)


class SilentBroker:
    """Accepts MQTT 3.1.1 and 5 connections, answers CONNACK (for 5 with a Receive Maximum),
    then swallows every PUBLISH without a PUBACK, recording its topic. Just enough protocol
    to stand in for a broker that has stalled."""

    def __init__(self, receive_maximum: int = 65535) -> None:
        self.receive_maximum = receive_maximum
        self.port = free_port()
        self.published: list[str] = []
        self._server = socket.create_server(("127.0.0.1", self.port))
        self._server.settimeout(0.2)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._server.accept()
            except (TimeoutError, OSError):
                continue
            threading.Thread(target=self._client, args=(conn,), daemon=True).start()

    def _client(self, conn: socket.socket) -> None:
        conn.settimeout(0.2)
        buf = b""
        with conn:
            while not self._stop.is_set():
                try:
                    chunk = conn.recv(65536)
                except TimeoutError:
                    continue
                except OSError:
                    return
                if not chunk:
                    return
                buf += chunk
                while True:
                    packet = _take_packet(buf)
                    if packet is None:
                        break
                    kind, body, buf = packet
                    if kind == 0x10:  # CONNECT: protocol name, then its level (4 or 5)
                        level = body[2 + int.from_bytes(body[:2], "big")]
                        if level == 5:  # flags, reason, properties: Receive Maximum (0x21)
                            conn.sendall(b"\x20\x06\x00\x00\x03\x21"
                                         + self.receive_maximum.to_bytes(2, "big"))
                        else:
                            conn.sendall(b"\x20\x02\x00\x00")
                    elif kind == 0x30:  # PUBLISH
                        topic_len = int.from_bytes(body[:2], "big")
                        self.published.append(body[2:2 + topic_len].decode())
                    elif kind == 0xC0:  # PINGREQ
                        conn.sendall(b"\xd0\x00")

    def batches(self) -> int:
        """Telemetry and event batches (the machine's execution records) published."""
        return sum(t.endswith(("/telemetry", "/event")) for t in list(self.published))

    def close(self) -> None:
        self._stop.set()
        self._server.close()


def _take_packet(buf: bytes) -> tuple[int, bytes, bytes] | None:
    if len(buf) < 2:
        return None
    length, multiplier, i = 0, 1, 1
    while True:
        if i >= len(buf):
            return None
        byte = buf[i]
        length += (byte & 0x7F) * multiplier
        multiplier *= 128
        i += 1
        if not byte & 0x80:
            break
    if len(buf) < i + length:
        return None
    return buf[0] & 0xF0, buf[i:i + length], buf[i + length:]


@pytest.mark.parametrize("protocol, max_inflight, receive_maximum", [
    ("3.1.1", 5, 65535),  # our window
    ("5", 64, 3),  # the broker's, lower
])
def test_unacknowledged_messages_never_exceed_the_window(
        tmp_path: Path, protocol: str, max_inflight: int, receive_maximum: int) -> None:
    window = min(max_inflight, receive_maximum)
    broker = SilentBroker(receive_maximum)
    sim = Simulator(free_port())
    cfg = AgentConfig(tmp_path, broker.port, {"press-a": press_machine("press-a", sim.port)},
                      protocol=protocol, max_inflight=max_inflight, shutdown_grace="1s")
    config_dir = cfg.write()
    agent = AgentProcess(config_dir, tmp_path / "state", tmp_path / "agent.log")
    try:
        # The online status takes one place; batches and the retained state the rest.
        wait_for(lambda: len(broker.published) >= window, 30, "the first window of messages")
        time.sleep(3)  # 30 more polls: none of them may go out without a PUBACK
        assert broker.batches() >= window - 2
        assert len(broker.published) == window  # state messages wait for room too
    finally:
        assert agent.stop() == 0
        sim.stop()
        broker.close()
    stats = buffer_stats(config_dir, tmp_path / "state")
    machine = stats["machines"]["press-a"]
    # Nothing was acknowledged, so nothing was deleted: every batch is still in the buffer.
    assert stats["batches"] == sum(m["seq"] for m in stats["machines"].values())
    assert machine["seq"] > 30
    assert machine["dropped_batches"] == 0
