"""
Clients that attack the relay's WebSocket layer (issue 11): a client that
never reads while it pings, one that floods frames, one that is sent
millions of tiny messages, and one that reads slowly but steadily. None of
them may grow the daemon without bound, hold up other clients, or be cut
off for something it did not do.

The server side is the real L{RelayProtocol} on a L{Wire}: Twisted's own
send buffer (L{twisted.internet.abstract.FileDescriptor}: C{write},
C{doWrite}, the 64 KiB C{bufferSize}, pausing and resuming its producer)
over an in-memory socket whose client reads only as much as a test lets it.
The client's bytes reach the server only while the server reads, as the
kernel would hold them. Time is a L{MemoryReactorClock}; nothing sleeps.
The last tests feed it whatever frames a client could send (hypothesis, a
bounded number of examples) and hold what it does against their own
reading of RFC 6455 (L{expect}).
"""

from __future__ import annotations

import socket
import sys
from typing import Any, NamedTuple

import hypothesis
import txaio
from hypothesis import HealthCheck, given
from hypothesis import strategies as st
from twisted.internet import abstract, error, main, tcp
from twisted.internet.address import IPv4Address
from twisted.internet.protocol import Protocol
from twisted.internet.testing import MemoryReactor, MemoryReactorClock, StringTransport
from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.protocols.tls import TLSMemoryBIOProtocol
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from socktopus_tw import settings
from socktopus_tw.relay.registry import LocalRegistry
from socktopus_tw.relay.websocket import (
    _SLICE,
    WRITE_OVERHEAD,
    RelayFactory,
    RelayProtocol,
    queuedMemory,
    sendBufferOf,
)

APP = "demo"
NOW = 1_700_000_000.0
KiB = 1024

#: What one read of a socket hands the protocol, as Twisted's TCP reads.
READ_SIZE = 64 * KiB

TEXT, CLOSE, PING, PONG = 0x1, 0x8, 0x9, 0xA

HANDSHAKE = (
    b"GET /recieve?token=t HTTP/1.1\r\n"
    b"Host: 127.0.0.1:8080\r\n"
    b"Upgrade: websocket\r\n"
    b"Connection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Sec-WebSocket-Version: 13\r\n"
    b"\r\n"
)


def clientFrame(opcode: int, payload: bytes = b"") -> bytes:
    """
    A masked client frame (RFC 6455 §5.2). The mask key is zero, which is
    valid and leaves the payload as it is.
    """
    assert len(payload) < 126
    return bytes((0x80 | opcode, 0x80 | len(payload))) + b"\0\0\0\0" + payload


def takeFrames(data: bytearray) -> list[tuple[int, bytes]]:
    """
    Remove the complete server frames at the start of C{data}: their
    opcodes and payloads.
    """
    frames = []
    while len(data) >= 2:
        opcode, length, start = data[0] & 0x0F, data[1] & 0x7F, 2
        if length == 126:
            length, start = int.from_bytes(data[2:4], "big"), 4
        elif length == 127:
            length, start = int.from_bytes(data[2:10], "big"), 10
        if len(data) < start + length:
            break
        frames.append((opcode, bytes(data[start : start + length])))
        del data[: start + length]
    return frames


class Wire(abstract.FileDescriptor):
    """
    A server transport with Twisted's real send buffer over an in-memory
    socket. C{writeSomeData} gives the client at most C{window} bytes: what
    it has read.
    """

    def __init__(self, protocol: RelayProtocol, reactor: MemoryReactorClock) -> None:
        super().__init__(reactor)
        self.protocol = protocol
        self.connected = 1
        self.window = 0
        self.delivered = bytearray()
        self.aborted = False
        self.lost = False

    def getPeer(self) -> IPv4Address:
        return IPv4Address("TCP", "127.0.0.1", 40000)

    def getHost(self) -> IPv4Address:
        return IPv4Address("TCP", "127.0.0.1", 8080)

    def writeSomeData(self, data: bytes) -> int:
        sent = min(len(data), self.window)
        self.window -= sent
        self.delivered += data[:sent]
        return sent

    def abortConnection(self) -> None:
        # As Twisted's TCP connections do: nothing more is sent, and the
        # protocol hears of it on the next turn.
        if self.aborted or self.lost:
            return
        self.aborted = True
        self.stopReading()
        self.stopWriting()
        self.reactor.callLater(0, self.connectionLost, Failure(error.ConnectionAborted()))

    def connectionLost(self, reason: Failure) -> None:
        if self.lost:
            return
        self.lost = True
        super().connectionLost(reason)
        self.protocol.connectionLost(reason)

    @property
    def reading(self) -> bool:
        return self in self.reactor.getReaders()

    def pending(self) -> int:
        """
        Bytes queued and not yet taken by the client.
        """
        return len(self.dataBuffer) - self.offset + self._tempDataLen

    def memory(self) -> int:
        """
        What the queue really costs in memory: every queued bytes object
        with its header, and its slot in the list.
        """
        return (
            sys.getsizeof(self.dataBuffer)
            + sys.getsizeof(self._tempDataBuffer)
            + sum(sys.getsizeof(chunk) for chunk in self._tempDataBuffer)
        )

    def flush(self) -> None:
        """
        Send what the client's window allows, as the reactor would call
        C{doWrite} while the socket is writable.
        """
        while not self.lost and self in self.reactor.getWriters():
            before = self.pending(), self.window
            result = self.doWrite()
            if result is not None:
                self.connectionLost(
                    Failure(error.ConnectionDone() if result is main.CONNECTION_DONE else result)
                )
                return
            if (self.pending(), self.window) == before:
                return


class Client:
    """
    One client: what it sends waits in the "kernel" until the server reads
    it; what the server sends waits in the server's buffer until the client
    reads it.
    """

    def __init__(self, case: HostileClientTestCase, connectionId: str) -> None:
        self.case = case
        self.server = case.factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
        self.server.app, self.server.connectionId = APP, connectionId
        self.wire = Wire(self.server, case.reactor)
        self.server.makeConnection(self.wire)
        self.wire.startReading()
        self.outbound = bytearray()
        self.frames: list[tuple[int, bytes]] = []
        self.unparsed = bytearray()
        # How many of its frames reached the protocol's callbacks.
        self.handled = 0
        for name in ("onMessage", "onPing", "onPong"):
            setattr(self.server, name, self._counting(getattr(self.server, name)))
        self.push(HANDSHAKE)
        self.arrive()
        self.wire.window = sys.maxsize
        self.wire.flush()
        self.wire.window = 0
        head, _, rest = bytes(self.wire.delivered).partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101"), head
        self.wire.delivered[:] = rest
        assert self.server.state == RelayProtocol.STATE_OPEN

    def _counting(self, callback):
        def counted(*args):
            self.handled += 1
            return callback(*args)

        return counted

    def push(self, data: bytes) -> None:
        self.outbound += data

    def sendText(self, text: bytes, times: int = 1) -> None:
        self.push(clientFrame(TEXT, text) * times)

    def arrive(self, size: int = READ_SIZE) -> bool:
        """
        One read of at most C{size} bytes by the server, if it is reading:
        whether it read anything.
        """
        if not (self.wire.reading and self.outbound):
            return False
        chunk = bytes(self.outbound[:size])
        del self.outbound[:size]
        self.server.dataReceived(chunk)
        return True

    def read(self, size: int) -> list[tuple[int, bytes]]:
        """
        Read up to C{size} bytes; the frames they completed.
        """
        self.wire.window += size
        self.wire.flush()
        self.wire.window = 0
        self.unparsed += self.wire.delivered
        self.wire.delivered.clear()
        frames = takeFrames(self.unparsed)
        self.frames.extend(frames)
        return frames

    def readAll(self) -> list[tuple[int, bytes]]:
        return self.read(sys.maxsize)

    def answered(self, opcode: int, payload: bytes | None = None) -> int:
        return sum(1 for o, p in self.frames if o == opcode and payload in (None, p))

    def closeCode(self) -> int | None:
        codes = [int.from_bytes(p[:2], "big") for o, p in self.frames if o == CLOSE]
        return codes[0] if codes else None


class HostileClientTestCase(SynchronousTestCase):
    """
    A registry and the real factory on one clock that is also the reactor.
    """

    maxClientBuffer = 1024 * KiB
    clientMessageRate: float = 20
    maxMessageSize = 1024 * KiB

    def setUp(self) -> None:
        self.patch(txaio.config, "loop", None)
        self.build()

    def build(self) -> None:
        """
        A new reactor, registry and factory (each hypothesis example gets
        its own: setUp runs once for all of them).
        """
        self.reactor = MemoryReactorClock()
        self.reactor.advance(NOW)
        # Autobahn's timers (the close handshake's) run on txaio's loop.
        txaio.config.loop = self.reactor
        self.registry = LocalRegistry(self.reactor, idleTimeout=20.0, tokenLifespan=5.0)
        self.factory = RelayFactory(
            self.registry,
            maxClientBuffer=self.maxClientBuffer,
            maxMessageSize=self.maxMessageSize,
            clientMessageRate=self.clientMessageRate,
            clock=self.reactor,
        )

    def connect(self, connectionId: str = "c1") -> Client:
        return Client(self, connectionId)

    def turn(self, *clients: Client) -> None:
        """
        One reactor turn, as Twisted's reactor runs one: the calls due when
        it begins (a C{callLater(0)} made during the turn waits for the
        next), then one read from each connection that is reading.
        """
        now = self.reactor.seconds()
        for call in [c for c in self.reactor.getDelayedCalls() if c.getTime() <= now]:
            if call.active():
                self.reactor.calls.remove(call)
                call.called = 1
                call.func(*call.args, **call.kw)
        for client in clients:
            client.arrive()


class NeverReadingPingerTests(HostileClientTestCase):
    """
    Item 1: a client that pings and never reads the pongs.
    """

    clientMessageRate = 1e9  # the rate limit is not what is tested here

    def flood(self, client: Client, pings: int) -> None:
        client.push(clientFrame(PING, b"p" * 125) * pings)
        for _ in range(2000):
            self.turn(client)

    def test_pausedConnectionStopsBeingRead(self) -> None:
        """157 MB of pings from a client that never reads grow the daemon without bound."""
        client = self.connect()
        self.flood(client, 40_000)  # 5 MiB of pings, 5 MiB of pongs
        self.assertFalse(client.wire.reading)
        # Twisted's 64 KiB buffer and the pongs of the frames read before it
        # filled; the rest of the pings wait in the client's kernel.
        self.assertLess(client.wire.pending(), 2 * 64 * KiB)
        self.assertGreater(len(client.outbound), 4 * 1024 * KiB)
        self.assertFalse(client.wire.aborted)

    def test_readingResumesWhenClientReads(self) -> None:
        """A client that pauses reading for a while never gets its pings answered again."""
        client = self.connect()
        self.flood(client, 5_000)
        self.assertFalse(client.wire.reading)
        for _ in range(10_000):
            client.readAll()
            self.turn(client)
            if not client.outbound and client.answered(PONG) == 5_000:
                break
        self.assertEqual(client.answered(PONG, b"p" * 125), 5_000)
        self.assertTrue(client.wire.reading)
        self.assertEqual(client.server.state, RelayProtocol.STATE_OPEN)

    def test_serverFramesCountAgainstCap(self) -> None:
        """The daemon's own pings to a client that does not read are never counted."""
        client = self.connect()
        while client.wire.memory() < self.maxClientBuffer - 32 * KiB:
            self.assertTrue(client.server.deliver(b"DATA:" + b"x" * 1000))
        for _ in range(1000):
            client.server.keepalive()
        self.assertTrue(client.wire.aborted)
        self.assertLessEqual(client.wire.memory(), self.maxClientBuffer)


class FloodTests(HostileClientTestCase):
    """
    Item 2: a client flooding frames, and the per-connection rate of SPEC §7.3.
    """

    def test_framesPerTurnAreBounded(self) -> None:
        """A client flooding text PING frames stalls every other client."""
        self.factory.clientMessageRate = self.factory.clientMessageBurst = 1e9
        flooder, other = self.connect("flooder"), self.connect("other")
        flooder.sendText(b"PING", 1000)
        other.sendText(b"PING")
        perTurn = []
        for _ in range(1000):
            self.turn(flooder, other)
            before = flooder.answered(TEXT)
            flooder.readAll()
            other.readAll()
            perTurn.append(flooder.answered(TEXT) - before)
            if flooder.answered(TEXT) == 1000:
                break
        self.assertLessEqual(max(perTurn), RelayFactory.framesPerTurn)
        self.assertEqual(flooder.answered(TEXT, b"PONG"), 1000)
        # The other client was answered on the first turn, not after the flood.
        self.assertEqual(other.frames, [(TEXT, b"PONG")])
        self.assertEqual(perTurn[0], RelayFactory.framesPerTurn)

    def assertClosedForFlood(self, client: Client, answered: int, opcode: int) -> None:
        self.assertEqual(client.answered(opcode), answered)
        self.assertEqual(client.closeCode(), 1008)
        # Nothing more of the flood is read; the close handshake times out.
        self.assertFalse(client.wire.reading)
        self.reactor.advance(self.factory.closeHandshakeTimeout)
        self.flush(client)
        self.assertTrue(client.wire.aborted)
        self.assertEqual(client.server.state, RelayProtocol.STATE_CLOSED)
        self.assertIsNone(self.registry.connection(APP, client.server.connectionId))

    def flush(self, client: Client) -> None:
        for _ in range(100):
            self.turn(client)
            client.readAll()

    def test_textPingFloodIsClosedWith1008(self) -> None:
        """A client sending PING as fast as it can is answered for ever."""
        client = self.connect()
        client.sendText(b"PING", 41)
        self.flush(client)
        self.assertClosedForFlood(client, 40, TEXT)

    def test_websocketPingFloodIsClosedWith1008(self) -> None:
        """A client flooding WebSocket pings is answered for ever."""
        client = self.connect()
        client.push(clientFrame(PING, b"hi") * 41)
        self.flush(client)
        self.assertClosedForFlood(client, 40, PONG)

    def test_pongFloodIsClosedWith1008(self) -> None:
        """A client flooding unsolicited pongs takes the daemon's time for ever."""
        client = self.connect()
        client.push(clientFrame(PONG, b"hi") * 41)
        self.flush(client)
        self.assertClosedForFlood(client, 0, PONG)

    def test_steadyClientAtTheRateIsNeverClosed(self) -> None:
        """A client sending PING at the allowed rate is closed as a flood."""
        client = self.connect()
        for _ in range(20 * 60):
            client.sendText(b"PING")
            self.turn(client)
            client.readAll()
            self.reactor.advance(1 / 20)
        self.assertEqual(client.answered(TEXT, b"PONG"), 20 * 60)
        self.assertIsNone(client.closeCode())
        self.assertEqual(client.server.state, RelayProtocol.STATE_OPEN)

    def test_burstsRefill(self) -> None:
        """A client that sent a burst once is closed for the next burst a minute later."""
        client = self.connect()
        for _ in range(3):
            client.sendText(b"PING", 40)
            self.flush(client)
            self.reactor.advance(2)
        self.assertEqual(client.answered(TEXT, b"PONG"), 120)
        self.assertEqual(client.server.state, RelayProtocol.STATE_OPEN)

    def test_fasterThanTheRateIsClosed(self) -> None:
        """A client sending 25 PINGs a second, for ever, is never stopped."""
        client = self.connect()
        sent = 0
        while client.closeCode() is None and sent < 25 * 60:
            client.sendText(b"PING")
            sent += 1
            self.turn(client)
            client.readAll()
            self.reactor.advance(1 / 25)
        self.assertEqual(client.closeCode(), 1008)
        # The burst of 40 lasts 40 / (25 - 20) = 8 seconds.
        self.assertApproximates(sent, 8 * 25, 5)

    def test_defaultRate(self) -> None:
        """A daemon started without --client-message-rate lets clients flood it."""
        factory = RelayFactory(self.registry)
        self.assertEqual((factory.clientMessageRate, factory.clientMessageBurst), (20, 40))
        self.assertIs(factory.clock, self.reactor)


class TinyMessageTests(HostileClientTestCase):
    """
    Item 4: the cap counts the memory the queue takes, not payload bytes.
    """

    def test_tinyMessagesCountWhatTheyCost(self) -> None:
        """With 1-byte messages the 8 MiB cap costs ~83 MB for one slow client."""
        client = self.connect()
        delivered = 0
        while client.server.deliver(b"DATA:x"):
            delivered += 1
        self.assertTrue(client.wire.aborted)
        self.assertLessEqual(client.wire.memory(), self.maxClientBuffer)
        # Not cut off early either: the estimate is within a factor of the cost.
        self.assertGreater(client.wire.memory(), self.maxClientBuffer / 2)
        self.assertGreater(
            delivered, self.maxClientBuffer / (len(b"DATA:x") + 2 + WRITE_OVERHEAD) / 2
        )


class SlowReaderTests(HostileClientTestCase):
    """
    Item 5: a client that reads is never cut off while its backlog stays under the cap.
    """

    maxClientBuffer = 256 * KiB

    def test_readingClientIsNeverCutOff(self) -> None:
        """A client reading 103 KB/s, sent 101 KB/s after a burst, is cut off for not reading."""
        client = self.connect()
        message = b"DATA:" + b"x" * 1000
        frameLength = len(message) + 4
        for _ in range(200):  # a 200 KB burst
            self.assertTrue(client.server.deliver(message))
        sent = 200
        backlogs = []
        # A minute at 10 messages each 0.1 s, read at 200 bytes more than that.
        for step in range(600):
            for _ in range(10):
                self.assertTrue(client.server.deliver(message), f"cut off after {sent}")
                sent += 1
            for opcode, payload in client.read(10 * frameLength + 200):
                if opcode == PING:  # as browsers do
                    client.push(clientFrame(PONG, payload))
            self.turn(client)
            backlogs.append(client.wire.pending())
            self.reactor.advance(0.1)
            if step % 10 == 0:
                self.registry.sweep()
        self.assertFalse(client.wire.aborted)
        self.assertEqual(client.server.state, RelayProtocol.STATE_OPEN)
        self.assertIs(self.registry.connection(APP, "c1"), client.server)
        # Its backlog shrank, but its buffer never emptied (so Twisted never
        # resumed the protocol), and it was sent 30 times the cap.
        self.assertGreater(min(backlogs), 64 * KiB)
        self.assertLess(backlogs[-1], backlogs[0])
        self.assertGreater(sent * len(message), 20 * self.maxClientBuffer)
        client.readAll()
        self.assertEqual(client.answered(TEXT), sent)

    def test_deadPeerWithFullBufferIsClosedAsIdle(self) -> None:
        """A client that vanished with a full buffer stays registered for ever."""
        client = self.connect()
        for _ in range(100):
            client.server.deliver(b"DATA:" + b"x" * 1000)
        self.assertFalse(client.wire.reading)
        for _ in range(40):
            self.reactor.advance(1)
            self.registry.sweep()
            self.turn(client)
        self.assertIsNone(self.registry.connection(APP, "c1"))


class FallbackTests(SynchronousTestCase):
    """
    A transport whose buffer cannot be measured (no Twisted file
    descriptor): what is queued while it is paused is counted instead.
    """

    def setUp(self) -> None:
        self.clock = MemoryReactorClock()
        self.patch(txaio.config, "loop", self.clock)
        self.registry = LocalRegistry(self.clock)
        self.factory = RelayFactory(self.registry, maxClientBuffer=100)
        self.server = self.factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
        self.server.app, self.server.connectionId = APP, "c1"
        self.transport = StringTransport()
        self.server.makeConnection(self.transport)
        self.server.dataReceived(HANDSHAKE)
        self.assertEqual(self.server.state, RelayProtocol.STATE_OPEN)

    def test_pauseStopsReading(self) -> None:
        """The protocol's pauseProducing only sets a flag and never stops reading."""
        self.server.pauseProducing()
        self.assertEqual(self.transport.producerState, "paused")
        self.server.resumeProducing()
        self.clock.advance(0)
        self.assertEqual(self.transport.producerState, "producing")

    def test_framesWaitWhilePaused(self) -> None:
        """A paused connection still answers every ping it was sent."""
        self.server.pauseProducing()
        self.transport.clear()
        self.server.dataReceived(clientFrame(TEXT, b"PING") * 3)
        self.assertEqual(self.transport.value(), b"")
        self.server.resumeProducing()
        self.clock.advance(0)
        self.assertEqual(takeFrames(bytearray(self.transport.value())), [(TEXT, b"PONG")] * 3)

    def test_serverPingsCount(self) -> None:
        """Control frames to a paused client bypass the cap."""
        self.server.pauseProducing()
        self.assertTrue(self.server.deliver(b"x" * 90))
        for _ in range(10):
            self.server.keepalive()
        self.assertEqual(self.server.state, RelayProtocol.STATE_CLOSED)
        self.assertFalse(self.server.deliver(b"x"))


# -- the fuzz: whatever frames a client sends (issue 11, item 11) ---------------

CONTINUATION, BINARY = 0x0, 0x2
ZERO_KEY = b"\0\0\0\0"

#: The registered close codes a client may send (RFC 6455 §7.4.1, and
#: Autobahn's list); 3000-4999 are allowed too. 1014 is registered at IANA
#: ("bad gateway") but Autobahn refuses it, so the daemon does too.
REGISTERED_CODES = [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013]
REFUSED_CODES = [0, 999, 1004, 1005, 1006, 1014, 1015, 1016, 2999, 5000, 65535]

#: Text that is not UTF-8: a bad byte, an overlong form, a surrogate, past
#: U+10FFFF, a code point cut short, and a good command spoilt.
BAD_UTF8 = [b"\xff", b"\xc0\xaf", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xe2\x82", b"PING\x80"]

#: The bytes that complete a valid UTF-8 prefix of any kind (see isUtf8Prefix).
_UTF8_TAILS = (b"", b"\x80", b"\x80\x80", b"\x80\x80\x80", b"\xbf", b"\xbf\x80", b"\xbf\x80\x80")


class Frame(NamedTuple):
    """
    One frame a client sends, as a hypothesis example shows it; the header
    says what the fields say even where that is wrong.

    @ivar key: the mask key; C{None} for an unmasked frame.
    @ivar form: the length's encoding: 7, 16 or 64 bits; C{None} for the
        shortest one.
    @ivar declared: the length the header gives, if not the payload's.
    """

    opcode: int
    payload: bytes = b""
    fin: bool = True
    rsv: int = 0
    key: bytes | None = ZERO_KEY
    form: int | None = None
    declared: int | None = None

    def encode(self) -> bytes:
        length = len(self.payload) if self.declared is None else self.declared
        form = self.form or (7 if length < 126 else 16 if length < 65536 else 64)
        head = bytes(((0x80 if self.fin else 0) | self.rsv << 4 | self.opcode,))
        maskBit = 0x80 if self.key is not None else 0
        if form == 7:
            head += bytes((maskBit | length & 0x7F,))
        elif form == 16:
            head += bytes((maskBit | 126,)) + (length & 0xFFFF).to_bytes(2, "big")
        else:
            head += bytes((maskBit | 127,)) + (length & (2**64 - 1)).to_bytes(8, "big")
        if self.key is None:
            return head + self.payload
        return head + self.key + unmask(self.payload, self.key)


def closeCodeAllowed(code: int) -> bool:
    """
    Whether a client may close with C{code}: a registered one, or one of
    the ranges for libraries and applications.
    """
    return code in REGISTERED_CODES or 3000 <= code <= 4999


def unmask(data: bytes, key: bytes) -> bytes:
    """
    C{data} XORed with a mask C{key} (RFC 6455 §5.3): masks and unmasks.
    """
    return bytes(byte ^ key[i % 4] for i, byte in enumerate(data))


def isUtf8Prefix(data: bytes) -> bool:
    """
    Whether C{data} begins some valid UTF-8 text: what a validator that
    reads fragment by fragment can tell before the message ends. (Python's
    incremental decoder is lazier: it holds back a surrogate's first two
    bytes, which Autobahn refuses at once.)
    """
    for tail in _UTF8_TAILS:
        try:
            (data + tail).decode("utf-8")
        except UnicodeDecodeError:
            continue
        return True
    return False


payloads = st.one_of(
    st.sampled_from([b"PING", b"CLOSE", b"PONG", b"ping", b"PING ", b"", b"DATA:x"]),
    st.sampled_from(BAD_UTF8),
    st.text(max_size=8).map(str.encode),
    st.binary(max_size=16),
    # Around the 125 bytes of a control frame, the 1 KiB frame cap and
    # (split into fragments) the message cap of FuzzedClientTests.
    st.sampled_from([125, 126, 1024, 1025, 3100]).map(b"x".__mul__),
)

closePayloads = st.one_of(
    st.just(b""),
    st.binary(min_size=1, max_size=1),
    st.builds(
        lambda code, reason: code.to_bytes(2, "big") + reason,
        st.sampled_from([*REGISTERED_CODES, 3000, 4999, *REFUSED_CODES]),
        st.sampled_from([b"", b"bye", "\u00e9t\u00e9".encode(), b"\xff", b"x" * 123, b"x" * 124]),
    ),
)

#: Mask keys: zero (the payload as it is) or any.
keys = st.just(ZERO_KEY) | st.binary(min_size=4, max_size=4)

#: Frame flaws, none first (what hypothesis shrinks to).
FLAWS = [None, None, None, None, None, "rsv", "unmasked", "fin", "form16", "form64", "lie"]

#: Lengths a lying header gives: off by one, around each encoding's limits,
#: past every cap, past 2**63.
LIES = [0, 1, 125, 126, 1024, 1025, 65535, 65536, 2**31, 2**63 - 1, 2**63, 2**64 - 1]


@st.composite
def frames(draw: st.DrawFn, opcode: int | None = None) -> Frame:
    """
    One frame of any opcode (reserved ones too) with a command, text,
    binary, a size around a cap or a close code in it; half of them with
    one flaw: reserved bits, no mask, no FIN, a longer length encoding
    than needed, or a length that lies.
    """
    if opcode is None:
        opcode = draw(st.sampled_from([TEXT, TEXT, PING, PONG, CLOSE, BINARY, 0, 3, 7, 11, 15]))
    frame = Frame(
        opcode,
        draw(closePayloads if opcode == CLOSE else payloads),
        key=draw(keys),
    )
    flaw = draw(st.sampled_from(FLAWS))
    if flaw == "rsv":
        frame = frame._replace(rsv=draw(st.integers(1, 7)))
    elif flaw == "unmasked":
        frame = frame._replace(key=None)
    elif flaw == "fin":
        frame = frame._replace(fin=False)
    elif flaw in ("form16", "form64"):
        frame = frame._replace(form=int(flaw[4:]))
    elif flaw == "lie":
        declared = draw(st.sampled_from([len(frame.payload) - 1, len(frame.payload) + 1, *LIES]))
        frame = frame._replace(declared=max(declared, 0))
    return frame


@st.composite
def fragmentedMessages(
    draw: st.DrawFn, payload: bytes | None = None, orderly: bool = False
) -> list[Frame]:
    """
    A message in fragments with control frames between them, as the RFC
    allows; unless C{orderly}, maybe out of order, one lost or repeated,
    never finished, or interrupted by a new message, as it does not.
    """
    opcode = TEXT if payload is not None else draw(st.sampled_from([TEXT, BINARY]))
    if payload is None:
        payload = draw(payloads)
    cuts = sorted(draw(st.lists(st.integers(0, len(payload)), max_size=4)))
    pieces = [payload[a:b] for a, b in zip([0, *cuts], [*cuts, len(payload)], strict=True)]
    message = [
        Frame(opcode if i == 0 else CONTINUATION, piece, fin=i == len(pieces) - 1)
        for i, piece in enumerate(pieces)
    ]
    for _ in range(draw(st.integers(0, 2))):
        if orderly:
            control = Frame(draw(st.sampled_from([PING, PONG])), draw(st.binary(max_size=8)))
        else:
            control = draw(frames(draw(st.sampled_from([PING, PONG, CLOSE]))))
        message.insert(draw(st.integers(1, len(message))), control)
    if orderly:
        return message
    disorder = draw(st.sampled_from([None, None, "shuffle", "drop", "repeat", "open", "restart"]))
    if disorder == "shuffle":
        message = draw(st.permutations(message))
    elif disorder == "drop":
        del message[draw(st.integers(0, len(message) - 1))]
    elif disorder == "repeat":
        message.insert(draw(st.integers(0, len(message))), draw(st.sampled_from(message)))
    elif disorder == "open":
        message[-1] = message[-1]._replace(fin=False)
    elif disorder == "restart":
        message.insert(draw(st.integers(1, len(message))), draw(frames(TEXT)))
    return message


#: What a client that behaves sends: text PINGs, in one frame, in fragments
#: with pings between them or many at once; pings; pongs; CLOSE.
commands = st.one_of(
    st.builds(lambda key: [Frame(TEXT, b"PING", key=key)], keys),
    st.builds(lambda key: [Frame(PING, b"", key=key)], keys),
    st.builds(
        lambda payload, key: [Frame(PING, payload, key=key)],
        st.binary(max_size=8) | st.just(b"p" * 125),
        keys,
    ),
    st.builds(lambda payload, key: [Frame(PONG, payload, key=key)], st.binary(max_size=8), keys),
    fragmentedMessages(b"PING", orderly=True),
    st.integers(1, 60).map(lambda count: [Frame(TEXT, b"PING")] * count),
    st.just([Frame(TEXT, b"CLOSE")]),
)


#: What a hostile client sends among them: any frame or fragmented message,
#: and some aimed at each way the daemon must refuse one (which any frame
#: finds too, less often).
attacks = st.one_of(
    frames().map(lambda frame: [frame]),
    fragmentedMessages(),
    frames(CLOSE).map(lambda frame: [frame]),
    st.builds(lambda text, key: [Frame(TEXT, text, key=key)], st.sampled_from(BAD_UTF8), keys),
    # A code point cut across fragments, valid or not.
    st.builds(
        lambda text, cut: [Frame(TEXT, text[:cut], fin=False), Frame(CONTINUATION, text[cut:])],
        st.sampled_from(["\u20ac".encode(), b"\xed\xa0\x80", b"\xf4\x90\x80\x80"]),
        st.integers(1, 2),
    ),
    # Over the frame cap, or the message cap in fragments under it.
    st.builds(
        lambda opcode, size, key: [Frame(opcode, b"x" * size, key=key)],
        st.sampled_from([TEXT, BINARY, PING]),
        st.sampled_from([126, 1025, 4097]),
        keys,
    ),
    st.builds(
        lambda count: [
            Frame(CONTINUATION if i else TEXT, b"x" * 1000, fin=i == count - 1)
            for i in range(count)
        ],
        st.integers(3, 5),
    ),
    # A header that lies, followed by nothing it promised.
    st.builds(
        lambda opcode, declared: [Frame(opcode, b"", declared=declared)],
        st.sampled_from([TEXT, BINARY, CONTINUATION, PING]),
        st.sampled_from(LIES),
    ),
)


@st.composite
def streams(draw: st.DrawFn) -> tuple[list[list[Frame]], int]:
    """
    What a hostile client sends: commands with a few frames or fragmented
    messages of any kind among them, its last few bytes maybe never sent.
    """
    groups = draw(st.lists(commands, max_size=8))
    for _ in range(draw(st.integers(0, 2))):
        groups.insert(draw(st.integers(0, len(groups))), draw(attacks))
    return groups, draw(st.integers(0, 8))


#: What happens meanwhile: the server reads the client (the chunk is the
#: size of that read), a reactor turn, time passes, the client reads what
#: it is sent, it is relayed messages (how many, how big), the registry
#: sweeps.
actions = st.lists(
    st.one_of(
        st.tuples(
            st.just("arrive"),
            st.integers(1, 64) | st.sampled_from([100, 1000, 4095, 4097, READ_SIZE]),
        ),
        st.tuples(st.just("turn"), st.just(0)),
        # (Under the idle timeout: the good client is not to be closed as idle.)
        st.tuples(st.just("advance"), st.sampled_from([0, 0.01, 0.2, 0.5, 1.0, 2.5, 10.0, 15.0])),
        st.tuples(st.just("read"), st.integers(0, 100_000)),
        st.tuples(
            st.just("deliver"),
            st.tuples(st.integers(1, 40), st.sampled_from([0, 1000, 5000]) | st.integers(0, 5000)),
        ),
        st.tuples(st.just("sweep"), st.just(0)),
    ),
    max_size=25,
)


class Expectation(NamedTuple):
    """
    What the daemon must make of a client's bytes, read as RFC 6455 and
    the relay's own rules have it (L{expect}).

    @ivar answers: the PONG texts and pongs it answers, in order, before
        the end.
    @ivar ending: how it ends the connection, if the bytes make it: C{fail}
        (dropped: Autobahn's C{failByDrop}) with the code Autobahn fails it
        with, C{close} with the code of the close frame the relay sends, or
        C{reply} to the client's own close frame.
    @ivar metered: how many frames the rate limit counts up to the end.
    """

    answers: list[tuple[int, bytes]]
    ending: tuple[str, int] | None
    metered: int


def expect(stream: bytes, maxFrame: int, maxMessage: int) -> Expectation:
    """
    Read C{stream} as the daemon must: its frames until the first one that
    ends the connection, if any. The order of the checks follows Autobahn's
    (header, then size, then payload) where it decides which code is sent.
    """
    answers: list[tuple[int, bytes]] = []
    metered, pos = 0, 0
    # The message being received: its opcode, its payload so far, its length.
    message: tuple[int, bytearray, list[int]] | None = None

    def end(kind: str, code: int) -> Expectation:
        return Expectation(answers, (kind, code), metered)

    while len(stream) - pos >= 2:
        first, second = stream[pos], stream[pos + 1]
        fin, rsv, opcode = first & 0x80, first >> 4 & 7, first & 0x0F
        masked, length = second & 0x80, second & 0x7F
        if rsv or not masked:
            return end("fail", 1002)
        if opcode > 7:
            if not fin or length > 125 or opcode not in (CLOSE, PING, PONG):
                return end("fail", 1002)
            if opcode == CLOSE and length == 1:
                return end("fail", 1002)
        elif opcode not in (CONTINUATION, TEXT, BINARY):
            return end("fail", 1002)
        elif (message is None) == (opcode == CONTINUATION):
            return end("fail", 1002)
        extended = {126: 2, 127: 8}.get(length, 0)
        start = pos + 2 + extended + 4
        if len(stream) < start:
            break
        if extended:
            length = int.from_bytes(stream[pos + 2 : pos + 2 + extended], "big")
            if length < (126 if extended == 2 else 65536) or length >= 2**63:
                return end("fail", 1002)  # not the shortest encoding
        payload = unmask(stream[start : start + length], stream[start - 4 : start])
        complete = len(payload) == length
        pos = start + length
        if opcode <= 7:
            if message is None:
                message = (opcode, bytearray(), [0])
            kind, body, total = message
            total[0] += length
            if total[0] > maxMessage or length > maxFrame:
                return end("fail", 1009)
            body += payload
            # Text is checked as it arrives, a frame's part included.
            if kind == TEXT and not isUtf8Prefix(bytes(body)):
                return end("fail", 1007)
            if not complete:
                break
            if not fin:
                continue
            message = None
            if kind == TEXT:
                try:  # valid so far, but it may end inside a code point
                    body.decode("utf-8")
                except UnicodeDecodeError:
                    return end("fail", 1007)
            metered += 1
            if kind == BINARY or body not in (b"PING", b"CLOSE"):
                return end("close", 1003)
            if body == b"CLOSE":
                return end("close", 1000)
            answers.append((TEXT, b"PONG"))
        elif not complete:
            break
        elif opcode == PING:
            metered += 1
            answers.append((PONG, payload))
        elif opcode == PONG:
            metered += 1
        else:
            if len(payload) >= 2 and not closeCodeAllowed(int.from_bytes(payload[:2], "big")):
                return end("fail", 1002)
            try:
                payload[2:].decode("utf-8")
            except UnicodeDecodeError:
                return end("fail", 1007)
            return end("reply", 1000)
    return Expectation(answers, None, metered)


def isAnswer(frame: tuple[int, bytes]) -> bool:
    """
    Whether a server frame answers the client (a pong, a PONG text) rather
    than being relayed to it or sent by the daemon on its own.
    """
    return frame[0] == PONG or frame == (TEXT, b"PONG")


class FuzzedClientTests(HostileClientTestCase):
    """
    Random frames from a hostile client, cut into random reads, between
    turns, time passing, reads of its own and messages relayed to it, next
    to a client that behaves (hypothesis, a bounded number of examples).
    For every example:

      - nothing raises out of the daemon, and no error is logged;
      - the other client is answered and relayed to at every step;
      - what the daemon holds for the hostile one stays under the caps:
        what it queues to send (C{maxClientBuffer}, and one close frame),
        what it has read and not parsed, and the message being received;
      - no turn handles more than C{framesPerTurn} of its frames;
      - it ends either open, answered as L{expect} says, still read and
        relayed to; or closed as L{expect} says (or for a reason the
        daemon logged: its rate, its backlog, its silence), and gone from
        the registry.
    """

    maxClientBuffer = 96 * KiB
    # Small, so that a message in a few 1 KiB fragments can pass it.
    maxMessageSize = 3000

    # (socktopus_tw.settings is the other settings here.)
    @hypothesis.settings(
        max_examples=300,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(streams(), actions, st.sampled_from([20.0, 1e9]))
    def test_fuzzedClient(
        self, stream: tuple[list[list[Frame]], int], steps: list[tuple[str, Any]], rate: float
    ) -> None:
        """
        A hostile client's frames raise out of the daemon, stall another
        client, grow without bound, leave its connection half-parsed or
        registered, or close it without a reason.
        """
        groups, unsent = stream
        data = b"".join(frame.encode() for group in groups for frame in group)
        data = data[: len(data) - unsent]
        self.build()
        self.factory.clientMessageRate = rate
        self.factory.clientMessageBurst = 2 * rate
        events: list[dict[str, Any]] = []
        # Why the hostile connection ends, in order (see recordEndings):
        # the daemon's own reasons are logged.
        endings: list[tuple[str, int | None]] = []

        def observe(event: dict[str, Any]) -> None:
            events.append(event)
            if event.get("connectionId") == "hostile":
                if event.get("log_format", "").startswith("Cutting off"):
                    endings.append(("cut off", None))
                elif event.get("log_format", "").startswith("Closing idle"):
                    endings.append(("idle", None))

        globalLogPublisher.addObserver(observe)
        try:
            self.fuzz(data, steps, events, endings)
        finally:
            globalLogPublisher.removeObserver(observe)

    def fuzz(
        self,
        data: bytes,
        steps: list[tuple[str, Any]],
        events: list[dict[str, Any]],
        endings: list[tuple[str, int | None]],
    ) -> None:
        good, hostile = self.connect("good"), self.connect("hostile")
        self.recordEndings(hostile.server, endings)
        # All of it at once: it waits in the "kernel" until the server reads.
        hostile.push(data)
        for i, (action, argument) in enumerate(steps):
            handled = hostile.handled
            if action == "arrive":
                hostile.arrive(int(argument))
            elif action == "turn":
                self.turn()
            elif action == "advance":
                self.reactor.advance(argument)
            elif action == "read":
                hostile.read(int(argument))
            elif action == "deliver":
                count, size = argument
                for _ in range(count):
                    self.registry.deliver(APP, "hostile", b"DATA:" + b"x" * size)
            else:
                self.registry.sweep()
            if action != "advance":
                # (A Clock's advance runs the turns it jumps over at once.)
                self.assertLessEqual(hostile.handled - handled, RelayFactory.framesPerTurn)
            self.assertNoErrors(events)
            self.assertBounded(hostile)
            self.assertServed(good, i)
        self.settle(hostile, good)
        self.assertNoErrors(events)
        self.assertBounded(hostile)
        self.assertServed(good, len(steps))
        self.assertEnded(hostile, data, endings)

    def recordEndings(self, server: RelayProtocol, endings: list[tuple[str, int | None]]) -> None:
        """
        Record in C{endings} each close frame C{server} sends and each time
        Autobahn fails its connection (C{_fail_connection}, which logs its
        code but sends nothing under C{failByDrop}).
        """
        sendCloseFrame, fail = server.sendCloseFrame, server._fail_connection

        def sendingClose(code=None, reasonUtf8=None, isReply=False):
            if server.state == RelayProtocol.STATE_OPEN:
                endings.append(("reply" if isReply else "close", code))
            return sendCloseFrame(code, reasonUtf8, isReply)

        def failing(code=1001, reason="going away"):
            if server.state != RelayProtocol.STATE_CLOSED:
                endings.append(("fail", code))
            return fail(code, reason)

        server.sendCloseFrame, server._fail_connection = sendingClose, failing

    def assertNoErrors(self, events: list[dict[str, Any]]) -> None:
        # Trial fails the test for a logged error too, but only once every
        # example has run: checked here, hypothesis finds the example.
        errors = [
            formatEvent(event)
            for event in events
            if event.get("log_failure") is not None
            or event.get("log_level") in (LogLevel.error, LogLevel.critical)
        ]
        self.assertEqual(errors, [])

    def assertBounded(self, client: Client) -> None:
        server, wire = client.server, client.wire
        # Everything queued passed the cap but the one close frame.
        self.assertLessEqual(queuedMemory(wire), self.maxClientBuffer + 2 + 125 + WRITE_OVERHEAD)
        self.assertLessEqual(wire.memory(), self.maxClientBuffer + 128 * KiB)
        # One read and a slice of the one before.
        self.assertLessEqual(len(server.data) + len(server._inbox), READ_SIZE + _SLICE)
        # Autobahn's own buffers for the frame and message being received.
        frameData = getattr(server, "frame_data", None) or []
        messageData = getattr(server, "message_data", None) or []
        controlData = getattr(server, "control_frame_data", None) or []
        self.assertLessEqual(sum(map(len, frameData)), self.factory.maxFramePayloadSize)
        self.assertLessEqual(sum(map(len, messageData)), self.factory.maxMessagePayloadSize)
        self.assertLessEqual(sum(map(len, controlData)), 125)

    def assertServed(self, good: Client, step: int) -> None:
        """
        The good client is relayed a message and answered its PING on this
        turn, whatever the other one did.
        """
        message = b"DATA:%d" % step
        self.assertTrue(self.registry.deliver(APP, "good", message))
        good.sendText(b"PING")
        self.turn(good)
        for opcode, payload in good.readAll():
            if opcode == PING:  # the registry's keepalive, as browsers answer it
                good.push(clientFrame(PONG, payload))
        self.assertEqual(good.frames[-2:], [(TEXT, message), (TEXT, b"PONG")])
        self.assertEqual(good.server.state, RelayProtocol.STATE_OPEN)
        self.assertIs(self.registry.connection(APP, "good"), good.server)

    def settle(self, *clients: Client) -> None:
        """
        Let everything finish: the clients read all they are sent, the
        server reads all they send, and the close handshake's timeout
        passes, a few times over.
        """
        for _ in range(3):
            for _ in range(1000):
                for client in clients:
                    client.readAll()
                now = self.reactor.seconds()
                due = [c for c in self.reactor.getDelayedCalls() if c.getTime() <= now]
                self.turn()
                if not any([client.arrive() for client in clients]) and not due:
                    break
            else:
                self.fail("the connections never settle")
            self.reactor.advance(self.factory.closeHandshakeTimeout + 0.5)
        for client in clients:
            client.readAll()

    def assertEnded(
        self, client: Client, sent: bytes, endings: list[tuple[str, int | None]]
    ) -> None:
        """
        C{client}, once settled, is open as L{expect} says it must be, or
        closed for the first reason it gave the daemon (or one of the
        daemon's own), and forgotten.
        """
        server, wire = client.server, client.wire
        factory = self.factory
        expected = expect(sent, factory.maxFramePayloadSize, factory.maxMessagePayloadSize)
        answers = [frame for frame in client.frames if isAnswer(frame)]
        if not endings:
            self.assertEqual(server.state, RelayProtocol.STATE_OPEN)
            self.assertIsNone(expected.ending, "the daemon missed how it should end")
            self.assertEqual(answers, expected.answers)
            self.assertFalse(client.outbound, "not all of it was read")
            self.assertTrue(wire.reading)
            self.assertIs(self.registry.connection(APP, "hostile"), server)
            self.assertTrue(self.registry.deliver(APP, "hostile", b"DATA:still"))
            self.assertEqual(client.readAll(), [(TEXT, b"DATA:still")])
            return
        self.assertEqual(server.state, RelayProtocol.STATE_CLOSED)
        self.assertTrue(wire.lost)
        self.assertIsNone(self.registry.connection(APP, "hostile"))
        # Nor anywhere else in the registry's bookkeeping.
        for table in (self.registry._lastSeen, self.registry._pinged, self.registry._closing):
            self.assertNotIn(server, table)
        self.assertEqual(self.registry.count(APP), 1)
        self.assertEqual(answers, expected.answers[: len(answers)])
        # Its backlog or its silence may end it at any point of its frames;
        # its rate, only past the burst (the bucket starts full).
        allowed = [expected.ending, ("cut off", None), ("idle", None)]
        if expected.metered > factory.clientMessageBurst:
            allowed.append(("close", 1008))
        self.assertIn(endings[0], allowed)
        if endings[0][1] is None:
            return
        code = client.closeCode()
        if endings[0][0] == "fail":
            self.assertIsNone(code)  # failByDrop: dropped, nothing sent
        elif code is not None:
            self.assertEqual(code, endings[0][1])
            if endings[0] == expected.ending:
                # Its close frame went out after every answer.
                self.assertEqual(answers, expected.answers)
        else:
            # Dropped before it read the close frame: by a second failure,
            # or by the close handshake's end (Autobahn aborts then).
            self.assertTrue(wire.aborted)


class MeasuringTests(SynchronousTestCase):
    """
    Which transports' buffers the cap can see.
    """

    def test_tcpConnectionIsMeasured(self) -> None:
        """The cap falls back to counting on the daemon's own TCP connections."""
        here, there = socket.socketpair()
        self.addCleanup(here.close)
        self.addCleanup(there.close)
        connection = tcp.Connection(here, Protocol(), MemoryReactor())
        connection.connected = True  # as tcp.Server sets it
        self.assertIs(sendBufferOf(connection), connection)
        connection.write(b"x" * 10)
        self.assertEqual(queuedMemory(connection), 10 + WRITE_OVERHEAD)

    def test_tlsMeasuresTheConnectionBeneath(self) -> None:
        """Over TLS the cap cannot see what is queued."""
        wire = Wire(RelayProtocol(), MemoryReactorClock())
        tls = TLSMemoryBIOProtocol(None, Protocol())
        tls.transport = wire
        self.assertIs(sendBufferOf(tls), wire)

    def test_otherTransportsAreCounted(self) -> None:
        """A transport without Twisted's buffer breaks the cap."""
        self.assertIsNone(sendBufferOf(StringTransport()))


class RateOptionTests(SynchronousTestCase):
    """
    C{--client-message-rate}, in the settings table.
    """

    def test_setting(self) -> None:
        """The rate limit cannot be configured, or not from the environment."""
        setting = {s.name: s for s in settings.SETTINGS}["client-message-rate"]
        self.assertEqual(setting.variable, "SOCKTOPUS_CLIENT_MESSAGE_RATE")
        self.assertEqual(setting.parse(setting.default), 20.0)

    def test_values(self) -> None:
        """A fractional rate is refused, or a silly one accepted."""
        self.assertEqual(settings.rate("0.5"), 0.5)
        self.assertEqual(settings.rate("100"), 100.0)
        for bad in ["0", "-1", "fast", "", "inf", "nan"]:
            self.assertRaises(ValueError, settings.rate, bad)


MESSAGE = b"DATA:" + b"x" * 1000
FRAME_LENGTH = len(MESSAGE) + 4


class PausedClientTests(HostileClientTestCase):
    """
    A client whose send buffer is full (it is being sent more than it reads
    at once) but which keeps reading, and keeps sending PING: a legitimate
    client on a slow link, or a busy channel.
    """

    def tick(self, client: Client, step: int, ping: bool) -> None:
        """
        0.1 s of a steady stream to C{client}: ten messages sent, a little
        more than that read; a text PING from it each second if C{ping}.
        """
        for _ in range(10):
            self.assertTrue(client.server.deliver(MESSAGE))
        client.read(10 * FRAME_LENGTH + 200)
        if ping and step % 10 == 0:
            client.sendText(b"PING")
        self.turn(client)
        self.reactor.advance(0.1)
        if step % 10 == 0:
            self.registry.sweep()

    def test_readingPingingClientIsNotClosedAsIdle(self) -> None:
        """
        A client that reads its stream all the time and sends PING every
        second is closed as idle 10 s into that: its buffer filled half a
        second before the server's keepalive looked, the one look found
        nothing read yet, its PINGs are not read while its buffer is full,
        and nobody looks again before the idle close.
        """
        client = self.connect()
        for _ in range(9):
            self.reactor.advance(1)
            self.registry.sweep()
        self.reactor.advance(0.5)
        for _ in range(200):  # a 200 KB burst: its buffer is full
            self.assertTrue(client.server.deliver(MESSAGE))
        self.assertFalse(client.wire.reading)
        self.reactor.advance(0.5)
        self.registry.sweep()  # the keepalive at 10 s: nothing read yet
        for step in range(300):  # 30 s of reading, and a PING each second
            self.tick(client, step, ping=True)
            if client.server.state != RelayProtocol.STATE_OPEN:
                break
        self.assertEqual(
            (client.server.state, self.registry.connection(APP, "c1")),
            (RelayProtocol.STATE_OPEN, client.server),
            f"closed after {step / 10:.1f} s of reading; it sent {step // 10 + 1} PINGs",
        )

    def test_pingsHeldWhilePausedAreNotAFlood(self) -> None:
        """
        A client sending one PING a second (a twentieth of the rate) is
        closed with 1008 as a flood when its buffer drains after a minute:
        the server did not read it meanwhile, then read its 60 PINGs at
        once, and the token bucket holds 40.
        """
        client = self.connect()
        for _ in range(200):
            self.assertTrue(client.server.deliver(MESSAGE))
        for step in range(600):  # a minute, reading steadily, PING each second
            self.tick(client, step, ping=True)
        self.assertFalse(client.wire.aborted)
        for _ in range(100):  # the stream stops; it reads the rest
            client.readAll()
            self.turn(client)
            client.readAll()
        self.assertIsNone(client.closeCode())
        self.assertEqual(client.answered(TEXT, b"PONG"), 60)
        self.assertEqual(client.server.state, RelayProtocol.STATE_OPEN)

    def test_closeSentWhileBufferFullIsHonoured(self) -> None:
        """
        A client reading a steady stream sends CLOSE and goes on reading (as
        browsers do until the close frame comes); 30 s later it has still
        not been closed and is still being sent the stream: the server does
        not read it until its buffer is empty, which a steady stream never
        lets happen.
        """
        client = self.connect()
        for _ in range(200):
            self.assertTrue(client.server.deliver(MESSAGE))
        for step in range(10):
            self.tick(client, step, ping=False)
        client.sendText(b"CLOSE")
        for step in range(300):
            if client.server.state != RelayProtocol.STATE_OPEN:
                break
            self.tick(client, step, ping=False)
        self.assertNotEqual(
            client.server.state, RelayProtocol.STATE_OPEN, "still open 30 s after CLOSE"
        )


# -- checked and fine -----------------------------------------------------------
