# -*- test-case-name: tests.test_web -*-
"""
The HTTP edge: the site, its request class, the resource tree's root, and the
one helper every REST endpoint answers through.

Handlers never format their own responses or errors: they return a JSON-able
value (or a Deferred of one) or raise an L{ApiError}, and L{respond} does the rest.
"""

from __future__ import annotations

from collections.abc import Callable
from inspect import iscoroutine
from io import BytesIO
from time import perf_counter
from typing import TYPE_CHECKING, Any
from weakref import WeakSet

import orjson
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.http import HTTPChannel, datetimeToString, unquote
from twisted.web.resource import IResource, Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

from socktopus_tw.errors import (
    ApiError,
    InternalError,
    MethodNotAllowed,
    NotFound,
    RequestTooLarge,
)
from socktopus_tw.writing import writerFor

if TYPE_CHECKING:
    from socktopus_tw.metrics import Metrics

log = Logger()

JSON_TYPE = b"application/json"

#: What a handler returns when it has answered (or taken over) the request itself.
HANDLED = object()


def encodeJson(value: Any) -> bytes:
    """
    Compact UTF-8 JSON, the one encoding every endpoint uses: what
    C{json.dumps(value, separators=(",", ":"), ensure_ascii=False)} writes,
    byte for byte for the strings, lists, dicts, booleans and integers the
    endpoints answer with, about twenty times faster (orjson).
    """
    return orjson.dumps(value)


def writeJson(request: Request, status: int, body: Any) -> None:
    """
    Finish C{request} with a JSON body, unless its client has already gone:
    a late result for a vanished request does nothing.
    """
    # _disconnected: twisted.web's own flag for a client gone mid-request.
    if request.finished or request._disconnected:
        return
    try:
        data = body if isinstance(body, bytes) else encodeJson(body)
    except Exception:
        # Answer in JSON even when our own result cannot be encoded.
        _failed(Failure(), request)
        return
    request.setResponseCode(status)
    request.setHeader(b"content-type", JSON_TYPE)
    request.setHeader(b"content-length", b"%d" % len(data))
    request.write(data)
    request.finish()


def writeRedirect(request: Request, url: bytes) -> None:
    """
    Finish C{request} with a 302 to C{url}, unless its client has gone.
    """
    if request.finished or request._disconnected:
        return
    request.redirect(url)
    request.finish()


def writeError(request: Request, error: ApiError) -> None:
    if isinstance(error, MethodNotAllowed):
        request.setHeader(b"allow", b", ".join(error.allowed))
    writeJson(request, error.status, error.body())


def errorFor(failure: Failure, method: object, path: object) -> ApiError:
    """
    The error a failed handler answers with: its own L{ApiError}, or, for
    anything else (logged with its traceback), an L{InternalError}.
    """
    error = failure.value
    if isinstance(error, ApiError):
        return error
    log.failure("Unhandled error in {method} {path}", failure, method=method, path=path)
    return InternalError()


def _failed(failure: Failure, request: Request) -> None:
    writeError(request, errorFor(failure, request.method, request.path))


def _succeeded(body: Any, request: Request) -> None:
    if body is not HANDLED:
        writeJson(request, 200, body)


def respond(request: Request, handler: Callable[[Request], Any]) -> object:
    """
    Run C{handler(request)} and answer with its result as JSON (status 200),
    or with the L{ApiError} it raised. A handler may return a Deferred or be
    a coroutine; a synchronous result is written at once, with no Deferred
    made for it.
    """
    try:
        result = handler(request)
    except BaseException:
        _failed(Failure(), request)
        return NOT_DONE_YET
    if iscoroutine(result):
        result = Deferred.fromCoroutine(result)
    if result is HANDLED:
        pass
    elif isinstance(result, Deferred):
        result.addCallbacks(_succeeded, _failed, callbackArgs=(request,),
                            errbackArgs=(request,))
    else:
        writeJson(request, 200, result)
    return NOT_DONE_YET


_LOOPBACK = {"127.0.0.1", "::1"}


def clientAddress(request: Request) -> str | None:
    """
    The client's IP address. Behind a reverse proxy on the same machine
    (loopback or a unix socket, as nginx.conf deploys it) that is the proxy's
    C{X-Real-IP}; from anywhere else the header is ignored, since anyone can
    send it.
    """
    peer = request.getClientAddress()
    host = getattr(peer, "host", None)
    if host is None or host in _LOOPBACK:
        forwarded = request.getHeader(b"x-real-ip")
        if forwarded:
            return forwarded.decode("ascii", "replace").strip()[:64]
    return host


class JsonResource(Resource):
    """
    A leaf endpoint whose C{json_<METHOD>(request)} methods are run through
    L{respond}. Unknown methods are a JSON 405, extra path segments a JSON 404.
    """

    isLeaf = True
    #: The error shape this endpoint's 404/405 answers use.
    notFound: type[ApiError] = NotFound
    methodNotAllowed: type[MethodNotAllowed] = MethodNotAllowed
    requestTooLarge: type[ApiError] = RequestTooLarge

    def render(self, request: Request) -> object:
        request.endpoint = type(self).__name__
        if getattr(request, "tooLarge", False):
            return respond(request, self._tooLarge)
        if request.postpath:
            return respond(request, self._notFound)
        method = request.method.decode("ascii", "replace")
        # HEAD is GET without the body, which twisted.web leaves out itself.
        handler = getattr(self, "json_" + ("GET" if method == "HEAD" else method), None)
        if handler is None:
            return respond(request, self._methodNotAllowed)
        return respond(request, handler)

    def _notFound(self, request: Request) -> None:
        raise self.notFound()

    def _tooLarge(self, request: Request) -> None:
        raise self.requestTooLarge()

    def _methodNotAllowed(self, request: Request) -> None:
        allowed = sorted(name[5:].encode("ascii") for name in dir(self)
                         if name.startswith("json_"))
        if b"GET" in allowed:
            allowed.append(b"HEAD")
        raise self.methodNotAllowed(allowed)


class NotFoundResource(JsonResource):
    """
    Every path nobody serves: a JSON 404 whatever the method.
    """

    def render(self, request: Request) -> object:
        tooLarge = getattr(request, "tooLarge", False)
        return respond(request, self._tooLarge if tooLarge else self._notFound)


class Root(Resource):
    """
    The top of the tree. Children are registered by L{socktopus_tw.tap};
    any other path is a JSON 404.
    """

    def getChild(self, path: bytes, request: Request) -> IResource:
        return NotFoundResource()


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
        site.inflight.add(self)
        site.channels.add(self.channel)
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
        self.site.forget(self)
        metrics = self.site.metrics
        if metrics is not None:
            metrics.observeRequest(self.endpoint, perf_counter() - self._started)

    def connectionLost(self, reason: Failure) -> None:
        super().connectionLost(reason)
        # Before process() (the body was still arriving) there is no site yet.
        site = getattr(self, "site", None)
        if site is not None:
            site.forget(self)


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
    upgradedTo: Any = None

    def rawDataReceived(self, data: bytes) -> None:
        if self.upgradedTo is not None:
            self.upgradedTo.dataReceived(data)
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
        self.inflight: set[Request] = set()
        # Channels that served a request, for a graceful close at shutdown.
        self.channels: WeakSet[HTTPChannel] = WeakSet()
        self._idle: list[Deferred[None]] = []

    def httpDate(self) -> bytes:
        """
        The Date header's value, formatted once per second.
        """
        now = int(self.reactor.seconds())
        if now != self._dateSecond:
            self._dateSecond, self._date = now, datetimeToString(now)
        return self._date

    def forget(self, request: Request) -> None:
        """
        C{request} is answered, gone, or no longer HTTP (a WebSocket).
        """
        self.inflight.discard(request)
        if not self.inflight and self._idle:
            idle, self._idle = self._idle, []
            for d in idle:
                d.callback(None)

    def whenIdle(self, timeout: float) -> Deferred[None]:
        """
        Fires when no request is being processed, or after C{timeout} seconds.
        """
        if not self.inflight:
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
