"""
L{tests.support.mariadb}: the throwaway MariaDB server the MySQL tests use.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import pymysql
from twisted.trial.unittest import SynchronousTestCase

from tests.support import mariadb
from tests.support.mariadb import MariaDB, MariaDBError, server


def connectTo(url: str) -> pymysql.connections.Connection:
    """
    Connect with what a C{mysql://} URL says, parsed here rather than by the
    code under test.
    """
    parts = urlsplit(url)
    arguments: dict[str, Any] = {
        "user": unquote(parts.username or ""),
        "password": unquote(parts.password or ""),
        "database": unquote(parts.path.lstrip("/")),
        "connect_timeout": 5,
        "autocommit": True,
    }
    query = parse_qs(parts.query)
    if "unix_socket" in query:
        arguments["unix_socket"] = query["unix_socket"][0]
    else:
        arguments["host"] = parts.hostname
        arguments["port"] = parts.port
    return pymysql.connect(**arguments)


def queryOne(connection: pymysql.connections.Connection, statement: str, *parameters: Any) -> Any:
    try:
        with connection.cursor() as cursor:
            cursor.execute(statement, parameters or None)
            return cursor.fetchone()
    finally:
        connection.close()


class MariaDBTests(SynchronousTestCase):
    """
    The server answers over TCP and the unix socket, makes databases, and
    survives a stop and a start with its data.
    """

    def setUp(self) -> None:
        self.db: MariaDB = server()

    def makeDatabase(self) -> str:
        name = self.db.createDatabase()
        self.addCleanup(self.db.dropDatabase, name)
        return name

    def test_singleton(self) -> None:
        """
        L{server} returns the same running server each time.
        """
        self.assertIs(server(), self.db)
        self.assertTrue(self.db.running)

    def test_versionOverTcp(self) -> None:
        """
        C{url} names 127.0.0.1, the server's port and working credentials.
        """
        name = self.makeDatabase()
        url = self.db.url(name)
        self.assertTrue(url.startswith(f"mysql://socktopus:{self.db.password}@127.0.0.1:"))
        self.assertEqual(urlsplit(url).port, self.db.port)
        (version,) = queryOne(connectTo(url), "SELECT VERSION()")
        self.assertIn("MariaDB", version)

    def test_versionOverUnixSocket(self) -> None:
        """
        C{socketUrl} names the unix socket, and connections through it work.
        """
        name = self.makeDatabase()
        url = self.db.socketUrl(name)
        self.assertEqual(parse_qs(urlsplit(url).query)["unix_socket"], [self.db.socketPath])
        version, database = queryOne(connectTo(url), "SELECT VERSION(), DATABASE()")
        self.assertIn("MariaDB", version)
        self.assertEqual(database, name)

    def test_wrongPasswordRefused(self) -> None:
        """
        The server checks passwords: it does not run with --skip-grant-tables.
        """
        url = self.db.url("mysql").replace(self.db.password, "not-the-password")
        error = self.assertRaises(pymysql.err.OperationalError, connectTo, url)
        self.assertEqual(error.args[0], 1045)  # access denied

    def test_createDatabase(self) -> None:
        """
        C{createDatabase} makes distinct, existing, utf8mb4 databases;
        C{dropDatabase} removes them.
        """
        first = self.makeDatabase()
        second = self.db.createDatabase("other")
        self.addCleanup(self.db.dropDatabase, second)
        self.assertNotEqual(first, second)
        self.assertTrue(second.startswith("other_"))
        for name in (first, second):
            (charset,) = queryOne(
                self.db.connect(),
                "SELECT DEFAULT_CHARACTER_SET_NAME FROM information_schema.SCHEMATA "
                "WHERE SCHEMA_NAME = %s",
                name,
            )
            self.assertEqual(charset, "utf8mb4")
        self.db.dropDatabase(second)
        self.assertIsNone(
            queryOne(
                self.db.connect(),
                "SELECT 1 FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = %s",
                second,
            )
        )

    def test_createTableAsUser(self) -> None:
        """
        The user may create tables and write in a new database.
        """
        name = self.makeDatabase()
        connection = connectTo(self.db.url(name))
        with connection.cursor() as cursor:
            cursor.execute("CREATE TABLE t (id INT PRIMARY KEY, s VARCHAR(10)) ENGINE=InnoDB")
            cursor.execute("INSERT INTO t VALUES (1, %s)", ("\N{OCTOPUS}",))
        self.assertEqual(queryOne(connection, "SELECT s FROM t"), ("\N{OCTOPUS}",))

    def test_stopAndStart(self) -> None:
        """
        After C{stop} connections fail, over TCP and the socket; after
        C{start} they work again, on the same port, with the data kept.
        """
        name = self.makeDatabase()
        port = self.db.port
        connection = connectTo(self.db.url(name))
        with connection.cursor() as cursor:
            cursor.execute("CREATE TABLE kept (id INT PRIMARY KEY, s VARCHAR(20)) ENGINE=InnoDB")
            cursor.execute("INSERT INTO kept VALUES (7, 'before the outage')")
        connection.close()

        self.db.stop()
        try:
            self.assertFalse(self.db.running)
            for url in (self.db.url(name), self.db.socketUrl(name)):
                self.assertRaises(pymysql.err.OperationalError, connectTo, url)
        finally:
            self.db.start()

        self.assertTrue(self.db.running)
        self.assertEqual(self.db.port, port)
        for url in (self.db.url(name), self.db.socketUrl(name)):
            self.assertEqual(
                queryOne(connectTo(url), "SELECT id, s FROM kept"), (7, "before the outage")
            )

    def test_stopAndStartIdempotent(self) -> None:
        """
        C{start} on a running server and C{stop} on a stopped one do nothing.
        """
        self.db.start()
        self.assertTrue(self.db.running)
        self.db.stop()
        try:
            self.db.stop()
            self.assertFalse(self.db.running)
        finally:
            self.db.start()
        self.assertEqual(queryOne(self.db.connect(), "SELECT 1"), (1,))


class FailureTests(SynchronousTestCase):
    """
    Without MariaDB, or when it cannot start, the error says why.
    """

    def test_missingProgram(self) -> None:
        """
        Without mariadbd the tests fail (a L{RuntimeError}, not a skip)
        and say which package to install.
        """
        self.patch(mariadb.shutil, "which", lambda name, path=None: None)
        error = self.assertRaises(RuntimeError, MariaDB)
        self.assertIsInstance(error, MariaDBError)
        self.assertIn("install Debian's mariadb-server", str(error))
        self.assertIn("mariadbd", str(error))

    def test_startFailureShowsLog(self) -> None:
        """
        A server that cannot start is an error that includes its log.
        """
        self.patch(mariadb, "SERVER_OPTIONS", (*mariadb.SERVER_OPTIONS, "--no-such-option=1"))
        instance = MariaDB()
        self.addCleanup(instance.destroy)
        error = self.assertRaises(MariaDBError, instance.setUp)
        self.assertIn("no-such-option", str(error))
        self.assertIn(instance.logPath, str(error))
