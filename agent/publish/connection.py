"""One MQTT network connection: a paho-mqtt 2.x client driven by the asyncio event loop.

Every connection gets a fresh paho client. paho re-sends its own unacknowledged messages
after a reconnect, which would duplicate and reorder what the uplink re-sends from the
buffer; a new client starts with an empty queue, so the buffer stays the one source.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from typing import Any, Callable, ClassVar
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from agent.config.tls import ssl_reason


class MqttRefused(ConnectionError):
    """The broker answered CONNACK with a failure reason."""

    # CONNACK reasons (MQTT 5 codes; paho maps the 3.1.1 return codes onto them) that a
    # retry cannot fix: the config or the broker's user list has to change.
    _HINTS: ClassVar[dict[int, str]] = {
        0x85: "the broker rejects the client id (mqtt.client_id)",
        0x86: "check mqtt.username and the password (mqtt.password_env / mqtt.password_file)",
        0x87: "check mqtt.username, the password (mqtt.password_env / mqtt.password_file) "
              "and the broker's ACL",
        0x8A: "this client is banned by the broker",
        0x8C: "the broker wants another authentication method",
    }

    def __init__(self, reason: str, unsupported_protocol: bool = False, code: int = 0) -> None:
        hint = self._HINTS.get(code)
        super().__init__(f"broker refused the connection: {reason}"
                         + (f" ({hint})" if hint else ""))
        self.unsupported_protocol = unsupported_protocol
        self.config_problem = hint is not None


class MqttTlsError(ConnectionError):
    """The TLS handshake failed, or the broker closed the connection with a TLS alert: a
    certificate, CA or TLS version problem that retrying alone will not fix."""

    config_problem = True


def parse_url(url: str) -> tuple[str, int, bool]:
    """(host, port, tls) from mqtt://host[:port] or mqtts://host[:port]."""
    parts = urlsplit(url)
    tls = parts.scheme == "mqtts"
    return parts.hostname or "127.0.0.1", parts.port or (8883 if tls else 1883), tls


_VERIFY_HINTS = {
    62: "the broker certificate must name this host in its subjectAltName",   # hostname mismatch
    64: "the broker certificate must list this IP address in its subjectAltName",  # IP mismatch
    2: "is mqtt.tls.ca the CA that signed the broker certificate?",
    19: "is mqtt.tls.ca the CA that signed the broker certificate?",
    20: "is mqtt.tls.ca the CA that signed the broker certificate?",
    21: "is mqtt.tls.ca the CA that signed the broker certificate?",
    18: "the broker certificate is self-signed: put it (or its CA) in mqtt.tls.ca",
}

# TLS alerts the broker sends when it does not accept this client, and what they mean.
_NEEDS_CERT = "the broker requires a client certificate: set mqtt.tls.cert and mqtt.tls.key"
_ALERT_HINTS = (
    ("certificate required", _NEEDS_CERT),
    ("peer did not return a certificate", _NEEDS_CERT),
    ("unknown ca", "the broker does not trust the CA of mqtt.tls.cert"),
    ("certificate expired", "the broker says mqtt.tls.cert has expired"),
    ("bad certificate", "the broker rejects mqtt.tls.cert"),
    ("unsupported certificate", "the broker rejects mqtt.tls.cert"),
    ("certificate revoked", "mqtt.tls.cert is revoked"),
    ("protocol version", "the broker and mqtt.tls.min_version share no TLS version"),
    ("unsupported protocol", "the broker and mqtt.tls.min_version share no TLS version"),
    ("handshake failure", "the broker and the agent share no TLS version or cipher"),
)


def explain_tls_failure(exc: BaseException | str, host: str) -> MqttTlsError:
    """A clear MqttTlsError from an ssl exception (or paho's log line of one)."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        hint = _VERIFY_HINTS.get(exc.verify_code or 0)
        if hint is not None and exc.verify_code in (62, 64):
            hint = hint.replace("this host", repr(host)).replace("this IP address", host)
        text = f"TLS: broker certificate rejected: {ssl_reason(exc)}"
        return MqttTlsError(text + (f" ({hint})" if hint else ""))
    reason = ssl_reason(exc)
    low = reason.lower()
    hint = next((h for needle, h in _ALERT_HINTS if needle in low), None)
    return MqttTlsError(f"TLS: {reason}" + (f" ({hint})" if hint else ""))


class _LastError(logging.Handler):
    """Keeps paho's last error log line: the only place a TLS alert that arrives after the
    handshake (TLS 1.3: the broker refusing the client certificate) is reported."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.message: str | None = None

    def emit(self, record: logging.LogRecord) -> None:
        self.message = record.getMessage()


ErrorHook = Callable[[str, BaseException], None]


class MqttConnection:
    """Connect, publish, and learn of PUBACKs and of the connection's loss.

    No exception leaves a callback that paho or the event loop calls: it goes to `on_error`
    (log and count). One in a message handler drops that message; one in paho's own reading
    or writing leaves the connection's state unknown, so the connection is dropped.
    """

    def __init__(self, client_id: str, protocol: str, will: tuple[str, bytes, bool],
                 username: str | None, password: str | None,
                 tls: ssl.SSLContext | None, max_inflight: int,
                 on_ack: Callable[[int, bool], None], on_lost: Callable[[], None],
                 on_error: ErrorHook | None = None, max_packet_size: int | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        self._on_error: ErrorHook = on_error or (lambda where, exc: None)
        self._max_packet = max_packet_size
        version = MQTTProtocolVersion.MQTTv5 if protocol == "5" else MQTTProtocolVersion.MQTTv311
        self.protocol = protocol
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, protocol=version,
            clean_session=None if protocol == "5" else True,
        )
        client = self._client
        client.max_inflight_messages_set(max_inflight)
        client.will_set(will[0], will[1], qos=1, retain=will[2])  # (topic, payload, retain)
        if username is not None:
            client.username_pw_set(username, password)
        if tls is not None:
            client.tls_set_context(tls)  # paho keeps check_hostname as the context has it
        self._errors = _LastError()
        # Standalone, not getLogger(): not kept in logging's registry after the connection.
        paho_log = logging.Logger(f"paho:{client_id}", logging.ERROR)  # noqa: LOG001
        paho_log.addHandler(self._errors)
        client.logger = paho_log
        self._host = ""
        client.on_socket_open = self._guarded(self._socket_open)
        client.on_socket_close = self._guarded(self._socket_close)
        client.on_socket_register_write = self._guarded(self._register_write)
        client.on_socket_unregister_write = self._guarded(self._unregister_write)
        client.on_connect = self._guarded(self._connected)
        client.on_disconnect = self._guarded(self._disconnected)
        client.on_publish = self._guarded(self._published)
        self._on_ack, self._on_lost = on_ack, on_lost
        self._connack: asyncio.Future[None] = self._loop.create_future()
        self._misc: asyncio.Task[None] | None = None
        self._sock: Any = None
        self.is_connected = False
        self.receive_maximum = 65535

    def _guarded(self, callback: Callable[..., object], fatal: bool = False) -> Callable[..., None]:
        """`callback` that reports its exceptions instead of raising them into paho or the
        loop; `fatal`: the connection's state is unknown after one, so it is dropped."""
        def guarded(*args: Any) -> None:
            try:
                callback(*args)
            except Exception as exc:
                self._on_error(getattr(callback, "__name__", "callback"), exc)
                if fatal:
                    was = self.is_connected
                    self.close()
                    if was:
                        self._on_lost()
        guarded.__name__ = getattr(callback, "__name__", "callback")
        return guarded

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
        self._in_loop(self._loop.add_reader, sock, self._guarded(client.loop_read, fatal=True))

    def _socket_close(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        self._in_loop(self._loop.remove_reader, sock)
        self._in_loop(self._loop.remove_writer, sock)

    def _register_write(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        self._in_loop(self._loop.add_writer, sock, self._guarded(client.loop_write, fatal=True))

    def _unregister_write(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        self._in_loop(self._loop.remove_writer, sock)

    def _connected(self, client: mqtt.Client, userdata: Any, flags: Any, reason: ReasonCode,
                   properties: Any) -> None:
        if self._connack.done():
            return
        if reason.is_failure:
            unsupported = "protocol version" in str(reason).lower()
            self._connack.set_exception(MqttRefused(str(reason), unsupported, reason.value))
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
            detail = self._errors.message
            if detail and ("SSL" in detail or " alert " in detail):
                self._connack.set_exception(explain_tls_failure(detail, self._host))
            else:
                why = ssl_reason(detail) if detail else reason
                self._connack.set_exception(ConnectionError(
                    f"connection closed before CONNACK: {why}"))
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
            if self._max_packet is not None:
                # The broker then never sends a larger packet: an oversized command is
                # dropped there instead of being read into memory here (MQTT 3.1.1 has no
                # such promise: there the size is checked after reading).
                properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
                properties.MaximumPacketSize = self._max_packet
                kwargs["properties"] = properties

        self._host = host

        def blocking_connect() -> None:
            try:
                self._client.connect(host, port, **kwargs)
            except ssl.SSLError as exc:  # the handshake, verification included
                raise explain_tls_failure(exc, host) from exc

        try:
            async with asyncio.timeout(timeout):
                await self._loop.run_in_executor(None, blocking_connect)
                await asyncio.shield(self._connack)
        except BaseException:
            self.close()
            raise
        self._misc = asyncio.create_task(self._housekeeping(), name="mqtt-keepalive")

    @property
    def tls_version(self) -> str | None:
        """The negotiated TLS version ("TLSv1.3"), or None on plain TCP."""
        version = getattr(self._sock, "version", None)
        return version() if callable(version) else None

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

    async def subscribe(self, topic: str, qos: int,
                        on_message: Callable[[str, bytes, bool], None],
                        timeout: float = 10.0, live_only: bool = False) -> bool:
        """Subscribe on this connection (a new one starts with none): messages matching
        `topic` go to on_message(topic, payload, retain), in the event loop, and are
        acknowledged when it returns. True when the broker granted the subscription;
        ConnectionError or TimeoutError when no SUBACK came.

        `live_only` (commands): on MQTT 5 the broker sends no retained message when the
        subscription is made, and keeps the retain flag of live ones so they can be refused;
        on 3.1.1 a retained message still comes, flagged, at subscription time."""
        def deliver(client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
            on_message(message.topic, bytes(message.payload), bool(message.retain))
        deliver = self._guarded(deliver)

        suback: asyncio.Future[bool] = self._loop.create_future()

        def subscribed(client: mqtt.Client, userdata: Any, mid: int, reasons: list[ReasonCode],
                       properties: Any) -> None:
            if mid == sent and not suback.done():
                suback.set_result(bool(reasons) and not any(r.is_failure for r in reasons))

        self._client.message_callback_add(topic, deliver)
        self._client.on_subscribe = self._guarded(subscribed)
        if live_only and self.protocol == "5":
            options = SubscribeOptions(qos=qos, retainAsPublished=True,
                                       retainHandling=SubscribeOptions.RETAIN_DO_NOT_SEND)
            rc, sent = self._client.subscribe(topic, options=options)
        else:
            rc, sent = self._client.subscribe(topic, qos=qos)
        if rc != mqtt.MQTT_ERR_SUCCESS:
            raise ConnectionError(f"subscribe failed: {mqtt.error_string(rc)}")
        async with asyncio.timeout(timeout):
            return await suback

    async def disconnect(self, with_will: bool = False) -> None:
        """Clean DISCONNECT: the broker then discards the Will, unless `with_will` (MQTT 5
        only: reason 0x04, the broker publishes the Will as the goodbye)."""
        if self.is_connected:
            if with_will and self.protocol == "5":
                self._client.disconnect(reasoncode=ReasonCode(PacketTypes.DISCONNECT,
                                                              "Disconnect with will message"))
            else:
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
