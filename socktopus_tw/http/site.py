# -*- test-case-name: tests.http.test_site,tests.http.test_fastpath -*-
"""
The twisted.web site every listener serves: its request (the body limit),
its channel (cheap writes, the hand-over of a connection to another
protocol) and the bookkeeping shutdown needs (what is busy, which
connections to close gracefully).

The fast path (L{socktopus_tw.http.fastpath}) keeps the same books through
the small interface here: L{SocktopusSite.busy}, L{SocktopusSite.done},
L{SocktopusSite.track} and L{SocktopusSite.untrack}.
"""

from __future__ import annotations

from collections.abc import Callable
from io import BytesIO
from time import perf_counter
from typing import TYPE_CHECKING, Any
from weakref import WeakSet

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IProtocol
from twisted.internet.task import deferLater
from twisted.protocols.policies import ProtocolWrapper
from twisted.python.failure import Failure
from twisted.web.http import HTTPChannel, datetimeToString, unquote
from twisted.web.resource import IResource
from twisted.web.server import Request, Site

from socktopus_tw.http.writing import writerFor

if TYPE_CHECKING:
    from socktopus_tw.metrics import Metrics


def handOver(transport: Any, protocol: IProtocol) -> None:
    """
    Make C{protocol} the one C{transport} delivers to from now on, in place
    of the HTTP channel that served it (released as the transport's
    producer), and connect it.
    """
    transport.unregisterProducer()
    if isinstance(transport, ProtocolWrapper):  # TLS
        transport.wrappedProtocol = protocol
    elif isinstance(getattr(transport, "protocol", None), ProtocolWrapper):
        transport.protocol.wrappedProtocol = protocol
    else:
        transport.protocol = protocol
    protocol.makeConnection(transport)
    # The channel paused reading while it served the request.
    transport.resumeProducing()


class LimitedRequest(Request):
    """
    A request whose body is held in memory up to the site's C{maxBodySize}.

    Past the limit the rest of the body is read and dropped, so memory stays
    bounded and the client still gets a clean C{413} instead of a reset.
    Bodies are never spooled to a temporary file: that would be blocking disk
    I/O on the reactor thread.
    """

    #: The body was over the limit and dropped: the resource answers 413
    #: (in its own error shape) instead of handling the request.
    tooLarge = False
    _bodySize = 0
    _started = 0.0
    #: The label request latency is counted under: the answering resource.
    endpoint = "other"

    def gotLength(self, length: int | None) -> None:
        self.content = BytesIO()
        if length is not None and length > self.channel.site.maxBodySize:
            self.tooLarge = True

    def handleContentChunk(self, data: bytes) -> None:
        if self.tooLarge:
            return
        self._bodySize += len(data)
        if self._bodySize > self.channel.site.maxBodySize:
            self.tooLarge = True
            self.content = BytesIO()
            return
        self.content.write(data)

    def process(self) -> None:
        self._started = perf_counter()
        site = self.site = self.channel.site
        site.busy(self)
        site.track(self.channel)
        # What twisted.web.server.Request.process does, less what is paid on
        # every request there: the Date header is formatted once a second, no
        # resource here has an encoder (gzip) to look up, and no Server header
        # announces the Twisted version to the internet.
        self.setHeader(b"date", site.httpDate())
        self.prepath = []
        self.postpath = list(map(unquote, self.path[1:].split(b"/")))
        try:
            self.render(site.getResourceFor(self))
        except BaseException:
            self.processingFailed(Failure())

    def finish(self) -> None:
        super().finish()
        self.site.done(self)
        metrics = self.site.metrics
        if metrics is not None:
            metrics.observeRequest(self.endpoint, perf_counter() - self._started)

    def connectionLost(self, reason: Failure) -> None:
        super().connectionLost(reason)
        # Before process() (the body was still arriving) there is no site yet.
        site = getattr(self, "site", None)
        if site is not None:
            site.done(self)


class SocktopusChannel(HTTPChannel):
    """
    One HTTP connection. Its addresses are read once: twisted.web asks for
    them for every request, and each getHost() is a getsockname() call.

    A response's head is held until its first body bytes, and both leave in
    one direct write when nothing is queued (see L{writerFor}): the buffered
    path costs an epoll registration and a reactor pass per response.
    """

    _host = _peer = None
    _head: bytes | None = None
    _write: Callable[[bytes], None] | None = None
    #: The protocol this connection was handed to (a WebSocket). Bytes that
    #: came in the same read as the upgrade request, after its head, are its
    #: first frames: they reach here, not the next request's parser.
    _switchedTo: IProtocol | None = None

    def switchProtocols(self, request: Request, protocol: IProtocol, data: bytes) -> None:
        """
        Give this connection to C{protocol} once C{request} (an upgrade) is
        accepted, and feed it C{data} first: as
        L{autobahn.twisted.resource.WebSocketResource.render} does, the
        request's head, which Autobahn parses and answers itself.
        """
        self.site.done(request)  # no longer an HTTP request to wait for
        transport, self.transport = self.transport, None
        # The socket is the new protocol's now: stop the idle timer, so
        # nothing keeps this channel and its request alive.
        self.setTimeout(None)
        handOver(transport, protocol)
        self._switchedTo = protocol
        protocol.dataReceived(data)

    def rawDataReceived(self, data: bytes) -> None:
        if self._switchedTo is not None:
            self._switchedTo.dataReceived(data)
        else:
            super().rawDataReceived(data)

    def writeHeaders(self, version: bytes, code: bytes, reason: bytes, headers: Any) -> None:
        head = [version, b" ", code, b" ", reason, b"\r\n"]
        for name, values in headers.getAllRawHeaders():
            for value in values:
                head.extend((name, b": ", value, b"\r\n"))
        head.append(b"\r\n")
        self._head = b"".join(head)

    def write(self, data: bytes) -> None:
        if self._head is not None:
            data, self._head = self._head + data, None
        if self._write is None:
            self._write = writerFor(self.transport)
        self._write(data)

    def writeSequence(self, iovec: list[bytes]) -> None:
        self.write(b"".join(iovec))

    def requestDone(self, request: Request) -> None:
        # A response with no body bytes at all (HEAD): its head still goes out.
        if self._head is not None:
            self.write(b"")
        super().requestDone(request)

    def getHost(self) -> Any:
        if self._host is None:
            self._host = super().getHost()
        return self._host

    def getPeer(self) -> Any:
        if self._peer is None:
            self._peer = super().getPeer()
        return self._peer


class SocktopusSite(Site):
    """
    The site every listener serves.

    No access log: request lines carry relay tokens in their query strings, and
    the daemon logs its own events (connect, send batch, ...) instead.
    """

    noisy = False
    requestFactory = LimitedRequest
    # A plain HTTP/1.1 channel: no HTTP/2 negotiation layer in front of it.
    protocol = SocktopusChannel
    _dateSecond = -1
    _date = b""

    def __init__(self, root: IResource, maxBodySize: int = 16 * 1024 * 1024,
                 metrics: Metrics | None = None) -> None:
        # POST bodies are JSON: parsing them as forms would only cost time.
        super().__init__(root, parsePOSTFormSubmission=False)
        self.maxBodySize = maxBodySize
        self.metrics = metrics
        #: Requests being answered (and fast-path channels answering one).
        self.working: set[object] = set()
        #: Connections that served HTTP, for a graceful close at shutdown.
        self.channels: WeakSet[Any] = WeakSet()
        self._idle: list[Deferred[None]] = []

    def httpDate(self) -> bytes:
        """
        The Date header's value, formatted once per second.
        """
        now = int(self.reactor.seconds())
        if now != self._dateSecond:
            self._dateSecond, self._date = now, datetimeToString(now)
        return self._date

    def busy(self, work: object) -> None:
        """
        C{work} (a request) is being answered: shutdown waits for it.
        """
        self.working.add(work)

    def done(self, work: object) -> None:
        """
        C{work} is answered, gone, or no longer HTTP (a WebSocket).
        """
        self.working.discard(work)
        if not self.working and self._idle:
            idle, self._idle = self._idle, []
            for d in idle:
                d.callback(None)

    def track(self, channel: Any) -> None:
        """
        C{channel} serves HTTP: shutdown closes it gracefully.
        """
        self.channels.add(channel)

    def untrack(self, channel: Any) -> None:
        """
        C{channel} is gone, or handed to a protocol that closes it itself.
        """
        self.channels.discard(channel)

    def whenIdle(self, timeout: float) -> Deferred[None]:
        """
        Fires when no request is being processed, or after C{timeout} seconds.
        """
        if not self.working:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._idle.append(d)
        d.addTimeout(timeout, self.reactor, onTimeoutCancel=lambda result, t: None)
        return d

    async def drain(self, timeout: float) -> None:
        """
        For shutdown, once nothing listens: let in-flight requests finish,
        then close the HTTP connections gracefully, so their last responses
        are flushed before the reactor stops (which drops what is unsent).
        """
        deadline = self.reactor.seconds() + timeout
        await self.whenIdle(timeout)
        # WebSocket connections are not HTTP any more: their channel has no transport.
        transports = [c.transport for c in self.channels if c.transport is not None]
        for transport in transports:
            transport.loseConnection()
        while any(t.connected for t in transports) and self.reactor.seconds() < deadline:
            await deferLater(self.reactor, 0.05, lambda: None)

    def log(self, request: Request) -> None:
        pass
