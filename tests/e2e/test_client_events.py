"""
The Python client SDK's side of SPEC §7: L{RelayClient.presence} against
the real daemon on a free port, and L{verify_webhook} against what a real
daemon posts to a webhook and against signatures computed here,
independently, with hmac and hashlib.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.resource import Resource
from twisted.web.server import Site

from socktopus_tw.client import (
    BadRequest,
    NotFound,
    PresenceResult,
    RelayClient,
    Unauthorized,
    verify_webhook,
)
from tests.support.daemon import APP, OTHER_APP, OTHER_SECRET, SECRET, Daemon


def relayClient(
    testCase: TestCase, daemon: Daemon, app: str = APP, secret: str = SECRET
) -> RelayClient:
    client = RelayClient(daemon.url, app, secret)
    testCase.addCleanup(client.close)
    return client


class PresenceTests(TestCase):
    async def test_askedIdsInTheirOrder(self):
        """The ids asked about come back split, in the order asked, duplicates kept."""
        daemon = Daemon(self)
        await daemon.connect("alice")
        await daemon.connect("bob")
        result = await relayClient(self, daemon).presence(["bob", "ghost", "alice", "bob"])
        self.assertEqual(
            result,
            PresenceResult(connected=["bob", "alice", "bob"], not_connected=["ghost"], count=3),
        )

    async def test_oneIdAsAString(self):
        """presence("alice") asks about alice, not about "a", "l", "i", "c", "e"."""
        daemon = Daemon(self)
        await daemon.connect("alice")
        result = await relayClient(self, daemon).presence("alice")
        self.assertEqual(result, PresenceResult(["alice"], [], 1))

    async def test_everyoneWithoutIds(self):
        """Without ids: every connected id of this app, and how many; none of another app's."""
        daemon = Daemon(self)
        await daemon.connect("alice")
        await daemon.connect("bob")
        await daemon.connect("carol", app=OTHER_APP, secret=OTHER_SECRET)
        result = await relayClient(self, daemon).presence()
        self.assertEqual((sorted(result.connected), result.not_connected), (["alice", "bob"], []))
        self.assertEqual(result.count, 2)

    async def test_emptyListIsNotEveryone(self):
        """An empty list asks about nobody, unlike no list at all."""
        daemon = Daemon(self)
        await daemon.connect("alice")
        client = relayClient(self, daemon)
        self.assertEqual(await client.presence([]), PresenceResult([], [], 0))
        self.assertEqual(await client.presence(iter(["alice"])), PresenceResult(["alice"], [], 1))

    async def test_errorsAreTyped(self):
        """A wrong secret, an unknown app and an id that is not a string are typed errors."""
        daemon = Daemon(self)
        error = await self.assertFailure(
            relayClient(self, daemon, secret="wrong").presence(), Unauthorized
        )
        self.assertEqual((error.status, error.message), (401, "Invalid secret"))
        error = await self.assertFailure(
            relayClient(self, daemon, app="nosuchapp").presence(["a"]), NotFound
        )
        self.assertEqual((error.status, error.message), (404, "Secret not found"))
        error = await self.assertFailure(relayClient(self, daemon).presence([1]), BadRequest)
        self.assertEqual((error.status, error.message), (400, "Malformed request"))


class Receiver(Resource):
    """
    A webhook receiver: keeps each post's raw body and signature header.
    """

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.posts: list[tuple[bytes, list[bytes]]] = []
        self._waiting: list[Deferred[None]] = []

    def render_POST(self, request: Any) -> bytes:
        header = request.requestHeaders.getRawHeaders(b"socktopus-signature", [])
        self.posts.append((request.content.read(), header))
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            d.callback(None)
        return b""

    def nextPost(self) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        self._waiting.append(d)
        return d


class DaemonSignatureTests(TestCase):
    async def test_acceptsWhatTheDaemonPosts(self):
        """
        The events a real daemon posts to an app's webhook pass
        verify_webhook with the app's secret, and no other secret.
        """
        receiver = Receiver()
        port = reactor.listenTCP(0, Site(receiver), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        url = f"http://127.0.0.1:{port.getHost().port}/hook"
        daemon = Daemon(self, environ={f"{APP.upper()}_SOCKTOPUS_WEBHOOK": url})
        posted = receiver.nextPost()
        await daemon.connect("alice")
        await posted
        body, header = receiver.posts[0]
        self.assertEqual(json.loads(body)["events"][0]["type"], "connect")
        self.assertTrue(verify_webhook(body, header, SECRET))
        self.assertFalse(verify_webhook(body, header, OTHER_SECRET))
        self.assertFalse(verify_webhook(body + b"\n", header, SECRET))


# A moment in Unix seconds, and the same in milliseconds as the header writes it.
NOW = 1_700_000_000.0
STAMP = "1700000000000"
KEY = "app-secret-0123456789"
BODY = (
    b'{"app":"demo","events":[{"type":"connect","connection":"conn-1","time":1700000000000},'
    b'{"type":"message","connection":"conn-1","time":1700000000120,"content":"h\xc3\xa9"}]}'
)


def signature(body: bytes = BODY, stamp: str = STAMP, secret: str = KEY) -> str:
    """
    SPEC §7.2's v1, computed here: hex HMAC-SHA256(secret, "<ms>." + body).
    """
    message = stamp.encode() + b"." + body
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def header(body: bytes = BODY, stamp: str = STAMP, secret: str = KEY) -> str:
    return f"t={stamp},v1={signature(body, stamp, secret)}"


class VerifyWebhookTests(SynchronousTestCase):
    def test_acceptsTheDaemonsSignature(self):
        """A body signed as SPEC §7.2 says, at the time given, is the daemon's."""
        self.assertTrue(verify_webhook(BODY, header(), KEY, now=NOW))

    def test_headerAsFrameworksGiveIt(self):
        """The header as bytes or as a list of values (getRawHeaders()) is read alike."""
        self.assertTrue(verify_webhook(BODY, header().encode(), KEY, now=NOW))
        self.assertTrue(verify_webhook(BODY, [header().encode()], KEY, now=NOW))
        self.assertTrue(verify_webhook(bytearray(BODY), header(), KEY, now=NOW))
        self.assertTrue(verify_webhook(memoryview(BODY), header(), KEY, now=NOW))

    def test_rejectsAnythingChanged(self):
        """Another body, secret, stamp or signature is not the daemon's."""
        self.assertFalse(verify_webhook(BODY + b" ", header(), KEY, now=NOW))
        self.assertFalse(verify_webhook(BODY.replace(b"conn-1", b"conn-2"), header(), KEY, now=NOW))
        self.assertFalse(verify_webhook(BODY, header(), KEY + "x", now=NOW))
        self.assertFalse(verify_webhook(BODY, header(secret="other"), KEY, now=NOW))
        self.assertFalse(verify_webhook(BODY, header(), "", now=NOW))
        # The stamp is signed: moved, the old signature no longer fits.
        moved = f"t=1700000000001,v1={signature()}"
        self.assertFalse(verify_webhook(BODY, moved, KEY, now=NOW))
        flipped = signature()[:-1] + ("0" if signature()[-1] != "0" else "1")
        self.assertFalse(verify_webhook(BODY, f"t={STAMP},v1={flipped}", KEY, now=NOW))

    def test_rejectsOldAndFutureStamps(self):
        """
        Replays older than 5 minutes, and stamps more than 5 minutes ahead,
        are refused even when rightly signed; within that, accepted.
        """
        for offset, accepted in [
            (0, True),
            (299.9, True),
            (300, True),
            (-300, True),
            (300.001, False),
            (-300.001, False),
            (3600, False),
            (-86400, False),
        ]:
            self.assertEqual(
                verify_webhook(BODY, header(), KEY, now=NOW + offset), accepted, offset
            )

    def test_usesTheCurrentTimeByDefault(self):
        """Without now, the clock decides: an old stamp is refused."""
        self.assertFalse(verify_webhook(BODY, header(), KEY))

    def test_malformedHeadersAreFalse(self):
        """Whatever the header says, if it is not a good signature, the answer is False."""
        good = signature()
        for bad in [
            None,
            "",
            [],
            " ",
            good,
            f"v1={good}",
            f"t={STAMP}",
            f"t={STAMP},",
            f"t={STAMP},v1=",
            f"t={STAMP},v1={good[:-2]}",
            f"t={STAMP},v1={good}00",
            f"t={STAMP},v1={good[:-1]}g",
            f"t={STAMP},v1={good},v1",
            f"t={STAMP};v1={good}",
            f"t= {STAMP},v1={good}",
            f"t={STAMP}.0,v1={good}",
            f"t=-{STAMP},v1={good}",
            f"t={STAMP},t={STAMP},v1={good}",
            f"t=\u0661\u0667,v1={good}",
            f"t={'9' * 5000},v1={good}",
            f"T={STAMP},V1={good}",
            f"t={STAMP},v0={good}",
            "t=,v1=",
            b"\xff\xfe",
        ]:
            self.assertFalse(verify_webhook(BODY, bad, KEY, now=NOW), bad)

    def test_toleratesSpacesAndOtherSchemes(self):
        """
        Spaces after commas, parts of schemes it does not know, and several
        v1 signatures (one of them right) are accepted.
        """
        good = signature()
        for fine in [
            f"t={STAMP}, v1={good}",
            f"v1={good},t={STAMP}",
            f"t={STAMP},v1={good.upper()}",
            f"t={STAMP},v2=whatever,v1={good}",
            f"t={STAMP},v1={'0' * 64},v1={good}",
        ]:
            self.assertTrue(verify_webhook(BODY, fine, KEY, now=NOW), fine)

    def test_bodyMustBeBytes(self):
        """A str body is a mistake (it is not what was signed): a TypeError saying so."""
        error = self.assertRaises(TypeError, verify_webhook, BODY.decode(), header(), KEY, NOW)
        self.assertIn("raw bytes", str(error))
