"""
A database an older daemon made is upgraded in place on start, losing nothing.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import reactor
from twisted.trial.unittest import TestCase

from socktopus_tw.accounts import store
from socktopus_tw.db import (
    Conflict,
    Database,
    migrate,
    openPool,
    parseDatabaseUrl,
    schema,
)
from tests.support.database import (
    HASH,
    SECRET,
    MariaDBDatabase,
    SQLiteDatabase,
)
from tests.support.database import NOW as CREATED_AT


class UpgradeFromVersionOneTestsMixin:
    """
    A database an older daemon made (schema 001 or 002, with users and
    sessions) is upgraded to the newest schema on start. The shipped suite
    only migrates empty databases.
    """

    async def madeAtVersion(self, version: int) -> tuple[Any, Database, int]:
        """
        A database migrated to C{version} only, with a user and a session:
        its config, the open database, the user's id. The shipped schema is
        in place again for the next migration.
        """
        config = parseDatabaseUrl(self.databaseUrl())
        shipped = schema.schemaVersions
        self.patch(schema, "schemaVersions", lambda c: shipped(c)[:version])
        self.assertEqual(migrate(config), (0, version))
        pool = openPool(config, reactor)
        pool.start()
        self.addCleanup(pool.close)
        database = Database(pool, config)
        userId = await database.run(store.addUser, "old", "old@example.com", HASH, None, CREATED_AT)
        await database.run(store.saveSession, userId, SECRET, CREATED_AT + 1800, True)
        self.patch(schema, "schemaVersions", shipped)
        return config, database, userId

    async def test_versionOneDatabaseIsUpgradedKeepingItsData(self):
        """
        Starting on a version-1 database keeps its users and sessions and
        adds the replay guard's table.
        """
        config, database, userId = await self.madeAtVersion(1)
        self.assertEqual(migrate(config), (1, 3))
        self.assertEqual(migrate(config), (3, 3))
        self.assertEqual((await database.run(store.userNamed, "OLD")).id, userId)
        self.assertEqual((await database.run(store.sessionOf, userId)).secret, SECRET)
        await database.run(store.acceptHeaders, CREATED_AT, userId, b"\x01" * 32)
        with self.assertRaises(Conflict):
            await database.run(store.acceptHeaders, CREATED_AT, userId, b"\x01" * 32)
        # Version 3's tables: failed logins, reset codes, the audit log.
        now = CREATED_AT * 1000
        await database.run(store.countLoginFailure, "old", "192.0.2.1", now, 900_000, lambda n: 0)
        await database.run(store.saveResetCode, userId, "ab" * 32, now + 3_600_000)
        self.assertTrue(await database.run(store.resetCodeValid, userId, "ab" * 32, now))
        await database.run(store.addEvent, userId, "login", now, "192.0.2.1")
        [event] = await database.run(store.eventsOf, userId, 10)
        self.assertEqual((event.type, event.ip), ("login", "192.0.2.1"))

    async def test_versionTwoDatabaseIsUpgradedKeepingItsData(self):
        """
        A database made by the previous release (version 2) gains version
        3's tables and keeps its users, sessions and replay guard.
        """
        config, database, userId = await self.madeAtVersion(2)
        await database.run(store.acceptHeaders, CREATED_AT, userId, b"\x01" * 32)
        self.assertEqual(migrate(config), (2, 3))
        self.assertEqual((await database.run(store.userNamed, "OLD")).id, userId)
        self.assertEqual((await database.run(store.sessionOf, userId)).secret, SECRET)
        with self.assertRaises(Conflict):
            await database.run(store.acceptHeaders, CREATED_AT, userId, b"\x01" * 32)
        await database.run(store.addEvent, userId, "login", CREATED_AT * 1000, "")
        self.assertEqual(len(await database.run(store.eventsOf, userId, 10)), 1)


class SQLiteUpgradeTests(SQLiteDatabase, UpgradeFromVersionOneTestsMixin, TestCase):
    pass


class MariaDBUpgradeTests(MariaDBDatabase, UpgradeFromVersionOneTestsMixin, TestCase):
    pass
