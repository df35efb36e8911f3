"""
C{/send} and C{/kick} against a registry whose outcomes fail, as a
cluster's do when another node is unreachable: the backend gets the same
503 for a big request as for a small one, never a 500.

Each test drives the daemon's real parts (the fast-path site with its
C{/send} and C{/kick} endpoints, on a L{Clock}, over an in-memory transport).
"""

from __future__ import annotations

import json
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, fail
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransportWithDisconnection
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from socktopus_tw.apps import Apps
from socktopus_tw.errors import ServiceUnavailable
from socktopus_tw.http.fastpath import FastPathSite
from socktopus_tw.http.respond import Root
from socktopus_tw.relay.api import KickResource, SendResource
from socktopus_tw.relay.registry import IRegistry, LocalRegistry

APP = "demo"
SECRET = "demo-secret-0123456789"
NOW = 1_700_000_000.0
PEER = IPv4Address("TCP", "127.0.0.1", 40000)
HOST = IPv4Address("TCP", "127.0.0.1", 8080)

#: What /send and /kick answer when the registry says a node is unreachable.
UNAVAILABLE = (503, {"code": 503, "message": "Service unavailable"})


@implementer(IRegistry)
class UnreachableNodeRegistry:
    """
    A registry that dispatches locally, as L{LocalRegistry} does, but whose
    outcomes depend on another node that cannot be reached: its
    C{deliverBatch} and C{kick} return a L{Deferred} that fails with
    L{ServiceUnavailable} (after the local dispatch), as IRegistry allows.
    """

    def __init__(self, local: LocalRegistry) -> None:
        self.local = local

    def __getattr__(self, name: str) -> Any:
        return getattr(self.local, name)

    def deliverBatch(
        self, app: str, recipients: list[str], payloads: list[bytes | None]
    ) -> Deferred[list[bool]]:
        self.local.deliverBatch(app, recipients, payloads)
        return fail(ServiceUnavailable())

    def kick(self, app: str, connectionIds: list[str]) -> Deferred[Any]:
        self.local.kick(app, connectionIds)
        return fail(ServiceUnavailable())


class Client(StringTransportWithDisconnection):
    """
    The backend's end of one in-memory HTTP connection to the site.
    """

    def __init__(self, protocol: Any) -> None:
        super().__init__(hostAddress=HOST, peerAddress=PEER)
        self.protocol = protocol
        protocol.makeConnection(self)

    def feed(self, data: bytes) -> None:
        if not self.disconnecting:
            self.protocol.dataReceived(data)

    def loseConnection(self) -> None:
        self.disconnecting = True
        super().loseConnection()

    def answers(self) -> list[tuple[int, Any]]:
        """
        The whole responses written so far: (status, decoded JSON body).
        """
        data, answers = self.value(), []
        while (end := data.find(b"\r\n\r\n")) >= 0:
            lines = data[:end].split(b"\r\n")
            status = int(lines[0].split(b" ")[1])
            length = 0
            for line in lines[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            if len(data) < end + 4 + length:
                break
            answers.append((status, json.loads(data[end + 4 : end + 4 + length])))
            data = data[end + 4 + length :]
        return answers


def post(path: bytes, **fields: Any) -> bytes:
    body = json.dumps({"secretName": APP, "secret": SECRET, **fields}).encode()
    return b"POST %s HTTP/1.1\r\nHost: relay.example\r\nContent-Length: %d\r\n\r\n%s" % (
        path,
        len(body),
        body,
    )


class RelayTestCase(SynchronousTestCase):
    """
    The daemon's site for C{/send} and C{/kick}, as makeService routes them,
    on a clock, over a registry that cannot reach another node.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(NOW)
        self.local = LocalRegistry(self.clock)
        self.registry = UnreachableNodeRegistry(self.local)
        apps = Apps({APP: SECRET})
        self.site = FastPathSite(Root())
        self.site.reactor = self.clock
        self.send = SendResource(apps, self.registry, self.clock)
        self.kick = KickResource(apps, self.registry, self.clock)
        self.site.route(b"send", self.send)
        self.site.route(b"kick", self.kick)

    def settle(self) -> None:
        """
        Run what is due now, including what that schedules (slices).
        """
        while any(c.getTime() <= self.clock.seconds() for c in self.clock.getDelayedCalls()):
            self.clock.advance(0)

    def answer(self, request: bytes) -> list[tuple[int, Any]]:
        client = Client(self.site.buildProtocol(PEER))
        client.feed(request)
        self.settle()
        return client.answers()


class BigKickWhileANodeIsDownTests(RelayTestCase):
    """
    A C{/kick} of many ids (a body over C{inlineLimit}, handled a slice at a
    time) while the registry cannot reach another node.
    """

    #: Enough ids for a body over KickResource.inlineLimit (256 KiB).
    ids = [f"conn-{n:07d}" for n in range(25_000)]

    def test_smallKickIsAnswered(self) -> None:
        """
        The reference: a small /kick gets the registry's 503 at once.
        """
        self.assertEqual(self.answer(post(b"/kick", connections=self.ids[:3])), [UNAVAILABLE])

    def test_bigKickIsAnswered503(self) -> None:
        """
        A backend kicking many users while a node is down is told 500
        "Internal error", and the daemon logs a GeneratorExit traceback as
        for a bug, where the same outage for a small kick is a 503 it knows
        to retry. It should get the 503 too.
        """
        request = post(b"/kick", connections=self.ids)
        self.assertGreater(len(request), self.kick.inlineLimit)
        answers = self.answer(request)
        unhandled = self.flushLoggedErrors()
        self.assertEqual(answers, [UNAVAILABLE])
        self.assertEqual(unhandled, [])


class BigSendWhileANodeIsDownTests(RelayTestCase):
    """
    A C{/send} of more messages than one slice while the registry cannot
    reach another node.
    """

    def messages(self, count: int) -> list[dict[str, str]]:
        return [{"recipient": f"c{n}", "content": "hi"} for n in range(count)]

    def test_smallSendIsAnswered503(self) -> None:
        """
        The reference: a small /send gets the registry's 503.
        """
        self.assertEqual(self.answer(post(b"/send", messages=self.messages(3))), [UNAVAILABLE])

    def test_bigSendIsAnswered503(self) -> None:
        """
        A backend sending a batch of more than 1,000 messages while a node
        is down is told 500 "Internal error" (and the daemon logs a
        traceback as for a bug), where the same outage for a small batch is
        a 503 it knows to retry. It should get the 503 too.
        """
        answers = self.answer(post(b"/send", messages=self.messages(SendResource.sliceSize + 1)))
        unhandled = self.flushLoggedErrors()
        self.assertEqual(answers, [UNAVAILABLE])
        self.assertEqual(unhandled, [])
