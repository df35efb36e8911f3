"""
Prometheus metrics on --metrics-listen (L{socktopus_tw.metrics}).
"""

from __future__ import annotations

import treq
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import SynchronousTestCase, TestCase

from socktopus_tw.metrics import Metrics
from tests.support.daemon import APP, Daemon


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """
    Every sample of a scrape, keyed by name and sorted labels.
    """
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


class MetricsTests(TestCase):
    timeout = 60

    @inlineCallbacks
    def scrape(self, daemon: Daemon):
        listener = next(s for s in daemon.service if s.name.startswith("metrics"))
        port = listener.port.getHost().port
        response = yield treq.get(f"http://127.0.0.1:{port}/metrics", agent=daemon.agent)
        self.assertEqual(response.code, 200)
        self.assertIn(b"text/plain", response.headers.getRawHeaders(b"content-type")[0])
        text = yield response.text()
        return samples(text)

    @inlineCallbacks
    def test_scrapeShowsRelayAndAccountsActivity(self):
        """
        An operator's Prometheus sees connections per app, messages delivered
        and failed, batch sizes, request latency per endpoint and logins.
        """
        daemon = Daemon(
            self, "--metrics-listen", "tcp:0:interface=127.0.0.1", "--bcrypt-rounds", "4"
        )
        client = yield daemon.connect("c1")
        yield daemon.send(
            [{"recipient": "c1", "content": "a"}, {"recipient": "nobody", "content": "b"}]
        )
        yield client.waitFor(1)
        yield daemon.post(
            "/users", {"User": "alice", "Password": "correct horse", "Email": "alice@example.com"}
        )
        yield daemon.post("/login", {"User": "alice", "Password": "correct horse"})
        yield daemon.post("/login", {"User": "alice", "Password": "wrong password"})

        found = yield self.scrape(daemon)
        app = (("app", APP),)
        self.assertEqual(found[("socktopus_connections", app)], 1)
        self.assertEqual(found[("socktopus_connects_total", app)], 1)
        self.assertEqual(found[("socktopus_messages_delivered_total", app)], 1)
        self.assertEqual(found[("socktopus_messages_failed_total", app)], 1)
        self.assertEqual(found[("socktopus_send_batch_size_count", ())], 1)
        self.assertEqual(found[("socktopus_send_batch_size_sum", ())], 2)
        self.assertEqual(found[("socktopus_logins_total", (("result", "ok"),))], 1)
        self.assertEqual(found[("socktopus_logins_total", (("result", "failed"),))], 1)
        self.assertEqual(
            found[("socktopus_request_seconds_count", (("endpoint", "SendResource"),))], 1
        )
        self.assertEqual(found[("socktopus_request_seconds_count", (("endpoint", "Login"),))], 2)
        self.assertIn(("process_resident_memory_bytes", ()), found)

        client.sendClose()
        yield client.closed
        found = yield self.scrape(daemon)
        self.assertEqual(found[("socktopus_disconnects_total", app)], 1)
        self.assertNotIn(("socktopus_connections", app), found)

    @inlineCallbacks
    def test_metricsAreNotOnThePublicPort(self):
        """
        Metrics leak nothing to the internet: the public port has no /metrics.
        """
        daemon = Daemon(self, "--metrics-listen", "tcp:0:interface=127.0.0.1")
        status, body, _ = yield daemon.request("GET", "/metrics")
        self.assertEqual(status, 404)

    def test_metricsOffByDefault(self):
        """
        Nothing listens for metrics unless asked to.
        """
        daemon = Daemon(self)
        self.assertEqual([s for s in daemon.service if s.name.startswith("metrics")], [])


class HotCountsTests(SynchronousTestCase):
    def test_sameExpositionAsPrometheusClient(self):
        """
        The hot path's plain counts scrape as prometheus_client's own Counter
        and Histogram would show the same observations, bucket boundaries
        included; only their C{_created} timestamps are not kept.
        """
        metrics = Metrics()
        reference = CollectorRegistry()
        delivered = Counter(
            "socktopus_messages_delivered",
            "Messages handed to a client.",
            ["app"],
            registry=reference,
        )
        failed = Counter(
            "socktopus_messages_failed",
            "Messages whose recipient was not connected or could not take them.",
            ["app"],
            registry=reference,
        )
        batches = Histogram(
            "socktopus_send_batch_size",
            "Messages per /send request.",
            buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000),
            registry=reference,
        )
        seconds = Histogram(
            "socktopus_request_seconds",
            "Time to answer a REST request, by endpoint.",
            ["endpoint"],
            registry=reference,
        )
        for app, ok, notOk in [("a", 1, 0), ("b", 99, 1), ("a", 0, 2), ("a", 20000, 0)]:
            metrics.sent(app, ok, notOk)
            delivered.labels(app).inc(ok)
            failed.labels(app).inc(notOk)
            batches.observe(ok + notOk)
        for endpoint, value in [
            ("SendResource", 0.005),
            ("SendResource", 0.0001),
            ("Login", 0.3),
            ("SendResource", 100.0),
        ]:
            metrics.observeRequest(endpoint, value)
            seconds.labels(endpoint).observe(value)

        def families(text: str) -> dict:
            return {
                f.name: sorted(
                    (s.name, sorted(s.labels.items()), s.value)
                    for s in f.samples
                    if not s.name.endswith("_created")
                )
                for f in text_string_to_metric_families(text)
                if not f.name.endswith("_created")
            }

        ours = families(metrics.exposition().decode())
        theirs = families(generate_latest(reference).decode())
        for name in theirs:
            self.assertEqual(ours[name], theirs[name], name)
