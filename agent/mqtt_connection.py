"""One MQTT network connection: a paho-mqtt 2.x client driven by the asyncio event loop.

Every connection gets a fresh paho client. paho re-sends its own unacknowledged messages
after a reconnect, which would duplicate and reorder what the uplink re-sends from the
buffer; a new client starts with an empty queue, so the buffer stays the one source.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.reasoncodes import ReasonCode

from agent.config.models import TlsConfig


class MqttRefused(ConnectionError):
    """The broker answered CONNACK with a failure reason."""

    def __init__(self, reason: str, unsupported_protocol: bool = False) -> None:
        super().__init__(f"broker refused the connection: {reason}")
        self.unsupported_protocol = unsupported_protocol


def parse_url(url: str) -> tuple[str, int, bool]:
    """(host, port, tls) from mqtt://host[:port] or mqtts://host[:port]."""
    parts = urlsplit(url)
    tls = parts.scheme == "mqtts"
    return parts.hostname or "127.0.0.1", parts.port or (8883 if tls else 1883), tls


def tls_context(tls: TlsConfig | None, config_root: Path) -> ssl.SSLContext:
    """Verifying TLS context (hostname checked), optional client certificate; files are
    relative to the config folder. Raises ValueError naming the file that is wrong."""
    def resolve(path: str | None) -> str | None:
        return None if path is None else str(config_root / Path(path))  # absolute stays absolute

    ca, cert, key = (resolve(tls.ca), resolve(tls.cert), resolve(tls.key)) if tls else (None,) * 3
    for name, path in (("ca", ca), ("cert", cert), ("key", key)):
        if path is not None and not Path(path).is_file():
            raise ValueError(f"mqtt.tls.{name}: {path} does not exist")
    try:
        context = ssl.create_default_context(cafile=ca)
        context.minimum_version = (ssl.TLSVersion.TLSv1_3 if tls and tls.min_version == "1.3"
                                   else ssl.TLSVersion.TLSv1_2)
        if cert:
            context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(f"mqtt.tls: {exc}") from None
    return context


class MqttConnection:
    """Connect, publish, and learn of PUBACKs and of the connection's loss."""

    def __init__(self, client_id: str, protocol: str, will: tuple[str, bytes],
                 username: str | None, password: str | None,
                 tls: ssl.SSLContext | None, max_inflight: int,
                 on_ack: Callable[[int, bool], None], on_lost: Callable[[], None]) -> None:
        self._loop = asyncio.get_running_loop()
        version = MQTTProtocolVersion.MQTTv5 if protocol == "5" else MQTTProtocolVersion.MQTTv311
        self.protocol = protocol
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, protocol=version,
            clean_session=None if protocol == "5" else True,
        )
        client = self._client
        client.max_inflight_messages_set(max_inflight)
        client.will_set(will[0], will[1], qos=1, retain=True)
        if username is not None:
            client.username_pw_set(username, password)
        if tls is not None:
            client.tls_set_context(tls)
        client.on_socket_open = self._socket_open
        client.on_socket_close = self._socket_close
        client.on_socket_register_write = self._register_write
        client.on_socket_unregister_write = self._unregister_write
        client.on_connect = self._connected
        client.on_disconnect = self._disconnected
        client.on_publish = self._published
        self._on_ack, self._on_lost = on_ack, on_lost
        self._connack: asyncio.Future[None] = self._loop.create_future()
        self._misc: asyncio.Task[None] | None = None
        self._sock: Any = None
        self.is_connected = False
        self.receive_maximum = 65535

    # paho may call these from the executor thread running connect(); hop to the loop.
    def _in_loop(self, fn: Callable[..., Any], *args: Any) -> None:
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:
            fn(*args)
        else:
            self._loop.call_soon_threadsafe(fn, *args)

    def _socket_open(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        self._sock = sock
        self._in_loop(self._loop.add_reader, sock, client.loop_read)

    def _socket_close(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        self._in_loop(self._loop.remove_reader, sock)
        self._in_loop(self._loop.remove_writer, sock)

    def _register_write(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        self._in_loop(self._loop.add_writer, sock, client.loop_write)

    def _unregister_write(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        self._in_loop(self._loop.remove_writer, sock)

    def _connected(self, client: mqtt.Client, userdata: Any, flags: Any, reason: ReasonCode,
                   properties: Any) -> None:
        if self._connack.done():
            return
        if reason.is_failure:
            unsupported = "protocol version" in str(reason).lower()
            self._connack.set_exception(MqttRefused(str(reason), unsupported))
        else:
            # MQTT 5 brokers may cap unacknowledged QoS 1 messages (Receive Maximum); paho
            # does not enforce it, so the uplink must, or the broker disconnects it.
            limit = getattr(properties, "ReceiveMaximum", None) if properties else None
            if isinstance(limit, int) and limit > 0:
                self.receive_maximum = limit
            self.is_connected = True
            self._connack.set_result(None)

    def _disconnected(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any,
                      properties: Any) -> None:
        was = self.is_connected
        self.is_connected = False
        if not self._connack.done():
            self._connack.set_exception(ConnectionError(f"connection closed before CONNACK: {reason}"))
        if was:
            self._on_lost()

    def _published(self, client: mqtt.Client, userdata: Any, mid: int, reason: ReasonCode,
                   properties: Any) -> None:
        self._on_ack(mid, not reason.is_failure)

    async def connect(self, host: str, port: int, keepalive: float, timeout: float = 10.0) -> None:
        """TCP/TLS connect in a worker thread (it blocks), then wait for CONNACK."""
        kwargs: dict[str, Any] = {"keepalive": max(5, int(keepalive))}
        if self.protocol == "5":
            kwargs["clean_start"] = True

        def blocking_connect() -> None:
            self._client.connect(host, port, **kwargs)

        try:
            async with asyncio.timeout(timeout):
                await self._loop.run_in_executor(None, blocking_connect)
                await asyncio.shield(self._connack)
        except BaseException:
            self.close()
            raise
        self._misc = asyncio.create_task(self._housekeeping(), name="mqtt-keepalive")

    async def _housekeeping(self) -> None:
        # Keepalive pings and timeout detection: paho's loop_misc, once a second.
        while True:
            await asyncio.sleep(1.0)
            if self._client.loop_misc() != mqtt.MQTT_ERR_SUCCESS:
                return

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> int:
        """Queue a message; returns its mid (PUBACK arrives through on_ack)."""
        info = self._client.publish(topic, payload, qos=qos, retain=retain)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            raise ConnectionError(f"publish failed: {mqtt.error_string(info.rc)}")
        return info.mid

    async def disconnect(self) -> None:
        """Clean DISCONNECT (the broker then discards the Will)."""
        if self.is_connected:
            self._client.disconnect()
            for _ in range(20):  # let the DISCONNECT packet leave
                if self._sock is None or self._sock.fileno() == -1:
                    break
                await asyncio.sleep(0.01)
        self.close()

    def close(self) -> None:
        """Drop the connection without a DISCONNECT; never raises."""
        self.is_connected = False
        if self._misc is not None:
            self._misc.cancel()
            self._misc = None
        sock = self._sock
        if sock is not None:
            try:
                self._loop.remove_reader(sock)
                self._loop.remove_writer(sock)
            except (ValueError, OSError):
                pass
        try:
            self._client._sock_close()  # paho has no public close without DISCONNECT
        except (OSError, AttributeError):
            pass
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            try:
                sock.close()
            except OSError:
                pass
        self._sock = None
