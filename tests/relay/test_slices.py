"""
Big backend requests handled a slice at a time: the same answers as small
ones, spread over reactor turns.
"""

from __future__ import annotations

import json
import tracemalloc
from collections.abc import Generator
from typing import Any

import orjson
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock, Cooperator
from twisted.trial.unittest import SynchronousTestCase

from socktopus_tw.apps import Apps
from socktopus_tw.errors import ApiError, MalformedRequest
from socktopus_tw.relay.api import KickResource, SendResource
from socktopus_tw.relay.registry import LocalRegistry
from socktopus_tw.relay.slices import decodeInSlices, encodeInSlices
from tests.support.fakes import FakeConnection

APP, SECRET = "demo", "demo-secret"


def finish(work: Generator[None, None, Any]) -> tuple[Any, int]:
    """
    Run a sliced piece of work to its end: its result and how often it yielded.
    """
    steps = 0
    while True:
        try:
            next(work)
        except StopIteration as done:
            return done.value, steps
        steps += 1


FIELDS = {"a", "b"}

#: Requests of the shape decodeInSlices reads (fields a and b, a the list),
#: that orjson accepts (and one it refuses, a lone surrogate, which the caller
#: checks in what it is given).
GOOD = [
    b'{"a":["1",{"k":"v"}],"b":"x"}',
    b' \r\n\t{ "b" : "x" , "a" : [ "1" , {"c" : "2" , "d":"3"} , "\\u00e9" , { } ] } \n',
    b'{"a":[]}',
    b'{"a":[ ]}',
    b"{}",
    b'{"b":""}',
    b'{"a":["1"],"a":["2","3"]}',
    b'{"a":[{"k":"1","k":"2"}],"b":"x","b":"y"}',
    '{"a":["é", "日本", "\U0001f600", "\\ud83d\\ude00"]}'.encode(),
    b'{"a":["\\ud800"]}',
    b'{"a":["say \\"hi\\" \\\\ } ] ,"]}',
]

#: Bodies the small path refuses, as not JSON (to orjson, which also refuses
#: NaN, infinite numbers and a lone surrogate in a value a repeated key
#: drops) or not a request of the expected shape.
BAD = [
    b"",
    b"   ",
    b"[]",
    b'"a"',
    b'{"a":["1","2",]}',
    b'{"a":["1" "2"]}',
    b'{"a":[,"1"]}',
    b'{"a":["1","2"}',
    b'{"a":["1"],}',
    b'{"a":["1"] "b":"2"}',
    b'{"a" ["1"]}',
    b'{1:["1"]}',
    b'{"a":["1"]} x',
    b'{"a":["1"]}{}',
    b'{"a":["1"]',
    b'{"a":[',
    b'{"a":["1"',
    b'{"a":[{"k":"v"}',
    b"\xef\xbb\xbf{}",
    b'{"a":["\xff"]}',
    b'{"a":["tab\there"]}',
    b'{"a":["\\x"]}',
    b'{"a":[1]}',
    b'{"a":[null]}',
    b'{"a":[NaN]}',
    b'{"a":[["1"]]}',
    b'{"a":[{"k":1}]}',
    b'{"a":[{"k":["v"]}]}',
    b'{"a":[{"k":{"x":"y"}}]}',
    b'{"a":[{"k":"v",}]}',
    b'{"a":[{"k" "v"}]}',
    b'{"a":"not a list"}',
    b'{"b":["not a string"]}',
    b'{"b":Infinity}',
    b'{"c":"unknown"}',
    b'{"c":[' + b"0," * 100000 + b"0]}",
    b'{"a":[' + b"[" * 100000 + b"]" * 100000 + b"]}",
    b'{"a":[{"k":"\\ud800","k":"x"}]}',
    b'{"a":["\\udfff"],"a":["1"]}',
    b'{"b":"\\udfff","b":"1"}',
]


def decode(body: bytes, step: int = 2) -> Any:
    return finish(decodeInSlices(body, FIELDS, "a", step))


class DecodeInSlicesTests(SynchronousTestCase):
    def test_sameAsJsonLoads(self):
        """
        Whatever json.loads makes of a request orjson accepts, so does the
        sliced decoder.
        """
        for body in GOOD:
            self.assertEqual(decode(body)[0], json.loads(body), body)

    def test_refusesWhatTheSmallPathRefuses(self):
        """
        What orjson refuses, and what is not a request's shape, is a
        L{MalformedRequest}, never another error.
        """
        for body in BAD:
            with self.assertRaises(MalformedRequest, msg=body[:60]):
                decode(body)

    def test_yieldsEveryStep(self):
        """
        It yields once per C{step} elements of the array, and only there.
        """
        body = orjson.dumps({"b": "x" * 1000, "a": [str(n) for n in range(10)]})
        value, steps = decode(body, step=3)
        self.assertEqual(value["a"], [str(n) for n in range(10)])
        self.assertEqual(steps, 3)


class EncodeInSlicesTests(SynchronousTestCase):
    def test_sameAsOrjson(self):
        """
        The bytes are orjson.dumps' bytes, however the lists fall into slices.
        """
        message = {"recipient": "r", "content": 'x"\\\u2028é'}
        for lengths in [(0, 0), (1, 0), (0, 1), (3, 3), (4, 5), (6, 7)]:
            value = {"succeeded": [message] * lengths[0], "failed": [message] * lengths[1]}
            encoded, steps = finish(encodeInSlices(value, 3))
            self.assertEqual(encoded, orjson.dumps(value))
            self.assertEqual(steps, sum(-(-n // 3) for n in lengths))


class Relay:
    """
    /send and /kick on a Clock whose cooperator runs one slice per turn,
    slices of 100 elements, and 250 connected clients.
    """

    def __init__(self, inlineLimit: int) -> None:
        self.clock = Clock()
        self.registry = LocalRegistry(self.clock)
        self.clients = [FakeConnection(self.registry, APP, f"c{n}") for n in range(250)]
        for client in self.clients:
            self.registry.register(client)
        apps = Apps({APP: SECRET})
        self.send = SendResource(apps, self.registry, self.clock, maxMessageSize=10)
        self.kick = KickResource(apps, self.registry, self.clock)
        for resource in self.send, self.kick:
            resource.inlineLimit = inlineLimit
            resource.sliceSize = 100
            # A turn is a millisecond of the clock: work scheduled during
            # one runs in the next (Clock.advance(0) would run it at once).
            resource.cooperator = Cooperator(
                terminationPredicateFactory=lambda: lambda: True,
                scheduler=lambda work: self.clock.callLater(0.001, work),
            )
        self.turns = 0

    def answer(self, resource: Any, body: Any) -> tuple[int, Any]:
        """
        The status and decoded answer for a request body, after as many
        reactor turns as it takes.
        """
        data = body if isinstance(body, bytes) else orjson.dumps(body)
        try:
            result = resource.post(data)
        except ApiError as e:
            return e.status, e.body()
        outcome: list[tuple[int, Any]] = []
        if isinstance(result, Deferred):
            result.addCallbacks(
                lambda value: outcome.append((200, value)),
                lambda failure: outcome.append((failure.value.status, failure.value.body())),
            )
            while not outcome:
                self.turns += 1
                self.clock.advance(0.001)
        else:
            outcome.append((200, result))
        status, value = outcome[0]
        return status, orjson.loads(value) if isinstance(value, bytes) else value

    def delivered(self) -> list[list[bytes]]:
        return [client.delivered for client in self.clients]


def send(*messages: tuple[str, str], **fields: Any) -> dict[str, Any]:
    body = {
        "secretName": APP,
        "secret": SECRET,
        "messages": [{"recipient": r, "content": c} for r, c in messages],
    }
    body.update(fields)
    return body


class BigRequestTests(SynchronousTestCase):
    def test_sameAnswersAsSmallRequests(self):
        """
        A body handled in slices gets the answer, and delivers the frames, that
        it would have had handled at once.
        """
        many = [(f"c{n % 260}", f"m{n}") for n in range(230)]
        bodies = [
            send(*many),
            send(("c1", "a"), ("nobody", "b"), ("c2", "far too long for the cap")),
            send(("c1", "\ud800")),
            send(("\ud800", "x")),
            send(*many, secret="wrong"),
            send(*many, secretName="nope"),
            send(*many, extra=1),
            {"secretName": APP, "secret": SECRET, "messages": [*many[:150], "not a message"]},
            {"secretName": APP, "secret": SECRET, "messages": "not a list"},
            {"secretName": "\ud800", "secret": SECRET, "messages": []},
            b'{"secretName":"demo","secret":"demo-secret","messages":[{"recipient":"c1",'
            b'"content":"\\ud800"}]}',
            b'{"secretName":"demo","secret":"demo-secret","messages":[{"recipient":"c1",'
            b'"content":"x"}] trailing',
        ]
        for body in bodies:
            if not isinstance(body, bytes):
                body = json.dumps(body).encode()
            small, big = Relay(inlineLimit=len(body)), Relay(inlineLimit=0)
            self.assertEqual(small.answer(small.send, body), big.answer(big.send, body), body[:120])
            self.assertEqual(small.delivered(), big.delivered())

    def test_kickSameAnswers(self):
        """
        So does a big /kick.
        """
        ids = [f"c{n}" for n in range(0, 300, 2)]
        for body in [
            {"secretName": APP, "secret": SECRET, "connections": ids},
            {"secretName": APP, "secret": SECRET, "connections": [*ids, 1]},
            {"secretName": APP, "secret": SECRET, "connections": ["\ud800"]},
        ]:
            data = json.dumps(body).encode()
            small, big = Relay(inlineLimit=len(data)), Relay(inlineLimit=0)
            self.assertEqual(small.answer(small.kick, data), big.answer(big.kick, data))

    def test_spreadOverReactorTurns(self):
        """
        No reactor turn decodes, checks, delivers or encodes more than a slice
        of a big batch: 230 messages in slices of 100 take a turn per slice
        of each stage, and none is delivered before all are checked.
        """
        relay = Relay(inlineLimit=0)
        body = orjson.dumps(send(*[(f"c{n}", f"m{n}") for n in range(230)]))
        answers: list[bytes] = []
        relay.send.post(body).addCallback(answers.append)
        turns = 0
        while not answers:
            relay.clock.advance(0.001)
            turns += 1
            if turns <= 5:
                self.assertEqual(sum(map(len, relay.delivered())), 0)
        self.assertEqual(len(orjson.loads(answers[0])["succeeded"]), 230)
        # Decoding (2 yields), checking (3), delivering (3) and encoding (3).
        self.assertGreaterEqual(turns, 11)


class BigKickTests(SynchronousTestCase):
    def test_bigKickIsAppliedASliceAtATime(self) -> None:
        """
        A /kick of 250 connected clients, in slices of 100: no reactor turn
        closes more than a slice of them, as no turn delivers more than a
        slice of a big /send.
        """
        relay = Relay(inlineLimit=0)
        ids = [f"c{n}" for n in range(250)]
        body = json.dumps({"secretName": APP, "secret": SECRET, "connections": ids}).encode()
        answers: list[Any] = []
        relay.kick.post(body).addBoth(answers.append)
        perTurn = []
        while not answers and len(perTurn) < 100:
            before = sum(c.evictions for c in relay.clients)
            relay.clock.advance(0.001)
            perTurn.append(sum(c.evictions for c in relay.clients) - before)
        self.assertEqual(sum(perTurn), 250)
        self.assertLessEqual(max(perTurn), relay.kick.sliceSize)


class HostileBigBodyTests(SynchronousTestCase):
    def worstTurn(self, body: bytes) -> int:
        """
        The most memory one reactor turn allocates while C{body} is handled
        a slice at a time: building Python objects is the work that holds
        the reactor, so this counts it without timing anything.
        """
        relay = Relay(inlineLimit=0)
        answers: list[Any] = []
        tracemalloc.start()
        try:
            relay.send.post(body).addBoth(answers.append)
            worst = 0
            for _ in range(10000):
                if answers:
                    break
                tracemalloc.reset_peak()
                before = tracemalloc.get_traced_memory()[0]
                relay.clock.advance(0.001)
                worst = max(worst, tracemalloc.get_traced_memory()[1] - before)
        finally:
            tracemalloc.stop()
        self.assertEqual(len(answers), 1)
        return worst

    def test_noTurnDecodesTheBulkOfABody(self) -> None:
        """
        A body whose bulk is not the elements of its array (an unknown
        field, an array inside one element) is not decoded in one reactor
        turn: no turn does more than a legitimate big batch's turns do,
        about the body's size (its text is decoded whole).
        """
        start = b'{"secretName":"%s","secret":"%s",' % (APP.encode(), SECRET.encode())
        numbers = b",".join([b"1.5"] * 100000)
        legit = json.dumps(send(*[(f"c{n % 250}", "m") for n in range(20000)])).encode()
        bodies = {
            "legitimate": legit,
            "unknown field": start + b'"messages":[],"junk":[' + numbers + b"]}",
            "nested array": start + b'"messages":[[' + numbers + b"]]}",
        }
        over = {name: (self.worstTurn(body), len(body)) for name, body in bodies.items()}
        self.assertEqual({name: n for name, n in over.items() if n[0] > 2 * n[1]}, {})
