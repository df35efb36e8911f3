"""
The relay's direct write path, on real TCP connections.
"""

from __future__ import annotations

import hashlib

from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import StringTransport
from twisted.protocols.tls import TLSMemoryBIOProtocol
from twisted.trial.unittest import SynchronousTestCase, TestCase

from socktopus_tw.http.writing import canWriteNow, writeNow
from socktopus_tw.relay.websocket import textFrame


class Collector(Protocol):
    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.data = bytearray()
        self.complete: Deferred[bytes] = Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.data += data
        if len(self.data) >= self.expected and not self.complete.called:
            self.complete.callback(bytes(self.data))


class Holder(Protocol):
    def connectionMade(self) -> None:
        self.factory.connected.callback(self)


class WriteNowTests(TestCase):
    @inlineCallbacks
    def connectedPair(self, expected: int):
        """
        A server-side Twisted TCP transport and the collector reading it.
        """
        serverFactory = Factory.forProtocol(Holder)
        serverFactory.connected = Deferred()
        port = yield TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(serverFactory)
        self.addCleanup(port.stopListening)
        collector = Collector(expected)
        client = yield TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port).connect(
            Factory.forProtocol(lambda: collector)
        )
        server = yield serverFactory.connected

        def close():
            server.transport.abortConnection()
            client.transport.abortConnection()

        self.addCleanup(close)
        return server.transport, collector

    @inlineCallbacks
    def test_idleConnectionIsWrittenAtOnce(self):
        """
        A frame to an idle client leaves without waiting for a reactor pass.
        """
        transport, collector = yield self.connectedPair(5)
        self.assertTrue(canWriteNow(transport))
        writeNow(transport, b"hello")
        self.assertEqual((transport.dataBuffer, transport._tempDataLen), (b"", 0))
        self.assertEqual((yield collector.complete), b"hello")

    @inlineCallbacks
    def test_queuedDataKeepsItsPlace(self):
        """
        Messages never overtake what is already queued for a client.
        """
        transport, collector = yield self.connectedPair(10)
        transport.write(b"first")
        writeNow(transport, b"after")
        self.assertEqual((yield collector.complete), b"firstafter")

    @inlineCallbacks
    def test_whatTheKernelDoesNotTakeIsQueuedInOrder(self):
        """
        A burst larger than the socket buffers arrives whole and in order.
        """
        chunks = [bytes([n]) * 1_000_000 for n in range(16)]
        transport, collector = yield self.connectedPair(16_000_000)
        for chunk in chunks:
            writeNow(transport, chunk)
        self.assertTrue(transport.dataBuffer or transport._tempDataLen)
        received = yield collector.complete
        self.assertEqual(
            hashlib.sha256(received).digest(), hashlib.sha256(b"".join(chunks)).digest()
        )


class CanWriteNowTests(SynchronousTestCase):
    def test_otherTransportsUseTheNormalPath(self):
        """
        Test transports and TLS never take the direct path (TLS must encrypt).
        """
        self.assertFalse(canWriteNow(StringTransport()))
        tls = TLSMemoryBIOProtocol(None, Protocol(), _connectWrapped=False)
        self.assertFalse(canWriteNow(tls))


class TextFrameTests(SynchronousTestCase):
    def test_lengthEncodings(self):
        """
        Each of the three RFC 6455 length forms, as clients decode them.
        """
        self.assertEqual(textFrame(b"PONG"), b"\x81\x04PONG")
        self.assertEqual(textFrame(b"x" * 125)[:2], b"\x81\x7d")
        self.assertEqual(textFrame(b"x" * 126)[:4], b"\x81\x7e\x00\x7e")
        self.assertEqual(textFrame(b"x" * 65535)[:4], b"\x81\x7e\xff\xff")
        self.assertEqual(textFrame(b"x" * 65536)[:10], b"\x81\x7f" + (65536).to_bytes(8, "big"))
        self.assertEqual(len(textFrame(b"x" * 65536)), 65536 + 10)
