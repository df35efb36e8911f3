"""
C{--log-level} with twistd's own observers, which the daemon keeps in daemon
mode and with C{--logfile} (and C{--syslog}): no line below the level.

Each start below ends on a port another socket holds, after twistd and the
first listener have logged their info lines: the log is complete when the
process has exited, with nothing to wait for.
"""

from __future__ import annotations

import os
import socket

from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase

from tests.support.daemon import APP, SECRET
from tests.support.process import TWISTD, run


class LogLevelWithTwistdsObserverTests(TestCase):
    """
    C{--log-level warn} keeps info lines out of the log wherever it is
    written, not only where the daemon's own observer writes it.
    """

    timeout = 60

    def busyPort(self) -> int:
        holder = socket.socket()
        self.addCleanup(holder.close)
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        return holder.getsockname()[1]

    @inlineCallbacks
    def startThatFails(self, *twistdOptions: str) -> bytes:
        """
        Start the daemon with C{twistdOptions} and C{--log-level warn}: one
        listener starts, the second finds its port taken. The log file's
        bytes once twistd has exited.
        """
        path = os.path.abspath(self.mktemp())
        os.makedirs(path)
        process = run(
            self,
            TWISTD,
            *twistdOptions,
            "--pidfile=",
            "socktopus",
            "--listen",
            "tcp:0:interface=127.0.0.1",
            "--listen",
            f"tcp:{self.busyPort()}:interface=127.0.0.1",
            "--log-level",
            "warn",
            env={f"{APP.upper()}_SOCKTOPUS_SECRET": SECRET},
            path=path,
        )
        self.assertEqual((yield process.ended), 1, process.errors)
        self.assertIn(b"already in use", process.errors)
        name = "daemon.log" if "--logfile=daemon.log" in twistdOptions else "twistd.log"
        with open(os.path.join(path, name), "rb") as f:
            return f.read()

    @inlineCallbacks
    def test_foregroundWithLogfileWritesNoLineBelowTheLevel(self):
        log = yield self.startThatFails("-n", "--logfile=daemon.log")
        self.assertNotIn(b"#info]", log)

    @inlineCallbacks
    def test_daemonModeWritesNoLineBelowTheLevel(self):
        log = yield self.startThatFails()
        self.assertIn(b"#critical] cannot listen on", log)
        self.assertNotIn(b"#info]", log)
