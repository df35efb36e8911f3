# -*- test-case-name: tests.test_metrics -*-
"""
Prometheus metrics, served on their own C{--metrics-listen} endpoint.

Each daemon has its own L{CollectorRegistry}, so tests can run several.
We do not use C{prometheus_client.twisted}: it imports the global reactor
at import time, before twistd has chosen one.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterator

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.utils import floatToGoString
from twisted.web.resource import Resource
from twisted.web.server import Request

_BATCH_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000)


class Metrics:
    """
    What the daemon counts.

    The counts made on the /send hot path (messages, batch sizes, request
    latency) are plain integers kept by L{_HotCounts} on the reactor thread
    and read by prometheus_client at scrape time: a prometheus_client
    counter takes a lock per increment and a histogram also searches its
    buckets in Python, several microseconds a request. The rest are
    prometheus_client's own counters.
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        r = self.registry
        self.connects = Counter(
            "socktopus_connects", "Relay connections opened.", ["app"], registry=r
        )
        self.disconnects = Counter(
            "socktopus_disconnects", "Relay connections closed.", ["app"], registry=r
        )
        self.logins = Counter("socktopus_logins", "Login attempts.", ["result"], registry=r)
        self.databaseErrors = Counter(
            "socktopus_database_errors",
            "Database calls that failed because it was unreachable.",
            registry=r,
        )
        self._hot = _HotCounts()
        r.register(self._hot)

    def sent(self, app: str, delivered: int, failed: int) -> None:
        """
        One /send batch: its outcome per message and its size.
        """
        hot = self._hot
        counts = hot.messages.get(app)
        if counts is None:
            counts = hot.messages[app] = [0, 0]
        counts[0] += delivered
        counts[1] += failed
        hot.batchSize.observe(delivered + failed)

    def observeRequest(self, endpoint: str, seconds: float) -> None:
        """
        One REST request answered, by the endpoint (resource) that answered.
        """
        requests = self._hot.requests
        histogram = requests.get(endpoint)
        if histogram is None:
            histogram = requests[endpoint] = _Histogram(Histogram.DEFAULT_BUCKETS)
        histogram.observe(seconds)

    def watchConnections(self, counts: Callable[[], dict[str, int]]) -> None:
        """
        Report live connections per app from C{counts()} at each scrape, so
        nothing is counted on the connect path for this gauge.
        """
        self.registry.register(_ConnectionsCollector(counts))

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class _Histogram:
    """
    A histogram's counts per bucket and its sum, as plain numbers.
    """

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = tuple(b for b in bounds if b != float("inf"))
        self.counts = [0] * (len(self.bounds) + 1)  # the last: above every bound
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    def buckets(self) -> list[tuple[str, int]]:
        """
        Cumulative counts, as the exposition format has them.
        """
        result, total = [], 0
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            total += count
            result.append((floatToGoString(bound), total))
        return result


class _HotCounts:
    """
    The hot path's counts (see L{Metrics}), exposed at scrape time under the
    names prometheus_client's own Counter and Histogram would give them.
    Only the reactor thread writes or reads them.
    """

    def __init__(self) -> None:
        self.messages: dict[str, list[int]] = {}
        self.batchSize = _Histogram(_BATCH_BUCKETS)
        self.requests: dict[str, _Histogram] = {}

    def collect(self) -> Iterator[Metric]:
        delivered = CounterMetricFamily(
            "socktopus_messages_delivered", "Messages handed to a client.", labels=["app"]
        )
        failed = CounterMetricFamily(
            "socktopus_messages_failed",
            "Messages whose recipient was not connected or could not take them.",
            labels=["app"],
        )
        for app, (ok, notOk) in sorted(self.messages.items()):
            delivered.add_metric([app], ok)
            failed.add_metric([app], notOk)
        yield delivered
        yield failed
        batches = HistogramMetricFamily("socktopus_send_batch_size", "Messages per /send request.")
        batches.add_metric([], self.batchSize.buckets(), self.batchSize.sum)
        yield batches
        requests = HistogramMetricFamily(
            "socktopus_request_seconds",
            "Time to answer a REST request, by endpoint.",
            labels=["endpoint"],
        )
        for endpoint, histogram in sorted(self.requests.items()):
            requests.add_metric([endpoint], histogram.buckets(), histogram.sum)
        yield requests


class _ConnectionsCollector:
    def __init__(self, counts: Callable[[], dict[str, int]]) -> None:
        self.counts = counts

    def collect(self):
        family = GaugeMetricFamily(
            "socktopus_connections", "Live relay connections.", labels=["app"]
        )
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
