# -*- test-case-name: tests.db.test_config,tests.db.test_door,tests.test_tap -*-
"""
C{--database} URLs: which backend, where, and a start-up check that it works.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from socktopus_tw.db.dialect import DRIVER_TIMEOUT, MYSQL, SQLITE, Dialect, dialectFor

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

    @property
    def dialect(self) -> Dialect:
        """
        What differs on this backend; see L{socktopus_tw.db.dialect}.
        """
        return dialectFor(self)

    def connectSynchronously(self) -> Any:
        """
        Connect once, outside the reactor: only for the start-up check.
        """
        return self.dialect.connect(self.arguments)


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
        return DatabaseConfig(SQLITE.module, {"database": path}, f"SQLite file {path}")
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
        return DatabaseConfig(MYSQL.module, arguments, f"MySQL database {database} at {where}")
    raise DatabaseError(
        f"--database {url!r}: expected sqlite:PATH or mysql://USER:PASSWORD@HOST:PORT/DBNAME"
    )


def checkDatabase(config: DatabaseConfig) -> None:
    """
    Connect and prove we can write once at start, so a wrong path, password
    or host is one clear line before the daemon listens, not an error later.
    A server that accepts the connection but never answers (frozen) is such
    a line too, after the driver's timeout, not a daemon hanging at start.
    """
    try:
        dialect = config.dialect
        connection = dialect.connect(config.arguments, timeout=DRIVER_TIMEOUT)
        try:
            dialect.proveUsable(connection)
        finally:
            connection.close()
    except Exception as e:
        reason = e.args[-1] if e.args else e
        raise DatabaseError(f"cannot use the {config.description}: {reason}") from None
