"""
Defects found in a review of the daemon: each test fails while the defect it
names is present.
"""

from __future__ import annotations

import os
import struct

import bcrypt
from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.protocol import Factory
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.server import Request
from twisted.web.test.requesthelper import DummyChannel

from socktopus_tw.accounts.api import Register
from socktopus_tw.accounts.passwords import Passwords
from tests.support import Daemon, RawClient, upgradeRequest


class LoginCostTests(SynchronousTestCase):
    """
    SPEC 4: wrong user and wrong password get the same 401 in the same time.
    """

    def test_longPasswordCostsAFullCheckLikeAnUnknownUser(self):
        """
        A password over bcrypt's 72 bytes must not be refused for free for a
        known user while an unknown one costs a full check: that difference in
        time tells which user names exist. Counted, not timed.
        """
        checked = []
        realCheck = bcrypt.checkpw

        def countingCheck(password, hashed):
            # Counted once done: bcrypt refusing a long password at once is
            # exactly the free answer this test is about.
            result = realCheck(password, hashed)
            checked.append(hashed)
            return result

        self.patch(bcrypt, "checkpw", countingCheck)
        passwords = Passwords(reactor=None, rounds=4)
        stored = passwords._hash("correct horse battery")
        longPassword = "p" * 100

        self.assertFalse(passwords._check(longPassword, stored))
        self.assertFalse(passwords._check(longPassword, None))
        self.assertFalse(passwords._check("x" * 10, None))
        # Each answer cost exactly one bcrypt check at the daemon's cost.
        self.assertEqual(len(checked), 3)
        self.assertEqual({h[:7] for h in checked}, {b"$2b$04$"})


class FakeAccounts:
    registeredRedirect = "/welcome"

    def __init__(self):
        self.pending = Deferred()

    def completeRegistration(self, userId, code):
        return self.pending


class RegisterDisconnectTests(SynchronousTestCase):
    def test_clientGoneWhileRegistrationCompletesLogsNoTraceback(self):
        """
        GET /users/1/register?code=C; the client goes away while the code is
        checked in the database. No error must be logged for that.
        """
        accounts = FakeAccounts()
        request = Request(DummyChannel())
        request.method = b"GET"
        request.uri = request.path = b"/users/1/register"
        request.args = {b"code": [b"c" * 64]}
        request.postpath = []
        request.prepath = []
        Register(accounts, 1).render(request)
        request.connectionLost(Failure(ConnectionError("client left")))
        accounts.pending.callback(None)
        errors = self.flushLoggedErrors(RuntimeError)
        self.assertEqual(errors, [], "a vanished client logged an 'Unhandled error' traceback")


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
        client.transport.write(upgradeRequest(f"/recieve?token={daemon.token('conn-1')}")
                               + maskedText(b"PING"))
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


N = 60000


class BatchOrderTests(TestCase):
    @inlineCallbacks
    def test_aLaterBatchIsNotDeliveredInsideAnEarlierOne(self):
        """
        Batch A (N messages) is accepted, then batch B (one message) to
        the same connection. SPEC 3.2: frames arrive in the order /send
        accepted them, so B's message comes after all of A's.
        """
        daemon = Daemon(self)
        client = yield daemon.connect("conn-1")
        first = daemon.send([{"recipient": "conn-1", "content": f"A{i}"} for i in range(N)])
        # B is sent once A is being delivered: A was accepted first.
        yield client.waitFor(1)
        second = daemon.send([{"recipient": "conn-1", "content": "B"}])
        yield first
        yield second
        received = yield client.waitFor(N + 1)
        where = received.index("DATA:B")
        self.assertEqual(where, N, f"B arrived after {where} of A's {N} messages")
