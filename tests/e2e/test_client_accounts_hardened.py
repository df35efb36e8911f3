"""
The Python client SDK's side of the hardened accounts (SPEC §8), against
the real daemon on a free port: a password reset through a real SMTP
server, the audit log, relay tokens a signed-in user connects with, and
the 429 of login throttling as L{TooManyAttempts} with its wait.
"""

from __future__ import annotations

import dataclasses
import re
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

from twisted.internet.defer import Deferred
from twisted.trial.unittest import TestCase
from twisted.web.resource import Resource
from twisted.web.server import Site

from socktopus_tw.client import (
    AccountEvent,
    AccountsClient,
    BadRequest,
    NotFound,
    RelayClient,
    RelayToken,
    Session,
    SocktopusError,
    TooManyAttempts,
    Unauthorized,
    Unavailable,
    connect,
)
from tests.support.accounts import PASSWORD, MailServer, closedPort, listen
from tests.support.daemon import APP, OTHER_APP, SECRET, Daemon

FAST = ("--bcrypt-rounds", "4")
PUBLIC_URL = "https://accounts.example.com"
NEW_PASSWORD = "a brand new password"
WRONG = "not the password"
REGISTRATION_LINK = re.compile(r"/users/(\d+)/register\?code=([0-9a-f]{64})")
RESET_LINK = re.compile(
    re.escape(PUBLIC_URL) + r"/users/(\d+)/reset\?code=([0-9a-f]{64})(?![0-9a-f])"
)


def accountsClient(testCase: TestCase, url: str) -> AccountsClient:
    client = AccountsClient(url)
    testCase.addCleanup(client.close)
    return client


async def newUser(client: AccountsClient, name: str) -> tuple[int, Session]:
    userId = await client.register(name, PASSWORD, f"{name}@example.com")
    return userId, await client.login(name, PASSWORD)


class ResetTests(TestCase):
    """
    C{reset_password} and C{confirm_reset}, with the link the daemon mails.
    """

    async def setUp(self):
        self.mail = await MailServer.start(self)
        self.daemon = Daemon(
            self,
            *FAST,
            "--smtp",
            self.mail.url,
            "--mail-from",
            "accounts@example.com",
            "--public-url",
            PUBLIC_URL,
        )
        self.client = accountsClient(self, self.daemon.url)

    async def resetLink(self, count: int) -> tuple[int, str]:
        """
        The user id and code of the C{count}th mail, a reset link.
        """
        mail = await self.mail.waitFor(count)
        self.assertEqual(mail.header("Subject"), "Reset your password")
        [(userId, code)] = RESET_LINK.findall(mail.text())
        return int(userId), code

    async def test_resetByNameEndsSessionsAndTheCodeWorksOnce(self):
        """
        The mailed code does not set the new password through the client,
        the old session or password still works, or the code works twice.
        """
        userId, session = await newUser(self.client, "alice")
        sent = len(self.mail.messages)
        self.assertIsNone(await self.client.reset_password(user="alice"))
        linkUser, code = await self.resetLink(sent + 1)
        self.assertEqual(linkUser, userId)
        self.assertIsNone(await self.client.confirm_reset(userId, code, NEW_PASSWORD))
        await self.assertFailure(self.client.registered(session), Unauthorized)
        await self.assertFailure(self.client.login("alice", PASSWORD), Unauthorized)
        self.assertEqual((await self.client.login("alice", NEW_PASSWORD)).user_id, userId)
        error = await self.assertFailure(
            self.client.confirm_reset(userId, code, "yet another password"), BadRequest
        )
        self.assertEqual((error.status, error.message), (400, "Invalid or expired code"))

    async def test_resetByEmail(self):
        """
        Asking by e-mail address (in any case) mails no link to its user.
        """
        userId, _ = await newUser(self.client, "bob")
        sent = len(self.mail.messages)
        await self.client.reset_password(email="BOB@example.com")
        linkUser, code = await self.resetLink(sent + 1)
        self.assertEqual(linkUser, userId)
        self.assertEqual(self.mail.messages[sent].recipient, "bob@example.com")
        await self.client.confirm_reset(userId, code, NEW_PASSWORD)
        await self.client.login("bob", NEW_PASSWORD)

    async def test_unknownUsersGetTheSameAnswer(self):
        """
        Asking for a user nobody has fails, telling the caller who exists, or
        mails someone.
        """
        await newUser(self.client, "carol")
        sent = len(self.mail.messages)
        self.assertIsNone(await self.client.reset_password(user="nobody"))
        self.assertIsNone(await self.client.reset_password(email="nobody@example.com"))
        await self.client.reset_password(user="carol")
        await self.resetLink(sent + 1)
        self.assertEqual(
            [mail.recipient for mail in self.mail.messages[sent:]], ["carol@example.com"]
        )

    async def test_aWrongCodeIsBadRequest(self):
        """
        A made-up code is not refused as a BadRequest with the daemon's reason.
        """
        userId, _ = await newUser(self.client, "dora")
        error = await self.assertFailure(
            self.client.confirm_reset(userId, "ab" * 32, NEW_PASSWORD), BadRequest
        )
        self.assertEqual(error.message, "Invalid or expired code")

    async def test_exactlyOneOfUserOrEmail(self):
        """
        Neither or both of user= and email= is sent to the daemon instead of
        being refused at once (this client's daemon is not even listening).
        """
        client = accountsClient(self, f"http://127.0.0.1:{closedPort()}")
        await self.assertFailure(client.reset_password(), TypeError)
        await self.assertFailure(
            client.reset_password(user="alice", email="alice@example.com"), TypeError
        )
        await self.assertFailure(client.confirm_reset("1", "ab" * 32, NEW_PASSWORD), TypeError)

    async def test_withoutMailIsUnavailable(self):
        """
        A daemon without --smtp is not reported as Unavailable.
        """
        client = accountsClient(self, Daemon(self, *FAST).url)
        error = await self.assertFailure(client.reset_password(user="alice"), Unavailable)
        self.assertEqual(error.status, 503)


class EventsTests(TestCase):
    """
    C{events}: the audit log as L{AccountEvent}s.
    """

    def setUp(self):
        self.daemon = Daemon(self, *FAST)
        self.client = accountsClient(self, self.daemon.url)

    async def test_theAuditLogNewestFirst(self):
        """
        The log is not a list of frozen events, newest first, with aware
        UTC times and the client's IP.
        """
        before = datetime.now(UTC) - timedelta(seconds=1)
        _, session = await newUser(self.client, "alice")
        events = await self.client.events(session)
        self.assertEqual([e.type for e in events], ["login", "registered", "register"])
        for event in events:
            self.assertIsInstance(event, AccountEvent)
            self.assertEqual(event.ip, "127.0.0.1")
            self.assertIs(event.time.tzinfo, UTC)
            self.assertTrue(before <= event.time <= datetime.now(UTC), event.time)
        self.assertGreaterEqual(events[0].time, events[-1].time)
        with self.assertRaises(dataclasses.FrozenInstanceError):
            events[0].type = "forged"  # type: ignore[misc]

    async def test_limit(self):
        """
        limit= is not passed on, or a limit the daemon refuses is not a BadRequest.
        """
        _, session = await newUser(self.client, "alice")
        self.assertEqual([e.type for e in await self.client.events(session, limit=1)], ["login"])
        # Asked twice in a second: the client stamps the repeat a second later.
        self.assertEqual(len(await self.client.events(session, limit=2)), 2)
        self.assertEqual(len(await self.client.events(session, limit=2)), 2)
        for limit in (0, 501):
            error = await self.assertFailure(self.client.events(session, limit=limit), BadRequest)
            self.assertIn("limit", error.message)
        await self.assertFailure(self.client.events(session, limit="3"), TypeError)

    async def test_anEndedSessionIsUnauthorized(self):
        """
        The log is read with a session that logged out.
        """
        _, session = await newUser(self.client, "alice")
        await self.client.logout(session)
        await self.assertFailure(self.client.events(session), Unauthorized)


class ThrottleTests(TestCase):
    """
    Login throttling (SPEC §8.1) as the client reports it.
    """

    async def test_fiveWrongPasswordsThenTooManyAttempts(self):
        """
        After 5 wrong passwords the 429 is not a TooManyAttempts (a
        SocktopusError) with retry_after 1 from the Retry-After header, even
        for the right password, or the log does not show it.
        """
        daemon = Daemon(self, *FAST)
        client = accountsClient(self, daemon.url)
        _, session = await newUser(client, "alice")
        for _ in range(5):
            await self.assertFailure(client.login("alice", WRONG), Unauthorized)
        error = await self.assertFailure(client.login("alice", PASSWORD), TooManyAttempts)
        self.assertIsInstance(error, SocktopusError)
        self.assertEqual((error.status, error.message), (429, "Too many attempts"))
        self.assertEqual(error.retry_after, 1)
        events = await client.events(session, limit=7)
        self.assertEqual([e.type for e in events], ["throttled", *["loginFailed"] * 5, "login"])

    async def test_retryAfterAsAProxyMayWriteIt(self):
        """
        A 429 with Retry-After as an HTTP date, or without one, is not a
        TooManyAttempts with the seconds to that date, or None.
        """
        later = datetime.now(UTC) + timedelta(seconds=120)
        root = Resource()
        root.putChild(b"dated", TooMany(format_datetime(later, usegmt=True)))
        root.putChild(b"bare", TooMany(None))
        port, _ = await listen(self, "tcp:0:interface=127.0.0.1", Site(root))
        dated = RelayClient(f"http://127.0.0.1:{port}/dated", APP, SECRET)
        self.addCleanup(dated.close)
        error = await self.assertFailure(dated.send({"alice": "hi"}), TooManyAttempts)
        self.assertTrue(115 <= error.retry_after <= 121, error.retry_after)
        self.assertEqual(error.message, "slow down")
        bare = accountsClient(self, f"http://127.0.0.1:{port}/bare")
        error = await self.assertFailure(bare.login("alice", PASSWORD), TooManyAttempts)
        self.assertIsNone(error.retry_after)


class TooMany(Resource):
    """
    A proxy's own 429, with a Retry-After header or none.
    """

    isLeaf = True

    def __init__(self, retryAfter: str | None) -> None:
        super().__init__()
        self.retryAfter = retryAfter

    def render(self, request: Any) -> bytes:
        request.setResponseCode(429)
        if self.retryAfter is not None:
            request.setHeader(b"retry-after", self.retryAfter.encode("ascii"))
        request.setHeader(b"content-type", b"text/plain")
        return b"slow down"


class RelayTokenTests(TestCase):
    """
    C{relay_token}: a signed-in user connects to the relay with no backend
    of its own, and the app's backend reaches it as C{user:<id>}.
    """

    def setUp(self):
        self.daemon = Daemon(self, *FAST, environ={f"{APP.upper()}_SOCKTOPUS_USER_TOKENS": "1"})
        self.client = accountsClient(self, self.daemon.url)

    async def test_aSignedInUserConnectsAndIsReached(self):
        """
        The token does not connect as user:<id>, or /send to that id does
        not reach it; or the token shows in a repr.
        """
        userId, session = await newUser(self.client, "alice")
        token = await self.client.relay_token(session, APP)
        self.assertIsInstance(token, RelayToken)
        self.assertEqual(token.connection_id, f"user:{userId}")
        self.assertNotIn(token.token, repr(token))

        async def freshToken() -> str:
            return (await self.client.relay_token(session, APP)).token

        opened: Deferred[None] = Deferred()
        received: Deferred[str] = Deferred()
        connection = connect(
            self.daemon.url,
            freshToken,
            received.callback,
            on_open=lambda: opened.callback(None),
            max_attempts=1,
        )
        self.addCleanup(connection.close)
        await opened
        relay = RelayClient(self.daemon.url, APP, SECRET)
        self.addCleanup(relay.close)
        result = await relay.send({f"user:{userId}": "hello"})
        self.assertEqual(result.failed, [])
        self.assertEqual(await received, "hello")
        self.assertEqual((await connection.close()).reason, "closed")

    async def test_appsThatDidNotOptInAreNotFound(self):
        """
        An app without USER_TOKENS, or no app at all, is not a NotFound.
        """
        _, session = await newUser(self.client, "alice")
        for app in (OTHER_APP, "nosuchapp"):
            error = await self.assertFailure(self.client.relay_token(session, app), NotFound)
            self.assertEqual((error.status, error.message), (404, "App not found"))

    async def test_anEndedSessionIsUnauthorized(self):
        """
        A session that logged out still gets relay tokens.
        """
        _, session = await newUser(self.client, "alice")
        await self.client.logout(session)
        await self.assertFailure(self.client.relay_token(session, APP), Unauthorized)
