# -*- test-case-name: tests.test_metrics -*-
"""
Prometheus metrics, served on their own C{--metrics-listen} endpoint.

Each daemon has its own L{CollectorRegistry}, so tests can run several.
We do not use C{prometheus_client.twisted}: it imports the global reactor
at import time, before twistd has chosen one.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from twisted.web.resource import Resource
from twisted.web.server import Request

_BATCH_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000)


class Metrics:
    """
    What the daemon counts. Counting is a few attribute look-ups and an
    addition: cheap enough for the /send hot path, once per batch.
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        r = self.registry
        self.connects = Counter("socktopus_connects", "Relay connections opened.",
                                ["app"], registry=r)
        self.disconnects = Counter("socktopus_disconnects", "Relay connections closed.",
                                   ["app"], registry=r)
        self.delivered = Counter("socktopus_messages_delivered", "Messages handed to a client.",
                                 ["app"], registry=r)
        self.failed = Counter("socktopus_messages_failed",
                              "Messages whose recipient was not connected or could not take them.",
                              ["app"], registry=r)
        self.batchSize = Histogram("socktopus_send_batch_size", "Messages per /send request.",
                                   buckets=_BATCH_BUCKETS, registry=r)
        self.requestSeconds = Histogram("socktopus_request_seconds",
                                        "Time to answer a REST request, by endpoint.",
                                        ["endpoint"], registry=r)
        self.logins = Counter("socktopus_logins", "Login attempts.", ["result"], registry=r)
        # prometheus_client's labels() takes a lock and builds a key each
        # call; the children are looked up once per label value instead.
        self._requestChildren: dict[str, Histogram] = {}
        self._sendChildren: dict[str, tuple[Counter, Counter]] = {}
        self.databaseErrors = Counter("socktopus_database_errors",
                                      "Database calls that failed because it was unreachable.",
                                      registry=r)

    def sent(self, app: str, delivered: int, failed: int) -> None:
        """
        One /send batch: its outcome per message and its size.
        """
        children = self._sendChildren.get(app)
        if children is None:
            children = self._sendChildren[app] = (self.delivered.labels(app),
                                                   self.failed.labels(app))
        children[0].inc(delivered)
        children[1].inc(failed)
        self.batchSize.observe(delivered + failed)

    def observeRequest(self, endpoint: str, seconds: float) -> None:
        child = self._requestChildren.get(endpoint)
        if child is None:
            child = self._requestChildren[endpoint] = self.requestSeconds.labels(endpoint)
        child.observe(seconds)

    def watchConnections(self, counts: Callable[[], dict[str, int]]) -> None:
        """
        Report live connections per app from C{counts()} at each scrape, so
        nothing is counted on the connect path for this gauge.
        """
        self.registry.register(_ConnectionsCollector(counts))

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class _ConnectionsCollector:
    def __init__(self, counts: Callable[[], dict[str, int]]) -> None:
        self.counts = counts

    def collect(self):
        family = GaugeMetricFamily("socktopus_connections", "Live relay connections.",
                                   labels=["app"])
        for app, count in sorted(self.counts().items()):
            family.add_metric([app], count)
        yield family


class MetricsResource(Resource):
    """
    C{GET /metrics} in the Prometheus text format.
    """

    isLeaf = True

    def __init__(self, metrics: Metrics) -> None:
        super().__init__()
        self.metrics = metrics

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"content-type", CONTENT_TYPE_LATEST.encode("ascii"))
        return self.metrics.exposition()
