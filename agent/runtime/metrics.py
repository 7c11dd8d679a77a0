"""Prometheus metrics of one agent instance, in its own registry (no process-global state)."""

from __future__ import annotations

import json
import time
from typing import Any, Callable, Iterator, Mapping

from prometheus_client import (CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector,
                               make_wsgi_app)
from prometheus_client.core import CounterMetricFamily, Metric

from agent.runtime.http_server import BoundedWSGIServer

_LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.004, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1,
                    0.25, 0.5, 1, 2.5, 5, 10)
# Delivery spans the group commit (tens of ms) up to a long broker outage (minutes).
_DELIVERY_BUCKETS = (0.01, 0.02, 0.03, 0.04, 0.05, 0.06, 0.07, 0.08, 0.1, 0.15, 0.2, 0.5, 1, 2.5,
                     5, 10, 30, 60, 300, 1800)


class Metrics:
    """Every metric the agent updates; label children are resolved once by their owners."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        p = "edge_agent_"
        self.polls = Counter(p + "polls", "Polls executed", ["machine", "group"], registry=r)
        self.requests = Counter(p + "device_requests", "Requests sent to devices (planned blocks)",
                                ["machine"], registry=r)
        self.overruns = Counter(p + "poll_overruns", "Poll deadlines missed and skipped",
                                ["machine", "group"], registry=r)
        self.bad_readings = Counter(p + "bad_readings", "Bad readings by reason",
                                    ["machine", "reason"], registry=r)
        self.readings = Counter(p + "readings", "Readings collected", ["machine"], registry=r)
        self.poll_duration = Histogram(p + "poll_duration_seconds", "Time one poll took",
                                       ["machine"], buckets=_LATENCY_BUCKETS, registry=r)
        self.poll_lateness = Histogram(p + "poll_lateness_seconds",
                                       "Poll start minus its deadline", ["machine"],
                                       buckets=_LATENCY_BUCKETS, registry=r)
        self.machine_connected = Gauge(p + "machine_connected", "1 when the device link is up",
                                       ["machine"], registry=r)
        self.last_poll = Gauge(p + "last_poll_timestamp_seconds",
                               "When the machine's last poll ended (Unix time)", ["machine"],
                               registry=r)
        self.buffer_batches = Gauge(p + "buffer_batches", "Batches waiting in the buffer",
                                    registry=r)
        self.buffer_bytes = Gauge(p + "buffer_bytes", "Bytes of batches in the buffer", registry=r)
        self.buffer_commits = Counter(p + "buffer_commits", "Buffer transactions committed",
                                      registry=r)
        self.buffer_dropped = Counter(p + "buffer_dropped_batches",
                                      "Batches dropped by the buffer, by policy", ["reason"],
                                      registry=r)
        self.buffer_dropped_readings = Counter(p + "buffer_dropped_readings",
                                               "Readings dropped by the buffer, by policy",
                                               ["reason"], registry=r)
        self.uplink_connected = Gauge(p + "uplink_connected", "1 when connected to the broker",
                                      registry=r)
        self.uplink_inflight = Gauge(p + "uplink_inflight", "Published batches awaiting PUBACK",
                                     registry=r)
        self.uplink_published = Counter(p + "uplink_published", "Batches published", registry=r)
        self.uplink_acked = Counter(p + "uplink_acked", "Batches acknowledged by the broker",
                                    registry=r)
        self.uplink_delivery = Histogram(p + "uplink_delivery_seconds",
                                         "Poll start to the batch's PUBACK",
                                         buckets=_DELIVERY_BUCKETS, registry=r)
        self.uplink_rejected = Counter(p + "uplink_rejected", "PUBACKs with a failure reason",
                                       registry=r)
        self.uplink_reconnects = Counter(p + "uplink_connects", "Successful broker connections",
                                         registry=r)
        self.callback_errors = Counter(p + "mqtt_callback_errors", "Exceptions caught in MQTT "
                                       "client callbacks (the message, or in reading and "
                                       "writing the connection, is dropped)", ["where"],
                                       registry=r)
        self.inbound_refused = Counter(p + "mqtt_inbound_refused", "Inbound Sparkplug messages "
                                       "(NCMD, DCMD, STATE) refused or ignored, by reason",
                                       ["reason"], registry=r)
        self.request_seconds = Histogram(p + "device_request_seconds",
                                         "Round trip of one device request (Modbus, OPC UA Read)",
                                         ["machine", "protocol"], buckets=_LATENCY_BUCKETS,
                                         registry=r)
        self.buffer_oldest_ns: int | None = None  # set by the buffer's writer
        self.buffer_oldest_age = Gauge(p + "buffer_oldest_age_seconds",
                                       "Age of the oldest batch waiting in the buffer", registry=r)
        self.buffer_oldest_age.set_function(
            lambda: 0.0 if self.buffer_oldest_ns is None
            else max(0.0, (time.time_ns() - self.buffer_oldest_ns) / 1e9))
        self.loop_lag = Histogram(p + "event_loop_lag_seconds",
                                  "How late the event loop wakes a sleeping task",
                                  buckets=_LATENCY_BUCKETS, registry=r)
        # process_resident_memory_bytes, process_cpu_seconds_total, open fds, start time.
        ProcessCollector(registry=r)

    def watch_buses(self, shared: Mapping[str, Any]) -> None:
        """Report the shared lines (serial buses) drivers keep in `shared`."""
        self.registry.register(_BusCollector(shared))

    def serve(self, listen: str,
              health: Callable[[], dict[str, Any]] | None = None) -> BoundedWSGIServer:
        """Expose /metrics and /healthz on host:port, in threads of their own (so that a
        stalled event loop still gets an answer: 503 with the facts); see agent.runtime.http_server
        for the bounds. Returns the running server (shutdown() stops it)."""
        host, _, port = listen.rpartition(":")
        metrics_app = make_wsgi_app(self.registry)

        def app(environ: dict[str, Any], start_response: Any) -> Any:
            if environ.get("PATH_INFO") == "/healthz" and health is not None:
                facts = health()
                body = json.dumps(facts).encode()
                start_response("200 OK" if facts.get("healthy") else "503 Service Unavailable",
                               [("Content-Type", "application/json"),
                                ("Content-Length", str(len(body)))])
                return [body]
            return metrics_app(environ, start_response)

        server = BoundedWSGIServer((host, int(port)), app)
        server.serve_in_thread()
        return server


class _BusCollector:
    """Time each shared line was busy, read when scraped; its rate is the bus utilisation."""

    def __init__(self, shared: Mapping[str, Any]) -> None:
        self._shared = shared

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(
            "edge_agent_bus_busy_seconds",
            "Time a shared line (serial bus) carried requests and replies; rate() = utilisation",
            labels=["bus"])
        for resource in list(self._shared.values()):
            busy = getattr(resource, "busy_seconds", None)
            if busy is not None:
                family.add_metric([resource.name], busy)
        yield family

    def describe(self) -> Iterator[Metric]:
        return iter(())
