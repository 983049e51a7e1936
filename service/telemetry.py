"""Prometheus metrics: request counts and latency per route template, and jobs by status.

Each app gets its own registry (several apps live in one test process). Labels use the route
template (/jobs/{job_id}), never the raw path, so job ids do not explode the label set.
"""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class _JobCollector:
    """Reads job counts from the store at scrape time (the store is shared with the workers)."""

    def __init__(self, store):
        self.store = store

    def collect(self):
        family = GaugeMetricFamily("reluswap_jobs", "Jobs by status", labels=["status"])
        try:
            counts = self.store.count_by_status()
        except Exception:  # a scrape must not fail because the database is briefly away
            counts = {}
        for status, n in counts.items():
            family.add_metric([status], n)
        yield family


class Metrics:
    def __init__(self, store):
        self.registry = CollectorRegistry()
        self.requests = Counter("reluswap_http_requests", "HTTP requests", ["method", "route", "status"],
                                registry=self.registry)
        self.latency = Histogram("reluswap_http_request_duration_seconds", "Time to the response start",
                                 ["method", "route"], registry=self.registry)
        self.registry.register(_JobCollector(store))


class MetricsMiddleware:
    """Pure ASGI (BaseHTTPMiddleware would buffer the SSE stream)."""

    def __init__(self, app: ASGIApp, metrics: Metrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = {"code": 500}

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                route = getattr(scope.get("route"), "path", "unmatched")
                self.metrics.latency.labels(scope["method"], route).observe(time.perf_counter() - start)
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            self.metrics.requests.labels(scope["method"], route, str(status["code"])).inc()
