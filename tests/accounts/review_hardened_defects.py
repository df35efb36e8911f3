"""
A review of the hardened accounts (SPEC §8), after OWASP's authentication
and forgot-password cheat sheets: each test here shows one defect, and
fails until it is fixed.

The domain is driven directly over real databases (SQLite and the throwaway
MariaDB) with a L{Clock}; the daemon end to end where the user's view is the
point.
"""

from __future__ import annotations

import hashlib
import itertools
import secrets
import threading
from typing import Any

import pymysql
import treq
from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults, inlineCallbacks
from twisted.trial.unittest import TestCase

from socktopus_tw.accounts import service, store
from socktopus_tw.accounts.service import RESET_LIFE, Accounts, BadResetCode
from socktopus_tw.accounts.throttle import PAIR_LIMIT, TooManyAttempts
from socktopus_tw.db import Database, migrate, openPool, parseDatabaseUrl, schema
from socktopus_tw.errors import NotAuthorized, Unavailable, WrongCredentials
from tests.accounts.test_faults import Barrier, signedAt
from tests.accounts.test_hardened import (
    ATTACKER,
    HOME,
    TOO_MANY,
    WRONG,
    ThrottledAccountsMixin,
)
from tests.support.accounts import PASSWORD, register
from tests.support.daemon import Daemon
from tests.support.database import HASH, SECRET, MariaDBDatabase, SQLiteDatabase
from tests.support.database import NOW as CREATED_AT

NEW_PASSWORD = "a brand new password"


async def outcomes(attempts: list[Any]) -> list[Any]:
    """
    Run login coroutines at once; each one's session or error.
    """
    return await gatherResults(
        [Deferred.fromCoroutine(a).addErrback(lambda f: f.value) for a in attempts]
    )


def liveCode(testCase: Any, userId: int) -> Any:
    """
    Store a live reset code for C{userId}, as a mailed link carries it;
    fires with the code.
    """
    code = secrets.token_hex(32)
    expires = int(testCase.clock.seconds() * 1000) + RESET_LIFE
    d = testCase.query(
        store.saveResetCode, userId, hashlib.sha256(code.encode()).hexdigest(), expires
    )
    return d.addCallback(lambda _: code)


class ReviewMixin(ThrottledAccountsMixin):
    async def tryLogins(self, name: str, ips: list[str], password: str = WRONG) -> list[str]:
        """
        One login of C{name} from each of C{ips} in turn: for each,
        C{"checked"} (a bcrypt check said no), C{"refused"} (429), C{"503"}
        or C{"ok"}.
        """
        seen = []
        for ip in ips:
            try:
                await self.accounts.login(name, password, False, ip)
            except WrongCredentials:
                seen.append("checked")
            except TooManyAttempts:
                seen.append("refused")
            except Unavailable:
                seen.append("503")
            else:
                seen.append("ok")
        return seen


# -- 1. concurrent guesses slip past the limit ---------------------------------


class ConcurrentGuessesMixin(ReviewMixin):
    async def test_concurrentGuessesAreHeldToTheLimit(self):
        """
        Twenty guesses of alice's password sent at once from one IP: at most
        5 may be checked (SPEC §8.1), and the twentieth, the right one, must
        be refused. The throttle's check and its count are separate
        transactions with the bcrypt check between them, so every attempt
        checked before the fifth failure is counted passes: on SQLite all twenty are checked and the
        right password logs in; on MariaDB 13 or 14 are checked.
        """
        await self.user("alice")
        guesses = [WRONG] * 19 + [PASSWORD]
        seen = await outcomes(
            [self.accounts.login("alice", guess, False, ATTACKER) for guess in guesses]
        )
        self.assertLessEqual(self.checks, PAIR_LIMIT, "bcrypt checks of one (user, IP) pair")
        self.assertIsInstance(seen[-1], TooManyAttempts)


class SQLiteConcurrentGuessesTests(SQLiteDatabase, ConcurrentGuessesMixin, TestCase):
    pass


class MariaDBConcurrentGuessesTests(MariaDBDatabase, ConcurrentGuessesMixin, TestCase):
    pass


# -- 2. a lost update of the count on MariaDB ---------------------------------


class MariaDBCountRaceTests(MariaDBDatabase, ReviewMixin, TestCase):
    async def test_failuresOnTwoNodesAtOnceAreBothCounted(self):
        """
        Two failures of one pair counted at the same moment (two nodes, or
        two connections of one) must make two: countLoginFailure reads the
        count with a plain SELECT and writes back the number it computed,
        so under InnoDB's REPEATABLE READ the second UPDATE overwrites the
        first (a lost update). Three failures and two more at once leave
        the count at 4: the pair is not made to wait.
        """
        await self.user("alice")
        await self.failLogin("alice", ATTACKER, 3)
        other = Accounts(self.openDatabase(self.config), self.passwords, self.clock)
        barrier = threading.Barrier(2, timeout=10)
        count = store.countLoginFailure
        calls = itertools.count()

        def interleaved(cursor: Any, nameKey: str, *arguments: Any) -> Any:
            # The two pair counts meet after their SELECT; the rest run freely.
            if nameKey and next(calls) < 2:
                cursor = Barrier(cursor, barrier)
            return count(cursor, nameKey, *arguments)

        self.patch(store, "countLoginFailure", interleaved)
        seen = await outcomes(
            [node.login("alice", WRONG, False, ATTACKER) for node in (self.accounts, other)]
        )
        self.assertEqual([type(e) for e in seen], [WrongCredentials, WrongCredentials])
        self.assertEqual(await self.query(failuresOf, "alice", ATTACKER), 5)
        await self.refused("alice", ATTACKER)


def failuresOf(cursor: Any, nameKey: str, ip: str) -> int:
    cursor.execute(
        "SELECT failures FROM login_failures WHERE name_key = ? AND ip = ?", (nameKey, ip)
    )
    row = cursor.fetchone()
    return int(row[0]) if row else 0


# -- 3. IPv6: one client, many addresses; one address, many spellings --------


class AddressesMixin(ReviewMixin):
    async def test_oneIpv6NetworkIsOneClient(self):
        """
        An IPv6 client is given a /64 (2**64 addresses) by its provider and
        picks a new source address at will: counted per full address, each
        address guesses 5 times afresh. Fifty guesses from ten addresses of
        one /64 are all checked by bcrypt.
        """
        await self.user("alice")
        ips = [f"2001:db8:1:2::{n:x}" for n in range(1, 11) for _ in range(PAIR_LIMIT)]
        seen = await self.tryLogins("alice", ips)
        self.assertLessEqual(seen.count("checked"), PAIR_LIMIT, seen)

    async def test_oneAddressSpelledTwoWaysIsOneClient(self):
        """
        The IP is counted as the text it arrived as. An IPv4 client reaching
        a dual-stack socket is C{::ffff:192.0.2.66}, and the same client on
        an IPv4 socket (another --listen, another proxy) is C{192.0.2.66}:
        two counts, each with its own 5 guesses. (Upper-case or uncompressed
        IPv6 text from a proxy's X-Real-IP would split a count the same way.)
        """
        await self.user("alice")
        ips = [ip for ip in ("192.0.2.66", "::ffff:192.0.2.66") for _ in range(PAIR_LIMIT)]
        seen = await self.tryLogins("alice", ips)
        self.assertLessEqual(seen.count("checked"), PAIR_LIMIT, seen)


class SQLiteAddressesTests(SQLiteDatabase, AddressesMixin, TestCase):
    pass


# -- 4. enumeration: a known name's failure does more work --------------------


class SameStepsMixin(ReviewMixin):
    async def test_aKnownNameFailsWithTheStepsOfAnUnknownOne(self):
        """
        SPEC §4: wrong user and wrong password get the same answer in the
        same time. A wrong password for a real user writes its audit event
        (and on the fifth failure a second one) before the 401 goes out; a
        name nobody has writes nothing: one or two more committed writes
        (an fsync each on SQLite) tell who exists.
        """
        await self.user("alice")
        await self.failLogin("warm_up", "203.0.113.1")
        run = self.database.run
        steps: list[str] = []

        def recording(f: Any, *arguments: Any, **keywords: Any) -> Any:
            steps.append(f.__name__)
            return run(f, *arguments, **keywords)

        self.patch(self.database, "run", recording)
        done = {}
        for name, ip in (("alice", ATTACKER), ("nobody", HOME)):
            done[name] = []
            for _ in range(PAIR_LIMIT):
                del steps[:]
                await self.failLogin(name, ip)
                done[name].append(list(steps))
        self.assertEqual(done["alice"], done["nobody"])


class SQLiteSameStepsTests(SQLiteDatabase, SameStepsMixin, TestCase):
    pass


# -- 5. audit: the IP's wait is never recorded --------------------------------


class AuditGapMixin(ReviewMixin):
    async def test_aFailureThatMakesTheIpWaitIsRecordedAsThrottled(self):
        """
        Credential stuffing: alice's wrong password is the 100th failure
        from the IP, which now waits 15 minutes; her own login from there is
        refused. Her log says loginFailed, never throttled: failed() reports
        only a pair's wait, so the IP's is recorded for nobody.
        """
        aliceId = await self.user("alice")
        for n in range(99):
            await self.failLogin(f"user{n}", ATTACKER)
        await self.failLogin("alice", ATTACKER)
        await self.refused("alice", ATTACKER)
        self.assertIn(("throttled", ATTACKER), await self.events(aliceId))


class SQLiteAuditGapTests(SQLiteDatabase, AuditGapMixin, TestCase):
    pass


# -- 6. a reset leaves the session alive on the other nodes -------------------


class ResetEndsEverySessionMixin(ReviewMixin):
    async def test_aResetEndsTheSessionOnEveryNode(self):
        """
        SPEC §8.2: after a reset "every session of the user ends" (what a
        user whose secret was stolen resets for). Two daemons on one
        database (a cluster, or SO_REUSEPORT daemons on one host): the
        attacker's requests reach the second, which has the session cached;
        the reset goes through the first. The second keeps accepting the
        stolen secret, and slides its expiry, as long as it is used.
        """
        aliceId = await self.user("alice")
        stolen = (await self.accounts.login("alice", PASSWORD, False, HOME)).secret
        other = self.restarted()
        now = self.clock.seconds()
        await other.authenticate(signedAt(aliceId, stolen, "/authHeaders", now), None)
        code = await liveCode(self, aliceId)
        await self.accounts.confirmReset(aliceId, code, NEW_PASSWORD, HOME)
        self.clock.advance(1)
        with self.assertRaises(NotAuthorized):
            await other.authenticate(
                signedAt(aliceId, stolen, "/authHeaders", self.clock.seconds()), None
            )


class SQLiteResetEndsEverySessionTests(SQLiteDatabase, ResetEndsEverySessionMixin, TestCase):
    pass


# -- 7. two confirms of one code both win on MariaDB --------------------------


class MariaDBConfirmRaceTests(MariaDBDatabase, ReviewMixin, TestCase):
    async def test_oneCodeConfirmedTwiceAtOnceWorksOnce(self):
        """
        SPEC §8.2: a code is good for one use. resetPassword checks the code
        with a plain SELECT, then deletes it without looking at how many
        rows went: two confirms of one code at once (two nodes, or two
        connections of one) both see it live, and both set a password.
        """
        aliceId = await self.user("alice")
        code = await liveCode(self, aliceId)
        other = Accounts(self.openDatabase(self.config), self.passwords, self.clock)
        barrier = threading.Barrier(2, timeout=10)
        reset = store.resetPassword
        calls = itertools.count()

        def interleaved(cursor: Any, *arguments: Any) -> Any:
            if next(calls) < 2:
                cursor = Barrier(cursor, barrier)
            return reset(cursor, *arguments)

        self.patch(store, "resetPassword", interleaved)
        seen = await outcomes(
            [
                node.confirmReset(aliceId, code, password, HOME)
                for node, password in ((self.accounts, NEW_PASSWORD), (other, "another password"))
            ]
        )
        self.assertEqual(sorted(e is None for e in seen), [False, True], seen)
        self.assertIsInstance(next(e for e in seen if e is not None), BadResetCode)


# -- 8. reset requests are not limited ----------------------------------------


class RecordingMailer:
    def __init__(self) -> None:
        self.resets: list[str] = []

    async def sendReset(self, to: str, userName: str, link: str) -> None:
        self.resets.append(link)


class ResetFloodMixin(ReviewMixin):
    async def test_resetRequestsForOneUserAreLimited(self):
        """
        OWASP's forgot-password cheat sheet: limit reset requests per
        account. Anyone may ask for alice's reset as often as they like:
        every request mails her (a mail bomb through our SMTP server and
        its reputation) and voids the code she was mailed a moment ago, so
        an attacker asking every few seconds keeps her from ever resetting.
        Ten requests in one minute send ten mails.
        """
        mailer = RecordingMailer()
        self.accounts = Accounts(self.database, self.passwords, self.clock, mailer=mailer)
        await self.user("alice")
        background: list[Deferred[None]] = []
        ensure = service.ensureDeferred
        self.patch(service, "ensureDeferred", lambda c: background.append(ensure(c)))
        for _ in range(10):
            await self.accounts.requestReset("alice", None, ATTACKER)
            # The mail goes out after the answer; the door's deadlines run
            # on the clock, so it moves on only once the mail is sent.
            await gatherResults(background)
            self.clock.advance(5)
        self.assertLessEqual(len(mailer.resets), 3)


class SQLiteResetFloodTests(SQLiteDatabase, ResetFloodMixin, TestCase):
    pass


# -- 9. MariaDB: an IP that is not ASCII --------------------------------------


class MariaDBIpTextTests(MariaDBDatabase, ReviewMixin, TestCase):
    async def test_aNonAsciiClientIpIsCountedAsOnSQLite(self):
        """
        clientAddress decodes X-Real-IP with errors="replace", so a header
        byte above 0x7f arrives as U+FFFD. SQLite counts such an IP like
        any other. On MariaDB login_failures.ip is CHARACTER SET ascii
        COLLATE ascii_bin and the utf8mb4 parameter cannot be compared with
        it (1267, illegal mix of collations): an OperationalError, which the
        door takes for an outage. Every login from that IP is a 503, and
        each one logs "Database unavailable" and counts a database error.
        """
        await self.user("alice")
        ip = "192.0.2.66\ufffd"
        seen = await self.tryLogins("alice", [ip] * (PAIR_LIMIT + 1))
        self.assertEqual(seen, ["checked"] * PAIR_LIMIT + ["refused"])


# -- 10. MariaDB: an upgrade to version 3 cut short cannot be resumed ---------


class MariaDBUpgradeResumeTests(MariaDBDatabase, TestCase):
    async def test_anInterruptedUpgradeToVersionThreeIsResumed(self):
        """
        MariaDB commits each CREATE TABLE at once, so a version-3 upgrade
        that stops after its first table (the daemon killed, the connection
        lost, a lock wait timeout on the foreign key to a busy users table)
        leaves login_failures made and the version at 2. The next start runs
        003 again from the top, and its CREATE TABLE (no IF NOT EXISTS)
        fails: the daemon never starts again without a hand-made repair.
        On SQLite the DDL is rolled back and the upgrade simply runs again.
        """
        config = parseDatabaseUrl(self.databaseUrl())
        shipped = schema.schemaVersions
        self.patch(schema, "schemaVersions", lambda c: shipped(c)[:2])
        self.assertEqual(migrate(config), (0, 2))
        pool = openPool(config, reactor)
        pool.start()
        self.addCleanup(pool.close)
        database = Database(pool, config)
        userId = await database.run(store.addUser, "old", "old@example.com", HASH, None, CREATED_AT)
        await database.run(store.saveSession, userId, SECRET, CREATED_AT + 1800, True)
        [(number, script)] = shipped(config)[2:]
        firstTable = schema.statements(script)[0]
        cutShort = firstTable + ";\nSELECT * FROM the_connection_was_lost_here;\n"
        self.patch(schema, "schemaVersions", lambda c: [*shipped(c)[:2], (number, cutShort)])
        with self.assertRaises(pymysql.err.ProgrammingError):
            migrate(config)
        self.patch(schema, "schemaVersions", shipped)
        try:
            upgraded = migrate(config)
        except pymysql.err.MySQLError as e:
            self.fail(f"the upgrade cannot be run again: {e}")
        self.assertEqual(upgraded, (2, 3))
        self.assertEqual((await database.run(store.sessionOf, userId)).secret, SECRET)


# -- 11. a dual-stack listener: every client is one IP ------------------------


class DualStackDaemonTests(TestCase):
    """
    The daemon listening on C{tcp6:...:interface=\\:\\:} (dual stack), nginx
    on the same host proxying to 127.0.0.1: the kernel hands the daemon the
    peer as C{::ffff:127.0.0.1}, which clientAddress does not take for
    loopback, so X-Real-IP is ignored and every user is the one IP
    C{::ffff:127.0.0.1}. An attacker's 5 wrong passwords for alice then
    lock alice out for everyone (and 100 lock out every user): the
    lockout §8.1 promises cannot happen.
    """

    timeout = 60

    @inlineCallbacks
    def test_aLocalProxyOnAnIpv4MappedAddressIsBelieved(self):
        daemon = Daemon(self, "--bcrypt-rounds", "4", "--listen", "tcp6:0:interface=\\:\\:")
        yield register(daemon, "alice")
        [dual] = [
            s.port.getHost().port
            for s in daemon.service
            if s.name.startswith("listen") and s.port.getHost().host == "::"
        ]

        def post(body: dict[str, str], clientIp: str):
            return treq.post(
                f"http://127.0.0.1:{dual}/login",
                json=body,
                headers={"X-Real-IP": clientIp},
                agent=daemon.agent,
            )

        for _ in range(PAIR_LIMIT):
            response = yield post({"User": "alice", "Password": WRONG}, ATTACKER)
            yield response.content()
            self.assertEqual(response.code, 401)
        response = yield post({"User": "alice", "Password": PASSWORD}, HOME)
        body = yield response.json()
        self.assertNotEqual(body, TOO_MANY)
        self.assertEqual(response.code, 200)
