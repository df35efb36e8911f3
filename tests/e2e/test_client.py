"""
The Python client SDK against the real daemon on a free port: real HTTP,
real WebSocket clients receiving what the client sends, real errors.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import treq
from autobahn.twisted.websocket import WebSocketClientFactory
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.error import ConnectError
from twisted.trial.unittest import TestCase
from twisted.web.iweb import IAgent
from twisted.web.resource import Resource
from twisted.web.server import Site
from zope.interface import implementer

from socktopus_tw.client import (
    AccountsClient,
    BadRequest,
    Conflict,
    KickResult,
    NotFound,
    RelayClient,
    SendResult,
    Session,
    SocktopusError,
    TooLarge,
    Unauthorized,
    auth_headers,
    make_token,
)
from tests.support.accounts import PASSWORD, MailServer, closedPort, listen
from tests.support.daemon import APP, OTHER_SECRET, SECRET, Daemon
from tests.support.daemon import RelayClient as WebSocketClient

FAST = ("--bcrypt-rounds", "4")
PUBLIC_URL = "https://accounts.example.com"
LINK = re.compile(re.escape(PUBLIC_URL) + r"/users/\d+/register\?code=[0-9a-f]+")

# SPEC 4.1's worked example.
EXAMPLE_SECRET = (
    "3ar+0wLwgiltTXNZ/eprJ2NaWE7y5k+0r9ThN4+im8RHWH8ksB1xw4554hOTNF8H9rguMBfUaNRWztNQb+nz7A=="
)
EXAMPLE_HMAC = "69aee4c4d9749a6e27c583af898840927975ea861b9d74dc54ef2e3cde14b7c4"


async def openWebSocket(daemon: Daemon, token: str, path: str = "/recieve") -> WebSocketClient:
    """
    A real WebSocket client connected with C{token}, as a browser given that
    token would be; fails with ConnectionRefusedError if the daemon refuses it.
    """
    factory = WebSocketClientFactory(f"{daemon.wsUrl}{path}?token={token}")
    factory.protocol = WebSocketClient
    factory.setProtocolOptions(perMessageCompressionOffers=[], autoPingInterval=0)
    client = await TCP4ClientEndpoint(reactor, "127.0.0.1", daemon.port).connect(factory)
    daemon.clients.append(client)
    await client.opened
    return client


def relayClient(
    testCase: TestCase, daemon: Daemon, app: str = APP, secret: str = SECRET
) -> RelayClient:
    client = RelayClient(daemon.url, app, secret)
    testCase.addCleanup(client.close)
    return client


def accountsClient(testCase: TestCase, url: str) -> AccountsClient:
    client = AccountsClient(url)
    testCase.addCleanup(client.close)
    return client


@implementer(IAgent)
class CountingAgent:
    """
    Twisted's Agent, counting the requests made through it.
    """

    def __init__(self, agent: IAgent) -> None:
        self.agent = agent
        self.requests: list[tuple[bytes, bytes]] = []

    def request(
        self, method: bytes, uri: bytes, headers: Any = None, bodyProducer: Any = None
    ) -> Any:
        self.requests.append((method, uri))
        return self.agent.request(method, uri, headers, bodyProducer)


class ProxyErrorPage(Resource):
    """
    What a reverse proxy answers when the daemon is down: an HTML 502.
    """

    isLeaf = True

    def render(self, request: Any) -> bytes:
        request.setResponseCode(502)
        request.setHeader(b"content-type", b"text/html")
        return b"<html><body><h1>502 Bad Gateway</h1></body></html>"


class TokenTests(TestCase):
    def test_makeTokenIsTheSpecsHmac(self):
        """A token made by the SDK is not the one SPEC 3.1 describes, so no other client agrees."""
        token = make_token("demo", "s3cret", "user-42", now=1700000000.123)
        signature = hmac.new(b"s3cret", b"1700000000123user-42", hashlib.sha256).hexdigest()
        self.assertEqual(
            token, "h".join([b"1700000000123".hex(), b"demo".hex(), b"user-42".hex(), signature])
        )

    def test_makeTokenKeepsMillisecondsExactly(self):
        """A token made from another SDK's millisecond time differs from that SDK's by one."""
        for ms in (1700000000123, 1700000000001, 1699999999999, 1234567890999, 1):
            stamp = make_token("demo", "s", "id", now=ms / 1000).split("h")[0]
            self.assertEqual(bytes.fromhex(stamp).decode(), str(ms))

    def test_makeTokenEncodesUtf8(self):
        """A connection id with accents gets a token the daemon cannot decode."""
        token = make_token("demo", "clé", "utilisateur-é", now=1.0)
        signature = hmac.new(
            "clé".encode(), "1000utilisateur-é".encode(), hashlib.sha256
        ).hexdigest()
        self.assertEqual(token.split("h")[2:], ["utilisateur-é".encode().hex(), signature])

    def test_makeTokenRefusesIdsTheDaemonRefuses(self):
        """An empty or over-long connection id makes a token the daemon rejects, with no hint."""
        for bad in ("", "x" * 257, "é" * 129):
            self.assertRaises(ValueError, make_token, "demo", "s", bad)
        make_token("demo", "s", "é" * 128)
        make_token("demo", "s", "x")

    def test_authHeadersReproduceTheWorkedExample(self):
        """The SDK's Auth Headers are not the ones the original's documentation shows."""
        headers = auth_headers(7, EXAMPLE_SECRET, "/logout", now=1472276742.9)
        self.assertEqual(
            headers,
            {
                "UserID": "7",
                "Path": "/logout",
                "Time-Sent": "1472276742",
                "HMAC": EXAMPLE_HMAC,
                "Encoding": "hex",
            },
        )

    def test_authHeadersInBase64(self):
        """Auth Headers asked for in base64 are not the same HMAC, base64-encoded."""
        headers = auth_headers(7, EXAMPLE_SECRET, "/logout", now=1472276742, encoding="base64")
        self.assertEqual(headers["HMAC"], base64.b64encode(bytes.fromhex(EXAMPLE_HMAC)).decode())
        self.assertEqual(headers["Encoding"], "base64")

    def test_authHeadersRefuseAnUnknownEncoding(self):
        """A typo in the encoding silently sends hex headers labelled as something else."""
        self.assertRaises(ValueError, auth_headers, 7, EXAMPLE_SECRET, "/logout", encoding="b64")

    def test_sessionReprHidesTheSecret(self):
        """Logging a session writes its secret into the logs."""
        session = Session("very-secret", 3, datetime(2030, 1, 1, tzinfo=UTC))
        self.assertNotIn("very-secret", repr(session))
        self.assertIn("user_id=3", repr(session))


class RelayClientTests(TestCase):
    async def test_sendListDeliversInOrder(self):
        """Messages sent as a list do not reach the connected client, or arrive out of order."""
        daemon = Daemon(self)
        alice = await daemon.connect("alice")
        messages = [{"recipient": "alice", "content": text} for text in ("one", "two", "三")]
        result = await relayClient(self, daemon).send(messages)
        self.assertEqual(result, SendResult(succeeded=messages, failed=[]))
        self.assertEqual(await alice.waitFor(3), ["DATA:one", "DATA:two", "DATA:三"])

    async def test_sendMappingDeliversToEachRecipient(self):
        """The {recipient: content} shortcut does not deliver to every recipient."""
        daemon = Daemon(self)
        alice = await daemon.connect("alice")
        bob = await daemon.connect("bob")
        result = await relayClient(self, daemon).send({"alice": "hi alice", "bob": "hi bob"})
        self.assertEqual(
            result.succeeded,
            [
                {"recipient": "alice", "content": "hi alice"},
                {"recipient": "bob", "content": "hi bob"},
            ],
        )
        self.assertEqual(result.failed, [])
        self.assertEqual(await alice.waitFor(1), ["DATA:hi alice"])
        self.assertEqual(await bob.waitFor(1), ["DATA:hi bob"])

    async def test_sendReportsFailedRecipients(self):
        """A message to someone not connected is lost without the backend being told."""
        daemon = Daemon(self)
        alice = await daemon.connect("alice")
        result = await relayClient(self, daemon).send({"alice": "hi", "nobody": "lost"})
        self.assertEqual(result.succeeded, [{"recipient": "alice", "content": "hi"}])
        self.assertEqual(result.failed, [{"recipient": "nobody", "content": "lost"}])
        self.assertEqual(await alice.waitFor(1), ["DATA:hi"])

    async def test_sendWithWrongSecretIsUnauthorized(self):
        """A wrong app secret is not reported as a 401 the backend can catch."""
        daemon = Daemon(self)
        client = relayClient(self, daemon, secret=OTHER_SECRET)
        error = await self.assertFailure(client.send({"alice": "hi"}), Unauthorized)
        self.assertEqual((error.status, error.message), (401, "Invalid secret"))

    async def test_sendForUnknownAppIsNotFound(self):
        """A misspelt app name is not reported as a NotFound naming the problem."""
        daemon = Daemon(self)
        client = relayClient(self, daemon, app="nosuchapp")
        error = await self.assertFailure(client.send({"alice": "hi"}), NotFound)
        self.assertEqual((error.status, error.message), (404, "Secret not found"))

    async def test_sendMalformedMessageIsBadRequest(self):
        """A message that is not two strings is not reported as a BadRequest."""
        daemon = Daemon(self)
        client = relayClient(self, daemon)
        error = await self.assertFailure(
            client.send([{"recipient": "alice", "content": 5}]), BadRequest
        )
        self.assertEqual((error.status, error.message), (400, "Malformed request"))

    async def test_sendOversizedBodyIsTooLarge(self):
        """A batch over the daemon's body limit is not reported as TooLarge."""
        daemon = Daemon(self, "--max-body-size", "1KiB")
        client = relayClient(self, daemon)
        error = await self.assertFailure(client.send({"alice": "x" * 2048}), TooLarge)
        self.assertEqual(error.status, 413)
        self.assertIn("too large", error.message)

    async def test_kickClosesAndReports(self):
        """A kicked client is not sent CLOSE, or the backend is not told who was connected."""
        daemon = Daemon(self)
        alice = await daemon.connect("alice")
        result = await relayClient(self, daemon).kick(["alice", "ghost"])
        self.assertEqual(result, KickResult(kicked=["alice"], not_connected=["ghost"]))
        await alice.closed
        self.assertEqual(alice.received, ["CLOSE"])

    async def test_kickOneIdAsAString(self):
        """kick("alice") kicks the connections "a", "l", "i", "c", "e" instead of alice."""
        daemon = Daemon(self)
        alice = await daemon.connect("alice")
        result = await relayClient(self, daemon).kick("alice")
        self.assertEqual(result, KickResult(kicked=["alice"], not_connected=[]))
        await alice.closed

    async def test_kickWithWrongSecretIsUnauthorized(self):
        """A kick with a wrong secret is not reported as a 401, or closes the client anyway."""
        daemon = Daemon(self)
        alice = await daemon.connect("alice")
        client = relayClient(self, daemon, secret="wrong")
        error = await self.assertFailure(client.kick(["alice"]), Unauthorized)
        self.assertEqual(error.status, 401)
        await relayClient(self, daemon).send({"alice": "still here"})
        self.assertEqual(await alice.waitFor(1), ["DATA:still here"])

    async def test_tokenIsAcceptedByTheDaemon(self):
        """A client given the SDK's token cannot connect, or does not get its messages."""
        daemon = Daemon(self)
        relay = relayClient(self, daemon)
        carol = await openWebSocket(daemon, relay.token("carol"))
        other = await openWebSocket(daemon, make_token(APP, SECRET, "dave"), "/receive")
        result = await relay.send({"carol": "welcome", "dave": "hello"})
        self.assertEqual(result.failed, [])
        self.assertEqual(await carol.waitFor(1), ["DATA:welcome"])
        self.assertEqual(await other.waitFor(1), ["DATA:hello"])

    async def test_tokenWithAnotherSecretIsRefused(self):
        """The daemon accepts a token that was not signed with the app's secret."""
        daemon = Daemon(self)
        token = make_token(APP, OTHER_SECRET, "mallory")
        await self.assertFailure(
            Deferred.fromCoroutine(openWebSocket(daemon, token)), ConnectionRefusedError
        )

    async def test_givenAgentIsUsed(self):
        """A backend's own agent (proxy, TLS settings) is ignored by the client."""
        daemon = Daemon(self)
        agent = CountingAgent(daemon.agent)
        client = RelayClient(daemon.url + "/", APP, SECRET, agent=agent, reactor=reactor)
        result = await client.send({"nobody": "x"})
        self.assertEqual(result.failed, [{"recipient": "nobody", "content": "x"}])
        self.assertEqual(agent.requests, [(b"POST", daemon.url.encode() + b"/send")])
        await client.close()

    async def test_closedPortIsAConnectionError(self):
        """A daemon that is not running makes the client hang or raise something unrelated."""
        url = f"http://127.0.0.1:{closedPort()}"
        relay = RelayClient(url, APP, SECRET)
        self.addCleanup(relay.close)
        await self.assertFailure(relay.send({"alice": "hi"}), ConnectError)
        accounts = accountsClient(self, url)
        await self.assertFailure(accounts.login("alice", PASSWORD), ConnectError)

    async def test_proxyErrorPageKeepsTheStatus(self):
        """An HTML error page from a proxy crashes the client instead of raising a 502 error."""
        port, _ = await listen(self, "tcp:0:interface=127.0.0.1", Site(ProxyErrorPage()))
        client = RelayClient(f"http://127.0.0.1:{port}", APP, SECRET)
        self.addCleanup(client.close)
        error = await self.assertFailure(client.send({"alice": "hi"}), SocktopusError)
        self.assertIs(type(error), SocktopusError)
        self.assertEqual(error.status, 502)
        self.assertIn("502 Bad Gateway", error.message)


class AccountsClientTests(TestCase):
    async def newUser(self, client: AccountsClient, name: str) -> tuple[int, Session]:
        userId = await client.register(name, PASSWORD, f"{name}@example.com")
        return userId, await client.login(name, PASSWORD)

    def setUp(self):
        self.daemon = Daemon(self, *FAST)
        self.client = accountsClient(self, self.daemon.url)

    async def test_registerReturnsTheUserId(self):
        """Registering does not give the backend the new user's id as an int."""
        first = await self.client.register("alice", PASSWORD, "alice@example.com")
        second = await self.client.register("bob", PASSWORD, "bob@example.com", recaptcha="")
        self.assertIsInstance(first, int)
        self.assertNotEqual(first, second)

    async def test_registerTakenNameIsConflict(self):
        """A taken user name is not reported as a Conflict the signup form can show."""
        await self.client.register("alice", PASSWORD, "alice@example.com")
        error = await self.assertFailure(
            self.client.register("ALICE", PASSWORD, "other@example.com"), Conflict
        )
        self.assertEqual(error.status, 409)
        self.assertTrue(error.message)

    async def test_registerShortPasswordIsBadRequest(self):
        """A refused password is not reported as a BadRequest with the daemon's reason."""
        error = await self.assertFailure(
            self.client.register("alice", "short", "alice@example.com"), BadRequest
        )
        self.assertEqual(error.status, 400)
        self.assertIn("assword", error.message)

    async def test_registerOversizedBodyIsTooLarge(self):
        """An accounts request over the body limit is not reported as TooLarge."""
        daemon = Daemon(self, *FAST, "--max-body-size", "1KiB")
        client = accountsClient(self, daemon.url)
        error = await self.assertFailure(
            client.register("alice", PASSWORD, "a" * 2048 + "@example.com"), TooLarge
        )
        self.assertEqual((error.status, error.message), (413, "Request body too large"))

    async def test_loginReturnsASession(self):
        """Logging in does not give a usable session with an aware expiry in the future."""
        userId, session = await self.newUser(self.client, "alice")
        self.assertEqual(session.user_id, userId)
        self.assertIsInstance(session.secret, str)
        self.assertEqual(len(base64.b64decode(session.secret, validate=True)), 64)
        self.assertIsNotNone(session.expiration.tzinfo)
        self.assertGreater(session.expiration, datetime.now(UTC))
        self.assertLess(session.expiration, datetime.now(UTC) + timedelta(days=1))

    async def test_loginStayLoggedInLastsDays(self):
        """ "Stay logged in" is not passed on: the session ends after half an hour."""
        await self.client.register("alice", PASSWORD, "alice@example.com")
        session = await self.client.login("alice", PASSWORD, stay_logged_in=True)
        self.assertGreater(session.expiration, datetime.now(UTC) + timedelta(days=6))

    async def test_loginWrongPasswordIsUnauthorized(self):
        """A wrong password is not reported as Unauthorized with the daemon's message."""
        await self.client.register("alice", PASSWORD, "alice@example.com")
        error = await self.assertFailure(
            self.client.login("alice", "not the password"), Unauthorized
        )
        self.assertEqual(
            (error.status, error.message), (401, "User and password combination incorrect")
        )

    async def test_verifyReturnsTheSameSession(self):
        """Verifying a live secret fails, or answers for another user or secret."""
        userId, session = await self.newUser(self.client, "alice")
        verified = await self.client.verify("alice", session.secret)
        self.assertEqual((verified.user_id, verified.secret), (userId, session.secret))
        self.assertGreaterEqual(verified.expiration, session.expiration)

    async def test_verifyWrongSecretIsUnauthorized(self):
        """A made-up secret is accepted by verify."""
        await self.newUser(self.client, "alice")
        forged = base64.b64encode(b"\0" * 64).decode()
        error = await self.assertFailure(self.client.verify("alice", forged), Unauthorized)
        self.assertEqual(error.status, 401)

    async def test_registeredIsTrueWithoutMail(self):
        """A user of a daemon without mail is reported as not registered."""
        _, session = await self.newUser(self.client, "alice")
        self.assertIs(await self.client.registered(session), True)

    async def test_registeredFollowsTheMailedLink(self):
        """registered() does not say False before the mailed link is followed and True after."""
        mail = await MailServer.start(self)
        daemon = Daemon(
            self,
            *FAST,
            "--smtp",
            mail.url,
            "--mail-from",
            "a@example.com",
            "--public-url",
            PUBLIC_URL,
        )
        client = accountsClient(self, daemon.url)
        _, session = await self.newUser(client, "newbie")
        self.assertIs(await client.registered(session), False)
        link = urlsplit(LINK.search((await mail.waitFor(1)).text()).group(0))
        response = await treq.get(
            f"{daemon.url}{link.path}?{link.query}", agent=daemon.agent, allow_redirects=False
        )
        await response.content()
        self.assertEqual(response.code, 302)
        self.assertIs(await client.registered(session), True)

    async def test_repeatedSignedRequestsAreNotReplays(self):
        """Asking the same thing twice in a second fails as a replayed request."""
        _, session = await self.newUser(self.client, "alice")
        for _ in range(3):
            self.assertIs(await self.client.registered(session), True)
            self.assertEqual(
                await self.client.get_ids(session, "alice"), ({"alice": session.user_id}, {})
            )

    async def test_getIdsSplitsFoundAndMissing(self):
        """Looking up names does not give ids for the users found and errors for the rest."""
        aliceId, session = await self.newUser(self.client, "alice")
        bobId = await self.client.register("bob", PASSWORD, "bob@example.com")
        ids, errors = await self.client.get_ids(session, ["alice", "bob", "nobody"])
        self.assertEqual(ids, {"alice": aliceId, "bob": bobId})
        self.assertEqual(list(errors), ["nobody"])

    async def test_checkHeadersReturnsTheUserId(self):
        """Another backend cannot check a user's Auth Headers through the client."""
        userId, session = await self.newUser(self.client, "alice")
        headers = auth_headers(userId, session.secret, "/orders?page=2")
        # All of the backend's incoming headers, as a web framework hands them over.
        incoming = {
            "Host": "shop.example.com",
            "Content-Length": "123",
            "Content-Type": "text/plain",
            **headers,
        }
        self.assertEqual(await self.client.check_headers(incoming), userId)
        raw = {
            name.lower().encode(): [value.encode()]
            for name, value in auth_headers(userId, session.secret, "/orders?page=3").items()
        }
        self.assertEqual(await self.client.check_headers(raw), userId)

    async def test_checkHeadersRefusesABadSignature(self):
        """Forged Auth Headers are accepted as the user's."""
        userId, session = await self.newUser(self.client, "alice")
        headers = auth_headers(userId, session.secret, "/orders")
        headers["HMAC"] = "0" * 64
        error = await self.assertFailure(self.client.check_headers(headers), Unauthorized)
        self.assertEqual((error.status, error.message), (401, "Not Authorized Request"))
        await self.assertFailure(self.client.check_headers({}), Unauthorized)

    async def test_signedRequestSignsTheQueryString(self):
        """A signed request with a query string is refused because the query was not signed."""
        userId, session = await self.newUser(self.client, "alice")
        answer = await self.client.signed_request(session, "GET", "/users/getID?usernames=alice")
        self.assertEqual(answer, {"UserIDs": {"alice": userId}, "Errors": {}})
        # A space is sent percent-encoded; the signature must cover that form.
        answer = await self.client.signed_request(
            session, "GET", "/users/getID?username=alice&usernames=no body"
        )
        self.assertEqual(answer["UserIDs"], {"alice": userId})
        self.assertEqual(list(answer["Errors"]), ["no body"])

    async def test_signedRequestRefusesParams(self):
        """params= is appended to the URL after signing, so the daemon refuses the request."""
        _, session = await self.newUser(self.client, "alice")
        await self.assertFailure(
            self.client.signed_request(
                session, "GET", "/users/getID", params={"username": "alice"}
            ),
            TypeError,
        )
        await self.assertFailure(
            self.client.signed_request(session, "GET", "users/getID"), ValueError
        )

    async def test_signedRequestErrorsAreTyped(self):
        """An unknown path or wrong method is not reported with its status."""
        _, session = await self.newUser(self.client, "alice")
        error = await self.assertFailure(
            self.client.signed_request(session, "GET", "/no/such/path"), NotFound
        )
        self.assertEqual(error.status, 404)
        error = await self.assertFailure(
            self.client.signed_request(session, "GET", "/logout"), SocktopusError
        )
        self.assertIs(type(error), SocktopusError)
        self.assertEqual(error.status, 405)

    async def test_logoutEndsTheSession(self):
        """After logout the session's secret still signs requests."""
        _, session = await self.newUser(self.client, "alice")
        await self.client.logout(session)
        await self.assertFailure(
            self.client.signed_request(session, "GET", "/users/getID?usernames=alice"), Unauthorized
        )
        await self.assertFailure(self.client.verify("alice", session.secret), Unauthorized)
        await self.assertFailure(self.client.logout(session), Unauthorized)

    async def test_changePasswordTakesEffect(self):
        """After a password change the old password or the old sessions still work."""
        _, session = await self.newUser(self.client, "alice")
        newPassword = "a whole new password"
        self.assertIsNone(await self.client.change_password("alice", PASSWORD, newPassword))
        await self.assertFailure(self.client.registered(session), Unauthorized)
        await self.assertFailure(self.client.login("alice", PASSWORD), Unauthorized)
        fresh = await self.client.login("alice", newPassword)
        self.assertNotEqual(fresh.secret, session.secret)
        self.assertIs(await self.client.registered(fresh), True)

    async def test_changePasswordWithWrongPasswordIsUnauthorized(self):
        """Anyone can change a user's password without knowing the current one."""
        await self.newUser(self.client, "alice")
        await self.assertFailure(
            self.client.change_password("alice", "not the password", "whatever123"), Unauthorized
        )
        await self.client.login("alice", PASSWORD)
