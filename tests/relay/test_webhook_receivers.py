"""
Tests for L{socktopus_tw.relay.webhooks} against real receivers that
misbehave: the default Agent (its pool, Twisted's HTTP client parser) posts
over loopback TCP to a raw protocol listening on port 0, which answers as
each test says, or never. Time is a L{Clock} (the webhooks' batching,
timeouts and backoff, and the Agent's own timers); the sockets are the real
reactor's, turned until the receiver has seen what a test waits for.
"""

from __future__ import annotations

import gc
import os
import tracemalloc
from collections.abc import Callable
from typing import Any

from twisted.internet import reactor, ssl
from twisted.internet.defer import inlineCallbacks
from twisted.internet.interfaces import (
    IHostnameResolver,
    IHostResolution,
    IPullProducer,
    IReactorPluggableNameResolver,
    IReactorTCP,
)
from twisted.internet.protocol import Protocol, ServerFactory
from twisted.internet.task import Clock, deferLater
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import TestCase
from twisted.web._newclient import HTTP11ClientProtocol
from zope.interface import implementer

from socktopus_tw.metrics import Metrics
from socktopus_tw.relay.webhooks import Webhooks
from tests.relay.test_webhooks import SECRETS, delivered, dropped, posts, samples
from tests.support.redis import CertificateAuthority

START = 1700000000.0


@implementer(IReactorTCP, IReactorPluggableNameResolver)
class ClockedReactor(Clock):
    """
    A L{Clock} for every timer, the real reactor for sockets and (unless
    one is given) name resolution.
    """

    def __init__(self, resolver: Any = None) -> None:
        super().__init__()
        self._resolver = resolver

    @property
    def nameResolver(self) -> Any:
        return self._resolver or reactor.nameResolver

    def installNameResolver(self, resolver: Any) -> Any:
        old, self._resolver = self.nameResolver, resolver
        return old

    def connectTCP(self, host: str, port: int, factory: Any, timeout: float = 30, bindAddress=None):
        return reactor.connectTCP(host, port, factory, timeout, bindAddress)

    def listenTCP(self, port: int, factory: Any, backlog: int = 50, interface: str = ""):
        return reactor.listenTCP(port, factory, backlog, interface)


@implementer(IHostResolution)
class _Resolution:
    def __init__(self, name: str) -> None:
        self.name = name

    def cancel(self) -> None:
        pass


@implementer(IHostnameResolver)
class NoAddresses:
    """
    A resolver that finds no address for any name, as DNS does for a name
    that does not exist.
    """

    def resolveHostName(self, receiver, hostName, portNumber=0, addressTypes=None, **kwargs):
        receiver.resolutionBegan(_Resolution(hostName))
        receiver.resolutionComplete()
        return receiver


@implementer(IPullProducer)
class Endless:
    """
    Writes C{chunk} again each time its transport has room, until the
    connection ends.
    """

    def __init__(self, transport: Any, chunk: bytes, first: bytes = b"") -> None:
        self.transport = transport
        self.chunk = chunk
        self.written = len(first)
        transport.write(first)
        transport.registerProducer(self, False)

    def resumeProducing(self) -> None:
        self.written += len(self.chunk)
        self.transport.write(self.chunk)

    def stopProducing(self) -> None:
        pass


class Peer(Protocol):
    """
    One connection to the receiver: it splits what comes into requests
    (by their Content-Length) and hands each to the receiver's C{answer}.
    """

    def connectionMade(self) -> None:
        self.open = True
        self.buffer = b""
        self.producer: Endless | None = None
        self.factory.peers.append(self)

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        while b"\r\n\r\n" in self.buffer:
            head, rest = self.buffer.split(b"\r\n\r\n", 1)
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            if len(rest) < length:
                return
            self.buffer = rest[length:]
            self.factory.requests.append(rest[:length])
            self.factory.answer(self)

    def connectionLost(self, reason: Any) -> None:
        self.open = False

    def endless(self, chunk: bytes, first: bytes = b"") -> Endless:
        self.producer = Endless(self.transport, chunk, first)
        return self.producer


class Receiver(ServerFactory):
    """
    A webhook receiver: C{answer(peer)} is called for each whole request
    (by default, nothing is ever answered).
    """

    protocol = Peer
    noisy = False

    def __init__(self, answer: Callable[[Peer], None] = lambda peer: None) -> None:
        self.answer = answer
        self.peers: list[Peer] = []
        self.requests: list[bytes] = []

    def openPeers(self) -> list[Peer]:
        return [peer for peer in self.peers if peer.open]

    def events(self, posts: int | None = None) -> int:
        """
        The events in the first C{posts} requests (by default, all).
        """
        return sum(body.count(b'"type":') for body in self.requests[:posts])


def answer(data: bytes) -> Callable[[Peer], None]:
    return lambda peer: peer.transport.write(data)


def liveClientProtocols() -> int:
    gc.collect()
    return sum(1 for o in gc.get_objects() if isinstance(o, HTTP11ClientProtocol))


class ReceiverTestCase(TestCase):
    timeout = 60

    def setUp(self) -> None:
        self.clock = ClockedReactor()
        self.clock.advance(START)
        self.metrics = Metrics()
        self.logged = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        self.emitted = 0

    def listen(self, receiver: Receiver, tls: Any = None) -> str:
        """
        Serve C{receiver} on a loopback port; its URL.
        """
        if tls is None:
            port = reactor.listenTCP(0, receiver, interface="127.0.0.1")
        else:
            port = reactor.listenSSL(0, receiver, tls, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        scheme = "https" if tls else "http"
        return f"{scheme}://127.0.0.1:{port.getHost().port}/hook"

    def webhooks(self, receiver: Receiver | None, url: str | None = None, tls: Any = None):
        """
        The app's webhooks, on the clock, posting with the default Agent to
        C{receiver} (or C{url}); given up on after the test, their
        connections to it closed.
        """
        if url is None:
            url = self.listen(receiver, tls)
        webhooks = Webhooks({"app": url}, SECRETS.__getitem__, self.clock, metrics=self.metrics)
        self.addCleanup(self.giveUp, webhooks, receiver)
        return webhooks

    @inlineCallbacks
    def giveUp(self, webhooks: Webhooks, receiver: Receiver | None):
        webhooks._giveUp()
        yield webhooks._pool.closeCachedConnections()
        if receiver is not None:
            yield self.waitFor(lambda: not receiver.openPeers())

    @inlineCallbacks
    def waitFor(self, condition: Callable[[], Any], timeout: float = 10.0, tick: float = 0):
        """
        Turn the real reactor until C{condition()}, failing after C{timeout}
        seconds of it; with C{tick}, the clock advances that much a turn.
        """
        deadline = reactor.seconds() + timeout
        while not condition():
            if reactor.seconds() > deadline:
                self.fail("timed out waiting")
            yield deferLater(reactor, 0.001, lambda: None)
            self.clock.advance(tick)

    def emit(self, webhooks: Webhooks, count: int) -> None:
        for _ in range(count):
            webhooks.message("app", "c1", str(self.emitted))
            self.emitted += 1

    def lines(self) -> list[str]:
        return [formatEvent(e) for e in self.logged]

    def warnings(self) -> list[str]:
        return [
            formatEvent(e)
            for e in self.logged
            if e.get("log_namespace", "").startswith("socktopus_tw.relay.webhooks")
            and e["log_level"].name == "warn"
        ]

    def assertNoTraceback(self) -> None:
        self.assertEqual([e for e in self.logged if "log_failure" in e], [])
        self.assertEqual([line for line in self.lines() if "\n" in line], [])
        self.assertEqual([line for line in self.lines() if "Starting factory" in line], [])

    def droppedTotal(self) -> float:
        return sum(
            value
            for (name, labels), value in samples(self.metrics).items()
            if name == "socktopus_webhook_events_dropped_total"
        )


class NeverAnsweringTests(ReceiverTestCase):
    @inlineCallbacks
    def test_timedOutPostsHoldNothing(self):
        """
        A receiver that takes each post and never answers, with the queue
        at its cap: each post times out at 10 s, counted and logged as a
        timeout, and leaves nothing behind: its connection is closed, no
        timer or client protocol stays, and the queue stays in its bounds,
        holding about its byte count.
        """
        if not tracemalloc.is_tracing():
            tracemalloc.start()
            self.addCleanup(tracemalloc.stop)
        before = tracemalloc.get_traced_memory()[0]
        receiver = Receiver()
        webhooks = self.webhooks(receiver)
        hook = webhooks._hooks["app"]
        attempts, held = 20, []
        for attempt in range(attempts):
            while hook.inFlight is None:
                self.emit(webhooks, 300)
                self.clock.advance(1)
            yield self.waitFor(lambda n=attempt + 1: len(receiver.requests) == n)
            if not attempt:
                # trial's own timeout is there once the test has started,
                # and earlier tests' objects may still be about.
                realCalls = len(reactor.getDelayedCalls())
                protocols = liveClientProtocols() - 1
            for _ in range(10):
                self.emit(webhooks, 300)
                self.clock.advance(1)
            self.assertIsNone(hook.inFlight)
            yield self.waitFor(lambda: not receiver.openPeers())
            held.append(
                (
                    len(self.clock.getDelayedCalls()),
                    len(reactor.getDelayedCalls()) - realCalls,
                    liveClientProtocols() - protocols,
                    sum(len(cached) for cached in webhooks._pool._connections.values()),
                )
            )
        self.assertEqual(posts(self.metrics, "timeout"), attempts)
        self.assertEqual(posts(self.metrics, "failed"), 0)
        # One connection per attempt, each closed; one timer (the retry)
        # and nothing else left, here or on the reactor.
        self.assertEqual(len(receiver.peers), attempts)
        self.assertEqual(set(held), {(1, 0, 0, 0)})
        # 20 attempts are over 10 minutes: a batch expired too.
        self.assertEqual(dropped(self.metrics, "expired"), 1000)
        queued = webhooks.queueLengths()["app"]
        self.assertLessEqual(queued, webhooks.maxEvents)
        self.assertLessEqual(hook.size, webhooks.maxQueueBytes)
        self.assertEqual(delivered(self.metrics) + self.droppedTotal() + queued, self.emitted)
        # All this holds is about the queue's byte count (and some 130 bytes
        # an event besides): the benchmark's growth was 10,000 orjson
        # buffers of 4 KiB each.
        held = tracemalloc.get_traced_memory()[0] - before
        # Slack for what else the process allocates meanwhile (a full run in
        # parallel); the defect this guards against held ~40 MB.
        self.assertLess(held, hook.size + queued * 200 + 4 * 1024 * 1024)
        self.assertEqual(
            [w for w in self.warnings() if "retrying" in w],
            ["Webhook for app timed out after 10 s; retrying in 0.5 s"],
        )
        self.assertNoTraceback()


class HostileAnswerTests(ReceiverTestCase):
    @inlineCallbacks
    def post(self, receiver: Receiver, webhooks: Webhooks, events: int = 1):
        """
        Emit C{events} and turn until the receiver has the post.
        """
        count = len(receiver.requests)
        self.emit(webhooks, events)
        self.clock.advance(0.1)
        yield self.waitFor(lambda: len(receiver.requests) > count)

    @inlineCallbacks
    def test_answerHeadIsBounded(self):
        """
        Twisted's client keeps every header line of an answer, however
        many: a receiver sending them without end (or one header continued
        without end, or 1xx answers without end) would fill memory within
        the 10 s (and Twisted logs a line per 1xx). Past 16 KiB of head, or
        4 interim answers, the connection is dropped, the post counted
        failed, logged in one line and retried.
        """
        heads = [
            (
                b"HTTP/1.1 200 OK\r\n",
                b"X-Junk: " + b"j" * 1000 + b"\r\n",
                "sent an answer head over 16 KiB",
            ),
            (
                b"HTTP/1.1 200 OK\r\nX-Long: start\r\n",
                b" " + b"j" * 1000 + b"\r\n",
                "sent an answer head over 16 KiB",
            ),
            (b"", b"HTTP/1.1 100 Continue\r\n\r\n" * 40, "sent over 4 interim (1xx) answers"),
        ]
        for first, more, what in heads:
            receiver = Receiver(lambda peer, f=first, m=more: peer.endless(m, first=f))
            metrics = self.metrics = Metrics()
            webhooks = self.webhooks(receiver)
            yield self.post(receiver, webhooks)
            yield self.waitFor(lambda r=receiver: not r.openPeers())
            self.assertEqual(posts(metrics, "failed"), 1)
            self.assertEqual(self.warnings()[-1], f"Webhook for app {what}; retrying in 0.5 s")
            # Retried, and delivered once the receiver behaves.
            receiver.answer = answer(b"HTTP/1.1 204 No Content\r\n\r\n")
            self.clock.advance(0.5)
            yield self.waitFor(lambda m=metrics: delivered(m) == 1)
        ignored = [line for line in self.lines() if "Ignoring unexpected 100" in line]
        self.assertEqual(len(ignored), 4)
        self.assertNoTraceback()

    @inlineCallbacks
    def test_answerBodyIsCutOff(self):
        """
        A 200 whose body never ends (chunked, or a huge Content-Length) is
        read only 64 KiB far and thrown away: the connection is closed at
        once, not after the 10 s, and the batch is delivered.
        """
        for head, chunk in [
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                b"4000\r\n" + b"b" * 0x4000 + b"\r\n",
            ),
            (b"HTTP/1.1 200 OK\r\nContent-Length: 100000000000\r\n\r\n", b"b" * 16384),
        ]:
            receiver = Receiver(lambda peer, h=head, c=chunk: peer.endless(c, first=h))
            metrics = self.metrics = Metrics()
            webhooks = self.webhooks(receiver)
            yield self.post(receiver, webhooks, 3)
            yield self.waitFor(lambda r=receiver: not r.openPeers())
            self.assertEqual(delivered(metrics), 3)
            self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(self.warnings(), [])
        self.assertNoTraceback()

    @inlineCallbacks
    def test_slowAnswersTimeOut(self):
        """
        An answer dribbled a byte a second (its head, or its body after a
        200) is a timeout at 10 s: the connection is dropped, the batch
        retried, and nothing counted delivered.
        """
        for start in [b"", b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n"]:
            receiver = Receiver(lambda peer, s=start: peer.transport.write(s))
            metrics = self.metrics = Metrics()
            webhooks = self.webhooks(receiver)
            yield self.post(receiver, webhooks)
            [peer] = receiver.peers
            for _ in range(99):
                peer.transport.write(b"H")
                self.clock.advance(1)
                if not webhooks._hooks["app"].inFlight:
                    break
            yield self.waitFor(lambda r=receiver: not r.openPeers())
            self.assertEqual(posts(metrics, "timeout"), 1)
            self.assertEqual(delivered(metrics), 0)
            self.assertEqual(
                round(self.clock.getDelayedCalls()[0].getTime() - self.clock.seconds(), 3), 0.5
            )
        self.assertNoTraceback()

    @inlineCallbacks
    def test_redirectIsNotFollowed(self):
        """
        A redirect, even a 307 that keeps the POST, is not followed (its
        target is not a checked webhook URL): the batch is dropped as a 4xx.
        """
        elsewhere = Receiver(answer(b"HTTP/1.1 204 No Content\r\n\r\n"))
        target = self.listen(elsewhere)
        receiver = Receiver(
            answer(
                b"HTTP/1.1 307 Temporary Redirect\r\nLocation: "
                + target.encode()
                + b"\r\nContent-Length: 0\r\n\r\n"
            )
        )
        webhooks = self.webhooks(receiver)
        yield self.post(receiver, webhooks, 2)
        yield self.waitFor(lambda: dropped(self.metrics, "rejected") == 2)
        self.assertEqual(elsewhere.peers, [])
        self.assertEqual(self.warnings(), ["Webhook for app answered 307: 2 events dropped"])
        self.assertNoTraceback()

    @inlineCallbacks
    def test_slowTwoHundredsDeliverEverythingCounted(self):
        """
        A receiver that answers 204 only after 9.9 s, every time, while
        events come faster than it takes them: one connection serves every
        post, the queue overflows within its bounds, and every event is
        counted once: delivered (as many as the receiver got), dropped or
        queued.
        """
        receiver = Receiver()
        webhooks = self.webhooks(receiver)
        hook = webhooks._hooks["app"]
        for n in range(1, 13):
            # Once a post is answered the next goes at once: the events
            # waited long enough.
            while hook.inFlight is None:
                self.emit(webhooks, 300)
                self.clock.advance(0.1)
            yield self.waitFor(lambda n=n: len(receiver.requests) == n)
            for _ in range(99):
                self.emit(webhooks, 30)
                self.clock.advance(0.1)
            self.assertIsNotNone(hook.inFlight)
            receiver.peers[-1].transport.write(b"HTTP/1.1 204 No Content\r\n\r\n")
            yield self.waitFor(lambda n=n: posts(self.metrics, "delivered") == n)
            # The next post may be on its way: only the n answered count.
            self.assertEqual(delivered(self.metrics), receiver.events(n))
            queued = webhooks.queueLengths()["app"]
            self.assertEqual(delivered(self.metrics) + self.droppedTotal() + queued, self.emitted)
            self.assertLessEqual(queued, webhooks.maxEvents)
        self.assertGreater(dropped(self.metrics, "overflow"), 0)
        self.assertEqual(len(receiver.peers), 1)
        self.assertEqual(posts(self.metrics, "delivered"), 12)
        self.assertNoTraceback()

    @inlineCallbacks
    def test_closedMidAnswer(self):
        """
        A receiver that closes the connection: before answering, or within
        its head, the post failed and is retried; within the body of a 200,
        the 200 was said and the batch is delivered; within that of a 503,
        it is retried. Each is one line, never a traceback.
        """
        cases = [
            (b"", "failed", "closed the connection without answering"),
            (
                b"HTTP/1.1 200 OK\r\nContent-",
                "failed",
                "closed the connection in the middle of its answer",
            ),
            (b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\npartial", "delivered", None),
            (
                b"HTTP/1.1 503 Busy\r\nContent-Length: 1000\r\n\r\npartial",
                "server_error",
                "answered 503",
            ),
        ]
        for data, outcome, line in cases:
            receiver = Receiver(
                lambda peer, d=data: (peer.transport.write(d), peer.transport.loseConnection())
            )
            metrics = self.metrics = Metrics()
            before = len(self.warnings())
            webhooks = self.webhooks(receiver)
            yield self.post(receiver, webhooks)
            yield self.waitFor(lambda m=metrics, o=outcome: posts(m, o) == 1)
            if line is None:
                self.assertEqual(self.warnings()[before:], [])
            else:
                self.assertEqual(
                    self.warnings()[before:], [f"Webhook for app {line}; retrying in 0.5 s"]
                )
        self.assertNoTraceback()

    @inlineCallbacks
    def test_notHttp(self):
        """
        An answer that is not HTTP (another protocol's greeting, a header
        without a colon) is a failure said in one line, and retried.
        """
        cases = [
            (b"SSH-2.0-OpenSSH_9.2\r\n\r\n", "(wrong number of parts)"),
            (b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n", "(ValueError: not enough values"),
        ]
        for data, words in cases:
            receiver = Receiver(answer(data))
            metrics = self.metrics = Metrics()
            before = len(self.warnings())
            webhooks = self.webhooks(receiver)
            yield self.post(receiver, webhooks)
            yield self.waitFor(lambda m=metrics: posts(m, "failed") == 1)
            [line] = self.warnings()[before:]
            self.assertTrue(
                line.startswith("Webhook for app answered something that is not HTTP"), line
            )
            self.assertIn(words, line)
        self.assertNoTraceback()


class ConnectFailureTests(ReceiverTestCase):
    @inlineCallbacks
    def test_tlsFailure(self):
        """
        A receiver whose certificate is not trusted: one line saying TLS
        failed and why, counted failed, retried; no traceback.
        """
        directory = self.mktemp()
        os.makedirs(directory)
        certFile, keyFile = CertificateAuthority(directory).issue(["127.0.0.1"])
        with open(certFile, "rb") as cert, open(keyFile, "rb") as key:
            options = ssl.PrivateCertificate.loadPEM(cert.read() + key.read()).options()
        receiver = Receiver(answer(b"HTTP/1.1 204 No Content\r\n\r\n"))
        webhooks = self.webhooks(receiver, tls=options)
        self.emit(webhooks, 1)
        self.clock.advance(0.1)
        yield self.waitFor(lambda: posts(self.metrics, "failed") == 1)
        self.assertEqual(
            self.warnings(),
            [
                "Webhook for app could not connect (TLS: certificate verify failed);"
                " retrying in 0.5 s"
            ],
        )
        self.assertEqual(receiver.requests, [])
        self.assertNoTraceback()

    @inlineCallbacks
    def test_dnsFailure(self):
        """
        A host name that does not resolve: one line saying so.
        """
        self.clock.installNameResolver(NoAddresses())
        webhooks = self.webhooks(None, url="https://backend.example/hook")
        self.emit(webhooks, 1)
        self.clock.advance(0.1)
        yield self.waitFor(lambda: posts(self.metrics, "failed") == 1)
        self.assertEqual(
            self.warnings(),
            [
                "Webhook for app could not connect (DNS lookup failed: no results for hostname"
                " lookup: backend.example); retrying in 0.5 s"
            ],
        )
        self.assertNoTraceback()

    @inlineCallbacks
    def test_refused(self):
        """
        Nobody listening: one line saying the connection was refused.
        """
        port = reactor.listenTCP(0, Receiver(), interface="127.0.0.1")
        url = f"http://127.0.0.1:{port.getHost().port}/hook"
        yield port.stopListening()
        webhooks = self.webhooks(None, url=url)
        self.emit(webhooks, 1)
        self.clock.advance(0.1)
        # The Agent's endpoint notices its last attempt failed at its next
        # tick (of 0.3 s) on the clock.
        yield self.waitFor(lambda: posts(self.metrics, "failed") == 1, tick=0.01)
        self.assertEqual(
            self.warnings(),
            ["Webhook for app could not connect (connection refused); retrying in 0.5 s"],
        )
        self.assertNoTraceback()
