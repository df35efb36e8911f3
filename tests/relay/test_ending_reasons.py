"""
Webhook events (SPEC §7.2, §7.3): the reason a
connection's disconnect is reported with when the connection was already
ending for its own reason when something else (a kick, the shutdown) came.

A real daemon on a loopback port, a real receiver, a raw client that
completes the upgrade, sends one frame and then stops reading: the server's
close frame is never answered, so the close handshake stays open (up to
the 2 s close handshake timeout) as it does for a client on a dead network.
"""

from __future__ import annotations

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.protocol import Factory
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from socktopus_tw.relay.websocket import RelayProtocol
from tests.relay.test_e2e import StalledReader
from tests.relay.test_events import Receiver, webhookDaemon
from tests.support.daemon import APP, Daemon


def maskedText(text: bytes) -> bytes:
    """
    A client's text frame (RFC 6455 §5.2), masked with a zero key.
    """
    assert len(text) < 126
    return bytes((0x81, 0x80 | len(text))) + b"\0\0\0\0" + text


@inlineCallbacks
def stalledClient(daemon: Daemon, connectionId: str, frame: bytes):
    """
    Connect, send C{frame}, stop reading; fire once the server has answered
    it by starting its close (the connection is no longer open), with the
    raw client (kept by the caller: a client that does not read is not
    referenced by the reactor, and one garbage collected resets).
    """
    stalled = StalledReader("/recieve?token=" + daemon.token(connectionId))
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", daemon.port)
    yield endpoint.connect(Factory.forProtocol(lambda: stalled))
    yield stalled.upgraded
    protocol = daemon.registry.connection(APP, connectionId)
    assert isinstance(protocol, RelayProtocol)
    stalled.transport.write(maskedText(frame))
    deadline = reactor.seconds() + 2
    while protocol.state == RelayProtocol.STATE_OPEN:
        if reactor.seconds() > deadline:
            raise AssertionError("the server did not start closing")
        yield deferLater(reactor, 0.01, lambda: None)
    return stalled


class EndingReasonTests(TestCase):
    """
    Once the server has started closing a connection for one reason, that
    is the reason its disconnect is reported with.
    """

    timeout = 20

    def setUp(self) -> None:
        self.receiver = Receiver(self)

    @inlineCallbacks
    def test_clientCloseThenKickIsStillClient(self):
        """
        The client sent C{CLOSE}; the backend kicks it a moment later, while
        the close handshake is still open: it left on its own (C{client}),
        and the kick found nothing connected.
        """
        daemon = webhookDaemon(self, self.receiver)
        client = yield stalledClient(daemon, "quitter", b"CLOSE")
        code, body, _ = yield daemon.kick(["quitter"])
        events = yield self.receiver.waitForEnd("quitter")
        self.assertEqual(events, [("connect",), ("disconnect", "client")])
        self.assertEqual(body, {"kicked": [], "notConnected": ["quitter"]})
        self.assertFalse(client.lost.called, "the client went away: the test proves nothing")

    @inlineCallbacks
    def test_refusedFrameThenShutdownIsStillError(self):
        """
        The client sent what the protocol refuses (closed with 1003, an
        C{error}); the daemon stops a moment later: still C{error}, not
        C{shutdown}.
        """
        daemon = webhookDaemon(self, self.receiver)
        client = yield stalledClient(daemon, "rude", b"HELLO")
        self.assertFalse(client.lost.called, "the client went away: the test proves nothing")
        yield daemon.stop()
        self.assertEqual(self.receiver.of("rude"), [("connect",), ("disconnect", "error")])
