"""
Tests for L{socktopus_tw.relay.registry}: who is connected, idle closes,
kicks and shutdown, driven by L{Clock} and fake connections.
"""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from socktopus_tw.relay.events import IEventSink
from socktopus_tw.relay.registry import IRelayConnection, LocalRegistry
from tests.support.fakes import FakeConnection

START = 1700000000.0
IDLE = 20.0
LIFESPAN = 5.0


class RegistryTestCase(SynchronousTestCase):
    """
    A registry on a L{Clock} that starts at a realistic Unix time.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(START)
        self.registry = LocalRegistry(self.clock, idleTimeout=IDLE, tokenLifespan=LIFESPAN)

    def start(self) -> None:
        """
        Start the registry's sweeps; stop them when the test ends.
        """
        self.registry.startService()
        self.addCleanup(self.stopIfRunning)

    def stopIfRunning(self) -> None:
        if self.registry.running:
            self.registry.stopService()

    def connect(self, app: str = "demo", connectionId: str = "c1", **kw: bool) -> FakeConnection:
        """
        Register a new fake connection and return it.
        """
        connection = FakeConnection(self.registry, app, connectionId, **kw)
        self.registry.register(connection)
        return connection


class FakeConnectionTests(SynchronousTestCase):
    """
    The fake keeps to the interface the WebSocket layer implements.
    """

    def test_providesInterface(self) -> None:
        """
        The registry tests would exercise a double that real connections do not match.
        """
        registry = LocalRegistry(Clock())
        verifyObject(IRelayConnection, FakeConnection(registry, "demo", "c1"))


class RegisterTests(RegistryTestCase):
    """
    Registering, delivering and counting.
    """

    def test_registerThenDeliver(self) -> None:
        """
        A message sent to a connected client never reaches it.
        """
        connection = self.connect()
        self.assertIs(self.registry.connection("demo", "c1"), connection)
        self.assertTrue(self.registry.deliver("demo", "c1", b"DATA:hello"))
        self.assertTrue(self.registry.deliver("demo", "c1", b"DATA:again"))
        self.assertEqual(connection.delivered, [b"DATA:hello", b"DATA:again"])

    def test_deliverUnknownConnection(self) -> None:
        """
        A message to a client that is not connected is reported as sent.
        """
        self.connect()
        self.assertFalse(self.registry.deliver("demo", "nobody", b"DATA:x"))
        self.assertFalse(self.registry.deliver("nosuchapp", "c1", b"DATA:x"))

    def test_deliverRefused(self) -> None:
        """
        A message a closing or overloaded client could not take is reported as sent.
        """
        connection = self.connect(accepts=False)
        self.assertFalse(self.registry.deliver("demo", "c1", b"DATA:x"))
        self.assertEqual(connection.delivered, [])

    def test_sameIdInTwoApps(self) -> None:
        """
        Two apps that pick the same connection id get each other's messages.
        """
        demo = self.connect("demo", "c1")
        other = self.connect("other", "c1")
        self.assertTrue(self.registry.deliver("other", "c1", b"DATA:o"))
        self.assertEqual(demo.delivered, [])
        self.assertEqual(other.delivered, [b"DATA:o"])
        self.assertEqual(demo.evictions + other.evictions, 0)

    def test_counts(self) -> None:
        """
        The home page shows wrong numbers of connected clients.
        """
        self.assertEqual(self.registry.count(), 0)
        self.assertEqual(self.registry.counts(), {})
        self.connect("demo", "a")
        self.connect("demo", "b")
        third = self.connect("other", "a")
        self.assertEqual(self.registry.count(), 3)
        self.assertEqual(self.registry.count("demo"), 2)
        self.assertEqual(self.registry.count("other"), 1)
        self.assertEqual(self.registry.count("nosuchapp"), 0)
        self.assertEqual(self.registry.counts(), {"demo": 2, "other": 1})
        self.registry.unregister(third)
        self.assertEqual(self.registry.count(), 2)
        self.assertEqual(self.registry.counts(), {"demo": 2})

    def test_unregister(self) -> None:
        """
        A client that disconnected still counts as connected and gets messages.
        """
        connection = self.connect()
        self.registry.unregister(connection)
        self.assertIsNone(self.registry.connection("demo", "c1"))
        self.assertFalse(self.registry.deliver("demo", "c1", b"DATA:x"))
        self.assertEqual(self.registry.count(), 0)
        self.assertEqual(connection.delivered, [])

    def test_unregisterUnknown(self) -> None:
        """
        A connection that closes before it was registered crashes the registry.
        """
        live = self.connect("demo", "c1")
        self.registry.unregister(FakeConnection(self.registry, "demo", "c2"))
        self.registry.unregister(FakeConnection(self.registry, "nosuchapp", "c1"))
        self.assertIs(self.registry.connection("demo", "c1"), live)
        self.assertEqual(self.registry.count(), 1)

    def test_unregisterImpostorWithSameId(self) -> None:
        """
        A different object closing under a live connection's id disconnects that client.
        """
        live = self.connect("demo", "c1")
        self.registry.unregister(FakeConnection(self.registry, "demo", "c1"))
        self.assertIs(self.registry.connection("demo", "c1"), live)

    def test_unregisterTwice(self) -> None:
        """
        A close reported twice by the protocol crashes the registry.
        """
        connection = self.connect()
        self.registry.unregister(connection)
        self.registry.unregister(connection)
        self.assertEqual(self.registry.count(), 0)


class ReplaceTests(RegistryTestCase):
    """
    A new connection with a live connection's app and id replaces it.
    """

    def test_oldEvicted(self) -> None:
        """
        Two browser tabs with the same id both stay connected.
        """
        old = self.connect()
        new = self.connect()
        self.assertEqual(old.evictions, 1)
        self.assertEqual(new.evictions, 0)
        self.assertIs(self.registry.connection("demo", "c1"), new)
        self.assertEqual(self.registry.count(), 1)

    def test_messagesGoToNew(self) -> None:
        """
        After a reconnect, messages still go to the old, closing connection.
        """
        old = self.connect()
        new = self.connect()
        self.assertTrue(self.registry.deliver("demo", "c1", b"DATA:x"))
        self.assertEqual(new.delivered, [b"DATA:x"])
        self.assertEqual(old.delivered, [])

    def test_oldUnregistersAtOnce(self) -> None:
        """
        A reconnect whose old connection closes synchronously leaves nobody connected.
        """
        old = self.connect(closesAtOnce=True)
        new = self.connect(closesAtOnce=True)
        self.assertEqual(old.evictions, 1)
        self.assertIs(self.registry.connection("demo", "c1"), new)
        self.assertEqual(self.registry.count(), 1)

    def test_oldUnregistersLate(self) -> None:
        """
        The old connection's late close drops the new one (the Go original's bug).
        """
        old = self.connect()
        new = self.connect()
        old.finishClose()
        self.assertIs(self.registry.connection("demo", "c1"), new)
        self.assertEqual(self.registry.count(), 1)
        self.assertTrue(self.registry.deliver("demo", "c1", b"DATA:x"))
        self.assertEqual(new.delivered, [b"DATA:x"])
        self.assertEqual(new.evictions, 0)

    def test_replacedTwice(self) -> None:
        """
        Rapid reconnects leave a stale connection registered or evict the newest.
        """
        first = self.connect()
        second = self.connect()
        third = self.connect()
        second.finishClose()
        first.finishClose()
        self.assertEqual((first.evictions, second.evictions, third.evictions), (1, 1, 0))
        self.assertIs(self.registry.connection("demo", "c1"), third)
        self.assertEqual(self.registry.count(), 1)

    def test_replacedIsNotIdleClosedLater(self) -> None:
        """
        The new connection is closed as idle on behalf of the replaced one.
        """
        self.start()
        old = self.connect()
        self.clock.advance(IDLE - 1)
        new = self.connect()
        self.clock.advance(2)
        self.assertEqual(new.evictions, 0)
        self.assertEqual(new.keepalives, 0)
        self.assertEqual(old.keepalives, 1)


class IdleTests(RegistryTestCase):
    """
    Silent connections are pinged after half the idle timeout and closed after all of it.
    """

    def advanceTo(self, offset: float) -> None:
        """
        Move the clock to C{offset} seconds after the start of the test.
        """
        self.clock.advance(START + offset - self.clock.seconds())

    def test_pingedAfterHalf(self) -> None:
        """
        A quiet but live client is never pinged, so dead peers go unnoticed.
        """
        self.start()
        connection = self.connect()
        self.advanceTo(IDLE / 2 - 1)
        self.assertEqual(connection.keepalives, 0)
        self.advanceTo(IDLE / 2 + self.registry.sweepInterval)
        self.assertEqual(connection.keepalives, 1)
        self.assertEqual(connection.evictions, 0)

    def test_pingedOnce(self) -> None:
        """
        A quiet client is flooded with a ping every sweep.
        """
        self.start()
        connection = self.connect()
        self.advanceTo(IDLE - 1)
        self.assertEqual(connection.keepalives, 1)
        self.assertEqual(connection.evictions, 0)

    def test_evictedAfterTimeout(self) -> None:
        """
        A client that sends nothing for the idle timeout stays connected forever.
        """
        self.start()
        connection = self.connect()
        self.advanceTo(IDLE - 1)
        self.assertEqual(connection.evictions, 0)
        self.advanceTo(IDLE + self.registry.sweepInterval)
        self.assertEqual(connection.evictions, 1)
        self.assertIsNone(self.registry.connection("demo", "c1"))
        self.assertFalse(self.registry.deliver("demo", "c1", b"DATA:x"))

    def test_evictedOnce(self) -> None:
        """
        An idle client whose close is slow is sent CLOSE again every sweep.
        """
        self.start()
        connection = self.connect()
        self.advanceTo(IDLE * 3)
        self.assertEqual(connection.evictions, 1)

    def test_evictedClosingAtOnce(self) -> None:
        """
        An idle client whose close finishes synchronously breaks the sweep.
        """
        self.start()
        connections = [self.connect("demo", f"c{i}", closesAtOnce=True) for i in range(3)]
        self.advanceTo(IDLE + self.registry.sweepInterval)
        self.assertEqual([c.evictions for c in connections], [1, 1, 1])
        self.assertEqual(self.registry.count(), 0)

    def test_activityResetsPing(self) -> None:
        """
        A client that keeps talking is pinged anyway.
        """
        self.start()
        connection = self.connect()
        for offset in range(5, 60, 5):
            self.advanceTo(offset)
            self.registry.activity(connection)
        self.assertEqual(connection.keepalives, 0)
        self.assertEqual(connection.evictions, 0)

    def test_activityResetsEviction(self) -> None:
        """
        A client that answered the ping is still closed as idle.
        """
        self.start()
        connection = self.connect()
        self.advanceTo(IDLE / 2 + 1)
        self.assertEqual(connection.keepalives, 1)
        self.registry.activity(connection)
        self.advanceTo(IDLE + 1)
        self.assertEqual(connection.evictions, 0)
        self.assertIs(self.registry.connection("demo", "c1"), connection)

    def test_pingedAgainAfterActivity(self) -> None:
        """
        A client that was active once is never pinged again when it goes quiet.
        """
        self.start()
        connection = self.connect()
        self.advanceTo(IDLE / 2 + 1)
        self.registry.activity(connection)
        self.advanceTo(IDLE + 3)
        self.assertEqual(connection.keepalives, 2)
        self.advanceTo(IDLE / 2 + 1 + IDLE + 1)
        self.assertEqual(connection.evictions, 1)

    def test_onlyIdleOnesEvicted(self) -> None:
        """
        One silent client gets its busy neighbours closed too.
        """
        self.start()
        quiet = self.connect("demo", "quiet")
        busy = self.connect("demo", "busy")
        other = self.connect("other", "busy")
        for offset in range(2, 40, 2):
            self.advanceTo(offset)
            self.registry.activity(busy)
            self.registry.activity(other)
        self.assertEqual(quiet.evictions, 1)
        self.assertEqual((busy.evictions, other.evictions), (0, 0))
        self.assertEqual((busy.keepalives, other.keepalives), (0, 0))
        self.assertEqual(self.registry.counts(), {"demo": 1, "other": 1})

    def test_activityOfUnknownConnection(self) -> None:
        """
        Late frames from a connection already closed crash the registry or revive it.
        """
        self.start()
        connection = self.connect()
        self.registry.unregister(connection)
        self.registry.activity(connection)
        self.assertEqual(self.registry.count(), 0)
        self.advanceTo(IDLE * 2)
        self.assertEqual((connection.keepalives, connection.evictions), (0, 0))

    def test_configuredTimeout(self) -> None:
        """
        A configured idle timeout is ignored.
        """
        self.registry.idleTimeout = 4.0
        self.start()
        connection = self.connect()
        self.advanceTo(3)
        self.assertEqual((connection.keepalives, connection.evictions), (1, 0))
        self.advanceTo(5)
        self.assertEqual(connection.evictions, 1)


class KickTests(RegistryTestCase):
    """
    Kicks close connections and refuse their old tokens.
    """

    def nowMilliseconds(self) -> int:
        return int(self.clock.seconds() * 1000)

    def test_kickResult(self) -> None:
        """
        /kick reports the wrong ids as kicked or not connected.
        """
        self.connect("demo", "a")
        self.connect("demo", "b")
        result = self.registry.kick("demo", ["a", "nobody", "b"])
        self.assertEqual(result, (["a", "b"], ["nobody"]))

    def test_kickEvicts(self) -> None:
        """
        A kicked client stays connected.
        """
        kicked = self.connect("demo", "a")
        spared = self.connect("demo", "b")
        self.registry.kick("demo", ["a"])
        self.assertEqual((kicked.evictions, spared.evictions), (1, 0))
        self.assertIsNone(self.registry.connection("demo", "a"))
        self.assertFalse(self.registry.deliver("demo", "a", b"DATA:x"))
        self.assertIs(self.registry.connection("demo", "b"), spared)

    def test_kickEvictsClosingAtOnce(self) -> None:
        """
        Kicking a client whose close completes at once breaks the kick.
        """
        connection = self.connect("demo", "a", closesAtOnce=True)
        self.assertEqual(self.registry.kick("demo", ["a"]), (["a"], []))
        self.assertEqual(connection.evictions, 1)
        self.assertEqual(self.registry.count(), 0)

    def test_kickOtherApp(self) -> None:
        """
        Kicking an id in one app closes the same id of another app.
        """
        other = self.connect("other", "a")
        self.assertEqual(self.registry.kick("demo", ["a"]), ([], ["a"]))
        self.assertEqual(other.evictions, 0)
        self.assertFalse(self.registry.isKicked("other", "a", self.nowMilliseconds()))

    def test_kickNothing(self) -> None:
        """
        An empty kick crashes.
        """
        self.assertEqual(self.registry.kick("demo", []), ([], []))

    def test_isKickedAtOrBefore(self) -> None:
        """
        A kicked client reconnects with the token it already had.
        """
        self.clock.advance(0.5)
        kickedAt = self.nowMilliseconds()
        self.assertEqual(kickedAt, 1700000000500)
        self.registry.kick("demo", ["a"])
        self.assertTrue(self.registry.isKicked("demo", "a", kickedAt))
        self.assertTrue(self.registry.isKicked("demo", "a", kickedAt - 1))
        self.assertTrue(self.registry.isKicked("demo", "a", kickedAt - 4999))

    def test_notKickedAfter(self) -> None:
        """
        A kicked client cannot come back even with a token made after the kick.
        """
        self.clock.advance(0.5)
        kickedAt = self.nowMilliseconds()
        self.registry.kick("demo", ["a"])
        self.assertFalse(self.registry.isKicked("demo", "a", kickedAt + 1))
        self.assertFalse(self.registry.isKicked("demo", "b", kickedAt))
        self.assertFalse(self.registry.isKicked("other", "a", kickedAt))

    def test_notConnectedIsStillDenied(self) -> None:
        """
        Kicking a client that is between connections lets it connect with its old token.
        """
        kickedAt = self.nowMilliseconds()
        self.assertEqual(self.registry.kick("demo", ["a"]), ([], ["a"]))
        self.assertTrue(self.registry.isKicked("demo", "a", kickedAt))

    def test_kickAgainMovesTheLine(self) -> None:
        """
        A second kick does not refuse tokens issued between the two kicks.
        """
        self.start()
        self.registry.kick("demo", ["a"])
        self.clock.advance(2)
        second = self.nowMilliseconds()
        self.registry.kick("demo", ["a"])
        self.assertTrue(self.registry.isKicked("demo", "a", second - 1000))
        self.clock.advance(LIFESPAN)
        self.assertTrue(self.registry.isKicked("demo", "a", second))

    def test_denyEntryKeptForLifespan(self) -> None:
        """
        A kicked client gets back in with its old token before that token expires.
        """
        self.start()
        kickedAt = self.nowMilliseconds()
        self.registry.kick("demo", ["a"])
        # At exactly the lifespan a token stamped at the kick still passes its
        # age check, so the deny entry must still be there.
        self.clock.advance(LIFESPAN)
        self.assertTrue(self.registry.isKicked("demo", "a", kickedAt))

    def test_denyEntryForgotten(self) -> None:
        """
        The deny-list grows without bound: kicks are never forgotten.
        """
        self.start()
        kickedAt = self.nowMilliseconds()
        self.registry.kick("demo", ["a", "b"])
        self.clock.advance(1)
        later = self.nowMilliseconds()
        self.registry.kick("demo", ["c"])
        # One sweep after the first kick's lifespan is over.
        self.clock.advance(LIFESPAN)
        self.assertFalse(self.registry.isKicked("demo", "a", kickedAt))
        self.assertFalse(self.registry.isKicked("demo", "b", kickedAt))
        # The later kick lives its own lifespan.
        self.assertTrue(self.registry.isKicked("demo", "c", later))
        self.clock.advance(1)
        self.assertFalse(self.registry.isKicked("demo", "c", later))


class ShutdownTests(RegistryTestCase):
    """
    Stopping the registry closes every client and waits for the closes.
    """

    def test_stopEvictsEveryone(self) -> None:
        """
        Clients are not sent CLOSE when the daemon stops.
        """
        self.start()
        connections = [
            self.connect("demo", "a"),
            self.connect("demo", "b"),
            self.connect("other", "a"),
        ]
        self.registry.stopService()
        self.assertEqual([c.evictions for c in connections], [1, 1, 1])
        self.assertEqual(self.registry.count(), 0)

    def test_stopWaitsForCloses(self) -> None:
        """
        The daemon exits before its clients have received CLOSE.
        """
        self.start()
        a = self.connect("demo", "a")
        b = self.connect("other", "b")
        d = self.registry.stopService()
        self.assertNoResult(d)
        a.finishClose()
        self.assertNoResult(d)
        b.finishClose()
        self.assertIsNone(self.successResultOf(d))

    def test_stopWithCloseAtOnce(self) -> None:
        """
        Shutdown hangs when every client closes synchronously.
        """
        self.start()
        self.connect("demo", "a", closesAtOnce=True)
        self.connect("demo", "b", closesAtOnce=True)
        self.assertIsNone(self.successResultOf(self.registry.stopService()))

    def test_stopEmpty(self) -> None:
        """
        Stopping a daemon with no clients hangs.
        """
        self.start()
        self.assertIsNone(self.successResultOf(self.registry.stopService()))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_stopWaitsForReplacedConnections(self) -> None:
        """
        The daemon exits while a replaced client is still being closed.
        """
        self.start()
        old = self.connect()
        new = self.connect()
        d = self.registry.stopService()
        new.finishClose()
        self.assertNoResult(d)
        old.finishClose()
        self.successResultOf(d)

    def test_stopTimesOut(self) -> None:
        """
        One client that never finishes closing keeps the daemon from exiting.
        """
        self.start()
        stuck = self.connect("demo", "stuck")
        polite = self.connect("demo", "polite")
        d = self.registry.stopService()
        polite.finishClose()
        self.clock.advance(self.registry.shutdownTimeout - 0.1)
        self.assertNoResult(d)
        self.clock.advance(0.1)
        # It fires (with no failure): what it fires with does not matter to
        # MultiService, which only waits for it.
        self.successResultOf(d)
        self.assertEqual(stuck.evictions, 1)

    def test_lateCloseAfterTimeout(self) -> None:
        """
        A client that finishes closing after the shutdown timeout raises an error.
        """
        self.start()
        stuck = self.connect("demo", "stuck")
        d = self.registry.stopService()
        self.clock.advance(self.registry.shutdownTimeout)
        self.successResultOf(d)
        stuck.finishClose()
        self.assertEqual(self.registry.count(), 0)

    def test_stopsSweeping(self) -> None:
        """
        A stopped registry keeps timers running, so the reactor never goes quiet.
        """
        self.start()
        self.registry.stopService()
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_registerWhileStopping(self) -> None:
        """
        A client that connects during shutdown is kept open and delays the exit.
        """
        self.start()
        d = self.registry.stopService()
        late = self.connect("demo", "late")
        self.assertEqual(late.evictions, 1)
        self.assertIsNone(self.registry.connection("demo", "late"))
        self.assertEqual(self.registry.count(), 0)
        self.assertFalse(self.registry.deliver("demo", "late", b"DATA:x"))
        late.finishClose()
        self.successResultOf(d)

    def test_registerWhileStoppingClosesAtOnce(self) -> None:
        """
        A client that connects during shutdown and closes synchronously breaks shutdown.
        """
        self.start()
        a = self.connect("demo", "a")
        d = self.registry.stopService()
        self.connect("demo", "late", closesAtOnce=True)
        self.assertNoResult(d)
        a.finishClose()
        self.successResultOf(d)

    def test_restart(self) -> None:
        """
        A registry started again after a stop refuses every connection.
        """
        self.start()
        self.successResultOf(self.registry.stopService())
        self.registry.startService()
        connection = self.connect()
        self.assertEqual(connection.evictions, 0)
        self.assertIs(self.registry.connection("demo", "c1"), connection)


@implementer(IEventSink)
class RecordingSink:
    """
    Keeps every event, as (type, app, id, detail).
    """

    def __init__(self, apps: tuple[str, ...] = ("demo",)) -> None:
        self.apps = apps
        self.events: list[tuple[str, ...]] = []

    def wants(self, app: str) -> bool:
        return app in self.apps

    def connected(self, app: str, connectionId: str) -> None:
        self.events.append(("connect", app, connectionId))

    def message(self, app: str, connectionId: str, content: str) -> None:
        self.events.append(("message", app, connectionId, content))

    def disconnected(self, app: str, connectionId: str, reason: str) -> None:
        self.events.append(("disconnect", app, connectionId, reason))


class EventTests(RegistryTestCase):
    """
    Events are born here, with the reason for every ending the registry
    causes; one the connection reports is taken as given.
    """

    def setUp(self) -> None:
        super().setUp()
        self.sink = RecordingSink()
        verifyObject(IEventSink, self.sink)
        self.registry.events = self.sink

    def test_connectMessageAndClientClose(self) -> None:
        connection = self.connect()
        self.assertTrue(self.registry.acceptsMessages("demo"))
        self.assertFalse(self.registry.acceptsMessages("other"))
        self.registry.message(connection, "hi")
        self.registry.unregister(connection, "client")
        self.assertEqual(
            self.sink.events,
            [
                ("connect", "demo", "c1"),
                ("message", "demo", "c1", "hi"),
                ("disconnect", "demo", "c1", "client"),
            ],
        )

    def test_reasonTheConnectionGives(self) -> None:
        connection = self.connect()
        self.registry.unregister(connection, "buffer")
        self.assertEqual(self.sink.events[-1], ("disconnect", "demo", "c1", "buffer"))

    def test_kickIsToldOnceEvenWhenTheCloseFinishesLater(self) -> None:
        connection = self.connect()
        self.registry.kick("demo", ["c1"])
        self.assertEqual(self.sink.events[-1], ("disconnect", "demo", "c1", "kick"))
        # The close handshake ends later; the connection says "client".
        self.registry.unregister(connection, "client")
        self.assertEqual(len(self.sink.events), 2)

    def test_replaced(self) -> None:
        self.connect()
        self.connect()
        self.assertEqual(
            self.sink.events,
            [
                ("connect", "demo", "c1"),
                ("disconnect", "demo", "c1", "replaced"),
                ("connect", "demo", "c1"),
            ],
        )

    def test_idle(self) -> None:
        self.start()
        self.connect()
        self.clock.advance(IDLE + 1)
        self.assertEqual(self.sink.events[-1], ("disconnect", "demo", "c1", "idle"))

    def test_shutdown(self) -> None:
        self.start()
        self.connect(connectionId="a")
        self.connect(connectionId="b")
        self.registry.stopService()
        self.assertEqual(
            sorted(e for e in self.sink.events if e[0] == "disconnect"),
            [("disconnect", "demo", "a", "shutdown"), ("disconnect", "demo", "b", "shutdown")],
        )

    def test_messageOfAConnectionGoneIsDropped(self) -> None:
        connection = self.connect()
        self.registry.unregister(connection)
        self.registry.message(connection, "late")
        self.assertNotIn("message", [e[0] for e in self.sink.events])

    def test_withoutASinkNoAppAcceptsMessages(self) -> None:
        self.registry.events = None
        self.assertFalse(self.registry.acceptsMessages("demo"))

    def test_leavingWhileClosingIsToldOnceAndShutdownWaitsForIt(self) -> None:
        """
        A connection that ends for its own reason leaves at once (a kick
        meanwhile finds nobody), and shutdown still waits for its close.
        """
        self.start()
        connection = self.connect()
        self.registry.unregister(connection, "error", closing=True)
        self.assertEqual(self.registry.kick("demo", ["c1"]), ([], ["c1"]))
        drained = self.registry.stopService()
        self.assertNoResult(drained)
        self.registry.unregister(connection)
        self.successResultOf(drained)
        self.assertEqual(
            [e for e in self.sink.events if e[0] == "disconnect"],
            [("disconnect", "demo", "c1", "error")],
        )
