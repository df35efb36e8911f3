"""
Accounts, hardened (SPEC §8): login throttling without lockouts, password
reset, the audit log, relay tokens for signed-in users.

The domain is driven directly over real databases (SQLite and MariaDB) with
a L{Clock} where time matters; the daemon end to end, with the real SMTP
sink and real WebSocket clients, where a user's view is the point.
"""

from __future__ import annotations

import re
import sqlite3
import time
from typing import Any

from twisted.internet.defer import Deferred, gatherResults, inlineCallbacks
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase

from socktopus_tw.accounts import store
from socktopus_tw.accounts.housekeeping import Housekeeping
from socktopus_tw.accounts.service import Accounts
from socktopus_tw.accounts.throttle import LONGEST_WAIT, TooManyAttempts
from socktopus_tw.errors import WrongCredentials
from tests.accounts.test_faults import START, AccountsTestsMixin
from tests.support.accounts import PASSWORD, MailServer, registerAndLogin, signedHeaders
from tests.support.daemon import APP, OTHER_APP, Daemon
from tests.support.database import MariaDBDatabase, SQLiteDatabase

ATTACKER, HOME = "192.0.2.66", "198.51.100.7"
WRONG = "not the password"
TOO_MANY = {"Error": "Too many attempts"}
PUBLIC_URL = "https://accounts.example.com"
RESET_LINK = re.compile(
    re.escape(PUBLIC_URL) + r"/users/(\d+)/reset\?code=([0-9a-f]{64})(?![0-9a-f])"
)


class ThrottledAccountsMixin(AccountsTestsMixin):
    """
    The accounts domain with throttling on; every bcrypt check counted.
    """

    def setUp(self) -> None:
        super().setUp()
        self.checks = 0
        check = self.passwords.check

        def counted(*arguments: Any) -> Any:
            self.checks += 1
            return check(*arguments)

        self.patch(self.passwords, "check", counted)

    async def user(self, name: str) -> int:
        hashed = await self.passwords.hash(PASSWORD)
        return await self.addUser(name, passwordHash=hashed)

    async def failLogin(self, name: str, ip: str, times: int = 1) -> None:
        for _ in range(times):
            with self.assertRaises(WrongCredentials):
                await self.accounts.login(name, WRONG, False, ip)

    async def refused(self, name: str, ip: str, password: str = PASSWORD) -> int:
        """
        Try to log in, expecting a refusal for too many attempts with no
        bcrypt check; the Retry-After it gives.
        """
        checks = self.checks
        with self.assertRaises(TooManyAttempts) as caught:
            await self.accounts.login(name, password, False, ip)
        self.assertEqual(self.checks, checks, "a refused attempt cost a bcrypt check")
        return caught.exception.retryAfter

    async def events(self, userId: int) -> list[tuple[str, str]]:
        return [(e.type, e.ip) for e in await self.query(store.eventsOf, userId, 500)]


class ThrottleTestsMixin(ThrottledAccountsMixin):
    async def test_fifthFailureMakesThePairWaitWithoutBcrypt(self):
        """
        After 5 wrong passwords for alice from one IP, that pair is refused,
        even with the right password, without a bcrypt check; its wait
        starts at 1 s.
        """
        aliceId = await self.user("alice")
        await self.failLogin("alice", ATTACKER, 5)
        self.assertEqual(await self.refused("alice", ATTACKER), 1)
        self.assertEqual(
            (await self.events(aliceId))[:2], [("throttled", ATTACKER), ("loginFailed", ATTACKER)]
        )

    async def test_theUserLogsInAtOnceFromAnotherIp(self):
        """
        An attacker cannot lock alice out: her own IP logs in meanwhile.
        """
        await self.user("alice")
        await self.failLogin("alice", ATTACKER, 5)
        await self.refused("alice", ATTACKER)
        session = await self.accounts.login("alice", PASSWORD, False, HOME)
        self.assertTrue(session.secret)

    async def test_theWaitDoublesWithEachFurtherFailureUpToFifteenMinutes(self):
        """
        1 s, 2 s, 4 s, ...: each failure after waiting doubles the next
        wait, which never passes 15 minutes.
        """
        await self.user("alice")
        await self.failLogin("alice", ATTACKER, 5)
        waits = []
        for _ in range(12):
            wait = await self.refused("alice", ATTACKER)
            waits.append(wait)
            self.clock.advance(wait)
            await self.failLogin("alice", ATTACKER)
        self.assertEqual(waits, [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 900, 900])

    async def test_aCorrectPasswordClearsThePair(self):
        await self.user("alice")
        await self.failLogin("alice", ATTACKER, 4)
        await self.accounts.login("alice", PASSWORD, False, ATTACKER)
        await self.failLogin("alice", ATTACKER, 4)
        await self.accounts.login("alice", PASSWORD, False, ATTACKER)

    async def test_unknownUsersAreThrottledAlike(self):
        """
        A name nobody has is counted and refused as a real one is: the
        throttle does not tell who exists.
        """
        await self.failLogin("nobody", ATTACKER, 5)
        self.assertEqual(await self.refused("nobody", ATTACKER), 1)

    async def test_aHundredFailuresOverManyNamesRefuseTheIp(self):
        """
        Credential stuffing: 100 failures over 100 names from one IP, and
        every login from that IP is refused for 15 minutes, even a right
        one; other IPs are not.
        """
        await self.user("alice")
        for n in range(100):
            await self.failLogin(f"user{n}", ATTACKER)
        self.assertEqual(await self.refused("alice", ATTACKER), LONGEST_WAIT // 1000)
        await self.accounts.login("alice", PASSWORD, False, HOME)
        self.clock.advance(LONGEST_WAIT / 1000)
        await self.accounts.login("alice", PASSWORD, False, ATTACKER)

    async def test_aCountStartsAgainAfterFifteenQuietMinutes(self):
        await self.user("alice")
        await self.failLogin("alice", ATTACKER, 4)
        self.clock.advance(15 * 60 + 1)
        await self.failLogin("alice", ATTACKER, 4)
        await self.accounts.login("alice", PASSWORD, False, ATTACKER)

    async def test_countsAreSharedThroughTheDatabase(self):
        """
        Another daemon on the database (or this one restarted) sees the
        count and the wait.
        """
        await self.user("alice")
        await self.failLogin("alice", ATTACKER, 5)
        self.accounts = self.restarted()
        self.assertEqual(await self.refused("alice", ATTACKER), 1)
        self.clock.advance(1)
        await self.failLogin("alice", ATTACKER)
        self.accounts = self.restarted()
        self.assertEqual(await self.refused("alice", ATTACKER), 2)

    async def test_changePasswordIsThrottledToo(self):
        """
        /changePassword checks a password: it is counted and refused alike.
        """
        await self.user("alice")
        for _ in range(5):
            with self.assertRaises(WrongCredentials):
                await self.accounts.changePassword("alice", WRONG, "a new password", ATTACKER)
        with self.assertRaises(TooManyAttempts):
            await self.accounts.changePassword("alice", PASSWORD, "a new password", ATTACKER)

    async def test_offAsked(self):
        self.accounts = Accounts(self.database, self.passwords, self.clock, throttle=False)
        await self.user("alice")
        await self.failLogin("alice", ATTACKER, 20)
        await self.accounts.login("alice", PASSWORD, False, ATTACKER)


class SQLiteThrottleTests(SQLiteDatabase, ThrottleTestsMixin, TestCase):
    pass


class MariaDBThrottleTests(MariaDBDatabase, ThrottleTestsMixin, TestCase):
    pass


class AuditTestsMixin(ThrottledAccountsMixin):
    async def test_everyEventIsRecordedWithTimeAndIp(self):
        """
        Register, login, a failure, a password change, logout: each in the
        log with its time and IP, newest first; nothing secret stored.
        """
        aliceId = await self.accounts.register("alice", PASSWORD, "alice@example.com", "", HOME)
        self.clock.advance(1)
        session = await self.accounts.login("alice", PASSWORD, False, HOME)
        await self.failLogin("alice", ATTACKER)
        await self.accounts.changePassword("alice", PASSWORD, "a second password", HOME)
        session = await self.accounts.login("alice", "a second password", False, HOME)
        await self.accounts.logout(session, HOME)
        events = await self.query(store.eventsOf, aliceId, 500)
        self.assertEqual(
            [(e.type, e.ip) for e in events],
            [
                ("logout", HOME),
                ("login", HOME),
                ("passwordChanged", HOME),
                ("loginFailed", ATTACKER),
                ("login", HOME),
                ("registered", HOME),
                ("register", HOME),
            ],
        )
        self.assertEqual(events[-1].time, START * 1000)
        self.assertEqual(events[0].time, (START + 1) * 1000)
        dump = await self.query(_dump, "account_events")
        for secret in (PASSWORD, "a second password", WRONG, session.secret):
            self.assertNotIn(secret, dump)

    async def test_onlyOwnEvents(self):
        aliceId = await self.accounts.register("alice", PASSWORD, "a@example.com", "", HOME)
        bobId = await self.accounts.register("bob", PASSWORD, "b@example.com", "", HOME)
        bob = await self.accounts.login("bob", PASSWORD, False, HOME)
        self.assertEqual(len(await self.accounts.events(bob, bobId, 50)), 3)
        with self.assertRaises(Exception) as caught:
            await self.accounts.events(bob, aliceId, 50)
        self.assertEqual(caught.exception.status, 401)

    async def test_retentionDeletesOldEvents(self):
        """
        Events older than the retention are deleted; newer ones kept.
        """
        self.accounts = Accounts(self.database, self.passwords, self.clock, auditRetention=86400)
        aliceId = await self.accounts.register("alice", PASSWORD, "a@example.com", "", HOME)
        self.clock.advance(86400 - 10)
        await self.accounts.login("alice", PASSWORD, False, HOME)
        self.clock.advance(20)
        await self.accounts.forgetOld()
        self.assertEqual([e.type for e in await self.query(store.eventsOf, aliceId, 50)], ["login"])


def _dump(cursor: Any, table: str) -> str:
    cursor.execute(f"SELECT * FROM {table}")
    return repr(cursor.fetchall())


class SQLiteAuditTests(SQLiteDatabase, AuditTestsMixin, TestCase):
    pass


class MariaDBAuditTests(MariaDBDatabase, AuditTestsMixin, TestCase):
    pass


class ThrottleDaemonTests(TestCase):
    """
    What a user sees: 429 with Retry-After, the X-Real-IP of a local proxy
    deciding the IP, counts kept across a restart.
    """

    timeout = 120

    def daemon(self, path: str) -> Daemon:
        return Daemon(self, "--bcrypt-rounds", "4", "--database", "sqlite:" + path)

    @inlineCallbacks
    def test_tooManyAttemptsWithRetryAfter(self):
        path = self.mktemp()
        daemon = self.daemon(path)
        yield registerAndLogin(daemon, "alice")
        attacker = {"X-Real-IP": ATTACKER}
        for _ in range(5):
            status, _, _ = yield daemon.post(
                "/login", {"User": "alice", "Password": WRONG}, headers=attacker
            )
            self.assertEqual(status, 401)
        status, body, response = yield daemon.post(
            "/login", {"User": "alice", "Password": PASSWORD}, headers=attacker
        )
        self.assertEqual((status, body), (429, TOO_MANY))
        self.assertEqual(response.headers.getRawHeaders(b"retry-after"), [b"1"])
        status, _, _ = yield daemon.post(
            "/login", {"User": "alice", "Password": PASSWORD}, headers={"X-Real-IP": HOME}
        )
        self.assertEqual(status, 200)

    @inlineCallbacks
    def test_anIpsWaitIsSharedByDaemonsOnOneDatabaseAndKeptAcrossARestart(self):
        """
        Credential stuffing through one daemon: another on the same
        database refuses the IP too, and so does the first once restarted.
        """
        path = self.mktemp()
        first, second = self.daemon(path), self.daemon(path)
        yield registerAndLogin(first, "alice")
        attacker = {"X-Real-IP": ATTACKER}
        for n in range(100):
            status, _, _ = yield first.post(
                "/login", {"User": f"user{n}", "Password": WRONG}, headers=attacker
            )
            self.assertEqual(status, 401)
        yield first.stop()
        for daemon in (second, self.daemon(path)):
            status, body, response = yield daemon.post(
                "/login", {"User": "alice", "Password": PASSWORD}, headers=attacker
            )
            self.assertEqual((status, body), (429, TOO_MANY))
            [retryAfter] = response.headers.getRawHeaders(b"retry-after")
            self.assertGreater(int(retryAfter), 800)


class ResetDaemonTests(TestCase):
    """
    Password reset end to end through the SMTP server.
    """

    timeout = 120

    @inlineCallbacks
    def setUp(self):
        self.mail = yield MailServer.start(self)
        self.path = self.mktemp()
        self.daemon = Daemon(
            self,
            "--bcrypt-rounds",
            "4",
            "--database",
            "sqlite:" + self.path,
            "--smtp",
            self.mail.url,
            "--mail-from",
            "accounts@example.com",
            "--public-url",
            PUBLIC_URL,
        )

    @inlineCallbacks
    def registered(self, name: str):
        sent = len(self.mail.messages)
        status, answer, _ = yield self.daemon.post(
            "/users", {"User": name, "Password": PASSWORD, "Email": f"{name}@example.com"}
        )
        self.assertEqual(status, 200, answer)
        mail = yield self.mail.waitFor(sent + 1)
        [(userId, code)] = re.findall(r"/users/(\d+)/register\?code=([0-9a-f]{64})", mail.text())
        status, _, _ = yield self.daemon.request("GET", f"/users/{userId}/register?code={code}")
        return int(userId)

    @inlineCallbacks
    def resetLink(self, count: int):
        mail = yield self.mail.waitFor(count)
        self.assertEqual(mail.header("Subject"), "Reset your password")
        [(userId, code)] = RESET_LINK.findall(mail.text())
        return int(userId), code

    @inlineCallbacks
    def confirm(self, userId: int, code: str, password: str = "a brand new password"):
        status, body, _ = yield self.daemon.post(
            "/resetPassword/confirm", {"UserID": userId, "Code": code, "NewPassword": password}
        )
        return status, body

    @inlineCallbacks
    def test_resetByNameEndsSessionsAndWorksOnce(self):
        userId = yield self.registered("alice")
        status, login, _ = yield self.daemon.post("/login", {"User": "alice", "Password": PASSWORD})
        self.assertEqual(status, 200)
        sent = len(self.mail.messages)
        status, body, _ = yield self.daemon.post("/resetPassword", {"User": "alice"})
        self.assertEqual((status, body), (200, {}))
        linkUser, code = yield self.resetLink(sent + 1)
        self.assertEqual(linkUser, userId)
        self.assertEqual((yield self.confirm(userId, code)), (200, {}))
        # The old session ended, the old password no longer works, the new one does.
        status, _, _ = yield self.daemon.post(
            "/logout", b"", headers=signedHeaders(userId, login["Secret"], "/logout")
        )
        self.assertEqual(status, 401)
        status, _, _ = yield self.daemon.post("/login", {"User": "alice", "Password": PASSWORD})
        self.assertEqual(status, 401)
        status, _, _ = yield self.daemon.post(
            "/login", {"User": "alice", "Password": "a brand new password"}
        )
        self.assertEqual(status, 200)
        self.assertEqual(
            (yield self.confirm(userId, code, "yet another password")),
            (400, {"Error": "Invalid or expired code"}),
        )

    @inlineCallbacks
    def test_resetByEmailAndNewerCodeVoidsOlder(self):
        userId = yield self.registered("bob")
        sent = len(self.mail.messages)
        yield self.daemon.post("/resetPassword", {"Email": "BOB@example.com"})
        _, older = yield self.resetLink(sent + 1)
        yield self.daemon.post("/resetPassword", {"User": "bob"})
        _, newer = yield self.resetLink(sent + 2)
        self.assertEqual((yield self.confirm(userId, older))[0], 400)
        self.assertEqual((yield self.confirm(userId, newer))[0], 200)

    @inlineCallbacks
    def test_unknownUsersGetTheSameAnswerAndNoMail(self):
        sent = len(self.mail.messages)
        for body in ({"User": "nobody"}, {"Email": "nobody@example.com"}, {"User": "bad name!"}):
            status, answer, _ = yield self.daemon.post("/resetPassword", body)
            self.assertEqual((status, answer), (200, {}))
        yield self.daemon.post("/resetPassword", {"User": "also_nobody"})
        self.assertEqual(len(self.mail.messages), sent)

    @inlineCallbacks
    def test_malformedRequests(self):
        for body in ({}, {"User": "a", "Email": "a@example.com"}, {"User": 5}, [1]):
            status, answer, _ = yield self.daemon.post("/resetPassword", body)
            self.assertEqual(status, 400, body)
        for body in (
            {"UserID": "1", "Code": "x", "NewPassword": "a long password"},
            {"UserID": 1, "Code": 5, "NewPassword": "a long password"},
            {"UserID": 1, "Code": "x"},
            {"UserID": 1, "Code": "x" * 100, "NewPassword": "a long password"},
        ):
            status, answer, _ = yield self.daemon.post("/resetPassword/confirm", body)
            self.assertEqual(status, 400, body)

    @inlineCallbacks
    def test_theCodeIsStoredHashed(self):
        userId = yield self.registered("carol")
        sent = len(self.mail.messages)
        yield self.daemon.post("/resetPassword", {"User": "carol"})
        _, code = yield self.resetLink(sent + 1)
        with sqlite3.connect(self.path) as connection:
            dump = _dump(connection.cursor(), "password_resets")
        self.assertNotIn(code, dump)
        self.assertIn(str(userId), dump)

    @inlineCallbacks
    def test_theLinkIsAPageThatAsksForTheNewPassword(self):
        userId = yield self.registered("dora")
        status, body, response = yield self.daemon.request(
            "GET", f"/users/{userId}/reset?code=" + "ab" * 32
        )
        self.assertEqual(status, 200)
        self.assertIn(b"resetPassword/confirm", body)
        self.assertEqual(response.headers.getRawHeaders(b"referrer-policy"), [b"no-referrer"])


class ResetWithoutMailTests(TestCase):
    @inlineCallbacks
    def test_unavailable(self):
        daemon = Daemon(self, "--bcrypt-rounds", "4")
        status, body, _ = yield daemon.post("/resetPassword", {"User": "alice"})
        self.assertEqual(status, 503)


class EventsDaemonTests(TestCase):
    @inlineCallbacks
    def test_ownEventsOverHttpWithLimits(self):
        daemon = Daemon(self, "--bcrypt-rounds", "4")
        userId, secret = yield registerAndLogin(daemon, "alice")
        otherId, _ = yield registerAndLogin(daemon, "bob")

        def get(path: str):
            return daemon.request("GET", path, headers=signedHeaders(userId, secret, path))

        status, body, _ = yield get(f"/users/{userId}/events")
        self.assertEqual(status, 200)
        self.assertEqual([e["Type"] for e in body["Events"]], ["login", "registered", "register"])
        self.assertRegex(body["Events"][0]["Time"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
        self.assertEqual(body["Events"][0]["IP"], "127.0.0.1")
        status, body, _ = yield get(f"/users/{userId}/events?limit=1")
        self.assertEqual([e["Type"] for e in body["Events"]], ["login"])
        for limit in ("0", "501", "x", "-1"):
            status, _, _ = yield get(f"/users/{userId}/events?limit={limit}")
            self.assertEqual(status, 400, limit)
        status, body, _ = yield get(f"/users/{otherId}/events")
        self.assertEqual(status, 401)
        status, body, _ = yield daemon.request("GET", f"/users/{userId}/events")
        self.assertEqual(status, 401)


class RelayTokenDaemonTests(TestCase):
    """
    A signed-in user gets a relay token for an opted-in app and is reached
    by the backend's /send as C{user:<id>}.
    """

    @inlineCallbacks
    def test_signedInUserConnectsAndIsReached(self):
        daemon = Daemon(
            self, "--bcrypt-rounds", "4", environ={f"{APP.upper()}_SOCKTOPUS_USER_TOKENS": "1"}
        )
        userId, secret = yield registerAndLogin(daemon, "alice")
        status, body, _ = yield daemon.post(
            "/relayToken", {"App": APP}, headers=signedHeaders(userId, secret, "/relayToken")
        )
        self.assertEqual(status, 200)
        self.assertEqual(body["ConnectionID"], f"user:{userId}")
        daemon.token = lambda connectionId, **kw: body["Token"]
        client = yield daemon.connect(f"user:{userId}")
        status, sent, _ = yield daemon.send([{"recipient": f"user:{userId}", "content": "hello"}])
        self.assertEqual(len(sent["succeeded"]), 1)
        self.assertEqual((yield client.waitFor(1)), ["DATA:hello"])
        client.sendClose()
        yield client.closed

    @inlineCallbacks
    def test_appsThatDidNotOptInAreNotFound(self):
        daemon = Daemon(
            self, "--bcrypt-rounds", "4", environ={f"{APP.upper()}_SOCKTOPUS_USER_TOKENS": "1"}
        )
        userId, secret = yield registerAndLogin(daemon, "alice")
        answers = yield gatherResults(
            [
                daemon.post(
                    "/relayToken",
                    {"App": app},
                    headers=signedHeaders(userId, secret, "/relayToken", now=time.time() - n),
                )
                for n, app in enumerate((OTHER_APP, "nosuchapp"))
            ]
        )
        for status, body, _ in answers:
            self.assertEqual((status, body), (404, {"Error": "App not found"}))
        status, _, _ = yield daemon.post("/relayToken", {"App": APP})
        self.assertEqual(status, 401)


class HousekeepingTests(SynchronousTestCase):
    """
    The clean-up runs a minute after start, then hourly; stop waits for one
    under way; a failed one is logged and the next still runs.
    """

    def test_scheduleAndStop(self):
        clock = Clock()
        sweeps: list[Deferred[None]] = []

        class Sweeping:
            def forgetOld(self):
                d: Deferred[None] = Deferred()
                sweeps.append(d)
                return d

        service = Housekeeping(Sweeping(), clock)
        service.startService()
        clock.advance(59)
        self.assertEqual(len(sweeps), 0)
        clock.advance(1)
        self.assertEqual(len(sweeps), 1)
        sweeps[0].errback(RuntimeError("database away"))
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 0)
        clock.advance(3600)
        self.assertEqual(len(sweeps), 2)
        stopped = service.stopService()
        self.assertNoResult(stopped)
        sweeps[1].callback(None)
        self.successResultOf(stopped)
        clock.advance(7200)
        self.assertEqual(len(sweeps), 2)


class HostileInputTests(TestCase):
    """
    The new endpoints refuse malformed, oversized and hostile input with a
    clear error in the accounts' shape.
    """

    @inlineCallbacks
    def test_relayTokenAndEventsRefusals(self):
        daemon = Daemon(
            self, "--bcrypt-rounds", "4", environ={f"{APP.upper()}_SOCKTOPUS_USER_TOKENS": "1"}
        )
        userId, secret = yield registerAndLogin(daemon, "alice")
        for n, body in enumerate(
            [b"not json", [APP], {"App": 5}, {"App": None}, {"App": "x" * 100_000}, {}]
        ):
            headers = signedHeaders(userId, secret, "/relayToken", now=time.time() - n)
            status, answer, _ = yield daemon.post("/relayToken", body, headers=headers)
            self.assertIn(status, (400, 404), body)
            self.assertEqual(list(answer), ["Error"], body)
        path = f"/users/{userId}/events?limit=1&limit=2000"
        status, answer, _ = yield daemon.request(
            "GET", path, headers=signedHeaders(userId, secret, path)
        )
        self.assertEqual(status, 200)
        status, answer, _ = yield daemon.post(f"/users/{userId}/events", {})
        self.assertEqual(status, 405)
        status, answer, _ = yield daemon.request("GET", "/users/abc/reset?code=x")
        self.assertEqual(status, 404)
