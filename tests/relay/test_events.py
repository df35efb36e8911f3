"""
Webhook events end to end (SPEC §7.2, §7.3): a real daemon with
C{DEMO_SOCKTOPUS_WEBHOOK} pointing at a real HTTP receiver (twisted.web on
port 0), real WebSocket clients, and every reason a connection can end.

The receiver checks each batch's signature with its own HMAC computation,
not the daemon's or the SDK's.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.protocol import Factory
from twisted.internet.task import deferLater
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.resource import Resource
from twisted.web.server import Site

from socktopus_tw.tap import SocktopusOptions
from tests.relay.test_e2e import StalledReader
from tests.support.daemon import APP, OTHER_APP, OTHER_SECRET, SECRET, Daemon, nowMilliseconds

#: Seconds a test waits for events to arrive.
WITHIN = 5.0


class Receiver(Resource):
    """
    A backend's webhook: keeps every event of every batch whose signature
    is right, and every request's status it answered.
    """

    isLeaf = True

    def __init__(self, testCase: TestCase, secret: str = SECRET) -> None:
        super().__init__()
        self.secret = secret
        self.events: list[dict[str, Any]] = []
        self.batches: list[dict[str, Any]] = []
        #: Statuses to answer with, in turn; then 200.
        self.answers: list[int] = []
        self.badSignatures = 0
        self.port = reactor.listenTCP(0, Site(self), interface="127.0.0.1")
        testCase.addCleanup(self.port.stopListening)
        self.url = f"http://127.0.0.1:{self.port.getHost().port}/hook"

    def render_POST(self, request) -> bytes:
        body = request.content.read()
        header = request.getHeader("socktopus-signature") or ""
        fields = dict(part.split("=", 1) for part in header.split(",") if "=" in part)
        expected = hmac.new(
            self.secret.encode(), fields.get("t", "").encode() + b"." + body, hashlib.sha256
        ).hexdigest()
        if not hmac.compare_digest(expected, fields.get("v1", "")):
            self.badSignatures += 1
            request.setResponseCode(400)
            return b"bad signature"
        if self.answers:
            status = self.answers.pop(0)
            request.setResponseCode(status)
            return b"not now"
        batch = json.loads(body)
        self.batches.append(batch)
        self.events.extend(batch["events"])
        return b"ok"

    def of(self, connectionId: str) -> list[tuple[str, ...]]:
        """
        The events of one connection: (type, content or reason) pairs.
        """
        return [
            (e["type"], *(e[k] for k in ("content", "reason") if k in e))
            for e in self.events
            if e["connection"] == connectionId
        ]

    @inlineCallbacks
    def waitFor(self, connectionId: str, count: int, within: float = WITHIN):
        deadline = reactor.seconds() + within
        while len(self.of(connectionId)) < count:
            if reactor.seconds() > deadline:
                raise AssertionError(
                    f"not within {within} s: {count} events of {connectionId!r}; "
                    f"got {self.of(connectionId)}"
                )
            yield deferLater(reactor, 0.02, lambda: None)
        return self.of(connectionId)

    @inlineCallbacks
    def waitForEnd(self, connectionId: str, within: float = WITHIN):
        """
        The events of one connection, once its disconnect has arrived.
        """
        deadline = reactor.seconds() + within
        while "disconnect" not in [e[0] for e in self.of(connectionId)]:
            if reactor.seconds() > deadline:
                raise AssertionError(
                    f"not within {within} s: the disconnect of {connectionId!r}; "
                    f"got {self.of(connectionId)}"
                )
            yield deferLater(reactor, 0.02, lambda: None)
        return self.of(connectionId)


def webhookDaemon(testCase: TestCase, receiver: Receiver, *arguments: str) -> Daemon:
    return Daemon(testCase, *arguments, environ={f"{APP.upper()}_SOCKTOPUS_WEBHOOK": receiver.url})


class EventTests(TestCase):
    timeout = 30

    def setUp(self) -> None:
        self.receiver = Receiver(self)

    @inlineCallbacks
    def test_connectMessageAndCloseInOrder(self):
        """
        A client connects, sends two messages up and then C{CLOSE}: the
        backend hears connect, both messages and a disconnect for
        C{client}, in that order, stamped with times in order, in
        signed batches naming the app.
        """
        daemon = webhookDaemon(self, self.receiver)
        before = nowMilliseconds()
        client = yield daemon.connect("alice")
        client.sendText("DATA:hello")
        client.sendText("DATA:wörld, with a : and DATA: inside")
        client.sendText("CLOSE")
        yield client.closed
        events = yield self.receiver.waitFor("alice", 4)
        self.assertEqual(
            events,
            [
                ("connect",),
                ("message", "hello"),
                ("message", "wörld, with a : and DATA: inside"),
                ("disconnect", "client"),
            ],
        )
        times = [e["time"] for e in self.receiver.events]
        self.assertEqual(times, sorted(times))
        self.assertGreaterEqual(times[0], before)
        self.assertEqual({b["app"] for b in self.receiver.batches}, {APP})
        self.assertEqual(self.receiver.badSignatures, 0)

    @inlineCallbacks
    def test_clientCloseFrameIsClient(self):
        daemon = webhookDaemon(self, self.receiver)
        client = yield daemon.connect("bob")
        client.sendClose(1000)
        yield client.closed
        self.assertEqual((yield self.receiver.waitFor("bob", 2))[-1], ("disconnect", "client"))

    @inlineCallbacks
    def test_droppedTransportIsError(self):
        daemon = webhookDaemon(self, self.receiver)
        client = yield daemon.connect("carol")
        client.transport.abortConnection()
        self.assertEqual((yield self.receiver.waitFor("carol", 2))[-1], ("disconnect", "error"))

    @inlineCallbacks
    def test_kickIsKick(self):
        daemon = webhookDaemon(self, self.receiver)
        client = yield daemon.connect("dave")
        yield daemon.kick(["dave"])
        yield client.closed
        self.assertEqual((yield self.receiver.waitFor("dave", 2))[-1], ("disconnect", "kick"))

    @inlineCallbacks
    def test_replacedThenTheNewOneConnects(self):
        daemon = webhookDaemon(self, self.receiver)
        old = yield daemon.connect("erin")
        yield daemon.connect("erin")
        yield old.closed
        self.assertEqual(
            (yield self.receiver.waitFor("erin", 3)),
            [("connect",), ("disconnect", "replaced"), ("connect",)],
        )

    @inlineCallbacks
    def test_idleIsIdle(self):
        daemon = webhookDaemon(self, self.receiver, "--idle-timeout", "0.4")
        client = yield daemon.connect("frank")
        # The test client does not answer pings here: it stays silent.
        client.onPing = lambda payload: None
        yield client.closed
        self.assertEqual((yield self.receiver.waitFor("frank", 2))[-1], ("disconnect", "idle"))

    @inlineCallbacks
    def test_shutdownIsPostedBeforeTheDaemonExits(self):
        daemon = webhookDaemon(self, self.receiver)
        yield daemon.connect("gina")
        yield self.receiver.waitFor("gina", 1)
        yield daemon.stop()
        self.assertEqual(self.receiver.of("gina")[-1], ("disconnect", "shutdown"))

    @inlineCallbacks
    def test_slowConsumerCutOffIsBuffer(self):
        daemon = webhookDaemon(self, self.receiver, "--max-client-buffer", "256KiB")
        stalled = StalledReader("/recieve?token=" + daemon.token("hank"))
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", daemon.port)
        yield endpoint.connect(Factory.forProtocol(lambda: stalled))
        yield stalled.upgraded
        chunk = "x" * (128 * 1024)
        for _ in range(400):
            status, body, _ = yield daemon.send([{"recipient": "hank", "content": chunk}])
            if body["failed"]:
                break
        else:
            self.fail("the stalled client was never cut off")
        self.assertEqual((yield self.receiver.waitFor("hank", 2))[-1], ("disconnect", "buffer"))

    @inlineCallbacks
    def test_binaryFrameIsError(self):
        daemon = webhookDaemon(self, self.receiver)
        client = yield daemon.connect("ivan")
        client.sendMessage(b"DATA:binary", isBinary=True)
        yield client.closed
        self.assertEqual(
            (yield self.receiver.waitFor("ivan", 2)), [("connect",), ("disconnect", "error")]
        )

    @inlineCallbacks
    def test_floodingClientIsClosedWith1008AndError(self):
        daemon = webhookDaemon(self, self.receiver, "--client-message-rate", "5")
        client = yield daemon.connect("judy")
        for n in range(40):
            client.sendText(f"DATA:{n}")
        wasClean, code, reason = yield client.closed
        self.assertEqual(code, 1008)
        events = yield self.receiver.waitForEnd("judy")
        self.assertEqual(events[-1], ("disconnect", "error"))
        # What came before the limit was delivered, in order.
        messages = [e[1] for e in events if e[0] == "message"]
        self.assertEqual(messages, [str(n) for n in range(len(messages))])
        self.assertGreaterEqual(len(messages), 10)

    @inlineCallbacks
    def test_messageOverTheSizeCapIsError(self):
        daemon = webhookDaemon(self, self.receiver, "--max-message-size", "2KiB")
        client = yield daemon.connect("kim")
        client.sendText("DATA:" + "y" * 2048)
        client.sendText("DATA:" + "z" * 2049)
        yield client.closed
        events = yield self.receiver.waitFor("kim", 3)
        self.assertEqual(events, [("connect",), ("message", "y" * 2048), ("disconnect", "error")])

    @inlineCallbacks
    def test_appWithoutWebhookClosesOnData(self):
        """
        Another app, with no webhook: a C{DATA:} frame closes the connection
        as any unexpected text does, and nothing is posted for it.
        """
        daemon = webhookDaemon(self, self.receiver)
        client = yield daemon.connect("leo", app=OTHER_APP, secret=OTHER_SECRET)
        client.sendText("DATA:hello")
        wasClean, code, reason = yield client.closed
        self.assertEqual(code, 1003)
        marker = yield daemon.connect("marker")
        yield self.receiver.waitFor("marker", 1)
        self.assertEqual(self.receiver.of("leo"), [])
        marker.sendText("CLOSE")

    @inlineCallbacks
    def test_backendDownThenBackGetsEveryEventInOrder(self):
        """
        The backend answers 503 a few times, then 200: every event arrives,
        in order, none lost.
        """
        self.receiver.answers = [503, 503, 502]
        daemon = webhookDaemon(self, self.receiver)
        client = yield daemon.connect("mia")
        for n in range(5):
            client.sendText(f"DATA:{n}")
        client.sendText("CLOSE")
        yield client.closed
        events = yield self.receiver.waitFor("mia", 7, within=15)
        self.assertEqual(
            events,
            [("connect",), *[("message", str(n)) for n in range(5)], ("disconnect", "client")],
        )


class WebhookSettingsTests(SynchronousTestCase):
    """
    A webhook the daemon cannot use is one clear line at start.
    """

    def parse(self, environ: dict[str, str]) -> str:
        options = SocktopusOptions(environ={f"{APP.upper()}_SOCKTOPUS_SECRET": SECRET, **environ})
        with self.assertRaises(usage.UsageError) as caught:
            options.parseOptions(["--database", "sqlite:" + self.mktemp()])
        message = str(caught.exception)
        self.assertNotIn("\n", message)
        return message

    def test_plainHttpToAnotherHostIsRefused(self):
        message = self.parse({"DEMO_SOCKTOPUS_WEBHOOK": "http://backend.example/hook"})
        self.assertIn("DEMO_SOCKTOPUS_WEBHOOK", message)

    def test_notAUrl(self):
        message = self.parse({"DEMO_SOCKTOPUS_WEBHOOK": "backend"})
        self.assertIn("DEMO_SOCKTOPUS_WEBHOOK", message)

    def test_aUrlWithAPasswordIsRefusedWithoutShowingIt(self):
        message = self.parse({"DEMO_SOCKTOPUS_WEBHOOK": "https://me:hunter2@backend.example/hook"})
        self.assertIn("DEMO_SOCKTOPUS_WEBHOOK", message)
        self.assertNotIn("hunter2", message)

    def test_webhookOfNoApp(self):
        message = self.parse({"GHOST_SOCKTOPUS_WEBHOOK": "https://backend.example/hook"})
        self.assertIn("GHOST_SOCKTOPUS_SECRET", message)

    def test_httpsAndLoopbackAreAccepted(self):
        for url in ("https://backend.example/hook", "http://127.0.0.1:9000/hook"):
            options = SocktopusOptions(
                environ={f"{APP.upper()}_SOCKTOPUS_SECRET": SECRET, "DEMO_SOCKTOPUS_WEBHOOK": url}
            )
            options.parseOptions(["--database", "sqlite:" + self.mktemp()])
            self.assertEqual(options["apps"].webhooks(), {APP: url})
