"""
The relay end to end: the daemon on a free port, real WebSocket clients over
real sockets, real HTTP requests.
"""

from __future__ import annotations

from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults, inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.trial.unittest import TestCase

from tests.support.daemon import APP, Daemon, RelayClient, upgradeRequest


class QuietClient(RelayClient):
    """
    A client that records server pings and, unlike a browser, never answers them.
    """

    answersPings = False

    def __init__(self) -> None:
        super().__init__()
        self.pings = 0
        self._pingWaiters: list[tuple[int, Deferred[None]]] = []

    def onPing(self, payload: bytes) -> None:
        self.pings += 1
        if self.answersPings:
            super().onPing(payload)
        for n, d in [w for w in self._pingWaiters if w[0] <= self.pings]:
            self._pingWaiters.remove((n, d))
            d.callback(None)

    def waitForPings(self, count: int) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        self._pingWaiters.append((count, d))
        return d


class AnsweringClient(QuietClient):
    answersPings = True


class StalledReader(Protocol):
    """
    Completes the WebSocket handshake by hand, then stops reading its socket:
    a client on a dead mobile network, as the daemon sees it.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.upgraded: Deferred[None] = Deferred()
        self.lost: Deferred[None] = Deferred()
        self.buffer = b""

    def connectionMade(self) -> None:
        self.transport.write(upgradeRequest(self.path))

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        if not self.upgraded.called and b"\r\n\r\n" in self.buffer:
            assert self.buffer.startswith(b"HTTP/1.1 101"), self.buffer[:80]
            self.transport.pauseProducing()
            self.upgraded.callback(None)

    def connectionLost(self, reason: object) -> None:
        self.lost.callback(None)


class ManyClientsTests(TestCase):
    timeout = 120

    @inlineCallbacks
    def test_thousandConcurrentConnectionsEachGetTheirOwnMessage(self):
        """
        A backend with 1,000 users connected sends each one a message in one
        batch, and every user gets exactly theirs.
        """
        # Every token is stamped before the first handshake; on a busy 2-core
        # machine the 1,000 handshakes (both ends in this process) can take
        # longer than the 5 s default lifespan, which is tested elsewhere.
        daemon = Daemon(self, "--token-lifespan", "120")
        ids = [f"user-{i}" for i in range(1000)]
        clients = yield gatherResults([daemon.connect(i) for i in ids])
        self.assertEqual(daemon.registry.count(APP), 1000)

        status, body, _ = yield daemon.send(
            [{"recipient": i, "content": f"hello {i}"} for i in ids]
        )
        self.assertEqual(status, 200)
        self.assertEqual(len(body["succeeded"]), 1000)
        self.assertEqual(body["failed"], [])
        received = yield gatherResults([c.waitFor(1) for c in clients])
        self.assertEqual(received, [[f"DATA:hello {i}"] for i in ids])

    @inlineCallbacks
    def test_tenThousandMessageBatchArrivesInOrder(self):
        """
        One request with 10,000 messages for one user arrives complete and in
        the order of the request.
        """
        daemon = Daemon(self)
        client = yield daemon.connect("c1")
        contents = [f"message {n}" for n in range(10000)]
        status, body, _ = yield daemon.send([{"recipient": "c1", "content": c} for c in contents])
        self.assertEqual(status, 200)
        self.assertEqual(len(body["succeeded"]), 10000)
        received = yield client.waitFor(10000)
        self.assertEqual(received, ["DATA:" + c for c in contents])

    @inlineCallbacks
    def test_concurrentSendsToOneRecipientAllArriveEachInOrder(self):
        """
        Four backends sending to the same user at once: nothing is lost and
        each backend's batch keeps its order.
        """
        daemon = Daemon(self)
        client = yield daemon.connect("c1")
        batches = [[f"{b}:{n}" for n in range(1500)] for b in range(4)]
        results = yield gatherResults(
            [daemon.send([{"recipient": "c1", "content": c} for c in batch]) for batch in batches]
        )
        for status, body, _ in results:
            self.assertEqual((status, len(body["succeeded"])), (200, 1500))
        received = yield client.waitFor(6000)
        for b, batch in enumerate(batches):
            mine = [r[len("DATA:") :] for r in received if r.startswith(f"DATA:{b}:")]
            self.assertEqual(mine, batch)


class ConnectionLifecycleTests(TestCase):
    timeout = 30

    @inlineCallbacks
    def test_newConnectionReplacesOldAndStays(self):
        """
        A user who reconnects with the same id gets the new socket, and the old
        one is told CLOSE; the new one keeps receiving after the old one is gone.
        """
        daemon = Daemon(self)
        old = yield daemon.connect("c1")
        new = yield daemon.connect("c1")
        yield old.closed
        self.assertEqual(old.received, ["CLOSE"])
        status, body, _ = yield daemon.send([{"recipient": "c1", "content": "still here"}])
        self.assertEqual(len(body["succeeded"]), 1)
        received = yield new.waitFor(1)
        self.assertEqual(received, ["DATA:still here"])
        self.assertEqual(daemon.registry.count(APP), 1)

    @inlineCallbacks
    def test_kickClosesAtOnceAndKeepsOldTokensOut(self):
        """
        A kicked user is told CLOSE, the backend's answer says who was kicked,
        and the token the user already holds no longer opens a connection.
        """
        daemon = Daemon(self)
        client = yield daemon.connect("c1")
        staleToken = daemon.token("c1")
        status, body, _ = yield daemon.kick(["c1", "ghost"])
        self.assertEqual((status, body), (200, {"kicked": ["c1"], "notConnected": ["ghost"]}))
        yield client.closed
        self.assertEqual(client.received, ["CLOSE"])

        status, body, _ = yield daemon.request("GET", "/recieve?token=" + staleToken)
        self.assertEqual((status, body), (401, {"code": 401, "message": "Token expired"}))
        status, body, _ = yield daemon.send([{"recipient": "c1", "content": "x"}])
        self.assertEqual(len(body["failed"]), 1)

        kickedAt = daemon.registry._kicked[(APP, "c1")]
        again = yield daemon.connect("c1", stamp=int(kickedAt) + 1)
        self.assertEqual(daemon.registry.connection(APP, "c1") is not None, True)
        again.sendText("PING")
        self.assertEqual((yield again.waitFor(1)), ["PONG"])

    @inlineCallbacks
    def test_receiveAliasWorks(self):
        """
        Clients written against the corrected spelling /receive work too.
        """
        daemon = Daemon(self)
        client = yield daemon.connect("c1", path="/receive")
        client.sendText("PING")
        self.assertEqual((yield client.waitFor(1)), ["PONG"])

    @inlineCallbacks
    def test_silentClientIsClosedAfterIdleTimeout(self):
        """
        A client that sends nothing and does not answer pings is pinged, then
        told CLOSE and closed, so dead peers do not pile up.
        """
        daemon = Daemon(self, "--idle-timeout", "0.4")
        client = yield daemon.connect("c1", clientClass=QuietClient)
        yield client.closed
        self.assertGreaterEqual(client.pings, 1)
        self.assertEqual(client.received, ["CLOSE"])
        self.assertEqual(daemon.registry.count(), 0)

    @inlineCallbacks
    def test_clientAnsweringPingsStaysOpen(self):
        """
        A browser that never sends a message but answers the server's pings
        is kept: it is quiet, not dead.
        """
        daemon = Daemon(self, "--idle-timeout", "0.4")
        client = yield daemon.connect("c1", clientClass=AnsweringClient)
        # Each ping comes idleTimeout/2 after the previous pong; a third ping
        # means the connection outlived more than one idle timeout.
        yield client.waitForPings(3)
        self.assertFalse(client.closed.called)
        self.assertEqual(daemon.registry.count(APP), 1)


class SlowConsumerTests(TestCase):
    timeout = 60

    @inlineCallbacks
    def test_clientThatStopsReadingIsCutOffAndOthersKeepReceiving(self):
        """
        One user on a stalled network must not hold up the others or grow the
        daemon's memory: past the buffer cap it is cut off and its messages
        fail, while another user keeps receiving everything.
        """
        daemon = Daemon(self, "--max-client-buffer", "256KiB")
        fast = yield daemon.connect("fast")
        stalled = StalledReader("/recieve?token=" + daemon.token("slow"))
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", daemon.port)
        yield endpoint.connect(Factory.forProtocol(lambda: stalled))
        yield stalled.upgraded

        # Each round gives both clients the same 128 KiB: below the cap for a
        # client that reads, so only the stalled one can ever pass it.
        chunk = "x" * (128 * 1024)
        sent = 0
        for round in range(400):
            status, body, _ = yield daemon.send(
                [
                    {"recipient": "slow", "content": chunk},
                    {"recipient": "fast", "content": f"{round}:{chunk}"},
                ]
            )
            self.assertEqual(status, 200)
            self.assertIn({"recipient": "fast", "content": f"{round}:{chunk}"}, body["succeeded"])
            sent += 1
            if body["failed"]:
                self.assertEqual(body["failed"], [{"recipient": "slow", "content": chunk}])
                break
        else:
            self.fail("the stalled client was never cut off")
        # The kernel's socket buffers took some before the daemon's filled.
        self.assertGreater(sent, 2)

        # A client that does not read cannot see the reset either: let it look.
        stalled.transport.resumeProducing()
        yield stalled.lost
        self.assertIsNone(daemon.registry.connection(APP, "slow"))
        status, body, _ = yield daemon.send([{"recipient": "slow", "content": "more"}])
        self.assertEqual(len(body["failed"]), 1)
        received = yield fast.waitFor(sent)
        self.assertEqual(received, [f"DATA:{n}:{chunk}" for n in range(sent)])
