"""
How the cluster over Redis recovers (SPEC §6): restores, the deny-list across
outages and restarts, refusing Redis, deadlines; in-process daemons sharing a
real redis-server and real WebSocket clients, as L{tests.cluster.test_registry}
does.

Faults are made for real: Redis stopped and started empty, frozen with
C{SIGSTOP}, out of memory (C{maxmemory}), made to drop connections (C{CLIENT
KILL}), one node cut off from it (Redis stops listening on the TCP port that
node uses and drops that node's connections: a network partition between one
node and Redis, the other nodes unaffected), or the path between one node
and Redis breaking silently (L{BrokenPath}, a relay in threads).

Nothing sleeps: tests poll through the reactor with deadlines, or settle with
L{ClusterRegistry.sync} and L{ClusterRegistry.heartbeat}.
"""

from __future__ import annotations

import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import gatherResults, inlineCallbacks
from twisted.internet.task import deferLater
from twisted.logger import globalLogPublisher
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase, TestCase

from socktopus_tw.cluster import registry as clusterRegistry
from socktopus_tw.tap import SocktopusOptions
from tests.support.daemon import APP, SECRET, Daemon, nowMilliseconds
from tests.support.fastpath import say
from tests.support.redis import RedisServer

#: Seconds between two looks at something a test waits for.
POLL = 0.02

#: SPEC §6: a node whose Redis is back restores its state within 5 s.
WITHIN = 5.0


class Claims:
    """
    Counts the restores (L{ClusterRegistry.restore}) each node has finished,
    from the line each one logs.
    """

    def __init__(self, testCase: TestCase) -> None:
        self.counts: Counter[str] = Counter()
        globalLogPublisher.addObserver(self)
        testCase.addCleanup(globalLogPublisher.removeObserver, self)

    def __call__(self, event: dict[str, Any]) -> None:
        if "connections claimed" in (event.get("log_format") or ""):
            self.counts[event.get("node")] += 1


class ReviewTestsMixin:
    timeout = 30

    def startCluster(self, nodes: int = 2, *arguments: str, tcp: bool = False) -> list[Daemon]:
        self.redis = RedisServer(self, tcp=tcp)
        self.claims = Claims(self)
        return [self.startNode(*arguments) for _ in range(nodes)]

    def startNode(self, *arguments: str, url: str | None = None) -> Daemon:
        return Daemon(self, "--redis", url or self.redis.url, *arguments)

    @inlineCallbacks
    def settled(self, *daemons: Daemon):
        """
        Every step each node sent Redis has run, and each knows the others.
        """
        yield self.eventually(
            lambda: all(d.registry.link.up for d in daemons), "every node's link is up"
        )
        yield gatherResults([d.registry.sync() for d in daemons])
        for _ in range(2):
            yield gatherResults([d.registry.heartbeat() for d in daemons])

    @inlineCallbacks
    def eventually(self, check: Callable[[], Any], what: str, within: float = WITHIN):
        """
        Poll C{check} until it is true; fail saying C{what} if it is not
        within C{within} seconds.
        """
        deadline = reactor.seconds() + within
        while not check():
            if reactor.seconds() > deadline:
                self.fail(f"not within {within} s: {what}")
            yield deferLater(reactor, POLL, lambda: None)

    @inlineCallbacks
    def restored(self, daemon: Daemon, since: int):
        """
        Wait until C{daemon} has finished a restore after the C{since}-th
        one, and everything it sent Redis since has run.
        """
        node = daemon.registry.node
        yield self.eventually(
            lambda: self.claims.counts[node] > since and daemon.registry.link.up,
            f"node {node} restored",
        )
        yield daemon.registry.sync()

    @inlineCallbacks
    def assertRefused(self, daemon: Daemon, connectionId: str, stamp: int):
        """
        A connection with a token of this stamp is refused by C{daemon}.
        """
        try:
            client = yield daemon.connect(connectionId, stamp=stamp)
        except ConnectionRefusedError:
            return
        client.dropConnection(abort=True)
        self.fail(f"{connectionId!r} connected with a token stamped before its kick")

    def cut(self) -> None:
        """
        Cut off the nodes that reach Redis over TCP: Redis stops listening
        on its port and drops the connections made to it.
        """
        self.redis.command("CONFIG", "SET", "port", "0")
        self.redis.command("CLIENT", "KILL", "LADDR", f"127.0.0.1:{self.redis.port}")

    def heal(self) -> None:
        self.redis.command("CONFIG", "SET", "port", str(self.redis.port))


class BrokenPath:
    """
    A TCP relay to Redis in threads of its own (the daemon's start-up probe
    is blocking, before the reactor runs). C{breakOld()} is a network path
    that breaks silently: the connections relayed so far stop carrying
    bytes either way, Redis' side of them is closed (Redis forgets those
    clients, as after a restart or a NAT's idle timeout), and the node's
    side stays open, told nothing. Connections made afterwards are relayed.
    """

    def __init__(self, testCase: TestCase, port: int) -> None:
        self.upstream = port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self._lock = threading.Lock()
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._broken: set[socket.socket] = set()
        threading.Thread(target=self._accept, daemon=True).start()
        testCase.addCleanup(self.close)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.upstream))
            with self._lock:
                self._pairs.append((client, server))
            for source, sink in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        while True:
            try:
                data = source.recv(65536)
            except OSError:
                return
            if not data:
                return
            with self._lock:
                if sink in self._broken or source in self._broken:
                    continue  # lost on the way
            try:
                sink.sendall(data)
            except OSError:
                return

    def breakOld(self) -> None:
        with self._lock:
            pairs, self._pairs = self._pairs, []
            for client, server in pairs:
                self._broken.update((client, server))
        for _, server in pairs:
            server.close()

    def close(self) -> None:
        self.listener.close()
        with self._lock:
            for pair in self._pairs:
                for sock in pair:
                    sock.close()
            for sock in self._broken:
                sock.close()


def stampOf(token: str) -> int:
    return int(bytes.fromhex(token.split("h")[0]).decode())


class ReplacementTests(ReviewTestsMixin, TestCase):
    @inlineCallbacks
    def test_connectionMadeWhileCutOffReplacesTheOlderOne(self):
        """
        A client reconnects with the same id to node B while B is cut off
        from Redis (its old connection on A looks alive: a half-open socket).
        Once B is back, the B{new} connection replaces the old one: the one
        on A receives C{CLOSE}, the one on B stays and gets what is sent.
        (SPEC §3.2/§6: "a new connection with the same app and id on any
        node replaces the old one".)
        """
        (a,) = self.startCluster(1, tcp=True)
        b = self.startNode(url=self.redis.tcpUrl)
        old = yield a.connect("x")
        yield self.settled(a, b)
        before = self.claims.counts[b.registry.node]

        self.cut()
        yield self.eventually(lambda: not b.registry.link.up, "B noticed it is cut off")
        new = yield b.connect("x")
        self.heal()
        yield self.restored(b, before)
        yield self.settled(a, b)

        self.assertFalse(new.closed.called, f"the new connection was closed: {new.received}")
        yield old.closed
        self.assertIn("CLOSE", old.received)
        code, body, _ = yield a.send([say("hello", "x")])
        self.assertEqual([m["content"] for m in body["succeeded"]], ["hello"], body)
        self.assertEqual((yield new.waitFor(1)), ["DATA:hello"])

    @inlineCallbacks
    def test_connectionHeldWhileCutOffLosesToANewerOneElsewhere(self):
        """
        The other way round: node B, cut off, holds the old connection and
        the client reconnects to A meanwhile. Once B is back, B's old
        connection receives C{CLOSE} and A's new one stays.
        """
        (a,) = self.startCluster(1, tcp=True)
        b = self.startNode(url=self.redis.tcpUrl)
        old = yield b.connect("x")
        yield self.settled(a, b)
        before = self.claims.counts[b.registry.node]

        self.cut()
        yield self.eventually(lambda: not b.registry.link.up, "B noticed it is cut off")
        new = yield a.connect("x")
        yield a.registry.sync()
        self.heal()
        yield self.restored(b, before)
        yield self.settled(a, b)

        yield old.closed
        self.assertIn("CLOSE", old.received)
        self.assertFalse(new.closed.called, f"the new connection was closed: {new.received}")
        code, body, _ = yield b.send([say("hello", "x")])
        self.assertEqual([m["content"] for m in body["succeeded"]], ["hello"], body)
        self.assertEqual((yield new.waitFor(1)), ["DATA:hello"])


class LinkTests(ReviewTestsMixin, TestCase):
    @inlineCallbacks
    def test_nodeWhoseSubscriptionSilentlyDiedHealsByItself(self):
        """
        The network path between node B and Redis breaks silently (Redis
        drops B's connections; B is told nothing) and comes back. B's
        command connection notices (its deadline) and reconnects; its
        subscriber connection must be noticed too, so that within 5 s B is
        whole again: a C{/send} on A reaches B's client (SPEC §6: "once
        Redis is back the node restores its state by itself within 5 s").
        """
        (a,) = self.startCluster(1, tcp=True)
        path = BrokenPath(self, self.redis.port)
        b = self.startNode(url=path.url)
        bob = yield b.connect("bob")
        yield self.settled(a, b)
        before = self.claims.counts[b.registry.node]

        path.breakOld()
        # B's next heartbeat gets no answer: its deadline drops the command
        # connection, and B connects again (relayed) and restores.
        yield self.restored(b, before)
        deadline = reactor.seconds() + WITHIN
        while True:
            code, body, _ = yield a.send([say("hello", "bob")])
            if body["succeeded"]:
                break
            if reactor.seconds() > deadline:
                self.fail(
                    f"B restored and answers heartbeats (ready: {b.registry.link.up}), "
                    f"but a /send on A to B's client still fails {WITHIN} s later"
                )
            yield deferLater(reactor, 0.1, lambda: None)
        self.assertEqual((yield bob.waitFor(1)), ["DATA:hello"])


class RefusingRedisTests(ReviewTestsMixin, TestCase):
    @inlineCallbacks
    def test_redisRefusingWritesIsOneWarningNotATracebackPerStep(self):
        """
        Redis that answers but refuses writes (its C{maxmemory} reached with
        the default C{noeviction} policy) is an operator's problem like
        Redis being down: a warning line (and, as the heartbeats fail,
        C{/ready} 503), not a critical traceback for every heartbeat, every
        connect and every disconnect.
        """
        a, b = self.startCluster(2)
        yield a.connect("alice")
        yield self.settled(a, b)

        self.redis.command("CONFIG", "SET", "maxmemory", "1")
        self.addCleanup(self.redis.command, "CONFIG", "SET", "maxmemory", "0")
        for _ in range(3):
            yield a.registry.heartbeat()
        yield a.connect("carol")
        yield a.registry.sync()
        logged = self.flushLoggedErrors()
        self.assertEqual([], [str(f.value)[:60] for f in logged])


class KickTests(ReviewTestsMixin, TestCase):
    @inlineCallbacks
    def test_restoreDoesNotCloseAClientThatReconnectedAfterItsKick(self):
        """
        A client kicked, then back with a token stamped after the kick, is
        allowed (SPEC §3.4 only refuses tokens stamped at or before it). A
        Redis reconnect (here: Redis drops the subscriber connections) makes
        the node restore and reload the deny-list; that must not close the
        client again.
        """
        a, b = self.startCluster(2)
        first = yield a.connect("alice")
        yield self.settled(a, b)
        code, body, _ = yield b.kick(["alice"])
        self.assertEqual(body["kicked"], ["alice"])
        yield first.closed
        again = yield a.connect("alice", stamp=nowMilliseconds() + 1)
        yield self.settled(a, b)
        before = self.claims.counts[a.registry.node]

        self.redis.command("CLIENT", "KILL", "TYPE", "pubsub")
        yield self.restored(a, before)
        yield self.settled(a, b)

        self.assertFalse(again.closed.called, f"closed after the restore: {again.received}")
        code, body, _ = yield b.send([say("welcome back", "alice")])
        self.assertEqual(len(body["succeeded"]), 1, body)

    @inlineCallbacks
    def test_kickWhileCutOffIsRefusedEverywhereOnceBack(self):
        """
        A kick answered by node A while A is cut off from Redis: once A is
        back, the kicked id's older tokens are refused on every node (SPEC
        §6: the deny-list is cluster-wide; a node restores its state by
        itself once Redis is back).
        """
        (b,) = self.startCluster(1, "--token-lifespan", "30", tcp=True)
        a = self.startNode("--token-lifespan", "30", url=self.redis.tcpUrl)
        token = b.token("alice")
        yield self.settled(a, b)
        before = self.claims.counts[a.registry.node]

        self.cut()
        yield self.eventually(lambda: not a.registry.link.up, "A noticed it is cut off")
        code, body, _ = yield a.kick(["alice"])
        self.assertEqual(code, 200)
        self.heal()
        yield self.restored(a, before)
        yield self.settled(a, b)

        yield self.eventually(
            lambda: b.registry.isKicked(APP, "alice", stampOf(token)),
            "B refuses tokens stamped before A's kick",
        )

    @inlineCallbacks
    def test_denyListSurvivesARedisRestart(self):
        """
        Redis restarts empty (no persistence) right after a kick; the nodes
        restore themselves, and a node started afterwards refuses the
        kicked id's older tokens too.
        """
        a, b = self.startCluster(2, "--token-lifespan", "30")
        token = a.token("alice")
        yield self.settled(a, b)
        code, body, _ = yield a.kick(["alice"])
        self.assertEqual(code, 200)
        yield self.settled(a, b)
        before = (self.claims.counts[a.registry.node], self.claims.counts[b.registry.node])

        self.redis.stop()
        self.redis.start()
        yield self.restored(a, before[0])
        yield self.restored(b, before[1])
        c = self.startNode("--token-lifespan", "30")
        yield self.restored(c, 0)
        yield self.settled(a, b, c)

        self.assertTrue(
            c.registry.isKicked(APP, "alice", stampOf(token)),
            "a node started after Redis restarted accepts a token stamped before the kick",
        )
        yield self.assertRefused(c, "alice", stampOf(token))

    @inlineCallbacks
    def test_newNodeRefusesKickedTokensFromItsFirstConnection(self):
        """
        A node that has just started refuses a token stamped before a kick
        made on another node, also on its very first connections (it listens
        before it has read the deny-list from Redis).
        """
        a, b = self.startCluster(2)
        token = a.token("alice")
        yield self.settled(a, b)
        code, body, _ = yield a.kick(["alice"])
        self.assertEqual(code, 200)
        yield self.settled(a, b)

        c = self.startNode()
        yield self.assertRefused(c, "alice", stampOf(token))


class RestoreTests(ReviewTestsMixin, TestCase):
    @inlineCallbacks
    def test_connectionClosedDuringARestoreLeavesNoEntry(self):
        """
        A connection that closes while a restore is under way (a restore
        claims 1,000 connections per script; the chunk is 1 here so two
        connections show it) is not left in the directory: no node reports
        it connected.
        """
        self.patch(clusterRegistry, "RESTORE_CHUNK", 1)
        a, b = self.startCluster(2)
        yield a.connect("c1")
        yield a.connect("c2")
        yield self.settled(a, b)

        # Redis is slow for a moment: the restore's first script waits...
        self.redis.freeze()
        restoring = a.registry.restore()
        # ...while c2's transport breaks, and its disconnect is sent.
        a.registry.local.connection(APP, "c2").transport.abortConnection()
        yield self.eventually(
            lambda: a.registry.local.connection(APP, "c2") is None and not a.registry._changes,
            "c2 closed on A and its disconnect sent to Redis",
        )
        self.redis.thaw()
        yield restoring
        yield self.settled(a, b)

        connected, notConnected = yield b.registry.presence(APP, ["c1", "c2"])
        self.assertEqual((connected, notConnected), (["c1"], ["c2"]))
        everyone, _ = yield b.registry.presence(APP)
        self.assertEqual(everyone, ["c1"])

    @inlineCallbacks
    def test_restoreAskedWhileRedisIsDownDoesNotStopLaterRestores(self):
        """
        C{restore()} called while Redis is down fails at once; once Redis is
        back (empty), the node still claims its connections by itself, so
        the other nodes reach them again.
        """
        a, b = self.startCluster(2)
        alice = yield a.connect("alice")
        yield self.settled(a, b)

        self.redis.stop()
        yield self.eventually(lambda: not a.registry.link.up, "A noticed Redis is gone")
        yield a.registry.restore()
        self.redis.start()
        yield self.eventually(
            lambda: a.registry.link.up and b.registry.link.up, "both links are back"
        )

        @inlineCallbacks
        def reached():
            code, body, _ = yield b.send([say("again", "alice")])
            return len(body["succeeded"]) == 1

        deadline = reactor.seconds() + WITHIN
        while not (yield reached()):
            if reactor.seconds() > deadline:
                self.fail(f"alice on A not reachable from B {WITHIN} s after Redis came back")
            yield deferLater(reactor, 0.1, lambda: None)
        self.assertIn("DATA:again", alice.received)


class DeadlineTests(ReviewTestsMixin, TestCase):
    @inlineCallbacks
    def test_sendWhileRedisIsFrozenAnswersWithinTwoSeconds(self):
        """
        While Redis does not answer, a C{/send} with a message for another
        node is answered (that message failed) in at most 2 s (SPEC §6:
        "never hangs longer than 2 s").
        """
        a, b = self.startCluster(2)
        yield a.connect("alice")
        yield b.connect("bob")
        yield self.settled(a, b)

        self.redis.freeze()
        self.addCleanup(self.redis.thaw)
        started = time.monotonic()
        code, body, _ = yield a.send([say("local", "alice"), say("remote", "bob")])
        elapsed = time.monotonic() - started
        self.redis.thaw()
        self.assertEqual([m["content"] for m in body["failed"]], ["remote"], body)
        self.assertLessEqual(elapsed, 2.0, f"/send answered after {elapsed:.3f} s")


class PasswordTests(SynchronousTestCase):
    def test_mistypedUrlNeverShowsAPasswordWithASlash(self):
        """
        A C{--redis} URL whose password holds a C{/} (base64 passwords do)
        and is not percent-encoded cannot be parsed; the one-line error must
        not repeat the password (SPEC §6: "the password is never logged").
        """
        password = "Zm9v/YmFy+cXV4"
        options = SocktopusOptions(environ={f"{APP.upper()}_SOCKTOPUS_SECRET": SECRET})
        with self.assertRaises(usage.UsageError) as caught:
            options.parseOptions(["--redis", f"redis://relay:{password}@127.0.0.1:6379"])
        self.assertIn("--redis", str(caught.exception))
        for part in password.split("/"):
            self.assertNotIn(part, str(caught.exception))
