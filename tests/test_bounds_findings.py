"""
Findings of a review of the bounds commit (hostile clients, frozen
databases): each test shows a defect a legitimate client or operator hits.

The WebSocket tests drive the real L{RelayProtocol} over Twisted's real send
buffer on an in-memory socket (the harness of
L{tests.relay.test_hostile_clients}, copied: no test module imports
another), on a L{MemoryReactorClock}; the database tests use real SQLite
and MariaDB databases with the door's deadlines on a L{Clock}.
"""

from __future__ import annotations

import sys

import txaio
from twisted.internet import abstract, error, main, reactor
from twisted.internet.address import IPv4Address
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase

from socktopus_tw.accounts import store
from socktopus_tw.db import (
    Conflict,
    Database,
    migrate,
    openPool,
    parseDatabaseUrl,
    schema,
)
from socktopus_tw.relay.registry import LocalRegistry
from socktopus_tw.relay.websocket import RelayFactory, RelayProtocol
from tests.support.database import (
    HASH,
    SECRET,
    MariaDBDatabase,
    SQLiteDatabase,
)
from tests.support.database import NOW as CREATED_AT

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


# -- the WebSocket layer -------------------------------------------------------

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


class UpgradeFromVersionOneTestsMixin:
    """
    Checked, and fine: a database an older daemon made (schema 001, with
    users and sessions) is upgraded to 002 on start. The shipped suite only
    migrates empty databases.
    """

    async def test_versionOneDatabaseIsUpgradedKeepingItsData(self):
        """
        Starting on a version-1 database loses its users or sessions, fails,
        or leaves the replay guard's table missing.
        """
        config = parseDatabaseUrl(self.databaseUrl())
        shipped = schema.schemaVersions
        self.patch(schema, "schemaVersions", lambda c: shipped(c)[:1])
        self.assertEqual(migrate(config), (0, 1))
        pool = openPool(config, reactor)
        pool.start()
        self.addCleanup(pool.close)
        database = Database(pool, config)
        userId = await database.run(store.addUser, "old", "old@example.com", HASH, None, CREATED_AT)
        await database.run(store.saveSession, userId, SECRET, CREATED_AT + 1800, True)
        self.patch(schema, "schemaVersions", shipped)
        self.assertEqual(migrate(config), (1, 2))
        self.assertEqual(migrate(config), (2, 2))
        self.assertEqual((await database.run(store.userNamed, "OLD")).id, userId)
        self.assertEqual((await database.run(store.sessionOf, userId)).secret, SECRET)
        await database.run(store.acceptHeaders, CREATED_AT, userId, b"\x01" * 32)
        with self.assertRaises(Conflict):
            await database.run(store.acceptHeaders, CREATED_AT, userId, b"\x01" * 32)


class SQLiteUpgradeTests(SQLiteDatabase, UpgradeFromVersionOneTestsMixin, TestCase):
    pass


class MariaDBUpgradeTests(MariaDBDatabase, UpgradeFromVersionOneTestsMixin, TestCase):
    pass
