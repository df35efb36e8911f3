"""
C{--redis URL}: the forms SPEC §6 names, and one clear error for the rest.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from socktopus_tw.cluster.redisurl import RedisAddress, parseRedisUrl


class ParseRedisUrlTests(SynchronousTestCase):
    def test_hostAndPort(self):
        self.assertEqual(
            parseRedisUrl("redis://cache.internal:6380"),
            RedisAddress("redis", host="cache.internal", port=6380),
        )

    def test_defaultPortAndDatabase(self):
        address = parseRedisUrl("redis://localhost")
        self.assertEqual((address.port, address.db), (6379, 0))

    def test_userPasswordAndDatabase(self):
        address = parseRedisUrl("redis://relay:p%40ss@10.0.0.5:6379/3")
        self.assertEqual((address.username, address.password, address.db), ("relay", "p@ss", 3))

    def test_passwordWithoutUser(self):
        address = parseRedisUrl("redis://:secret@localhost:6379")
        self.assertEqual((address.username, address.password), (None, "secret"))

    def test_tls(self):
        self.assertEqual(parseRedisUrl("rediss://r.example:6380").scheme, "rediss")

    def test_unixSocket(self):
        address = parseRedisUrl("redis+unix:///run/redis/redis.sock?db=2")
        self.assertEqual((address.path, address.db), ("/run/redis/redis.sock", 2))

    def test_ipv6(self):
        address = parseRedisUrl("redis://[::1]:6379")
        self.assertEqual(address.host, "::1")
        self.assertEqual(str(address), "redis://[::1]:6379")

    def test_strNeverShowsThePassword(self):
        address = parseRedisUrl("redis://relay:hunter2@localhost:6379/1")
        self.assertNotIn("hunter2", str(address))
        self.assertNotIn("hunter2", repr(address))

    def test_mistakes(self):
        for text, says in [
            ("http://localhost:6379", "expected redis://"),
            ("localhost:6379", "expected redis://"),
            ("redis://", "names no host"),
            ("redis://localhost:99999", "port"),
            ("redis://localhost:6379/x", "database must be a number"),
            ("redis+unix://host/run/redis.sock", "redis+unix:///absolute/path"),
            ("redis+unix://", "redis+unix:///absolute/path"),
        ]:
            with self.assertRaises(ValueError, msg=text) as caught:
                parseRedisUrl(text)
            self.assertIn(says, str(caught.exception), text)

    def test_errorsNeverShowThePassword(self):
        for text in ["redis://u:hunter2@localhost:99999", "redis://u:hunter2@localhost/x"]:
            with self.assertRaises(ValueError) as caught:
                parseRedisUrl(text)
            self.assertNotIn("hunter2", str(caught.exception))
