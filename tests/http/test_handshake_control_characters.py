"""
Plain handshakes the fast path answers from their key, and those it leaves
to Autobahn: a control character anywhere in the head (which Autobahn's
strict parser refuses, RFC 9110 §5.5) sends it to Autobahn, which answers
400 as it always did.
"""

from __future__ import annotations

import txaio
from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.protocol import Factory
from twisted.trial.unittest import TestCase

from socktopus_tw.http.fastpath import parseUpgrade
from socktopus_tw.relay.tokens import makeToken
from tests.http.test_fastpath import FastPathTestCase, upgrade
from tests.support.daemon import APP, SECRET, Daemon, RawClient, upgradeRequest
from tests.support.fastpath import NOW

#: Header lines that are plain in every way the fast path looks at, but
#: carry a control character Autobahn's strict parser (RFC 9110 §5.5, its
#: #2034) refuses: it answers 400, as the daemon did before the change.
CONTROL_CHARACTER_HEADERS = [
    [b"User-Agent: Mozilla/5.0\x01"],
    [b"X-Trace: \x1b[31mred"],
    [b"Cookie: a=b\x7f"],
    [b"X-Note: vertical\x0btab"],
]


class HandshakeTestCase(FastPathTestCase):
    """
    The daemon's site on a clock, Autobahn's timers on it too.
    """

    def setUp(self) -> None:
        super().setUp()
        self.patch(txaio.config, "loop", self.clock)

    def token(self, connectionId: str = "w1") -> str:
        return makeToken(APP, SECRET, connectionId, NOW * 1000)

    def keyOf(self, chunk: bytes) -> bytes | None:
        parsed = parseUpgrade(chunk[: chunk.index(b"\r\n\r\n")], {b"/recieve": object()})
        assert parsed is not None
        return parsed[4]


class ControlCharacterTests(HandshakeTestCase):
    """
    A handshake with a control character in a header value is refused by
    Autobahn (400, through twisted.web and on the fast path before the
    change); the fast path must not answer it 101 from its key.
    """

    def test_controlCharacterInAnyOtherHeaderIsRefusedAsAutobahnRefusesIt(self) -> None:
        for headers in CONTROL_CHARACTER_HEADERS:
            chunk = upgrade(self.token(), headers=headers)
            fast, web, fastRelay, _ = self.answerBoth(chunk)
            self.assertTrue(web.value().startswith(b"HTTP/1.1 400 "), web.value())
            self.assertEqual(fast.value(), web.value(), headers)
            self.assertIsNone(fastRelay.registry.connection(APP, "w1"), headers)

    def test_controlCharacterInConnectionTokensIsRefusedAsAutobahnRefusesIt(self) -> None:
        chunk = upgrade(self.token()).replace(
            b"Connection: Upgrade", b"Connection: keep-alive\x0c, Upgrade"
        )
        fast, web, _, _ = self.answerBoth(chunk)
        self.assertTrue(web.value().startswith(b"HTTP/1.1 400 "), web.value())
        self.assertEqual(fast.value(), web.value())

    def test_controlCharacterLeavesTheHandshakeToAutobahn(self) -> None:
        """
        The key is only read from a head Autobahn would parse.
        """
        for headers in CONTROL_CHARACTER_HEADERS:
            self.assertIsNone(self.keyOf(upgrade(self.token(), headers=headers)), headers)


class ControlCharacterOverASocketTests(TestCase):
    """
    The same over a real socket to the real daemon.
    """

    timeout = 30

    @inlineCallbacks
    def test_controlCharacterHandshakeIsRefusedOverARealSocket(self):
        daemon = Daemon(self)
        head = upgradeRequest(f"/recieve?token={daemon.token('ctl')}")
        head = head.replace(b"\r\n\r\n", b"\r\nUser-Agent: evil\x01\r\n\r\n")
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", daemon.port)
        client = yield endpoint.connect(Factory.forProtocol(RawClient))

        def drop():
            if client.transport.connected:
                client.transport.abortConnection()
            return client.lost

        self.addCleanup(drop)
        client.transport.write(head)
        yield client.waitFor(b"\r\n\r\n")
        self.assertTrue(client.received.startswith(b"HTTP/1.1 400 "), client.received)
        self.assertIsNone(daemon.registry.connection(APP, "ctl"))
