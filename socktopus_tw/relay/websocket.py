# -*- test-case-name: tests.relay.test_websocket,tests.relay.test_hostile_clients -*-
"""
The thin WebSocket layer: an Autobahn protocol that only parses frames and
calls the registry (L{socktopus_tw.relay.upgrade} admits the connection
before the upgrade).
"""

from __future__ import annotations

from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket.protocol import WebSocketProtocol
from twisted.logger import Logger
from zope.interface import implementer

from socktopus_tw.http.writing import writerFor
from socktopus_tw.relay.registry import IRegistry, IRelayConnection

log = Logger()

_OPEN = WebSocketProtocol.STATE_OPEN
_SHORT_HEADS = [bytes((0x81, length)) for length in range(126)]


def textFrame(payload: bytes) -> bytes:
    """
    An unmasked, unfragmented WebSocket text frame (RFC 6455 §5.2), as a
    server sends it.
    """
    length = len(payload)
    if length < 126:
        return _SHORT_HEADS[length] + payload
    if length < 65536:
        return b"\x81\x7e" + length.to_bytes(2, "big") + payload
    return b"\x81\x7f" + length.to_bytes(8, "big") + payload


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
        registry: IRegistry,
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
