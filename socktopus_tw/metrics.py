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
        self._webhooks = _WebhookCounts()
        r.register(self._webhooks)

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

    def webhookDelivered(self, app: str, events: int) -> None:
        """
        A webhook post of C{app} was answered 2xx: C{events} delivered.
        """
        counts = self._webhooks.delivered
        counts[app] = counts.get(app, 0) + events

    def webhookDropped(self, app: str, reason: str, events: int = 1) -> None:
        """
        Webhook events of C{app} given up on, for one of
        L{WEBHOOK_DROP_REASONS}.
        """
        key = (app, reason)
        counts = self._webhooks.dropped
        counts[key] = counts.get(key, 0) + events

    def webhookPost(self, app: str, outcome: str) -> None:
        """
        One webhook post of C{app} ended, with one of L{WEBHOOK_OUTCOMES}.
        """
        key = (app, outcome)
        counts = self._webhooks.posts
        counts[key] = counts.get(key, 0) + 1

    def watchWebhookQueues(self, lengths: Callable[[], dict[str, int]]) -> None:
        """
        Report undelivered webhook events per app from C{lengths()} at each
        scrape (the last one given wins: one webhook sender per daemon).
        """
        self._webhooks.queues = lengths

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


#: Why webhook events were given up on: the app's queue was full (the
#: oldest go), the receiver answered 4xx (or another non-2xx, non-5xx
#: status), 10 minutes of failed retries, or the daemon stopped first.
WEBHOOK_DROP_REASONS = ("overflow", "rejected", "expired", "shutdown")

#: How a webhook post ended: 2xx; 4xx or another status that is not retried;
#: 5xx; no whole answer within the timeout; no connection or a broken one.
WEBHOOK_OUTCOMES = ("delivered", "rejected", "server_error", "timeout", "failed")


class _WebhookCounts:
    """
    The webhook sender's counts, as plain numbers for the same reason as
    L{_HotCounts}: a full queue drops (and counts) one event per event added.
    """

    def __init__(self) -> None:
        self.delivered: dict[str, int] = {}
        self.dropped: dict[tuple[str, str], int] = {}
        self.posts: dict[tuple[str, str], int] = {}
        self.queues: Callable[[], dict[str, int]] | None = None

    def collect(self) -> Iterator[Metric]:
        delivered = CounterMetricFamily(
            "socktopus_webhook_events_delivered",
            "Webhook events posted and answered 2xx.",
            labels=["app"],
        )
        for app, count in sorted(self.delivered.items()):
            delivered.add_metric([app], count)
        yield delivered
        dropped = CounterMetricFamily(
            "socktopus_webhook_events_dropped",
            "Webhook events given up on, by reason (overflow, rejected, expired, shutdown).",
            labels=["app", "reason"],
        )
        for (app, reason), count in sorted(self.dropped.items()):
            dropped.add_metric([app, reason], count)
        yield dropped
        posts = CounterMetricFamily(
            "socktopus_webhook_posts",
            "Webhook posts, by outcome (delivered, rejected, server_error, timeout, failed).",
            labels=["app", "outcome"],
        )
        for (app, outcome), count in sorted(self.posts.items()):
            posts.add_metric([app, outcome], count)
        yield posts
        if self.queues is not None:
            queued = GaugeMetricFamily(
                "socktopus_webhook_queue",
                "Webhook events not delivered yet (in flight included).",
                labels=["app"],
            )
            for app, length in sorted(self.queues().items()):
                queued.add_metric([app], length)
            yield queued


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
