"""
The start-up check of C{--redis} against a real Redis: its version, or one
line saying what is wrong (never the password).
"""

from __future__ import annotations

from twisted.trial.unittest import TestCase

from socktopus_tw.cluster.redis import probe
from socktopus_tw.cluster.redisurl import parseRedisUrl
from socktopus_tw.errors import StartupError
from tests.support.accounts import closedPort
from tests.support.redis import RedisServer


class ProbeTests(TestCase):
    def test_answersWithTheVersion(self):
        redis = RedisServer(self)
        version = probe(parseRedisUrl(redis.url))
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
