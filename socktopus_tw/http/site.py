# -*- test-case-name: tests.http.test_site,tests.http.test_fastpath -*-
"""
The twisted.web site every listener serves: its request (the body limit),
its channel (cheap writes, the hand-over of a connection to another
protocol) and the bookkeeping shutdown needs (what is busy, which
connections to close gracefully).

The fast path (L{socktopus_tw.http.fastpath}) keeps the same books through
the small interface here: L{SocktopusSite.busy}, L{SocktopusSite.done},
L{SocktopusSite.track} and L{SocktopusSite.untrack}; and the budget of body
bytes held at once, L{SocktopusSite.reserveBody} and
L{SocktopusSite.releaseBody}.

What twisted.web drops a connection for without an answer, or answers too
late, is answered here at once and in JSON (L{SocktopusChannel.refuse}):
a request line or head too long (414, 431), an upload it would refuse
(413 to a client waiting for C{100 Continue}, 503 past the body budget).
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

from socktopus_tw.errors import (
    ApiError,
    HeadersTooLarge,
    RequestTooLarge,
    ServiceUnavailable,
    UriTooLong,
)
from socktopus_tw.http.respond import encodeJson, responseHead
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


#: The least budget of body bytes a site holds at once (see
#: L{SocktopusSite.bodyBudget}): four bodies of the default largest size.
BODY_BUDGET_MINIMUM = 64 * 1024 * 1024


def answerAndLinger(transport: Any, error: ApiError, date: bytes) -> None:
    """
    Answer a request refused before its body has come (C{error}, in JSON,
    with C{Connection: close}), and end the daemon's side of the connection
    but not the client's: a client still sending that is closed on would
    get a reset, and most lose the answer with it. The caller reads and
    drops what still comes, and closes.
    """
    body = encodeJson(error.body())
    transport.write(responseHead(error.status, date, len(body), True) + body)
    if isinstance(transport, ProtocolWrapper) or not hasattr(transport, "loseWriteConnection"):
        # TLS: a half-close would bypass it. Closed whole, as before.
        transport.loseConnection()
    else:
        transport.loseWriteConnection()


class LimitedRequest(Request):
    """
    A request whose body is held in memory up to the site's C{maxBodySize}.

    Past the limit the rest of the body is read and dropped, so memory stays
    bounded and the client still gets a clean C{413} instead of a reset.
    Bodies are never spooled to a temporary file: that would be blocking disk
    I/O on the reactor thread.

    Its body counts against the site's budget (L{SocktopusSite.reserveBody})
    from its head (its C{Content-Length}; a chunked body as it comes) until
    it is answered; past the budget it is refused at once, 503.
    """

    #: The body was over the limit and dropped: the resource answers 413
    #: (in its own error shape) instead of handling the request.
    tooLarge = False
    #: The request was answered, with this error, before its body came
    #: (L{SocktopusChannel.refuse}): its body is dropped, and it is not
    #: processed.
    refusal: ApiError | None = None
    _bodySize = 0
    #: Bytes of the site's body budget this request holds.
    _reserved = 0
    _started = 0.0
    #: The label request latency is counted under: the answering resource.
    endpoint = "other"

    def gotLength(self, length: int | None) -> None:
        self.content = BytesIO()
        if length is not None and length > self.channel.site.maxBodySize:
            self.tooLarge = True
        elif length:
            self._reserve(length)

    def _reserve(self, size: int) -> bool:
        if self.channel.site.reserveBody(size):
            self._reserved += size
            return True
        self.refusal = ServiceUnavailable()
        self.content = BytesIO()
        self._releaseBody()
        return False

    def _releaseBody(self) -> None:
        if self._reserved:
            self.channel.site.releaseBody(self._reserved)
            self._reserved = 0

    def handleContentChunk(self, data: bytes) -> None:
        if self.tooLarge or self.refusal is not None:
            return
        self._bodySize += len(data)
        if self._bodySize > self.channel.site.maxBodySize:
            self.tooLarge = True
            self.content = BytesIO()
            self._releaseBody()
            return
        if self._bodySize > self._reserved and not self._reserve(self._bodySize - self._reserved):
            # A chunked body that no longer fits: refused as it comes.
            self.channel.refuse(self.refusal)
            return
        self.content.write(data)

    def process(self) -> None:
        if self.refusal is not None:
            # Answered when it was refused; its body, all dropped, is all
            # in: nothing the client sends is left unread to close on.
            self.channel.loseConnection()
            return
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
        self._releaseBody()
        super().finish()
        self.site.done(self)
        metrics = self.site.metrics
        if metrics is not None:
            metrics.observeRequest(self.endpoint, perf_counter() - self._started)

    def connectionLost(self, reason: Failure) -> None:
        self._releaseBody()
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

    Requests twisted.web would drop the connection for, answer with a bare
    400, or answer only after their whole body, are refused at once in
    JSON (L{refuse}): a request line over C{MAX_LENGTH} (414), a header line
    over it, a head over C{totalHeadersSize} or with over C{maxHeaders}
    lines (431), an upload waiting for C{100 Continue} that would be
    refused (413, 503), a body past the site's budget (503).
    """

    _host = _peer = None
    #: The connection was refused (L{refuse}): what comes is dropped.
    _refused = False
    _dropping = 0
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

    def lineReceived(self, line: bytes) -> None:
        # twisted.web answers a head over its size with a bare 400.
        if self.persistent and self._receivedHeaderSize + len(line) > self.totalHeadersSize:
            self.refuse(UriTooLong() if self._HTTPChannel__first_line else HeadersTooLarge())
            return
        super().lineReceived(line)

    def lineLengthExceeded(self, line: bytes) -> None:
        # A line longer than MAX_LENGTH: twisted.web drops the connection.
        self.refuse(UriTooLong() if self._HTTPChannel__first_line else HeadersTooLarge())

    def headerReceived(self, line: bytes) -> bool:
        if self._receivedHeaderCount >= self.maxHeaders:
            self.refuse(HeadersTooLarge())
            return False
        return super().headerReceived(line)

    def allHeadersReceived(self) -> None:
        # twisted.web's, but for a request it will refuse whatever its body
        # is: that one is answered now, not sent 100 Continue (after which
        # a client uploads 16 MiB to read its 413).
        request = self.requests[-1]
        request.parseCookies()
        self.persistent = self.checkPersistence(request, self._version)
        request.gotLength(self.length)
        expect = request.requestHeaders.getRawHeaders(b"expect")
        waiting = (
            bool(expect) and expect[0].lower() == b"100-continue" and self._version == b"HTTP/1.1"
        )
        if request.refusal is None and request.tooLarge and waiting:
            request.refusal = self._tooLargeFor(request)
        if request.refusal is not None:
            rest = None if self.length is None else max(0, self.length - len(self._buffer))
            self.refuse(request.refusal, rest)
        elif waiting:
            self._send100Continue()

    def _tooLargeFor(self, request: Request) -> ApiError:
        """
        The 413 of the endpoint C{request} is for, in its error shape.
        """
        request.prepath = []
        path = self._path.split(b"?", 1)[0]
        request.postpath = list(map(unquote, path[1:].split(b"/")))
        resource = self.site.getResourceFor(request)
        return getattr(resource, "requestTooLarge", RequestTooLarge)()

    def refuse(self, error: ApiError, rest: int | None = None) -> None:
        """
        Answer C{error} now (JSON, C{Connection: close}) and serve nothing
        more on this connection. What the client still sends (C{rest}
        bytes of a body, or up to C{maxBodySize} when that is not known) is
        read and dropped, so that it reads its answer instead of a reset;
        the connection is closed once the client closes it, once that much
        is dropped, or at the idle timeout.
        """
        if self._refused:
            return
        self._refused = True
        self.persistent = False
        # What this read still holds, past the line being parsed, is dropped
        # with it: LineReceiver reads it from here.
        self._buffer = b""
        limit = self.site.maxBodySize
        self._dropping = limit if rest is None else min(rest, limit)
        self.dataReceived = self._drop  # type: ignore[method-assign]
        # Not the transport's producer any more (or it would wait for us
        # instead of closing), and reading, whatever paused it.
        self._networkProducer.unregisterProducer()
        self._networkProducer.resumeProducing()
        answerAndLinger(self.transport, error, self.site.httpDate())
        if rest == 0:
            self.transport.loseConnection()

    def _drop(self, data: bytes) -> None:
        self._dropping -= len(data)
        if self._dropping <= 0:
            self.transport.loseConnection()
        else:
            self.resetTimeout()

    def loseConnection(self) -> None:
        if self._refused:
            # Its producer is already unregistered.
            self.transport.loseConnection()
        else:
            super().loseConnection()

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

    def __init__(
        self, root: IResource, maxBodySize: int = 16 * 1024 * 1024, metrics: Metrics | None = None
    ) -> None:
        # POST bodies are JSON: parsing them as forms would only cost time.
        super().__init__(root, parsePOSTFormSubmission=False)
        self.maxBodySize = maxBodySize
        self.metrics = metrics
        #: Bytes of request bodies being received or decoded at once, on
        #: every connection, beyond which a request is refused at once, 503:
        #: four of the largest, and at least 64 MiB. (Decoding a body costs
        #: several times its size; nothing else bounds how many come at once.)
        self.bodyBudget = max(BODY_BUDGET_MINIMUM, 4 * maxBodySize)
        #: Bytes of that budget held now.
        self.bodiesHeld = 0
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

    def reserveBody(self, size: int, force: bool = False) -> bool:
        """
        Count C{size} bytes of a body being received or decoded, until
        L{releaseBody}: unless (but for C{force}, a body already in memory)
        that would pass L{bodyBudget}.
        """
        if self.bodiesHeld + size > self.bodyBudget and not force:
            return False
        self.bodiesHeld += size
        return True

    def releaseBody(self, size: int) -> None:
        """
        A body counted by L{reserveBody} is answered or gone.
        """
        self.bodiesHeld -= size

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
        channels = [c for c in self.channels if c.transport is not None]
        transports = [c.transport for c in channels]
        for channel in channels:
            # The channel's own loseConnection, which first stops it being
            # the transport's producer: a transport whose buffer filled up
            # (a big answer) would otherwise wait for it, never closing.
            channel.loseConnection()
        while any(t.connected for t in transports) and self.reactor.seconds() < deadline:
            await deferLater(self.reactor, 0.05, lambda: None)

    def log(self, request: Request) -> None:
        pass
