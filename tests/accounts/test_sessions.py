"""
Tests for L{socktopus_tw.accounts.sessions}: session secrets kept in a real
SQLite database (built as L{socktopus_tw.tap.makeService} builds it) and
cached in memory, with a L{Clock} for time.
"""

from __future__ import annotations

import base64
import calendar
import re
import threading
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase

from socktopus_tw.accounts import store
from socktopus_tw.accounts.sessions import Sessions
from socktopus_tw.db import Database, migrate, openPool, parseDatabaseUrl

SHORT = 30 * 60
LONG = 7 * 24 * 60 * 60
#: Logging in at START with a 30-minute session expires at 2026-11-23T01:43:55Z.
EXPIRY = "2026-11-23T01:43:55Z"
START = calendar.timegm((2026, 11, 23, 1, 43, 55)) - SHORT
RFC3339_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")


def storedSession(cursor: Any, userId: int) -> tuple[str, int, int] | None:
    """
    The sessions row of C{userId}, as (secret, expires_at, stay_logged_in).
    """
    cursor.execute(
        "SELECT secret, expires_at, stay_logged_in FROM sessions WHERE user_id = ?", (userId,)
    )
    row = cursor.fetchone()
    return None if row is None else (row[0], int(row[1]), int(row[2]))


class SessionsTests(TestCase):
    """
    L{Sessions} over a fresh SQLite file.
    """

    def setUp(self):
        config = parseDatabaseUrl("sqlite:" + self.mktemp() + ".sqlite3")
        migrate(config)
        pool = openPool(config, reactor)
        pool.start()
        self.addCleanup(pool.close)
        self.database = Database(pool, config)
        self.clock = Clock()
        self.clock.advance(START)
        self.sessions = Sessions(self.database, self.clock)

    def restarted(self) -> Sessions:
        """
        A new L{Sessions} over the same database, as after a daemon restart.
        """
        return Sessions(self.database, self.clock)

    async def addUser(self, name: str = "alice") -> int:
        return await self.database.run(
            store.addUser, name, name + "@example.com", b"$2b$04$" + b"x" * 53, None, START
        )

    async def stored(self, userId: int) -> tuple[str, int, int] | None:
        return await self.database.run(storedSession, userId)

    async def test_openCreatesSixtyFourByteSecret(self):
        """
        A login gets a secret of 64 random bytes in standard base64 (88 characters).
        """
        userId = await self.addUser()
        session = await self.sessions.open(userId, True, False)
        self.assertEqual(session.userId, userId)
        self.assertEqual(len(session.secret), 88)
        self.assertEqual(len(base64.b64decode(session.secret, validate=True)), 64)
        self.assertEqual(
            base64.b64encode(base64.b64decode(session.secret)).decode(), session.secret
        )

    async def test_secretsDiffer(self):
        """
        Two users never share a session secret.
        """
        alice = await self.sessions.open(await self.addUser("alice"), True, False)
        bob = await self.sessions.open(await self.addUser("bob"), True, False)
        self.assertNotEqual(alice.secret, bob.secret)

    async def test_openStoresTheSession(self):
        """
        A new session is written to the database, so a restart keeps it.
        """
        userId = await self.addUser()
        session = await self.sessions.open(userId, True, False)
        self.assertEqual(await self.stored(userId), (session.secret, START + SHORT, 0))

    async def test_expirationIsRfc3339Utc(self):
        """
        Clients get the expiry as RFC 3339 UTC, like 2026-11-23T01:43:55Z.
        """
        userId = await self.addUser()
        session = await self.sessions.open(userId, True, False)
        self.assertEqual(session.expiration, EXPIRY)
        self.assertTrue(RFC3339_UTC.fullmatch(session.expiration))
        self.assertEqual(
            session.answer(), {"Secret": session.secret, "UserID": userId, "Expiration": EXPIRY}
        )

    async def test_shortSessionLastsThirtyMinutes(self):
        """
        Without StayLoggedIn the secret expires 30 minutes after the login.
        """
        userId = await self.addUser()
        session = await self.sessions.open(userId, True, False)
        self.assertEqual(session.expiresAt, START + SHORT)
        self.clock.advance(SHORT - 1)
        self.assertIsNotNone(await self.sessions.find(userId))
        self.clock.advance(1)
        self.assertIsNone(await self.sessions.find(userId))

    async def test_stayLoggedInLastsSevenDays(self):
        """
        With StayLoggedIn the secret lasts 7 days.
        """
        userId = await self.addUser()
        session = await self.sessions.open(userId, True, True)
        self.assertEqual(session.expiresAt, START + LONG)
        self.assertTrue(session.stayLoggedIn)
        self.assertEqual(await self.stored(userId), (session.secret, START + LONG, 1))
        self.clock.advance(LONG - 1)
        self.assertIsNotNone(await self.sessions.find(userId))
        self.clock.advance(1)
        self.assertIsNone(await self.sessions.find(userId))

    async def test_expiredSessionNotFoundAfterRestart(self):
        """
        An expired session stays expired when loaded from the database.
        """
        userId = await self.addUser()
        await self.sessions.open(userId, True, False)
        self.clock.advance(SHORT)
        self.assertIsNone(await self.restarted().find(userId))

    async def test_secondLoginReturnsSameSecretExtended(self):
        """
        Logging in again while logged in keeps the secret and pushes the expiry back.
        """
        userId = await self.addUser()
        first = await self.sessions.open(userId, True, False)
        secret = first.secret
        self.clock.advance(600)
        second = await self.sessions.open(userId, True, False)
        self.assertEqual(second.secret, secret)
        self.assertEqual(second.expiresAt, START + 600 + SHORT)
        self.assertEqual(await self.stored(userId), (secret, START + 600 + SHORT, 0))
        found = await self.restarted().find(userId)
        self.assertEqual((found.secret, found.expiresAt), (secret, START + 600 + SHORT))

    async def test_loginAfterExpiryGivesNewSecret(self):
        """
        Logging in after the secret expired gives a new secret, not the dead one.
        """
        userId = await self.addUser()
        old = (await self.sessions.open(userId, True, False)).secret
        self.clock.advance(SHORT)
        new = await self.sessions.open(userId, True, False)
        self.assertNotEqual(new.secret, old)
        self.assertEqual(new.expiresAt, START + 2 * SHORT)
        self.assertEqual(await self.stored(userId), (new.secret, START + 2 * SHORT, 0))

    async def test_secondLoginWithStayLoggedInLastsSevenDays(self):
        """
        Asking to stay logged in on a second login gives the 7-day expiry.
        """
        userId = await self.addUser()
        await self.sessions.open(userId, True, False)
        session = await self.sessions.open(userId, True, True)
        self.assertEqual(session.expiresAt, START + LONG)
        self.assertEqual((await self.stored(userId))[1], START + LONG)

    async def test_stayLoggedInFromSecondLoginSurvivesRestart(self):
        """
        A user who ticked StayLoggedIn on a second login is not logged out 30 min after a restart.
        """
        userId = await self.addUser()
        await self.sessions.open(userId, True, False)
        await self.sessions.open(userId, True, True)
        sessions = self.restarted()
        self.clock.advance(3600)
        session = await sessions.find(userId)
        self.assertIsNotNone(session)
        # A signed request an hour later slides a 7-day session, not a 30-minute one.
        await sessions.extend(session)
        self.assertEqual(session.expiresAt, START + 3600 + LONG)
        self.clock.advance(SHORT + 60)
        self.assertIsNotNone(await sessions.find(userId))

    async def test_extendSlidesExpiry(self):
        """
        Using the secret keeps it alive: the expiry is 30 minutes after the last use.
        """
        userId = await self.addUser()
        session = await self.sessions.open(userId, True, False)
        self.clock.advance(SHORT - 10)
        await self.sessions.extend(session)
        self.assertEqual(session.expiresAt, START + 2 * SHORT - 10)
        self.clock.advance(SHORT - 1)
        self.assertIsNotNone(await self.sessions.find(userId))
        self.clock.advance(1)
        self.assertIsNone(await self.sessions.find(userId))

    async def test_extendWritesBackOnlyAfterSixtySeconds(self):
        """
        Every signed request does not cost a database write; a minute's slide does.
        """
        userId = await self.addUser()
        session = await self.sessions.open(userId, True, False)
        self.clock.advance(59)
        await self.sessions.extend(session)
        self.assertEqual(session.expiresAt, START + 59 + SHORT)
        self.assertEqual((await self.stored(userId))[1], START + SHORT)
        self.clock.advance(1)
        await self.sessions.extend(session)
        self.assertEqual((await self.stored(userId))[1], START + 60 + SHORT)
        self.clock.advance(30)
        await self.sessions.extend(session)
        self.assertEqual(session.expiresAt, START + 90 + SHORT)
        self.assertEqual((await self.stored(userId))[1], START + 60 + SHORT)

    async def test_writtenBackExpirySurvivesRestart(self):
        """
        A session kept alive by use is still alive after a restart.
        """
        userId = await self.addUser()
        session = await self.sessions.open(userId, True, False)
        self.clock.advance(SHORT - 60)
        await self.sessions.extend(session)
        self.clock.advance(120)
        found = await self.restarted().find(userId)
        self.assertIsNotNone(found)
        self.assertEqual(found.secret, session.secret)

    async def test_closeEndsSessionAtOnce(self):
        """
        After logout the secret stops working immediately.
        """
        userId = await self.addUser()
        await self.sessions.open(userId, True, False)
        await self.sessions.close(userId)
        self.assertIsNone(await self.sessions.find(userId))
        self.assertIsNone(await self.stored(userId))

    async def test_closeSurvivesRestart(self):
        """
        A logged-out secret does not come back after a restart.
        """
        userId = await self.addUser()
        await self.sessions.open(userId, True, True)
        await self.sessions.close(userId)
        self.assertIsNone(await self.restarted().find(userId))

    async def test_loginAfterCloseGivesNewSecret(self):
        """
        Logging in after logging out never hands back the old secret.
        """
        userId = await self.addUser()
        old = (await self.sessions.open(userId, True, False)).secret
        await self.sessions.close(userId)
        new = await self.sessions.open(userId, True, False)
        self.assertNotEqual(new.secret, old)

    async def test_findUnknownUserIsNone(self):
        """
        A user with no session (or no account) has no secret.
        """
        self.assertIsNone(await self.sessions.find(await self.addUser()))
        self.assertIsNone(await self.sessions.find(999))

    async def test_findIsCached(self):
        """
        A signed request for a known session costs no query: found once, then cached.
        """
        userId = await self.addUser()
        session = await self.sessions.open(userId, True, False)
        self.assertIs(await self.sessions.find(userId), session)
        sessions = self.restarted()
        loaded = await sessions.find(userId)
        self.assertIs(sessions._cache[userId], loaded)
        self.assertIs(await sessions.find(userId), loaded)

    async def test_forgetRacingFindDoesNotCacheStaleSession(self):
        """
        A session read just before a logout or password change is not cached afterwards.
        """
        userId = await self.addUser()
        await self.sessions.open(userId, True, False)
        self.sessions.forget(userId)
        finding = Deferred.fromCoroutine(self.sessions.find(userId))
        # The pool answers through the reactor, so nothing has come back yet.
        self.assertNoResult(finding)
        self.sessions.forget(userId)
        await finding
        self.assertNotIn(userId, self.sessions._cache)

    async def test_restartStillFindsSession(self):
        """
        Restarting the daemon logs nobody out.
        """
        userId = await self.addUser()
        session = await self.sessions.open(userId, True, True)
        found = await self.restarted().find(userId)
        self.assertEqual(
            (found.userId, found.secret, found.expiresAt, found.stayLoggedIn, found.registered),
            (userId, session.secret, START + LONG, True, True),
        )
        self.assertEqual(found.expiration, session.expiration)

    async def test_registrationSeenAfterRestart(self):
        """
        Whether the user is registered is read from the user, not remembered from the login.
        """
        code = "c" * 64
        userId = await self.database.run(
            store.addUser, "carol", "carol@example.com", b"$2b$04$" + b"x" * 53, code, START
        )
        session = await self.sessions.open(userId, False, False)
        self.assertFalse(session.registered)
        self.assertTrue(await self.database.run(store.completeRegistration, userId, code))
        self.sessions.registered(userId)
        self.assertTrue((await self.sessions.find(userId)).registered)
        self.assertTrue((await self.restarted().find(userId)).registered)

    async def test_loginRacingPasswordChangeLeavesNoLiveSecret(self):
        """
        A login racing a password change must not leave a secret that still works after it.
        """
        userId = await self.addUser()
        firstHold, secondHold = threading.Event(), threading.Event()
        # Released in cleanup too, so a failure never leaves the pool's thread blocked.
        self.addCleanup(secondHold.set)
        self.addCleanup(firstHold.set)
        secondHeld: Deferred[None] = Deferred()

        def holdSecond(cursor: Any) -> None:
            reactor.callFromThread(secondHeld.callback, None)
            secondHold.wait(10)

        # SQLite's pool has one thread: hold it so the login's queries queue up.
        self.database.run(lambda cursor: firstHold.wait(10))
        opening = Deferred.fromCoroutine(self.sessions.open(userId, True, False))
        holding = self.database.run(holdSecond)
        firstHold.set()
        # The login has read "no session" and queued its INSERT behind the hold.
        await secondHeld
        # Accounts.changePassword, concurrently: drop the cache, then change the database.
        self.sessions.forget(userId)
        changing = self.database.run(store.setPassword, userId, b"$2b$04$" + b"y" * 53)
        secondHold.set()
        await holding
        await opening
        await changing
        self.assertIsNone(await self.stored(userId))
        self.assertIsNone(await self.sessions.find(userId))
