"""
The README's two webhook backends, as written there: each is taken from
README.md, run as its own process (Python with this package's SDK, Node
with sdk/js), pointed at by a real daemon's webhook, and must print the
events of a real client, having checked their signatures with the SDK.
"""

from __future__ import annotations

import os
import re
import shutil
import sys

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from tests.support.daemon import APP, SECRET, Daemon
from tests.support.process import ROOT, run
from tests.support.redis import freePort


def readmeBlock(after: str, language: str) -> str:
    """
    The first C{language} code block in README.md after the line C{after}.
    """
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        text = f.read()
    start = text.index(after)
    match = re.compile(rf"```{language}\n(.*?)```", re.S).search(text, start)
    assert match is not None, f"no {language} block after {after!r} in README.md"
    return match.group(1)


class ReadmeWebhookTests(TestCase):
    timeout = 60

    @inlineCallbacks
    def hear(self, backend):
        """
        A daemon posting to C{backend}'s port: a client connects, says
        hello, closes; the backend prints all three events.
        """
        daemon = Daemon(
            self,
            environ={f"{APP.upper()}_SOCKTOPUS_WEBHOOK": f"http://127.0.0.1:{self.port}/"},
        )
        client = yield daemon.connect("user-42")
        client.sendText("DATA:hello")
        client.sendText("CLOSE")
        yield client.closed
        yield backend.waitFor(rb"disconnect user-42 client\n")
        lines = backend.output.decode().splitlines()
        self.assertEqual(
            lines, ["connect user-42 ", "message user-42 hello", "disconnect user-42 client"]
        )

    def setUp(self) -> None:
        self.port = freePort()
        self.env = {"DEMO_SOCKTOPUS_SECRET": SECRET, "PORT": str(self.port)}

    @inlineCallbacks
    def started(self, backend):
        # Listening once a connection reaches it: poll the port.
        deadline = reactor.seconds() + 20
        while True:
            try:
                p = yield TCP4ClientEndpoint(reactor, "127.0.0.1", self.port).connect(
                    Factory.forProtocol(Protocol)
                )
                p.transport.loseConnection()
                return
            except Exception:
                if reactor.seconds() > deadline or backend.ended.called:
                    self.fail(f"the backend did not listen: {backend.errors.decode()}")
                yield deferLater(reactor, 0.05, lambda: None)

    @inlineCallbacks
    def test_pythonBackend(self):
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        path = os.path.join(directory, "backend.py")
        with open(path, "w", encoding="utf-8") as f:
            f.write(readmeBlock("A backend in Python", "python"))
        backend = run(
            self, sys.executable, path, env={**self.env, "PYTHONPATH": ROOT}, path=directory
        )
        yield self.started(backend)
        yield self.hear(backend)

    @inlineCallbacks
    def test_nodeBackend(self):
        directory = os.path.abspath(self.mktemp())
        os.makedirs(os.path.join(directory, "node_modules"))
        # As after `npm install ./sdk/js`.
        os.symlink(
            os.path.join(ROOT, "sdk", "js"), os.path.join(directory, "node_modules", "socktopus")
        )
        path = os.path.join(directory, "backend.mjs")
        with open(path, "w", encoding="utf-8") as f:
            f.write(readmeBlock("And in Node", "js"))
        node = shutil.which("node")
        self.assertIsNotNone(node, "node is not installed")
        backend = run(self, node, path, env=self.env, path=directory)
        yield self.started(backend)
        yield self.hear(backend)
