"""
The accounts service end to end (SPEC §4): the real daemon on a free port,
real HTTP, a real SMTP server, a real HTTPS reCAPTCHA stand-in, real
WebSocket clients. Passwords are hashed at bcrypt cost 4 except where the
cost is the point. One resource, L{Register}, is also driven directly, to
lose its client at a chosen moment.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import time
from urllib.parse import quote, urlsplit

import treq
from twisted.internet.defer import Deferred, gatherResults, inlineCallbacks
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.server import Request
from twisted.web.test.requesthelper import DummyChannel

from socktopus_tw.accounts.api import Register
from tests.support.accounts import (
    PASSWORD,
    CertificateAuthority,
    MailServer,
    RecaptchaServer,
    basicAuthorization,
    closedPort,
    login,
    parseExpiration,
    register,
    registerAndLogin,
    signedHeaders,
    writeFile,
)
from tests.support.daemon import Daemon

FAST = ("--bcrypt-rounds", "4")
NOT_AUTHORIZED = {"Error": "Not Authorized Request"}
WRONG_CREDENTIALS = {"Error": "User and password combination incorrect"}
PUBLIC_URL = "https://accounts.example.com"
REDIRECT = "https://app.example.com/welcome"
MAIL_FROM = "accounts@example.com"
LINK = re.compile(re.escape(PUBLIC_URL) + r"/users/(\d+)/register\?code=([0-9a-f]{64})(?![0-9a-f])")
RECAPTCHA_SECRET = "recaptcha-secret-for-tests"
SQL = "'\"; -- "


def fastDaemon(testCase: TestCase, *arguments: str) -> Daemon:
    return Daemon(testCase, *FAST, *arguments)


@inlineCallbacks
def getWithoutRedirects(daemon: Daemon, path: str):
    """
    GET C{path} and report a redirect instead of following it:
    C{(status, Location or None, body)}.
    """
    response = yield treq.get(daemon.url + path, agent=daemon.agent, allow_redirects=False)
    body = yield response.content()
    location = response.headers.getRawHeaders(b"location", [None])[0]
    return response.code, location, body


def authHeaders(daemon: Daemon, userId: int, secret: str, path: str = "/authHeaders", **kw):
    return daemon.post("/authHeaders", None, headers=signedHeaders(userId, secret, path, **kw))


class RegistrationTests(TestCase):
    @inlineCallbacks
    def test_registerAnswersUserIdAndUserCanUseAuthHeadersAtOnce(self):
        """Without mail configured, a new user can log in and sign requests straight away."""
        daemon = fastDaemon(self)
        status, body, _ = yield daemon.post(
            "/users", {"User": "alice", "Password": PASSWORD, "Email": "alice@example.com"}
        )
        self.assertEqual(status, 200)
        self.assertEqual(list(body), ["UserID"])
        self.assertIs(type(body["UserID"]), int)
        answer = yield login(daemon, "alice")
        self.assertEqual(answer["UserID"], body["UserID"])
        status, checked, _ = yield authHeaders(daemon, body["UserID"], answer["Secret"])
        self.assertEqual((status, checked), (200, {"UserID": body["UserID"]}))
        path = f"/users/{body['UserID']}/registered"
        status, registered, _ = yield daemon.request(
            "GET", path, headers=signedHeaders(body["UserID"], answer["Secret"], path)
        )
        self.assertEqual((status, registered), (200, {"Registered": True}))

    @inlineCallbacks
    def test_duplicateNameIsConflictAlsoInOtherCase(self):
        """A second account cannot take a name already taken, whatever its letter case."""
        daemon = fastDaemon(self)
        yield register(daemon, "Alice_1")
        for name in ("Alice_1", "alice_1", "ALICE_1"):
            status, body, _ = yield daemon.post(
                "/users", {"User": name, "Password": PASSWORD, "Email": "x@example.com"}
            )
            self.assertEqual(status, 409, name)
            self.assertEqual(list(body), ["Error"])
            self.assertIsInstance(body["Error"], str)

    @inlineCallbacks
    def test_twoConcurrentRegistrationsOfOneNameOnlyOneWins(self):
        """Two people registering the same name at once never both get the account."""
        daemon = fastDaemon(self)
        results = yield gatherResults(
            [
                daemon.post(
                    "/users",
                    {
                        "User": "race",
                        "Password": f"{PASSWORD} {n}",
                        "Email": f"race{n}@example.com",
                    },
                )
                for n in range(2)
            ]
        )
        self.assertEqual(sorted(status for status, _, _ in results), [200, 409])
        winner = next(n for n, (status, _, _) in enumerate(results) if status == 200)
        loser = 1 - winner
        self.assertEqual(list(results[loser][1]), ["Error"])
        yield login(daemon, "race", f"{PASSWORD} {winner}")
        status, _, _ = yield daemon.post(
            "/login", {"User": "race", "Password": f"{PASSWORD} {loser}"}
        )
        self.assertEqual(status, 401)

    @inlineCallbacks
    def test_badNamesAreRefused(self):
        """Names outside [A-Za-z0-9_]{1,64} are refused with a message, not stored."""
        daemon = fastDaemon(self)
        for name in (
            "",
            "a" * 65,
            "has space",
            "dash-name",
            "dot.name",
            "ünïcode",
            "a\nb",
            "tab\t",
            "x@y",
        ):
            status, body, _ = yield daemon.post(
                "/users", {"User": name, "Password": PASSWORD, "Email": "x@example.com"}
            )
            self.assertEqual(status, 400, repr(name))
            self.assertEqual(list(body), ["Error"], repr(name))
        yield register(daemon, "a" * 64)
        yield register(daemon, "_")

    @inlineCallbacks
    def test_shortPasswordIsRefused(self):
        """Passwords under 8 characters are refused, and no account is made."""
        daemon = fastDaemon(self)
        for password in ("", "1234567", "\U0001f511" * 7):
            status, body, _ = yield daemon.post(
                "/users", {"User": "shorty", "Password": password, "Email": "s@example.com"}
            )
            self.assertEqual(status, 400, repr(password))
            self.assertEqual(list(body), ["Error"])
        yield register(daemon, "shorty", "12345678")

    @inlineCallbacks
    def test_passwordOver72BytesIsRefusedNeverCut(self):
        """A 73-byte password is refused, and nobody ever logs in with a cut-off password."""
        daemon = fastDaemon(self)
        password73 = "p" * 73
        status, body, _ = yield daemon.post(
            "/users", {"User": "long", "Password": password73, "Email": "l@example.com"}
        )
        self.assertEqual(status, 400)
        self.assertEqual(list(body), ["Error"])
        for attempt in (password73, password73[:72]):
            status, body, _ = yield daemon.post("/login", {"User": "long", "Password": attempt})
            self.assertEqual((status, body), (401, WRONG_CREDENTIALS))

        # bcrypt reads only 72 bytes: a user whose password is those 72 bytes
        # must not be let in with a longer one.
        password72 = "p" * 72
        yield register(daemon, "exact", password72)
        yield login(daemon, "exact", password72)
        for attempt in (password73, password72 + "anything else"):
            status, body, _ = yield daemon.post("/login", {"User": "exact", "Password": attempt})
            self.assertEqual((status, body), (401, WRONG_CREDENTIALS))
            status, body, _ = yield daemon.post(
                "/login", None, headers=basicAuthorization("exact", attempt)
            )
            self.assertEqual((status, body), (401, WRONG_CREDENTIALS))

    @inlineCallbacks
    def test_unicodePasswordsWork(self):
        """People with non-ASCII passwords can register and log in both ways."""
        daemon = fastDaemon(self)
        passwords = {"uni1": "pässwörd-密码-\U0001f511", "uni2": "\U0001f511" * 8, "uni3": "é" * 36}
        for name, password in passwords.items():
            yield register(daemon, name, password)
            answer = yield login(daemon, name, password)
            status, basic, _ = yield daemon.post(
                "/login", None, headers=basicAuthorization(name, password)
            )
            self.assertEqual(status, 200, name)
            self.assertEqual(basic["Secret"], answer["Secret"])
        status, _, _ = yield daemon.post("/login", {"User": "uni1", "Password": "passwords"})
        self.assertEqual(status, 401)
        # Counted in bytes at the top: 19 emoji are 76 bytes, 37 é are 74.
        for name, password in (("uni4", "\U0001f511" * 19), ("uni5", "é" * 37)):
            status, _, _ = yield daemon.post(
                "/users", {"User": name, "Password": password, "Email": "u@example.com"}
            )
            self.assertEqual(status, 400, name)

    @inlineCallbacks
    def test_invalidEmailIsRefused(self):
        """Registrations with addresses that cannot be mailed are refused with a message."""
        daemon = fastDaemon(self)
        for email in (
            "",
            "plain",
            "a@b",
            "a b@example.com",
            "@example.com",
            "a@@example.com",
            "a@example.com\n",
            "x" * 250 + "@example.com",
        ):
            status, body, _ = yield daemon.post(
                "/users", {"User": "mailer", "Password": PASSWORD, "Email": email}
            )
            self.assertEqual(status, 400, repr(email))
            self.assertEqual(list(body), ["Error"])
        yield register(daemon, "mailer", email="first.last+tag@sub.example.co.uk")

    @inlineCallbacks
    def test_malformedBodiesAreBadRequests(self):
        """Clients sending broken registrations get a 400 with a message, never a crash."""
        daemon = fastDaemon(self)
        good = {"User": "shape", "Password": PASSWORD, "Email": "s@example.com"}
        bodies = [
            {k: v for k, v in good.items() if k != "User"},
            {k: v for k, v in good.items() if k != "Password"},
            {k: v for k, v in good.items() if k != "Email"},
            {},
            {**good, "User": 5},
            {**good, "User": None},
            {**good, "Password": ["x" * 10]},
            {**good, "Password": 12345678},
            {**good, "Email": {"a": "b"}},
            {**good, "Email": True},
            {**good, "Recaptcha": 5},
            [good],
            "text",
            5,
            None,
            True,
        ]
        for body in bodies:
            status, answer, _ = yield daemon.post("/users", body if body is not None else b"null")
            self.assertEqual(status, 400, repr(body))
            self.assertEqual(list(answer), ["Error"], repr(body))
        for raw in (b"{", b"", b"\xff\xfe", b'{"User": "shape",}', b"[" * 100000 + b"]" * 100000):
            status, answer, _ = yield daemon.post("/users", raw)
            self.assertEqual(status, 400, repr(raw[:20]))
            self.assertEqual(list(answer), ["Error"])
        yield register(daemon, "shape")

    @inlineCallbacks
    def test_hugeBodyIsTooLarge(self):
        """A body over --max-body-size is answered 413, and the daemon keeps serving."""
        daemon = fastDaemon(self, "--max-body-size", "1KiB")
        for path in ("/users", "/login"):
            status, answer, _ = yield daemon.post(
                path, {"User": "big", "Password": "x" * 2000, "Email": "b@example.com"}
            )
            self.assertEqual(status, 413, path)
            self.assertIsInstance(answer, dict, path)
        yield register(daemon, "big")
        yield login(daemon, "big")

    @inlineCallbacks
    def test_hugeBodyIsRefusedInTheAccountsErrorShape(self):
        """Account clients reading the Error field of a refusal find it on a 413 too."""
        daemon = fastDaemon(self, "--max-body-size", "1KiB")
        for path in ("/users", "/login", "/changePassword"):
            status, answer, _ = yield daemon.post(path, {"User": "big", "Password": "x" * 2000})
            self.assertEqual((status, list(answer)), (413, ["Error"]), (path, answer))


class SqlMetacharacterTests(TestCase):
    @inlineCallbacks
    def test_metacharactersInFieldsAreLiteral(self):
        """Quotes, semicolons and dashes in any field never break the service or its data."""
        daemon = fastDaemon(self)
        tricky = "pa'ss\"wo;rd -- " + SQL
        userId = yield register(daemon, "quoted", tricky, email="o'ha\"ra;--@exa'mple.com")
        yield login(daemon, "quoted", tricky)
        for name in ("x'", "x' OR '1'='1", 'x"; DROP TABLE users; --', "x;--", SQL):
            status, body, _ = yield daemon.post(
                "/users", {"User": name, "Password": tricky, "Email": "a@example.com"}
            )
            self.assertEqual((status, list(body)), (400, ["Error"]), name)
            for password in (tricky, "' OR '1'='1"):
                status, body, _ = yield daemon.post("/login", {"User": name, "Password": password})
                self.assertEqual((status, body), (401, WRONG_CREDENTIALS), name)
            status, body, _ = yield daemon.post(
                "/login", None, headers=basicAuthorization(name, SQL)
            )
            self.assertEqual((status, body), (401, WRONG_CREDENTIALS), name)
            status, body, _ = yield daemon.post("/verifySecret", {"User": name, "Secret": SQL})
            self.assertEqual(status, 401, name)
            status, body, _ = yield daemon.post(
                "/changePassword", {"User": name, "Password": tricky, "NewPassword": tricky}
            )
            self.assertEqual((status, body), (401, WRONG_CREDENTIALS), name)
        for password in ("' OR '1'='1", "' OR 1=1 --", "quoted'--", SQL + "x" * 8):
            status, body, _ = yield daemon.post("/login", {"User": "quoted", "Password": password})
            self.assertEqual((status, body), (401, WRONG_CREDENTIALS), password)
        status, body, _ = yield daemon.post(
            "/login", {"User": "quoted", "Password": tricky, "StayLoggedIn": SQL}
        )
        self.assertEqual((status, list(body)), (400, ["Error"]))
        status, body, _ = yield daemon.post("/verifySecret", {"User": "quoted", "Secret": SQL})
        self.assertEqual((status, list(body)), (401, ["Error"]))
        status, body, _ = yield daemon.post(
            "/login", None, headers={"Authorization": "Basic " + SQL}
        )
        self.assertEqual((status, body), (401, WRONG_CREDENTIALS))
        # The account is unharmed and its password is exactly what was sent.
        answer = yield login(daemon, "quoted", tricky)
        self.assertEqual(answer["UserID"], userId)
        status, _, _ = yield daemon.post(
            "/users", {"User": "quoted", "Password": tricky, "Email": "q@example.com"}
        )
        self.assertEqual(status, 409)
        status, _, _ = yield daemon.post(
            "/changePassword",
            {"User": "quoted", "Password": tricky, "NewPassword": tricky + "'; --"},
        )
        self.assertEqual(status, 200)
        yield login(daemon, "quoted", tricky + "'; --")

    @inlineCallbacks
    def test_metacharactersInHeadersAreRefusedOrLiteral(self):
        """Quotes, semicolons and dashes in Auth Headers never cause a server error."""
        daemon = fastDaemon(self)
        userId, secret = yield registerAndLogin(daemon, "headers")
        now = time.time()
        # A Path is opaque text to /authHeaders: signed properly, it passes as is.
        path = '/orders/1\'; DELETE FROM sessions; --?q="x"'
        status, body, _ = yield authHeaders(daemon, userId, secret, path)
        self.assertEqual((status, body), (200, {"UserID": userId}))
        good = signedHeaders(userId, secret, "/other/path", now)
        for header in ("UserID", "Path", "Time-Sent", "HMAC", "Encoding"):
            for value in ("1'", "1 OR 1=1", "1; DROP TABLE sessions; --", '"', SQL.strip()):
                headers = {**good, header: value}
                status, body, _ = yield daemon.post("/authHeaders", None, headers=headers)
                self.assertEqual((status, body), (401, NOT_AUTHORIZED), (header, value))
        status, body, _ = yield daemon.post("/authHeaders", None, headers=good)
        self.assertEqual((status, body), (200, {"UserID": userId}))

        query = "?usernames=" + quote("x',headers,y\";--,a;b", safe=",")
        getIdPath = "/users/getID" + query
        status, body, _ = yield daemon.request(
            "GET", getIdPath, headers=signedHeaders(userId, secret, getIdPath)
        )
        self.assertEqual(status, 200, body)
        self.assertEqual(body["UserIDs"], {"headers": userId})
        self.assertEqual(sorted(body["Errors"]), sorted(["x'", 'y";--', "a;b"]))


class MailRegistrationTests(TestCase):
    @inlineCallbacks
    def mailingDaemon(self, smtpUrl: str | None = None, publicUrl: str = PUBLIC_URL):
        mail = None
        if smtpUrl is None:
            mail = yield MailServer.start(self)
            smtpUrl = mail.url
        daemon = fastDaemon(
            self,
            "--smtp",
            smtpUrl,
            "--mail-from",
            MAIL_FROM,
            "--public-url",
            publicUrl,
            "--registered-redirect",
            REDIRECT,
        )
        return daemon, mail

    @inlineCallbacks
    def test_mailedLinkRegistersTheUser(self):
        """A new user gets one mail whose link registers them and sends them on to the app."""
        daemon, mail = yield self.mailingDaemon()
        userId = yield register(daemon, "newbie", email="newbie@example.org")
        received = yield mail.waitFor(1)
        self.assertEqual(received.recipient, "newbie@example.org")
        self.assertEqual(received.sender, MAIL_FROM)
        self.assertEqual(received.header("To"), "newbie@example.org")
        self.assertEqual(received.header("From"), MAIL_FROM)
        links = LINK.findall(received.text())
        self.assertEqual(links, [(str(userId), links[0][1])])

        # Before the link is followed, the user may only ask whether it is registered.
        answer = yield login(daemon, "newbie")
        secret = answer["Secret"]
        status, body, _ = yield authHeaders(daemon, userId, secret)
        self.assertEqual((status, body), (401, NOT_AUTHORIZED))
        for method, path in (("GET", "/users/getID?username=newbie"), ("POST", "/logout")):
            status, body, _ = yield daemon.request(
                method, path, headers=signedHeaders(userId, secret, path)
            )
            self.assertEqual((status, body), (401, NOT_AUTHORIZED), path)
        registeredPath = f"/users/{userId}/registered"
        status, body, _ = yield daemon.request(
            "GET",
            registeredPath,
            headers=signedHeaders(userId, secret, registeredPath, time.time() - 1),
        )
        self.assertEqual((status, body), (200, {"Registered": False}))

        linkPath = urlsplit(LINK.search(received.text()).group(0))
        status, location, _ = yield getWithoutRedirects(daemon, f"{linkPath.path}?{linkPath.query}")
        self.assertEqual((status, location), (302, REDIRECT.encode()))

        status, body, _ = yield daemon.request(
            "GET", registeredPath, headers=signedHeaders(userId, secret, registeredPath)
        )
        self.assertEqual((status, body), (200, {"Registered": True}))
        status, body, _ = yield authHeaders(daemon, userId, secret, "/after")
        self.assertEqual((status, body), (200, {"UserID": userId}))

        # The link is used up.
        status, location, body = yield getWithoutRedirects(
            daemon, f"{linkPath.path}?{linkPath.query}"
        )
        self.assertEqual((status, location), (400, None))
        self.assertIn(b'"Error"', body)
        self.assertEqual(len(mail.messages), 1)

    @inlineCallbacks
    def test_wrongCodeIsRefusedAndKeepsTheRightOne(self):
        """Guessing a registration code fails and does not spoil the mailed link."""
        daemon, mail = yield self.mailingDaemon(publicUrl=PUBLIC_URL + "/")
        userId = yield register(daemon, "guessed")
        received = yield mail.waitFor(1)
        _, code = LINK.search(received.text()).groups()
        wrong = ("0" if code[0] != "0" else "1") + code[1:]
        for query in (f"?code={wrong}", "?code=", "", f"?code={code[:-1]}", f"?code={code}0"):
            status, location, body = yield getWithoutRedirects(
                daemon, f"/users/{userId}/register{query}"
            )
            self.assertEqual((status, location), (400, None), query)
            self.assertIn(b'"Error"', body)
        status, _, _ = yield getWithoutRedirects(
            daemon, f"/users/{userId + 1}/register?code={code}"
        )
        self.assertEqual(status, 400)
        status, location, _ = yield getWithoutRedirects(
            daemon, f"/users/{userId}/register?code={code}"
        )
        self.assertEqual((status, location), (302, REDIRECT.encode()))

    @inlineCallbacks
    def test_registeredAsksOnlyAboutOneself(self):
        """One user's Auth Headers cannot ask about another user's registration."""
        daemon, mail = yield self.mailingDaemon()
        first = yield register(daemon, "first")
        second = yield register(daemon, "second")
        yield mail.waitFor(2)
        answer = yield login(daemon, "first")
        path = f"/users/{second}/registered"
        status, body, _ = yield daemon.request(
            "GET", path, headers=signedHeaders(first, answer["Secret"], path)
        )
        self.assertEqual((status, body), (401, NOT_AUTHORIZED))
        status, body, _ = yield daemon.request("GET", f"/users/{first}/registered")
        self.assertEqual((status, body), (401, NOT_AUTHORIZED))

    @inlineCallbacks
    def test_mailServerDownIsUnavailableAndNameStaysFree(self):
        """When the mail server is down, registering says try again, and trying again works."""
        port = closedPort()
        daemon, _ = yield self.mailingDaemon(f"smtp://127.0.0.1:{port}")
        status, body, response = yield daemon.post(
            "/users", {"User": "patient", "Password": PASSWORD, "Email": "p@example.com"}
        )
        self.assertEqual(status, 503)
        self.assertEqual(list(body), ["Error"])
        self.assertEqual(response.headers.getRawHeaders(b"content-type"), [b"application/json"])
        status, body, _ = yield daemon.post("/login", {"User": "patient", "Password": PASSWORD})
        self.assertEqual((status, body), (401, WRONG_CREDENTIALS))

        mail = yield MailServer.start(self, port)
        userId = yield register(daemon, "patient")
        received = yield mail.waitFor(1)
        self.assertEqual(LINK.search(received.text()).group(1), str(userId))


class FakeAccounts:
    registeredRedirect = "/welcome"

    def __init__(self):
        self.pending = Deferred()

    def completeRegistration(self, userId, code, ip=None):
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


class RecaptchaTests(TestCase):
    @inlineCallbacks
    def recaptchaDaemon(
        self,
        secret: str = RECAPTCHA_SECRET,
        url: str | None = None,
        serverAuthority: CertificateAuthority | None = None,
    ):
        """
        A daemon trusting a fresh CA for a verifier whose certificate is
        issued by C{serverAuthority} (the same CA unless told otherwise).
        """
        trusted = CertificateAuthority("Trusted test CA")
        server = None
        if url is None:
            server = yield RecaptchaServer.start(self, serverAuthority or trusted, RECAPTCHA_SECRET)
            url = server.url
        caPath = writeFile(self, ".ca.pem", trusted.pem())
        daemon = fastDaemon(
            self,
            "--recaptcha-secret",
            secret,
            "--recaptcha-verify-url",
            url,
            "--recaptcha-ca",
            caPath,
        )
        return daemon, server

    def registration(self, name: str, **extra: object) -> dict[str, object]:
        return {"User": name, "Password": PASSWORD, "Email": f"{name}@example.com", **extra}

    @inlineCallbacks
    def test_goodAnswerRegisters(self):
        """People who pass the reCAPTCHA can register."""
        daemon, server = yield self.recaptchaDaemon()
        status, body, _ = yield daemon.post("/users", self.registration("human", Recaptcha="good"))
        self.assertEqual(status, 200, body)
        self.assertEqual(len(server.forms), 1)
        self.assertEqual(server.forms[0]["secret"], RECAPTCHA_SECRET)
        self.assertEqual(server.forms[0]["response"], "good")
        yield login(daemon, "human")

    @inlineCallbacks
    def test_badOrMissingAnswerIsRefused(self):
        """Bots that fail or skip the reCAPTCHA cannot register, and the name stays free."""
        daemon, server = yield self.recaptchaDaemon()
        for extra in (
            {"Recaptcha": "bad"},
            {"Recaptcha": "GOOD"},
            {"Recaptcha": SQL},
            {"Recaptcha": ""},
            {},
        ):
            status, body, _ = yield daemon.post("/users", self.registration("bot", **extra))
            self.assertEqual(status, 400, extra)
            self.assertEqual(list(body), ["Error"])
        self.assertEqual([f["response"] for f in server.forms], ["bad", "GOOD", SQL])
        status, _, _ = yield daemon.post("/login", {"User": "bot", "Password": PASSWORD})
        self.assertEqual(status, 401)
        yield register(daemon, "bot", Recaptcha="good")

    @inlineCallbacks
    def test_wrongSecretFails(self):
        """A daemon configured with the wrong reCAPTCHA secret lets nobody through."""
        daemon, server = yield self.recaptchaDaemon(secret="not-the-secret")
        status, body, _ = yield daemon.post("/users", self.registration("human", Recaptcha="good"))
        self.assertEqual((status, list(body)), (400, ["Error"]))
        self.assertEqual(server.forms[0]["secret"], "not-the-secret")

    @inlineCallbacks
    def test_untrustedVerifierIsUnavailableNeverAPass(self):
        """An impostor verifier with a certificate we do not trust never lets a bot in."""
        impostorCA = CertificateAuthority("Impostor CA")
        daemon, server = yield self.recaptchaDaemon(serverAuthority=impostorCA)
        status, body, _ = yield daemon.post("/users", self.registration("bot", Recaptcha="good"))
        self.assertEqual((status, list(body)), (503, ["Error"]))
        self.assertEqual(server.forms, [])
        status, _, _ = yield daemon.post("/login", {"User": "bot", "Password": PASSWORD})
        self.assertEqual(status, 401)

    @inlineCallbacks
    def test_verifierDownIsUnavailable(self):
        """When reCAPTCHA cannot be reached, registering says try again instead of crashing."""
        url = f"https://127.0.0.1:{closedPort()}/siteverify"
        daemon, _ = yield self.recaptchaDaemon(url=url)
        status, body, _ = yield daemon.post("/users", self.registration("human", Recaptcha="good"))
        self.assertEqual((status, list(body)), (503, ["Error"]))


class LoginTests(TestCase):
    @inlineCallbacks
    def test_loginAnswersSecretUserIdAndExpiration(self):
        """A login answers the secret, the user id and an RFC 3339 expiry, as clients expect."""
        daemon = fastDaemon(self)
        userId = yield register(daemon, "logger")
        status, body, response = yield daemon.post(
            "/login", {"User": "logger", "Password": PASSWORD}
        )
        self.assertEqual(status, 200)
        self.assertEqual(sorted(body), ["Expiration", "Secret", "UserID"])
        self.assertEqual(body["UserID"], userId)
        self.assertRegex(body["Expiration"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
        self.assertRegex(body["Secret"], r"^[A-Za-z0-9+/]{86}==$")
        self.assertEqual(len(base64.b64decode(body["Secret"], validate=True)), 64)
        self.assertEqual(response.headers.getRawHeaders(b"content-type"), [b"application/json"])

    @inlineCallbacks
    def test_basicAuthorizationLogsIn(self):
        """Clients logging in with Authorization: Basic get the same session as with JSON."""
        daemon = fastDaemon(self)
        userId = yield register(daemon, "basic")
        status, body, _ = yield daemon.post(
            "/login", None, headers=basicAuthorization("basic", PASSWORD)
        )
        self.assertEqual(status, 200, body)
        self.assertEqual(body["UserID"], userId)
        again = yield login(daemon, "basic")
        self.assertEqual(again["Secret"], body["Secret"])
        status, body, _ = yield daemon.post(
            "/login", None, headers=basicAuthorization("basic", "wrong password")
        )
        self.assertEqual((status, body), (401, WRONG_CREDENTIALS))
        for header in (
            "Basic !!!notbase64",
            "Basic " + base64.b64encode(b"nocolon").decode(),
            "Bearer abc",
        ):
            status, body, _ = yield daemon.post("/login", None, headers={"Authorization": header})
            self.assertEqual(status, 401, header)

    @inlineCallbacks
    def test_wrongPasswordAndUnknownUserLookTheSame(self):
        """Nobody can tell from the answer whether a user name exists."""
        daemon = fastDaemon(self)
        yield register(daemon, "exists")
        answers = []
        for body in (
            {"User": "exists", "Password": "wrong password"},
            {"User": "missing", "Password": "wrong password"},
            {"User": "missing", "Password": PASSWORD},
            {"User": "not a valid name!", "Password": PASSWORD},
        ):
            status, answer, response = yield daemon.post("/login", body)
            answers.append((status, answer, response.headers.getRawHeaders(b"content-type")))
        self.assertEqual(answers, [(401, WRONG_CREDENTIALS, [b"application/json"])] * 4)

    @inlineCallbacks
    def test_stayLoggedInSetsTheExpiry(self):
        """StayLoggedIn keeps people logged in for a week; otherwise for half an hour."""
        daemon = fastDaemon(self)
        week, halfHour = 7 * 24 * 3600, 30 * 60
        for n, (flag, life) in enumerate(
            [
                (True, week),
                ("true", week),
                ("TRUE", week),
                (False, halfHour),
                ("false", halfHour),
                (None, halfHour),
            ]
        ):
            name = f"stay{n}"
            yield register(daemon, name)
            before = time.time()
            answer = yield login(daemon, name, stayLoggedIn=flag)
            expires = parseExpiration(answer["Expiration"])
            self.assertGreater(expires, before + life - 600, flag)
            self.assertLess(expires, time.time() + life + 60, flag)
        for flag in ("yes", 1, "", ["true"]):
            status, body, _ = yield daemon.post(
                "/login", {"User": "stay0", "Password": PASSWORD, "StayLoggedIn": flag}
            )
            self.assertEqual((status, list(body)), (400, ["Error"]), flag)

    @inlineCallbacks
    def test_secondLoginReturnsTheSameSecret(self):
        """Logging in on a second device keeps the first device logged in."""
        daemon = fastDaemon(self)
        userId = yield register(daemon, "twice")
        first = yield login(daemon, "twice")
        second = yield login(daemon, "twice", stayLoggedIn=True)
        self.assertEqual(second["Secret"], first["Secret"])
        self.assertEqual(second["UserID"], userId)
        self.assertGreaterEqual(
            parseExpiration(second["Expiration"]), parseExpiration(first["Expiration"])
        )
        status, _, _ = yield authHeaders(daemon, userId, first["Secret"])
        self.assertEqual(status, 200)

    @inlineCallbacks
    def test_concurrentLoginsShareOneSecret(self):
        """Two devices logging in at the same moment both get a secret that works."""
        daemon = fastDaemon(self)
        userId = yield register(daemon, "devices")
        results = yield gatherResults(
            [daemon.post("/login", {"User": "devices", "Password": PASSWORD}) for _ in range(4)]
        )
        self.assertEqual(
            [(status, sorted(body)) for status, body, _ in results],
            [(200, ["Expiration", "Secret", "UserID"])] * 4,
        )
        secrets = [body["Secret"] for _, body, _ in results]
        self.assertEqual(len(set(secrets)), 1, secrets)
        for n, secret in enumerate(secrets):
            status, body, _ = yield authHeaders(daemon, userId, secret, f"/device/{n}")
            self.assertEqual((status, body), (200, {"UserID": userId}), n)

    @inlineCallbacks
    def test_malformedLoginIsBadRequest(self):
        """Broken login bodies get a 400 with a message, never a crash."""
        daemon = fastDaemon(self)
        for body in (
            b"{",
            b"[]",
            b"",
            {"User": "x"},
            {"Password": PASSWORD},
            {"User": 1, "Password": PASSWORD},
        ):
            status, answer, _ = yield daemon.post("/login", body)
            self.assertEqual((status, list(answer)), (400, ["Error"]), body)


class SecretTests(TestCase):
    @inlineCallbacks
    def test_verifySecretAnswersLikeLogin(self):
        """An app can check a stored secret and gets the same answer as a login."""
        daemon = fastDaemon(self)
        userId = yield register(daemon, "verify")
        logged = yield login(daemon, "verify")
        status, body, _ = yield daemon.post(
            "/verifySecret", {"User": "verify", "Secret": logged["Secret"]}
        )
        self.assertEqual(status, 200)
        self.assertEqual(sorted(body), ["Expiration", "Secret", "UserID"])
        self.assertEqual((body["Secret"], body["UserID"]), (logged["Secret"], userId))
        self.assertGreaterEqual(
            parseExpiration(body["Expiration"]), parseExpiration(logged["Expiration"])
        )
        self.assertGreater(parseExpiration(body["Expiration"]), time.time() + 25 * 60)
        status, body, _ = yield daemon.post(
            "/verifySecret", {"User": "VERIFY", "Secret": logged["Secret"]}
        )
        self.assertEqual(status, 200)

    @inlineCallbacks
    def test_wrongSecretIsUnauthorized(self):
        """A wrong or foreign secret is refused."""
        daemon = fastDaemon(self)
        yield register(daemon, "verify")
        other = yield registerAndLogin(daemon, "other")
        logged = yield login(daemon, "verify")
        for name, secret in (
            ("verify", logged["Secret"][:-4] + "AAA="),
            ("verify", other[1]),
            ("verify", ""),
            ("nobody", logged["Secret"]),
            ("other", logged["Secret"]),
        ):
            status, body, _ = yield daemon.post("/verifySecret", {"User": name, "Secret": secret})
            self.assertEqual((status, list(body)), (401, ["Error"]), (name, secret))
        status, body, _ = yield daemon.post("/verifySecret", {"User": "verify"})
        self.assertEqual((status, list(body)), (400, ["Error"]))

    @inlineCallbacks
    def test_logoutEndsTheSecretAtOnce(self):
        """After logging out, a stolen secret is useless."""
        daemon = fastDaemon(self)
        userId, secret = yield registerAndLogin(daemon, "leaver")
        status, body, _ = yield daemon.post(
            "/logout", None, headers=signedHeaders(userId, secret, "/logout")
        )
        self.assertEqual((status, body), (200, {}))
        status, body, _ = yield authHeaders(daemon, userId, secret, "/anything")
        self.assertEqual((status, body), (401, NOT_AUTHORIZED))
        status, body, _ = yield daemon.post(
            "/logout", None, headers=signedHeaders(userId, secret, "/logout", time.time() - 1)
        )
        self.assertEqual((status, body), (401, NOT_AUTHORIZED))
        status, _, _ = yield daemon.post("/verifySecret", {"User": "leaver", "Secret": secret})
        self.assertEqual(status, 401)
        again = yield login(daemon, "leaver")
        self.assertNotEqual(again["Secret"], secret)
        status, _, _ = yield authHeaders(daemon, userId, again["Secret"])
        self.assertEqual(status, 200)

    @inlineCallbacks
    def test_logoutNeedsItsOwnPath(self):
        """Headers signed for another endpoint cannot be replayed to log somebody out."""
        daemon = fastDaemon(self)
        userId, secret = yield registerAndLogin(daemon, "stayer")
        for path in ("/authHeaders", "/logout?x=1", "/logout/", "/Logout"):
            status, body, _ = yield daemon.post(
                "/logout", None, headers=signedHeaders(userId, secret, path)
            )
            self.assertEqual((status, body), (401, NOT_AUTHORIZED), path)
        status, body, _ = yield daemon.post("/logout", None)
        self.assertEqual((status, body), (401, NOT_AUTHORIZED))
        status, _, _ = yield authHeaders(daemon, userId, secret)
        self.assertEqual(status, 200)

    @inlineCallbacks
    def test_changePasswordEndsSessionsAndSwapsPasswords(self):
        """After a password change only the new password works and old sessions are over."""
        daemon = fastDaemon(self)
        userId, secret = yield registerAndLogin(daemon, "changer")
        status, body, _ = yield daemon.post(
            "/changePassword",
            {"User": "changer", "Password": PASSWORD, "NewPassword": "brand new password"},
        )
        self.assertEqual((status, body), (200, {}))
        status, body, _ = yield authHeaders(daemon, userId, secret)
        self.assertEqual((status, body), (401, NOT_AUTHORIZED))
        status, _, _ = yield daemon.post("/verifySecret", {"User": "changer", "Secret": secret})
        self.assertEqual(status, 401)
        status, body, _ = yield daemon.post("/login", {"User": "changer", "Password": PASSWORD})
        self.assertEqual((status, body), (401, WRONG_CREDENTIALS))
        answer = yield login(daemon, "changer", "brand new password")
        self.assertNotEqual(answer["Secret"], secret)
        status, _, _ = yield authHeaders(daemon, userId, answer["Secret"], "/new")
        self.assertEqual(status, 200)

    @inlineCallbacks
    def test_changePasswordRefusalsChangeNothing(self):
        """A refused password change leaves the old password and session working."""
        daemon = fastDaemon(self)
        userId, secret = yield registerAndLogin(daemon, "keeper")
        for body, expected in (
            ({"User": "keeper", "Password": "wrong password", "NewPassword": "whatever12"}, 401),
            ({"User": "nobody", "Password": PASSWORD, "NewPassword": "whatever12"}, 401),
            ({"User": "keeper", "Password": PASSWORD, "NewPassword": "short"}, 400),
            ({"User": "keeper", "Password": PASSWORD, "NewPassword": "n" * 73}, 400),
            ({"User": "keeper", "Password": PASSWORD}, 400),
            ({"User": "keeper", "Password": PASSWORD, "NewPassword": 12345678}, 400),
        ):
            status, answer, _ = yield daemon.post("/changePassword", body)
            self.assertEqual((status, list(answer)), (expected, ["Error"]), body)
        status, _, _ = yield authHeaders(daemon, userId, secret)
        self.assertEqual(status, 200)
        answer = yield login(daemon, "keeper")
        self.assertEqual(answer["Secret"], secret)


class AuthHeadersTests(TestCase):
    @inlineCallbacks
    def setUp(self):
        self.daemon = fastDaemon(self)
        self.userId, self.secret = yield registerAndLogin(self.daemon, "signer")

    def check(self, headers):
        return self.daemon.post("/authHeaders", None, headers=headers)

    @inlineCallbacks
    def test_validHeadersPass(self):
        """Backends checking a user's valid request get a yes and the user's id."""
        status, body, _ = yield self.check(signedHeaders(self.userId, self.secret, "/authHeaders"))
        self.assertEqual((status, body), (200, {"UserID": self.userId}))

    def test_workedExampleFromTheSpecSigns(self):
        """Clients following the documented example compute the HMAC the daemon expects."""
        secret = (
            "3ar+0wLwgiltTXNZ/eprJ2NaWE7y5k+0r9ThN4+im8RHWH8ksB1xw4554hOTNF8H9rguMBfUaN"
            "RWztNQb+nz7A=="
        )
        headers = signedHeaders(1, secret, "/logout", 1472276742)
        self.assertEqual(
            headers["HMAC"], "69aee4c4d9749a6e27c583af898840927975ea861b9d74dc54ef2e3cde14b7c4"
        )

    @inlineCallbacks
    def test_pathOfAnotherServiceIsAccepted(self):
        """Other backends can check headers their users signed for their own endpoints."""
        for path in ("/orders/42?expand=items", "/logout", "/", "/users/getID?username=x"):
            status, body, _ = yield self.check(signedHeaders(self.userId, self.secret, path))
            self.assertEqual((status, body), (200, {"UserID": self.userId}), path)

    @inlineCallbacks
    def test_hexAndBase64EncodingsPass(self):
        """Clients may write the HMAC in hex or base64, or leave the encoding out."""
        hexed = signedHeaders(self.userId, self.secret, "/hex")
        based = signedHeaders(self.userId, self.secret, "/base64", encoding="base64")
        bare = signedHeaders(self.userId, self.secret, "/bare")
        del bare["Encoding"]
        upper = signedHeaders(self.userId, self.secret, "/upper")
        upper["HMAC"] = upper["HMAC"].upper()
        for headers in (hexed, based, bare, upper):
            status, body, _ = yield self.check(headers)
            self.assertEqual((status, body), (200, {"UserID": self.userId}), headers)
        for encoding in ("base32", "hexadecimal", "hex base64"):
            headers = signedHeaders(self.userId, self.secret, f"/enc/{encoding}")
            headers["Encoding"] = encoding
            status, body, _ = yield self.check(headers)
            self.assertEqual((status, body), (401, NOT_AUTHORIZED), encoding)
        mismatched = signedHeaders(self.userId, self.secret, "/mismatch", encoding="base64")
        mismatched["Encoding"] = "hex"
        status, _, _ = yield self.check(mismatched)
        self.assertEqual(status, 401)

    @inlineCallbacks
    def test_staleOrFutureTimeIsRefused(self):
        """Requests signed more than 10 seconds away from now are refused."""
        now = time.time()
        for offset in (-11, 11, -3600, 3600, -now):
            status, body, _ = yield self.check(
                signedHeaders(self.userId, self.secret, "/time", now + offset)
            )
            self.assertEqual((status, body), (401, NOT_AUTHORIZED), offset)
        for offset in (-5, 5):
            status, _, _ = yield self.check(
                signedHeaders(self.userId, self.secret, f"/time/{offset}", now + offset)
            )
            self.assertEqual(status, 200, offset)

    @inlineCallbacks
    def test_replayIsRefused(self):
        """An eavesdropper cannot resend a request a user signed."""
        headers = signedHeaders(self.userId, self.secret, "/once")
        status, _, _ = yield self.check(headers)
        self.assertEqual(status, 200)
        status, body, _ = yield self.check(headers)
        self.assertEqual((status, body), (401, NOT_AUTHORIZED))
        based = signedHeaders(
            self.userId, self.secret, "/once", float(headers["Time-Sent"]), encoding="base64"
        )
        status, body, _ = yield self.check(based)
        self.assertEqual((status, body), (401, NOT_AUTHORIZED))

    @inlineCallbacks
    def test_wrongHmacIsRefused(self):
        """A request signed with anything but the user's secret is refused."""
        headers = signedHeaders(self.userId, self.secret, "/wrong")
        last = headers["HMAC"][-1]
        wrong = {**headers, "HMAC": headers["HMAC"][:-1] + ("0" if last != "0" else "1")}
        forged = signedHeaders(self.userId, "not" + self.secret, "/wrong")
        rawKey = signedHeaders(self.userId, "x", "/wrong")
        # Keyed with the decoded secret bytes instead of its base64 text.
        rawKey["HMAC"] = hmac.new(
            base64.b64decode(self.secret), f"{headers['Time-Sent']}:/wrong".encode(), hashlib.sha256
        ).hexdigest()
        short = {**headers, "HMAC": headers["HMAC"][:32]}
        for attempt in (
            wrong,
            forged,
            rawKey,
            short,
            {**headers, "HMAC": ""},
            {**headers, "HMAC": "zz" * 32},
        ):
            status, body, _ = yield self.check(attempt)
            self.assertEqual((status, body), (401, NOT_AUTHORIZED), attempt["HMAC"])
        status, _, _ = yield self.check(headers)
        self.assertEqual(status, 200)

    @inlineCallbacks
    def test_unknownOrForeignUserIdIsRefused(self):
        """Nobody can sign requests as a user id that is not theirs."""
        otherId, _ = yield registerAndLogin(self.daemon, "victim")
        for userId in (otherId, self.userId + 1000, 0, -1, "abc", "", 2**64):
            status, body, _ = yield self.check(signedHeaders(userId, self.secret, f"/as/{userId}"))
            self.assertEqual((status, body), (401, NOT_AUTHORIZED), userId)

    @inlineCallbacks
    def test_everyMissingHeaderIsRefused(self):
        """A request missing any one of the Auth Headers is refused."""
        now = time.time()
        for n, header in enumerate(("UserID", "Path", "Time-Sent", "HMAC")):
            headers = signedHeaders(self.userId, self.secret, f"/missing/{n}", now)
            del headers[header]
            status, body, _ = yield self.check(headers)
            self.assertEqual((status, body), (401, NOT_AUTHORIZED), header)
        status, body, _ = yield self.check(None)
        self.assertEqual((status, body), (401, NOT_AUTHORIZED))
        status, _, _ = yield self.check(signedHeaders(self.userId, self.secret, "/missing/0", now))
        self.assertEqual(status, 200)

    @inlineCallbacks
    def test_getIdAnswersIdsAndErrors(self):
        """Apps can look up user ids by name in one signed request."""
        bob = yield register(self.daemon, "bob")
        carol = yield register(self.daemon, "Carol")
        path = "/users/getID?username=signer&usernames=bob,carol,nobody"
        status, body, _ = yield self.daemon.request(
            "GET", path, headers=signedHeaders(self.userId, self.secret, path)
        )
        self.assertEqual(status, 200, body)
        self.assertEqual(
            body,
            {
                "UserIDs": {"signer": self.userId, "bob": bob, "carol": carol},
                "Errors": {"nobody": "User not found"},
            },
        )

    @inlineCallbacks
    def test_getIdNeedsItsOwnPathWithQuery(self):
        """Headers signed without the query string cannot be used to look up other names."""
        base = "/users/getID?username=signer"
        for signedPath in ("/users/getID", "/authHeaders", base + "&usernames=x"):
            status, body, _ = yield self.daemon.request(
                "GET", base, headers=signedHeaders(self.userId, self.secret, signedPath)
            )
            self.assertEqual((status, body), (401, NOT_AUTHORIZED), signedPath)
        status, body, _ = yield self.daemon.request("GET", base)
        self.assertEqual((status, body), (401, NOT_AUTHORIZED))


class WebSocketDuringLoginsTests(TestCase):
    @inlineCallbacks
    def test_webSocketAnswersWhileLoginsHashAtFullCost(self):
        """A burst of logins at the default bcrypt cost does not stall WebSocket users."""
        # The client PINGs as fast as it is answered, which the relay's
        # flood limit would close: this test is about latency, not floods.
        daemon = Daemon(self, "--bcrypt-rounds", "12", "--client-message-rate", "100000")
        yield register(daemon, "burst")
        client = yield daemon.connect("c1")
        events = []

        def answered(result):
            events.append("login")
            return result

        logins = [
            daemon.post("/login", {"User": "burst", "Password": PASSWORD}).addCallback(answered)
            for _ in range(16)
        ]
        # Once one has answered, the rest are surely queued behind bcrypt.
        while not events:
            client.sendText("PING")
            yield client.waitFor(len(client.received) + 1)
        for _ in range(5):
            client.sendText("PING")
            yield client.waitFor(len(client.received) + 1)
            events.append("pong")
        results = yield gatherResults(logins)
        self.assertEqual([status for status, _, _ in results], [200] * 16)
        self.assertEqual(set(client.received), {"PONG"})
        lastLogin = max(i for i, event in enumerate(events) if event == "login")
        self.assertLess(events.index("pong"), lastLogin, events)


class RestartTests(TestCase):
    @inlineCallbacks
    def test_restartKeepsSessions(self):
        """Restarting the daemon logs nobody out."""
        database = "sqlite:" + self.mktemp() + ".sqlite3"
        first = fastDaemon(self, "--database", database)
        userId, secret = yield registerAndLogin(first, "durable")
        yield first.stop()

        second = fastDaemon(self, "--database", database)
        status, body, _ = yield authHeaders(second, userId, secret)
        self.assertEqual((status, body), (200, {"UserID": userId}))
        answer = yield login(second, "durable")
        self.assertEqual(answer["Secret"], secret)
        status, _, _ = yield second.post("/verifySecret", {"User": "durable", "Secret": secret})
        self.assertEqual(status, 200)


class RoutingTests(TestCase):
    @inlineCallbacks
    def test_unknownAccountsPathsAreJsonNotFound(self):
        """Mistyped account URLs get a JSON 404 in the accounts' error shape."""
        daemon = fastDaemon(self)
        userId = yield register(daemon, "router")
        for method, path in (
            ("GET", "/users/abc"),
            ("GET", f"/users/{userId}/nope"),
            ("GET", f"/users/{userId}"),
            ("POST", "/users/abc"),
            ("GET", "/users/-1/registered"),
            ("GET", "/users/1x/registered"),
            ("GET", f"/users/{userId}/registered/extra"),
            ("GET", "/users/99999999999999999999/registered"),
            ("POST", "/login/extra"),
            ("POST", "/authHeaders/x"),
        ):
            status, body, response = yield daemon.request(method, path)
            self.assertEqual(status, 404, path)
            self.assertEqual(list(body), ["Error"], path)
            self.assertEqual(
                response.headers.getRawHeaders(b"content-type"), [b"application/json"], path
            )

    @inlineCallbacks
    def test_wrongMethodsAreJsonMethodNotAllowed(self):
        """Using the wrong HTTP method gets a JSON 405 that says which methods work."""
        daemon = fastDaemon(self)
        userId = yield register(daemon, "router")
        for method, path, allowed in (
            ("GET", "/login", b"POST"),
            ("GET", "/users", b"POST"),
            ("DELETE", "/users", b"POST"),
            ("PUT", "/logout", b"POST"),
            ("GET", "/verifySecret", b"POST"),
            ("GET", "/changePassword", b"POST"),
            ("GET", "/authHeaders", b"POST"),
            ("POST", "/users/getID", b"GET, HEAD"),
            ("POST", f"/users/{userId}/registered", b"GET, HEAD"),
            ("POST", f"/users/{userId}/register", b"GET, HEAD"),
        ):
            status, body, response = yield daemon.request(method, path)
            self.assertEqual(status, 405, (method, path))
            self.assertEqual(list(body), ["Error"], (method, path))
            self.assertEqual(response.headers.getRawHeaders(b"allow"), [allowed], (method, path))
