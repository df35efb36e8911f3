"""
C{POST /presence} (SPEC §7.1, L{socktopus_tw.relay.api.PresenceResource}):
end to end through the real daemon on a free port (treq, real WebSocket
clients; a two-node cluster over a real redis-server), and its big requests
and late registry answers driven on a L{Clock}.
"""

from __future__ import annotations

import json
import tracemalloc
from time import perf_counter
from typing import Any

import orjson
import treq
from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults, inlineCallbacks
from twisted.internet.task import Clock, Cooperator
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase

from socktopus_tw.apps import Apps
from socktopus_tw.errors import ApiError
from socktopus_tw.http.respond import errorFor
from socktopus_tw.relay.api import PresenceResource
from socktopus_tw.relay.registry import LocalRegistry
from tests.cluster.test_registry import ClusterTestsMixin
from tests.relay.test_api import MISSING, ChunkedBody
from tests.support.daemon import APP, OTHER_APP, OTHER_SECRET, SECRET, Daemon
from tests.support.fakes import FakeConnection
from tests.support.relay import (
    INVALID_SECRET,
    NOT_FOUND,
    SECRET_NOT_FOUND,
    RelayApiTestCase,
    raw,
)

TOO_LARGE = {"code": 413, "message": "Request body too large"}

#: Ids in a request too big to be handled at once (over 256 KiB).
MANY = 100_000


def presenceBody(**fields: Any) -> dict[str, Any]:
    """
    A good C{/presence} body for app demo, with C{fields} replaced (or removed).
    """
    body = {"secretName": APP, "secret": SECRET, "connections": ["c1"]}
    body.update(fields)
    return {k: v for k, v in body.items() if v is not MISSING}


def uuidLike(n: int) -> str:
    """
    A connection id as long as a UUID's text, as many backends' ids are.
    """
    return f"{n:08x}-0000-4000-8000-{n:012x}"


def presence(daemon: Daemon, connections: Any = MISSING, app: str = APP, secret: str = SECRET):
    """
    C{POST /presence} to C{daemon}: C{(status, answer, response)}.
    """
    return daemon.post(
        "/presence", presenceBody(connections=connections, secretName=app, secret=secret)
    )


class ReactorWatch:
    """
    A call every reactor turn, timing the longest gap between two: how long
    the reactor was held, for everyone, by whatever ran in between.
    """

    def __init__(self) -> None:
        self.longest = 0.0
        self._last = perf_counter()
        self._call = reactor.callLater(0, self._tick)

    def _tick(self) -> None:
        now = perf_counter()
        self.longest = max(self.longest, now - self._last)
        self._last = now
        self._call = reactor.callLater(0, self._tick)

    def stop(self) -> float:
        """
        Stop watching: the longest gap, in seconds.
        """
        self._call.cancel()
        return self.longest


#: The longest the reactor may be held while a big request is handled (its
#: cooperator works 10 ms a turn). Here 100,000 UUID-long ids hold it about
#: 12 ms a turn; handled as one piece, 55 ms. That the work is cut into
#: slices at all is shown on a Clock (L{PresenceInSlicesTests}); this is the
#: bound a client sees.
HELD_AT_MOST = 0.05


class PresenceTests(RelayApiTestCase):
    """
    What /presence answers.
    """

    @inlineCallbacks
    def test_askedIdsInTheirOrder(self):
        """
        The ids asked about come back in the order asked, each in the list
        it belongs to, duplicates as many times as given.
        """
        yield self.daemon.connect("c1")
        yield self.daemon.connect("c2")
        asked = ["c2", "nobody", "c1", "c2", "nobody", "C1", ""]
        status, answer, response = yield presence(self.daemon, asked)
        self.assertEqual(
            (status, answer),
            (
                200,
                {"connected": ["c2", "c1", "c2"], "notConnected": ["nobody", "nobody", "C1", ""]},
            ),
        )
        self.assertEqual(response.headers.getRawHeaders(b"content-type"), [b"application/json"])

    @inlineCallbacks
    def test_withoutConnectionsEveryConnectedIdAndTheCount(self):
        """
        Without C{connections}: how many of the app's clients are connected
        and their ids, none of another app's.
        """
        for connectionId in ["alice", "bob", "\u00fcser \u2603"]:
            yield self.daemon.connect(connectionId)
        yield self.daemon.connect("carol", app=OTHER_APP, secret=OTHER_SECRET)
        status, answer, _ = yield presence(self.daemon)
        self.assertEqual(status, 200)
        self.assertEqual(answer.keys(), {"count", "connected"})
        self.assertEqual(answer["count"], 3)
        self.assertEqual(sorted(answer["connected"]), ["alice", "bob", "\u00fcser \u2603"])
        status, answer, _ = yield presence(self.daemon, app=OTHER_APP, secret=OTHER_SECRET)
        self.assertEqual((status, answer), (200, {"count": 1, "connected": ["carol"]}))

    @inlineCallbacks
    def test_nobodyConnected(self):
        """An app without clients: a count of 0; asking about nobody: two empty lists."""
        status, answer, _ = yield presence(self.daemon)
        self.assertEqual((status, answer), (200, {"count": 0, "connected": []}))
        yield self.daemon.connect("c1")
        status, answer, _ = yield presence(self.daemon, [])
        self.assertEqual((status, answer), (200, {"connected": [], "notConnected": []}))

    @inlineCallbacks
    def test_followsConnectsAndCloses(self):
        """A kicked or closed client is no longer connected; one that came back is."""
        c1 = yield self.daemon.connect("c1")
        c2 = yield self.daemon.connect("c2")
        yield self.daemon.kick(["c1"])
        yield c1.closed
        c2.sendText("CLOSE")
        yield c2.closed
        _, answer, _ = yield presence(self.daemon, ["c1", "c2"])
        self.assertEqual(answer, {"connected": [], "notConnected": ["c1", "c2"]})
        yield self.daemon.connect("c2")
        _, answer, _ = yield presence(self.daemon)
        self.assertEqual(answer, {"count": 1, "connected": ["c2"]})

    @inlineCallbacks
    def test_appNameIsCaseInsensitive(self):
        """The app name in capitals is the same app."""
        yield self.daemon.connect("c1")
        _, answer, _ = yield presence(self.daemon, ["c1"], app="DEMO")
        self.assertEqual(answer, {"connected": ["c1"], "notConnected": []})

    @inlineCallbacks
    def test_metacharactersAreIdsLikeAnyOther(self):
        """Quotes, SQL and HTML in ids are looked up and echoed literally."""
        nasty = 'x\'); DROP TABLE users; -- <script>alert("&amp;")</script> %s {0} \u2028'
        yield self.daemon.connect(nasty)
        _, answer, _ = yield presence(self.daemon, [nasty, "' OR '1'='1", "*"])
        self.assertEqual(answer, {"connected": [nasty], "notConnected": ["' OR '1'='1", "*"]})
        _, answer, _ = yield presence(self.daemon)
        self.assertEqual(answer, {"count": 1, "connected": [nasty]})

    @inlineCallbacks
    def test_bothHttpPathsAnswerAlike(self):
        """
        A chunked body, which the fast path leaves to twisted.web, gets the
        same answer as a plain one.
        """
        yield self.daemon.connect("c1")
        for body in [presenceBody(connections=["c1", "c9"]), presenceBody(connections=MISSING)]:
            plain = yield self.daemon.post("/presence", body)
            response = yield treq.request(
                "POST",
                self.daemon.url + "/presence",
                data=ChunkedBody(raw(body), chunkSize=5),
                agent=self.daemon.agent,
            )
            chunked = yield response.json()
            self.assertEqual((response.code, chunked), plain[:2])

    @inlineCallbacks
    def test_listedOnTheHomePage(self):
        """The home page's overview of endpoints names /presence."""
        _, page, _ = yield self.daemon.request("GET", "/")
        self.assertIn(b"<code>/presence</code>", page)


class PresenceRefusalTests(RelayApiTestCase):
    """
    Everything /presence refuses, exactly as /send and /kick refuse it.
    """

    def test_badJson(self):
        good = raw(presenceBody())
        return self.assertMalformed(
            "/presence",
            [b"", b" ", b"{", b"nope", good[:-1], good + b"]", good + good, b"{'secretName': 1}"],
        )

    def test_nonObjects(self):
        return self.assertMalformed("/presence", [[], [presenceBody()], "c1", 0, 1.5, None, True])

    def test_missingFields(self):
        """Only connections may be left out; each credential is needed."""
        return self.assertMalformed(
            "/presence",
            [
                presenceBody(secretName=MISSING),
                presenceBody(secret=MISSING),
                presenceBody(secretName=MISSING, connections=MISSING),
                presenceBody(secret=MISSING, connections=MISSING),
                {},
            ],
        )

    def test_unknownFields(self):
        """A misspelt or unknown field is a 400, with or without connections."""
        return self.assertMalformed(
            "/presence",
            [
                presenceBody(extra=1),
                presenceBody(connections=MISSING, extra=1),
                presenceBody(connections=MISSING, connection=["c1"]),
                presenceBody(connections=MISSING, Connections=["c1"]),
                presenceBody(messages=[]),
                presenceBody(connections=MISSING, messages=[]),
                presenceBody(secretname=APP),
            ],
        )

    def test_wrongTypes(self):
        """A value of the wrong type anywhere, an id that is not a string, is a 400."""
        return self.assertMalformed(
            "/presence",
            [
                presenceBody(secretName=1),
                presenceBody(secretName=None),
                presenceBody(secretName=[APP]),
                presenceBody(secret=123),
                presenceBody(secret=None, connections=MISSING),
                presenceBody(connections="c1"),
                presenceBody(connections={"c1": True}),
                # Null is not "left out": an absent field is.
                presenceBody(connections=None),
                presenceBody(connections=1),
                presenceBody(connections=True),
                presenceBody(connections=[1]),
                presenceBody(connections=["c1", None]),
                presenceBody(connections=[["c1"]]),
                presenceBody(connections=[{"id": "c1"}]),
                presenceBody(connections=[True]),
                presenceBody(connections=["c1", 2.5]),
            ],
        )

    def test_notText(self):
        """Lone surrogates and bytes that are not UTF-8 are a 400, not a 500."""
        return self.assertMalformed(
            "/presence",
            [
                presenceBody(connections=["\ud800"]),
                presenceBody(connections=["c1", "ok \udfff"]),
                presenceBody(secret="\ud800"),
                presenceBody(secretName="\udbff", connections=MISSING),
                b'{"secretName":"demo","secret":"%s","connections":["\xff"]}' % SECRET.encode(),
                b'{"secretName":"dem\xff","secret":"%s"}' % SECRET.encode(),
                b'{"secretName":"demo","secret":"%s","connections":["\xed\xa0\x80"]}'
                % SECRET.encode(),
                raw(presenceBody()).decode().encode("utf-16"),
            ],
        )

    def test_hostileNesting(self):
        """A deeply nested body is a 400, not a RecursionError."""
        closed = b"[" * 100000 + b"]" * 100000
        return self.assertMalformed(
            "/presence",
            [
                b"[" * 100000,
                closed,
                b'{"a":' * 50000,
                b'{"secretName":"demo","secret":"%s","connections":%s}' % (SECRET.encode(), closed),
                b'{"secretName":"demo","secret":"%s","connections":[%s]}'
                % (SECRET.encode(), closed),
            ],
        )

    def test_bigMalformedBodies(self):
        """Over 256 KiB, handled a slice at a time, the same refusals."""
        pad = "x" * (300 * 1024)
        many = [f"c{n}" for n in range(30000)]
        return self.assertMalformed(
            "/presence",
            [
                raw(presenceBody(connections=[pad, 1])),
                raw(presenceBody(connections=[*many, None])),
                raw(presenceBody(connections=[*many, "\ud800"])),
                raw(presenceBody(connections=[*many, ["c1"]])),
                raw(presenceBody(extra=pad)),
                raw(presenceBody(connections=MISSING, extra=pad)),
                raw(presenceBody(connections=MISSING, secret=MISSING)) + b" " * len(pad),
                raw(presenceBody(connections=many))[:-1],
                raw(presenceBody(connections=many)) + b"x",
                b"[" * (300 * 1024),
            ],
        )

    @inlineCallbacks
    def test_unknownAppAndWrongSecret(self):
        """A typo in the app name is 404 Secret not found; a wrong secret 401 Invalid secret."""
        for fields in [{}, {"connections": MISSING}]:
            yield self.assertAnswers(
                "/presence",
                [
                    presenceBody(secretName="nosuchapp", **fields),
                    presenceBody(secretName="", **fields),
                    presenceBody(secretName="demo ", **fields),
                ],
                404,
                SECRET_NOT_FOUND,
            )
            yield self.assertAnswers(
                "/presence",
                [
                    presenceBody(secret="wrong", **fields),
                    presenceBody(secret="", **fields),
                    presenceBody(secret=SECRET.upper(), **fields),
                    presenceBody(secretName=OTHER_APP, **fields),
                ],
                401,
                INVALID_SECRET,
            )

    @inlineCallbacks
    def test_bigBodiesWithWrongCredentials(self):
        """A big body is refused for its credentials wherever they are."""
        ids = [f"connection-{n}" for n in range(30000)]
        wrong = {"connections": ids, "secret": "wrong", "secretName": APP}
        unknown = {"secretName": "nosuchapp", "connections": ids, "secret": SECRET}
        yield self.assertAnswers("/presence", [raw(wrong)], 401, INVALID_SECRET)
        yield self.assertAnswers("/presence", [raw(unknown)], 404, SECRET_NOT_FOUND)

    @inlineCallbacks
    def test_wrongMethodsAndPaths(self):
        """Any method but POST is a JSON 405 naming POST; a longer path a JSON 404."""
        for method in ["GET", "PUT", "DELETE", "PATCH"]:
            status, answer, response = yield self.daemon.request(method, "/presence")
            self.assertEqual(
                (status, answer), (405, {"code": 405, "message": "Method not allowed"}), method
            )
            self.assertEqual(response.headers.getRawHeaders(b"allow"), [b"POST"])
        for path in ["/presence/x", "/presence/", "/Presence"]:
            status, answer, _ = yield self.daemon.post(path, presenceBody())
            self.assertEqual((status, answer), (404, NOT_FOUND), path)

    @inlineCallbacks
    def test_refusedRequestsChangeNothing(self):
        """A refused presence request kicks nobody and leaves the next one right."""
        client = yield self.daemon.connect("c1")
        for body in [presenceBody(secret="wrong"), presenceBody(connections=["c1", 1])]:
            status, _, _ = yield self.daemon.post("/presence", body)
            self.assertNotEqual(status, 200)
        _, answer, _ = yield presence(self.daemon, ["c1"])
        self.assertEqual(answer, {"connected": ["c1"], "notConnected": []})
        self.assertEqual(client.received, [])


class PresenceLimitTests(TestCase):
    """
    The body limit (SPEC §3.5), and big requests and answers through the
    real daemon: right, and never holding the reactor long.
    """

    timeout = 120

    @inlineCallbacks
    def test_bodyOverLimitIs413(self):
        """Over --max-body-size, plain or chunked, a JSON 413; the daemon goes on."""
        daemon = Daemon(self, "--max-body-size", "1KiB")
        body = raw(presenceBody(connections=[f"c{i}" for i in range(400)]))
        status, answer, _ = yield daemon.post("/presence", body)
        self.assertEqual((status, answer), (413, TOO_LARGE))
        response = yield treq.request(
            "POST", daemon.url + "/presence", data=ChunkedBody(body), agent=daemon.agent
        )
        self.assertEqual((response.code, (yield response.json())), (413, TOO_LARGE))
        status, answer, _ = yield presence(daemon, ["c1"])
        self.assertEqual((status, answer), (200, {"connected": [], "notConnected": ["c1"]}))

    @inlineCallbacks
    def timedPresence(self, daemon: Daemon, body: bytes):
        """
        C{POST /presence} of C{body}: the status, the decoded answer, and the
        longest the reactor was held until the answer had arrived.
        """
        watch = ReactorWatch()
        try:
            response = yield treq.request(
                "POST", daemon.url + "/presence", data=body, agent=daemon.agent
            )
            content = yield response.content()
        finally:
            held = watch.stop()
        return response.code, orjson.loads(content), held

    @inlineCallbacks
    def test_hundredThousandIds(self):
        """
        100,000 ids, a few of them connected (some asked twice): the answer
        keeps their order, and the reactor is never held long meanwhile.
        """
        daemon = Daemon(self)
        ids = [uuidLike(n) for n in range(MANY)]
        here = [ids[7], ids[50000], ids[-1]]
        clients = yield gatherResults([daemon.connect(i) for i in here])
        ids += [ids[7], ids[-1]]
        body = raw(presenceBody(connections=ids))
        self.assertGreater(len(body), PresenceResource.inlineLimit)
        status, answer, held = yield self.timedPresence(daemon, body)
        self.assertEqual(status, 200)
        self.assertEqual(answer["connected"], [*here, here[0], here[2]])
        self.assertEqual(answer["notConnected"], [i for i in ids if i not in set(here)])
        self.assertLess(held, HELD_AT_MOST, f"the reactor was held for {held * 1000:.0f} ms")
        self.assertEqual([c.received for c in clients], [[], [], []])

    @inlineCallbacks
    def test_hundredThousandConnectedIds(self):
        """
        An app with 100,000 clients: the answer without connections lists
        them all, and is encoded without holding the reactor long.
        """
        daemon = Daemon(self)
        registry = daemon.registry
        # 200,000 lines of connects and disconnects in the test's log would
        # take seconds, and are not what this tests.
        self.patch(registry, "log", Logger(observer=lambda event: None))
        ids = [uuidLike(n) for n in range(MANY)]
        fakes = [FakeConnection(registry, APP, i, closesAtOnce=True) for i in ids]
        for fake in fakes:
            registry.register(fake)
        # Gone before the daemon stops, which would wait for their closes.
        self.addCleanup(lambda: [registry.unregister(fake) for fake in fakes])
        real = yield daemon.connect("a real one")
        status, answer, held = yield self.timedPresence(
            daemon, raw(presenceBody(connections=MISSING))
        )
        self.assertEqual(status, 200)
        self.assertEqual(answer["count"], MANY + 1)
        self.assertEqual(sorted(answer["connected"]), sorted([*ids, "a real one"]))
        self.assertLess(held, HELD_AT_MOST, f"the reactor was held for {held * 1000:.0f} ms")
        self.assertEqual(real.received, [])

    @inlineCallbacks
    def test_paddedRequestWithoutConnections(self):
        """A request without connections padded past 256 KiB is answered as a small one."""
        daemon = Daemon(self)
        yield daemon.connect("c1")
        body = raw(presenceBody(connections=MISSING))[:-1] + b" " * (300 * 1024) + b"}"
        status, answer, _ = yield daemon.post("/presence", body)
        self.assertEqual((status, answer), (200, {"count": 1, "connected": ["c1"]}))

    @inlineCallbacks
    def test_bigBodyWithCredentialsLast(self):
        """The credentials may come after a big list of ids."""
        daemon = Daemon(self)
        yield daemon.connect("c3")
        ids = [f"c{n}" for n in range(30000)]
        body = json.dumps({"connections": ids, "secret": SECRET, "secretName": APP}).encode()
        status, answer, _ = yield daemon.post("/presence", body)
        self.assertEqual(status, 200)
        self.assertEqual(answer["connected"], ["c3"])
        self.assertEqual(len(answer["notConnected"]), 29999)


class ClusterPresenceTests(ClusterTestsMixin, TestCase):
    """
    /presence on one node of two answers for the connections of both.
    """

    timeout = 120

    @inlineCallbacks
    def test_connectionsOnBothNodes(self):
        """
        Ids connected on either node are connected, in the order asked;
        without connections, every id of the app, wherever it is.
        """
        a, b = self.startCluster(2)
        yield a.connect("alice")
        yield b.connect("bob")
        yield b.connect("carol", app=OTHER_APP, secret=OTHER_SECRET)
        yield self.settled(a, b)
        for node in (a, b):
            status, answer, _ = yield presence(node, ["bob", "zed", "alice", "bob", "carol"])
            self.assertEqual(
                (status, answer),
                (200, {"connected": ["bob", "alice", "bob"], "notConnected": ["zed", "carol"]}),
            )
            status, answer, _ = yield presence(node)
            self.assertEqual(status, 200)
            self.assertEqual(answer["count"], 2)
            self.assertEqual(sorted(answer["connected"]), ["alice", "bob"])

    @inlineCallbacks
    def test_bigRequestsAcrossNodes(self):
        """
        A big request whose ids are on the other node, and an answer of more
        than a slice of ids from there, are right (each waits for Redis).
        """
        a, b = self.startCluster(2)
        yield b.connect("user-3")
        fakes = [
            FakeConnection(b.registry, APP, f"far-{n}", closesAtOnce=True) for n in range(2500)
        ]
        for fake in fakes:
            b.registry.register(fake)
        self.addCleanup(lambda: [b.registry.unregister(fake) for fake in fakes])
        yield self.settled(a, b)
        ids = [f"user-{n}" for n in range(30000)] + ["far-2499", "user-3"]
        status, answer, _ = yield a.post("/presence", raw(presenceBody(connections=ids)))
        self.assertEqual(status, 200)
        self.assertEqual(answer["connected"], ["user-3", "far-2499", "user-3"])
        self.assertEqual(len(answer["notConnected"]), 29999)
        status, answer, _ = yield presence(a)
        self.assertEqual(status, 200)
        self.assertEqual(answer["count"], 2501)
        self.assertEqual(
            sorted(answer["connected"]), sorted([f"far-{n}" for n in range(2500)] + ["user-3"])
        )


class LateRegistry(LocalRegistry):
    """
    A registry whose presence answers come a clock tick later, as other
    nodes' do; C{fail} makes them fail. Records the ids of each call.
    """

    fail = False

    def __init__(self, clock: Clock) -> None:
        super().__init__(clock)
        self.calls: list[list[str] | None] = []

    def presence(self, app: str, connectionIds: list[str] | None = None) -> Deferred[Any]:
        self.calls.append(connectionIds)
        outcome = super().presence(app, connectionIds)
        d: Deferred[Any] = Deferred()
        if self.fail:
            self.clock.callLater(0.0005, d.errback, RuntimeError("Redis went away"))
        else:
            self.clock.callLater(0.0005, d.callback, outcome)
        return d


class PresenceInSlicesTests(SynchronousTestCase):
    """
    L{PresenceResource} on a L{Clock}: big requests spread over reactor
    turns, and registries that answer later.
    """

    def relay(self, registry: LocalRegistry, connected: int = 250) -> PresenceResource:
        self.clock = registry.clock
        for n in range(connected):
            registry.register(FakeConnection(registry, APP, f"c{n}"))
        resource = PresenceResource(Apps({APP: SECRET}), registry, self.clock)
        resource.sliceSize = 100
        # A turn is a millisecond of the clock: one step of work each.
        resource.cooperator = Cooperator(
            terminationPredicateFactory=lambda: lambda: True,
            scheduler=lambda work: self.clock.callLater(0.001, work),
        )
        return resource

    def answer(self, resource: PresenceResource, body: Any, inlineLimit: int = 0) -> Any:
        """
        The status and decoded answer, and how many turns it took.
        """
        resource.inlineLimit = inlineLimit
        data = body if isinstance(body, bytes) else orjson.dumps(body)
        try:
            result = resource.post(data)
        except ApiError as e:
            return (e.status, e.body()), 0
        outcome: list[Any] = []
        turns = 0
        if isinstance(result, Deferred):

            def failed(failure: Failure) -> None:
                # As the fast path answers it (an unexpected error is logged).
                error = errorFor(failure, b"POST", b"/presence")
                outcome.append((error.status, error.body()))

            result.addCallbacks(lambda value: outcome.append((200, value)), failed)
            while not outcome and turns < 10000:
                turns += 1
                self.clock.advance(0.001)
        else:
            outcome.append((200, result))
        status, value = outcome[0]
        return (status, orjson.loads(value) if isinstance(value, bytes) else value), turns

    def test_sameAnswersBigOrSmall(self):
        """
        A body handled in slices gets the answer it would have had at once,
        from a registry that answers at once or later.
        """
        ids = [f"c{n}" for n in range(0, 600, 3)] + ["c1", "c1"]
        bodies = [
            presenceBody(connections=ids),
            presenceBody(connections=MISSING),
            presenceBody(connections=[]),
            presenceBody(connections=[*ids, 1]),
            presenceBody(connections=["\ud800"]),
            presenceBody(connections=ids, secret="wrong"),
            presenceBody(connections=MISSING, extra=[]),
        ]
        for registryType in (LocalRegistry, LateRegistry):
            for body in bodies:
                data = json.dumps(body).encode()
                small = self.answer(self.relay(registryType(Clock())), data, len(data))[0]
                big = self.answer(self.relay(registryType(Clock())), data)[0]
                self.assertEqual(small, big, (registryType, body))

    def test_bigRequestIsLookedUpASliceATime(self):
        """
        250 ids in slices of 100: the registry is asked a slice per turn,
        after every id has been checked, and the answer keeps their order.
        """
        registry = LateRegistry(Clock())
        resource = self.relay(registry)
        ids = [f"c{n}" for n in range(349, 0, -2)] * 2
        (status, answer), turns = self.answer(resource, presenceBody(connections=ids))
        self.assertEqual(status, 200)
        self.assertEqual(answer["connected"], [i for i in ids if int(i[1:]) < 250])
        self.assertEqual(answer["notConnected"], [i for i in ids if int(i[1:]) >= 250])
        self.assertEqual([len(call) for call in registry.calls], [100, 100, 100, 50])
        # Decoding, checking, looking up (waiting on each) and encoding.
        self.assertGreaterEqual(turns, 4 * 3 + 4)

    def test_bigAnswerIsEncodedASliceATime(self):
        """
        A small request answered with more than a slice of ids is encoded
        over several turns; one within a slice is answered at once.
        """
        resource = self.relay(LocalRegistry(Clock()), connected=250)
        body = presenceBody(connections=MISSING)
        (status, answer), turns = self.answer(resource, body, inlineLimit=10000)
        self.assertEqual(status, 200)
        self.assertEqual(answer, {"count": 250, "connected": [f"c{n}" for n in range(250)]})
        # A turn per slice of 100 ids, at least.
        self.assertGreaterEqual(turns, 3)
        (status, answer), turns = self.answer(
            resource, presenceBody(connections=["c1"] * 100), inlineLimit=10000
        )
        self.assertEqual((status, turns), (200, 0))

    def test_lateAnswersAtOnceAndInSlices(self):
        """
        A registry that answers later (a cluster) is waited for, for a small
        request, a big one, and an answer of more than a slice of ids.
        """
        for body, inlineLimit in [
            (presenceBody(connections=["c1", "c999", "c1"]), 10000),
            (presenceBody(connections=MISSING), 10000),
            (presenceBody(connections=["c1", "c999", "c1"] * 100), 0),
        ]:
            resource = self.relay(LateRegistry(Clock()), connected=250)
            (status, answer), turns = self.answer(resource, body, inlineLimit)
            self.assertEqual(status, 200)
            self.assertGreater(turns, 0)
            if "connections" in body:
                self.assertEqual(len(answer["connected"]), len(body["connections"]) * 2 // 3)
            else:
                self.assertEqual(answer["count"], 250)

    def test_registryFailureIsA500(self):
        """
        A registry whose answer fails is a JSON 500, for a small request
        and a big one, not a request left hanging.
        """
        for inlineLimit in (10000, 0):
            registry = LateRegistry(Clock())
            registry.fail = True
            (status, answer), _ = self.answer(
                self.relay(registry), presenceBody(connections=["c1"] * 300), inlineLimit
            )
            self.assertEqual(status, 500)
            self.assertEqual(answer["code"], 500)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 2)

    def test_wrongSecretCostsLittle(self):
        """
        A big body with a wrong secret (after its ids) is refused without its
        ids being decoded: a small part of its size in memory.
        """
        ids = [f"connection-{n}" for n in range(40000)]
        body = json.dumps({"connections": ids, "secretName": APP, "secret": "wrong"}).encode()
        resource = self.relay(LocalRegistry(Clock()))
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            (status, answer), _ = self.answer(resource, body)
            peak = tracemalloc.get_traced_memory()[1] - before
        finally:
            tracemalloc.stop()
        self.assertEqual((status, answer), (401, INVALID_SECRET))
        self.assertLess(peak, len(body) // 8, f"{peak} bytes for a {len(body)}-byte body")
