"""
Tests for L{socktopus_tw.db.door} when the database stops answering (issue
11, items 7 and 13): a frozen database (MariaDB C{SIGSTOP}ped, or a SQLite
file another process holds locked) fails each query at its deadline instead
of hanging it, C{/ready} answers within 2 s, work given up is never done
late, everything recovers once the database thaws, and an outage is one
warning and one line when it ends, not a traceback per request; a server
frozen when the daemon starts is one line, not a daemon hanging there.

The pool's threads are real and so is the database; the deadlines run on a
L{Clock}, so nothing here waits for them.
"""

from __future__ import annotations

import os
import signal
import sqlite3
from collections.abc import Callable
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import CancelledError, inlineCallbacks
from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import LogLevel, globalLogPublisher
from twisted.trial.unittest import TestCase
from twisted.web.server import Request
from twisted.web.test.requesthelper import DummyChannel

from socktopus_tw.accounts import store
from socktopus_tw.db import (
    Conflict,
    Database,
    DatabaseConfig,
    DatabaseError,
    Unreachable,
    checkDatabase,
    openPool,
)
from socktopus_tw.db import config as configModule
from socktopus_tw.health import READY_TIMEOUT, Ready
from tests.support.database import DatabaseTestsMixin, MariaDBDatabase, SQLiteDatabase


def doorEvents(observer: EventLoggingObserver) -> list[dict[str, Any]]:
    """
    The events the database package logged, and every logged failure.
    """
    return [
        event
        for event in observer
        if event.get("log_namespace", "").startswith("socktopus_tw.db") or "log_failure" in event
    ]


def outageLines(observer: EventLoggingObserver) -> list[tuple[Any, Any]]:
    """
    The (level, outage) of each event the database package logged.
    """
    return [(event["log_level"], event.get("outage")) for event in doorEvents(observer)]


def freezeProcess(testCase: TestCase, pid: int) -> Callable[[], None]:
    """
    Stop process C{pid} with C{SIGSTOP}: its connections stay open and
    nothing answers (a hung host, a stalled disk, a paused VM). Returns the
    thaw, which the test's cleanup also runs.
    """
    frozen = [pid]

    def thaw() -> None:
        while frozen:
            os.kill(frozen.pop(), signal.SIGCONT)

    # Registered first: whatever happens, the next test finds it running.
    testCase.addCleanup(thaw)
    os.kill(pid, signal.SIGSTOP)
    return thaw


def lockFile(testCase: TestCase, path: str) -> Callable[[], None]:
    """
    Hold an exclusive lock on the SQLite file C{path} from another
    connection, as a backup or a C{sqlite3} shell left in a transaction
    does: every query of the daemon waits. Returns the release, which the
    test's cleanup also runs.
    """
    locker = sqlite3.connect(path, isolation_level=None)
    held = [locker]

    def release() -> None:
        while held:
            connection = held.pop()
            connection.rollback()
            connection.close()

    testCase.addCleanup(release)
    locker.execute("BEGIN EXCLUSIVE")
    return release


def readyRequest() -> Request:
    """
    C{GET /ready} as twisted.web hands it to the resource.
    """
    channel = DummyChannel()
    request = Request(channel)
    # Kept: twisted.web lets go of the channel once the request is done.
    request.testChannel = channel
    request.method = b"GET"
    request.uri = request.path = b"/ready"
    request.postpath = []
    request.prepath = [b"ready"]
    return request


def answerOf(request: Request) -> tuple[int, bytes]:
    """
    The status and body a finished request answered with.
    """
    assert request.finished, "no answer yet"
    written = request.testChannel.transport.written.getvalue()
    return request.code, written.split(b"\r\n\r\n", 1)[1]


class FrozenTestsMixin(DatabaseTestsMixin):
    """
    A database that stops answering. Backends give L{freeze}.
    """

    def openDatabase(self, config: DatabaseConfig) -> Database:
        # Deadlines on a Clock, queries on the pool's real threads.
        self.clock = Clock()
        pool = openPool(config, reactor)
        pool.start()
        self.addCleanup(pool.close)
        return Database(pool, config, clock=self.clock)

    def freeze(self) -> None:
        """
        Make the database stop answering, and set C{self.thaw} to undo it.
        """
        raise NotImplementedError()

    @inlineCallbacks
    def test_frozenQueryIsUnreachableAtItsDeadline(self):
        """
        A query the database does not answer fails as Unreachable (a 503)
        when its deadline passes, not when the database wakes up.
        """
        userId = yield self.addUser("anna")
        self.freeze()
        answer = self.query(store.userWithId, userId)
        self.clock.advance(self.database.timeout - 0.1)
        self.assertNoResult(answer)
        self.clock.advance(0.1)
        self.failureResultOf(answer, Unreachable)
        self.thaw()
        self.assertEqual((yield self.query(store.userWithId, userId)).name, "anna")

    def test_requestDeadlineIsAFewSeconds(self):
        """
        Requests wait 5 s for the database by default, and that is configurable.
        """
        self.assertEqual(self.database.timeout, 5)
        other = Database(self.database.pool, self.config, clock=self.clock, timeout=0.5)
        self.assertEqual(other.timeout, 0.5)

    @inlineCallbacks
    def test_workGivenUpIsNeverDoneLate(self):
        """
        More writes than the pool has threads, all answered 503 at their
        deadline: none of them is done when the database wakes up (their
        clients were told it failed), each was answered exactly once, and the
        door answers again at once, with no backlog of stale work.
        """
        yield self.addUser("warm")
        self.freeze()
        names = [f"late{i}" for i in range(self.database.pool.max + 3)]
        answers = [self.addUser(name) for name in names]
        fired: list[str] = []
        for name, answer in zip(names, answers, strict=True):
            answer.addErrback(lambda f, name=name: fired.append(name) or f)
        self.clock.advance(self.database.timeout)
        for answer in answers:
            self.failureResultOf(answer, Unreachable)
        self.thaw()
        found = yield self.query(store.idsNamed, names)
        self.assertEqual(found, {})
        self.assertEqual(sorted(fired), sorted(names))
        # The pool took new work after the thaw, and still does.
        userId = yield self.addUser("after")
        self.assertEqual((yield self.query(store.userWithId, userId)).name, "after")

    @inlineCallbacks
    def test_callerGivingUpIsLikeADeadline(self):
        """
        A query its caller cancels (its client went away) is given up as at
        its deadline: not done later, and its deadline then does nothing.
        """
        yield self.addUser("warm")
        self.freeze()
        answer = self.addUser("gone")
        answer.cancel()
        self.failureResultOf(answer, CancelledError)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.thaw()
        self.assertIsNone((yield self.query(store.userNamed, "gone")))

    @inlineCallbacks
    def test_readyAnswersWithinTwoSeconds(self):
        """
        A load balancer asking /ready of a daemon whose database is frozen
        gets 503 within 2 s, and 200 again once the database thaws.
        """
        self.assertLessEqual(READY_TIMEOUT, 2)
        ready = Ready(self.database)
        self.freeze()
        request = readyRequest()
        ready.render(request)
        self.clock.advance(READY_TIMEOUT - 0.1)
        self.assertFalse(request.finished)
        self.clock.advance(0.1)
        self.assertEqual(answerOf(request), (503, b'{"code":503,"message":"Database unavailable"}'))
        self.thaw()
        request = readyRequest()
        finished = request.notifyFinish()
        ready.render(request)
        yield finished
        self.assertEqual(answerOf(request), (200, b'{"status":"ready"}'))

    @inlineCallbacks
    def test_frozenOutageIsOneWarningAndOneLineWhenBack(self):
        """
        However many requests a frozen database fails, the log says it once,
        as a warning, and once more, as one line, when it answers again.
        """
        observer = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        userId = yield self.addUser("bert")
        self.freeze()
        answers = [self.query(store.userWithId, userId) for _ in range(12)]
        self.clock.advance(self.database.timeout)
        for answer in answers:
            self.failureResultOf(answer, Unreachable)
        self.assertEqual(outageLines(observer), [(LogLevel.warn, "began")])
        self.thaw()
        yield self.query(store.userWithId, userId)
        yield self.query(store.userWithId, userId)
        self.assertEqual(
            outageLines(observer), [(LogLevel.warn, "began"), (LogLevel.info, "ended")]
        )


class SQLiteFrozenTests(SQLiteDatabase, FrozenTestsMixin, TestCase):
    """
    A SQLite file another connection holds an exclusive lock on.
    """

    def freeze(self) -> None:
        self.thaw = lockFile(self, self.config.arguments["database"])


class MariaDBFrozenTests(MariaDBDatabase, FrozenTestsMixin, TestCase):
    """
    The MariaDB server process stopped with C{SIGSTOP}.
    """

    def freeze(self) -> None:
        process = self.server.process
        assert process is not None, "the test MariaDB server is not running"
        self.thaw = freezeProcess(self, process.pid)

    def test_frozenServerAtStartIsOneLine(self):
        """
        A server frozen when the daemon starts is the start-up check's one
        line after the driver's timeout, not a daemon hanging before it listens.
        """
        self.assertEqual(configModule.DRIVER_TIMEOUT, 10)
        # The real 10 s, shortened: waiting out a timeout proves nothing more.
        self.patch(configModule, "DRIVER_TIMEOUT", 0.5)
        self.freeze()
        error = self.assertRaises(DatabaseError, checkDatabase, self.config)
        self.assertIn(self.name, str(error))
        self.assertIn("timed out", str(error))

    @inlineCallbacks
    def test_stoppedServerLogsNoTracebacks(self):
        """
        While MariaDB is down every query fails at once as Unreachable, and
        the log has one warning for the outage, no "Rollback failed"
        traceback per request; one line says when it is back.
        """
        observer = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        userId = yield self.addUser("carl")
        # Several pooled connections, so that several go stale.
        yield self.query(store.userWithId, userId)
        self.addCleanup(self.server.start)
        self.server.stop()
        for _ in range(10):
            yield self.assertFailure(self.query(store.userWithId, userId), Unreachable)
        self.assertEqual(outageLines(observer), [(LogLevel.warn, "began")])
        self.assertEqual(self.flushLoggedErrors(), [])
        self.server.start()
        user = yield self.query(store.userWithId, userId)
        self.assertEqual(user.name, "carl")
        self.assertEqual(
            outageLines(observer), [(LogLevel.warn, "began"), (LogLevel.info, "ended")]
        )
        self.assertEqual(self.flushLoggedErrors(), [])


class OutageLogTests(SQLiteDatabase, DatabaseTestsMixin, TestCase):
    """
    README: "one warning when an outage begins and one line when the
    database answers again".
    """

    def openDatabase(self, config: DatabaseConfig) -> Database:
        self.clock = Clock()
        pool = openPool(config, reactor)
        pool.start()
        self.addCleanup(pool.close)
        return Database(pool, config, clock=self.clock)

    async def test_anAnswerThatIsARefusalEndsTheOutage(self):
        """
        After a freeze the database answers again, but its first answer is a
        refusal (a duplicate user name: a Conflict): that is an answer all
        the same, and the log says the database is back.
        """
        observer = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        await self.addUser("taken")
        thaw = lockFile(self, self.config.arguments["database"])
        answer = self.query(store.userNamed, "taken")
        self.clock.advance(self.database.timeout)
        self.failureResultOf(answer, Unreachable)
        thaw()
        with self.assertRaises(Conflict):
            await self.addUser("taken")
        self.assertEqual(
            outageLines(observer), [(LogLevel.warn, "began"), (LogLevel.info, "ended")]
        )
