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
"""

from __future__ import annotations

import random
import socket
import sys

import txaio
from twisted.internet import abstract, error, main, tcp
from twisted.internet.address import IPv4Address
from twisted.internet.protocol import Protocol
from twisted.internet.testing import MemoryReactor, MemoryReactorClock, StringTransport
from twisted.protocols.tls import TLSMemoryBIOProtocol
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from socktopus_tw import settings
from socktopus_tw.relay.registry import LocalRegistry
from socktopus_tw.relay.websocket import (
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

    def arrive(self) -> bool:
        """
        One read by the server, if it is reading: whether it read anything.
        """
        if not (self.wire.reading and self.outbound):
            return False
        chunk = bytes(self.outbound[:READ_SIZE])
        del self.outbound[:READ_SIZE]
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

    def setUp(self) -> None:
        self.reactor = MemoryReactorClock()
        self.reactor.advance(NOW)
        self.patch(txaio.config, "loop", self.reactor)
        self.registry = LocalRegistry(self.reactor, idleTimeout=20.0, tokenLifespan=5.0)
        self.factory = RelayFactory(
            self.registry,
            maxClientBuffer=self.maxClientBuffer,
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


class RandomClientTests(HostileClientTestCase):
    """
    Bounded random abuse: whatever a client sends, reads and is sent, the
    daemon's queue for it stays under the cap (plus Twisted's own buffer)
    and no turn handles more than two reads' worth (C{framesPerTurn} each)
    of its frames.
    """

    maxClientBuffer = 256 * KiB

    def test_randomAbuse(self) -> None:
        """A client mixing floods, stalls and reads grows the daemon or stalls the others."""
        frames = [
            clientFrame(TEXT, b"PING"),
            clientFrame(PING, b"p" * 125),
            clientFrame(PONG, b""),
            clientFrame(PING, b""),
        ]
        for seed in range(10):
            rng = random.Random(seed)
            self.factory.clientMessageRate = rng.choice([20, 1e9])
            self.factory.clientMessageBurst = 2 * self.factory.clientMessageRate
            client = self.connect(f"c{seed}")
            for _ in range(200):
                action = rng.random()
                if action < 0.3:
                    client.push(b"".join(rng.choices(frames, k=rng.randrange(1, 600))))
                elif action < 0.6:
                    client.server.deliver(b"DATA:" + b"x" * rng.randrange(0, 5000))
                elif action < 0.8:
                    client.read(rng.randrange(0, 100_000))
                else:
                    self.reactor.advance(rng.random())
                handled = client.handled
                self.turn(client)
                # A turn may run the rest of the last read, then a new read.
                self.assertLessEqual(client.handled - handled, 2 * RelayFactory.framesPerTurn, seed)
                self.assertLessEqual(client.wire.memory(), self.maxClientBuffer + 128 * KiB, seed)
                if client.wire.lost or client.server.state != RelayProtocol.STATE_OPEN:
                    break


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
