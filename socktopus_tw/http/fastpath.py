# -*- test-case-name: tests.http.test_fastpath,tests.http.test_hostile_requests -*-
"""
A lean HTTP/1.1 path for the relay's backend calls, C{POST /send} and
C{POST /kick}, and for its WebSocket upgrades, in front of twisted.web.

A backend that sends one message per request pays twisted.web's whole
request machinery each time (line parsing, L{Headers}, a L{Request} with
its cookies, producers and notifications): two thirds of the daemon's
Python work per request (C{bench/pathcost.py --http}: about 140,000
instructions per request here against 410,000 through twisted.web).

L{FastPathChannel} reads each request's head itself and serves the plain
cases of those two endpoints directly: the request line is exactly
C{POST /send HTTP/1.1} (or C{/kick}), the body has a C{Content-Length}
within the site's limit, and no header asks for anything else
(C{Transfer-Encoding}, C{Expect}, C{Upgrade}, ...). A plain upgrade,
C{GET /recieve?token=TOKEN HTTP/1.1} with C{Upgrade: websocket} and no
body, is admitted (or refused, in JSON) here. When it is what browsers and
WebSocket libraries send (L{parseUpgrade}: one key, version 13, no
subprotocol, no extension but the usual compression offer, which is
declined), the relay's protocol answers it from the key read here, and the
request is parsed once; any other is handed over as it came and Autobahn
parses it again and answers (or refuses) it as it always does.

Anything else, from the first request that is not such a call on, is handed
to twisted.web for the rest of the connection: a L{SocktopusChannel} is
built and given every byte from the start of that request. So other
WebSocket upgrades, the accounts service, the home page, every error twisted.web
answers itself (bad request lines, oversized heads, 413, 405) and every
HTTP feature the path below does not implement behave exactly as they do
without it. Both paths answer with the same bytes (both encode through
L{socktopus_tw.http.respond}); the tests compare them.

A body that takes more than one read counts against the site's budget of
body bytes held at once (L{SocktopusSite.reserveBody}, shared with
twisted.web's requests) until it is answered; past the budget the request
is answered 503 at once, and the rest of its body read and dropped before
the connection is closed. The channel stops being its transport's producer
before it closes a connection (L{FastPathChannel.loseConnection}): a
transport whose buffer had filled would otherwise resume it, not close.

The routes it serves are the resource tree's: L{FastPathSite.route} puts an
endpoint in the tree and, when it provides L{IDirectEndpoint} or
L{IDirectUpgrade}, in the fast path's tables too, so a request handed over
is answered by the same object.
"""

from __future__ import annotations

import re
from time import perf_counter
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IAddress, IProtocol, ITCPTransport
from twisted.internet.protocol import Protocol
from twisted.protocols.policies import TimeoutMixin
from twisted.python.failure import Failure
from twisted.web.http import HTTPChannel
from twisted.web.resource import IResource
from zope.interface import Attribute, Interface

from socktopus_tw.errors import ApiError, ServiceUnavailable
from socktopus_tw.http.respond import encodeAnswer, errorFor, responseHead
from socktopus_tw.http.site import SocktopusSite, answerAndLinger, handOver
from socktopus_tw.http.writing import writerFor

#: A head longer than this, or with more header lines, is left to
#: twisted.web, which refuses it (or not) as it always would.
MAX_HEAD = 16384
MAX_HEADERS = 100

#: A plain request line and its header lines: token names, a colon, and
#: values with no CR, LF or NUL in them (a folded or malformed line fails).
_HEAD = re.compile(rb"POST (\S+) HTTP/1\.1((?:\r\n[!#$%&'*+\-.^_`|~0-9A-Za-z]+:[^\r\n\0]*)*)")
#: A WebSocket upgrade the fast path hands over itself: a token of the
#: alphabet tokens are written in (anything else, percent-escapes included,
#: is left to twisted.web) and header lines as above.
_UPGRADE = re.compile(
    rb"GET (/[a-z]+)\?token=([0-9a-fh]{1,4096}) HTTP/1\.1"
    rb"((?:\r\n[!#$%&'*+\-.^_`|~0-9A-Za-z]+:[^\r\n\0]*)*)"
)
#: In the lower-cased header lines: the length and connection headers, and
#: those that ask for HTTP this path does not implement.
_SPECIAL = re.compile(
    rb"\r\n(content-length|connection|transfer-encoding|expect|upgrade|content-encoding"
    rb"|http2-settings):([^\r\n]*)"
)
#: In the lower-cased header lines of an upgrade: those above, and those its
#: opening handshake is answered from (RFC 6455 §4.2.1).
_HANDSHAKE = re.compile(
    rb"\r\n(content-length|connection|transfer-encoding|expect|upgrade|content-encoding"
    rb"|http2-settings|host|origin|sec-websocket-[a-z]+):[ \t]*([^\r\n]*)"
)
#: Values the protocol answers a handshake from without Autobahn: a key of
#: 16 bytes in base64, the host and origin Autobahn would accept with the
#: relay's settings (any origin but null), and the compression offers
#: browsers make.
_KEY = re.compile(rb"[a-z0-9+/]{22}==")
_HOST = re.compile(rb"[a-z0-9.\-]+(:[0-9]{1,5})?|\[[0-9a-f:.]+\](:[0-9]{1,5})?")
_ORIGIN = re.compile(rb"https?://[a-z0-9.\-]+(?::([0-9]{1,5}))?")
#: A control character in a header line, which Autobahn's parser refuses
#: (RFC 9110 §5.5): such a handshake is left to it.
_CONTROL = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_COMPRESSION_OFFERS = {b"permessage-deflate", b"permessage-deflate; client_max_window_bits"}


class IDirectEndpoint(Interface):
    """
    An endpoint L{FastPathChannel} serves without twisted.web: the relay's
    L{socktopus_tw.relay.api.BackendResource}.
    """

    path = Attribute("The path it is served at, for log lines.")

    def post(body: bytes) -> object:
        """
        Handle a request body: a JSON-able result, a Deferred of one (or of
        encoded JSON bytes), or an L{ApiError} raised.
        """


class IDirectUpgrade(Interface):
    """
    An endpoint whose plain WebSocket upgrades L{FastPathChannel} hands to a
    protocol itself: the relay's L{socktopus_tw.relay.upgrade.ReceiveResource}.
    """

    path = Attribute("The path it is served at, for log lines.")

    def accept(token: str, peer: IAddress | None, key: bytes | None) -> IProtocol:
        """
        The protocol to hand the connection to; or raise the L{ApiError} to
        answer with. It answers the upgrade when it is connected if given
        the checked C{Sec-WebSocket-Key} (C{key}), or else from the
        request's bytes, which it is given next.
        """


class FastPathChannel(Protocol, TimeoutMixin):
    """
    One HTTP connection, served directly while its requests are plain
    backend calls; see the module's docstring.
    """

    #: The twisted.web channel this connection was handed to, if it was.
    web: Any = None
    #: The bytes of a request whose head or body has not all arrived, and
    #: how many it must hold before it is worth parsing again.
    _partial: bytearray | None = None
    _need = 0
    #: A request being handled asynchronously (a big batch): reading is
    #: paused and what else arrived waits here.
    _pending: Deferred[Any] | None = None
    _held: bytes = b""
    #: The transport's buffer is full (its client reads too slowly): reading
    #: is paused until it drains.
    _writeBlocked = False
    _write: Any = None
    #: No more requests are served: the last was answered with
    #: Connection: close, or refused (L{_refuse}) and C{_dropping} more
    #: bytes of it are read and dropped before the connection is closed.
    _closing = False
    _dropping = 0
    _gone = False
    _registered = False
    #: This channel is its transport's producer (from connectionMade until
    #: the connection closes or is handed over).
    _producer = False
    #: Bytes of the site's body budget the request being received or
    #: handled holds (L{SocktopusSite.reserveBody}).
    _reserved = 0
    _aborting: Any = None
    abortTimeout = HTTPChannel.abortTimeout

    def __init__(self, site: FastPathSite, addr: IAddress | None) -> None:
        self.site = site
        self.addr = addr
        self.routes = site.directRoutes

    def connectionMade(self) -> None:
        if ITCPTransport.providedBy(self.transport):
            self.transport.setTcpNoDelay(True)
        self.transport.registerProducer(self, True)
        self._producer = True
        self.setTimeout(self.timeOut)

    # -- IPushProducer, for the transport: a client that does not read its
    # answers stops us reading its requests, as twisted.web's channel does.

    def pauseProducing(self) -> None:
        self._writeBlocked = True
        self.transport.pauseProducing()

    def resumeProducing(self) -> None:
        self._writeBlocked = False
        if self._pending is None:
            self.transport.resumeProducing()

    def stopProducing(self) -> None:
        pass  # connectionLost follows

    def dataReceived(self, data: bytes) -> None:
        if self.web is not None:
            self.web.dataReceived(data)
            return
        if self._closing:
            self._dropping -= len(data)
            if self._dropping <= 0:
                self.transport.loseConnection()
            else:
                self.resetTimeout()
            return
        self.resetTimeout()
        if self._pending is not None:
            self._held += data
            return
        partial = self._partial
        if partial is not None:
            # Gathered in a bytearray: a body that trickles in a few bytes
            # a read costs its size, not an object per read.
            partial += data
            if len(partial) < self._need:
                return
            data, self._partial = bytes(partial), None
            del partial  # not a second copy of the body while it is served
        self._parse(data)

    def _parse(self, data: bytes) -> None:
        """
        Serve every whole request at the start of C{data}; keep the rest.
        """
        routes = self.routes
        while data:
            end = data.find(b"\r\n\r\n", 0, MAX_HEAD)
            if end < 0:
                if len(data) >= MAX_HEAD:
                    self._handOver(data)
                else:
                    self._partial, self._need = bytearray(data), 0
                return
            head = parseHead(data[:end], routes, self.site.maxBodySize)
            if head is None:
                upgrade = parseUpgrade(data[:end], self.site.upgradeRoutes)
                if upgrade is None:
                    self._handOver(data)
                    return
                if self._upgrade(*upgrade, data[end + 4 :]) or self._closing:
                    return
                data = data[end + 4 :]
                continue
            endpoint, length, close = head
            need = end + 4 + length
            if len(data) < need:
                # A body that takes more than one read counts against the
                # site's budget until it is answered; past it, refused now.
                if not self.site.reserveBody(length):
                    self._refuse(ServiceUnavailable(), need - len(data))
                    return
                self._reserved = length
                self._partial, self._need = bytearray(data), need
                return
            body, data = data[end + 4 : need], data[need:]
            self._serve(endpoint, body, close)
            if self._pending is not None:
                self._held = data
                return
            if self._closing:
                return

    def _serve(self, endpoint: IDirectEndpoint, body: bytes, close: bool) -> None:
        started = perf_counter()
        if not self._registered:
            # For a graceful close at shutdown, as twisted.web's channels are.
            self._registered = True
            self.site.track(self)
        try:
            result = endpoint.post(body)
        except BaseException:
            self._failed(Failure(), endpoint, started, close)
            return
        # A dict, the usual answer, is told apart first: Deferred is an
        # Awaitable, so isinstance() against it takes ABCMeta's slow path.
        if type(result) is not dict and isinstance(result, Deferred):
            self._pending = result
            self.site.busy(self)
            if not self._reserved:
                # Whole in one read, but held while it is handled: counted.
                self._reserved = len(body)
                self.site.reserveBody(len(body), force=True)
            # As twisted.web: no reading and no idle timer while it works.
            self.transport.pauseProducing()
            self.setTimeout(None)
            result.addCallbacks(
                self._succeeded,
                self._failed,
                callbackArgs=(endpoint, started, close),
                errbackArgs=(endpoint, started, close),
            )
            result.addBoth(self._resume)
        else:
            self._answer(200, result, endpoint, started, close)

    def _upgrade(
        self,
        endpoint: IDirectUpgrade,
        token: bytes,
        close: bool,
        head: bytes,
        key: bytes | None,
        rest: bytes,
    ) -> bool:
        """
        Hand the connection to the protocol C{endpoint} admits for C{token},
        with the checked handshake's C{key}, or else the request's own bytes
        (C{head}); then what followed it (C{rest}). Or answer its refusal.
        Whether the connection was handed over.
        """
        started = perf_counter()
        if not self._registered:
            self._registered = True
            self.site.track(self)
        try:
            protocol = endpoint.accept(token.decode("ascii"), self.addr, key)
        except BaseException:
            error = errorFor(Failure(), "GET", endpoint.path)
            self._answer(error.status, error.body(), endpoint, started, close)
            return False
        self.setTimeout(None)
        self.site.untrack(self)
        self._producer = False  # handOver unregisters it
        handOver(self.transport, protocol)
        if key is None:
            protocol.dataReceived(head + b"\r\n\r\n" + rest)
        elif rest:
            protocol.dataReceived(rest)
        return True

    def _succeeded(
        self, result: object, endpoint: IDirectEndpoint, started: float, close: bool
    ) -> None:
        self._answer(200, result, endpoint, started, close)

    def _failed(
        self, failure: Failure, endpoint: IDirectEndpoint, started: float, close: bool
    ) -> None:
        error = errorFor(failure, "POST", endpoint.path)
        self._answer(error.status, error.body(), endpoint, started, close)

    def _answer(
        self, status: int, result: object, endpoint: IDirectEndpoint, started: float, close: bool
    ) -> None:
        if self._reserved:
            self.site.releaseBody(self._reserved)
            self._reserved = 0
        if self._gone:
            return
        status, body = encodeAnswer(status, result, "POST", endpoint.path)
        response = responseHead(status, self.site.httpDate(), len(body), close) + body
        if self._write is None:
            self._write = writerFor(self.transport)
        self._write(response)
        if close:
            self._closing = True
            self.loseConnection()
        metrics = self.site.metrics
        if metrics is not None:
            metrics.observeRequest(type(endpoint).__name__, perf_counter() - started)

    def _resume(self, ignored: object) -> None:
        self._pending = None
        if not (self._gone or self._closing):
            self.setTimeout(self.timeOut)
            if not self._writeBlocked:
                self.transport.resumeProducing()
            held, self._held = self._held, b""
            if held:
                # Served before this connection counts as idle: a shutdown
                # waiting for it must not close it under a pipelined request.
                self._parse(held)
        if self._pending is None:
            self.site.done(self)

    def _refuse(self, error: ApiError, rest: int) -> None:
        """
        Answer C{error} before the body has come, serve nothing more, and
        read and drop the C{rest} bytes of the body still to come (a client
        closed on while it sends would get a reset instead of its answer);
        then close.
        """
        self._closing = True
        self._dropping = rest
        self._unregister()
        if self._writeBlocked:
            self.transport.resumeProducing()
        answerAndLinger(self.transport, error, self.site.httpDate())

    def _unregister(self) -> None:
        if self._producer:
            self._producer = False
            self.transport.unregisterProducer()

    def loseConnection(self) -> None:
        """
        Close once what is queued is sent, as twisted.web's channel does: no
        longer the transport's producer first, or a transport whose buffer
        had filled (a big answer, a client reading slowly) would resume this
        producer when it drains instead of closing.
        """
        if self.web is not None:
            self.web.loseConnection()
            return
        self._unregister()
        self.transport.loseConnection()

    def _handOver(self, data: bytes) -> None:
        """
        Give the connection to twisted.web, starting with C{data}: the bytes
        of the current request on.
        """
        self.setTimeout(None)
        # The twisted.web channel is the transport's producer from now on,
        # and the one a shutdown closes (which, once the connection is a
        # WebSocket, it must leave to the registry and its CLOSE).
        self._unregister()
        self.site.untrack(self)
        web = self.web = self.site.buildWebChannel(self.addr)
        web.makeConnection(self.transport)
        web.dataReceived(data)

    def timeoutConnection(self) -> None:
        # As twisted.web's channel: close, and abort if the client does not
        # read what is still queued for it within abortTimeout seconds.
        self._aborting = self.callLater(self.abortTimeout, self.transport.abortConnection)
        self.loseConnection()

    def connectionLost(self, reason: Failure) -> None:
        self._gone = True
        self.setTimeout(None)
        if self._aborting is not None and self._aborting.active():
            self._aborting.cancel()
        if self.web is not None:
            self.web.connectionLost(reason)
        elif self._pending is None:
            # (A request still being handled gives its share back when answered.)
            self.site.untrack(self)
            if self._reserved:
                self.site.releaseBody(self._reserved)
                self._reserved = 0


def parseUpgrade(
    head: bytes, routes: dict[bytes, IDirectUpgrade]
) -> tuple[IDirectUpgrade, bytes, bool, bytes, bytes | None] | None:
    """
    Read a request head that may be a plain WebSocket upgrade of one of
    C{routes}: C{GET /path?token=TOKEN HTTP/1.1} with C{Upgrade: websocket}
    and no body.

    @return: the endpoint, the token, whether the client asked to close
        after a refusal, the head, and the C{Sec-WebSocket-Key} when the
        handshake is one the protocol may answer without parsing it again
        (see L{isPlainHandshake}); or L{None} for twisted.web to answer.
    """
    match = _UPGRADE.fullmatch(head)
    if match is None or head.count(b"\r\n") > MAX_HEADERS:
        return None
    endpoint = routes.get(match[1])
    if endpoint is None:
        return None
    lines = match[3]
    found: dict[bytes, list[bytes]] = {}
    key = None
    for header in _HANDSHAKE.finditer(lines.lower()):
        # Stripped here: a lazy match before trailing blanks backtracks.
        value = header[2].rstrip(b" \t")
        found.setdefault(header[1], []).append(value)
        if header[1] == b"sec-websocket-key":
            start = header.start(2)
            key = lines[start : start + len(value)]  # as it came: base64
    upgrade, connection = found.pop(b"upgrade", ()), found.pop(b"connection", ())
    if len(upgrade) != 1 or len(connection) > 1 or upgrade[0] != b"websocket":
        return None
    if not found.keys() <= _HANDSHAKE_HEADERS:
        return None  # a body, or HTTP this path does not implement
    close = bool(connection) and b"close" in connection[0].split(b" ")
    if not isPlainHandshake(found, connection) or _CONTROL.search(lines) is not None:
        key = None
    return endpoint, match[2], close, head, key


def isPlainOrigin(origin: bytes) -> bool:
    """
    Whether C{origin} is C{http(s)://host[:port]}, which Autobahn allows
    (C{null}, which it refuses, is left to it).
    """
    match = _ORIGIN.fullmatch(origin)
    return match is not None and (match[1] is None or int(match[1]) <= 65535)


#: The headers of an upgrade's opening handshake that L{isPlainHandshake}
#: reads (C{Upgrade} and C{Connection} aside).
_HANDSHAKE_HEADERS = {
    b"host",
    b"origin",
    b"sec-websocket-key",
    b"sec-websocket-version",
    b"sec-websocket-extensions",
    b"sec-websocket-protocol",
}


def isPlainHandshake(found: dict[bytes, list[bytes]], connection: list[bytes] | tuple) -> bool:
    """
    Whether a handshake is one Autobahn would accept with nothing in it
    that needs more than its key to answer: C{Connection: Upgrade}, one
    host, key and version 13, at most one origin of the forms browsers send
    (any is allowed but C{null}), no subprotocol, and no extension but the
    compression offers browsers make (declined, as every offer is). Any
    other is given to Autobahn to parse.

    @param found: the lower-cased values of the handshake's headers but
        C{Upgrade} and C{Connection}, by name.
    @param connection: the lower-cased C{Connection} header, if any.
    """
    host, origin = found.get(b"host", ()), found.get(b"origin", ())
    keys, extensions = (
        found.get(b"sec-websocket-key", ()),
        found.get(b"sec-websocket-extensions", ()),
    )
    return (
        len(connection) == 1
        and b"upgrade" in [token.strip(b" \t") for token in connection[0].split(b",")]
        and len(host) == 1
        and _HOST.fullmatch(host[0]) is not None
        and len(keys) == 1
        and _KEY.fullmatch(keys[0]) is not None
        and found.get(b"sec-websocket-version") == [b"13"]
        and b"sec-websocket-protocol" not in found
        and (not origin or (len(origin) == 1 and isPlainOrigin(origin[0])))
        and (not extensions or (len(extensions) == 1 and extensions[0] in _COMPRESSION_OFFERS))
    )


def parseHead(
    head: bytes, routes: dict[bytes, IDirectEndpoint], maxBodySize: int
) -> tuple[IDirectEndpoint, int, bool] | None:
    """
    Read a request head (up to, not including, its blank line).

    @return: the endpoint, the body's length and whether the client asked
        to close the connection after the response; or L{None} when the
        request is not a plain call of one of C{routes}, for twisted.web to
        answer.
    """
    match = _HEAD.fullmatch(head)
    if match is None or head.count(b"\r\n") > MAX_HEADERS:
        return None
    endpoint = routes.get(match[1])
    if endpoint is None:
        return None
    length = connection = None
    close = False
    for name, value in _SPECIAL.findall(match[2].lower()):
        if name == b"content-length":
            value = value.strip(b" \t")
            if length is not None or not value.isdigit() or len(value) > 18:
                return None
            length = int(value)
        elif name == b"connection" and connection is None:
            # As twisted.web reads it: tokens separated by spaces.
            connection = value.strip(b" \t")
            close = b"close" in connection.split(b" ")
        else:
            return None
    if length is None or length > maxBodySize:
        return None
    return endpoint, length, close


class FastPathSite(SocktopusSite):
    """
    The daemon's site: its routes' plain backend calls served by
    L{FastPathChannel}, everything else by twisted.web.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.directRoutes: dict[bytes, IDirectEndpoint] = {}
        self.upgradeRoutes: dict[bytes, IDirectUpgrade] = {}

    def route(self, name: bytes, resource: IResource) -> None:
        """
        Serve C{resource} at C{/name} in the resource tree and, when it
        provides L{IDirectEndpoint} (or L{IDirectUpgrade}), its plain
        C{POST}s (or upgrades) on the fast path: one
        table, so a request the fast path hands over reaches the same object.
        """
        self.resource.putChild(name, resource)
        if IDirectEndpoint.providedBy(resource):
            self.directRoutes[b"/" + name] = resource
        if IDirectUpgrade.providedBy(resource):
            self.upgradeRoutes[b"/" + name] = resource

    def buildProtocol(self, addr: IAddress) -> FastPathChannel | None:
        channel = FastPathChannel(self, addr)
        channel.factory = self
        # As twisted.web's channels: the site's reactor and idle timeout.
        channel.callLater = self.reactor.callLater
        channel.timeOut = self.timeOut
        return channel

    def buildWebChannel(self, addr: IAddress | None) -> Any:
        """
        A twisted.web channel, for a connection L{FastPathChannel} hands over.
        """
        return super().buildProtocol(addr)
