"""
A fresh database per test on each backend the daemon supports, for the
tests of the accounts store (L{tests.accounts.test_store}) and of the
database package (L{tests.db}).

Twisted's C{makeSQLTests} pattern (C{twisted/test/test_adbapi.py}): a mixin
holds a subject's tests, and each concrete class mixes in the backend that
says where its database lives. MariaDB is the throwaway server of
L{tests.support.mariadb}: when it cannot be started the MariaDB tests fail,
they never skip.
"""

from __future__ import annotations

from typing import Any

import pymysql
from twisted.enterprise.adbapi import ConnectionLost
from twisted.internet import reactor

from socktopus_tw.accounts import store
from socktopus_tw.db import Database, DatabaseConfig, migrate, openPool, parseDatabaseUrl
from tests.support.mariadb import server

NOW = 1_700_000_000
HASH = b"$2b$04$abcdefghijklmnopqrstuuSfoM3yE6n0vVd0jE3Vt6C2kf0Pq0b8e"
OTHER_HASH = b"$2b$04$ABCDEFGHIJKLMNOPQRSTUu0n9GJdJ2yq5.1o5k6mS7cH2bWm3QfW2"
SECRET = "c2VjcmV0LW9uZQ==" * 5
OTHER_SECRET = "b3RoZXItc2VjcmV0" * 5


def ignoreBrokenConnectionLogs(testCase: Any) -> None:
    """
    adbapi logs the failed rollback of each connection the server broke as
    an error; those are expected where a test breaks connections.
    """
    testCase.addCleanup(
        testCase.flushLoggedErrors,
        pymysql.err.OperationalError,
        pymysql.err.InterfaceError,
        ConnectionLost,
    )


class DatabaseTestsMixin:
    """
    A fresh database per test, migrated and opened as the daemon opens it.
    Subclasses give L{databaseUrl}, usually by mixing in a backend below.
    """

    def databaseUrl(self) -> str:
        """
        The C{--database} URL of a fresh, empty database for one test.
        """
        raise NotImplementedError()

    def setUp(self) -> None:
        self.url = self.databaseUrl()
        self.config = parseDatabaseUrl(self.url)
        self.firstMigration = migrate(self.config)
        self.database = self.openDatabase(self.config)

    def openDatabase(self, config: DatabaseConfig) -> Database:
        """
        A started L{Database} on C{config}, closed at cleanup.
        """
        pool = openPool(config, reactor)
        pool.start()
        self.addCleanup(pool.close)
        return Database(pool, config)

    def query(self, f: Any, *arguments: Any):
        return self.database.run(f, *arguments)

    def addUser(
        self,
        name: str,
        email: str | None = None,
        code: str | None = None,
        passwordHash: bytes = HASH,
    ):
        return self.query(
            store.addUser, name, email or f"{name}@example.com", passwordHash, code, NOW
        )


class SQLiteDatabase:
    """
    Mixin: the embedded default, a SQLite file.
    """

    def databaseUrl(self) -> str:
        return "sqlite:" + self.mktemp() + ".sqlite3"


class MariaDBDatabase:
    """
    Mixin: the production backend, a fresh MariaDB database per test.
    """

    timeout = 120

    def databaseUrl(self) -> str:
        self.server = server()
        self.name = self.server.createDatabase()
        self.addCleanup(self.server.dropDatabase, self.name)
        return self.server.url(self.name)

    def ignoreBrokenConnectionLogs(self) -> None:
        ignoreBrokenConnectionLogs(self)
