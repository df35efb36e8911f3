"""
The accounts service end to end on MariaDB, the production store: the real
daemon (L{tests.support.daemon.Daemon}) on a fresh database of the throwaway server
of L{tests.support.mariadb}, real HTTP requests, a restart, a race, and an outage of
the database server while the daemon runs.

Without MariaDB these tests fail, they never skip.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from twisted.internet import reactor
from twisted.internet.defer import gatherResults, inlineCallbacks
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from tests.support.accounts import closedPort, signedHeaders
from tests.support.daemon import Daemon
from tests.support.database import ignoreBrokenConnectionLogs
from tests.support.mariadb import closeConnectionsTo, server
from tests.support.process import TWISTD, run

PASSWORD = "correct horse battery"


class MariaDBDaemonTests(TestCase):
    """
    The daemon with C{--database mysql://...}: a fresh database per test.
    """

    timeout = 180

    def setUp(self) -> None:
        self.server = server()
        self.name = self.server.createDatabase()
        self.addCleanup(self.server.dropDatabase, self.name)
        # Whatever a test does to the shared server, the next test finds it up.
        self.addCleanup(self.server.start)
        self.url = self.server.url(self.name)

    def ignoreBrokenConnectionLogs(self) -> None:
        ignoreBrokenConnectionLogs(self)

    def daemon(self) -> Daemon:
        return Daemon(self, "--database", self.url, "--bcrypt-rounds", "4")

    @inlineCallbacks
    def register(self, daemon: Daemon, name: str):
        status, answer, _ = yield daemon.post(
            "/users", {"User": name, "Password": PASSWORD, "Email": f"{name}@example.com"}
        )
        self.assertEqual((status, list(answer)), (200, ["UserID"]), answer)
        return answer["UserID"]

    @inlineCallbacks
    def login(self, daemon: Daemon, name: str):
        status, answer, _ = yield daemon.post("/login", {"User": name, "Password": PASSWORD})
        self.assertEqual(status, 200, answer)
        return answer

    def checkHeaders(self, daemon: Daemon, userId: int, secret: str, path: str):
        """
        Another backend asking the daemon whether a user's request is genuine.
        """
        return daemon.post("/authHeaders", b"", headers=signedHeaders(userId, secret, path))

    @inlineCallbacks
    def retry(self, attempt: Any, done: Any, tries: int = 50):
        """
        Call C{attempt} until C{done(result)}, waiting 0.2 s between tries;
        fires with the last result. Waits for an event outside the test (a
        database server coming back), never for a duration.
        """
        result = None
        for _ in range(tries):
            result = yield attempt()
            if done(result):
                break
            yield deferLater(reactor, 0.2, lambda: None)
        return result

    @inlineCallbacks
    def test_registerLoginAndSignedRequestWork(self):
        """
        A user signs up, logs in and makes a signed request, all on MariaDB.
        """
        daemon = self.daemon()
        userId = yield self.register(daemon, "alice")
        answer = yield self.login(daemon, "ALICE")
        self.assertEqual(answer["UserID"], userId)
        status, body, _ = yield self.checkHeaders(
            daemon, userId, answer["Secret"], "/backend/orders?id=1"
        )
        self.assertEqual((status, body), (200, {"UserID": userId}))
        path = f"/users/{userId}/registered"
        status, body, _ = yield daemon.request(
            "GET", path, headers=signedHeaders(userId, answer["Secret"], path)
        )
        self.assertEqual((status, body), (200, {"Registered": True}))
        status, body, _ = yield self.checkHeaders(daemon, userId, "A" * 88, "/backend/x")
        self.assertEqual((status, body), (401, {"Error": "Not Authorized Request"}))

    @inlineCallbacks
    def test_userIdsAreFound(self):
        """
        Another backend looks up users by name, in any case, on MariaDB.
        """
        daemon = self.daemon()
        aliceId = yield self.register(daemon, "alice")
        bobId = yield self.register(daemon, "bob")
        answer = yield self.login(daemon, "alice")
        path = "/users/getID?username=ALICE&usernames=bob,nobody"
        status, body, _ = yield daemon.request(
            "GET", path, headers=signedHeaders(aliceId, answer["Secret"], path)
        )
        self.assertEqual(
            (status, body),
            (
                200,
                {
                    "UserIDs": {"ALICE": aliceId, "bob": bobId},
                    "Errors": {"nobody": "User not found"},
                },
            ),
        )

    @inlineCallbacks
    def test_restartKeepsSessions(self):
        """
        Restarting the daemon logs nobody out.
        """
        first = self.daemon()
        userId = yield self.register(first, "carol")
        answer = yield self.login(first, "carol")
        yield first.stop()
        second = self.daemon()
        status, body, _ = yield self.checkHeaders(
            second, userId, answer["Secret"], "/backend/after-restart"
        )
        self.assertEqual((status, body), (200, {"UserID": userId}))
        again = yield self.login(second, "carol")
        self.assertEqual((again["UserID"], again["Secret"]), (userId, answer["Secret"]))

    @inlineCallbacks
    def test_concurrentRegistrationsOfOneNameGiveOne409(self):
        """
        Two people racing for one name: one gets it, the other a clear 409.
        """
        daemon = self.daemon()
        body = {"User": "dave", "Password": PASSWORD, "Email": "dave@example.com"}
        other = {"User": "DAVE", "Password": PASSWORD + "!", "Email": "other@example.com"}
        answers = yield gatherResults([daemon.post("/users", body), daemon.post("/users", other)])
        statuses = sorted(status for status, _, _ in answers)
        self.assertEqual(statuses, [200, 409], answers)
        conflict = next(answer for status, answer, _ in answers if status == 409)
        self.assertEqual(list(conflict), ["Error"])
        winner = next(answer for status, answer, _ in answers if status == 200)
        # Exactly one user exists, and it is the winner's.
        winnerBody = body if answers[0][0] == 200 else other
        status, answer, _ = yield daemon.post(
            "/login", {"User": "dave", "Password": winnerBody["Password"]}
        )
        self.assertEqual((status, answer["UserID"]), (200, winner["UserID"]))

    @inlineCallbacks
    def test_databaseOutageIs503ThenRecovers(self):
        """
        While MariaDB is down requests get a quick 503; once back, everything works.
        """
        self.ignoreBrokenConnectionLogs()
        daemon = self.daemon()
        userId = yield self.register(daemon, "erin")
        before = yield self.login(daemon, "erin")
        # Touch several of the pool's connections, so that more than one
        # goes stale during the outage.
        yield gatherResults(
            [daemon.post("/login", {"User": f"nobody{i}", "Password": "x" * 8}) for i in range(8)]
        )

        self.server.stop()
        for path, body in [
            ("/login", {"User": "erin", "Password": PASSWORD}),
            ("/users", {"User": "frank", "Password": PASSWORD, "Email": "frank@example.com"}),
            ("/login", {"User": "erin", "Password": PASSWORD}),
        ]:
            status, answer, _ = yield daemon.post(path, body)
            self.assertEqual(status, 503, (path, answer))
            self.assertEqual(list(answer), ["Error"])
            self.assertIsInstance(answer["Error"], str)

        self.server.start()
        status, answer, _ = yield self.retry(
            lambda: daemon.post("/login", {"User": "erin", "Password": PASSWORD}),
            lambda result: result[0] != 503,
        )
        self.assertEqual(status, 200, f"no login after MariaDB came back: {answer!r}")
        self.assertEqual(answer["UserID"], userId)
        self.assertEqual(answer["Secret"], before["Secret"])
        newUser = yield self.retry(
            lambda: daemon.post(
                "/users", {"User": "frank", "Password": PASSWORD, "Email": "frank@example.com"}
            ),
            lambda result: result[0] != 503,
        )
        self.assertEqual(newUser[0], 200, newUser[1])

    @inlineCallbacks
    def test_dataOutlivesAnOutage(self):
        """
        Users and sessions written before MariaDB restarted are there after it.
        """
        first = self.daemon()
        userId = yield self.register(first, "grace")
        answer = yield self.login(first, "grace")
        yield first.stop()
        self.server.stop()
        self.server.start()
        # A new daemon has no cached session: the secret comes from the database.
        second = self.daemon()
        status, body, _ = yield self.checkHeaders(
            second, userId, answer["Secret"], "/backend/after-outage"
        )
        self.assertEqual((status, body), (200, {"UserID": userId}))

    @inlineCallbacks
    def test_idleConnectionsDroppedByMariaDBGoUnnoticed(self):
        """
        The morning after a quiet night (wait_timeout), the first logins do not get 503.
        """
        self.ignoreBrokenConnectionLogs()
        daemon = self.daemon()
        userId = yield self.register(daemon, "heidi")
        yield self.login(daemon, "heidi")
        self.assertGreater(closeConnectionsTo(self.name), 0)
        answers = []
        for _ in range(10):
            status, answer, _ = yield daemon.post("/login", {"User": "heidi", "Password": PASSWORD})
            answers.append((status, answer.get("UserID")))
        self.assertEqual(answers, [(200, userId)] * 10)


class UnreachableAtStartTests(TestCase):
    """
    C{twistd socktopus} with a MySQL database it cannot use.
    """

    timeout = 60

    @inlineCallbacks
    def assertOneLine(self, url: str, *expected: bytes):
        process = run(
            self,
            TWISTD,
            "-n",
            "--pidfile=",
            "socktopus",
            "--listen",
            "tcp:0:interface=127.0.0.1",
            "--database",
            url,
        )
        status = yield process.ended
        self.assertNotEqual(status, 0)
        lines = process.errors.strip().splitlines()
        self.assertEqual(len(lines), 1, process.errors.decode() + process.output.decode())
        for text in expected:
            self.assertIn(text, lines[0])
        self.assertNotIn(b"Traceback", process.output + process.errors)
        return lines[0]

    @inlineCallbacks
    def test_closedPortIsOneLine(self):
        """
        A MySQL server that is not running is one line naming it, not a traceback.
        """
        port = closedPort()
        yield self.assertOneLine(
            f"mysql://socktopus:secret@127.0.0.1:{port}/accounts",
            b"accounts",
            f"127.0.0.1:{port}".encode(),
        )

    @inlineCallbacks
    def test_wrongPasswordIsOneLine(self):
        """
        A wrong MySQL password is one line saying access was denied, without the password.
        """
        db = server()
        name = db.createDatabase()
        self.addCleanup(db.dropDatabase, name)
        url = f"mysql://{quote(db.user)}:wrong-password@127.0.0.1:{db.port}/{name}"
        line = yield self.assertOneLine(url, name.encode(), b"Access denied")
        self.assertNotIn(b"wrong-password", line)
