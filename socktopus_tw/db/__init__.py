# -*- test-case-name: tests.test_db -*-
"""
The one door to the database: C{--database} URLs, a start-up check, and an
L{adbapi.ConnectionPool} run as a service.

Every query goes through the pool's threads; nothing here runs SQL on the
reactor thread once the reactor is running.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, TypeVar
from urllib.parse import parse_qs, unquote, urlsplit

from twisted.application.service import Service
from twisted.enterprise import adbapi
from twisted.internet.defer import Deferred
from twisted.logger import Logger

from socktopus_tw.listening import StartupError

T = TypeVar("T")

DEFAULT_DATABASE = "sqlite:socktopus.sqlite3"


class DatabaseError(ValueError):
    """
    A C{--database} value that is wrong or a database that cannot be reached;
    the message says which and how to fix it.
    """


@dataclass(frozen=True)
class DatabaseConfig:
    """
    Where the data lives: the DB-API module and its connection arguments.
    """

    module: str
    arguments: dict[str, Any] = field(default_factory=dict)
    description: str = ""

    def connectSynchronously(self) -> Any:
        """
        Connect once, outside the reactor: only for the start-up check.
        """
        if self.module == "sqlite3":
            return sqlite3.connect(self.arguments["database"])
        import pymysql

        return pymysql.connect(connect_timeout=5, **self.arguments)


def parseDatabaseUrl(url: str) -> DatabaseConfig:
    """
    C{sqlite:PATH} or C{mysql://USER:PASSWORD@HOST:PORT/DBNAME[?unix_socket=PATH]}.
    """
    if url.startswith("sqlite:"):
        path = url[len("sqlite:") :]
        if path.startswith("//"):
            path = path[2:]
        if not path:
            raise DatabaseError(f"--database {url!r}: give a file, e.g. sqlite:socktopus.sqlite3")
        return DatabaseConfig("sqlite3", {"database": path}, f"SQLite file {path}")
    if url.startswith(("mysql://", "mariadb://")):
        parts = urlsplit(url)
        database = parts.path.lstrip("/")
        if not database:
            raise DatabaseError(
                "--database: name the database, e.g. mysql://user:password@localhost:3306/socktopus"
            )
        arguments: dict[str, Any] = {
            "user": unquote(parts.username or ""),
            "password": unquote(parts.password or ""),
            "database": unquote(database),
            "charset": "utf8mb4",
        }
        query = parse_qs(parts.query)
        if "unix_socket" in query:
            arguments["unix_socket"] = query["unix_socket"][0]
            where = arguments["unix_socket"]
        else:
            try:
                port = parts.port or 3306
            except ValueError:
                raise DatabaseError("--database: the MySQL port must be a number") from None
            arguments["host"] = parts.hostname or "localhost"
            arguments["port"] = port
            where = f"{arguments['host']}:{port}"
        return DatabaseConfig("pymysql", arguments, f"MySQL database {database} at {where}")
    raise DatabaseError(
        f"--database {url!r}: expected sqlite:PATH or mysql://USER:PASSWORD@HOST:PORT/DBNAME"
    )


def checkDatabase(config: DatabaseConfig) -> None:
    """
    Connect and take a write lock once at start, so a wrong path, password or
    host is one clear line before the daemon listens, not an error later.
    """
    try:
        connection = config.connectSynchronously()
        try:
            if config.module == "sqlite3":
                # Opening does not write; BEGIN IMMEDIATE proves we can.
                connection.execute("BEGIN IMMEDIATE")
                connection.rollback()
            else:
                connection.ping()
        finally:
            connection.close()
    except Exception as e:
        reason = e.args[-1] if e.args else e
        raise DatabaseError(f"cannot use the {config.description}: {reason}") from None


def openPool(config: DatabaseConfig, reactor: Any) -> adbapi.ConnectionPool:
    """
    A connection pool for C{config}. SQLite allows one writer, so its pool has
    one connection; MySQL connections reconnect after a server restart.
    """
    if config.module == "sqlite3":
        return adbapi.ConnectionPool(
            "sqlite3", cp_min=1, cp_max=1, cp_noisy=False, cp_reactor=reactor,
            check_same_thread=False, **config.arguments,
        )
    return adbapi.ConnectionPool(
        "pymysql", cp_min=1, cp_max=8, cp_reconnect=True, cp_noisy=False, cp_reactor=reactor,
        connect_timeout=5, read_timeout=30, write_timeout=30, **config.arguments,
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
    placeholders and translated for drivers that use C{%s}.
    """

    __slots__ = ("_format", "_transaction")

    def __init__(self, transaction: Any, format: bool) -> None:
        self._transaction = transaction
        self._format = format

    def execute(self, query: str, arguments: tuple | list = ()) -> Any:
        if self._format:
            query = query.replace("?", "%s")
        return self._transaction.execute(query, tuple(arguments))

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

    def __init__(self, pool: adbapi.ConnectionPool, config: DatabaseConfig,
                 metrics: Any = None) -> None:
        self.pool = pool
        self.config = config
        self.metrics = metrics
        self._format = config.module != "sqlite3"
        module = sqlite3 if config.module == "sqlite3" else _pymysql()
        self._conflicts = (module.IntegrityError,)
        self._unreachable = (module.OperationalError, module.InterfaceError, adbapi.ConnectionLost)

    def run(self, f: Callable[..., T], *arguments: Any) -> Deferred[T]:
        return Deferred.fromCoroutine(self._run(f, arguments))

    async def _run(self, f: Callable[..., T], arguments: tuple[Any, ...]) -> T:
        # A pooled connection the server closed (wait_timeout, a restart, a
        # proxy) fails on first use, and adbapi only replaces it afterwards.
        # Every pooled connection may be dead, so try once more than there
        # are. Only a failure before the work began is retried: on MySQL each
        # interaction first asks "SELECT 1", so a write that may have reached
        # the server (lost during its COMMIT, say) is never done twice.
        for attempt in range(self.pool.max + 1):
            started: list[bool] = []
            try:
                return await self.pool.runInteraction(self._interaction, f, arguments,
                                                      started)
            except Exception as e:
                last = attempt == self.pool.max
                if started or last or not self._lostConnection(e):
                    raise self._translate(e, f) from None
        raise AssertionError("unreachable")

    def _interaction(self, transaction: Any, f: Callable[..., T], arguments: tuple,
                     started: list[bool]) -> T:
        cursor = _Cursor(transaction, self._format)
        if self._format:
            _selectOne(cursor)
        started.append(True)
        return f(cursor, *arguments)

    def _lostConnection(self, error: Exception) -> bool:
        if isinstance(error, adbapi.ConnectionLost):
            return True
        if self._format:
            pymysql = _pymysql()
            if isinstance(error, pymysql.err.InterfaceError):
                return True
            return isinstance(error, pymysql.err.OperationalError) and bool(
                error.args) and error.args[0] in _LOST_CONNECTION
        return False

    def ping(self) -> Deferred[None]:
        """
        Fires when the database answers a trivial query: the readiness check.
        """
        return self.run(_selectOne)

    def _translate(self, error: Exception, f: Callable[..., Any]) -> Exception:
        if isinstance(error, self._conflicts):
            return Conflict(str(error))
        if isinstance(error, self._unreachable):
            if self.metrics is not None:
                self.metrics.databaseErrors.inc()
            self.log.warn("Database unavailable in {query}: {error}", query=f.__name__, error=error)
            return Unreachable(str(error))
        return error


#: MySQL client errors meaning the connection died: server gone away, lost
#: during query, lost while reading the handshake.
_LOST_CONNECTION = {2006, 2013, 2055}


def _selectOne(cursor: Any) -> None:
    cursor.execute("SELECT 1")
    cursor.fetchall()


def _pymysql() -> Any:
    import pymysql

    return pymysql


SCHEMA_TABLE = "socktopus_schema"


def schemaVersions(config: DatabaseConfig) -> list[tuple[int, str]]:
    """
    The shipped schema files for this database, as (version, SQL), in order.
    """
    suffix = ".sqlite.sql" if config.module == "sqlite3" else ".mysql.sql"
    folder = resources.files("socktopus_tw.db") / "schema"
    versions = []
    for entry in folder.iterdir():
        if entry.name.endswith(suffix):
            versions.append((int(entry.name.split(".")[0]), entry.read_text("utf-8")))
    return sorted(versions)


def statements(script: str) -> list[str]:
    """
    Split a schema file into statements: comments dropped, split at C{;}
    ending a line (the files hold no semicolons inside strings).
    """
    lines = [line for line in script.splitlines() if not line.strip().startswith("--")]
    return [s.strip() for s in "\n".join(lines).split(";\n") if s.strip().rstrip(";")]


def migrate(config: DatabaseConfig) -> tuple[int, int]:
    """
    Bring the schema up to the newest shipped version in one transaction;
    return (version before, version after). Run once at start, before the
    reactor runs and before anything listens, so blocking here is fine.

    MySQL commits DDL implicitly, so there a failed upgrade can leave part of
    a version applied; each version file is therefore small.
    """
    connection = config.connectSynchronously()
    try:
        if config.module == "sqlite3":
            # Python's sqlite3 does not open transactions for DDL by itself.
            connection.isolation_level = None
        cursor = connection.cursor()
        cursor.execute("BEGIN" if config.module == "sqlite3" else "START TRANSACTION")
        cursor.execute(f"CREATE TABLE IF NOT EXISTS {SCHEMA_TABLE} (version INTEGER NOT NULL)")
        cursor.execute(f"SELECT version FROM {SCHEMA_TABLE}")
        row = cursor.fetchone()
        if row is None:
            cursor.execute(f"INSERT INTO {SCHEMA_TABLE} (version) VALUES (0)")
            before = 0
        else:
            before = row[0]
        after = before
        for version, script in schemaVersions(config):
            if version > before:
                for statement in statements(script):
                    cursor.execute(statement)
                after = version
        cursor.execute(f"UPDATE {SCHEMA_TABLE} SET version = {int(after)}")
        cursor.execute("COMMIT")
        return before, after
    finally:
        connection.close()


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
            self.log.info("Database schema upgraded from version {before} to {after}",
                          before=before, after=after)

    def startService(self) -> None:
        super().startService()
        self.pool.start()

    def stopService(self) -> None:
        super().stopService()
        self.pool.close()
