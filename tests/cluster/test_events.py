"""
Webhook events in a cluster (SPEC §7.2): each node posts the events of its
own connections, also when another node replaced or kicked them. Two
in-process daemons over a real redis-server, a real receiver.
"""

from __future__ import annotations

from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase

from tests.cluster.test_registry import ClusterTestsMixin
from tests.relay.test_events import Receiver
from tests.support.daemon import APP, Daemon
from tests.support.redis import RedisServer


class WebhookClusterMixin(ClusterTestsMixin):
    """
    A cluster whose app C{demo} posts to C{self.receiver}.
    """

    timeout = 30

    def startCluster(self, nodes: int = 2, *arguments: str) -> list[Daemon]:
        self.redis = RedisServer(self)
        self.receiver = Receiver(self)
        environ = {f"{APP.upper()}_SOCKTOPUS_WEBHOOK": self.receiver.url}
        return [
            Daemon(self, "--redis", self.redis.url, *arguments, environ=environ)
            for _ in range(nodes)
        ]


class ClusterEventTests(WebhookClusterMixin, TestCase):
    @inlineCallbacks
    def test_replacedOnAnotherNodeIsPostedByTheOldOnesNode(self):
        a, b = self.startCluster()
        old = yield a.connect("x")
        yield self.settled(a, b)
        yield b.connect("x")
        yield old.closed
        events = yield self.receiver.waitFor("x", 3)
        # Exactly one disconnect, with its reason; across nodes the new
        # connect may come first (ClusterReplacedOrderTests, a todo).
        self.assertEqual(events[0], ("connect",))
        self.assertEqual(sorted(events[1:]), [("connect",), ("disconnect", "replaced")])

    @inlineCallbacks
    def test_kickOnAnotherNodeIsKick(self):
        a, b = self.startCluster()
        client = yield a.connect("y")
        yield self.settled(a, b)
        code, body, _ = yield b.kick(["y"])
        self.assertEqual(body["kicked"], ["y"])
        yield client.closed
        self.assertEqual((yield self.receiver.waitForEnd("y"))[-1], ("disconnect", "kick"))

    @inlineCallbacks
    def test_messagesFromClientsOnEveryNode(self):
        a, b = self.startCluster()
        ca = yield a.connect("on-a")
        cb = yield b.connect("on-b")
        ca.sendText("DATA:from a")
        cb.sendText("DATA:from b")
        self.assertEqual((yield self.receiver.waitFor("on-a", 2))[1], ("message", "from a"))
        self.assertEqual((yield self.receiver.waitFor("on-b", 2))[1], ("message", "from b"))
