"""
The accounts service under faults (issue 11): a frozen database (item 7),
Auth Headers replayed across a restart or to another node (item 8), and
user enumeration by timing after a C{--bcrypt-rounds} change (item 9).

The domain is driven directly over real databases with a L{Clock} where
time matters; the daemon end to end where the composition is the point.
"""

from __future__ import annotations

import itertools
import threading
from typing import Any

import bcrypt
from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults, inlineCallbacks
from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import LogLevel, globalLogPublisher
from twisted.trial.unittest import TestCase

from socktopus_tw.accounts import store
from socktopus_tw.accounts.headers import WINDOW, SignedRequest, sign
from socktopus_tw.accounts.passwords import Passwords
from socktopus_tw.accounts.service import Accounts
from socktopus_tw.db import Database, DatabaseConfig, openPool
from socktopus_tw.errors import NotAuthorized, Unavailable, WrongCredentials
from socktopus_tw.health import READY_TIMEOUT
from tests.db.test_frozen import freezeProcess, lockFile
from tests.support.accounts import PASSWORD, registerAndLogin, signedHeaders
from tests.support.daemon import Daemon
from tests.support.database import DatabaseTestsMixin, MariaDBDatabase, SQLiteDatabase
from tests.support.mariadb import server

#: The clock of the domain tests: some Unix time, as the reactor's would be.
START = 1_800_000_000
NOT_AUTHORIZED = {"Error": "Not Authorized Request"}


def hashedAt(cost: int, password: str = PASSWORD) -> bytes:
    return bcrypt.hashpw(password.encode("utf-8"), bcrypt.gensalt(cost))


def costOf(hashed: bytes) -> int:
    return int(hashed.split(b"$")[2])


def signedAt(userId: int, secret: str, path: str, timeSent: float) -> SignedRequest:
    """
    The Auth Headers of a request to C{path}, as a client sends them.
    """
    stamp = str(int(timeSent))
    return SignedRequest(userId, path, stamp, bytes.fromhex(sign(secret, stamp, path)))


class AccountsTestsMixin(DatabaseTestsMixin):
    """
    The accounts domain over a fresh database, its clock (and the door's
    deadlines) a L{Clock}, bcrypt at cost 4 on a real thread pool.
    """

    rounds = 4

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(START)
        super().setUp()
        self.passwords = RecordingPasswords(reactor, rounds=self.rounds, threads=2)
        self.passwords.startService()
        self.addCleanup(self.passwords.stopService)
        self.accounts = self.restarted()

    def openDatabase(self, config: DatabaseConfig) -> Database:
        pool = openPool(config, reactor)
        pool.start()
        self.addCleanup(pool.close)
        return Database(pool, config, clock=self.clock)

    def restarted(self) -> Accounts:
        """
        A new accounts service over the same database: what a restarted
        daemon, or another node on the same database, holds.
        """
        return Accounts(self.database, self.passwords, self.clock)

    async def addUserHashedAt(self, name: str, cost: int) -> int:
        return await self.addUser(name, passwordHash=hashedAt(cost))

    async def storedHash(self, name: str) -> bytes:
        return (await self.query(store.userNamed, name)).passwordHash


class RecordingPasswords(Passwords):
    """
    Passwords that note the thread each new hash was made on, with a list
    for the cost of every hash checked (filled where bcrypt is watched).
    """

    def __init__(self, *arguments: Any, **keywords: Any) -> None:
        super().__init__(*arguments, **keywords)
        self.checkedCosts: list[int] = []
        self.hashThreads: list[threading.Thread] = []

    def _hash(self, password: str) -> bytes:
        self.hashThreads.append(threading.current_thread())
        return super()._hash(password)


# -- item 7: a frozen database ------------------------------------------------


class FrozenDatabaseDaemonTests(TestCase):
    """
    The daemon on a MariaDB server stopped with C{SIGSTOP}, in real time:
    its requests get 503 at their deadlines instead of hanging.
    """

    timeout = 120

    def setUp(self) -> None:
        self.server = server()
        name = self.server.createDatabase()
        self.addCleanup(self.server.dropDatabase, name)
        self.url = self.server.url(name)

    @inlineCallbacks
    def test_frozenDatabaseIs503InTimeThenRecovers(self):
        """
        While MariaDB is frozen every request that needs it is answered 503
        (/ready within 2 s, accounts requests within their 5 s deadline, not
        after the freeze ends); once it thaws everything works again.
        """
        daemon = Daemon(self, "--database", self.url, "--bcrypt-rounds", "4")
        userId, secret = yield registerAndLogin(daemon, "ivan")
        thaw = freezeProcess(self, self.server.process.pid)
        began = reactor.seconds()

        def timed(d):
            return d.addCallback(lambda answer: (answer[0], answer[1], reactor.seconds() - began))

        answers = yield gatherResults(
            [
                timed(daemon.request("GET", "/ready")),
                timed(daemon.post("/login", {"User": "ivan", "Password": PASSWORD})),
                timed(
                    daemon.post(
                        "/users",
                        {"User": "judy", "Password": PASSWORD, "Email": "judy@example.com"},
                    )
                ),
                timed(
                    daemon.post(
                        "/authHeaders",
                        b"",
                        headers=signedHeaders(userId, secret, "/backend/orders"),
                    )
                ),
            ]
        )
        ready, *accounts = answers
        self.assertEqual(ready[:2], (503, {"code": 503, "message": "Database unavailable"}))
        self.assertLess(ready[2], 2.0)
        self.assertGreaterEqual(ready[2], READY_TIMEOUT - 0.1)
        for status, body, seconds in accounts:
            self.assertEqual((status, body), (503, {"Error": "Service unavailable, try again"}))
            self.assertLess(seconds, 7.0)
        thaw()
        status, body, _ = yield daemon.request("GET", "/ready")
        self.assertEqual((status, body), (200, {"status": "ready"}))
        status, body, _ = yield daemon.post("/login", {"User": "ivan", "Password": PASSWORD})
        self.assertEqual((status, body["Secret"]), (200, secret))
        status, body, _ = yield daemon.post(
            "/authHeaders", b"", headers=signedHeaders(userId, secret, "/backend/after")
        )
        self.assertEqual((status, body), (200, {"UserID": userId}))


# -- item 8: replays across a restart, and between nodes ----------------------


class ReplayTestsMixin(AccountsTestsMixin):
    """
    A set of Auth Headers is accepted once by every accounts service on one
    database, whatever restarted in between.
    """

    async def loggedIn(self, name: str = "kim") -> tuple[int, str]:
        userId = await self.addUser(name, passwordHash=hashedAt(self.rounds))
        session = await self.accounts.login(name, PASSWORD, False)
        return userId, session.secret

    async def test_headersAcceptedBeforeARestartAreRefusedAfterIt(self):
        """
        Headers a daemon accepted are refused by the daemon restarted within
        their 10 s window; fresh headers still work there.
        """
        userId, secret = await self.loggedIn()
        signed = signedAt(userId, secret, "/logout", START)
        await self.accounts.authenticate(signed, "/logout")
        self.clock.advance(3)
        restarted = self.restarted()
        with self.assertRaises(NotAuthorized):
            await restarted.authenticate(signed, "/logout")
        fresh = signedAt(userId, secret, "/logout", START + 3)
        self.assertEqual((await restarted.authenticate(fresh, "/logout")).userId, userId)

    async def test_headersAcceptedByOneNodeAreRefusedByAnother(self):
        """
        Two daemons on one database: headers one accepted, the other refuses,
        in either order.
        """
        userId, secret = await self.loggedIn()
        other = self.restarted()
        first = signedAt(userId, secret, "/authHeaders", START)
        second = signedAt(userId, secret, "/backend/x", START)
        await other.authenticate(first, None)
        await self.accounts.authenticate(second, None)
        with self.assertRaises(NotAuthorized):
            await self.accounts.authenticate(first, None)
        with self.assertRaises(NotAuthorized):
            await other.authenticate(second, None)

    async def test_headersAnswered503CanBeSentAgain(self):
        """
        Headers refused with 503 because the database did not answer are not
        taken as used: the client's retry with the same headers is served.
        """
        userId, secret = await self.loggedIn()
        signed = signedAt(userId, secret, "/authHeaders", START)
        self.freeze()
        attempt = Deferred.fromCoroutine(self.accounts.authenticate(signed, None))
        self.clock.advance(self.database.timeout)
        with self.assertRaises(Unavailable):
            await attempt
        self.thaw()
        self.assertEqual((await self.accounts.authenticate(signed, None)).userId, userId)
        with self.assertRaises(NotAuthorized):
            await self.accounts.authenticate(signed, None)

    async def test_headersOutOfTheWindowAreForgotten(self):
        """
        What the guard keeps in the database is dropped once the headers
        could no longer pass the time check: it does not grow without bound.
        """
        userId, secret = await self.loggedIn()
        for _ in range(5):
            signed = signedAt(userId, secret, "/authHeaders", self.clock.seconds())
            await self.accounts.authenticate(signed, None)
            self.clock.advance(1)
        self.assertEqual(await self.query(countSeen), 5)
        self.clock.advance(2 * WINDOW + 1)
        signed = signedAt(userId, secret, "/authHeaders", self.clock.seconds())
        await self.accounts.authenticate(signed, None)
        self.assertEqual(await self.query(countSeen), 1)


def countSeen(cursor: Any) -> int:
    cursor.execute("SELECT COUNT(*) FROM seen_headers")
    return int(cursor.fetchone()[0])


class SQLiteReplayTests(SQLiteDatabase, ReplayTestsMixin, TestCase):
    def freeze(self) -> None:
        self.thaw = lockFile(self, self.config.arguments["database"])


class MariaDBReplayTests(MariaDBDatabase, ReplayTestsMixin, TestCase):
    def freeze(self) -> None:
        self.thaw = freezeProcess(self, self.server.process.pid)


class ReplayDaemonTestsMixin:
    """
    The issue's reproduction: the real daemon, restarted, on one database.
    """

    timeout = 120

    def databaseUrl(self) -> str:
        raise NotImplementedError()

    def daemon(self) -> Daemon:
        return Daemon(self, "--database", self.url, "--bcrypt-rounds", "4")

    @inlineCallbacks
    def test_sameHeadersRefusedAfterARestart(self):
        """
        POST /authHeaders with the same headers before and after a restart,
        within the 10 s window: 200, then 401.
        """
        self.url = self.databaseUrl()
        first = self.daemon()
        userId, secret = yield registerAndLogin(first, "lena")
        headers = signedHeaders(userId, secret, "/backend/orders")
        status, body, _ = yield first.post("/authHeaders", b"", headers=headers)
        self.assertEqual((status, body), (200, {"UserID": userId}))
        yield first.stop()
        second = self.daemon()
        status, body, _ = yield second.post("/authHeaders", b"", headers=headers)
        self.assertEqual((status, body), (401, NOT_AUTHORIZED))
        status, body, _ = yield second.post(
            "/authHeaders", b"", headers=signedHeaders(userId, secret, "/backend/other")
        )
        self.assertEqual((status, body), (200, {"UserID": userId}))


class SQLiteReplayDaemonTests(ReplayDaemonTestsMixin, TestCase):
    def databaseUrl(self) -> str:
        return "sqlite:" + self.mktemp() + ".sqlite3"


class MariaDBReplayDaemonTests(ReplayDaemonTestsMixin, TestCase):
    def databaseUrl(self) -> str:
        name = server().createDatabase()
        self.addCleanup(server().dropDatabase, name)
        return server().url(name)


# -- item 9: the cost of a password check -------------------------------------


class PasswordCostTests(SQLiteDatabase, AccountsTestsMixin, TestCase):
    """
    After C{--bcrypt-rounds} changed, an unknown user's login costs what a
    stored user's costs, and users move to the new cost as they log in.
    """

    def setUp(self) -> None:
        super().setUp()
        realCheck = bcrypt.checkpw

        def recordingCheck(password: bytes, hashed: bytes) -> bool:
            self.passwords.checkedCosts.append(costOf(hashed))
            return realCheck(password, hashed)

        # bcrypt's own function, so every check is seen, whoever makes it.
        self.patch(bcrypt, "checkpw", recordingCheck)

    async def failedLogin(self, name: str, password: str = "not the password") -> None:
        with self.assertRaises(WrongCredentials):
            await self.accounts.login(name, password, False)

    async def test_unknownUserCostsWhatMostStoredUsersCost(self):
        """
        Users hashed at 5 while the daemon runs at 4: a wrong user name costs
        a check at 5, like a wrong password, whichever user was checked last.
        """
        for name in ("old1", "old2", "old3"):
            await self.addUserHashedAt(name, 5)
        await self.addUserHashedAt("new", 4)
        await self.failedLogin("new")
        await self.failedLogin("nobody")
        await self.failedLogin("old1")
        await self.failedLogin("nobody", "p" * 100)
        self.assertEqual(self.passwords.checkedCosts, [4, 5, 5, 5])

    async def test_successfulLoginRehashesAtTheCurrentCost(self):
        """
        A user hashed at 5 logs in to a daemon at 4: the stored hash is made
        again at 4 (off the reactor thread), the password still works, the
        session is not ended, and the next login does not rehash.
        """
        userId = await self.addUserHashedAt("maria", 5)
        session = await self.accounts.login("maria", PASSWORD, False)
        stored = await self.storedHash("maria")
        self.assertEqual(costOf(stored), 4)
        self.assertTrue(bcrypt.checkpw(PASSWORD.encode(), stored))
        self.assertEqual(len(self.passwords.hashThreads), 1)
        self.assertIsNot(self.passwords.hashThreads[0], threading.current_thread())
        signed = signedAt(userId, session.secret, "/logout", START)
        self.assertEqual((await self.accounts.authenticate(signed, "/logout")).userId, userId)
        again = await self.accounts.login("maria", PASSWORD, False)
        self.assertEqual(again.secret, session.secret)
        self.assertEqual(await self.storedHash("maria"), stored)
        self.assertEqual(len(self.passwords.hashThreads), 1)
        # The only user is at 4 now, and so is an unknown user's check.
        self.passwords.checkedCosts.clear()
        await self.failedLogin("nobody")
        self.assertEqual(self.passwords.checkedCosts, [4])

    async def test_failedLoginNeverRehashes(self):
        """
        A wrong password leaves the stored hash alone.
        """
        await self.addUserHashedAt("nina", 5)
        before = await self.storedHash("nina")
        await self.failedLogin("nina")
        self.assertEqual(await self.storedHash("nina"), before)
        self.assertEqual(self.passwords.hashThreads, [])

    async def test_rehashLosesNoRaceWithAPasswordChange(self):
        """
        A rehash never puts back the old password over a change made
        meanwhile: it only replaces the hash it checked.
        """
        userId = await self.addUserHashedAt("olga", 5)
        user = await self.query(store.userNamed, "olga")
        changed = hashedAt(4, "a brand new password")
        await self.query(store.setPassword, userId, changed)
        replaced = await self.query(store.rehashPassword, userId, user.passwordHash, hashedAt(4))
        self.assertFalse(replaced)
        self.assertEqual(await self.storedHash("olga"), changed)


# -- review findings: the write-back of a session, two nodes at once ----------


class ExpiryWriteBackTests(SQLiteDatabase, AccountsTestsMixin, TestCase):
    """
    README: "Auth Headers answered 503 may be sent again." The sliding
    expiry is written back after the headers are recorded as used, so a
    write-back the database does not answer must not answer 503.
    """

    async def test_aWriteBackTheDatabaseDoesNotAnswerIsNotA503(self):
        """
        The database freezes after the headers' row was inserted, while the
        session's expiry is written back: the request is served all the
        same (its headers were used), and the next request writes the new
        expiry.
        """
        userId = await self.addUser("kim", passwordHash=hashedAt(self.rounds))
        secret = (await self.accounts.login("kim", PASSWORD, False)).secret
        stored = (await self.query(store.sessionOf, userId)).expiresAt
        # A minute on: this request also writes the sliding expiry back.
        self.clock.advance(61)
        run = self.database.run
        thaw = []

        def freezingAfterTheInsert(f: Any, *arguments: Any, **keywords: Any) -> Deferred:
            if f is not store.extendSession:
                return run(f, *arguments, **keywords)
            thaw.append(lockFile(self, self.config.arguments["database"]))
            answer = run(f, *arguments, **keywords)
            self.clock.advance(self.database.timeout)
            return answer

        self.patch(self.database, "run", freezingAfterTheInsert)
        signed = signedAt(userId, secret, "/authHeaders", self.clock.seconds())
        session = await self.accounts.authenticate(signed, None)
        self.assertEqual((session.userId, len(thaw)), (userId, 1))
        thaw[0]()
        self.patch(self.database, "run", run)
        self.assertEqual((await self.query(store.sessionOf, userId)).expiresAt, stored)
        with self.assertRaises(NotAuthorized):
            await self.accounts.authenticate(signed, None)
        fresh = signedAt(userId, secret, "/authHeaders", self.clock.seconds())
        await self.accounts.authenticate(fresh, None)
        self.assertEqual((await self.query(store.sessionOf, userId)).expiresAt, session.expiresAt)


class Barrier:
    """
    A cursor for C{store.acceptHeaders} that waits, after its first
    statement, until every other node has run its own: the nodes' two
    transactions interleaved as two daemons given a request at the same
    moment interleave them.
    """

    def __init__(self, cursor: Any, barrier: threading.Barrier) -> None:
        self._cursor = cursor
        self._barrier = barrier
        self._first = True

    def execute(self, query: str, arguments: Any = ()) -> None:
        self._cursor.execute(query, arguments)
        if self._first:
            self._first = False
            self._barrier.wait()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cursor, name)


class TwoNodesTests(MariaDBDatabase, AccountsTestsMixin, TestCase):
    """
    Two daemons on one MariaDB database, as the persisted replay guard is
    for.
    """

    async def loggedIn(self, accounts: Accounts, name: str) -> tuple[int, str]:
        userId = await self.addUser(name, passwordHash=hashedAt(self.rounds))
        session = await accounts.login(name, PASSWORD, False)
        return userId, session.secret

    async def test_twoNodesAcceptDistinctHeadersAtOnce(self):
        """
        Two users' Auth Headers reaching two daemons at the same moment after
        a quiet spell are both served, and nothing warns: the old rows are
        forgotten in a transaction of their own, so neither daemon's insert
        waits for a gap lock the other's DELETE took (InnoDB deadlock 1213).
        """
        other = Accounts(self.openDatabase(self.config), self.passwords, self.clock)
        first = await self.loggedIn(self.accounts, "kim")
        second = await self.loggedIn(other, "lee")
        barrier = threading.Barrier(2, timeout=10)
        accept = store.acceptHeaders
        calls = itertools.count()

        def interleaved(cursor: Any, *arguments: Any) -> None:
            # The two nodes' first transactions meet; any retry runs freely.
            accept(Barrier(cursor, barrier) if next(calls) < 2 else cursor, *arguments)

        self.patch(store, "acceptHeaders", interleaved)
        observer = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        now = self.clock.seconds()
        outcomes = await gatherResults(
            [
                Deferred.fromCoroutine(
                    node.authenticate(signedAt(userId, secret, "/authHeaders", now), None)
                ).addErrback(lambda f: f.value)
                for node, (userId, secret) in ((self.accounts, first), (other, second))
            ]
        )
        warnings = [e for e in observer if e["log_level"] >= LogLevel.warn]
        self.assertEqual(
            [getattr(outcome, "userId", outcome) for outcome in outcomes],
            [first[0], second[0]],
        )
        self.assertEqual(warnings, [])

    async def test_aDeadlockIsRetried(self):
        """
        Work the server rolled back as a deadlock's victim is tried again:
        the caller gets its answer, and no outage is logged.
        """
        import pymysql

        userId = await self.addUser("kim", passwordHash=hashedAt(self.rounds))
        calls = itertools.count()

        def deadlockedOnce(cursor: Any, userId: int) -> Any:
            if next(calls) == 0:
                raise pymysql.err.OperationalError(1213, "Deadlock found")
            return store.userWithId(cursor, userId)

        deadlockedOnce.__name__ = "userWithId"
        observer = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        user = await self.database.run(deadlockedOnce, userId)
        self.assertEqual((user.id, next(calls)), (userId, 2))
        self.assertEqual([e for e in observer if "outage" in e], [])
