"""
Tests for L{socktopus_tw.accounts.store}: every SQL function of the accounts
service, run through L{Database.run}, against each backend the daemon
supports.

One mixin holds the tests (Twisted's C{makeSQLTests} pattern from
C{twisted/test/test_adbapi.py}); each concrete class only mixes in where its
database lives (L{tests.support.database}). MariaDB is the throwaway server
of L{tests.support.mariadb}: when it cannot be started the MariaDB tests
fail, they never skip. The schema and the door itself are tested in
L{tests.db}.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase

from socktopus_tw.accounts import store
from socktopus_tw.db import Conflict
from tests.support.database import (
    HASH,
    NOW,
    OTHER_HASH,
    OTHER_SECRET,
    SECRET,
    DatabaseTestsMixin,
    MariaDBDatabase,
    SQLiteDatabase,
)


def userCount(cursor: Any) -> int:
    cursor.execute("SELECT COUNT(*) FROM users")
    return int(cursor.fetchone()[0])


class Failed(Exception):
    """
    Raised by a store function on purpose, after it wrote something.
    """


def addUserThenFail(cursor: Any, name: str) -> None:
    store.addUser(cursor, name, "a@example.com", HASH, None, NOW)
    raise Failed()


class StoreTestsMixin(DatabaseTestsMixin):
    """
    The accounts store over one backend. Subclasses give L{databaseUrl}.
    """

    # -- users ------------------------------------------------------------

    @inlineCallbacks
    def test_userIsFoundByNameInAnyCase(self):
        """
        A user who signed up as "Alice" can log in typing "alice" or "ALICE".
        """
        userId = yield self.addUser("Alice")
        for typed in ["Alice", "alice", "ALICE", "aLiCe"]:
            user = yield self.query(store.userNamed, typed)
            self.assertEqual(user, store.User(userId, "Alice", "Alice@example.com", HASH, True))

    @inlineCallbacks
    def test_userIsFoundById(self):
        """
        Auth Headers carry a user id; it finds the user who signed up.
        """
        first = yield self.addUser("first")
        second = yield self.addUser("second")
        self.assertNotEqual(first, second)
        user = yield self.query(store.userWithId, second)
        self.assertEqual((user.id, user.name, user.passwordHash), (second, "second", HASH))

    @inlineCallbacks
    def test_unknownUserIsNone(self):
        """
        A name or id nobody has is "not found", not an error.
        """
        yield self.addUser("someone")
        self.assertIsNone((yield self.query(store.userNamed, "nobody")))
        self.assertIsNone((yield self.query(store.userWithId, 987654)))

    @inlineCallbacks
    def test_takenNameIsAConflict(self):
        """
        Two people cannot own one name, even typed in another case.
        """
        yield self.addUser("bob")
        for name in ["bob", "BOB", "Bob"]:
            yield self.assertFailure(self.addUser(name), Conflict)
        self.assertEqual((yield self.query(userCount)), 1)

    @inlineCallbacks
    def test_failedTransactionLeavesNothing(self):
        """
        A request that fails half-way does not leave half a user behind.
        """
        yield self.assertFailure(self.query(addUserThenFail, "halfway"), Failed)
        self.assertIsNone((yield self.query(store.userNamed, "halfway")))
        self.assertEqual((yield self.query(userCount)), 0)

    @inlineCallbacks
    def test_removedUserAndSessionAreGone(self):
        """
        A user removed after failed mail can sign up again with the same name.
        """
        userId = yield self.addUser("carol", code="ab" * 32)
        yield self.query(store.saveSession, userId, SECRET, NOW + 60, False)
        yield self.query(store.removeUser, userId)
        self.assertIsNone((yield self.query(store.userWithId, userId)))
        self.assertIsNone((yield self.query(store.sessionOf, userId)))
        again = yield self.addUser("carol")
        self.assertNotEqual(again, userId)

    @inlineCallbacks
    def test_unicodeEmailIsKeptExactly(self):
        """
        An email with accents, CJK or an emoji comes back exactly as given.
        """
        emails = [
            "jos\u00e9.m\u00fcller@exampl\u00e9.org",
            "\u7528\u6237@\u4f8b\u5b50.\u5e7f\u544a",
            "party\U0001f389\U0001f44d\U0001f3fd@example.com",
        ]
        for index, email in enumerate(emails):
            userId = yield self.addUser(f"u{index}", email=email)
            self.assertEqual((yield self.query(store.userWithId, userId)).email, email)
            self.assertEqual((yield self.query(store.userNamed, f"u{index}")).email, email)

    # -- registration -----------------------------------------------------

    @inlineCallbacks
    def test_rightCodeRegistersOnce(self):
        """
        The mailed link registers the user; clicking it again does nothing.
        """
        code = "0f" * 32
        userId = yield self.addUser("dave", code=code)
        self.assertFalse((yield self.query(store.userWithId, userId)).registered)
        self.assertTrue((yield self.query(store.completeRegistration, userId, code)))
        self.assertTrue((yield self.query(store.userWithId, userId)).registered)
        self.assertFalse((yield self.query(store.completeRegistration, userId, code)))
        self.assertTrue((yield self.query(store.userWithId, userId)).registered)

    @inlineCallbacks
    def test_wrongCodeDoesNotRegister(self):
        """
        Guessing a code (or using another user's) does not register anyone.
        """
        code = "0f" * 32
        userId = yield self.addUser("erin", code=code)
        otherId = yield self.addUser("frank", code="1e" * 32)
        for wrong in ["1e" * 32, "0F" * 32, code[:-1], "", "\u00e9" * 64, "?' OR 1=1 --"]:
            self.assertFalse((yield self.query(store.completeRegistration, userId, wrong)))
        self.assertFalse((yield self.query(store.completeRegistration, otherId, code)))
        self.assertFalse((yield self.query(store.userWithId, userId)).registered)
        self.assertFalse((yield self.query(store.userWithId, otherId)).registered)
        # The right code still works afterwards.
        self.assertTrue((yield self.query(store.completeRegistration, userId, code)))

    @inlineCallbacks
    def test_codeForUnknownUserDoesNothing(self):
        """
        A link with a made-up user id is refused, not a crash.
        """
        self.assertFalse((yield self.query(store.completeRegistration, 424242, "0f" * 32)))

    @inlineCallbacks
    def test_userWithoutCodeCannotBeRegisteredAgain(self):
        """
        A user registered at once (no mail) has no code anyone could use.
        """
        userId = yield self.addUser("grace")
        self.assertTrue((yield self.query(store.userWithId, userId)).registered)
        self.assertFalse((yield self.query(store.completeRegistration, userId, "")))

    # -- passwords and sessions -------------------------------------------

    @inlineCallbacks
    def test_newPasswordEndsSessions(self):
        """
        After a password change, a stolen secret no longer works.
        """
        userId = yield self.addUser("heidi")
        yield self.query(store.saveSession, userId, SECRET, NOW + 600, True)
        yield self.query(store.setPassword, userId, OTHER_HASH)
        self.assertIsNone((yield self.query(store.sessionOf, userId)))
        self.assertEqual((yield self.query(store.userWithId, userId)).passwordHash, OTHER_HASH)

    @inlineCallbacks
    def test_savedSessionIsReadBack(self):
        """
        A login's secret, expiry and "stay logged in" survive in the database.
        """
        userId = yield self.addUser("ivan")
        unregistered = yield self.addUser("judy", code="aa" * 32)
        yield self.query(store.saveSession, userId, SECRET, NOW + 1800, False)
        yield self.query(store.saveSession, unregistered, OTHER_SECRET, NOW + 604800, True)
        self.assertEqual(
            (yield self.query(store.sessionOf, userId)),
            store.StoredSession(userId, SECRET, NOW + 1800, False, True),
        )
        self.assertEqual(
            (yield self.query(store.sessionOf, unregistered)),
            store.StoredSession(unregistered, OTHER_SECRET, NOW + 604800, True, False),
        )

    @inlineCallbacks
    def test_savingAgainReplacesTheSession(self):
        """
        A new login after expiry gives the user one session, the new one.
        """
        userId = yield self.addUser("mallory")
        yield self.query(store.saveSession, userId, SECRET, NOW + 10, True)
        yield self.query(store.saveSession, userId, OTHER_SECRET, NOW + 20, False)
        self.assertEqual(
            (yield self.query(store.sessionOf, userId)),
            store.StoredSession(userId, OTHER_SECRET, NOW + 20, False, True),
        )

    @inlineCallbacks
    def test_extendingMovesTheExpiry(self):
        """
        A user who keeps using the service stays logged in.
        """
        userId = yield self.addUser("niaj")
        yield self.query(store.saveSession, userId, SECRET, NOW + 1800, False)
        yield self.query(store.extendSession, userId, SECRET, NOW + 3600, False)
        self.assertEqual(
            (yield self.query(store.sessionOf, userId)),
            store.StoredSession(userId, SECRET, NOW + 3600, False, True),
        )

    @inlineCallbacks
    def test_extendingCanMakeTheSessionLong(self):
        """
        Logging in again with "stay logged in" keeps the secret and remembers the choice.
        """
        userId = yield self.addUser("nora")
        yield self.query(store.saveSession, userId, SECRET, NOW + 1800, False)
        yield self.query(store.extendSession, userId, SECRET, NOW + 604800, True)
        self.assertEqual(
            (yield self.query(store.sessionOf, userId)),
            store.StoredSession(userId, SECRET, NOW + 604800, True, True),
        )

    @inlineCallbacks
    def test_extendingWithAnOldSecretDoesNothing(self):
        """
        A late write for a replaced secret neither revives it nor moves the new one.
        """
        userId = yield self.addUser("olivia")
        yield self.query(store.saveSession, userId, SECRET, NOW + 1800, False)
        yield self.query(store.saveSession, userId, OTHER_SECRET, NOW + 1800, False)
        yield self.query(store.extendSession, userId, SECRET, NOW + 99999, True)
        self.assertEqual(
            (yield self.query(store.sessionOf, userId)),
            store.StoredSession(userId, OTHER_SECRET, NOW + 1800, False, True),
        )

    @inlineCallbacks
    def test_extendingDoesNotMatchSecretInAnotherCase(self):
        """
        Secrets are base64: one differing only in case is another secret.
        """
        userId = yield self.addUser("peggy")
        yield self.query(store.saveSession, userId, "AbCd" * 20, NOW + 1800, False)
        yield self.query(store.extendSession, userId, "aBcD" * 20, NOW + 3600, True)
        self.assertEqual(
            (yield self.query(store.sessionOf, userId)),
            store.StoredSession(userId, "AbCd" * 20, NOW + 1800, False, True),
        )

    @inlineCallbacks
    def test_endedSessionIsGone(self):
        """
        After logout, the secret is gone from the database; others stay.
        """
        userId = yield self.addUser("rupert")
        otherId = yield self.addUser("sybil")
        yield self.query(store.saveSession, userId, SECRET, NOW + 1800, False)
        yield self.query(store.saveSession, otherId, OTHER_SECRET, NOW + 1800, False)
        yield self.query(store.endSession, userId)
        self.assertIsNone((yield self.query(store.sessionOf, userId)))
        self.assertEqual((yield self.query(store.sessionOf, otherId)).secret, OTHER_SECRET)
        yield self.query(store.endSession, userId)  # a second logout is harmless

    # -- looking up many names ---------------------------------------------

    @inlineCallbacks
    def test_manyNamesAreAllFound(self):
        """
        Asking for 1,200 names (more than one query's worth) finds every one.
        """
        names = [f"user{i:04d}" for i in range(1200)]

        def addAll(cursor: Any) -> dict[str, int]:
            return {
                name: store.addUser(cursor, name, "m@example.com", HASH, None, NOW)
                for name in names
            }

        ids = yield self.query(addAll)
        asked = [name.upper() if i % 3 == 0 else name for i, name in enumerate(names)]
        asked += ["missing1", "missing2", names[7]]
        found = yield self.query(store.idsNamed, asked)
        self.assertEqual(found, ids)

    @inlineCallbacks
    def test_namesWithSqlMetacharactersAreLiteral(self):
        """
        Quotes, wildcards and comment markers in names match only themselves.
        """
        tricky = [
            "o'brien",
            'say"hi',
            "100%",
            "a_b",
            "back\\slash",
            "semi;colon",
            "x' OR '1'='1",
            "-- comment",
            "?",
            "%s",
            "`tick`",
            "/*c*/",
        ]
        ids = {}
        for name in tricky:
            ids[name.lower()] = yield self.addUser(name)
        yield self.addUser("aXb")
        yield self.addUser("1000")
        found = yield self.query(store.idsNamed, [*tricky, "a%", "%", "_", "'", "1' OR '1'='1"])
        self.assertEqual(found, ids)
        for name in tricky:
            self.assertEqual((yield self.query(store.userNamed, name)).name, name)

    @inlineCallbacks
    def test_noNamesFindNothing(self):
        """
        An empty list of names is an empty answer, not an SQL error.
        """
        yield self.addUser("trent")
        self.assertEqual((yield self.query(store.idsNamed, [])), {})


class SQLiteStoreTests(SQLiteDatabase, StoreTestsMixin, TestCase):
    """
    The store on the embedded default: a SQLite file.
    """


class MariaDBStoreTests(MariaDBDatabase, StoreTestsMixin, TestCase):
    """
    The store on the production backend: a fresh MariaDB database per test.
    """
