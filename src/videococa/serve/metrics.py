"""Prometheus metrics of one server (its own registry, so several apps in one process never mix)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class Metrics:
    """Requests, latency, model queue depth, job progress and index size."""

    def __init__(self, library):
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("videococa_http_requests_total", "HTTP requests by route and status",
                                ["method", "route", "status"], registry=r)
        self.latency = Histogram("videococa_http_request_duration_seconds", "HTTP request latency by route",
                                 ["route"], buckets=BUCKETS, registry=r)
        queue = Gauge("videococa_model_queue_depth", "model calls waiting for the model thread", registry=r)
        queue.set_function(lambda: library.engine.depth)
        done = Gauge("videococa_job_files_done", "files processed by the running job", registry=r)
        done.set_function(lambda: (j.done if (j := library.jobs.running()) else 0))
        total = Gauge("videococa_job_files_total", "files the running job will process", registry=r)
        total.set_function(lambda: (j.total if (j := library.jobs.running()) else 0))
        entries = Gauge("videococa_index_entries", "entries in the index (at the last search or stats call)",
                        registry=r)
        entries.set_function(lambda: int(library.index._faiss.ntotal))

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(route).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
