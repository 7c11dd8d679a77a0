"""Prometheus metrics of one agent instance, in its own registry (no process-global state)."""

from __future__ import annotations

from typing import Any, Iterator, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, Metric

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

    def watch_buses(self, shared: Mapping[str, Any]) -> None:
        """Report the shared lines (serial buses) drivers keep in `shared`."""
        self.registry.register(_BusCollector(shared))

    def serve(self, listen: str) -> None:
        """Expose /metrics on host:port (in prometheus-client's own thread)."""
        host, _, port = listen.rpartition(":")
        start_http_server(int(port), addr=host, registry=self.registry)


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
