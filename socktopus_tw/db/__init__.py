# -*- test-case-name: tests.test_db -*-
"""
The one door to the database: C{--database} URLs, a start-up check, and an
L{adbapi.ConnectionPool} run as a service.

Every query goes through the pool's threads; nothing here runs SQL on the
reactor thread once the reactor is running.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from twisted.application.service import Service
from twisted.enterprise import adbapi

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
        "pymysql", cp_reconnect=True, cp_noisy=False, cp_reactor=reactor, **config.arguments
    )


class DatabaseService(Service):
    """
    Owns the pool: started with the daemon, closed when it stops.
    """

    name = "database"

    def __init__(self, pool: adbapi.ConnectionPool) -> None:
        self.pool = pool

    def startService(self) -> None:
        super().startService()
        self.pool.start()

    def stopService(self) -> None:
        super().stopService()
        self.pool.close()
