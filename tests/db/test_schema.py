"""
Tests for L{socktopus_tw.db.schema}: the versioned schema files and their
migration at start, on each backend the daemon supports (the pattern of
L{tests.support.database}).
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase

from socktopus_tw.accounts import store
from socktopus_tw.db import migrate
from socktopus_tw.db.schema import schemaVersions as shippedVersions
from tests.support.database import (
    HASH,
    NOW,
    SECRET,
    DatabaseTestsMixin,
    MariaDBDatabase,
    SQLiteDatabase,
)


def schemaVersions(cursor: Any) -> list[int]:
    """
    Every row of the schema version table.
    """
    cursor.execute("SELECT version FROM socktopus_schema")
    return [int(row[0]) for row in cursor.fetchall()]


def newest(config) -> int:
    """
    The newest schema version shipped for C{config}'s database.
    """
    return shippedVersions(config)[-1][0]


class SchemaTestsMixin(DatabaseTestsMixin):
    """
    The schema over one backend. Subclasses give L{databaseUrl}.
    """

    def test_firstStartCreatesTheSchema(self):
        """
        The first start on an empty database creates the newest version.
        """
        self.assertEqual(self.firstMigration, (0, newest(self.config)))

    @inlineCallbacks
    def test_schemaVersionIsTheNewest(self):
        """
        The schema version table has exactly one row, saying the newest version.
        """
        self.assertEqual((yield self.query(schemaVersions)), [newest(self.config)])

    @inlineCallbacks
    def test_startingTwiceNeverLosesData(self):
        """
        Restarting the daemon keeps every user and session.
        """
        userId = yield self.addUser("victor", email="v\u00eft\U0001f600r@example.com")
        yield self.query(store.saveSession, userId, SECRET, NOW + 1800, True)
        version = newest(self.config)
        self.assertEqual(migrate(self.config), (version, version))
        self.assertEqual(migrate(self.config), (version, version))
        self.assertEqual((yield self.query(schemaVersions)), [version])
        self.assertEqual(
            (yield self.query(store.userNamed, "VICTOR")),
            store.User(userId, "victor", "v\u00eft\U0001f600r@example.com", HASH, True),
        )
        self.assertEqual(
            (yield self.query(store.sessionOf, userId)),
            store.StoredSession(userId, SECRET, NOW + 1800, True, True),
        )


class SQLiteSchemaTests(SQLiteDatabase, SchemaTestsMixin, TestCase):
    """
    The schema on the embedded default: a SQLite file.
    """


class MariaDBSchemaTests(MariaDBDatabase, SchemaTestsMixin, TestCase):
    """
    The schema on the production backend: a fresh MariaDB database per test.
    """
