# -*- test-case-name: tests.test_websocket -*-
"""
The thin WebSocket layer: C{GET /recieve?token=...} checks the token before
the upgrade, then hands the socket to an Autobahn protocol that only parses
frames and calls the registry.
"""

from __future__ import annotations

from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket.protocol import WebSocketProtocol
from twisted.logger import Logger
from twisted.protocols.policies import ProtocolWrapper
from twisted.web.server import Request
from zope.interface import implementer

from socktopus_tw.apps import Apps
from socktopus_tw.errors import RelayError
from socktopus_tw.relay.registry import IRelayConnection, Registry
from socktopus_tw.relay.tokens import ExpiredToken, MalformedToken, parseToken
from socktopus_tw.web import HANDLED, JsonResource
from socktopus_tw.writing import textFrame, writerFor

log = Logger()

_OPEN = WebSocketProtocol.STATE_OPEN


class UpgradeRequired(RelayError):
    status = 426
    message = "Upgrade required"


class Gatekeeper:
    """
    Decides whether a token may open a connection (SPEC §3.2), in the order
    of the table there: shape, age, app, signature; then the kick deny-list.
    """

    def __init__(self, apps: Apps, registry: Registry) -> None:
        self.apps = apps
        self.registry = registry

    def admit(self, token: str) -> tuple[str, str]:
        """
        Return the canonical app name and the connection id, or raise the
        L{RelayError} the client is answered with.
        """
        try:
            parsed = parseToken(token)
        except RelayError:
            log.info("Refused connection: malformed token")
            raise
        lifespan = self.registry.tokenLifespan * 1000
        try:
            parsed.checkAge(self.registry.clock.seconds() * 1000, lifespan)
            secret = self.apps.secretFor(parsed.app)
            parsed.checkSignature(secret)
        except RelayError as e:
            log.info(
                "Refused connection {app}/{connectionId}: {why}",
                app=parsed.app,
                connectionId=parsed.connectionId,
                why=e.message,
            )
            raise
        app = parsed.app.lower()
        if self.registry.isKicked(app, parsed.connectionId, parsed.milliseconds):
            # The kicked client sees what it would have seen from the Go
            # original, which made kicks stick by waiting for tokens to expire.
            log.info(
                "Refused connection {app}/{connectionId}: kicked",
                app=app,
                connectionId=parsed.connectionId,
            )
            raise ExpiredToken()
        return app, parsed.connectionId


@implementer(IRelayConnection)
class RelayProtocol(WebSocketServerProtocol):
    """
    One client socket. Client text C{PING} is answered C{PONG}, C{CLOSE}
    closes; anything else, binary frames included, closes the connection.

    It is its transport's streaming producer: while the transport's buffer is
    over its high-water mark the protocol counts what it queues on top, and a
    client that lets that pass C{maxClientBuffer} is cut off, so one slow
    reader can neither slow others down nor grow the daemon's memory.
    """

    app: str = ""
    connectionId: str = ""
    _paused = False
    _queuedWhilePaused = 0
    _registered = False

    # -- IRelayConnection ------------------------------------------------

    def deliver(self, payload: bytes) -> bool:
        if self.state != _OPEN:
            return False
        if self._paused:
            self._queuedWhilePaused += len(payload)
            if self._queuedWhilePaused > self.factory.maxClientBuffer:
                log.info(
                    "Cutting off {app}/{connectionId}: it stopped reading",
                    app=self.app,
                    connectionId=self.connectionId,
                )
                # abort: the buffered bytes are dropped at once, not flushed.
                self.dropConnection(abort=True)
                return False
        # Framed and written here rather than by Autobahn's sendMessage: the
        # hot path of /send, one text frame per message, sent at once.
        self._write(textFrame(payload))
        return True

    def keepalive(self) -> None:
        if self.state == _OPEN:
            self.sendPing()

    def evict(self) -> None:
        if self.state == _OPEN:
            self.sendMessage(b"CLOSE")
            self.sendClose(1000)
        else:
            self.dropConnection(abort=True)

    def _write(self, data: bytes) -> None:
        # Until onOpen picks the writer for this transport (see writerFor).
        self.transport.write(data)

    # -- IPushProducer, for the transport --------------------------------

    def pauseProducing(self) -> None:
        self._paused = True

    def resumeProducing(self) -> None:
        self._paused = False
        self._queuedWhilePaused = 0

    def stopProducing(self) -> None:
        self._paused = True

    # -- Autobahn callbacks ----------------------------------------------

    def onOpen(self) -> None:
        self._write = writerFor(self.transport)
        self.transport.registerProducer(self, True)
        self._registered = True
        self.factory.registry.register(self)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.factory.registry.activity(self)
        if isBinary:
            self._refuse(b"Binary frames are not accepted")
        elif payload == b"PING":
            self.sendMessage(b"PONG")
        elif payload == b"CLOSE":
            self.sendClose(1000)
        else:
            # As the Go original: any other text ends the connection.
            self._refuse(b"Expected PING or CLOSE")

    def _refuse(self, reason: bytes) -> None:
        # 1003 "unsupported data" is the honest code; Autobahn's sendClose()
        # only lets applications use 1000 and 3000-4999, so send the frame
        # through the lower-level call it uses itself.
        if self.state == _OPEN:
            self.sendCloseFrame(code=1003, reasonUtf8=reason)

    def onPing(self, payload: bytes) -> None:
        self.factory.registry.activity(self)
        super().onPing(payload)

    def onPong(self, payload: bytes) -> None:
        self.factory.registry.activity(self)

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        if self._registered:
            self._registered = False
            self.factory.registry.unregister(self)


class RelayFactory(WebSocketServerFactory):
    """
    Builds L{RelayProtocol}s that share one registry.
    """

    protocol = RelayProtocol

    def __init__(
        self,
        registry: Registry,
        maxClientBuffer: int = 8 * 1024 * 1024,
        maxMessageSize: int = 1024 * 1024,
        closeHandshakeTimeout: float = 2.0,
    ) -> None:
        super().__init__(server="Socktopus")
        self.registry = registry
        self.maxClientBuffer = maxClientBuffer
        self.setProtocolOptions(
            # Clients only ever send PING and CLOSE, so incoming frames are
            # capped small. Autobahn applies the message cap to outgoing
            # messages too, so that one is the largest frame we may send.
            maxFramePayloadSize=1024,
            maxMessagePayloadSize=maxMessageSize + len(b"DATA:"),
            # permessage-deflate costs CPU per connection and is a zip-bomb
            # surface: refuse every offer.
            perMessageCompressionAccept=lambda offers: None,
            # Idle closes and pings are the registry's; one sweep serves all
            # connections instead of a timer each.
            autoPingInterval=0,
            openHandshakeTimeout=10,
            closeHandshakeTimeout=closeHandshakeTimeout,
        )


class ReceiveResource(JsonResource):
    """
    C{GET /recieve?token=TOKEN} (and C{/receive}): the token is checked
    before the upgrade, and refusals are JSON, as SPEC §3.2 lists them.
    """

    def __init__(self, gatekeeper: Gatekeeper, factory: RelayFactory) -> None:
        super().__init__()
        self.gatekeeper = gatekeeper
        self.factory = factory

    def json_GET(self, request: Request) -> object:
        tokens = request.args.get(b"token")
        if not tokens:
            raise MalformedToken()
        try:
            token = tokens[0].decode("ascii")
        except UnicodeDecodeError:
            raise MalformedToken() from None
        app, connectionId = self.gatekeeper.admit(token)
        upgrade = request.getHeader(b"upgrade") or b""
        if upgrade.lower() != b"websocket" or request.channel.transport is None:
            raise UpgradeRequired()
        self._takeOver(request, app, connectionId)
        return HANDLED

    def _takeOver(self, request: Request, app: str, connectionId: str) -> None:
        protocol = self.factory.buildProtocol(request.transport.getPeer())
        protocol.app = app
        protocol.connectionId = connectionId

        channel = request.channel
        channel.site.forget(request)  # no longer an HTTP request to wait for
        transport, channel.transport = channel.transport, None
        # The socket is the WebSocket's now: stop the HTTP channel's idle timer
        # and release it as the transport's producer, so nothing keeps the
        # channel and this request alive.
        channel.setTimeout(None)
        transport.unregisterProducer()
        if isinstance(transport, ProtocolWrapper):
            transport.wrappedProtocol = protocol
        elif isinstance(getattr(transport, "protocol", None), ProtocolWrapper):
            transport.protocol.wrappedProtocol = protocol
        else:
            transport.protocol = protocol
        protocol.makeConnection(transport)
        # The channel paused reading while it served this request.
        transport.resumeProducing()

        # Anything the client sent after the upgrade request, in the same
        # read, is still in the HTTP parser's hands: it forwards it to us.
        channel.upgradedTo = protocol

        # Autobahn parses the handshake itself: give it the request's bytes.
        head = [request.method + b" " + request.uri + b" HTTP/1.1"]
        for name, values in request.requestHeaders.getAllRawHeaders():
            head.extend(name + b": " + value for value in values)
        protocol.dataReceived(b"\r\n".join(head) + b"\r\n\r\n")
