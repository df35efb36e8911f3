"""
Child processes for the tests that run the daemon as users do: C{twistd} and
the C{socktopus} command of this virtualenv, started in a fresh directory
with only the environment given, their output collected.
"""

from __future__ import annotations

import os
import re
import sys

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.protocol import ProcessProtocol
from twisted.trial.unittest import TestCase

#: The checkout the tests run from: where setup.cfg, the deployment files
#: (systemd/, nginx.conf) and the JavaScript SDK (sdk/js) are.
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.path.dirname(sys.executable)
TWISTD = os.path.join(BIN, "twistd")
SOCKTOPUS = os.path.join(BIN, "socktopus")


class Process(ProcessProtocol):
    """
    A child process whose output is collected; tests wait for a pattern in
    its output or for its exit status.
    """

    def __init__(self) -> None:
        self.output = b""
        self.errors = b""
        self.ended: Deferred[int] = Deferred()
        self._patterns: list[tuple[re.Pattern[bytes], Deferred[re.Match[bytes]]]] = []

    def outReceived(self, data: bytes) -> None:
        self.output += data
        for pattern, d in list(self._patterns):
            match = pattern.search(self.output)
            if match:
                self._patterns.remove((pattern, d))
                d.callback(match)

    def errReceived(self, data: bytes) -> None:
        self.errors += data

    def waitFor(self, pattern: bytes) -> Deferred[re.Match[bytes]]:
        d: Deferred[re.Match[bytes]] = Deferred()
        match = re.compile(pattern).search(self.output)
        if match:
            d.callback(match)
        else:
            self._patterns.append((re.compile(pattern), d))
        return d

    def processEnded(self, reason) -> None:
        for _, d in self._patterns:
            d.errback(
                AssertionError(
                    f"exited before printing that:\n{self.output.decode()}\n{self.errors.decode()}"
                )
            )
        self._patterns = []
        if reason.check(ProcessDone):
            self.ended.callback(0)
        elif reason.check(ProcessTerminated):
            self.ended.callback(
                reason.value.exitCode if reason.value.exitCode is not None else -reason.value.signal
            )


def run(
    testCase: TestCase,
    executable: str,
    *arguments: str,
    env: dict[str, str] | None = None,
    path: str | None = None,
) -> Process:
    """
    Start a child in a fresh directory, with only the environment given
    (plus PATH and HOME), so no developer's .env or variables leak in.
    """
    process = Process()
    if path is None:
        path = testCase.mktemp()
        os.makedirs(path)
    environment = {"PATH": os.environ.get("PATH", ""), "HOME": path}
    environment.update(env or {})
    transport = reactor.spawnProcess(
        process, executable, [executable, *arguments], env=environment, path=path
    )

    def cleanUp():
        if not process.ended.called:
            transport.signalProcess("KILL")
            return process.ended

    testCase.addCleanup(cleanUp)
    return process
