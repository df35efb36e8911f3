"""
Protocol-depth tests of the relay's WebSocket layer: L{RelayProtocol} and
L{RelayFactory} talking to a real Autobahn client over in-memory transports
(L{twisted.test.iosim}). Time is a L{Clock}; Autobahn's own timers are put on
it too, so nothing waits. The last tests check, over a real socket to the
real daemon, that a client breaking the protocol is closed.
"""

from __future__ import annotations

import txaio
from autobahn.twisted.websocket import (
    WebSocketClientFactory,
    WebSocketClientProtocol,
    WebSocketServerProtocol,
)
from autobahn.websocket.compress import PerMessageDeflateOffer
from autobahn.websocket.protocol import WebSocketProtocol
from twisted.internet.address import IPv4Address
from twisted.internet.defer import inlineCallbacks
from twisted.internet.error import ConnectionAborted, ConnectionDone, ConnectionLost
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.test import iosim
from twisted.trial.unittest import SynchronousTestCase

from socktopus_tw.relay.registry import LocalRegistry
from socktopus_tw.relay.websocket import RelayFactory, RelayProtocol
from tests.support.relay import RelayApiTestCase

APP = "demo"

#: A fixed "now" for the clock, in seconds.
NOW = 1_700_000_000.0

OPEN = WebSocketProtocol.STATE_OPEN
CLOSED = WebSocketProtocol.STATE_CLOSED


class Peer(WebSocketClientProtocol):
    """
    A real Autobahn client that records what the server sends it.
    """

    def __init__(self) -> None:
        super().__init__()
        self.received: list[tuple[bytes, bool]] = []
        self.pings: list[bytes] = []
        self.pongs: list[bytes] = []
        self.closedWith: tuple[bool, int | None, str | None] | None = None

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.received.append((payload, isBinary))

    def onPing(self, payload: bytes) -> None:
        self.pings.append(payload)
        super().onPing(payload)

    def onPong(self, payload: bytes) -> None:
        self.pongs.append(payload)

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        self.closedWith = (wasClean, code, reason)


class RecordingTransport(iosim.FakeTransport):
    """
    iosim's transport treats an abort like a clean close; this one remembers
    which of the two the protocol asked for.
    """

    aborted = False

    def abortConnection(self) -> None:
        self.aborted = True
        super().abortConnection()


class Connection:
    """
    One server protocol wired to one client through an L{iosim.IOPump}.
    """

    def __init__(
        self,
        server: RelayProtocol,
        client: Peer,
        serverTransport: RecordingTransport,
        pump: iosim.IOPump,
    ) -> None:
        self.server = server
        self.client = client
        self.serverTransport = serverTransport
        self.pump = pump

    def flush(self) -> None:
        self.pump.flush()


class ProtocolTestCase(SynchronousTestCase):
    """
    A registry on a Clock, the real factory, and in-memory clients.
    """

    maxClientBuffer = 100

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(NOW)
        # Autobahn schedules its handshake timeouts through txaio's loop;
        # on the test's clock they neither leak into the reactor nor wait.
        self.patch(txaio.config, "loop", self.clock)
        self.registry = LocalRegistry(self.clock, idleTimeout=20.0, tokenLifespan=5.0)
        self.factory = RelayFactory(self.registry, maxClientBuffer=self.maxClientBuffer)

    def connect(
        self,
        connectionId: str = "c1",
        app: str = APP,
        offers: list | None = None,
        greet: bool = True,
    ) -> Connection:
        server = self.factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
        # What ReceiveResource sets from the admitted token.
        server.app = app
        server.connectionId = connectionId
        clientFactory = WebSocketClientFactory(
            "ws://127.0.0.1:8080/recieve?token=t", reactor=self.clock
        )
        clientFactory.protocol = Peer
        clientFactory.setProtocolOptions(
            autoPingInterval=0, perMessageCompressionOffers=offers or []
        )
        client = clientFactory.buildProtocol(None)
        serverTransport = RecordingTransport(server, isServer=True)
        clientTransport = iosim.FakeTransport(client, isServer=False)
        pump = iosim.connect(
            server, serverTransport, client, clientTransport, greet=greet, clock=self.clock
        )
        return Connection(server, client, serverTransport, pump)


class FrameTests(ProtocolTestCase):
    """
    What the server does with each kind of client frame.
    """

    def test_openRegistersConnection(self) -> None:
        """A client that completed the handshake cannot be sent anything."""
        c = self.connect("c1")
        self.assertEqual(c.server.state, OPEN)
        self.assertIs(self.registry.connection(APP, "c1"), c.server)
        self.assertEqual(self.registry.count(APP), 1)

    def test_pingIsAnsweredWithPong(self) -> None:
        """My client's PING goes unanswered and it thinks the server is dead."""
        c = self.connect()
        c.client.sendMessage(b"PING")
        c.flush()
        self.assertEqual(c.client.received, [(b"PONG", False)])
        self.assertEqual(c.server.state, OPEN)
        self.assertIsNone(c.client.closedWith)

    def test_closeFromClientCloses(self) -> None:
        """My client sends CLOSE and the connection stays open."""
        c = self.connect()
        c.client.sendMessage(b"CLOSE")
        c.flush()
        self.assertEqual(c.client.closedWith, (True, 1000, None))
        self.assertEqual(c.server.state, CLOSED)
        self.assertEqual(self.registry.count(), 0)

    def test_binaryFrameClosesWith1003(self) -> None:
        """A client sending binary data is kept instead of being closed as unsupported data."""
        c = self.connect()
        c.client.sendMessage(b"\x00\x01", isBinary=True)
        c.flush()
        self.assertIsNotNone(c.client.closedWith)
        wasClean, code, _ = c.client.closedWith
        self.assertEqual((wasClean, code), (True, 1003))
        self.assertEqual(c.client.received, [])
        self.assertEqual(self.registry.count(), 0)

    def test_unknownTextCloses(self) -> None:
        """A client sending text other than PING or CLOSE stays connected."""
        for text in [b"HELLO", b"ping", b"PING ", b"", b"DATA:x"]:
            c = self.connect("c-" + text.decode())
            c.client.sendMessage(text)
            c.flush()
            self.assertIsNotNone(c.client.closedWith, text)
            wasClean, code, _ = c.client.closedWith
            self.assertEqual((wasClean, code), (True, 1003), text)
            self.assertEqual(c.client.received, [], text)
        self.assertEqual(self.registry.count(), 0)

    def test_oversizedClientFrameCloses(self) -> None:
        """A client can make the daemon buffer a huge frame when it only ever needs PING."""
        c = self.connect()
        c.client.sendMessage(b"P" * 2048)
        c.flush()
        # Autobahn fails the connection by dropping it; the code is its business.
        self.assertIsNotNone(c.client.closedWith)
        self.assertEqual(c.server.state, CLOSED)
        self.assertEqual(self.registry.count(), 0)

    def test_permessageDeflateIsRefused(self) -> None:
        """The daemon burns CPU compressing frames, or takes a zip bomb, by accepting deflate."""
        c = self.connect(offers=[PerMessageDeflateOffer()])
        self.assertEqual(c.server.state, OPEN)
        self.assertEqual(c.server.websocket_extensions_in_use, [])
        self.assertEqual(c.client.websocket_extensions_in_use, [])
        self.assertNotIn(b"permessage-deflate", b"".join(c.serverTransport.stream))
        # And the factory says so, whatever the offer.
        self.assertIsNone(self.factory.perMessageCompressionAccept([PerMessageDeflateOffer()]))
        # Messages still flow uncompressed.
        self.assertTrue(c.server.deliver(b"DATA:plain"))
        c.flush()
        self.assertEqual(c.client.received, [(b"DATA:plain", False)])


class ServerInitiatedTests(ProtocolTestCase):
    """
    The registry's calls into a connection: evict, keepalive, deliver.
    """

    def test_evictSendsCloseTextThenCloseFrame(self) -> None:
        """A kicked or replaced client is cut off without the CLOSE text it waits for."""
        c = self.connect()
        c.server.evict()
        c.flush()
        self.assertEqual(c.client.received, [(b"CLOSE", False)])
        self.assertEqual(c.client.closedWith, (True, 1000, None))
        self.assertEqual(c.server.state, CLOSED)

    def test_evictOfClosingConnectionAborts(self) -> None:
        """A connection that is already closing hangs around when the daemon evicts it."""
        c = self.connect()
        c.server.sendClose(1000)
        c.server.evict()
        self.assertTrue(c.serverTransport.aborted)

    def test_keepaliveSendsWebSocketPing(self) -> None:
        """A dead peer is never found because the server sends no pings."""
        c = self.connect()
        c.server.keepalive()
        c.flush()
        self.assertEqual(len(c.client.pings), 1)
        self.assertEqual(c.client.received, [])

    def test_keepaliveAfterCloseSendsNothing(self) -> None:
        """The daemon writes pings onto sockets that are already closed."""
        c = self.connect()
        c.client.sendClose(1000)
        c.flush()
        c.server.keepalive()
        c.flush()
        self.assertEqual(c.client.pings, [])

    def test_deliverSendsDataFrame(self) -> None:
        """A delivered message never reaches the client."""
        c = self.connect()
        self.assertTrue(c.server.deliver(b"DATA:one"))
        self.assertTrue(c.server.deliver("DATA:d\u00e9j\u00e0".encode()))
        c.flush()
        self.assertEqual(
            c.client.received,
            [(b"DATA:one", False), ("DATA:d\u00e9j\u00e0".encode(), False)],
        )

    def test_deliverLargestMessage(self) -> None:
        """A message at the size cap never reaches the client because it is bigger than a frame."""
        c = self.connect()
        payload = b"DATA:" + b"x" * (1024 * 1024)
        self.assertTrue(c.server.deliver(payload))
        c.flush()
        self.assertEqual(c.client.received, [(payload, False)])
        self.assertEqual(c.server.state, OPEN)

    def test_deliverAfterCloseReturnsFalse(self) -> None:
        """/send reports a message to a closed connection as succeeded."""
        c = self.connect()
        c.client.sendClose(1000)
        c.flush()
        self.assertEqual(c.server.state, CLOSED)
        self.assertFalse(c.server.deliver(b"DATA:late"))

    def test_deliverWhileClosingReturnsFalse(self) -> None:
        """/send reports a message to a connection that is closing as succeeded."""
        c = self.connect()
        c.server.sendClose(1000)
        self.assertFalse(c.server.deliver(b"DATA:late"))

    def test_deliverBeforeHandshakeReturnsFalse(self) -> None:
        """A message sent before the handshake ends is reported delivered but is lost."""
        c = self.connect(greet=False)
        self.assertNotEqual(c.server.state, OPEN)
        self.assertFalse(c.server.deliver(b"DATA:early"))


class ActivityTests(ProtocolTestCase):
    """
    Which client frames keep a connection from being closed as idle.
    """

    def assertStillOpen(self, c: Connection) -> None:
        c.flush()
        self.assertIsNone(c.client.closedWith)
        self.assertEqual(c.server.state, OPEN)
        self.assertIs(self.registry.connection(APP, c.server.connectionId), c.server)

    def test_silentClientIsClosedAfterIdleTimeout(self) -> None:
        """A dead client stays registered forever."""
        c = self.connect()
        self.clock.advance(20)
        self.registry.sweep()
        c.flush()
        self.assertEqual(c.client.received, [(b"CLOSE", False)])
        self.assertIsNotNone(c.client.closedWith)
        self.assertEqual(self.registry.count(), 0)

    def test_clientPingCountsAsActivity(self) -> None:
        """A client that sends only WebSocket pings is closed as idle."""
        c = self.connect()
        self.clock.advance(15)
        c.client.sendPing(b"hi")
        c.flush()
        self.assertEqual(c.client.pongs, [b"hi"])
        self.clock.advance(10)
        self.registry.sweep()
        self.assertStillOpen(c)

    def test_clientPongCountsAsActivity(self) -> None:
        """A client answering the server's pings is closed as idle anyway."""
        c = self.connect()
        self.clock.advance(15)
        c.client.sendPong(b"unsolicited")
        c.flush()
        self.clock.advance(10)
        self.registry.sweep()
        self.assertStillOpen(c)

    def test_keepalivePongKeepsConnection(self) -> None:
        """A quiet but live client is closed even though it answered the server's ping."""
        c = self.connect()
        self.clock.advance(10)
        self.registry.sweep()  # half the idle timeout: the registry pings
        c.flush()
        self.assertEqual(len(c.client.pings), 1)
        self.clock.advance(10)
        self.registry.sweep()
        self.assertStillOpen(c)

    def test_textPingCountsAsActivity(self) -> None:
        """A client that sends PING every few seconds is closed as idle."""
        c = self.connect()
        self.clock.advance(15)
        c.client.sendMessage(b"PING")
        c.flush()
        self.clock.advance(10)
        self.registry.sweep()
        self.assertStillOpen(c)


class SlowConsumerTests(ProtocolTestCase):
    """
    A client that stops reading is cut off past C{maxClientBuffer}.
    """

    def test_protocolIsTransportsStreamingProducer(self) -> None:
        """The daemon never learns that a client stopped reading."""
        c = self.connect()
        self.assertIs(c.serverTransport.producer, c.server)
        self.assertTrue(c.serverTransport.streamingProducer)

    def test_unpausedDeliveriesAreNeverCounted(self) -> None:
        """A fast client is cut off just for receiving a lot."""
        c = self.connect()
        for _ in range(5):
            self.assertTrue(c.server.deliver(b"x" * 80))
        self.assertFalse(c.serverTransport.aborted)
        c.flush()
        self.assertEqual(len(c.client.received), 5)

    def test_pausedUpToLimitIsKept(self) -> None:
        """A client is cut off before it has queued more than the buffer cap."""
        c = self.connect()
        c.serverTransport.producer.pauseProducing()
        self.assertTrue(c.server.deliver(b"x" * 60))
        self.assertTrue(c.server.deliver(b"x" * 40))
        self.assertFalse(c.serverTransport.aborted)
        self.assertEqual(c.server.state, OPEN)

    def test_pausedBeyondLimitAborts(self) -> None:
        """A client that stops reading grows the daemon's memory without bound."""
        c = self.connect()
        c.serverTransport.producer.pauseProducing()
        self.assertTrue(c.server.deliver(b"x" * 60))
        self.assertTrue(c.server.deliver(b"x" * 40))
        self.assertFalse(c.server.deliver(b"x"))
        self.assertTrue(c.serverTransport.aborted)
        # Everything after the cut fails too.
        self.assertFalse(c.server.deliver(b"y"))
        self.assertFalse(self.registry.deliver(APP, "c1", b"y"))
        c.flush()
        self.assertEqual(self.registry.count(), 0)

    def test_resumeResetsCount(self) -> None:
        """A client that reads again is still cut off for what it queued earlier."""
        c = self.connect()
        c.serverTransport.producer.pauseProducing()
        self.assertTrue(c.server.deliver(b"x" * 80))
        c.serverTransport.producer.resumeProducing()
        c.serverTransport.producer.pauseProducing()
        self.assertTrue(c.server.deliver(b"x" * 80))
        self.assertFalse(c.serverTransport.aborted)

    def test_slowClientDoesNotAffectOthers(self) -> None:
        """One client that stopped reading makes messages to other clients fail."""
        slow = self.connect("slow")
        fast = self.connect("fast")
        slow.serverTransport.producer.pauseProducing()
        self.assertTrue(self.registry.deliver(APP, "slow", b"x" * 100))
        self.assertFalse(self.registry.deliver(APP, "slow", b"x" * 100))
        self.assertTrue(self.registry.deliver(APP, "fast", b"x" * 100))
        self.assertTrue(self.registry.deliver(APP, "fast", b"x" * 100))
        fast.flush()
        self.assertEqual(len(fast.client.received), 2)
        self.assertFalse(fast.serverTransport.aborted)


class CloseTests(ProtocolTestCase):
    """
    onClose keeps the registry in step with the sockets.
    """

    def test_cleanCloseUnregisters(self) -> None:
        """A client that said goodbye still counts as connected."""
        c = self.connect()
        c.client.sendClose(1000)
        c.flush()
        self.assertIsNone(self.registry.connection(APP, "c1"))
        self.assertEqual(self.registry.count(), 0)

    def test_droppedConnectionUnregisters(self) -> None:
        """A client whose network vanished still counts as connected."""
        c = self.connect()
        c.client.transport.loseConnection()
        c.flush()
        self.assertIsNone(self.registry.connection(APP, "c1"))
        self.assertEqual(self.registry.counts(), {})

    def test_failedHandshakeNeverRegisters(self) -> None:
        """A socket that never finished the handshake shows up as connected."""
        c = self.connect(greet=False)
        c.client.transport.loseConnection()
        c.flush()
        self.assertEqual(self.registry.count(), 0)

    def test_replacedConnectionClosesWithoutDroppingSuccessor(self) -> None:
        """Reconnecting with the same id leaves the new connection unreachable."""
        old = self.connect("c1")
        new = self.connect("c1")
        old.flush()
        self.assertEqual(old.client.received, [(b"CLOSE", False)])
        self.assertIsNotNone(old.client.closedWith)
        self.assertIs(self.registry.connection(APP, "c1"), new.server)
        self.assertTrue(self.registry.deliver(APP, "c1", b"DATA:to-new"))
        new.flush()
        self.assertEqual(new.client.received, [(b"DATA:to-new", False)])

    def test_drainedAfterShutdownCloses(self) -> None:
        """Shutdown hangs waiting for connections that already closed."""
        self.registry.startService()
        c = self.connect()
        d = self.registry.stopService()
        c.flush()
        self.assertEqual(c.client.received, [(b"CLOSE", False)])
        self.successResultOf(d)


#: A client's opening handshake, and a masked PING frame (zero mask).
HANDSHAKE = (
    b"GET /recieve?token=t HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUpgrade: websocket\r\n"
    b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Sec-WebSocket-Version: 13\r\n\r\n"
)
MASKED_PING = b"\x81\x84\x00\x00\x00\x00PING"

#: What Autobahn keeps of the handshake it parses, which nothing reads once
#: the connection is open: a handshake answered from its key has none of it.
PARSED_ONLY = {
    "http_request_data",
    "http_status_line",
    "http_headers",
    "http_request_uri",
    "http_request_path",
    "http_request_params",
    "http_request_host",
    "http_response_data",
    "websocket_origin",
    "_wskey",
}


class OpeningTests(ProtocolTestCase):
    """
    L{RelayProtocol} sets a connection up as Autobahn does, without the
    debug formatting, and answers a handshake the fast path read (its
    C{handshakeKey}) as Autobahn answers it after parsing it.
    """

    def opened(self, connectionId: str, key: bytes | None) -> tuple[RelayProtocol, StringTransport]:
        protocol = self.factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
        protocol.app, protocol.connectionId = APP, connectionId
        protocol.handshakeKey = key
        transport = StringTransport()
        protocol.makeConnection(transport)
        if key is None:
            protocol.dataReceived(HANDSHAKE)
        return protocol, transport

    def assertSameState(self, ours: object, theirs: object, names: set[str]) -> None:
        for name in sorted(names):
            mine, autobahns = getattr(ours, name), getattr(theirs, name)
            self.assertIs(type(mine), type(autobahns), name)
            if isinstance(mine, (type(None), bool, int, float, str, bytes, list, tuple, dict)):
                self.assertEqual(mine, autobahns, name)

    def test_setUpAsAutobahns(self) -> None:
        """
        A connection made has every attribute Autobahn's own set-up gives
        it, with the same values (its timer apart, a timer of its own).
        """
        ours = self.factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
        ours.makeConnection(StringTransport())
        theirs = self.factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
        theirs._connectionMade = lambda: WebSocketServerProtocol._connectionMade(theirs)
        theirs.transport, theirs.connected = StringTransport(), 1  # as makeConnection does
        WebSocketServerProtocol.connectionMade(theirs)
        del theirs._connectionMade
        self.assertEqual(set(vars(ours)), set(vars(theirs)))
        self.assertEqual(ours.peer, theirs.peer)
        self.assertSameState(ours, theirs, set(vars(theirs)) - {"openHandshakeTimeoutCall"})
        self.assertIsNotNone(ours.openHandshakeTimeoutCall)
        self.assertEqual(self.factory.countConnections, 2)

    def test_handshakeAnsweredFromItsKeyAsAutobahnAnswersIt(self) -> None:
        """
        The same bytes answer the handshake, the connection is open and
        registered with no handshake timer left, and its frames are read.
        """
        ours, ourTransport = self.opened("fast", b"dGhlIHNhbXBsZSBub25jZQ==")
        theirs, theirTransport = self.opened("parsed", None)
        self.assertEqual(ourTransport.value(), theirTransport.value())
        self.assertTrue(ourTransport.value().startswith(b"HTTP/1.1 101 Switching Protocols\r\n"))
        self.assertEqual(set(vars(theirs)) - set(vars(ours)), PARSED_ONLY)
        self.assertEqual(set(vars(ours)) - set(vars(theirs)), set())
        self.assertSameState(ours, theirs, set(vars(ours)) - {"connectionId", "handshakeKey"})
        self.assertEqual(ours.state, OPEN)
        self.assertIs(self.registry.connection(APP, "fast"), ours)
        self.assertIsNone(ours.openHandshakeTimeoutCall)
        for protocol, transport in ((ours, ourTransport), (theirs, theirTransport)):
            transport.clear()
            protocol.dataReceived(MASKED_PING)
            self.assertEqual(transport.value(), b"\x81\x04PONG")

    def test_lostAsAutobahnLosesIt(self) -> None:
        """
        A connection lost, cleanly or not, ends as Autobahn ends it: closed,
        uncounted, out of the registry with the same reason.
        """
        left = []
        self.patch(self.registry, "unregister", lambda c, reason, **kw: left.append(reason))
        for reason in (ConnectionDone(), ConnectionLost(), ConnectionAborted()):
            ours, _ = self.opened("fast", b"dGhlIHNhbXBsZSBub25jZQ==")
            theirs, _ = self.opened("parsed", None)
            ours.connectionLost(Failure(reason))
            WebSocketServerProtocol.connectionLost(theirs, Failure(reason))
            self.assertSameState(ours, theirs, set(vars(ours)) - {"connectionId", "handshakeKey"})
            self.assertEqual(ours.state, CLOSED)
            self.assertEqual(left[-2], left[-1])
        self.assertEqual(self.factory.countConnections, 0)


class ClientFrameTests(RelayApiTestCase):
    """
    Over a real socket, a client that breaks the protocol is closed.
    """

    @inlineCallbacks
    def test_binaryFrameClosesConnection(self):
        """A client sending binary frames stays connected, or is dropped without a close code."""
        client = yield self.daemon.connect("c1")
        client.sendMessage(b"\x00", isBinary=True)
        wasClean, code, _ = yield client.closed
        yield self.daemon.registry.whenDrained()
        self.assertEqual(code, 1003)
        self.assertTrue(wasClean)
        self.assertEqual(client.received, [])

    @inlineCallbacks
    def test_unknownTextClosesConnection(self):
        """A client sending unexpected text stays connected, or is dropped without a close code."""
        client = yield self.daemon.connect("c1")
        client.sendText("HELLO")
        wasClean, code, _ = yield client.closed
        yield self.daemon.registry.whenDrained()
        self.assertEqual(code, 1003)
        self.assertTrue(wasClean)
        self.assertEqual(client.received, [])
