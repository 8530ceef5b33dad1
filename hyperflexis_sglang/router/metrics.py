"""Prometheus metrics, one registry per app (several routers can live in one process)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

DEFAULT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class Metrics:
    def __init__(self, buckets=None):
        self.registry = r = CollectorRegistry()
        b = tuple(buckets or DEFAULT_BUCKETS)
        self.requests = Counter("hfx_router_requests", "requests answered, by endpoint and status",
                                ["endpoint", "status"], registry=r)
        self.duration = Histogram("hfx_router_request_duration_seconds", "time to the response head (streams: "
                                  "to the first byte of the worker's answer)", ["endpoint"], buckets=b, registry=r)
        self.overhead = Histogram("hfx_router_overhead_seconds", "router time before the worker request is sent "
                                  "(parse, SLO, routing, admission wait)", buckets=b, registry=r)
        self.class_requests = Counter("hfx_router_class_requests", "valid inference requests received, by SLO class "
                                      "(the scaling controller's per-class arrival rates)", ["slo_class"], registry=r)
        self.rejections = Counter("hfx_router_rejections", "requests refused by the router, by SLO class and reason",
                                  ["slo_class", "reason"], registry=r)
        self.retries = Counter("hfx_router_retries", "retried worker requests, by worker", ["worker"], registry=r)
        self.failures = Counter("hfx_router_worker_failures", "failed worker requests, by worker", ["worker"],
                                registry=r)
        self.routed = Counter("hfx_router_routed", "requests sent, by worker and role", ["worker", "role"],
                              registry=r)
        self.inflight = Gauge("hfx_router_inflight_requests", "requests in flight", registry=r)
        self.queued = Gauge("hfx_router_queued_requests", "requests held in the router queue", registry=r)
        self.worker_healthy = Gauge("hfx_router_worker_healthy", "1 if the worker is healthy", ["worker"], registry=r)
        self.worker_cb = Gauge("hfx_router_worker_circuit_open", "1 if the worker's circuit is open", ["worker"],
                               registry=r)
        self.worker_inflight = Gauge("hfx_router_worker_inflight", "router requests in flight per worker",
                                     ["worker"], registry=r)

    def rejected(self, cls: str, reason: str) -> None:
        self.rejections.labels(cls, reason).inc()

    def render(self, registry_snapshot) -> bytes:
        """Exposition text; gauges of the workers are refreshed from the registry first."""
        for w in registry_snapshot:
            self.worker_healthy.labels(w.url).set(1 if w.healthy else 0)
            self.worker_cb.labels(w.url).set(1 if w.cb.state == "open" else 0)
            self.worker_inflight.labels(w.url).set(w.inflight)
        return generate_latest(self.registry)
