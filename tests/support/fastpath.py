"""
The daemon's site as L{socktopus_tw.tap.makeService} composes it (real apps,
registry, L{SendResource} and L{KickResource}, the fast path in front of
twisted.web) on a L{Clock}, with in-memory connections: the raw bytes of
requests and the answers a client reads back.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import ConnectionLost
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransportWithDisconnection
from twisted.python.failure import Failure

from socktopus_tw.apps import Apps
from socktopus_tw.health import Health
from socktopus_tw.http.fastpath import FastPathSite
from socktopus_tw.http.respond import Root
from socktopus_tw.metrics import Metrics
from socktopus_tw.relay.admission import Gatekeeper
from socktopus_tw.relay.api import KickResource, SendResource
from socktopus_tw.relay.home import HomeResource
from socktopus_tw.relay.registry import LocalRegistry
from socktopus_tw.relay.upgrade import ReceiveResource
from socktopus_tw.relay.websocket import RelayFactory
from tests.support.daemon import APP, OTHER_APP, OTHER_SECRET, SECRET
from tests.support.fakes import FakeConnection

#: A realistic "now" for the clock, in seconds.
NOW = 1_700_000_000.0
HOST = IPv4Address("TCP", "127.0.0.1", 8080)
PEER = IPv4Address("TCP", "127.0.0.1", 40000)
#: One more message than SendResource delivers in one go: answered later.
BIG_BATCH = SendResource.sliceSize + 1


def say(content: str, to: str = "c1") -> dict[str, str]:
    """
    One message of a C{/send} batch.
    """
    return {"recipient": to, "content": content}


def sendBody(messages: list[dict[str, str]], app: str = APP, secret: str = SECRET) -> bytes:
    return json.dumps({"secretName": app, "secret": secret, "messages": messages}).encode()


def kickBody(connections: list[str]) -> bytes:
    return json.dumps({"secretName": APP, "secret": SECRET, "connections": connections}).encode()


def request(
    body: bytes = b"",
    path: bytes = b"/send",
    headers: list[bytes] | None = None,
    method: bytes = b"POST",
    version: bytes = b"HTTP/1.1",
    length: bool = True,
) -> bytes:
    """
    The bytes of one request, with a Host header, C{Content-Length} (unless
    C{length} is false) and C{headers}.
    """
    head = [b"%s %s %s" % (method, path, version), b"Host: relay.example"]
    if length:
        head.append(b"Content-Length: %d" % len(body))
    head.extend(headers or [])
    return b"\r\n".join(head) + b"\r\n\r\n" + body


def send(*contents: str, headers: list[bytes] | None = None) -> bytes:
    """
    A plain C{POST /send} of one message per content, to c1.
    """
    return request(sendBody([say(c) for c in contents]), headers=headers)


def bigBatch(prefix: str = "m") -> bytes:
    """
    A C{POST /send} with more messages than L{SendResource} delivers at once.
    """
    return request(sendBody([say(f"{prefix}{i}") for i in range(BIG_BATCH)]))


@dataclass
class Answer:
    """
    One response as the client read it.
    """

    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes

    def header(self, name: bytes) -> bytes | None:
        for key, value in self.headers:
            if key.lower() == name.lower():
                return value
        return None

    def json(self) -> Any:
        return json.loads(self.body)


def splitResponses(data: bytes) -> tuple[list[Answer], bytes]:
    """
    The whole responses at the start of C{data}, and what follows them.
    """
    answers = []
    while True:
        end = data.find(b"\r\n\r\n")
        if end < 0:
            break
        lines = data[:end].split(b"\r\n")
        status = int(lines[0].split(b" ")[1])
        headers = [(n.strip(), v.strip()) for n, _, v in (ln.partition(b":") for ln in lines[1:])]
        answer = Answer(status, headers, b"")
        length = 0 if status < 200 else int(answer.header(b"content-length") or 0)
        if len(data) < end + 4 + length:
            break
        answer.body = data[end + 4 : end + 4 + length]
        answers.append(answer)
        data = data[end + 4 + length :]
    return answers, data


def settle(clock: Clock) -> None:
    """
    Run everything due now on C{clock}, including what that schedules:
    L{SendResource} delivers big batches a slice per reactor turn.
    """
    while any(call.getTime() <= clock.seconds() for call in clock.getDelayedCalls()):
        clock.advance(0)


class Client(StringTransportWithDisconnection):
    """
    The client's end of one in-memory connection to a channel of the site:
    what the server wrote, whether it closed, whether it reads.
    """

    def __init__(self, channel: Any) -> None:
        super().__init__(hostAddress=HOST, peerAddress=PEER)
        self.channel = channel
        self.protocol = channel
        self._waiting: list[tuple[int, Deferred[list[Answer]]]] = []
        channel.makeConnection(self)

    def feed(self, *chunks: bytes) -> None:
        """
        The client sends C{chunks}, each arriving in its own read.
        """
        for chunk in chunks:
            # As a TCP transport, nothing is read once a close was asked for.
            if not self.disconnecting:
                self.protocol.dataReceived(chunk)

    def loseConnection(self) -> None:
        self.disconnecting = True
        super().loseConnection()

    def unregisterProducer(self) -> None:
        # As a TCP transport: with no producer, nothing to do (Autobahn
        # unregisters itself when it refuses a handshake).
        if self.producer is not None:
            super().unregisterProducer()

    def hangUp(self) -> None:
        """
        The client goes away.
        """
        self.connected = False
        self.protocol.connectionLost(Failure(ConnectionLost("the client went away")))

    def answers(self) -> list[Answer]:
        return splitResponses(self.value())[0]

    def write(self, data: bytes) -> None:
        super().write(data)
        answers = self.answers()
        ready = [(n, d) for n, d in self._waiting if len(answers) >= n]
        self._waiting = [(n, d) for n, d in self._waiting if len(answers) < n]
        for n, d in ready:
            d.callback(answers[:n])

    def whenAnswered(self, count: int) -> Deferred[list[Answer]]:
        """
        Fires with the first C{count} answers once they are written.
        """
        answers = self.answers()
        if len(answers) >= count:
            return succeed(answers[:count])
        d: Deferred[list[Answer]] = Deferred()
        self._waiting.append((count, d))
        return d


class Relay:
    """
    The daemon's site as L{makeService} composes it, on C{clock}, for the
    relay's endpoints; one client, c1 of app demo, is connected.
    """

    def __init__(
        self,
        clock: Clock,
        maxBodySize: int = 1024 * 1024,
        reactor: Any = None,
        metrics: Metrics | None = None,
    ) -> None:
        apps = Apps({APP: SECRET, OTHER_APP: OTHER_SECRET})
        self.registry = LocalRegistry(clock)
        self.send = SendResource(apps, self.registry, reactor or clock, metrics=metrics)
        self.kick = KickResource(apps, self.registry, reactor or clock)
        self.site = FastPathSite(Root(), maxBodySize=maxBodySize, metrics=metrics)
        self.site.route(b"", HomeResource(apps, self.registry))
        self.site.route(b"send", self.send)
        self.site.route(b"kick", self.kick)
        self.site.route(b"health", Health())
        gatekeeper = Gatekeeper(apps, self.registry, clock, tokenLifespan=5.0)
        self.site.route(b"recieve", ReceiveResource(gatekeeper, RelayFactory(self.registry)))
        # twisted.web's Site takes the global reactor: its Date headers and
        # idle timeouts are to follow the test's clock.
        self.site.reactor = clock
        self.recipient = FakeConnection(self.registry, APP, "c1")
        self.registry.register(self.recipient)

    def connect(self, web: bool = False) -> Client:
        """
        A new connection: to the fast path, or (C{web}) straight to the
        twisted.web channel the fast path hands connections over to.
        """
        if web:
            return Client(self.site.buildWebChannel(PEER))
        return Client(self.site.buildProtocol(PEER))

    def delivered(self) -> list[str]:
        return [payload.decode() for payload in self.recipient.delivered]
