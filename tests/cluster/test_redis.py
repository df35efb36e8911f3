"""
The start-up check of C{--redis} against a real Redis: its version, or one
line saying what is wrong (never the password).
"""

from __future__ import annotations

import time

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from socktopus_tw.cluster.redis import probe
from socktopus_tw.cluster.redisurl import parseRedisUrl
from socktopus_tw.errors import StartupError
from tests.support.accounts import closedPort
from tests.support.daemon import Daemon
from tests.support.redis import RedisServer


class ProbeTests(TestCase):
    def test_answersWithTheVersion(self):
        redis = RedisServer(self)
        version, denied = probe(parseRedisUrl(redis.url), deniedSince=0)
        self.assertEqual(denied, [])
        self.assertRegex(version, r"^\d+\.\d+")

    def test_overTcpWithADatabase(self):
        redis = RedisServer(self, tcp=True)
        self.assertTrue(probe(parseRedisUrl(redis.tcpUrl + "/2")))

    def test_unreachable(self):
        address = parseRedisUrl(f"redis://user:hunter2@127.0.0.1:{closedPort()}")
        with self.assertRaises(StartupError) as caught:
            probe(address)
        message = str(caught.exception)
        self.assertIn("cannot reach Redis", message)
        self.assertNotIn("hunter2", message)

    def test_wrongPassword(self):
        redis = RedisServer(self, password="right")
        address = parseRedisUrl(f"redis+unix://:wrong@{redis.socket}")
        with self.assertRaises(StartupError) as caught:
            probe(address)
        self.assertIn("Redis refused", str(caught.exception))
        self.assertNotIn("wrong", str(caught.exception).replace("WRONGPASS", ""))

    def test_passwordNeededButNotGiven(self):
        redis = RedisServer(self, password="right")
        with self.assertRaises(StartupError) as caught:
            probe(parseRedisUrl(redis.url))
        self.assertIn("NOAUTH", str(caught.exception))

    def test_rightPassword(self):
        redis = RedisServer(self, password="right")
        self.assertTrue(probe(parseRedisUrl(f"redis+unix://:right@{redis.socket}")))


class BusyReactorTests(TestCase):
    """
    A command's deadline drops the connection only when the answer has not
    come one reactor turn after it: a reactor that was busy past the
    deadline (thousands of clients closing at once) reads the answer first,
    and Redis is not taken for frozen.
    """

    @inlineCallbacks
    def test_aBusyReactorDoesNotMakeRedisLookFrozen(self):
        import socktopus_tw.cluster.redis as module

        redis = RedisServer(self)
        daemon = Daemon(self, "--redis", redis.url)
        link = daemon.registry.link
        for _ in range(200):
            if link.up:
                break
            yield deferLater(reactor, 0.01, lambda: None)
        self.patch(module, "DEADLINE", 0.05)
        answered = link.ping()
        # Busy, not sleeping: the reactor does nothing else for four deadlines.
        until = time.monotonic() + 0.2
        while time.monotonic() < until:
            pass
        self.assertEqual((yield answered), b"PONG")
        self.assertTrue(link.up)
        self.assertEqual((yield link.ping()), b"PONG")


class FrozenRedisTests(TestCase):
    """
    A frozen Redis' kernel still accepts connections: the link counts a
    connection usable only once Redis itself answered on it.
    """

    @inlineCallbacks
    def test_linkToAFrozenRedisIsNotUpUntilItAnswers(self):
        import socktopus_tw.cluster.redis as module

        redis = RedisServer(self)
        redis.freeze()
        self.addCleanup(redis.thaw)
        self.patch(module, "DEADLINE", 0.1)
        seenUp = []
        link = module.RedisLink(
            parseRedisUrl(redis.url),
            reactor,
            ["socktopus-test"],
            onMessage=lambda message: None,
            onReady=lambda: seenUp.append(reactor.seconds()),
        )
        link.startService()
        self.addCleanup(link.stopService)
        # Long enough for several connections to be made and dropped.
        for _ in range(50):
            self.assertFalse(link.up, "the link counted a frozen Redis as up")
            # Commands fail at once rather than wait for their deadline.
            self.assertIsNone(link.commands, "commands would go to a frozen Redis")
            yield deferLater(reactor, 0.02, lambda: None)
        self.assertEqual(seenUp, [])
        redis.thaw()
        for _ in range(500):
            if link.up:
                break
            yield deferLater(reactor, 0.01, lambda: None)
        self.assertTrue(link.up, "the link did not come up once Redis answered")
        self.assertEqual((yield link.ping()), b"PONG")
        self.assertEqual(len(seenUp), 1)
