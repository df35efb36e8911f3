"""
What a new user meets first (issue 12): a start that fails, in daemon mode
too, says why and leaves nothing behind; the endpoint mistake everyone makes
is answered with the fix; every C{--version} is Socktopus'; a kick's log
line says what happened; the package ships its licence, its type marker and
its changelog. The daemon and the commands run as real processes.
"""

from __future__ import annotations

import os
import re
import select
import signal
import socket
import sys
import time

from setuptools.config.setupcfg import read_configuration
from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver
from twisted.internet.threads import deferToThread
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase, TestCase

import socktopus_tw
from socktopus_tw.relay.registry import LocalRegistry
from socktopus_tw.relay.tokens import parseToken
from tests.support.daemon import APP, SECRET
from tests.support.fakes import FakeConnection
from tests.support.process import ROOT, SOCKTOPUS, TWISTD, run

ENVIRONMENT = {f"{APP.upper()}_SOCKTOPUS_SECRET": SECRET}
VERSION_LINE = f"socktopus {socktopus_tw.__version__}\n".encode()
#: Seconds a failed start may take, Python's and Twisted's imports included.
PROMPTLY = 10.0


def heldPort(testCase: TestCase) -> int:
    """
    A port of 127.0.0.1 another program listens on, for the test's length.
    """
    holder = socket.socket()
    testCase.addCleanup(holder.close)
    holder.bind(("127.0.0.1", 0))
    holder.listen(1)
    return holder.getsockname()[1]


def directory(testCase: TestCase) -> str:
    path = os.path.abspath(testCase.mktemp())
    os.makedirs(path)
    return path


class DaemonModeTests(TestCase):
    """
    C{twistd socktopus} without C{-n}: twistd forks, and the services start
    in a child whose stderr is C{/dev/null}.
    """

    # A start that hangs fails here, not after the suite's default two minutes.
    timeout = 30

    def daemonise(self, path: str, *arguments: str):
        """
        Start twistd in daemon mode in C{path}, its pidfile and log there.
        """
        process = run(
            self,
            TWISTD,
            "--pidfile",
            os.path.join(path, "twistd.pid"),
            "--logfile",
            os.path.join(path, "twistd.log"),
            "socktopus",
            *arguments,
            env=ENVIRONMENT,
            path=path,
        )
        return process, time.monotonic()

    def readLog(self, path: str) -> str:
        with open(os.path.join(path, "twistd.log")) as f:
            return f.read()

    async def test_portInUseEndsTheStartAtOnce(self) -> None:
        """
        A port another program holds: twistd exits non-zero within seconds,
        the reason is on the terminal and in the log, and neither a pidfile
        nor a database is left behind.
        """
        port = heldPort(self)
        path = directory(self)
        process, started = self.daemonise(path, "--listen", f"tcp:{port}:interface=127.0.0.1")
        status = await process.ended
        self.assertLess(time.monotonic() - started, PROMPTLY)
        self.assertEqual(status, 1)
        lines = process.errors.decode().splitlines()
        self.assertTrue(lines, "nothing on stderr")
        self.assertTrue(lines[0].startswith(f"socktopus: cannot listen on tcp:{port}"), lines)
        self.assertIn("already in use", lines[0])
        self.assertIn(lines[0].removeprefix("socktopus: "), self.readLog(path))
        self.assertNotIn("Traceback", process.errors.decode() + self.readLog(path))
        self.assertEqual(sorted(os.listdir(path)), ["twistd.log"])

    async def test_badOptionEndsTheStartAtOnce(self) -> None:
        """
        A mistake in the options, in daemon mode: one line, exit status 2,
        nothing written but twistd's log.
        """
        path = directory(self)
        process, started = self.daemonise(path, "--listen", "tcp:99999")
        self.assertEqual(await process.ended, 2)
        self.assertLess(time.monotonic() - started, PROMPTLY)
        self.assertEqual(process.errors.count(b"\n"), 1, process.errors)
        self.assertIn(b"65535", process.errors)
        self.assertNotIn("twistd.pid", os.listdir(path))
        self.assertNotIn("socktopus.sqlite3", os.listdir(path))

    async def test_startedDaemonLetsGoOfTheTerminal(self) -> None:
        """
        A good start: twistd exits 0 and closes its output (nothing holds the
        caller's stderr, so a shell's C{$(...)} returns); the daemon serves,
        and stops on SIGTERM, removing its pidfile.
        """
        path = directory(self)
        process, _ = self.daemonise(path, "--listen", "tcp:0:interface=127.0.0.1")
        self.assertEqual(await process.ended, 0)
        self.assertEqual(process.errors, b"")
        with open(os.path.join(path, "twistd.pid")) as f:
            pid = int(f.read())
        exited = os.pidfd_open(pid)
        self.addCleanup(os.close, exited)

        def killIfRunning() -> None:
            if not select.select([exited], [], [], 0)[0]:
                os.kill(pid, signal.SIGKILL)

        self.addCleanup(killIfRunning)
        match = re.search(r"Listening on 127\.0\.0\.1:(\d+)", self.readLog(path))
        self.assertIsNotNone(match, self.readLog(path))
        with socket.create_connection(("127.0.0.1", int(match.group(1))), timeout=5) as client:
            client.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            self.assertTrue(client.recv(100).startswith(b"HTTP/1.1 200"))
        os.kill(pid, signal.SIGTERM)
        ready, _, _ = await deferToThread(select.select, [exited], [], [], PROMPTLY)
        self.assertEqual(ready, [exited], "the daemon did not stop")
        self.assertNotIn("twistd.pid", os.listdir(path))


class FailedStartTests(TestCase):
    """
    C{twistd -n socktopus} that cannot start: nothing left behind.
    """

    timeout = 30

    async def failedStart(self, *arguments: str, status: int) -> tuple[str, list[str]]:
        """
        Run C{twistd -n} with a pidfile in a fresh directory; return its
        one line on stderr and what the directory holds afterwards.
        """
        path = directory(self)
        process = run(
            self,
            TWISTD,
            "-n",
            "--pidfile",
            os.path.join(path, "twistd.pid"),
            "socktopus",
            *arguments,
            env=ENVIRONMENT,
            path=path,
        )
        self.assertEqual(await process.ended, status, process.errors)
        lines = process.errors.decode().splitlines()
        self.assertEqual(len(lines), 1, process.errors.decode() + process.output.decode())
        self.assertNotIn(b"Traceback", process.output + process.errors)
        return lines[0], sorted(os.listdir(path))

    async def test_portOutOfRange(self) -> None:
        """
        tcp:99999 is refused as an option, before a database is created or
        migrated, with the range of ports.
        """
        line, left = await self.failedStart("--listen", "tcp:99999", status=2)
        self.assertIn("tcp:99999", line)
        self.assertIn("0 to 65535", line)
        self.assertEqual(left, [])

    async def test_portInUse(self) -> None:
        """
        A port in use ends the start before the database is touched and takes
        back the pidfile and the SQLite file the option check made: the next
        start finds no stale pidfile.
        """
        port = heldPort(self)
        line, left = await self.failedStart("--listen", f"tcp:{port}:interface=127.0.0.1", status=1)
        self.assertIn(f"tcp:{port}", line)
        self.assertIn("already in use", line)
        self.assertEqual(left, [])

    async def test_existingDatabaseIsKept(self) -> None:
        """
        A failed start removes only what it created: an existing database stays.
        """
        port = heldPort(self)
        path = directory(self)
        database = os.path.join(path, "kept.sqlite3")
        with open(database, "wb"):
            pass
        process = run(
            self,
            TWISTD,
            "-n",
            "--pidfile=",
            "socktopus",
            "--database",
            "sqlite:" + database,
            "--listen",
            f"tcp:{port}:interface=127.0.0.1",
            env=ENVIRONMENT,
            path=path,
        )
        self.assertEqual(await process.ended, 1)
        self.assertTrue(os.path.exists(database))


class ListenMistakeTests(TestCase):
    """
    C{--listen HOST:PORT}, written as other programs take it.
    """

    timeout = 30

    async def assertAnswer(self, description: str, fix: str) -> None:
        process = run(self, TWISTD, "-n", "--pidfile=", "socktopus", "--listen", description)
        self.assertEqual(await process.ended, 2)
        line = process.errors.decode()
        self.assertEqual(line.count("\n"), 1, line)
        self.assertIn(f"use {fix}", line)
        self.assertNotIn("invalid literal", line)

    async def test_hostBeforePort(self) -> None:
        """
        tcp:127.0.0.1:8093 is answered with the endpoint meant.
        """
        await self.assertAnswer("tcp:127.0.0.1:8093", "tcp:8093:interface=127.0.0.1")

    async def test_ipv6HostBeforePort(self) -> None:
        """
        tcp:[::1]:8093 is answered with the IPv6 endpoint and its escaped colons.
        """
        await self.assertAnswer("tcp:[::1]:8093", "tcp6:8093:interface=\\:\\:1")


class VersionAndHelpTests(TestCase):
    """
    C{--version} of every command prints Socktopus' version; the console
    command names itself and also runs as C{python -m socktopus_tw}.
    """

    timeout = 60

    async def assertVersion(self, *command: str) -> None:
        process = run(self, *command)
        self.assertEqual(await process.ended, 0, process.errors)
        self.assertEqual(process.output, VERSION_LINE)

    async def test_commandVersion(self) -> None:
        """
        socktopus --version prints "socktopus 0.1.0".
        """
        await self.assertVersion(SOCKTOPUS, "--version")

    async def test_moduleVersion(self) -> None:
        """
        python -m socktopus_tw --version prints the same.
        """
        await self.assertVersion(sys.executable, "-m", "socktopus_tw", "--version")

    async def test_pluginVersion(self) -> None:
        """
        twistd socktopus --version, with or without -n, prints the same.
        """
        await self.assertVersion(TWISTD, "-n", "socktopus", "--version")
        await self.assertVersion(TWISTD, "--pidfile=", "socktopus", "--version")

    async def test_helpNamesTheProgram(self) -> None:
        """
        socktopus --help starts with a usage line naming the command, and a
        command's help with its own.
        """
        process = run(self, SOCKTOPUS, "--help")
        self.assertEqual(await process.ended, 0)
        self.assertTrue(process.output.startswith(b"Usage: socktopus "), process.output)
        token = run(self, SOCKTOPUS, "token", "--help")
        self.assertEqual(await token.ended, 0)
        self.assertTrue(
            token.output.startswith(b"Usage: socktopus token APP SECRET CONNECTION_ID\n"),
            token.output,
        )

    async def test_moduleIsTheCommand(self) -> None:
        """
        python -m socktopus_tw token prints a token, as socktopus token does.
        """
        process = run(self, sys.executable, "-m", "socktopus_tw", "token", APP, SECRET, "c1")
        self.assertEqual(await process.ended, 0, process.errors)
        self.assertEqual(parseToken(process.output.strip().decode()).connectionId, "c1")
        mistake = run(self, sys.executable, "-m", "socktopus_tw", "token", "my-app", SECRET, "c1")
        self.assertEqual(await mistake.ended, 2)
        self.assertTrue(mistake.errors.startswith(b"socktopus: APP must be"), mistake.errors)


class KickLogTests(SynchronousTestCase):
    """
    The line a kick logs says who was kicked and who was not connected, and
    client-given ids cannot forge or flood it.
    """

    def setUp(self) -> None:
        self.registry = LocalRegistry(Clock())
        self.events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)

    def kickLine(self, connectionIds: list[str]) -> str:
        self.registry.kick("demo", connectionIds)
        lines = [formatEvent(e) for e in self.events if "kick" in e.get("log_format", "").lower()]
        self.assertEqual(len(lines), 1, lines)
        return lines[0]

    def test_nothingKicked(self) -> None:
        """
        A kick of an id that is not connected says nobody was kicked.
        """
        self.assertEqual(self.kickLine(["js-1"]), "Kick for demo: kicked none; not connected: js-1")

    def test_someKicked(self) -> None:
        """
        Connected and not connected ids are listed apart, with their counts as fields.
        """
        for connectionId in ["c1", "c2"]:
            self.registry.register(FakeConnection(self.registry, "demo", connectionId))
        self.assertEqual(
            self.kickLine(["c1", "c2", "gone"]),
            "Kick for demo: kicked c1, c2; not connected: gone",
        )
        self.assertEqual(
            (self.events[-1]["kickedCount"], self.events[-1]["notConnectedCount"]), (2, 1)
        )

    def test_idsAreEscapedAndCut(self) -> None:
        """
        An id with a newline or a comma is quoted with escapes, a long one is
        cut, and past ten ids the line counts the rest.
        """
        forged = "x\n2026-01-01T00:00:00+0000 [admin] secret rotated"
        line = self.kickLine([forged, "a,b", "y" * 256, *[f"id{n}" for n in range(20)]])
        self.assertNotIn("\n", line)
        self.assertIn(repr(forged), line)
        self.assertIn("'a,b'", line)
        self.assertIn("y" * 64 + "...", line)
        self.assertNotIn("y" * 65, line)
        self.assertTrue(line.endswith("and 13 more"), line)


class PackagingTests(SynchronousTestCase):
    """
    The package carries its licence, its type marker and its changelog,
    and its version lives in one place.
    """

    def read(self, *parts: str) -> str:
        with open(os.path.join(ROOT, *parts), encoding="utf-8") as f:
            return f.read()

    def test_license(self) -> None:
        """
        LICENSE is the MIT licence setup.cfg names, with the copyright line.
        """
        text = self.read("LICENSE")
        self.assertTrue(text.startswith("MIT License\n"), text[:40])
        self.assertIn("Copyright (c) 2026 the Socktopus developers", text)
        self.assertIn('THE SOFTWARE IS PROVIDED "AS IS"', text)
        metadata = read_configuration(os.path.join(ROOT, "setup.cfg"))["metadata"]
        self.assertEqual(metadata["license"], "MIT")
        self.assertIn("LICENSE", metadata["license_files"])

    def test_typed(self) -> None:
        """
        py.typed is in the package and installed with it as package data.
        """
        self.assertTrue(os.path.isfile(os.path.join(ROOT, "socktopus_tw", "py.typed")))
        options = read_configuration(os.path.join(ROOT, "setup.cfg"))["options"]
        self.assertIn("py.typed", options["package_data"]["socktopus_tw"])

    def test_versionInOnePlace(self) -> None:
        """
        setup.cfg reads socktopus_tw.__version__, no module of the package
        spells the version out again, and the changelog has it.
        """
        metadata = read_configuration(os.path.join(ROOT, "setup.cfg"))["metadata"]
        self.assertEqual(metadata["version"], socktopus_tw.__version__)
        self.assertIn("attr: socktopus_tw.__version__", self.read("setup.cfg"))
        package = os.path.join(ROOT, "socktopus_tw")
        spelled = []
        for folder, _, files in os.walk(package):
            for name in files:
                path = os.path.join(folder, name)
                if name.endswith(".py") and path != os.path.join(package, "__init__.py"):
                    with open(path, encoding="utf-8") as f:
                        if f'"{socktopus_tw.__version__}"' in f.read():
                            spelled.append(os.path.relpath(path, ROOT))
        self.assertEqual(spelled, [])

    def test_changelog(self) -> None:
        """
        CHANGELOG.md has an Unreleased section above the current version's.
        """
        text = self.read("CHANGELOG.md")
        unreleased = text.index("## Unreleased")
        released = text.index(f"## {socktopus_tw.__version__}")
        self.assertLess(unreleased, released)
