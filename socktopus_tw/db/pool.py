# -*- test-case-name: tests.db.test_frozen,tests.db.test_door -*-
"""
The connection pool behind the door: adbapi's, with two changes.

  - Work can be given up (L{Job}). The door answers a request 503 when its
    deadline passes, but the pool thread running the query stays blocked
    until the database answers (a frozen server) or the driver's own
    timeout fires. Given-up work is therefore never started once a thread
    is free, and work that had started is rolled back instead of committed:
    a client told "503" does not find its write made later, and a database
    that thaws is not handed a backlog of stale work first.
  - A rollback that fails (the connection died under the query) is not
    logged: adbapi logs a "Rollback failed" traceback for each, two per
    request during an outage. The failed connection is dropped, the error
    that matters reaches the door, and the door logs the outage once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.enterprise import adbapi
from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThreadPool


class Abandoned(Exception):
    """
    Nobody waits for this work any more: it was not done (or was undone).
    """


class Job:
    """
    One piece of work for the database, shared by the reactor thread, which
    may give it up, and the pool thread doing it, which checks.

    @ivar number: jobs are numbered in the order they were asked for.
    @ivar abandoned: set (on the reactor thread) when the caller stopped
        waiting; the pool thread then neither starts nor commits the work.
    @ivar started: set (on the pool thread) once the caller's function ran,
        so the work may have reached the database and must not be retried.
    """

    __slots__ = ("abandoned", "number", "started")

    def __init__(self, number: int) -> None:
        self.number = number
        self.abandoned = False
        self.started = False

    def checkWanted(self) -> None:
        """
        Raise L{Abandoned} if the caller gave up. Plain attribute reads and
        writes are atomic in CPython, so no lock is needed between threads.
        """
        if self.abandoned:
            raise Abandoned()


class QuietConnection(adbapi.Connection):
    """
    adbapi's connection wrapper, without the traceback on a failed rollback.
    """

    def rollback(self) -> None:
        try:
            self._connection.rollback()
            if self._pool.reconnect:
                # As adbapi does: prove the connection still works.
                cursor = self._connection.cursor()
                cursor.execute(self._pool.good_sql)
                cursor.close()
                self._connection.commit()
            return
        except BaseException:
            # A connection that cannot roll back is in no known state: drop
            # it, so the next piece of work on this thread connects afresh.
            self._pool.disconnect(self._connection)
        raise adbapi.ConnectionLost()


class Pool(adbapi.ConnectionPool):
    """
    An adbapi pool whose work can be given up and whose failed rollbacks
    are quiet.
    """

    connectionFactory = QuietConnection

    @property
    def reactor(self) -> Any:
        """
        The reactor the pool was made with: the door's clock by default.
        """
        return self._reactor

    def runJob(self, job: Job, interaction: Callable[..., Any], *arguments: Any) -> Deferred:
        """
        Like C{runInteraction(interaction, *arguments)}: one transaction on a
        pool thread; but not started, and not committed, once C{job} is given up.
        """
        return deferToThreadPool(
            self._reactor, self.threadpool, self._runJob, job, interaction, arguments
        )

    def _runJob(self, job: Job, interaction: Callable[..., Any], arguments: tuple) -> Any:
        # Before taking a connection: a thread freed after a freeze skips
        # stale work without touching the database (which may still hang).
        job.checkWanted()
        return self._transact(job, interaction, arguments, {})

    def _close(self, connection: Any) -> None:
        # adbapi logs a traceback when closing fails; a connection we drop
        # is broken already, and closing it is only tidiness.
        try:
            connection.close()
        except Exception:
            pass

    def _runInteraction(
        self, interaction: Callable[..., Any], *arguments: Any, **keywords: Any
    ) -> Any:
        # runInteraction, runQuery and runOperation come here: quiet too.
        return self._transact(None, interaction, arguments, keywords)

    def _transact(
        self,
        job: Job | None,
        interaction: Callable[..., Any],
        arguments: tuple,
        keywords: dict[str, Any],
    ) -> Any:
        # adbapi's _runInteraction, with the checks of a job and no log.err.
        connection = self.connectionFactory(self)
        transaction = self.transactionFactory(self, connection)
        try:
            result = interaction(transaction, *arguments, **keywords)
            transaction.close()
            if job is not None:
                # Given up while it ran: undo rather than commit.
                job.checkWanted()
            connection.commit()
            return result
        except BaseException:
            try:
                connection.rollback()
            except BaseException:
                # Already dropped by QuietConnection; the error worth
                # reporting is the one that made us roll back.
                pass
            raise
