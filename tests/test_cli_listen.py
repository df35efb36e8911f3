"""
C{socktopus listen}: the real command as a child process, connected to the
real daemon on a free port, shown real C{/send}s and C{/kick}s; and the
SDK's L{socktopus_tw.client.connect} it is made of, in this process.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

from twisted.internet import reactor
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from socktopus_tw.client import Closed, Reconnecting, Unauthorized, connect, make_token
from tests.support.daemon import APP, SECRET, Daemon
from tests.support.process import SOCKTOPUS, Process, run

ID = "user-42"
#: Seconds anything here may take, a child's Python and Twisted imports included.
PROMPTLY = 15.0


async def eventually(condition: Callable[[], bool], what: str) -> None:
    """
    Poll C{condition} until it holds; fail after L{PROMPTLY} seconds.
    """
    deadline = time.monotonic() + PROMPTLY
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {PROMPTLY} s: {what}")
        await deferLater(reactor, 0.01)


def refusingPort(testCase: TestCase) -> int:
    """
    A port of 127.0.0.1 that refuses connections for the test's length:
    bound, so nobody else takes it, and not listening.
    """
    holder = socket.socket()
    testCase.addCleanup(holder.close)
    holder.bind(("127.0.0.1", 0))
    return holder.getsockname()[1]


class ListenCommandTests(TestCase):
    """
    C{socktopus listen [--url URL] APP SECRET CONNECTION_ID} against a daemon.
    """

    timeout = 60

    def setUp(self) -> None:
        self.daemon = Daemon(self)

    def listen(self, *arguments: str) -> Process:
        """
        Start C{socktopus listen --url DAEMON ARGUMENTS} (by default as
        L{ID} of the test app).
        """
        return run(
            self, SOCKTOPUS, "listen", "--url", self.daemon.url, *(arguments or (APP, SECRET, ID))
        )

    async def connected(self, process: Process, times: int = 1) -> None:
        """
        Wait until C{process} said it connected C{times} times and the
        daemon holds its connection.
        """
        await eventually(
            lambda: process.errors.count(b"socktopus: connected to ") >= times,
            f"connected {times} times: {process.errors!r}",
        )
        await eventually(lambda: self.daemon.registry.connection(APP, ID) is not None, "registered")

    def assertClean(self, process: Process) -> list[str]:
        """
        No traceback anywhere; every stderr line is one of ours. Return them.
        """
        self.assertNotIn(b"Traceback", process.output + process.errors)
        lines = process.errors.decode().splitlines()
        for line in lines:
            self.assertTrue(line.startswith("socktopus: "), lines)
        return lines

    async def test_printsEachMessage(self) -> None:
        """
        A /send to the listener's id succeeds, and each message's content is
        one line of its stdout, in order: line breaks in a message escaped,
        other text as it came.
        """
        process = self.listen()
        await self.connected(process)
        [line] = self.assertClean(process)
        self.assertIn(f"ws://127.0.0.1:{self.daemon.port}/recieve as {APP}/{ID}", line)
        contents = ["hello", "two\nlines", "ünïcødé 🐙 \\ {}", "last"]
        messages = [{"recipient": ID, "content": c} for c in contents]
        status, answer, _ = await self.daemon.send(messages)
        self.assertEqual(status, 200)
        self.assertEqual([m["content"] for m in answer["succeeded"]], contents)
        await process.waitFor(b"last\n")
        self.assertEqual(
            process.output.decode("utf-8"), "hello\ntwo\\nlines\nünïcødé 🐙 \\ {}\nlast\n"
        )

    async def test_kickedExitsZero(self) -> None:
        """
        A /kick answers kicked; the listener says so on stderr and exits 0.
        """
        process = self.listen()
        await self.connected(process)
        status, answer, _ = await self.daemon.kick([ID])
        self.assertEqual((status, answer), (200, {"kicked": [ID], "notConnected": []}))
        self.assertEqual(await process.ended, 0)
        lines = self.assertClean(process)
        self.assertEqual(len(lines), 2, lines)
        self.assertTrue(lines[1].startswith("socktopus: kicked: the daemon sent CLOSE"), lines)
        self.assertEqual(process.output, b"")

    async def test_replacedExitsZero(self) -> None:
        """
        A newer connection with the same id replaces the listener, which
        stops instead of taking the id back.
        """
        process = self.listen("--url", self.daemon.wsUrl, APP, SECRET, ID)
        await self.connected(process)
        first = self.daemon.registry.connection(APP, ID)
        newer = await self.daemon.connect(ID)
        self.assertEqual(await process.ended, 0)
        self.assertIn("socktopus: kicked: ", self.assertClean(process)[-1])
        self.assertIsNot(self.daemon.registry.connection(APP, ID), first)
        newer.dropConnection(abort=True)

    async def test_reconnectsAfterDrop(self) -> None:
        """
        A connection dropped without CLOSE is reopened, and messages reach
        the new one.
        """
        process = self.listen()
        await self.connected(process)
        first = self.daemon.registry.connection(APP, ID)
        first.transport.abortConnection()
        await self.connected(process, times=2)
        self.assertIsNot(self.daemon.registry.connection(APP, ID), first)
        lines = self.assertClean(process)
        self.assertTrue(lines[1].startswith("socktopus: disconnected (close code 1006)"), lines)
        status, answer, _ = await self.daemon.send([{"recipient": ID, "content": "again"}])
        self.assertEqual(answer["failed"], [])
        await process.waitFor(b"^again\n")

    async def assertRefused(self, process: Process) -> str:
        """
        C{process} exits 1 with one line on stderr and nothing on stdout;
        return the line.
        """
        self.assertEqual(await process.ended, 1, process.errors)
        lines = self.assertClean(process)
        self.assertEqual(len(lines), 1, lines)
        self.assertEqual(process.output, b"")
        return lines[0]

    async def test_badSecret(self) -> None:
        """
        A wrong secret: the daemon's 401 and its reason, and what to check.
        """
        line = await self.assertRefused(self.listen(APP, SECRET + "x", ID))
        self.assertIn("refused", line)
        self.assertIn("401 Invalid signature", line)
        self.assertIn(f"{APP.upper()}_SOCKTOPUS_SECRET", line)
        self.assertNotIn(SECRET, line)

    async def test_unknownApp(self) -> None:
        """
        An app the daemon does not have: its 404 and the variable that adds it.
        """
        line = await self.assertRefused(self.listen("nope", SECRET, ID))
        self.assertIn("404 Secret not found", line)
        self.assertIn("NOPE_SOCKTOPUS_SECRET", line)

    async def test_notReachable(self) -> None:
        """
        No daemon at the URL: one line saying so, at once, status 1.
        """
        port = refusingPort(self)
        process = run(
            self, SOCKTOPUS, "listen", "--url", f"http://127.0.0.1:{port}", APP, SECRET, ID
        )
        line = await self.assertRefused(process)
        self.assertIn(f"cannot connect to ws://127.0.0.1:{port}/recieve: connection refused", line)

    async def test_argumentErrors(self) -> None:
        """
        A bad APP, an empty id or a URL that is not one: status 2 and one
        line, before connecting to anything.
        """
        for arguments, word in [
            (["my-app", SECRET, ID], "APP"),
            ([APP, SECRET, ""], "CONNECTION_ID"),
            (["--url", "localhost:8080", APP, SECRET, ID], "--url"),
            ([APP, SECRET], "socktopus"),
        ]:
            process = run(self, SOCKTOPUS, "listen", *arguments)
            self.assertEqual(await process.ended, 2, (arguments, process.errors))
            [line] = self.assertClean(process)
            self.assertIn(word, line)
        self.assertEqual(self.daemon.registry.count(), 0)

    async def assertStopsOn(self, signal: str) -> None:
        process = self.listen()
        await self.connected(process)
        process.transport.signalProcess(signal)
        self.assertEqual(await process.ended, 0, process.errors)
        self.assertEqual(self.assertClean(process)[-1], "socktopus: stopped; disconnecting")
        # It said goodbye: the daemon does not wait for a timeout to forget it.
        await eventually(lambda: self.daemon.registry.count(APP) == 0, "unregistered")

    async def test_sigint(self) -> None:
        """
        Ctrl-C: a clean close, status 0, no traceback.
        """
        await self.assertStopsOn("INT")

    async def test_sigterm(self) -> None:
        """
        SIGTERM: the same.
        """
        await self.assertStopsOn("TERM")


class ConnectTests(TestCase):
    """
    L{connect}, the SDK's reconnecting client the command runs, in this
    process against the daemon.
    """

    timeout = 30

    def setUp(self) -> None:
        self.daemon = Daemon(self)
        self.received: list[str] = []
        self.events: list[Reconnecting] = []
        self.tokens: list[str] = []

    def connect(self, secret: str = SECRET, **options: object):
        def token() -> str:
            self.tokens.append(make_token(APP, secret, ID))
            return self.tokens[-1]

        connection = connect(
            self.daemon.url,
            token,
            self.received.append,
            on_reconnecting=self.events.append,
            **options,
        )
        self.addCleanup(connection.close)
        return connection

    async def test_freshTokenForEachConnection(self) -> None:
        """
        After a drop, the connection is reopened with a new token, not the
        first one again (which may have expired).
        """
        connection = self.connect()
        await eventually(lambda: connection.connected, "connected")
        self.daemon.registry.connection(APP, ID).transport.abortConnection()
        await eventually(lambda: len(self.events) == 1 and connection.connected, "reconnected")
        self.assertEqual((self.events[0].error, self.events[0].code), (None, 1006))
        self.assertEqual(len(set(self.tokens)), 2, self.tokens)
        await self.daemon.send([{"recipient": ID, "content": "hi"}])
        await eventually(lambda: self.received == ["hi"], "received")

    async def test_refusalIsTheDaemonsError(self) -> None:
        """
        A refused upgrade is reported as the daemon's answer: L{Unauthorized}
        with its message, not Autobahn's "upgrade failed".
        """
        connection = self.connect(secret="wrong", max_attempts=1)
        closed = await connection.when_closed()
        self.assertEqual(closed.reason, "failed")
        self.assertIsInstance(closed.error, Unauthorized)
        self.assertEqual((closed.error.status, closed.error.message), (401, "Invalid signature"))

    async def test_notListening(self) -> None:
        """
        A port nobody listens on: Twisted's connection refused, and another try.
        """
        port = refusingPort(self)
        connection = connect(
            f"ws://127.0.0.1:{port}",
            lambda: make_token(APP, SECRET, ID),
            self.received.append,
            on_reconnecting=self.events.append,
        )
        await eventually(lambda: len(self.events) == 1, "a failed attempt")
        self.assertIsInstance(self.events[0].error, ConnectionRefusedError)
        self.assertEqual(await connection.close(), Closed("closed", None))

    async def test_kickAndClose(self) -> None:
        """
        CLOSE from the daemon ends the connection for good ("kicked"); so
        does close() ("closed"), with a clean close the daemon sees at once.
        """
        connection = self.connect()
        await eventually(lambda: connection.connected, "connected")
        await self.daemon.kick([ID])
        self.assertEqual(await connection.when_closed(), Closed("kicked", 1000))
        self.assertEqual(self.events, [])

        other = self.connect()
        await eventually(lambda: other.connected, "connected")
        closed = await other.close()
        self.assertEqual(closed.reason, "closed")
        await eventually(lambda: self.daemon.registry.count(APP) == 0, "unregistered")
