# -*- test-case-name: tests.relay.test_websocket,tests.relay.test_hostile_clients -*-
"""
The thin WebSocket layer: an Autobahn protocol that only parses frames and
calls the registry (L{socktopus_tw.relay.upgrade} admits the connection
before the upgrade).

It also keeps one client from hurting the others: what the daemon queues for
a client is capped, a client whose answers cannot be sent is not read, a
connection's frames are handled a few per reactor turn, and a client that
sends faster than its rate is closed.
"""

from __future__ import annotations

from base64 import b64encode
from collections import deque
from hashlib import sha1
from typing import Any

import txaio
from autobahn.twisted.util import create_transport_details
from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.wamp.types import TransportDetails
from autobahn.websocket.protocol import TrafficStats, WebSocketProtocol
from autobahn.websocket.utf8validator import Utf8Validator
from twisted.internet import abstract
from twisted.internet.error import ConnectionAborted, ConnectionDone, ConnectionLost
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOProtocol
from twisted.python.failure import Failure
from zope.interface import implementer

from socktopus_tw.http.writing import writerFor
from socktopus_tw.relay import events
from socktopus_tw.relay.registry import IRegistry, IRelayConnection

log = Logger()

_CONNECTING = WebSocketProtocol.STATE_CONNECTING
_OPEN = WebSocketProtocol.STATE_OPEN
_CLOSING = WebSocketProtocol.STATE_CLOSING
_CLOSED = WebSocketProtocol.STATE_CLOSED
_SHORT_HEADS = [bytes((0x81, length)) for length in range(126)]

#: What one queued write costs beyond its bytes: Twisted keeps each write as
#: its own bytes object (a 33-byte header, rounded up by the allocator) in a
#: list (8 bytes a slot). With tiny messages that is most of the memory, so
#: the cap counts it: a frame costs its length plus this.
WRITE_OVERHEAD = 64

#: The longest header a server text frame has (RFC 6455 §5.2).
_MAX_HEAD = 10

#: The most bytes Autobahn is handed at a time (see RelayProtocol._feed):
#: more than the largest frame a client may send (1 KiB and its header).
_SLICE = 4096

# How every close frame we send begins (FIN, opcode 8).
_CLOSE_FRAME = b"\x88"

#: Seconds between looks at a paused client's backlog: whether it took any
#: of it since the last look (see RelayProtocol._lookAtProgress).
PROGRESS_INTERVAL = 0.5

#: The most frames a client's kernel could hold for us while we did not read
#: it: a generous receive buffer (256 KiB) of the smallest frame a client can
#: send (6 bytes, an empty masked one). It bounds the rate limit's credit
#: for the time a client was not read.
_KERNEL_FRAMES = 256 * 1024 // 6

#: RFC 6455 §4.2.2: what a key is hashed with for Sec-WebSocket-Accept.
_WS_MAGIC = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

_measurable: dict[type, bool] = {}


def sendBufferOf(transport: Any) -> abstract.FileDescriptor | None:
    """
    The Twisted connection whose send buffer holds what is written to
    C{transport}: itself for TCP, the connection beneath for TLS; C{None}
    when its buffer cannot be measured.

    The buffer's attributes (C{dataBuffer}, C{offset}, C{_tempDataBuffer},
    C{_tempDataLen}) are not public API; they are checked once per class, so
    a Twisted release that changes them makes this C{None} (and the cap falls
    back to counting what is written while paused), never an error.
    """
    if isinstance(transport, TLSMemoryBIOProtocol):
        transport = transport.transport
    kind = type(transport)
    verdict = _measurable.get(kind)
    if verdict is None:
        verdict = isinstance(transport, abstract.FileDescriptor) and all(
            hasattr(transport, name)
            for name in ("dataBuffer", "offset", "_tempDataBuffer", "_tempDataLen")
        )
        _measurable[kind] = verdict
    return transport if verdict else None


def _pendingBytes(buffer: abstract.FileDescriptor) -> int:
    # What Twisted has not sent yet: the rest of the buffer it is sending
    # from, and the writes queued behind it.
    return len(buffer.dataBuffer) - buffer.offset + buffer._tempDataLen


def queuedMemory(buffer: abstract.FileDescriptor) -> int:
    """
    What C{buffer}'s queue holds in memory, as the cap counts it: its unsent
    bytes and L{WRITE_OVERHEAD} for each write waiting in its list.
    """
    return _pendingBytes(buffer) + WRITE_OVERHEAD * len(buffer._tempDataBuffer)


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
    closes, C{DATA:<content>} is a message for the backend when the app has
    a webhook (SPEC §7.3); anything else, binary frames included, closes
    the connection.

    It is its transport's streaming producer. While the transport's buffer
    is full (Twisted pauses it past 64 KiB) the client is not read unless it
    shows it reads: every L{PROGRESS_INTERVAL} (and at each keepalive) its
    backlog is looked at, and it is read until the next look only if it took
    some of it since the last one. So a client that never reads cannot make
    us queue answers, and one that reads a steady stream (which keeps the
    buffer from ever emptying, when Twisted resumes us) is still heard. And
    everything queued for it, relayed messages and Autobahn's own frames
    alike, is measured against C{maxClientBuffer}: a client past that is cut
    off, so one slow reader can neither slow others down nor grow the
    daemon's memory. A client that reads is never cut off while its backlog
    stays under the cap.

    Its frames are handled at most C{factory.framesPerTurn} per reactor turn,
    and a client that sends more than C{factory.clientMessageRate} frames a
    second (bursts of C{clientMessageBurst}) is closed with 1008; the time
    it was not read is credited, since its frames waited in its kernel.
    """

    app: str = ""
    connectionId: str = ""
    _registered = False
    # The transport asked us to pause: its send buffer is full.
    _paused = False
    # Not read because paused, and the client has not shown since the last
    # look that it reads (see _lookAtProgress); since when.
    _held = False
    _heldSince = 0.0
    # The next look at a paused client's backlog.
    _watch: IDelayedCall | None = None
    # Whether we asked the transport to stop reading the client.
    _notReading = False
    # Closed for sending too fast: nothing more it sends is read.
    _deaf = False
    # The connection whose buffer we measure (see sendBufferOf), if any.
    _sendBuffer: abstract.FileDescriptor | None = None
    # Without one: what was queued since the transport paused us. With one:
    # the bytes written since _drainMark was taken, to tell whether the
    # client has read anything (see keepalive).
    _queuedWhilePaused = 0
    _drainMark = 0
    # Bytes read and not yet handed to Autobahn (see _feed); a bytearray
    # from onOpen on.
    _inbox: bytes | bytearray = b""
    # The rest of this turn's frames, once framesPerTurn were handled.
    _nextTurn: IDelayedCall | None = None
    _framesThisTurn = 0
    # The client's token bucket for the rate limit, and the frames credited
    # beyond it for the time it was not read.
    _tokens = 0.0
    _refilledAt = 0.0
    _credit = 0.0
    # Whether DATA: frames are messages (the app has a webhook).
    _messages = False
    # Ended for a reason of ours or the client's close, closing (see _leave).
    _left = False
    #: The Sec-WebSocket-Key of an opening handshake read and checked before
    #: the connection was handed here (by the fast path): answered as soon
    #: as the connection is made instead of parsed again by Autobahn.
    handshakeKey: bytes | None = None

    # -- Autobahn's connection set-up and end ----------------------------
    #
    # Autobahn formats debug lines (qualified names, the reason's traceback,
    # its whole configuration) on every connect, read and close, whether or
    # not anything logs them: three quarters of a connect's CPU. These do
    # what its methods do without them.

    def connectionMade(self) -> None:
        details = create_transport_details(self.transport, True)
        details.channel_framing = TransportDetails.CHANNEL_FRAMING_WEBSOCKET
        self._transport_details = details
        self.peer = details.peer
        self._connectionMade()

    def dataReceived(self, data: bytes) -> None:
        self._dataReceived(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if not isinstance(reason.value, (ConnectionDone, ConnectionAborted, ConnectionLost)):
            super().connectionLost(reason)  # TLS errors, which Autobahn logs
            return
        WebSocketProtocol._connectionLost(self, reason)
        self.factory.countConnections -= 1

    def _connectionMade(self) -> None:
        """
        Autobahn's set-up of a connection (L{WebSocketProtocol._connectionMade}
        and the server's), less the debug lines it formats on every connect
        whether or not anything logs them: its whole configuration through
        C{pprint}, a quarter of a connect's CPU. Then the handshake the fast
        path read (L{handshakeKey}) is answered at once; any other waits for
        Autobahn to parse it. C{tests.relay.test_websocket} holds the state
        this leaves to Autobahn's own.
        """
        factory = self.factory
        for name in self.CONFIG_ATTRS:
            if not hasattr(self, name):
                setattr(self, name, getattr(factory, name))
        self._perMessageCompress = None
        self.trackedTimings = None
        self.setTrackTimings(self.trackTimings)
        self.trafficStats = TrafficStats()
        self.state = WebSocketProtocol.STATE_CONNECTING
        self.send_state = WebSocketProtocol.SEND_STATE_GROUND
        self.data = b""
        self.send_queue = deque()
        self.triggered = False
        self.utf8validator = Utf8Validator()
        self.wasMaxFramePayloadSizeExceeded = False
        self.wasMaxMessagePayloadSizeExceeded = False
        self.closedByMe = False
        self.failedByMe = False
        self.droppedByMe = False
        self.wasClean = False
        self.wasNotCleanReason = None
        self.wasServerConnectionDropTimeout = False
        self.wasOpenHandshakeTimeout = False
        self.wasCloseHandshakeTimeout = False
        self.wasServingFlashSocketPolicyFile = False
        self.localCloseCode = None
        self.localCloseReason = None
        self.remoteCloseCode = None
        self.remoteCloseReason = None
        self.openHandshakeTimeoutCall = None
        self.closeHandshakeTimeoutCall = None
        self.autoPingTimeoutCall = None
        self.autoPingPending = None
        self.autoPingPendingCall = None
        self.autoPingPendingSeq = 0
        self.autoPingPendingSent = None
        factory.countConnections += 1
        if self.handshakeKey is not None:
            self._answerHandshake(self.handshakeKey)
        elif self.openHandshakeTimeout > 0:
            self.openHandshakeTimeoutCall = factory._batched_timer.call_later(
                self.openHandshakeTimeout, self.onOpenHandshakeTimeout
            )

    def _answerHandshake(self, key: bytes) -> None:
        """
        Answer a plain RFC 6455 opening handshake with C{key} as Autobahn's
        C{succeedHandshake} does (same bytes: no subprotocol, no
        extension), and open. What Autobahn keeps of a handshake it parsed
        and nothing reads once open is not kept: the head's fields, the
        compression offer it declined, the head's bytes in C{trafficStats}.
        """
        self.websocket_version = 13
        self.websocket_protocols = []
        self.websocket_extensions = []
        self.websocket_protocol_in_use = None
        self.websocket_extensions_in_use = []
        self.sendData(
            self.factory.switchingProtocols
            + b64encode(sha1(key + _WS_MAGIC).digest())
            + b"\r\n\r\n"
        )
        self.state = _OPEN
        self.inside_message = False
        self.current_frame = None
        self._onOpen()
        txaio.resolve(self.is_open, None)

    # -- IRelayConnection ------------------------------------------------

    def deliver(self, payload: bytes) -> bool:
        if self.state != _OPEN:
            return False
        # Checked only while the transport is paused: until then its buffer
        # holds less than 64 KiB, and /send's hot path stays one test.
        if self._paused and not self._mayQueue(len(payload), _MAX_HEAD):
            return False
        # Framed and written here rather than by Autobahn's sendMessage: the
        # hot path of /send, one text frame per message, sent at once.
        self._write(textFrame(payload))
        return True

    def keepalive(self) -> None:
        if self.state != _OPEN:
            return
        if self._paused:
            self._lookAtProgress()
            if self.state != _OPEN:
                return
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

    # -- the cap ---------------------------------------------------------

    def _mayQueue(self, size: int, head: int = 0) -> bool:
        """
        Whether C{size} more bytes (and a frame C{head}) may be queued for
        this client; past C{maxClientBuffer} it is cut off instead.
        """
        self._queuedWhilePaused += size
        buffer = self._sendBuffer
        if buffer is None:
            queued = self._queuedWhilePaused
        else:
            queued = queuedMemory(buffer) + size + head + WRITE_OVERHEAD
        if queued <= self.factory.maxClientBuffer:
            return True
        log.info(
            "Cutting off {app}/{connectionId}: more than {cap} bytes queued for it",
            app=self.app,
            connectionId=self.connectionId,
            cap=self.factory.maxClientBuffer,
        )
        # abort: the buffered bytes are dropped at once, not flushed.
        self._leave(events.BUFFER)
        self.dropConnection(abort=True)
        return False

    def _lookAtProgress(self) -> None:
        """
        While paused: read the client until the next look if it took some of
        its backlog since the last one, else hold its reading.

        Its frames may wait unread meanwhile, so they cannot show it is
        alive; that it reads does. A vanished client takes nothing: it is
        not read, and is closed as idle.
        """
        if self._hasRead():
            self.factory.registry.activity(self)
            if self._held:
                self._release()
        elif not self._held:
            self._hold()

    def _watchProgress(self) -> None:
        self._watch = None
        if not self._paused or self.state == _CLOSED:
            return
        self._watch = self.factory.clock.callLater(PROGRESS_INTERVAL, self._watchProgress)
        self._lookAtProgress()

    def _cancelWatch(self) -> None:
        if self._watch is not None:
            if self._watch.active():
                self._watch.cancel()
            self._watch = None

    def _hold(self) -> None:
        self._held = True
        self._heldSince = self.factory.clock.seconds()
        self._stopReading()

    def _release(self) -> None:
        """
        Read the client again: what it sent while it was held waited in its
        kernel, so the rate limit is credited for that time (as much as the
        kernel could have held), and the frames are handled on the next turn.
        """
        self._held = False
        factory = self.factory
        held = factory.clock.seconds() - self._heldSince
        self._credit = min(self._credit + held * factory.clientMessageRate, _KERNEL_FRAMES)
        if (self.data or self._inbox) and self.state != _CLOSED:
            # Frames read before: on the next turn, not from inside the
            # transport's write.
            self._scheduleTurn()
        else:
            self._startReading()

    def _hasRead(self) -> bool:
        """
        Whether the client took any of its backlog since the last call (or
        since the transport paused us); C{False} when that cannot be seen.
        """
        buffer = self._sendBuffer
        if buffer is None:
            return False
        pending = _pendingBytes(buffer)
        hasRead = self._drainMark + self._queuedWhilePaused > pending
        self._drainMark, self._queuedWhilePaused = pending, 0
        return hasRead

    def sendData(self, data: bytes, sync: bool = False, chopsize: int | None = None) -> None:
        # Autobahn's own writes (pongs, pings, PONG, the handshake) count
        # against the cap as relayed messages do; on a transport we can
        # measure, always, since pongs are the smallest and costliest writes.
        # A close frame goes through: it is the last frame, and the close
        # handshake's timeout ends the connection anyway.
        if (
            (self._paused or self._sendBuffer is not None)
            and data[:1] != _CLOSE_FRAME
            and not self._mayQueue(len(data))
        ):
            return
        if sync or chopsize or self.send_queue:
            super().sendData(data, sync, chopsize)
            return
        # What Autobahn's does with a plain write, less its debug line.
        self._write(data)
        if self.state == _OPEN:
            self.trafficStats.outgoingOctetsWireLevel += len(data)
        elif self.state == _CONNECTING:
            self.trafficStats.preopenOutgoingOctetsWireLevel += len(data)
        if self.logOctets:
            self.logTxOctets(data, False)

    # -- IPushProducer, for the transport --------------------------------

    def pauseProducing(self) -> None:
        # Twisted calls this on every write while its buffer is full.
        if self._paused:
            return
        self._paused = True
        self._queuedWhilePaused = 0
        if self._sendBuffer is not None:
            self._drainMark = _pendingBytes(self._sendBuffer)
            # Twisted resumes us only once the buffer is empty, which a
            # steady stream may never let happen: look at the client's
            # progress meanwhile.
            if self._watch is None and self.state != _CLOSED:
                self._watch = self.factory.clock.callLater(PROGRESS_INTERVAL, self._watchProgress)
        self._hold()

    def resumeProducing(self) -> None:
        # Twisted calls this once its buffer is empty.
        self._paused = False
        self._queuedWhilePaused = 0
        self._cancelWatch()
        if self._held:
            self._release()
        else:
            self._startReading()

    def stopProducing(self) -> None:
        # The connection is gone (connectionLost follows): stop for good.
        self._paused = self._held = True
        self._cancelTurn()
        self._cancelWatch()

    # -- reading: a few frames per turn, none while paused ---------------

    def _stopReading(self) -> None:
        if not self._notReading:
            self._notReading = True
            # The transport's own producer side: for a TCP connection this
            # stops reading its socket (and does not call us back).
            self.transport.pauseProducing()

    def _startReading(self) -> None:
        if self._notReading and not (self._held or self._deaf) and self._nextTurn is None:
            self._notReading = False
            self.transport.resumeProducing()

    def _scheduleTurn(self) -> None:
        self._stopReading()
        if self._nextTurn is None:
            self._nextTurn = self.factory.clock.callLater(0, self._turn)

    def _cancelTurn(self) -> None:
        if self._nextTurn is not None:
            if self._nextTurn.active():
                self._nextTurn.cancel()
            self._nextTurn = None

    def _turn(self) -> None:
        self._nextTurn = None
        if self.state == _CLOSED:
            return
        self.consumeData()
        self._startReading()

    def _dataReceived(self, data: bytes) -> None:
        if self.state != _OPEN and self.state != _CLOSING:
            super()._dataReceived(data)  # the handshake, or nothing once closed
            return
        self._inbox += data
        self.consumeData()

    def consumeData(self) -> None:
        # Autobahn handles every frame it has in one go; a client could make
        # that a whole socket read of tiny frames, and every other client
        # would wait. So at most framesPerTurn here, the rest on later turns
        # (not reading meanwhile), and none while the client is held (its
        # answers cannot be sent, and it does not show it reads).
        if self.state != _OPEN and self.state != _CLOSING:
            super().consumeData()  # the handshake, or nothing once closed
            return
        if self._deaf:
            self.data = b""
            self._inbox.clear()
            return
        if self._held or self._nextTurn is not None:
            return
        self._framesThisTurn = 0
        limit = self.factory.framesPerTurn
        while True:
            self._feed()
            more = self.processData()
            if self.state == _CLOSED:
                return
            if self._framesThisTurn >= limit or self._held or self._deaf:
                if not (self._held or self._deaf) and (self.data or self._inbox):
                    self._scheduleTurn()
                return
            if not more and not (self._inbox and len(self.data) < _SLICE):
                return  # no whole frame left: wait for the client

    def _feed(self) -> None:
        # Autobahn copies the rest of its buffer for every frame it parses,
        # which makes a 64 KiB read of tiny frames cost quadratic time: it is
        # handed the bytes a slice at a time (every frame a client may send
        # fits in one), the rest wait here.
        data = self.data
        if len(data) > _SLICE:
            self._inbox[:0] = data[_SLICE:]
            self.data = data[:_SLICE]
        elif self._inbox and len(data) < _SLICE:
            want = _SLICE - len(data)
            self.data = data + bytes(self._inbox[:want])
            del self._inbox[:want]

    def onFrameEnd(self) -> bool | None:
        self._framesThisTurn += 1
        return super().onFrameEnd()

    # -- the rate limit --------------------------------------------------

    def _allow(self) -> bool:
        """
        Spend one of the client's tokens for a frame; a client out of them
        is closed with 1008 (policy violation), as SPEC §7.3 has it.
        """
        factory = self.factory
        now = factory.clock.seconds()
        tokens = min(
            factory.clientMessageBurst,
            self._tokens + (now - self._refilledAt) * factory.clientMessageRate,
        )
        self._refilledAt = now
        if tokens >= 1:
            self._tokens = tokens - 1
            return True
        self._tokens = tokens
        if self._credit >= 1:
            self._credit -= 1
            return True
        if self.state == _OPEN:
            log.info(
                "Closing {app}/{connectionId}: more than {rate} frames a second",
                app=self.app,
                connectionId=self.connectionId,
                rate=factory.clientMessageRate,
            )
            # Autobahn's sendClose() refuses 1008; see _refuse.
            self._leave(events.ERROR)
            self.sendCloseFrame(code=1008, reasonUtf8=b"Too many frames")
            # And nothing more of the flood is parsed: the close handshake
            # is left to time out (closeHandshakeTimeout), which aborts.
            self._deaf = True
            self.data = b""
            self._inbox.clear()
            self._stopReading()
        return False

    # -- Autobahn callbacks ----------------------------------------------

    def onOpen(self) -> None:
        self._write = writerFor(self.transport)
        self._sendBuffer = sendBufferOf(self.transport)
        self._inbox = bytearray()
        self._tokens = self.factory.clientMessageBurst
        self._refilledAt = self.factory.clock.seconds()
        self.transport.registerProducer(self, True)
        registry = self.factory.registry
        self._messages = registry.acceptsMessages(self.app)
        if self._messages:
            # Clients of an app with a webhook send messages, capped as
            # /send's are; a browser sends each in one frame.
            self.maxFramePayloadSize = self.maxMessagePayloadSize
        self._registered = True
        registry.register(self)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        # Once closing, what the client still sends before its close frame
        # is not answered (Autobahn refuses to send then).
        if self.state != _OPEN or not self._allow():
            return
        self.factory.registry.activity(self)
        if isBinary:
            self._refuse(b"Binary frames are not accepted")
        elif payload == b"PING":
            self.sendMessage(b"PONG")
        elif payload == b"CLOSE":
            self._leave(events.CLIENT)
            self.sendClose(1000)
        elif self._messages and payload[:5] == b"DATA:":
            # Autobahn checked it is UTF-8 and within the size cap.
            self.factory.registry.message(self, payload[5:].decode("utf-8"))
        else:
            # As the Go original: any other text ends the connection.
            self._refuse(b"Expected PING or CLOSE")

    def _refuse(self, reason: bytes) -> None:
        # 1003 "unsupported data" is the honest code; Autobahn's sendClose()
        # only lets applications use 1000 and 3000-4999, so send the frame
        # through the lower-level call it uses itself.
        if self.state == _OPEN:
            self._leave(events.ERROR)
            self.sendCloseFrame(code=1003, reasonUtf8=reason)

    def onCloseFrame(self, code: int | None, reasonRaw: bytes | None) -> bool | None:
        # The client starts the close handshake (while we were open): it
        # leaves now, whatever comes while the handshake ends.
        if self.state == _OPEN:
            self._leave(events.CLIENT)
        return super().onCloseFrame(code, reasonRaw)

    def _leave(self, reason: str) -> None:
        """
        This connection is ending for C{reason}: out of the registry at
        once (nothing more is delivered to it, and a kick, an idle close or
        the shutdown while its close handshake ends does not change why it
        ended).
        """
        if self._registered and not self._left:
            self._left = True
            self.factory.registry.unregister(self, reason, closing=True)

    def onPing(self, payload: bytes) -> None:
        if self.state != _OPEN or not self._allow():
            return
        self.factory.registry.activity(self)
        super().onPing(payload)

    def onPong(self, payload: bytes) -> None:
        # Counted too: the server pings a quiet client once per half idle
        # timeout, so a client sending more pongs than that is flooding.
        if self.state != _OPEN or not self._allow():
            return
        self.factory.registry.activity(self)

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        self._cancelTurn()
        self._cancelWatch()
        if self._registered:
            self._registered = False
            # If not left yet (see _leave): lost without a close handshake,
            # or failed by Autobahn for a protocol violation; or the registry
            # closed it, and then its own reason stands.
            self.factory.registry.unregister(self, events.CLIENT if wasClean else events.ERROR)


class RelayFactory(WebSocketServerFactory):
    """
    Builds L{RelayProtocol}s that share one registry.

    @ivar framesPerTurn: how many frames of one connection are handled per
        reactor turn before the others get theirs.
    @ivar clientMessageRate: frames a second a client may send (messages,
        pings and pongs); more closes it with 1008.
    @ivar clientMessageBurst: how many it may send at once: twice the rate.
    """

    protocol = RelayProtocol
    framesPerTurn = 32

    def __init__(
        self,
        registry: IRegistry,
        maxClientBuffer: int = 8 * 1024 * 1024,
        maxMessageSize: int = 1024 * 1024,
        closeHandshakeTimeout: float = 2.0,
        clientMessageRate: float = 20.0,
        clock: IReactorTime | None = None,
    ) -> None:
        """
        @param clock: what the rate limit and the turns run on; by default
            the registry's clock.
        """
        super().__init__(server="Socktopus")
        #: The head of the answer to a handshake L{RelayProtocol} answers
        #: itself, up to its Sec-WebSocket-Accept value: Autobahn's bytes.
        self.switchingProtocols = (
            b"HTTP/1.1 101 Switching Protocols\r\nServer: Socktopus\r\n"
            b"Upgrade: WebSocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: "
        )
        self.registry = registry
        self.clock = clock if clock is not None else registry.clock
        self.maxClientBuffer = maxClientBuffer
        self.clientMessageRate = clientMessageRate
        self.clientMessageBurst = 2 * clientMessageRate
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
