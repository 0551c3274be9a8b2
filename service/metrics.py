"""Prometheus metrics at /metrics: requests and latency per route, and the index being served."""

from __future__ import annotations

import time
from typing import Callable

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily

from indexer.index.engine import ENGINE_CALLS
from service.logs import log_request, request_id

# Seconds; fine steps around a search's few milliseconds, coarse ones for ingest rebuilds.
LATENCY_BUCKETS = (0.001, 0.002, 0.004, 0.006, 0.008, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10, 30)


class IndexCollector:
    """Reads what the runtime serves at scrape time, so the figures are never stale."""

    def __init__(self, runtime: Callable[[], object | None]) -> None:
        self.runtime = runtime

    def collect(self):
        runtime = self.runtime()
        feeds = getattr(runtime, "feeds", None)
        if feeds is not None:
            yield GaugeMetricFamily("semsearch_feeds_followed", "feeds in SEMSEARCH_FEEDS", value=feeds["followed"])
            if feeds["last_poll_unix"] is not None:
                yield GaugeMetricFamily("semsearch_feed_last_poll_timestamp_seconds", "when the feeds were last polled "
                                        "(Unix time)", value=feeds["last_poll_unix"])
            for name, what in (("polls", "feed polls done"), ("items_fetched", "feed item pages fetched"),
                               ("documents_changed", "documents added or changed from feeds"),
                               ("failures", "feeds and item pages that could not be read"),
                               ("refusals", "requests the feed fetch policy refused (counted in failures too)")):
                yield CounterMetricFamily(f"semsearch_feed_{name}", what, value=feeds[name])
        calls = CounterMetricFamily("semsearch_engine_calls", "calls the index engine made, by operation (Milvus: "
                                    "round trips to its server; FAISS: reader operations in process)",
                                    labels=["engine", "operation"])
        spent = CounterMetricFamily("semsearch_engine_call_seconds", "time spent in those calls", labels=["engine",
                                                                                                         "operation"])
        for (engine, operation), (count, seconds) in sorted(ENGINE_CALLS.snapshot().items()):
            calls.add_metric([engine, operation], count)
            spent.add_metric([engine, operation], seconds)
        yield calls
        yield spent
        searcher = getattr(runtime, "searcher", None)
        yield GaugeMetricFamily("semsearch_ready", "1 when an index is loaded and searches are answered",
                                value=int(searcher is not None))
        if searcher is None:
            return
        info = searcher.index.info
        yield GaugeMetricFamily("semsearch_index_passages", "passages in the served index", value=info.passages)
        yield GaugeMetricFamily("semsearch_index_documents", "documents in the served index", value=info.documents)
        if info.segments is not None:  # an engine that keeps segments (FAISS)
            yield GaugeMetricFamily("semsearch_index_segments", "segments in the served index", value=info.segments)
        yield InfoMetricFamily("semsearch_index", "the served index generation and its model",
                               value={"generation": searcher.index.generation, "model": info.model or ""})


class Metrics:
    """One registry per app (no global state), its request metrics and its index collector."""

    def __init__(self, runtime: Callable[[], object | None]) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("semsearch_http_requests", "HTTP requests answered, by route and status",
                                ["method", "route", "status"], registry=self.registry)
        self.latency = Histogram("semsearch_http_request_duration_seconds", "time to answer, by route",
                                 ["route"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.registry.register(IndexCollector(runtime))

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(route).observe(seconds)


class RequestMetrics:
    """Plain ASGI middleware (cheaper than BaseHTTPMiddleware): counts, times and logs every
    request (one JSON line, service/logs.py) and answers with its X-Request-ID.

    The route label is the matched route's template ("/documents/{doc_id}"), or "unmatched", so
    arbitrary paths cannot blow up the number of series.
    """

    def __init__(self, app, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started, status, request = time.perf_counter(), 500, request_id(scope)

        async def send_and_note(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", request.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            matched = scope.get("route")  # its template without converters: /documents/{doc_id}
            route = getattr(matched, "path_format", None) or getattr(matched, "path", None) or "unmatched"
            seconds = time.perf_counter() - started
            self.metrics.observe(scope["method"], route, status, seconds)
            log_request(scope, request, route, status, seconds)
