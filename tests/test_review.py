"""
Defects found in a review of the fast path, the sliced big-body handling
and their shutdown: each of these tests failed before its fix.
"""

from __future__ import annotations

import json
import tracemalloc
from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.protocol import Factory
from twisted.internet.task import Clock, Cooperator, deferLater
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.http import HTTPChannel

from socktopus_tw.http.fastpath import FastPathChannel
from tests import test_slices
from tests.support import APP, SECRET, Daemon, RawClient, upgradeRequest
from tests.test_fastpath import (
    BIG_BATCH,
    NOW,
    PEER,
    Relay,
    bigBatch,
    request,
    say,
    send,
    sendBody,
    settle,
)


def oneSlicePerTurn(clock: Clock) -> Cooperator:
    """
    A cooperator that runs one unit of work per turn, a turn being a
    millisecond of C{clock}: what a busy reactor does between socket reads.
    """
    return Cooperator(terminationPredicateFactory=lambda: lambda: True,
                      scheduler=lambda work: clock.callLater(0.001, work))


class DeliveryQueueTests(SynchronousTestCase):
    """
    L{SendResource}'s queue of batches waiting to be delivered.
    """

    # Fixed in affa858: accept() started a second _drain while the first was
    # still looping (re-entered from a batch's answer), and a batch queued
    # then was never answered.

    def test_batchQueuedBehindTwoPipelinedBigBatchesIsAnswered(self) -> None:
        """
        A backend pipelines two big batches on one connection; while the
        second is being delivered another backend sends one message. Every
        request is answered and every message delivered once.
        """
        clock = Clock()
        clock.advance(NOW)
        relay = Relay(clock)
        relay.send.cooperator = oneSlicePerTurn(clock)
        first, second = relay.connect(), relay.connect()
        first.feed(bigBatch("a") + bigBatch("b"))
        for _ in range(100):
            if first.answers():
                break
            clock.advance(0.001)
        self.assertEqual(len(first.answers()), 1)
        # Batch b is being delivered now; this one waits behind it.
        second.feed(send("c"))
        for _ in range(100):
            clock.advance(0.001)
        self.assertEqual([a.status for a in first.answers()], [200, 200])
        self.assertEqual([(a.status, a.json()["succeeded"]) for a in second.answers()],
                         [(200, [say("c")])])
        self.assertEqual(relay.delivered()[-1], "DATA:c")
        self.assertEqual(relay.site.working, set())


class ShutdownDrainTests(SynchronousTestCase):
    """
    C{SIGTERM}: in-flight requests finish before connections are closed.
    """

    # Fixed in affa858: FastPathChannel._resume called site.forget before
    # serving the held pipelined request, so drain() closed the connection
    # under it.

    def test_pipelinedBigBatchIsAnsweredBeforeClose(self) -> None:
        """
        Shutdown starts while a big batch is in flight with another pipelined
        behind it: both are delivered and answered before the connection is
        closed, as twisted.web does for the same bytes.
        """
        clock = Clock()
        clock.advance(NOW)
        outcomes = []
        for web in (False, True):
            relay = Relay(clock)
            client = relay.connect(web=web)
            client.feed(bigBatch("a") + bigBatch("b"))
            drained = Deferred.fromCoroutine(relay.site.drain(10))
            for _ in range(300):
                settle(clock)
                clock.advance(0.05)
            self.assertTrue(drained.called)
            outcomes.append(([a.status for a in client.answers()], len(relay.delivered())))
        fast, web = outcomes
        self.assertEqual(web, ([200, 200], 2 * BIG_BATCH))
        self.assertEqual(fast, web)


class IdleTimeoutAbortTests(SynchronousTestCase):
    """
    An idle connection that cannot even be closed (its client reads
    nothing, so its last responses never leave) is aborted.
    """

    # Fixed in affa858: FastPathChannel used TimeoutMixin's plain
    # loseConnection, so a client that stopped reading was never dropped.

    def test_stuckIdleConnectionIsAborted(self) -> None:
        clock = Clock()
        clock.advance(NOW)
        relay = Relay(clock)
        aborted = []

        class Stuck(StringTransport):
            """
            A connection whose peer reads nothing: closing waits forever.
            """

            def abortConnection(self) -> None:
                aborted.append(True)
                super().abortConnection()

        for channel in (relay.site.buildWebChannel(PEER), relay.site.buildProtocol(PEER)):
            del aborted[:]
            transport = Stuck(peerAddress=PEER)
            channel.makeConnection(transport)
            channel.dataReceived(send("x"))
            clock.advance(relay.site.timeOut)
            self.assertTrue(transport.disconnecting)
            clock.advance(HTTPChannel.abortTimeout)
            self.assertEqual(aborted, [True], type(channel).__name__)


class RealSocketTests(TestCase):
    timeout = 60

    @inlineCallbacks
    def test_webSocketAfterSendOnOneConnectionGetsCloseAtShutdown(self):
        """
        nginx's keepalive upstream can carry a backend's /send and then a
        browser's WebSocket upgrade on one connection. At shutdown that
        WebSocket still receives CLOSE from the registry, even if the
        fast-path channel that served the /send is still around: shutdown
        closes only the HTTP channels, and it is not one any more.
        """
        daemon = Daemon(self)
        site = next(s for s in daemon.service if s.name.startswith("listen")).factory
        client = yield self.connectRaw(daemon)
        body = json.dumps({"secretName": APP, "secret": SECRET,
                           "messages": [{"recipient": "nobody", "content": "x"}]}).encode()
        client.transport.write(request(body))
        yield client.waitFor(b'"failed":[{')
        kept = [c for c in site.channels if isinstance(c, FastPathChannel)]
        self.assertEqual(len(kept), 1)  # held here, as anything might hold it
        client.transport.write(upgradeRequest(f"/recieve?token={daemon.token('w1')}"))
        yield client.waitFor(b"HTTP/1.1 101")
        while daemon.registry.count() == 0:
            yield deferLater(reactor, 0, lambda: None)
        yield daemon.service.stopService()
        yield client.lost
        self.assertIn(b"\x81\x05CLOSE", client.received)

    @inlineCallbacks
    def connectRaw(self, daemon: Daemon):
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", daemon.port)
        client = yield endpoint.connect(Factory.forProtocol(RawClient))

        def close():
            if client.transport.connected:
                client.transport.abortConnection()
                return client.lost
            return None

        self.addCleanup(close)
        return client

    @inlineCallbacks
    def test_clientThatDoesNotReadDoesNotGrowTheDaemonsMemory(self):
        """
        A backend (or anyone) pipelines requests and reads none of the
        answers: once its answers back up, the daemon stops reading its
        requests instead of buffering every answer (SPEC 3.5: no client grows
        the daemon's memory without bound). twisted.web's HTTPChannel has the
        same hole for answers written while a request is handled, so this is
        not a regression; but the fast path owns its reads and can pause them.
        """
        daemon = Daemon(self)
        site = next(s for s in daemon.service if s.name.startswith("listen")).factory
        client = yield self.connectRaw(daemon)
        client.transport.pauseProducing()
        # Enough answers to outgrow the kernel's buffers many times over.
        content = "x" * 100000
        one = request(sendBody([say(content, to="nobody")]))
        count = 300
        client.transport.write(one * count)

        def served() -> int:
            for family in text_string_to_metric_families(
                    site.metrics.exposition().decode()):
                for sample in family.samples:
                    if sample.name == "socktopus_messages_failed_total":
                        return int(sample.value)
            return 0

        def serverSide() -> Any:
            local = client.transport.getHost().port
            for channel in list(site.channels):
                transport = channel.transport
                if transport is not None and transport.getPeer().port == local:
                    return transport
            return None

        transport = None
        for _ in range(100000):
            transport = serverSide()
            if served() == count:
                break
            if transport is not None and transport not in reactor.getReaders() \
                    and (transport.dataBuffer or transport._tempDataLen):
                break  # it stopped reading: the answers wait for the client
            yield deferLater(reactor, 0, lambda: None)
        self.assertIsNotNone(transport)
        held = len(transport.dataBuffer) - transport.offset + transport._tempDataLen
        self.assertLess(held, 1024 * 1024, f"{held} bytes of answers held for one client")


class TrickledBodyTests(SynchronousTestCase):
    def test_bodyInTinyReadsCostsAboutItsSize(self) -> None:
        """
        A client sends a 100 kB body two bytes per read (a hostile or very
        slow sender): the connection holds about the body's size in memory
        while it waits for the rest, as twisted.web's channel does.
        """
        clock = Clock()
        clock.advance(NOW)
        held = {}
        for web in (True, False):
            client = Relay(clock).connect(web=web)
            data = send("x" * 100000)
            head = data.index(b"\r\n\r\n") + 4
            body = data[head:-1]
            client.feed(data[:head])
            tracemalloc.start()
            try:
                before = tracemalloc.get_traced_memory()[0]
                for i in range(0, len(body), 2):
                    client.feed(body[i : i + 2])
                held[web] = tracemalloc.get_traced_memory()[0] - before
            finally:
                tracemalloc.stop()
            client.feed(data[-1:])
            self.assertEqual([a.status for a in client.answers()], [200])
        self.assertLess(held[True], 2 * len(body))
        self.assertLess(held[False], 2 * len(body),
                        f"{held[False]} bytes held for a {len(body)}-byte body")


class BigKickTests(SynchronousTestCase):
    def test_bigKickIsAppliedASliceAtATime(self) -> None:
        """
        A /kick of 250 connected clients, in slices of 100: no reactor turn
        closes more than a slice of them, as no turn delivers more than a
        slice of a big /send.
        """
        relay = test_slices.Relay(inlineLimit=0)
        ids = [f"c{n}" for n in range(250)]
        body = json.dumps({"secretName": test_slices.APP, "secret": test_slices.SECRET,
                           "connections": ids}).encode()
        answers: list[Any] = []
        relay.kick.post(body).addBoth(answers.append)
        perTurn = []
        while not answers and len(perTurn) < 100:
            before = sum(c.evictions for c in relay.clients)
            relay.clock.advance(0.001)
            perTurn.append(sum(c.evictions for c in relay.clients) - before)
        self.assertEqual(sum(perTurn), 250)
        self.assertLessEqual(max(perTurn), relay.kick.sliceSize)


class HostileBigBodyTests(SynchronousTestCase):
    def worstTurn(self, body: bytes) -> int:
        """
        The most memory one reactor turn allocates while C{body} is handled
        a slice at a time: building Python objects is the work that holds
        the reactor, so this counts it without timing anything.
        """
        relay = test_slices.Relay(inlineLimit=0)
        answers: list[Any] = []
        tracemalloc.start()
        try:
            relay.send.post(body).addBoth(answers.append)
            worst = 0
            for _ in range(10000):
                if answers:
                    break
                tracemalloc.reset_peak()
                before = tracemalloc.get_traced_memory()[0]
                relay.clock.advance(0.001)
                worst = max(worst, tracemalloc.get_traced_memory()[1] - before)
        finally:
            tracemalloc.stop()
        self.assertEqual(len(answers), 1)
        return worst

    def test_noTurnDecodesTheBulkOfABody(self) -> None:
        """
        A body whose bulk is not the elements of its array (an unknown
        field, an array inside one element) is not decoded in one reactor
        turn: no turn does more than a legitimate big batch's turns do,
        about the body's size (its text is decoded whole).
        """
        start = b'{"secretName":"%s","secret":"%s",' % (test_slices.APP.encode(),
                                                      test_slices.SECRET.encode())
        numbers = b",".join([b"1.5"] * 100000)
        legit = json.dumps(test_slices.send(
            *[(f"c{n % 250}", "m") for n in range(20000)])).encode()
        bodies = {
            "legitimate": legit,
            "unknown field": start + b'"messages":[],"junk":[' + numbers + b"]}",
            "nested array": start + b'"messages":[[' + numbers + b"]]}",
        }
        over = {name: (self.worstTurn(body), len(body)) for name, body in bodies.items()}
        self.assertEqual({name: n for name, n in over.items() if n[0] > 2 * n[1]}, {})
