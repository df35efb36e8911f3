"""
Webhook events of ids that move between nodes (SPEC §7.2: events posted in
the order they happened, each connection's disconnect exactly once): the
L{EventQueue} on its own, then real in-process daemons over a real
redis-server, each node posting to a receiver of its own, so a test sees
which node posted what.

That a node has posted nothing more about an id is seen without waiting for
nothing to happen: a node's events reach its receiver in order, so once a
later I{marker} connect it posted has arrived, whatever it posted before
has too.
"""

from __future__ import annotations

import time

from twisted.internet.defer import gatherResults, inlineCallbacks
from twisted.logger import Logger, LogLevel
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface import implementer

from socktopus_tw.cluster.events import EventQueue
from socktopus_tw.cluster.redis import DEADLINE
from socktopus_tw.relay.events import CLIENT, REPLACED, IEventSink
from tests.cluster.test_recovery import ReviewTestsMixin
from tests.relay.test_events import Receiver
from tests.support.daemon import APP, Daemon
from tests.support.fakes import FakeConnection


@implementer(IEventSink)
class RecordingSink:
    def __init__(self) -> None:
        self.events: list[tuple[str, ...]] = []

    def wants(self, app: str) -> bool:
        return True

    def connected(self, app: str, connectionId: str) -> None:
        self.events.append(("connect", connectionId))

    def message(self, app: str, connectionId: str, content: str) -> None:
        self.events.append(("message", connectionId, content))

    def disconnected(self, app: str, connectionId: str, reason: str) -> None:
        self.events.append(("disconnect", connectionId, reason))


class EventQueueTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.sink = RecordingSink()
        self.queue = EventQueue(self.sink)

    def test_nothingHeldIsPostedAtOnce(self) -> None:
        self.queue.post("message", APP, "x", "hi")
        self.assertEqual(self.sink.events, [("message", "x", "hi")])
        self.assertEqual(len(self.queue), 0)

    def test_eventsWaitBehindAHeldOne(self) -> None:
        held = self.queue.hold("connected", APP, "x")
        self.queue.post("message", APP, "x", "hi")
        self.assertEqual(self.sink.events, [])
        held.settle()
        self.assertEqual(self.sink.events, [("connect", "x"), ("message", "x", "hi")])
        self.assertEqual(len(self.queue), 0)

    def test_aConnectThatTookTheIdPostsTheOldDisconnectFirst(self) -> None:
        self.queue.hold("connected", APP, "x").settle(taken=True)
        self.assertEqual(self.sink.events, [("disconnect", "x", REPLACED), ("connect", "x")])

    def test_aDisconnectAnotherNodePostedIsNotPosted(self) -> None:
        held = self.queue.hold("disconnected", APP, "x", CLIENT)
        self.queue.post("message", APP, "y", "after")
        held.settle(taken=True)
        self.assertEqual(self.sink.events, [("message", "y", "after")])

    def test_settledOutOfOrderStillPostedInOrder(self) -> None:
        first = self.queue.hold("disconnected", APP, "x", CLIENT)
        second = self.queue.hold("connected", APP, "x")
        second.settle()
        self.assertEqual(self.sink.events, [])
        first.settle()
        self.assertEqual(self.sink.events, [("disconnect", "x", CLIENT), ("connect", "x")])

    def test_settledTwiceCountsOnce(self) -> None:
        held = self.queue.hold("connected", APP, "x")
        held.settle()
        held.settle(taken=True)
        self.assertEqual(self.sink.events, [("connect", "x")])

    def test_releaseAllPostsWhatIsHeldAsItIs(self) -> None:
        self.queue.hold("connected", APP, "x")
        self.queue.post("message", APP, "x", "hi")
        self.queue.hold("disconnected", APP, "x", CLIENT)
        self.queue.releaseAll()
        self.assertEqual(
            self.sink.events,
            [("connect", "x"), ("message", "x", "hi"), ("disconnect", "x", CLIENT)],
        )

    def test_tooManyHeldArePostedWithoutWaiting(self) -> None:
        """
        Past C{maxEvents} waiting, the queue stops waiting (Redis is slow
        and clients go on): everything goes as it is, in order, and the
        answers that come later change nothing; one warning says so.
        """
        self.queue.maxEvents = 3
        logged: list[dict] = []
        self.queue.log = Logger(observer=logged.append)
        held = self.queue.hold("connected", APP, "x")
        self.queue.post("message", APP, "x", "one")
        self.queue.post("message", APP, "x", "two")
        self.assertEqual(self.sink.events, [])
        self.queue.post("message", APP, "x", "three")
        self.assertEqual(
            self.sink.events,
            [
                ("connect", "x"),
                ("message", "x", "one"),
                ("message", "x", "two"),
                ("message", "x", "three"),
            ],
        )
        held.settle(taken=True)
        self.assertEqual(len(self.sink.events), 4)
        self.assertEqual(len(self.queue), 0)
        self.assertEqual([e["log_level"] for e in logged], [LogLevel.warn])

    def test_tooManyBytesHeldArePostedWithoutWaiting(self) -> None:
        self.queue.maxBytes = 10
        self.queue.hold("connected", APP, "x")
        self.queue.post("message", APP, "x", "12345")
        self.assertEqual(self.sink.events, [])
        self.queue.post("message", APP, "x", "678901")
        self.assertEqual(len(self.sink.events), 3)
        # Counted down as they go: a small one waits again.
        self.queue.hold("connected", APP, "y")
        self.queue.post("message", APP, "y", "12345")
        self.assertEqual(len(self.sink.events), 3)


class EventOrderMixin(ReviewTestsMixin):
    """
    A cluster whose nodes each post app C{demo}'s events to a receiver of
    their own, C{self.hooks[node]}.
    """

    def startCluster(self, nodes: int = 2, *arguments: str, tcp: bool = False) -> list[Daemon]:
        self.hooks: dict[Daemon, Receiver] = {}
        return super().startCluster(nodes, *arguments, tcp=tcp)

    def startNode(self, *arguments: str, url: str | None = None) -> Daemon:
        receiver = Receiver(self)
        environ = {f"{APP.upper()}_SOCKTOPUS_WEBHOOK": receiver.url}
        daemon = Daemon(self, "--redis", url or self.redis.url, *arguments, environ=environ)
        self.hooks[daemon] = receiver
        return daemon

    @inlineCallbacks
    def postedBy(self, node: Daemon, connectionId: str, marker: str):
        """
        Every event of C{connectionId} that C{node} posted, once a connect
        of C{marker} made on it now has arrived (so everything before it
        has).
        """
        client = yield node.connect(marker)
        receiver = self.hooks[node]
        yield receiver.waitFor(marker, 1)
        client.sendClose()
        return receiver.of(connectionId)

    def fake(self, node: Daemon, connectionId: str) -> FakeConnection:
        """
        A connection registered on C{node}, without a socket: the test
        ends it, or an eviction does at once.
        """
        connection = FakeConnection(node.registry, APP, connectionId, closesAtOnce=True)
        node.registry.register(connection)
        return connection


class MovedIdTests(EventOrderMixin, TestCase):
    """
    An id that connects on another node while its old connection is live:
    the node that takes it posts the old connection's disconnect, before
    its own connect; the old node posts nothing for it.
    """

    @inlineCallbacks
    def test_theNodeThatTakesTheIdPostsTheOldDisconnect(self):
        a, b = self.startCluster(2)
        old = yield a.connect("x")
        yield self.settled(a, b)
        yield b.connect("x")
        yield old.closed
        self.assertIn("CLOSE", old.received)
        self.assertEqual(
            (yield self.hooks[b].waitFor("x", 2)), [("disconnect", "replaced"), ("connect",)]
        )
        self.assertEqual((yield self.postedBy(a, "x", "marker-a")), [("connect",)])

    @inlineCallbacks
    def test_sameNodeReplaceIsOrdered(self):
        """
        On one node the old connection's disconnect comes first too, once.
        """
        a, b = self.startCluster(2)
        old = yield a.connect("x")
        yield self.settled(a, b)
        yield a.connect("x")
        yield old.closed
        self.assertEqual(
            (yield self.postedBy(a, "x", "marker-a")),
            [("connect",), ("disconnect", "replaced"), ("connect",)],
        )
        self.assertEqual((yield self.postedBy(b, "x", "marker-b")), [])

    @inlineCallbacks
    def test_endingWhileTakenIsPostedOnce(self):
        """
        The old connection ends by itself on A just after B took its id,
        before A heard of it: A's disconnect (its client's) is not posted,
        as B posted it (as replaced), and the late word of it changes
        nothing.
        """
        a, b = self.startCluster(2)
        old = self.fake(a, "x")
        yield self.settled(a, b)
        late = []
        replaced = a.registry._replaced
        self.patch(a.registry, "_replaced", lambda *args: late.append(args))
        self.fake(b, "x")
        yield b.registry.sync()
        a.registry.unregister(old, CLIENT)
        yield a.registry.sync()
        yield self.eventually(lambda: late, "A was told B took x")
        self.assertEqual(late[0][:2], (APP, "x"))
        replaced(*late[0])
        self.assertEqual(old.evictions, 0)
        self.assertEqual(
            (yield self.hooks[b].waitFor("x", 2)), [("disconnect", "replaced"), ("connect",)]
        )
        self.assertEqual((yield self.postedBy(a, "x", "marker-a")), [("connect",)])

    @inlineCallbacks
    def test_endingJustBeforeTheNewConnectIsPostedOnceByItsNode(self):
        """
        An old connection that ended (in Redis) before the new one claimed
        its id was not replaced: its own node posts its disconnect.
        """
        a, b = self.startCluster(2)
        old = self.fake(a, "x")
        yield self.settled(a, b)
        a.registry.unregister(old, CLIENT)
        yield a.registry.sync()
        self.fake(b, "x")
        yield b.registry.sync()
        self.assertEqual(
            (yield self.postedBy(a, "x", "marker-a")), [("connect",), ("disconnect", "client")]
        )
        self.assertEqual((yield self.postedBy(b, "x", "marker-b")), [("connect",)])

    @inlineCallbacks
    def test_takenFromANodeThoughtDeadIsPostedByThatNode(self):
        """
        A node that Redis counts as dead is not asked to stand aside (if
        it is dead, nobody posts its connections' ends): the new connect
        comes alone, and the old node, if it is there after all and hears
        of it, posts its connection's disconnect itself.
        """
        a, b = self.startCluster(2)
        old = yield a.connect("x")
        yield self.settled(a, b)
        for node in (a, b):
            node.registry._beat.stop()
        # No heartbeat in flight (it would take A's entries away).
        yield gatherResults([node.registry.link.ping() for node in (a, b)])
        self.redis.command("ZADD", "socktopus:nodes", "0", a.registry.node)
        self.fake(b, "x")
        yield b.registry.sync()
        yield old.closed
        self.assertEqual((yield self.postedBy(b, "x", "marker-b")), [("connect",)])
        self.assertEqual(
            (yield self.hooks[a].waitFor("x", 2)), [("connect",), ("disconnect", "replaced")]
        )


class RestoredIdTests(EventOrderMixin, TestCase):
    """
    Ids that moved while a node was cut off from Redis: each replaced
    connection's disconnect is posted exactly once, after its own events.
    """

    @inlineCallbacks
    def test_takenFromACutOffNodeIsPostedByTheTaker(self):
        """
        B holds x and is cut off; x reconnects to A while B still counts as
        live. A posts B's connection's disconnect before its connect; once
        B is back its restore closes the old connection and posts nothing.
        """
        (a,) = self.startCluster(1, tcp=True)
        b = self.startNode(url=self.redis.tcpUrl)
        old = yield b.connect("x")
        yield self.settled(a, b)
        before = self.claims.counts[b.registry.node]

        self.cut()
        yield self.eventually(lambda: not b.registry.link.up, "B noticed it is cut off")
        yield a.connect("x")
        yield a.registry.sync()
        self.assertEqual(
            (yield self.hooks[a].waitFor("x", 2)), [("disconnect", "replaced"), ("connect",)]
        )
        self.heal()
        yield self.restored(b, before)
        yield old.closed
        self.assertIn("CLOSE", old.received)
        yield self.settled(a, b)
        self.assertEqual((yield self.postedBy(b, "x", "marker-b")), [("connect",)])

    @inlineCallbacks
    def test_takenFromACutOffNodeStaysClosedThoughTheNewOneLeft(self):
        """
        As above, but the new connection has ended too by the time B is
        back: the id is free, yet B's old connection, whose disconnect A
        posted, must not live on.
        """
        (a,) = self.startCluster(1, tcp=True)
        b = self.startNode(url=self.redis.tcpUrl)
        old = yield b.connect("x")
        yield self.settled(a, b)
        before = self.claims.counts[b.registry.node]

        self.cut()
        yield self.eventually(lambda: not b.registry.link.up, "B noticed it is cut off")
        new = yield a.connect("x")
        yield a.registry.sync()
        new.sendClose()
        yield new.closed
        self.assertEqual(
            (yield self.hooks[a].waitFor("x", 3)),
            [("disconnect", "replaced"), ("connect",), ("disconnect", "client")],
        )
        self.heal()
        yield self.restored(b, before)
        yield old.closed
        self.assertIn("CLOSE", old.received)
        yield self.settled(a, b)
        self.assertEqual((yield self.postedBy(b, "x", "marker-b")), [("connect",)])
        connected, _ = yield a.registry.presence(APP, ["x"])
        self.assertEqual(connected, [])

    @inlineCallbacks
    def test_madeWhileCutOffReplacesOnRestoreOnce(self):
        """
        B is cut off and x reconnects to it: both connects are posted
        before anyone can tell. Once B is back it takes the id; A closes
        the old connection and posts its disconnect, once, after its own
        events (the restore cannot move it before B's connect, long posted).
        """
        (a,) = self.startCluster(1, tcp=True)
        b = self.startNode(url=self.redis.tcpUrl)
        old = yield a.connect("x")
        yield self.settled(a, b)
        before = self.claims.counts[b.registry.node]

        self.cut()
        yield self.eventually(lambda: not b.registry.link.up, "B noticed it is cut off")
        new = yield b.connect("x")
        self.heal()
        yield self.restored(b, before)
        yield old.closed
        yield self.settled(a, b)
        self.assertFalse(new.closed.called, f"the new connection was closed: {new.received}")
        self.assertEqual(
            (yield self.postedBy(a, "x", "marker-a")), [("connect",), ("disconnect", "replaced")]
        )
        self.assertEqual((yield self.postedBy(b, "x", "marker-b")), [("connect",)])


class FrozenRedisTests(EventOrderMixin, TestCase):
    @inlineCallbacks
    def test_eventsWaitingForAFrozenRedisArePostedWithinItsDeadline(self):
        """
        A connect waiting for Redis, which stopped answering, is posted
        once the step's deadline has passed, with what came after it.
        """
        a, b = self.startCluster(2)
        yield self.settled(a, b)
        self.redis.freeze()
        self.addCleanup(self.redis.thaw)
        started = time.monotonic()
        client = yield a.connect("x")
        client.sendText("DATA:after")
        self.assertEqual(
            (yield self.hooks[a].waitFor("x", 2)), [("connect",), ("message", "after")]
        )
        elapsed = time.monotonic() - started
        self.redis.thaw()
        self.assertLessEqual(elapsed, DEADLINE + 1, f"posted after {elapsed:.3f} s")
