"""
Tests for L{socktopus_tw.db.door} (and the start-up check of
L{socktopus_tw.db.config}) on the production backend, a real MariaDB
database per test: reached over TCP and over a unix socket, refused at
start in one line, lost and found again while the daemon runs.
"""

from __future__ import annotations

import socket
from urllib.parse import quote

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from socktopus_tw.accounts import store
from socktopus_tw.db import DatabaseError, Unreachable, checkDatabase, migrate, parseDatabaseUrl
from tests.support.database import HASH, NOW, DatabaseTestsMixin, MariaDBDatabase
from tests.support.mariadb import closeConnectionsTo


def closedPort() -> int:
    """
    A port of 127.0.0.1 that nobody listens on (it was free a moment ago).
    """
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class MariaDBDoorTests(MariaDBDatabase, DatabaseTestsMixin, TestCase):
    """
    The door to a fresh MariaDB database per test.
    """

    @inlineCallbacks
    def test_unixSocketUrlWorks(self):
        """
        A database reached by ?unix_socket= holds the same data as over TCP.
        """
        socketConfig = parseDatabaseUrl(self.server.socketUrl(self.name))
        self.assertIn("unix_socket", socketConfig.arguments)
        checkDatabase(socketConfig)
        # Migrated over TCP already: nothing left to do over the socket.
        before, after = migrate(socketConfig)
        self.assertEqual(before, after)
        overSocket = self.openDatabase(socketConfig)
        userId = yield overSocket.run(store.addUser, "wendy", "w@example.com", HASH, None, NOW)
        self.assertEqual((yield self.query(store.userNamed, "wendy")).id, userId)
        self.assertEqual((yield overSocket.run(store.userWithId, userId)).name, "wendy")

    def test_wrongPasswordIsOneLineNamingTheDatabase(self):
        """
        A mistyped password at start says which database refused and why.
        """
        url = (
            f"mysql://{quote(self.server.user)}:not-the-password@127.0.0.1:"
            f"{self.server.port}/{self.name}"
        )
        error = self.assertRaises(DatabaseError, checkDatabase, parseDatabaseUrl(url))
        message = str(error)
        self.assertEqual(message.splitlines(), [message])
        self.assertIn(self.name, message)
        self.assertIn("Access denied", message)
        self.assertNotIn("not-the-password", message)

    def test_closedPortIsOneLineNamingTheDatabase(self):
        """
        A database server that is not running is named, with where it was looked for.
        """
        port = closedPort()
        url = f"mysql://{quote(self.server.user)}:pw@127.0.0.1:{port}/{self.name}"
        error = self.assertRaises(DatabaseError, checkDatabase, parseDatabaseUrl(url))
        message = str(error)
        self.assertEqual(message.splitlines(), [message])
        self.assertIn(self.name, message)
        self.assertIn(f"127.0.0.1:{port}", message)

    @inlineCallbacks
    def test_outageIsUnreachableThenRecovers(self):
        """
        While MariaDB is down queries fail as Unreachable; once back, they work.
        """
        self.ignoreBrokenConnectionLogs()
        userId = yield self.addUser("xavier")
        # Use more than one of the pool's connections before the outage, so
        # stale connections on several threads must all be replaced.
        yield self.query(store.userWithId, userId)
        self.addCleanup(self.server.start)
        self.server.stop()
        yield self.assertFailure(self.query(store.userNamed, "xavier"), Unreachable)
        yield self.assertFailure(self.addUser("yvonne"), Unreachable)
        self.server.start()
        user = None
        for _ in range(50):
            try:
                user = yield self.query(store.userNamed, "xavier")
            except Unreachable:
                yield deferLater(reactor, 0.2, lambda: None)
            else:
                break
        self.assertIsNotNone(user, "the pool never reconnected after MariaDB came back")
        self.assertEqual(user.id, userId)

    @inlineCallbacks
    def test_connectionsClosedByTheServerAreReplacedUnnoticed(self):
        """
        After MariaDB drops idle connections (wait_timeout overnight), queries still work.
        """
        self.ignoreBrokenConnectionLogs()
        userId = yield self.addUser("zoe")
        yield self.query(store.userWithId, userId)
        self.assertGreater(closeConnectionsTo(self.name), 0)
        # The database never went away: no query may fail because of it.
        found = []
        for _ in range(10):
            try:
                found.append((yield self.query(store.userNamed, "zoe")).id)
            except Unreachable as e:
                found.append(f"Unreachable: {e}")
        self.assertEqual(found, [userId] * 10)
