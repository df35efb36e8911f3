"""
The registry seam (L{IRegistry}): what the relay's edges may rely on,
whichever registry they hold. C{/send} and C{/kick} are driven against a
registry whose outcomes come later, as a cluster's do, and must answer
exactly as against the local one.
"""

from __future__ import annotations

import json
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from socktopus_tw.apps import Apps
from socktopus_tw.errors import InvalidSecret
from socktopus_tw.relay.api import KickResource, SendResource
from socktopus_tw.relay.registry import IRegistry, LocalRegistry
from tests.support.fakes import FakeConnection

APP, SECRET = "demo", "s3cret"


@implementer(IRegistry)
class LaterRegistry:
    """
    A L{LocalRegistry} whose deliveries and kicks are dispatched at once but
    whose outcomes are only known when the test says: a cluster waiting for
    other nodes.
    """

    def __init__(self, local: LocalRegistry) -> None:
        self.local = local
        self.waiting: list[tuple[Deferred[Any], Any]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.local, name)

    def _later(self, outcome: Any) -> Deferred[Any]:
        d: Deferred[Any] = Deferred()
        self.waiting.append((d, outcome))
        return d

    def deliverBatch(
        self, app: str, recipients: list[str], payloads: list[bytes | None]
    ) -> Deferred[list[bool]]:
        return self._later(self.local.deliverBatch(app, recipients, payloads))

    def kick(self, app: str, connectionIds: list[str]) -> Deferred[Any]:
        return self._later(self.local.kick(app, connectionIds))

    def answer(self) -> None:
        """
        Every outcome arrives, the last-dispatched first.
        """
        waiting, self.waiting = self.waiting, []
        for d, outcome in reversed(waiting):
            d.callback(outcome)


def body(**fields: Any) -> bytes:
    return json.dumps({"secretName": APP, "secret": SECRET, **fields}).encode()


class SeamTestCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.local = LocalRegistry(self.clock)
        self.apps = Apps({APP: SECRET})
        self.recipient = FakeConnection(self.local, APP, "c1")
        self.local.register(self.recipient)

    def settle(self) -> None:
        while self.clock.getDelayedCalls():
            self.clock.advance(0)


class LocalRegistryTests(SeamTestCase):
    def test_providesTheInterface(self) -> None:
        """
        The local registry is a whole L{IRegistry}.
        """
        self.assertTrue(verifyObject(IRegistry, self.local))

    def test_presenceOfSomeIds(self) -> None:
        """
        Asked about ids, the registry says which are connected, in the order asked.
        """
        self.local.register(FakeConnection(self.local, APP, "c2"))
        self.assertEqual(self.local.presence(APP, ["c9", "c2", "c1"]), (["c2", "c1"], ["c9"]))
        self.assertEqual(self.local.presence("other", ["c1"]), ([], ["c1"]))

    def test_presenceOfEveryone(self) -> None:
        """
        Asked about nobody in particular, it lists every connected id of that app only.
        """
        self.local.register(FakeConnection(self.local, APP, "c2"))
        self.local.register(FakeConnection(self.local, "other", "x"))
        connected, notConnected = self.local.presence(APP)
        self.assertEqual((sorted(connected), notConnected), (["c1", "c2"], []))


class LaterOutcomesTests(SeamTestCase):
    """
    C{/send} and C{/kick} against a registry that answers later.
    """

    def setUp(self) -> None:
        super().setUp()
        self.registry = LaterRegistry(self.local)
        self.send = SendResource(self.apps, self.registry, self.clock)
        self.kick = KickResource(self.apps, self.registry, self.clock)

    def answerOf(self, result: Any) -> Any:
        self.assertIsInstance(result, Deferred)
        self.settle()
        self.assertNoResult(result)
        self.registry.answer()
        self.settle()
        answer = self.successResultOf(result)
        return json.loads(answer) if isinstance(answer, bytes) else answer

    def test_sendWaitsForTheOutcomes(self) -> None:
        """
        A small batch is answered once the registry knows where each message went.
        """
        messages = [{"recipient": "c1", "content": "a"}, {"recipient": "c2", "content": "b"}]
        answer = self.answerOf(self.send.post(body(messages=messages)))
        self.assertEqual(answer, {"succeeded": messages[:1], "failed": messages[1:]})
        self.assertEqual(self.recipient.delivered, [b"DATA:a"])

    def test_bigSendKeepsItsOrder(self) -> None:
        """
        A batch delivered a slice at a time is answered in the order given,
        whatever order the slices' outcomes arrive in.
        """
        step = self.send.sliceSize
        messages = [
            {"recipient": "c1" if n % 3 else "gone", "content": str(n)} for n in range(2 * step + 5)
        ]
        self.send.inlineLimit = 0  # the sliced path, without a 256 KiB body
        answer = self.answerOf(self.send.post(body(messages=messages)))
        self.assertEqual(answer["succeeded"], [m for m in messages if m["recipient"] == "c1"])
        self.assertEqual(answer["failed"], [m for m in messages if m["recipient"] == "gone"])
        self.assertEqual(
            self.recipient.delivered,
            [b"DATA:" + m["content"].encode() for m in answer["succeeded"]],
        )

    def test_kickWaitsForTheOutcome(self) -> None:
        """
        A /kick is answered once every node said which ids it closed.
        """
        answer = self.answerOf(self.kick.post(body(connections=["c1", "c2"])))
        self.assertEqual(answer, {"kicked": ["c1"], "notConnected": ["c2"]})

    def test_bigKickWaitsForEachSlice(self) -> None:
        """
        A kick of many ids, a slice at a time, waits for each slice's outcome.
        """
        self.kick.inlineLimit = 0
        ids = [f"n{n}" for n in range(self.kick.sliceSize + 1)] + ["c1"]
        result = self.kick.post(body(connections=ids))
        for _ in range(3):
            self.settle()
            self.registry.answer()
        self.settle()
        answer = json.loads(self.successResultOf(result))
        self.assertEqual(answer, {"kicked": ["c1"], "notConnected": ids[:-1]})


class AuthenticateFirstTests(SeamTestCase):
    """
    A request with a wrong secret costs no framing work and says so first.
    """

    def test_wrongSecretBeforeBadMessages(self) -> None:
        """
        A wrong secret with a malformed message is refused as a wrong secret.
        """
        send = SendResource(self.apps, self.local, self.clock)
        request = json.dumps(
            {"secretName": APP, "secret": "wrong", "messages": [{"recipient": 1}]}
        ).encode()
        self.assertRaises(InvalidSecret, send.post, request)

    def test_wrongSecretBeforeBadIds(self) -> None:
        """
        The same for a /kick of ids that are not strings.
        """
        kick = KickResource(self.apps, self.local, self.clock)
        request = json.dumps({"secretName": APP, "secret": "wrong", "connections": [1]}).encode()
        self.assertRaises(InvalidSecret, kick.post, request)
