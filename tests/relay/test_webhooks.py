"""
Tests for L{socktopus_tw.relay.webhooks}: batching, retries, bounds and
signatures on a L{Clock} with an in-memory agent, and end to end against a
real twisted.web receiver on a loopback port.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import tracemalloc
from itertools import pairwise
from typing import Any

import orjson
from OpenSSL import SSL
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import reactor
from twisted.internet.defer import CancelledError, Deferred, inlineCallbacks
from twisted.internet.error import (
    ConnectionAborted,
    ConnectionDone,
    ConnectionLost,
    ConnectionRefusedError,
    DNSLookupError,
    TCPTimedOutError,
)
from twisted.internet.task import Clock, deferLater
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import formatEvent, globalLogPublisher
from twisted.protocols.policies import WrappingFactory
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web._newclient import ParseError
from twisted.web.client import (
    Agent,
    BrowserLikePolicyForHTTPS,
    RequestTransmissionFailed,
    ResponseDone,
    ResponseFailed,
    ResponseNeverReceived,
)
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgent, IResponse
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site
from zope.interface import implementer
from zope.interface.verify import verifyObject

import socktopus_tw
from socktopus_tw.metrics import Metrics
from socktopus_tw.relay.events import IEventSink
from socktopus_tw.relay.webhooks import Webhooks, checkWebhookUrl, signature

START = 1700000000.0
SECRETS = {"app": "s3cret-of-app", "other": "s3cret-of-other"}
URLS = {"app": "https://backend.example/socktopus", "other": "https://other.example/hook"}


def expectedSignature(secret: str, body: bytes, milliseconds: int) -> str:
    """
    The signature as a receiver's SDK computes it, independently.
    """
    message = str(milliseconds).encode() + b"." + body
    digest = hmac.new(secret.encode("utf-8"), message, hashlib.sha256).hexdigest()
    return f"t={milliseconds},v1={digest}"


def verify(secret: str, header: str, body: bytes) -> int:
    """
    Check a C{Socktopus-Signature} header as a receiver would; its stamp.
    """
    fields = dict(part.split("=", 1) for part in header.split(","))
    stamp = int(fields["t"])
    digest = hmac.new(
        secret.encode("utf-8"), fields["t"].encode() + b"." + body, hashlib.sha256
    ).hexdigest()
    if not hmac.compare_digest(digest, fields["v1"]):
        raise AssertionError(f"bad signature {header!r}")
    return stamp


def samples(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """
    The webhook samples of a scrape, keyed by name and sorted labels.
    """
    found = {}
    for family in text_string_to_metric_families(metrics.exposition().decode()):
        for sample in family.samples:
            if sample.name.startswith("socktopus_webhook"):
                found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def dropped(metrics: Metrics, reason: str, app: str = "app") -> float:
    key = ("socktopus_webhook_events_dropped_total", (("app", app), ("reason", reason)))
    return samples(metrics).get(key, 0)


def delivered(metrics: Metrics, app: str = "app") -> float:
    return samples(metrics).get(("socktopus_webhook_events_delivered_total", (("app", app),)), 0)


def posts(metrics: Metrics, outcome: str, app: str = "app") -> float:
    key = ("socktopus_webhook_posts_total", (("app", app), ("outcome", outcome)))
    return samples(metrics).get(key, 0)


# -- an in-memory agent ----------------------------------------------------


class FakeBodyTransport:
    """
    What a response body's protocol sees as its transport.
    """

    def __init__(self, response: FakeResponse) -> None:
        self.response = response
        self.stopped = False

    def stopProducing(self) -> None:
        # As Twisted's: the connection is dropped and the body ends failed.
        if not self.stopped:
            self.stopped = True
            self.response.protocol.connectionLost(Failure(ConnectionAborted()))

    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass


@implementer(IResponse)
class FakeResponse:
    """
    An answer whose body is given whole, in 16 KiB chunks, and then ends
    (or, with C{finish=False}, never does).
    """

    version = (b"HTTP", 1, 1)
    phrase = b"Whatever"
    request = None
    previousResponse = None

    def __init__(self, code: int, body: bytes = b"", finish: bool = True) -> None:
        self.code = code
        self.body = body
        self.finish = finish
        self.headers = Headers()
        self.length = len(body)
        self.transport = FakeBodyTransport(self)
        self.protocol: Any = None
        self.delivered = 0

    def deliverBody(self, protocol: Any) -> None:
        self.protocol = protocol
        protocol.makeConnection(self.transport)
        for start in range(0, len(self.body), 16384):
            if self.transport.stopped:
                return
            chunk = self.body[start : start + 16384]
            self.delivered += len(chunk)
            protocol.dataReceived(chunk)
        if self.finish and not self.transport.stopped:
            protocol.connectionLost(Failure(ResponseDone()))

    def setPreviousResponse(self, response: IResponse) -> None:
        pass


class Post:
    """
    One request the fake agent took, waiting for the test to answer it.
    """

    def __init__(self, at: float, method: bytes, uri: bytes, headers: Headers, body: bytes):
        self.at = at
        self.method = method
        self.uri = uri
        self.headers = headers
        self.body = body
        self.cancelled = False
        self.deferred: Deferred[IResponse] = Deferred(self._cancel)
        self.response: FakeResponse | None = None

    def _cancel(self, d: Deferred[IResponse]) -> None:
        # As Twisted's Agent: the cancel reaches the request as a lost
        # answer, a CancelledError wrapped in ResponseNeverReceived.
        self.cancelled = True
        d.errback(ResponseNeverReceived([Failure(CancelledError())]))

    def header(self, name: bytes) -> str:
        [value] = self.headers.getRawHeaders(name)
        return value.decode()

    @property
    def json(self) -> dict[str, Any]:
        return orjson.loads(self.body)

    @property
    def events(self) -> list[dict[str, Any]]:
        return self.json["events"]

    @property
    def contents(self) -> list[str]:
        return [event["content"] for event in self.events]

    def respond(self, code: int, body: bytes = b"", finish: bool = True) -> FakeResponse:
        self.response = FakeResponse(code, body, finish)
        self.deferred.callback(self.response)
        return self.response

    def fail(self, error: Exception | None = None) -> None:
        self.deferred.errback(error or ConnectionRefusedError())


class _Consumer:
    def __init__(self) -> None:
        self.data: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.data.append(data)


@implementer(IAgent)
class FakeAgent:
    """
    Records each request and answers only when the test says so; with
    C{answer} set, answers each at once with that status.
    """

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.posts: list[Post] = []
        self.answer: int | None = None
        self.raises: Exception | None = None

    def request(
        self,
        method: bytes,
        uri: bytes,
        headers: Headers | None = None,
        bodyProducer: Any = None,
    ) -> Deferred[IResponse]:
        if self.raises is not None:
            raise self.raises
        consumer = _Consumer()
        bodyProducer.startProducing(consumer)
        body = b"".join(consumer.data)
        assert len(body) == bodyProducer.length
        post = Post(self.clock.seconds(), method, uri, headers or Headers(), body)
        self.posts.append(post)
        if self.answer is not None:
            post.respond(self.answer)
        return post.deferred


# -- pure functions --------------------------------------------------------


class SignatureTests(SynchronousTestCase):
    def test_matchesAnIndependentHmac(self) -> None:
        """
        C{t=<ms>,v1=<hex HMAC-SHA256 of "<ms>." + body>}, keyed by the secret.
        """
        body = b'{"app":"app","events":[]}'
        self.assertEqual(
            signature("s3cret", body, 1700000000123),
            expectedSignature("s3cret", body, 1700000000123),
        )
        self.assertEqual(
            signature("s3cret", b"x", 5),
            "t=5,v1=" + hmac.new(b"s3cret", b"5.x", hashlib.sha256).hexdigest(),
        )

    def test_secretIsUtf8(self) -> None:
        """
        The key is the secret's UTF-8 bytes.
        """
        self.assertEqual(signature("clé", b"{}", 1), expectedSignature("clé", b"{}", 1))

    def test_stampAndBodyMatter(self) -> None:
        self.assertNotEqual(signature("s", b"a", 1), signature("s", b"a", 2))
        self.assertNotEqual(signature("s", b"a", 1), signature("s", b"b", 1))
        self.assertNotEqual(signature("s", b"a", 1), signature("t", b"a", 1))


class CheckWebhookUrlTests(SynchronousTestCase):
    def test_usable(self) -> None:
        """
        HTTPS to any host, plain HTTP to loopback addresses only.
        """
        for url in [
            "https://backend.example/socktopus",
            "https://backend.example:8443/hooks?app=1",
            "HTTPS://Backend.Example/",
            "https://10.0.0.1/hook",
            "http://127.0.0.1:8080/hook",
            "http://127.1.2.3/hook",
            "http://[::1]:9000/hook",
            "http://localhost/hook",
            "http://LOCALHOST:80/",
        ]:
            self.assertIsNone(checkWebhookUrl(url), url)

    def test_refused(self) -> None:
        """
        Anything else is refused with one sentence saying why.
        """
        for url in [
            "http://10.0.0.1/hook",
            "http://example.com/hook",
            "http://[::2]/hook",
            "http://localhost.example.com/",
            "ftp://backend.example/hook",
            "backend.example/hook",
            "https://",
            "https:///path",
            "https://:443/path",
            "https://user:password@backend.example/hook",
            "https://user@backend.example/hook",
            "http://user:pw@127.0.0.1/hook",
            "https://backend.example:99999/",
            "https://backend.example:port/",
            "https://[::1/",
            "https://backend.example/a b",
            "https://backend.example/\n",
            "",
        ]:
            problem = checkWebhookUrl(url)
            self.assertIsInstance(problem, str, url)
            self.assertTrue(problem.endswith("."), problem)
            self.assertNotIn("password@", problem)

    def test_messages(self) -> None:
        """
        The sentence names the problem.
        """
        self.assertIn("loopback", checkWebhookUrl("http://example.com/"))
        self.assertIn("https://", checkWebhookUrl("ftp://example.com/"))
        self.assertIn("no host", checkWebhookUrl("https:///x"))
        self.assertIn("user name or password", checkWebhookUrl("https://a:b@example.com/"))

    def test_internationalHost(self) -> None:
        """
        A host in Unicode is usable, and posted to in its IDNA form.
        """
        url = "https://bücher.example/hook"
        self.assertIsNone(checkWebhookUrl(url))
        agent = FakeAgent(Clock())
        webhooks = Webhooks({"app": url}, SECRETS.__getitem__, agent.clock, agent=agent)
        webhooks.connected("app", "c1")
        agent.clock.advance(1)
        self.assertEqual(agent.posts[0].uri, b"https://xn--bcher-kva.example/hook")

    def test_emptyOrZeroPortAndBadHostsAreRefused(self) -> None:
        """
        URLs that parse but could never be posted to are start-up errors,
        not ten minutes of failed posts.
        """
        for url in ("https://host:/", "https://host:0/", "https://%zz/", "https://a b/"):
            self.assertIsNotNone(checkWebhookUrl(url), url)

    def test_constructorRefusesBadUrls(self) -> None:
        """
        L{Webhooks} takes only URLs that pass the check.
        """
        with self.assertRaises(ValueError) as raised:
            Webhooks({"app": "http://example.com/"}, SECRETS.__getitem__, Clock(), agent=None)
        self.assertIn("loopback", str(raised.exception))


# -- on a clock ------------------------------------------------------------


class ClockTestCase(SynchronousTestCase):
    """
    Webhooks on a L{Clock} that starts at a realistic Unix time, posting
    through a L{FakeAgent}.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(START)
        self.agent = FakeAgent(self.clock)
        self.metrics = Metrics()
        self.webhooks = Webhooks(
            URLS, SECRETS.__getitem__, self.clock, metrics=self.metrics, agent=self.agent
        )
        self.logged = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)

    def since(self, at: float) -> float:
        return round(at - START, 3)

    def messages(self, count: int, first: int = 0, app: str = "app") -> None:
        for i in range(first, first + count):
            self.webhooks.message(app, "c1", str(i))

    def step(self) -> None:
        """
        Run the earliest pending timed call.
        """
        calls = self.clock.getDelayedCalls()
        self.assertTrue(calls, "nothing is scheduled")
        at = min(call.getTime() for call in calls)
        self.clock.advance(max(at - self.clock.seconds(), 0))
        if self.clock.seconds() < at:
            # A float's rounding at 1.7e9 s: a step of a few ulps more.
            self.clock.advance(1e-6)

    def nextPost(self) -> Post:
        """
        Advance the clock, one timed call at a time, to the next post.
        """
        count = len(self.agent.posts)
        for _ in range(10_000):
            if len(self.agent.posts) > count:
                return self.agent.posts[-1]
            self.step()
        self.fail("no post")

    def warnings(self) -> list[str]:
        return [
            formatEvent(e)
            for e in self.logged
            if e.get("log_namespace", "").startswith("socktopus_tw.relay.webhooks")
            and e["log_level"].name in ("warn", "error", "critical")
        ]

    def lines(self) -> list[str]:
        return [
            formatEvent(e)
            for e in self.logged
            if e.get("log_namespace", "").startswith("socktopus_tw.relay.webhooks")
        ]


class EventSinkTests(ClockTestCase):
    def test_interface(self) -> None:
        self.assertTrue(verifyObject(IEventSink, self.webhooks))
        self.assertEqual(self.webhooks.name, "webhooks")

    def test_wants(self) -> None:
        """
        Only apps with a webhook are wanted.
        """
        self.assertTrue(self.webhooks.wants("app"))
        self.assertTrue(self.webhooks.wants("other"))
        self.assertFalse(self.webhooks.wants("nohook"))

    def test_appsWithoutWebhookIgnored(self) -> None:
        """
        Events of an app without a webhook schedule and post nothing.
        """
        self.webhooks.connected("nohook", "c1")
        self.webhooks.message("nohook", "c1", "hi")
        self.webhooks.disconnected("nohook", "c1", "client")
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertNotIn("nohook", self.webhooks.queueLengths())

    def test_postFormat(self) -> None:
        """
        One POST of C{{"app", "events"}} with each event's type, connection,
        time in Unix milliseconds and content or reason; JSON, our
        User-Agent, and the app's signature.
        """
        self.webhooks.connected("app", "conn-1")
        self.clock.advance(0.012)
        self.webhooks.message("app", "conn-1", "hi ✓")
        self.clock.advance(0.05)
        self.webhooks.disconnected("app", "conn-1", "kick")
        post = self.nextPost()
        self.assertEqual(post.method, b"POST")
        self.assertEqual(post.uri, b"https://backend.example/socktopus")
        self.assertEqual(
            post.json,
            {
                "app": "app",
                "events": [
                    {"type": "connect", "connection": "conn-1", "time": 1700000000000},
                    {
                        "type": "message",
                        "connection": "conn-1",
                        "time": 1700000000012,
                        "content": "hi ✓",
                    },
                    {
                        "type": "disconnect",
                        "connection": "conn-1",
                        "time": 1700000000062,
                        "reason": "kick",
                    },
                ],
            },
        )
        self.assertEqual(post.header(b"content-type"), "application/json")
        self.assertEqual(post.header(b"user-agent"), f"Socktopus/{socktopus_tw.__version__}")
        stamp = verify(SECRETS["app"], post.header(b"socktopus-signature"), post.body)
        self.assertEqual(stamp, int(post.at * 1000))
        self.assertEqual(
            post.header(b"socktopus-signature"),
            expectedSignature(SECRETS["app"], post.body, stamp),
        )

    def test_appsPostedApart(self) -> None:
        """
        Each app's events go to its own URL, signed with its own secret.
        """
        self.webhooks.connected("app", "a")
        self.webhooks.connected("other", "b")
        self.step()
        self.assertEqual(len(self.agent.posts), 2)
        byUri = {post.uri: post for post in self.agent.posts}
        post = byUri[b"https://other.example/hook"]
        self.assertEqual(post.json["app"], "other")
        self.assertEqual([e["connection"] for e in post.events], ["b"])
        verify(SECRETS["other"], post.header(b"socktopus-signature"), post.body)

    def test_loneSurrogate(self) -> None:
        """
        Content orjson refuses (a lone surrogate) is still posted, escaped.
        """
        self.webhooks.message("app", "c1", "a\ud800b")
        post = self.nextPost()
        self.assertEqual(json.loads(post.body)["events"][0]["content"], "a\ud800b")

    def test_neverRaises(self) -> None:
        """
        An event that cannot be serialised is logged and dropped; its
        caller sees nothing.
        """
        self.webhooks.message("app", "c1", object())  # type: ignore[arg-type]
        self.assertEqual(len(self.flushLoggedErrors(TypeError)), 1)
        self.webhooks.message("app", "c1", "fine")
        self.assertEqual(self.nextPost().contents, ["fine"])

    def test_agentRaising(self) -> None:
        """
        An agent that raises at once is a failed post: retried, not raised.
        """
        self.agent.raises = RuntimeError("boom")
        self.webhooks.connected("app", "c1")
        self.step()
        self.assertEqual(posts(self.metrics, "failed"), 1)
        self.agent.raises = None
        self.assertEqual(self.since(self.nextPost().at), 0.6)


class BatchingTests(ClockTestCase):
    def test_sentAfter100ms(self) -> None:
        """
        A batch goes 100 ms after its first event, with what came meanwhile.
        """
        self.messages(1)
        self.clock.advance(0.05)
        self.messages(1, first=1)
        self.clock.advance(0.049)
        self.assertEqual(self.agent.posts, [])
        post = self.nextPost()
        self.assertEqual(self.since(post.at), 0.1)
        self.assertEqual(post.contents, ["0", "1"])

    def test_thousandAtOnce(self) -> None:
        """
        1,000 waiting events are posted at once, without the delay.
        """
        self.messages(999)
        self.clock.advance(0)
        self.assertEqual(self.agent.posts, [])
        self.messages(2, first=999)
        self.clock.advance(0)
        [post] = self.agent.posts
        self.assertEqual(self.since(post.at), 0)
        self.assertEqual(post.contents, [str(i) for i in range(1000)])

    def test_atMostThousandPerPost(self) -> None:
        """
        A batch holds at most 1,000 events; the rest follow in order.
        """
        self.messages(2500)
        sizes = []
        for _ in range(3):
            post = self.nextPost()
            sizes.append(len(post.events))
            self.assertEqual(post.contents[0], str(sum(sizes[:-1])))
            post.respond(200)
        self.assertEqual(sizes, [1000, 1000, 500])
        self.assertEqual(delivered(self.metrics), 2500)
        self.assertEqual(self.webhooks.queueLengths()["app"], 0)

    def test_batchBytesBounded(self) -> None:
        """
        A post carries about L{Webhooks.maxBatchBytes} of events, at least
        one, and that many waiting are sent at once.
        """
        self.webhooks.maxBatchBytes = 1000
        self.webhooks.message("app", "c1", "x" * 5000)
        self.clock.advance(0)
        [post] = self.agent.posts
        self.assertEqual(len(post.events), 1)
        self.messages(100)
        post.respond(200)
        post = self.nextPost()
        self.assertLess(len(post.body), 1100)
        self.assertEqual(post.contents[0], "0")

    def test_oneInFlight(self) -> None:
        """
        While a post is in flight nothing else is posted for that app;
        once it is answered, what waited long enough goes at once.
        """
        self.messages(1)
        first = self.nextPost()
        self.messages(3, first=1)
        self.clock.advance(5)
        self.assertEqual(len(self.agent.posts), 1)
        first.respond(204)
        second = self.nextPost()
        self.assertEqual(self.since(second.at), 5.1)
        self.assertEqual(second.contents, ["1", "2", "3"])

    def test_nextBatchWaitsItsDelay(self) -> None:
        """
        After an answer, a batch whose first event is recent still waits
        until 100 ms after that event.
        """
        self.messages(1)
        first = self.nextPost()
        self.clock.advance(0.02)
        self.messages(1, first=1)
        self.clock.advance(0.03)
        first.respond(200)
        self.assertEqual(self.since(self.nextPost().at), 0.22)


class RetryTests(ClockTestCase):
    def test_backoff(self) -> None:
        """
        5xx answers are retried 0.5 s later, doubling to 30 s.
        """
        self.messages(1)
        times = []
        for _ in range(10):
            post = self.nextPost()
            times.append(self.since(post.at))
            post.respond(503)
        gaps = [round(b - a, 3) for a, b in pairwise(times)]
        self.assertEqual(gaps, [0.5, 1, 2, 4, 8, 16, 30, 30, 30])
        self.assertEqual(posts(self.metrics, "server_error"), 10)

    def test_backoffAfterDaysOfFailures(self) -> None:
        """
        Thousands of failures in a row still retry every 30 s.
        """
        self.messages(1)
        hook = self.webhooks._hooks["app"]
        self.nextPost().respond(503)
        hook.failures = 5000
        self.nextPost().respond(503)
        post = self.nextPost()
        self.assertEqual(round(post.at - self.agent.posts[-2].at, 3), 30)

    def test_backoffResetsOnDelivery(self) -> None:
        self.messages(1)
        for code in (500, 502, 200):
            self.nextPost().respond(code)
        self.messages(1, first=1)
        post = self.nextPost()
        post.respond(500)
        start = post.at
        self.assertEqual(round(self.nextPost().at - start, 3), 0.5)

    def test_resignedEachAttempt(self) -> None:
        """
        A retry is signed anew, with its own stamp; the body is the same.
        """
        self.messages(2)
        first = self.nextPost()
        first.respond(503)
        second = self.nextPost()
        self.assertEqual(first.body, second.body)
        firstStamp = verify(SECRETS["app"], first.header(b"socktopus-signature"), first.body)
        secondStamp = verify(SECRETS["app"], second.header(b"socktopus-signature"), second.body)
        self.assertEqual(secondStamp - firstStamp, 500)
        self.assertEqual(secondStamp, int(second.at * 1000))

    def test_orderKeptAcrossRetries(self) -> None:
        """
        Events that come while a batch is retried go after it; every event
        arrives once, in order.
        """
        got: list[str] = []
        count = 0
        for code in (503, 500, 200, 503, 200, 200):
            self.messages(3, first=count)
            count += 3
            post = self.nextPost()
            if code == 200:
                got.extend(post.contents)
            post.respond(code)
        self.messages(1, first=count)
        self.nextPost().respond(200)
        got.extend(self.agent.posts[-1].contents)
        self.assertEqual(got, [str(i) for i in range(count + 1)])

    def test_connectionRefused(self) -> None:
        """
        A refused connection is retried like a 5xx.
        """
        self.messages(1)
        self.nextPost().fail(ConnectionRefusedError())
        self.assertEqual(self.since(self.nextPost().at), 0.6)
        self.assertEqual(posts(self.metrics, "failed"), 1)

    def test_timeout(self) -> None:
        """
        A post not answered in 10 s is cancelled and retried.
        """
        self.messages(1)
        post = self.nextPost()
        self.clock.advance(9.99)
        self.assertFalse(post.cancelled)
        self.clock.advance(0.01)
        self.assertTrue(post.cancelled)
        self.assertEqual(posts(self.metrics, "timeout"), 1)
        self.assertEqual(posts(self.metrics, "failed"), 0)
        retry = self.nextPost()
        self.assertEqual(self.since(retry.at), 10.6)
        self.assertEqual(retry.body, post.body)

    def test_timeoutLoggedAsATimeout(self) -> None:
        """
        The Agent reports a post cancelled at 10 s as a lost answer (a
        CancelledError inside ResponseNeverReceived); it is still a timeout,
        counted as one and logged as one line saying when it is retried.
        """
        self.messages(1)
        for _ in range(3):
            self.nextPost()
            self.clock.advance(10)
        self.assertEqual(posts(self.metrics, "timeout"), 3)
        self.assertEqual(posts(self.metrics, "failed"), 0)
        self.assertEqual(
            self.warnings(), ["Webhook for app timed out after 10 s; retrying in 0.5 s"]
        )
        self.nextPost().respond(200)
        self.assertIn("Webhook for app delivering again after 3 failed attempts", self.lines())

    def test_failureReasonsAreOneLine(self) -> None:
        """
        Each way a post fails is one line that says what went wrong (and
        when it is retried): a line each time the problem changes, never a
        traceback.
        """
        cases = [
            (ConnectionRefusedError(), "could not connect (connection refused)"),
            (
                DNSLookupError("no results for hostname lookup: backend.example"),
                "could not connect (DNS lookup failed: no results for hostname lookup:"
                " backend.example)",
            ),
            (
                ResponseNeverReceived(
                    [Failure(SSL.Error([("SSL routines", "", "certificate verify failed")]))]
                ),
                "could not connect (TLS: certificate verify failed)",
            ),
            (TCPTimedOutError(), "could not connect (TCP connection timed out)"),
            (
                ResponseNeverReceived([Failure(ConnectionDone())]),
                "closed the connection without answering",
            ),
            (
                ResponseFailed([Failure(ConnectionLost())]),
                "closed the connection in the middle of its answer",
            ),
            (
                RequestTransmissionFailed([Failure(ConnectionLost())]),
                "closed the connection before the request was sent",
            ),
            (
                ResponseNeverReceived([Failure(ParseError("wrong number of parts", b"x" * 9000))]),
                "answered something that is not HTTP (wrong number of parts)",
            ),
            (RuntimeError("odd\nthing"), "RuntimeError: odd thing"),
        ]
        self.messages(1)
        for error, _ in cases:
            self.nextPost().fail(error)
        self.nextPost().fail(ConnectionRefusedError())
        delays = ["0.5", "1", "2", "4", "8", "16", "30", "30", "30"]
        self.assertEqual(
            self.warnings(),
            [
                f"Webhook for app {problem}; retrying in {delay} s"
                for (_, problem), delay in zip(cases, delays, strict=True)
            ]
            + ["Webhook for app could not connect (connection refused); retrying in 30 s"],
        )
        self.assertEqual(posts(self.metrics, "failed"), len(cases) + 1)
        self.assertFalse([e for e in self.logged if "log_failure" in e])

    def test_timeoutCoversTheAnswer(self) -> None:
        """
        The 10 s are for the whole post: an answer whose body never ends is
        a timeout, even a 200, and its connection is dropped.
        """
        self.messages(1)
        post = self.nextPost()
        response = post.respond(200, b"partial", finish=False)
        self.clock.advance(10)
        self.assertTrue(response.transport.stopped)
        self.assertEqual(posts(self.metrics, "timeout"), 1)
        self.assertEqual(delivered(self.metrics), 0)
        self.nextPost().respond(200)
        self.assertEqual(delivered(self.metrics), 1)

    def test_answerBodyDiscarded(self) -> None:
        """
        A long answer is read only so far, then its connection is closed.
        """
        self.messages(1)
        response = self.nextPost().respond(200, b"x" * (1024 * 1024))
        self.assertTrue(response.transport.stopped)
        self.assertLessEqual(response.delivered, self.webhooks.maxAnswerBytes + 16384)
        self.assertEqual(delivered(self.metrics), 1)

    def test_shortAnswerReadWhole(self) -> None:
        """
        A short answer is read to its end, so its connection can be reused.
        """
        self.messages(1)
        response = self.nextPost().respond(200, b'{"ok": true}')
        self.assertFalse(response.transport.stopped)

    def test_expiresAfterTenMinutes(self) -> None:
        """
        A batch still failing 10 minutes after its first attempt is dropped
        and counted; the next batch is then posted, and delivered.
        """
        self.messages(5)
        first = None
        while True:
            post = self.nextPost()
            first = first or post
            post.fail(ConnectionRefusedError())
            if not self.webhooks.queueLengths()["app"]:
                break
        self.assertEqual(self.since(post.at - first.at + START), 600)
        self.assertEqual(dropped(self.metrics, "expired"), 5)
        self.assertTrue(any("5 events dropped after 10 minutes" in w for w in self.warnings()))
        self.messages(1, first=5)
        post = self.nextPost()
        self.assertEqual(post.contents, ["5"])
        post.respond(200)
        self.assertEqual(delivered(self.metrics), 1)

    def test_nextBatchAfterExpiryKeepsTheBackoff(self) -> None:
        """
        After an expired batch the next one waits the backoff reached (the
        receiver is still down) and has its own 10 minutes.
        """
        self.messages(1500)
        first = self.nextPost()
        first.respond(503)
        while self.webhooks.queueLengths()["app"] > 500:
            post = self.nextPost()
            post.respond(503)
        self.assertEqual(dropped(self.metrics, "expired"), 1000)
        after = self.nextPost()
        self.assertEqual(round(after.at - post.at, 3), 30)
        self.assertEqual(after.contents[0], "1000")
        while self.webhooks.queueLengths()["app"]:
            last = self.nextPost()
            last.respond(503)
        self.assertEqual(round(last.at - after.at, 3), 600)
        self.assertEqual(dropped(self.metrics, "expired"), 1500)

    def test_transportFailureLogged(self) -> None:
        """
        A connection lost before the answer is retried, and the streak's
        line says what went wrong.
        """
        self.messages(1)
        self.nextPost().fail(ResponseNeverReceived([Failure(ConnectionLost("gone"))]))
        self.assertEqual(
            self.warnings(),
            ["Webhook for app closed the connection without answering; retrying in 0.5 s"],
        )
        self.assertEqual(posts(self.metrics, "failed"), 1)
        self.nextPost().respond(200)
        self.assertEqual(delivered(self.metrics), 1)

    def test_rejected(self) -> None:
        """
        A 4xx drops its batch, counted and logged once; the next batch is
        posted as usual.
        """
        self.messages(3)
        self.nextPost().respond(400)
        self.assertEqual(dropped(self.metrics, "rejected"), 3)
        self.assertEqual(posts(self.metrics, "rejected"), 1)
        self.assertEqual(self.webhooks.queueLengths()["app"], 0)
        [warning] = self.warnings()
        self.assertIn("answered 400: 3 events dropped", warning)
        self.clock.advance(60)
        self.assertEqual(len(self.agent.posts), 1)
        self.messages(1, first=3)
        post = self.nextPost()
        self.assertEqual(post.contents, ["3"])

    def test_redirectNotFollowed(self) -> None:
        """
        A 3xx is not followed: it drops the batch as a 4xx does.
        """
        self.messages(1)
        self.nextPost().respond(302)
        self.clock.advance(60)
        self.assertEqual(len(self.agent.posts), 1)
        self.assertEqual(dropped(self.metrics, "rejected"), 1)

    def test_rejectedDuringStreak(self) -> None:
        """
        A 4xx during a failure streak resets the backoff; the streak's end
        is still logged at the next delivery, with every failed attempt.
        """
        self.messages(1)
        for _ in range(4):
            self.nextPost().respond(503)
        self.nextPost().respond(404)
        self.messages(1, first=1)
        post = self.nextPost()
        post.respond(503)
        self.assertEqual(round(self.nextPost().at - post.at, 3), 0.5)
        self.agent.posts[-1].respond(200)
        self.assertIn("Webhook for app delivering again after 5 failed attempts", self.lines())

    def test_failureStreakLoggedOnce(self) -> None:
        """
        A failure streak is one line when it starts and one when delivering
        again; neither the secret nor a signature is ever logged.
        """
        self.messages(1)
        for _ in range(6):
            self.nextPost().respond(503)
        [warning] = self.warnings()
        self.assertEqual(warning, "Webhook for app answered 503; retrying in 0.5 s")
        post = self.nextPost()
        post.respond(200)
        self.assertIn("Webhook for app delivering again after 6 failed attempts", self.lines())
        signatures = [p.header(b"socktopus-signature") for p in self.agent.posts]
        for event in self.logged:
            text = formatEvent(event) + repr(event)
            self.assertNotIn(SECRETS["app"], text)
            for header in signatures:
                self.assertNotIn(header.split("v1=")[1], text)


class BoundTests(ClockTestCase):
    def test_overflowDropsOldest(self) -> None:
        """
        At most 10,000 undelivered events are kept, the one in flight
        included; past that the oldest go, counted and logged once. The
        post in flight, once answered, removes only what is still queued.
        """
        self.messages(1000)
        self.clock.advance(0)
        [inFlight] = self.agent.posts
        self.messages(9050, first=1000)
        self.assertEqual(self.webhooks.queueLengths(), {"app": 10000, "other": 0})
        self.assertEqual(dropped(self.metrics, "overflow"), 50)
        self.assertEqual(
            samples(self.metrics)[("socktopus_webhook_queue", (("app", "app"),))], 10000
        )
        [warning] = self.warnings()
        self.assertIn("Webhook queue of app is full (10000 events or", warning)
        inFlight.respond(200)
        self.assertEqual(self.webhooks.queueLengths()["app"], 9000)
        self.assertEqual(delivered(self.metrics), 1000)
        self.assertIn("50 events were dropped while it was full", self.warnings()[-1])
        self.assertEqual(self.nextPost().contents[0], "1050")

    def test_overflowSparesThePostInFlight(self) -> None:
        """
        The events of a post in flight are on their way: an overflow drops
        the oldest of those waiting instead, so none is counted dropped and
        then delivered. If the post fails they wait again, oldest first.
        """
        self.messages(1000)
        self.clock.advance(0)
        [inFlight] = self.agent.posts
        self.messages(9500, first=1000)
        self.assertEqual(self.webhooks.queueLengths()["app"], 10000)
        self.assertEqual(dropped(self.metrics, "overflow"), 500)
        inFlight.respond(503)
        retry = self.nextPost()
        self.assertEqual(retry.contents, [str(i) for i in range(1000)])
        self.messages(10, first=10500)
        self.assertEqual(dropped(self.metrics, "overflow"), 510)
        retry.respond(200)
        self.assertEqual(delivered(self.metrics), 1000)
        self.assertEqual(self.nextPost().contents[0], "1510")

    def test_deliveredDroppedAndQueuedAddUp(self) -> None:
        """
        Whatever the receiver answers while the queue overflows, every
        event emitted is delivered (and then counted once, as the receiver
        got it), dropped, or still queued.
        """
        self.webhooks.maxEvents = 50
        self.webhooks.maxBatch = 10
        received = emitted = 0
        for round, answer in enumerate([200, 503, None, 200, 400, 200, 500, 200, 200] * 4):
            self.messages(37, first=emitted)
            emitted += 37
            post = self.nextPost()
            self.messages(23, first=emitted)
            emitted += 23
            if answer is None:
                self.clock.advance(10)
            else:
                post.respond(answer)
            if answer == 200:
                received += len(post.events)
            total = sum(
                value
                for (name, labels), value in samples(self.metrics).items()
                if name == "socktopus_webhook_events_dropped_total" and ("app", "app") in labels
            )
            queued = self.webhooks.queueLengths()["app"]
            self.assertEqual(delivered(self.metrics), received, round)
            self.assertEqual(received + total + queued, emitted, round)
            self.assertLessEqual(queued, 50)
        self.assertGreater(dropped(self.metrics, "overflow"), 0)

    def test_queuedEventsHoldAboutTheirSize(self) -> None:
        """
        What a full queue holds is about its byte count: orjson's bytes
        keep a buffer of at least 4 KiB whatever their length, so 10,000
        small events would hold 40 MiB while the count said 1 MiB.
        """
        started = not tracemalloc.is_tracing()
        if started:
            tracemalloc.start()
            self.addCleanup(tracemalloc.stop)
        before = tracemalloc.get_traced_memory()[0]
        self.messages(10_500)
        held = tracemalloc.get_traced_memory()[0] - before
        hook = self.webhooks._hooks["app"]
        self.assertEqual(len(hook.events), 10_000)
        # Per event: its bytes' header, its (time, bytes) tuple, the float,
        # and its deque slot, some 130 bytes besides its serialised size.
        self.assertLess(held, hook.size + 10_000 * 200)

    def test_retryTakesTheCurrentHead(self) -> None:
        """
        A retry starts from the oldest event still kept: what overflowed
        meanwhile is not retried.
        """
        self.messages(1000)
        self.clock.advance(0)
        self.agent.posts[0].respond(503)
        self.messages(9050, first=1000)
        retry = self.nextPost()
        self.assertEqual(retry.contents[0], "50")
        self.assertEqual(len(retry.events), 1000)

    def test_queueBytesBounded(self) -> None:
        """
        The queue is bounded in bytes too: big events push the oldest out.
        """
        self.webhooks.maxQueueBytes = 10_000
        for i in range(50):
            self.webhooks.message("app", "c1", f"{i:03d}" + "x" * 997)
        length = self.webhooks.queueLengths()["app"]
        self.assertLess(length, 10)
        self.assertEqual(dropped(self.metrics, "overflow"), 50 - length)
        self.assertEqual(self.nextPost().contents[-1][:3], "049")

    def test_otherAppsUnaffected(self) -> None:
        """
        One app's full queue drops nothing of another's.
        """
        self.messages(10_500)
        self.messages(3, app="other")
        self.assertEqual(self.webhooks.queueLengths(), {"app": 10000, "other": 3})
        self.assertEqual(dropped(self.metrics, "overflow", app="other"), 0)


class ShutdownTests(ClockTestCase):
    def test_postsAtOnce(self) -> None:
        """
        Stopping posts what is queued without waiting for the batch delay
        and fires once it is delivered; later events are dropped.
        """
        self.webhooks.startService()
        self.messages(2)
        stopped = self.webhooks.stopService()
        self.clock.advance(0)
        [post] = self.agent.posts
        self.assertNoResult(stopped)
        post.respond(200)
        self.successResultOf(stopped)
        self.assertEqual(delivered(self.metrics), 2)
        self.messages(1, first=2)
        self.assertEqual(dropped(self.metrics, "shutdown"), 1)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_eventsWhileStoppingPosted(self) -> None:
        """
        Events that come while stopping (the registry's disconnects) are
        posted too.
        """
        self.messages(1)
        stopped = self.webhooks.stopService()
        self.clock.advance(0)
        self.webhooks.disconnected("app", "c1", "shutdown")
        self.agent.posts[0].respond(200)
        post = self.nextPost()
        self.assertEqual(post.events[0]["reason"], "shutdown")
        post.respond(200)
        self.successResultOf(stopped)

    def test_hurriesBackoff(self) -> None:
        """
        A batch waiting out a backoff is retried at once.
        """
        self.messages(1)
        for _ in range(8):
            self.nextPost().respond(503)
        stopped = self.webhooks.stopService()
        self.clock.advance(0)
        self.assertEqual(len(self.agent.posts), 9)
        self.agent.posts[-1].respond(200)
        self.successResultOf(stopped)

    def test_givesUp(self) -> None:
        """
        After L{Webhooks.shutdownTimeout} the rest is given up on: the post
        in flight cancelled, the loss counted and logged.
        """
        self.messages(1500)
        self.messages(3, app="other")
        self.clock.advance(0)
        stopped = self.webhooks.stopService()
        self.clock.advance(4.9)
        self.assertNoResult(stopped)
        self.clock.advance(0.1)
        self.successResultOf(stopped)
        self.assertTrue(all(post.cancelled for post in self.agent.posts))
        self.assertEqual(dropped(self.metrics, "shutdown"), 1500)
        self.assertEqual(dropped(self.metrics, "shutdown", app="other"), 3)
        self.assertIn("Webhooks: 1503 events not delivered at shutdown", self.warnings())
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_nothingQueued(self) -> None:
        self.successResultOf(self.webhooks.stopService())


class DefaultAgentTests(SynchronousTestCase):
    def test_verifiedHttpsPersistentPool(self) -> None:
        """
        Without an agent, posts go through an L{Agent} with a persistent
        pool and Twisted's browser-like (verifying) HTTPS policy.
        """
        webhooks = Webhooks(URLS, SECRETS.__getitem__, Clock())
        self.assertIsInstance(webhooks.agent, Agent)
        self.assertTrue(webhooks._pool.persistent)
        self.assertIs(webhooks.agent._pool, webhooks._pool)
        self.assertIsInstance(
            webhooks.agent._endpointFactory._policyForHTTPS, BrowserLikePolicyForHTTPS
        )


# -- end to end ------------------------------------------------------------


class Receiver(Resource):
    """
    A backend's webhook endpoint: records each post and answers with the
    next of C{answers} (then 200); C{None} is never answering.
    """

    isLeaf = True

    def __init__(self, answers: list[int | None] | None = None, never: bool = False) -> None:
        super().__init__()
        self.answers = list(answers or [])
        self.never = never
        self.received: list[tuple[int | None, Any, bytes]] = []
        self.pending: list[Any] = []

    def render_POST(self, request: Any) -> bytes | int:
        body = request.content.read()
        code = None if self.never else (self.answers.pop(0) if self.answers else 200)
        self.received.append((code, request.requestHeaders, body))
        if code is None:
            self.pending.append(request)
            request.notifyFinish().addErrback(lambda _: None)
            return NOT_DONE_YET
        request.setResponseCode(code)
        return b"thanks"

    def delivered(self) -> list[dict[str, Any]]:
        """
        The events of the posts answered 2xx, in arrival order.
        """
        events = []
        for code, _, body in self.received:
            if code is not None and 200 <= code < 300:
                events.extend(orjson.loads(body)["events"])
        return events


class EndToEndTests(TestCase):
    timeout = 30

    def serve(self, receiver: Receiver, metrics: Metrics | None = None) -> Webhooks:
        """
        Listen on a loopback port; a Webhooks with its default agent
        posting there; both torn down, connections drained, after the test.
        """
        self.factory = WrappingFactory(Site(receiver))
        port = reactor.listenTCP(0, self.factory, interface="127.0.0.1")
        url = f"http://127.0.0.1:{port.getHost().port}/hook"
        webhooks = Webhooks({"app": url}, SECRETS.__getitem__, reactor, metrics=metrics)
        self.addCleanup(self.waitFor, lambda: not self.factory.protocols)
        self.addCleanup(port.stopListening)
        self.addCleanup(lambda: webhooks.running and webhooks.stopService())
        webhooks.startService()
        return webhooks

    @inlineCallbacks
    def waitFor(self, condition, timeout: float = 10.0):
        """
        Turn the reactor until C{condition()}, failing after C{timeout}.
        """
        deadline = reactor.seconds() + timeout
        while not condition():
            if reactor.seconds() > deadline:
                self.fail("timed out waiting")
            yield deferLater(reactor, 0.005, lambda: None)

    @inlineCallbacks
    def test_signedEventsArrive(self):
        """
        A real receiver gets the events, signed with the app's secret.
        """
        receiver = Receiver()
        metrics = Metrics()
        webhooks = self.serve(receiver, metrics)
        before = int(reactor.seconds() * 1000)
        webhooks.connected("app", "conn-1")
        webhooks.message("app", "conn-1", "hé")
        webhooks.disconnected("app", "conn-1", "client")
        yield self.waitFor(lambda: receiver.received)
        [(code, headers, body)] = receiver.received
        [header] = headers.getRawHeaders(b"socktopus-signature")
        stamp = verify(SECRETS["app"], header.decode(), body)
        self.assertTrue(before <= stamp <= int(reactor.seconds() * 1000))
        self.assertEqual(headers.getRawHeaders(b"content-type"), [b"application/json"])
        self.assertEqual(
            headers.getRawHeaders(b"user-agent"),
            [f"Socktopus/{socktopus_tw.__version__}".encode()],
        )
        payload = orjson.loads(body)
        self.assertEqual(payload["app"], "app")
        self.assertEqual(
            [(e["type"], e.get("content"), e.get("reason")) for e in payload["events"]],
            [("connect", None, None), ("message", "hé", None), ("disconnect", None, "client")],
        )
        yield self.waitFor(lambda: delivered(metrics) == 3)
        self.assertEqual(webhooks.queueLengths(), {"app": 0})

    @inlineCallbacks
    def test_retriedInOrderNoneLost(self):
        """
        A receiver answering 503 and then 200 gets every event, in order,
        the ones added during the retry after the others.
        """
        receiver = Receiver([503])
        webhooks = self.serve(receiver)
        for i in range(3):
            webhooks.message("app", "c1", str(i))
        yield self.waitFor(lambda: receiver.received)
        for i in range(3, 6):
            webhooks.message("app", "c1", str(i))
        yield self.waitFor(lambda: len(receiver.delivered()) >= 6)
        self.assertEqual([e["content"] for e in receiver.delivered()], list("012345"))
        [first, *_] = receiver.received
        self.assertEqual(first[0], 503)
        stamps = [
            verify(SECRETS["app"], h.getRawHeaders(b"socktopus-signature")[0].decode(), body)
            for _, h, body in receiver.received
        ]
        self.assertGreaterEqual(stamps[1] - stamps[0], 500)

    @inlineCallbacks
    def test_refusedConnection(self):
        """
        Nobody listening: the post fails, is logged as such and retried.
        """
        port = reactor.listenTCP(0, Site(Resource()), interface="127.0.0.1")
        url = f"http://127.0.0.1:{port.getHost().port}/hook"
        yield port.stopListening()
        metrics = Metrics()
        webhooks = Webhooks({"app": url}, SECRETS.__getitem__, reactor, metrics=metrics)
        webhooks.firstBackoff = 0.01
        webhooks.shutdownTimeout = 0.1
        observed = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        webhooks.startService()
        webhooks.connected("app", "c1")
        yield self.waitFor(lambda: posts(metrics, "failed") >= 2)
        yield webhooks.stopService()
        lines = [formatEvent(e) for e in observed if "retrying in" in formatEvent(e)]
        self.assertEqual(
            lines, ["Webhook for app could not connect (connection refused); retrying in 0.01 s"]
        )
        self.assertEqual(dropped(metrics, "shutdown"), 1)

    @inlineCallbacks
    def test_deadReceiverBounded(self):
        """
        A receiver that never answers: while 20,000 events are added the
        queue stays at most 10,000 and the drops are counted; shutdown
        gives up on the rest.
        """
        receiver = Receiver(never=True)
        metrics = Metrics()
        webhooks = self.serve(receiver, metrics)
        webhooks.shutdownTimeout = 0.5
        observed = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        longest = 0
        for chunk in range(20):
            for i in range(1000):
                webhooks.message("app", "c1", str(chunk * 1000 + i))
                longest = max(longest, webhooks.queueLengths()["app"])
            if chunk == 0:
                yield self.waitFor(lambda: receiver.pending)
            else:
                yield deferLater(reactor, 0, lambda: None)
        self.assertEqual(longest, 10_000)
        self.assertEqual(webhooks.queueLengths(), {"app": 10_000})
        self.assertEqual(dropped(metrics, "overflow"), 10_000)
        self.assertEqual(len(receiver.received), 1)
        yield webhooks.stopService()
        self.assertEqual(dropped(metrics, "shutdown"), 10_000)
        self.assertIn(
            "Webhooks: 10000 events not delivered at shutdown",
            [formatEvent(e) for e in observed],
        )
