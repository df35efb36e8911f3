"""
Several daemons in one process acting as one relay through a real Redis:
every node reaches every connection, with the single-node answers (SPEC §6).
"""

from __future__ import annotations

from twisted.internet import reactor
from twisted.internet.defer import gatherResults, inlineCallbacks
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase
from zope.interface.verify import verifyObject

from socktopus_tw.cluster.registry import ClusterRegistry
from socktopus_tw.relay.registry import IRegistry
from tests.support.daemon import APP, Daemon
from tests.support.fastpath import say
from tests.support.redis import RedisServer


class ClusterTestsMixin:
    def startCluster(self, nodes: int = 2, *arguments: str) -> list[Daemon]:
        self.redis = RedisServer(self)
        daemons = [Daemon(self, "--redis", self.redis.url, *arguments) for _ in range(nodes)]
        return daemons

    @inlineCallbacks
    def settled(self, *daemons: Daemon):
        """
        Every step each node sent Redis has run, and each knows the others.
        """
        deadline = reactor.seconds() + 5
        while not all(d.registry.link.up for d in daemons):
            if reactor.seconds() > deadline:
                self.fail("a node's link to Redis did not come up within 5 s")
            yield deferLater(reactor, 0.02, lambda: None)
        yield gatherResults([d.registry.sync() for d in daemons])
        # Twice: the first beats may come before the others' first.
        for _ in range(2):
            yield gatherResults([d.registry.heartbeat() for d in daemons])


class ClusterTests(ClusterTestsMixin, TestCase):
    def test_clusterRegistryProvidesIRegistry(self):
        (a,) = self.startCluster(1)
        self.assertIsInstance(a.registry, ClusterRegistry)
        self.assertTrue(verifyObject(IRegistry, a.registry))

    @inlineCallbacks
    def test_sendOnOneNodeReachesAClientOnAnother(self):
        """
        A client on A receives what is posted to B, in order; C{failed}
        lists exactly the ids connected nowhere.
        """
        a, b = self.startCluster(2)
        client = yield a.connect("alice")
        yield self.settled(a, b)
        code, body, _ = yield b.send(
            [say("one", "alice"), say("x", "nobody"), say("two", "alice"), say("three", "alice")]
        )
        self.assertEqual(code, 200)
        self.assertEqual([m["content"] for m in body["succeeded"]], ["one", "two", "three"])
        self.assertEqual([m["recipient"] for m in body["failed"]], ["nobody"])
        received = yield client.waitFor(3)
        self.assertEqual(received, ["DATA:one", "DATA:two", "DATA:three"])

    @inlineCallbacks
    def test_localAndRemoteRecipientsInOneBatch(self):
        a, b = self.startCluster(2)
        onA = yield a.connect("alice")
        onB = yield b.connect("bob")
        yield self.settled(a, b)
        code, body, _ = yield b.send([say("for alice", "alice"), say("for bob", "bob")])
        self.assertEqual(len(body["succeeded"]), 2, body)
        self.assertEqual((yield onA.waitFor(1)), ["DATA:for alice"])
        self.assertEqual((yield onB.waitFor(1)), ["DATA:for bob"])

    @inlineCallbacks
    def test_kickOnOneNodeClosesAClientOnAnother(self):
        """
        A kick on B closes A's client with C{CLOSE}, answers C{kicked}, and
        its older tokens are refused on every node.
        """
        a, b = self.startCluster(2)
        client = yield a.connect("alice")
        token = a.token("alice")
        yield self.settled(a, b)
        code, body, _ = yield b.kick(["alice", "nobody"])
        self.assertEqual(body, {"kicked": ["alice"], "notConnected": ["nobody"]})
        yield client.closed
        self.assertIn("CLOSE", client.received)
        yield a.registry.sync()
        for node in (a, b):
            self.assertTrue(
                node.registry.isKicked(
                    APP, "alice", int(token.split("h")[0], 16) if False else _stamp(token)
                )
            )

    @inlineCallbacks
    def test_sameIdOnAnotherNodeReplacesTheOldConnection(self):
        a, b = self.startCluster(2)
        first = yield a.connect("alice")
        yield self.settled(a, b)
        second = yield b.connect("alice")
        yield first.closed
        self.assertIn("CLOSE", first.received)
        yield self.settled(a, b)
        code, body, _ = yield a.send([say("hello", "alice")])
        self.assertEqual(len(body["succeeded"]), 1, body)
        self.assertEqual((yield second.waitFor(1)), ["DATA:hello"])

    @inlineCallbacks
    def test_countsAndNodesAreTheClusters(self):
        a, b, c = self.startCluster(3)
        yield a.connect("alice")
        yield b.connect("bob")
        yield b.connect("carol")
        yield self.settled(a, b, c)
        for node in (a, b, c):
            self.assertEqual(node.registry.nodes(), 3)
            self.assertEqual(node.registry.count(APP), 3)

    @inlineCallbacks
    def test_presenceAcrossNodes(self):
        a, b = self.startCluster(2)
        yield a.connect("alice")
        yield b.connect("bob")
        yield self.settled(a, b)
        connected, notConnected = yield a.registry.presence(APP, ["bob", "alice", "zed"])
        self.assertEqual((connected, notConnected), (["bob", "alice"], ["zed"]))
        everyone, _ = yield a.registry.presence(APP)
        self.assertEqual(sorted(everyone), ["alice", "bob"])

    @inlineCallbacks
    def test_redisDownLocalWorksRemoteFailsAndItHeals(self):
        a, b = self.startCluster(2)
        yield a.connect("alice")
        onB = yield b.connect("bob")
        yield self.settled(a, b)
        self.redis.stop()
        # Both nodes notice the connections closed.
        yield deferLater(reactor, 0.2, lambda: None)
        code, body, _ = yield a.send([say("local", "alice"), say("remote", "bob")])
        self.assertEqual([m["content"] for m in body["succeeded"]], ["local"])
        self.assertEqual([m["content"] for m in body["failed"]], ["remote"])
        code, _, _ = yield a.request("GET", "/ready")
        self.assertEqual(code, 503)
        self.redis.start()
        for _ in range(100):
            if a.registry.link.up and b.registry.link.up:
                break
            yield deferLater(reactor, 0.05, lambda: None)
        yield self.settled(a, b)
        yield gatherResults([a.registry.restore(), b.registry.restore()])
        code, body, _ = yield a.send([say("again", "bob")])
        self.assertEqual(len(body["succeeded"]), 1, body)
        self.assertEqual((yield onB.waitFor(1)), ["DATA:again"])
        code, _, _ = yield a.request("GET", "/ready")
        self.assertEqual(code, 200)


def _stamp(token: str) -> int:
    return int(bytes.fromhex(token.split("h")[0]).decode())
