# -*- test-case-name: tests.db.test_door,tests.accounts.test_store -*-
"""
The one door to the database: L{Database} runs blocking store functions in a
transaction on an L{adbapi.ConnectionPool}'s threads, and L{DatabaseService}
owns the pool for the daemon's lifetime.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from twisted.application.service import Service
from twisted.enterprise import adbapi
from twisted.internet.defer import Deferred
from twisted.logger import Logger

from socktopus_tw.db.config import DatabaseConfig
from socktopus_tw.db.schema import migrate
from socktopus_tw.errors import StartupError

T = TypeVar("T")


def openPool(config: DatabaseConfig, reactor: Any) -> adbapi.ConnectionPool:
    """
    A connection pool for C{config}, sized and set up by its dialect.
    """
    dialect = config.dialect
    return adbapi.ConnectionPool(
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
    The database did not answer: down, restarting, or the connection broke.
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
    drivers' errors to L{Conflict} and L{Unreachable}.
    """

    log = Logger()

    def __init__(
        self, pool: adbapi.ConnectionPool, config: DatabaseConfig, metrics: Any = None
    ) -> None:
        self.pool = pool
        self.config = config
        self.metrics = metrics
        self.dialect = config.dialect

    def run(self, f: Callable[..., T], *arguments: Any) -> Deferred[T]:
        """
        Run C{f(cursor, *arguments)} in one transaction; fire with its result.
        """
        return Deferred.fromCoroutine(self._run(f, arguments))

    async def _run(self, f: Callable[..., T], arguments: tuple[Any, ...]) -> T:
        # A pooled connection the server closed (wait_timeout, a restart, a
        # proxy) fails on first use, and adbapi only replaces it afterwards.
        # Every pooled connection may be dead, so try once more than there
        # are. Only a failure before the work began is retried: where the
        # dialect pings first, each interaction first asks "SELECT 1", so a
        # write that may have reached the server (lost during its COMMIT,
        # say) is never done twice.
        for attempt in range(self.pool.max + 1):
            started: list[bool] = []
            try:
                return await self.pool.runInteraction(self._interaction, f, arguments, started)
            except Exception as e:
                last = attempt == self.pool.max
                if started or last or not self.dialect.lostConnection(e):
                    raise self._translate(e, f) from None
        raise AssertionError("unreachable")

    def _interaction(
        self, transaction: Any, f: Callable[..., T], arguments: tuple, started: list[bool]
    ) -> T:
        cursor = _Cursor(transaction, self.dialect.sql)
        if self.dialect.pingsFirst:
            _selectOne(cursor)
        started.append(True)
        return f(cursor, *arguments)

    def ping(self) -> Deferred[None]:
        """
        Fires when the database answers a trivial query: the readiness check.
        """
        return self.run(_selectOne)

    def _translate(self, error: Exception, f: Callable[..., Any]) -> Exception:
        if isinstance(error, self.dialect.conflicts):
            return Conflict(str(error))
        if isinstance(error, self.dialect.unreachable):
            if self.metrics is not None:
                self.metrics.databaseErrors.inc()
            self.log.warn("Database unavailable in {query}: {error}", query=f.__name__, error=error)
            return Unreachable(str(error))
        return error


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
    def pool(self) -> adbapi.ConnectionPool:
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
