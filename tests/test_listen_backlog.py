"""
The listening backlog the daemon asks for (L{socktopus_tw.tap.withBacklog}):
4,096 unless the endpoint gives one, by name or by position, whatever the
case of its kind.
"""

from __future__ import annotations

import os

import treq
from twisted.internet.defer import inlineCallbacks
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase, TestCase

from socktopus_tw.tap import SocktopusOptions, makeService
from tests.support.daemon import APP, SECRET
from tests.support.process import TWISTD, run


class ListenBacklogTests(SynchronousTestCase):
    """
    L{withBacklog} adds C{backlog=4096} to endpoints that name none; one
    that names its backlog keeps it, and every endpoint the option checks
    accept still listens.
    """

    def setUp(self) -> None:
        self.directory = os.path.abspath(self.mktemp())
        os.makedirs(self.directory)
        self.addCleanup(os.chdir, os.getcwd())
        os.chdir(self.directory)

    def service(self, description: str):
        options = SocktopusOptions(environ={"DEMO_SOCKTOPUS_SECRET": "s"})
        options.parseOptions(
            [
                "--database",
                "sqlite:" + os.path.join(self.directory, "data.sqlite3"),
                "--listen",
                description,
            ]
        )
        fake = MemoryReactorClock()
        return makeService(options, fake), fake

    def listener(self, service):
        return next(child for child in service if child.name.startswith("listen 0 "))

    def test_positionalBacklogIsKept(self) -> None:
        """
        Twisted's endpoint strings take the backlog positionally too
        (tcp:PORT:INTERFACE:BACKLOG, tcp6:PORT:BACKLOG,
        unix:PATH:MODE:BACKLOG); the option checks accept them, and they
        listened with that backlog before.
        """
        socketPath = os.path.join(self.directory, "s.sock")
        for description in ("tcp:0:127.0.0.1:64", "tcp6:0:64", f"unix:{socketPath}:600:64"):
            service, fake = self.service(description)
            service.privilegedStartService()
            [server] = fake.tcpServers or fake.unixServers
            self.assertIn(64, server, description)

    def test_endpointKindInAnyCaseGetsTheBacklog(self) -> None:
        """
        Twisted finds plugin endpoints (tcp6:, reuseport:) whatever the
        case of their prefix; they get the 4,096 like the lower-case ones.
        """
        for description in (r"TCP6:0:interface=\:\:1", "REUSEPORT:0:interface=127.0.0.1"):
            service, _ = self.service(description)
            self.assertEqual(self.listener(service).endpoint._backlog, 4096, description)


class PositionalBacklogProcessTests(TestCase):
    """
    C{twistd -n socktopus} with a backlog given positionally starts, as it
    did before: not a TypeError traceback after the option checks passed.
    """

    timeout = 60

    @inlineCallbacks
    def test_positionalBacklogDaemonListens(self):
        process = run(
            self,
            TWISTD,
            "-n",
            "--pidfile=",
            "socktopus",
            "--listen",
            "tcp:0:127.0.0.1:64",
            env={f"{APP.upper()}_SOCKTOPUS_SECRET": SECRET},
        )
        try:
            match = yield process.waitFor(rb"Listening on 127\.0\.0\.1:(\d+)")
        except AssertionError:
            yield process.ended  # its exit status is in, then the failure stands
            raise
        # Served (so the reactor runs, and SIGTERM is the daemon's).
        response = yield treq.get(
            f"http://127.0.0.1:{int(match.group(1))}/health", persistent=False
        )
        yield response.content()
        self.assertEqual(response.code, 200)
        process.transport.signalProcess("TERM")
        self.assertEqual((yield process.ended), 0)
        self.assertNotIn(b"Traceback", process.output + process.errors)
