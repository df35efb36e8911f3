"""
Tests for L{socktopus_tw.accounts.passwords}: bcrypt on a thread pool of its
own, with the real reactor and the cheapest cost bcrypt allows.
"""

from __future__ import annotations

import threading

import bcrypt
from twisted.internet import reactor
from twisted.internet.defer import gatherResults
from twisted.trial.unittest import SynchronousTestCase, TestCase

from socktopus_tw.accounts.passwords import Passwords

ROUNDS = 4


class RecordingPasswords(Passwords):
    """
    Passwords that note which thread each bcrypt call ran on.
    """

    def __init__(self, *arguments, **keywords) -> None:
        super().__init__(*arguments, **keywords)
        self.threads: list[threading.Thread] = []

    def _hash(self, password: str) -> bytes:
        self.threads.append(threading.current_thread())
        return super()._hash(password)

    def _check(self, password: str, hashed: bytes | None) -> bool:
        self.threads.append(threading.current_thread())
        return super()._check(password, hashed)


class PasswordsTests(TestCase):
    """
    Hashing and checking through a started L{Passwords} service.
    """

    def setUp(self):
        self.passwords = RecordingPasswords(reactor, rounds=ROUNDS, threads=2)
        self.passwords.startService()
        self.addCleanup(self.passwords.stopService)

    async def test_hashThenCheckMatches(self):
        """
        A user can log in with the password they registered with.
        """
        hashed = await self.passwords.hash("correct horse battery")
        self.assertTrue(await self.passwords.check("correct horse battery", hashed))

    async def test_hashIsBcryptAtConfiguredCost(self):
        """
        Stored hashes are bcrypt at the configured cost, never the password itself.
        """
        hashed = await self.passwords.hash("correct horse battery")
        self.assertIsInstance(hashed, bytes)
        self.assertTrue(hashed.startswith(b"$2b$%02d$" % ROUNDS), hashed)
        self.assertNotIn(b"correct horse battery", hashed)
        self.assertTrue(bcrypt.checkpw(b"correct horse battery", hashed))

    async def test_samePasswordSaltedDifferently(self):
        """
        Two users with the same password do not get the same stored hash.
        """
        first, second = await gatherResults(
            [self.passwords.hash("same password"), self.passwords.hash("same password")]
        )
        self.assertNotEqual(first, second)

    async def test_wrongPasswordDoesNotMatch(self):
        """
        A wrong password does not log anybody in.
        """
        hashed = await self.passwords.hash("correct horse battery")
        self.assertFalse(await self.passwords.check("correct horse batterY", hashed))
        self.assertFalse(await self.passwords.check("", hashed))

    async def test_unicodePasswordMatches(self):
        """
        A password with non-ASCII characters works for logging in.
        """
        password = "p\u00e4ssw\u00f6rd \u4e2d\u6587 \U0001f600"
        hashed = await self.passwords.hash(password)
        self.assertTrue(await self.passwords.check(password, hashed))
        self.assertFalse(
            await self.passwords.check("passw\u00f6rd \u4e2d\u6587 \U0001f600", hashed)
        )

    async def test_unknownUserDoesNotMatch(self):
        """
        Checking a password for a user that does not exist says no.
        """
        self.assertFalse(await self.passwords.check("any password", None))

    async def test_unknownUserPaysForADummyHash(self):
        """
        An unknown user costs a bcrypt check of the same cost, so timing hides who exists.
        """
        self.assertIsNone(self.passwords._dummy)
        self.assertFalse(await self.passwords.check("any password", None))
        dummy = self.passwords._dummy
        self.assertIsNotNone(dummy)
        self.assertTrue(dummy.startswith(b"$2b$%02d$" % ROUNDS), dummy)
        # The dummy is made once and reused: later unknown users do no extra hash.
        self.assertFalse(await self.passwords.check("other password", None))
        self.assertIs(self.passwords._dummy, dummy)

    async def test_dummyHashMatchesNoPassword(self):
        """
        No password typed for an unknown user is ever accepted, even the dummy's own.
        """
        self.assertFalse(await self.passwords.check("not anybody's password", None))
        self.assertFalse(await self.passwords.check("x", None))

    async def test_seventyThreeBytesNeverMatchFirstSeventyTwo(self):
        """
        A password one byte longer than bcrypt reads does not open the account.
        """
        stored = "p" * 72
        hashed = await self.passwords.hash(stored)
        self.assertTrue(await self.passwords.check(stored, hashed))
        self.assertFalse(await self.passwords.check(stored + "q", hashed))
        self.assertFalse(await self.passwords.check(stored + "\u00e9", hashed))

    async def test_malformedStoredHashDoesNotMatch(self):
        """
        A corrupt stored hash refuses the login instead of failing the request.
        """
        self.assertFalse(await self.passwords.check("correct horse battery", b"not a hash"))

    async def test_hashRunsOffTheReactorThread(self):
        """
        Hashing never stalls the reactor (and its WebSocket traffic).
        """
        await self.passwords.hash("correct horse battery")
        self.assertOnOwnPool()

    async def test_checkRunsOffTheReactorThread(self):
        """
        Checking never stalls the reactor (and its WebSocket traffic).
        """
        hashed = bcrypt.hashpw(b"correct horse battery", bcrypt.gensalt(ROUNDS))
        self.assertTrue(await self.passwords.check("correct horse battery", hashed))
        self.assertFalse(await self.passwords.check("unknown user", None))
        self.assertOnOwnPool()

    def assertOnOwnPool(self) -> None:
        """
        Every recorded bcrypt call ran on a thread of the service's own pool:
        not the reactor thread, and not the reactor's shared pool.
        """
        self.assertTrue(self.passwords.threads)
        reactorThread = threading.current_thread()
        for thread in self.passwords.threads:
            self.assertIsNot(thread, reactorThread)
            self.assertIsNot(thread, threading.main_thread())
            self.assertIn(thread, self.passwords.pool.threads)
            self.assertNotIn(thread, reactor.getThreadPool().threads)
            self.assertIn("bcrypt", thread.name)
        self.assertGreater(self.passwords.pool.workers, 0)

    def test_poolStoppedWithService(self):
        """
        Stopping the service stops its threads, so the daemon can exit.
        """
        passwords = Passwords(reactor, rounds=ROUNDS, threads=1)
        passwords.startService()
        self.assertTrue(passwords.pool.started)
        passwords.stopService()
        self.assertFalse(passwords.pool.started)
        self.assertFalse(passwords.running)


class LoginCostTests(SynchronousTestCase):
    """
    SPEC 4: wrong user and wrong password get the same 401 in the same time.
    """

    def test_longPasswordCostsAFullCheckLikeAnUnknownUser(self):
        """
        A password over bcrypt's 72 bytes must not be refused for free for a
        known user while an unknown one costs a full check: that difference in
        time tells which user names exist. Counted, not timed.
        """
        checked = []
        realCheck = bcrypt.checkpw

        def countingCheck(password, hashed):
            # Counted once done: bcrypt refusing a long password at once is
            # exactly the free answer this test is about.
            result = realCheck(password, hashed)
            checked.append(hashed)
            return result

        self.patch(bcrypt, "checkpw", countingCheck)
        passwords = Passwords(reactor=None, rounds=4)
        stored = passwords._hash("correct horse battery")
        longPassword = "p" * 100

        self.assertFalse(passwords._check(longPassword, stored))
        self.assertFalse(passwords._check(longPassword, None))
        self.assertFalse(passwords._check("x" * 10, None))
        # Each answer cost exactly one bcrypt check at the daemon's cost.
        self.assertEqual(len(checked), 3)
        self.assertEqual({h[:7] for h in checked}, {b"$2b$04$"})
