# -*- test-case-name: tests.db.test_door,tests.db.test_frozen,tests.accounts.test_store -*-
"""
The one door to the database: L{Database} runs blocking store functions in a
transaction on a L{Pool}'s threads, each within a deadline, and
L{DatabaseService} owns the pool for the daemon's lifetime.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any, TypeVar

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from socktopus_tw.db.config import DatabaseConfig
from socktopus_tw.db.pool import Abandoned, Job, Pool
from socktopus_tw.db.schema import migrate
from socktopus_tw.errors import StartupError

T = TypeVar("T")

#: Seconds a request waits for the database before it is answered 503. Our
#: queries take milliseconds; one that has not answered in 5 s is stuck
#: (a frozen server, a lock held elsewhere), and the client is better told.
TIMEOUT = 5.0

#: Times work that lost a lock conflict (a deadlock between two daemons'
#: transactions, say) is tried again before the caller is told.
CONTENDED_RETRIES = 2


def openPool(config: DatabaseConfig, reactor: Any) -> Pool:
    """
    A connection pool for C{config}, sized and set up by its dialect.
    """
    dialect = config.dialect
    return Pool(
        dialect.module,
        cp_noisy=False,
        cp_reactor=reactor,
        **dialect.poolArguments(),
        **config.arguments,
    )


class Conflict(Exception):
    """
    A uniqueness constraint refused a write (e.g. a user name already taken).
    """


class Unreachable(Exception):
    """
    The database did not answer: down, restarting, frozen, or the connection broke.
    """


class Contended(Unreachable):
    """
    The database answered, but the work kept losing lock conflicts with other
    transactions and was rolled back each time: nothing was done. Not an
    outage; callers that answer L{Unreachable} with 503 answer this alike.
    """


class _Cursor:
    """
    The transaction handed to store functions: SQL is written once with C{?}
    placeholders and translated by the dialect for its driver.
    """

    __slots__ = ("_sql", "_transaction")

    def __init__(self, transaction: Any, sql: Callable[[str], str]) -> None:
        self._transaction = transaction
        self._sql = sql

    def execute(self, query: str, arguments: tuple | list = ()) -> Any:
        return self._transaction.execute(self._sql(query), tuple(arguments))

    def fetchone(self) -> Any:
        return self._transaction.fetchone()

    def fetchall(self) -> list[Any]:
        return self._transaction.fetchall()

    @property
    def lastrowid(self) -> int:
        return self._transaction.lastrowid

    @property
    def rowcount(self) -> int:
        return self._transaction.rowcount


class Database:
    """
    The one door to the database. C{run(f, *args)} runs the blocking function
    C{f(cursor, *args)} in one transaction on the pool's threads and maps the
    drivers' errors to L{Conflict} and L{Unreachable}; a query that has not
    answered by its deadline is L{Unreachable} too. Work that lost a lock
    conflict (a deadlock) is rolled back and tried again, up to
    L{CONTENDED_RETRIES} times, then fails with L{Contended}.

    An outage is logged once, as a warning when the first request fails and
    one line when the database answers again, however many requests failed
    in between (each is counted in the C{database_errors} metric).

    @ivar timeout: the default deadline of a query, in seconds.
    @ivar clock: what the deadlines are measured on; the pool's reactor
        unless given.
    """

    log = Logger()

    def __init__(
        self,
        pool: Pool,
        config: DatabaseConfig,
        metrics: Any = None,
        *,
        clock: IReactorTime | None = None,
        timeout: float = TIMEOUT,
    ) -> None:
        self.pool = pool
        self.config = config
        self.metrics = metrics
        self.dialect = config.dialect
        self.clock = clock if clock is not None else pool.reactor
        self.timeout = timeout
        self._jobs = itertools.count()
        # While the database is out: when it began, and how many failed.
        self._outSince: float | None = None
        self._failures = 0
        # Jobs numbered below this began before the last outage ended; their
        # failures are its stragglers, not the start of a new one.
        self._firstJobSinceOutage = 0

    def run(
        self, f: Callable[..., T], *arguments: Any, timeout: float | None = None
    ) -> Deferred[T]:
        """
        Run C{f(cursor, *arguments)} in one transaction; fire with its result,
        or fail with L{Unreachable} once C{timeout} seconds (default
        L{timeout}) have passed without an answer.

        Work that missed its deadline is never done afterwards: it is not
        started if it had not been, and rolled back rather than committed
        if it had (a write already being committed when the database froze
        is the one exception: it may complete when the database wakes).
        """
        deadline = self.timeout if timeout is None else timeout
        job = Job(next(self._jobs))

        def cancel(_: Deferred[T]) -> None:
            # The caller gave up first: the same as a deadline, unlogged.
            job.abandoned = True
            expiry.cancel()

        answer: Deferred[T] = Deferred(cancel)
        expiry = self.clock.callLater(deadline, self._expire, job, answer, f, deadline)

        def settle(result: Any) -> None:
            if answer.called:
                # Answered 503 at the deadline already: the late outcome
                # has nobody to go to (and answering twice would raise).
                return
            expiry.cancel()
            # Any answer of the database ends an outage, a refusal too
            # (a Conflict, a lost lock conflict): only silence is one.
            if isinstance(result, Failure) and result.check(Unreachable):
                if result.check(Contended):
                    self._counted()
                    self._answered()
                else:
                    self._failed(job, result.value, f)
            else:
                self._answered()
            if isinstance(result, Failure):
                answer.errback(result)
            else:
                answer.callback(result)

        Deferred.fromCoroutine(self._run(f, arguments, job)).addBoth(settle)
        return answer

    def _expire(
        self, job: Job, answer: Deferred[Any], f: Callable[..., Any], deadline: float
    ) -> None:
        # The pool thread stays blocked until the database answers or the
        # driver's read timeout fires; the job tells it to do nothing more.
        job.abandoned = True
        error = Unreachable(f"no answer within {deadline:g} s")
        self._failed(job, error, f)
        answer.errback(error)

    async def _run(self, f: Callable[..., T], arguments: tuple[Any, ...], job: Job) -> T:
        # A pooled connection the server closed (wait_timeout, a restart, a
        # proxy) fails on first use, and adbapi only replaces it afterwards.
        # Every pooled connection may be dead, so try once more than there
        # are. Only a failure before the work began is retried: where the
        # dialect pings first, each interaction first asks "SELECT 1", so a
        # write that may have reached the server (lost during its COMMIT,
        # say) is never done twice. Nor is anything retried once given up.
        # Work that lost a lock conflict is retried even though it ran: the
        # server (or the pool's rollback) undid all of it.
        lost = contended = 0
        while True:
            try:
                return await self.pool.runJob(job, self._interaction, f, arguments, job)
            except Abandoned:
                raise
            except Exception as e:
                if job.abandoned:
                    raise self._translate(e) from None
                if not job.started and lost < self.pool.max and self.dialect.lostConnection(e):
                    lost += 1
                elif contended < CONTENDED_RETRIES and self.dialect.contended(e):
                    contended += 1
                    job.started = False
                else:
                    raise self._translate(e) from None

    def _interaction(self, transaction: Any, f: Callable[..., T], arguments: tuple, job: Job) -> T:
        cursor = _Cursor(transaction, self.dialect.sql)
        if self.dialect.pingsFirst:
            _selectOne(cursor)
        # The ping may have waited out a freeze: nobody wants the work now.
        job.checkWanted()
        job.started = True
        return f(cursor, *arguments)

    def ping(self, timeout: float | None = None) -> Deferred[None]:
        """
        Fires when the database answers a trivial query (within C{timeout}
        seconds, default L{timeout}): the readiness check.
        """
        return self.run(_selectOne, timeout=timeout)

    def _translate(self, error: Exception) -> Exception:
        if self.dialect.contended(error):
            return Contended(str(error))
        if isinstance(error, self.dialect.conflicts):
            return Conflict(str(error))
        if isinstance(error, self.dialect.unreachable):
            return Unreachable(str(error))
        return error

    def _counted(self) -> None:
        if self.metrics is not None:
            self.metrics.databaseErrors.inc()

    def _failed(self, job: Job, error: Exception, f: Callable[..., Any]) -> None:
        self._counted()
        if self._outSince is not None:
            self._failures += 1
        elif job.number >= self._firstJobSinceOutage:
            self._outSince = self.clock.seconds()
            self._failures = 1
            self.log.warn(
                "Database unavailable ({error}, in {query}): requests that need it"
                " get 503 until it answers again",
                error=str(error),
                query=f.__name__,
                outage="began",
            )

    def _answered(self) -> None:
        if self._outSince is None:
            return
        self.log.info(
            "Database answers again after {seconds:.1f} s; {failures} requests failed meanwhile",
            seconds=self.clock.seconds() - self._outSince,
            failures=self._failures,
            outage="ended",
        )
        self._outSince = None
        self._firstJobSinceOutage = next(self._jobs)


def _selectOne(cursor: Any) -> None:
    cursor.execute("SELECT 1")
    cursor.fetchall()


class DatabaseService(Service):
    """
    Owns the pool: the schema is brought up to date before anything listens,
    and the pool is closed when the daemon stops.
    """

    name = "database"
    log = Logger()

    def __init__(self, database: Database) -> None:
        self.database = database

    @property
    def pool(self) -> Pool:
        return self.database.pool

    def privilegedStartService(self) -> None:
        super().privilegedStartService()
        try:
            before, after = migrate(self.database.config)
        except Exception as e:
            reason = e.args[-1] if e.args else e
            raise StartupError(
                f"cannot prepare the {self.database.config.description}: {reason}"
            ) from None
        if after != before:
            self.log.info(
                "Database schema upgraded from version {before} to {after}",
                before=before,
                after=after,
            )

    def startService(self) -> None:
        super().startService()
        self.pool.start()

    def stopService(self) -> None:
        super().stopService()
        self.pool.close()
