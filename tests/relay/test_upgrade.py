"""
Tests for L{socktopus_tw.relay.upgrade}: C{GET /recieve?token=TOKEN} (and
C{/receive}) end to end. Bad tokens are refused before any upgrade, as JSON;
an admitted client's first frames are not lost, even when they come in the
same segment as the upgrade request.
"""

from __future__ import annotations

import os
import struct
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.protocol import Factory
from twisted.trial.unittest import TestCase

from tests.support.daemon import OTHER_SECRET, Daemon, RawClient, nowMilliseconds, upgradeRequest
from tests.support.relay import (
    INVALID_SIGNATURE,
    MALFORMED_TOKEN,
    SECRET_NOT_FOUND,
    TOKEN_EXPIRED,
    RelayApiTestCase,
    fields,
)


class TokenOverHttpTests(RelayApiTestCase):
    """
    /recieve refuses bad tokens before any upgrade, as JSON (SPEC §3.2).
    """

    @inlineCallbacks
    def assertRecieve(self, query: str, status: int, expected: Any, path: str = "/recieve"):
        code, answer, response = yield self.daemon.request("GET", path + query)
        self.assertEqual((code, answer), (status, expected), query)
        self.assertEqual(
            response.headers.getRawHeaders(b"content-type"), [b"application/json"], query
        )

    @inlineCallbacks
    def test_malformedTokens(self):
        """A missing or garbled token gets a JSON 400 Malformed token before the upgrade."""
        good = self.daemon.token("c1")
        stamp, app, connectionId, signature = good.split("h")
        for query in [
            "",
            "?token=",
            "?tok=" + good,
            "?token=zz",
            "?token=" + fields(stamp, app, connectionId),
            "?token=" + fields(stamp, app.upper(), connectionId, signature),
            "?token=" + fields(stamp, app, connectionId, signature.upper()),
            "?token=" + fields(b"soon".hex(), app, connectionId, signature),
            "?token=" + fields(b"12.5".hex(), app, connectionId, signature),
            "?token=%ff%fe",
        ]:
            yield self.assertRecieve(query, 400, MALFORMED_TOKEN)

    @inlineCallbacks
    def test_expiredAndFutureTokens(self):
        """A token a minute old, or a minute in the future, gets 401 Token expired."""
        for stamp in [nowMilliseconds() - 60_000, nowMilliseconds() + 60_000]:
            yield self.assertRecieve(
                "?token=" + self.daemon.token("c1", stamp=stamp), 401, TOKEN_EXPIRED
            )

    @inlineCallbacks
    def test_unknownApp(self):
        """A token for an app the daemon does not serve gets 404 Secret not found."""
        token = self.daemon.token("c1", app="nosuchapp", secret="whatever")
        yield self.assertRecieve("?token=" + token, 404, SECRET_NOT_FOUND)

    @inlineCallbacks
    def test_wrongSignature(self):
        """A token signed with the wrong secret gets 401 Invalid signature."""
        for secret in ["wrong", OTHER_SECRET]:
            token = self.daemon.token("c1", secret=secret)
            yield self.assertRecieve("?token=" + token, 401, INVALID_SIGNATURE)

    @inlineCallbacks
    def test_validTokenWithoutUpgradeIs426(self):
        """A plain GET with a good token gets a JSON 426 and registers no connection."""
        for path in ["/recieve", "/receive"]:
            code, answer, response = yield self.daemon.request(
                "GET", path + "?token=" + self.daemon.token("c1")
            )
            self.assertEqual(code, 426, path)
            self.assertEqual(answer["code"], 426, path)
            self.assertIsInstance(answer["message"], str)
            self.assertEqual(
                response.headers.getRawHeaders(b"content-type"), [b"application/json"], path
            )
        self.assertEqual(self.daemon.registry.count(), 0)

    @inlineCallbacks
    def test_receiveIsAnAlias(self):
        """The correctly spelt /receive checks tokens and connects as /recieve does."""
        yield self.assertRecieve("?token=zz", 400, MALFORMED_TOKEN, path="/receive")
        token = self.daemon.token("c1", stamp=nowMilliseconds() - 60_000)
        yield self.assertRecieve("?token=" + token, 401, TOKEN_EXPIRED, path="/receive")
        client = yield self.daemon.connect("c1", path="/receive")
        yield self.daemon.send([{"recipient": "c1", "content": "via alias"}])
        self.assertEqual((yield client.waitFor(1)), ["DATA:via alias"])


def maskedText(payload: bytes) -> bytes:
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return struct.pack("!BB", 0x81, 0x80 | len(payload)) + mask + masked


class PipelinedFrameTests(TestCase):
    # A lost frame shows as a PONG that never comes.
    timeout = 10

    @inlineCallbacks
    def connect(self, daemon: Daemon):
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", daemon.port)
        client = yield endpoint.connect(Factory.forProtocol(RawClient))
        self.addCleanup(client.transport.abortConnection)
        return client

    @inlineCallbacks
    def test_frameSentRightAfterTheUpgradeRequestIsNotLost(self):
        """
        A client may send its first frame in the same segment as the upgrade
        request (RFC 6455 lets it send once it has sent the handshake only if
        it is optimistic, but TCP may also coalesce them). The PING must be
        answered with PONG.
        """
        daemon = Daemon(self)
        client = yield self.connect(daemon)
        client.transport.write(
            upgradeRequest(f"/recieve?token={daemon.token('conn-1')}") + maskedText(b"PING")
        )
        yield client.waitFor(b"\x81\x04PONG")
        self.assertIn(b"101", client.received.split(b"\r\n", 1)[0])
        self.assertIn(b"\x81\x04PONG", client.received)

    @inlineCallbacks
    def test_controlFrameSentAfterThe101IsAnswered(self):
        """
        Control for the test above: the same bytes, the frame sent after the 101.
        """
        daemon = Daemon(self)
        client = yield self.connect(daemon)
        client.transport.write(upgradeRequest(f"/recieve?token={daemon.token('conn-1')}"))
        yield client.waitFor(b"\r\n\r\n")
        client.transport.write(maskedText(b"PING"))
        yield client.waitFor(b"\x81\x04PONG")
        self.assertIn(b"\x81\x04PONG", client.received)
