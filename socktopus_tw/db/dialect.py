# -*- test-case-name: tests.accounts.test_store,tests.db.test_door -*-
"""
Everything that differs between the backends, as one object per backend.

The rest of L{socktopus_tw.db} never asks which driver it has: it asks the
dialect how to write placeholders, how to build a pool, how to connect before
the reactor runs, what the driver's errors mean, how to open a transaction and
which schema files to run. L{dialectFor} picks the dialect of a configuration.
"""

from __future__ import annotations

import sqlite3
from functools import cached_property
from typing import TYPE_CHECKING, Any

from twisted.enterprise import adbapi

if TYPE_CHECKING:
    from socktopus_tw.db.config import DatabaseConfig

#: MySQL client errors meaning the connection died: server gone away, lost
#: during query, lost while reading the handshake.
_LOST_CONNECTION = frozenset({2006, 2013, 2055})

#: MySQL server errors meaning a lock conflict with another transaction cost
#: ours its work: deadlock (1213, the server rolled the transaction back) and
#: lock wait timeout (1205, the statement undone; the pool rolls back the
#: rest). Nothing was committed, and trying again is what the server asks.
_CONTENDED = frozenset({1205, 1213})

#: Seconds PyMySQL waits for the server to read or answer before it gives the
#: connection up. The door answers the request at its own, shorter deadline
#: (L{socktopus_tw.db.door.TIMEOUT}); this bounds how long a pool thread
#: stays blocked on a server that froze or vanished, so the pool's threads
#: come back within this time even if the server never does. Twice the
#: request deadline: a query that is merely slow finishes (its answer
#: dropped) rather than costing the connection.
DRIVER_TIMEOUT = 10


class Dialect:
    """
    What a backend must say about itself; L{SQLite} and L{MySQL} fill it in.
    """

    #: The DB-API module, by the name adbapi imports it with.
    module: str
    #: The schema files of this backend end with this.
    schemaSuffix: str
    #: The statement opening an explicit transaction.
    begin: str
    #: Whether every pooled interaction first runs C{SELECT 1}, proving the
    #: connection alive before any work is done on it.
    pingsFirst: bool
    #: Driver errors meaning a uniqueness constraint refused a write.
    conflicts: tuple[type[BaseException], ...]
    #: Driver errors meaning the database did not answer.
    unreachable: tuple[type[BaseException], ...]

    def sql(self, query: str) -> str:
        """
        C{query}, written once with C{?} placeholders, in the driver's paramstyle.
        """
        return query

    def poolArguments(self) -> dict[str, Any]:
        """
        The C{cp_*} and driver arguments of this backend's connection pool.
        """
        raise NotImplementedError()

    def connect(self, arguments: dict[str, Any], timeout: float | None = None) -> Any:
        """
        Connect once, synchronously: only for start-up, before the reactor
        runs. With C{timeout}, the driver gives up on a server that does not
        answer within that many seconds instead of waiting for ever.
        """
        raise NotImplementedError()

    def proveUsable(self, connection: Any) -> None:
        """
        Raise the driver's error unless C{connection} can be used for writing.
        """
        raise NotImplementedError()

    def openTransaction(self, connection: Any) -> Any:
        """
        A cursor of C{connection} inside an explicit transaction that DDL joins.
        """
        cursor = connection.cursor()
        cursor.execute(self.begin)
        return cursor

    def lostConnection(self, error: Exception) -> bool:
        """
        Whether C{error} says the connection was dead before it was used, so
        the pool will replace it and the work may be tried again.
        """
        return isinstance(error, adbapi.ConnectionLost)

    def contended(self, error: Exception) -> bool:
        """
        Whether C{error} says the work lost a lock conflict with another
        transaction and was rolled back whole: the database is up, nothing
        was committed, and the work may be tried again.
        """
        return False


class SQLite(Dialect):
    """
    The embedded default: a file, one writer, C{?} placeholders.
    """

    module = "sqlite3"
    schemaSuffix = ".sqlite.sql"
    begin = "BEGIN"
    # One local connection never goes stale, so there is nothing to probe.
    pingsFirst = False
    conflicts = (sqlite3.IntegrityError,)
    unreachable = (sqlite3.OperationalError, sqlite3.InterfaceError, adbapi.ConnectionLost)

    def poolArguments(self) -> dict[str, Any]:
        # SQLite allows one writer, so the pool holds one connection; it is
        # made on one pool thread and used on others, which is safe with one.
        return {"cp_min": 1, "cp_max": 1, "check_same_thread": False}

    def connect(self, arguments: dict[str, Any], timeout: float | None = None) -> Any:
        # A file locked by another process is waited for, sqlite3's default 5 s.
        return sqlite3.connect(arguments["database"])

    def proveUsable(self, connection: Any) -> None:
        # Opening does not write; BEGIN IMMEDIATE proves we can.
        connection.execute("BEGIN IMMEDIATE")
        connection.rollback()

    def openTransaction(self, connection: Any) -> Any:
        # Python's sqlite3 does not open transactions for DDL by itself;
        # without its own transaction handling our BEGIN covers the DDL too.
        connection.isolation_level = None
        return super().openTransaction(connection)


class MySQL(Dialect):
    """
    The production backend (MySQL or MariaDB through PyMySQL): a server whose
    connections can break, C{%s} placeholders.
    """

    module = "pymysql"
    schemaSuffix = ".mysql.sql"
    begin = "START TRANSACTION"
    # A pooled connection the server closed (wait_timeout, a restart, a proxy)
    # fails on first use; probing first makes that failure safe to retry.
    pingsFirst = True

    def sql(self, query: str) -> str:
        # adbapi does no paramstyle translation and PyMySQL uses "format".
        return query.replace("?", "%s")

    def poolArguments(self) -> dict[str, Any]:
        # Connections reconnect after a server restart; the timeouts turn a
        # server that hangs into an error instead of a stuck pool thread.
        return {
            "cp_min": 1,
            "cp_max": 8,
            "cp_reconnect": True,
            "connect_timeout": 5,
            "read_timeout": DRIVER_TIMEOUT,
            "write_timeout": DRIVER_TIMEOUT,
        }

    def connect(self, arguments: dict[str, Any], timeout: float | None = None) -> Any:
        # No read timeout by default: the migration's DDL may rightly take
        # minutes on a big table.
        timeouts = {} if timeout is None else {"read_timeout": timeout, "write_timeout": timeout}
        return _pymysql().connect(connect_timeout=5, **timeouts, **arguments)

    def proveUsable(self, connection: Any) -> None:
        connection.ping()

    @cached_property
    def conflicts(self) -> tuple[type[BaseException], ...]:
        return (_pymysql().IntegrityError,)

    @cached_property
    def unreachable(self) -> tuple[type[BaseException], ...]:
        pymysql = _pymysql()
        return (pymysql.OperationalError, pymysql.InterfaceError, adbapi.ConnectionLost)

    def lostConnection(self, error: Exception) -> bool:
        if super().lostConnection(error):
            return True
        pymysql = _pymysql()
        if isinstance(error, pymysql.err.InterfaceError):
            return True
        return (
            isinstance(error, pymysql.err.OperationalError)
            and bool(error.args)
            and error.args[0] in _LOST_CONNECTION
        )

    def contended(self, error: Exception) -> bool:
        return (
            isinstance(error, _pymysql().err.OperationalError)
            and bool(error.args)
            and error.args[0] in _CONTENDED
        )


def _pymysql() -> Any:
    # Imported on first use, so a daemon on SQLite never loads the driver.
    import pymysql

    return pymysql


SQLITE = SQLite()
MYSQL = MySQL()

_DIALECTS = {dialect.module: dialect for dialect in (SQLITE, MYSQL)}


def dialectFor(config: DatabaseConfig) -> Dialect:
    """
    The dialect of C{config}'s DB-API module.
    """
    try:
        return _DIALECTS[config.module]
    except KeyError:
        raise ValueError(f"no database dialect for the module {config.module!r}") from None
