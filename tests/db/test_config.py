"""
Tests for L{socktopus_tw.db.config}: C{--database} URLs as
L{parseDatabaseUrl} reads them. (The start-up check on a real MariaDB is in
L{tests.db.test_door}.)
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from socktopus_tw.db import DatabaseError, parseDatabaseUrl


class ParseDatabaseUrlTests(SynchronousTestCase):
    """
    L{parseDatabaseUrl}: C{sqlite:PATH} and C{mysql://...}.
    """

    def test_sqliteRelative(self) -> None:
        """
        sqlite:socktopus.sqlite3 does not open that file in the working directory.
        """
        config = parseDatabaseUrl("sqlite:socktopus.sqlite3")
        self.assertEqual(
            (config.module, config.arguments), ("sqlite3", {"database": "socktopus.sqlite3"})
        )

    def test_sqliteAbsolute(self) -> None:
        """
        An absolute SQLite path, in either spelling, opens the wrong file.
        """
        for url in [
            "sqlite:/var/lib/socktopus/db.sqlite3",
            "sqlite:///var/lib/socktopus/db.sqlite3",
        ]:
            config = parseDatabaseUrl(url)
            self.assertEqual(config.arguments, {"database": "/var/lib/socktopus/db.sqlite3"})

    def test_mysql(self) -> None:
        """
        A full MySQL URL does not connect where it says.
        """
        config = parseDatabaseUrl("mysql://socktopus:hunter2@db.example.com:3307/relay")
        self.assertEqual(config.module, "pymysql")
        self.assertEqual(
            config.arguments,
            {
                "user": "socktopus",
                "password": "hunter2",
                "database": "relay",
                "charset": "utf8mb4",
                "host": "db.example.com",
                "port": 3307,
            },
        )

    def test_mysqlDefaults(self) -> None:
        """
        A MySQL URL without port (or host) does not use localhost:3306.
        """
        config = parseDatabaseUrl("mysql://u:p@db.example.com/relay")
        self.assertEqual(
            (config.arguments["host"], config.arguments["port"]), ("db.example.com", 3306)
        )
        config = parseDatabaseUrl("mysql://u:p@/relay")
        self.assertEqual((config.arguments["host"], config.arguments["port"]), ("localhost", 3306))

    def test_mariadbScheme(self) -> None:
        """
        A mariadb:// URL is refused although MariaDB is a production store.
        """
        config = parseDatabaseUrl("mariadb://u:p@localhost:3306/relay")
        self.assertEqual((config.module, config.arguments["database"]), ("pymysql", "relay"))

    def test_percentEscapes(self) -> None:
        """
        A password with @, : or / (percent-escaped in the URL) is sent escaped.
        """
        config = parseDatabaseUrl("mysql://us%40er:p%40ss%3Aw%2Frd%25@localhost:3306/my%2Ddb")
        self.assertEqual(config.arguments["user"], "us@er")
        self.assertEqual(config.arguments["password"], "p@ss:w/rd%")
        self.assertEqual(config.arguments["database"], "my-db")

    def test_noPassword(self) -> None:
        """
        A MySQL user without a password cannot be configured.
        """
        config = parseDatabaseUrl("mysql://root@localhost/relay")
        self.assertEqual((config.arguments["user"], config.arguments["password"]), ("root", ""))

    def test_unixSocket(self) -> None:
        """
        ?unix_socket= is ignored and the daemon connects over TCP instead.
        """
        config = parseDatabaseUrl(
            "mysql://socktopus:pw@localhost/relay?unix_socket=/run/mysqld/mysqld.sock"
        )
        self.assertEqual(
            config.arguments,
            {
                "user": "socktopus",
                "password": "pw",
                "database": "relay",
                "charset": "utf8mb4",
                "unix_socket": "/run/mysqld/mysqld.sock",
            },
        )

    def test_descriptionHidesPassword(self) -> None:
        """
        Start-up errors and logs about the database show its password.
        """
        config = parseDatabaseUrl("mysql://socktopus:hunter2@db.example.com:3307/relay")
        self.assertNotIn("hunter2", config.description)
        self.assertIn("relay", config.description)
        self.assertIn("db.example.com:3307", config.description)

    def test_mistakes(self) -> None:
        """
        A wrong --database is accepted or not a L{DatabaseError}.
        """
        for url in [
            "sqlite:",
            "postgres://u:p@h/db",
            "mysql://u:p@h/",
            "mysql://u:p@h",
            "mysql://u:p@h:notaport/db",
            "mysql://u:p@h:99999/db",
            "",
            "file.db",
        ]:
            self.assertRaises(DatabaseError, parseDatabaseUrl, url)
