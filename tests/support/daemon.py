"""
Shared pieces for the end-to-end tests: the real daemon on port 0 in this
process, real WebSocket clients over real sockets, and a JSON HTTP client.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any

import treq
from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks, succeed
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase
from twisted.web.client import Agent, HTTPConnectionPool

from socktopus_tw.relay.tokens import makeToken
from socktopus_tw.tap import SocktopusOptions, makeService

APP = "demo"
SECRET = "demo-secret-0123456789"
OTHER_APP = "other"
OTHER_SECRET = "other-secret-9876543210"


def nowMilliseconds() -> int:
    return int(time.time() * 1000)


def upgradeRequest(path: str) -> bytes:
    """
    The request a browser sends to open a WebSocket on C{path} (its query,
    with the token, included).
    """
    return (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        "Upgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n"
    ).encode()


class RawClient(Protocol):
    """
    A client on a raw socket: keeps what it receives; L{waitFor} fires once
    some bytes have arrived, C{lost} when the connection closes.
    """

    def __init__(self) -> None:
        self.received = b""
        self.lost: Deferred[None] = Deferred()
        self._waiting: list[tuple[bytes, Deferred[None]]] = []

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        for wanted, d in list(self._waiting):
            if wanted in self.received:
                self._waiting.remove((wanted, d))
                d.callback(None)

    def waitFor(self, wanted: bytes) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        if wanted in self.received:
            d.callback(None)
        else:
            self._waiting.append((wanted, d))
        return d

    def connectionLost(self, reason: Failure) -> None:
        self.lost.callback(None)


class Daemon:
    """
    The daemon composed by L{makeService}, listening on a free port of
    127.0.0.1, with two apps and a SQLite file in the test's directory.
    """

    def __init__(
        self, testCase: TestCase, *arguments: str, environ: Mapping[str, str] | None = None
    ) -> None:
        env = {
            f"{APP.upper()}_SOCKTOPUS_SECRET": SECRET,
            f"{OTHER_APP.upper()}_SOCKTOPUS_SECRET": OTHER_SECRET,
        }
        env.update(environ or {})
        options = SocktopusOptions(environ=env)
        options.parseOptions(
            [
                # Twisted's default backlog of 50 drops SYNs when a thousand
                # clients connect at once; the kernel's retries outlast tokens.
                "--listen",
                "tcp:0:interface=127.0.0.1:backlog=1024",
                "--database",
                "sqlite:" + testCase.mktemp() + ".sqlite3",
                *arguments,
            ]
        )
        self.options = options
        self.service = makeService(options, reactor)
        self.registry = self.service.getServiceNamed("registry")
        self.service.privilegedStartService()
        self.service.startService()
        listener = next(s for s in self.service if s.name.startswith("listen"))
        self.port = listener.port.getHost().port
        self.url = f"http://127.0.0.1:{self.port}"
        self.wsUrl = f"ws://127.0.0.1:{self.port}"
        self.pool = HTTPConnectionPool(reactor, persistent=True)
        self.pool.maxPersistentPerHost = 8
        self.agent = Agent(reactor, pool=self.pool)
        self.clients: list[RelayClient] = []
        testCase.addCleanup(self.stop)

    @inlineCallbacks
    def stop(self):
        for client in self.clients:
            if client.transport is not None and client.state != client.STATE_CLOSED:
                client.dropConnection(abort=True)
        yield self.pool.closeCachedConnections()
        if self.service.running:
            yield self.service.stopService()
        # Autobahn batches its handshake timers into one DelayedCall per
        # time bucket, which outlives the timers it carried. Every connection
        # is closed by now, so those buckets have nothing left to do.
        for call in reactor.getDelayedCalls():
            if getattr(call.func, "__name__", "") == "_notify_bucket":
                call.cancel()

    def token(
        self, connectionId: str, app: str = APP, secret: str = SECRET, stamp: int | None = None
    ) -> str:
        return makeToken(app, secret, connectionId, nowMilliseconds() if stamp is None else stamp)

    @inlineCallbacks
    def request(
        self, method: str, path: str, body: Any = None, headers: Mapping[str, str] | None = None
    ):
        """
        Send a request; C{body} is JSON-encoded unless it is bytes. Returns
        C{(status, decoded JSON or raw bytes, response)}.
        """
        data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
        response = yield treq.request(
            method, self.url + path, data=data, headers=headers, agent=self.agent
        )
        content = yield response.content()
        try:
            decoded = json.loads(content)
        except ValueError:
            decoded = content
        return response.code, decoded, response

    def post(self, path: str, body: Any, **kw: Any):
        return self.request("POST", path, body, **kw)

    def send(self, messages: list[dict[str, str]], app: str = APP, secret: str = SECRET):
        return self.post("/send", {"secretName": app, "secret": secret, "messages": messages})

    def kick(self, connections: list[str], app: str = APP, secret: str = SECRET):
        return self.post("/kick", {"secretName": app, "secret": secret, "connections": connections})

    @inlineCallbacks
    def connect(
        self,
        connectionId: str,
        path: str = "/recieve",
        clientClass: type[RelayClient] | None = None,
        **tokenArgs: Any,
    ):
        """
        Open a real WebSocket client connection; fires with the open
        L{RelayClient} once the server has registered it.
        """
        token = self.token(connectionId, **tokenArgs)
        factory = WebSocketClientFactory(f"{self.wsUrl}{path}?token={token}")
        factory.protocol = clientClass or RelayClient
        factory.setProtocolOptions(perMessageCompressionOffers=[], autoPingInterval=0)
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", self.port)
        client = yield endpoint.connect(factory)
        self.clients.append(client)
        yield client.opened
        return client


class RelayClient(WebSocketClientProtocol):
    """
    A WebSocket client that records every text frame it receives.
    """

    def __init__(self) -> None:
        super().__init__()
        self.received: list[str] = []
        self.opened: Deferred[None] = Deferred()
        self.closed: Deferred[tuple[bool, int | None, str | None]] = Deferred()
        self._waiting: list[tuple[int, Deferred[list[str]]]] = []

    def onOpen(self) -> None:
        self.opened.callback(None)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.received.append(payload.decode("utf-8"))
        ready = [(n, d) for n, d in self._waiting if len(self.received) >= n]
        self._waiting = [(n, d) for n, d in self._waiting if len(self.received) < n]
        for n, d in ready:
            d.callback(self.received[:n])

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        if not self.opened.called:
            self.opened.errback(ConnectionRefusedError(f"handshake failed: {reason}"))
        self.closed.callback((wasClean, code, reason))
        for _, d in self._waiting:
            d.errback(AssertionError(f"closed after {self.received[-3:]!r}"))
        self._waiting = []

    def waitFor(self, count: int) -> Deferred[list[str]]:
        """
        Fire with the first C{count} frames once that many have arrived.
        """
        if len(self.received) >= count:
            return succeed(self.received[:count])
        d: Deferred[list[str]] = Deferred()
        self._waiting.append((count, d))
        return d

    def sendText(self, text: str) -> None:
        self.sendMessage(text.encode("utf-8"))
