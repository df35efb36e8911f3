"""
Tests for L{socktopus_tw.http.proxy}: the client's address, behind nginx on
the same machine or not, with L{DummyRequest}.
"""

from __future__ import annotations

from twisted.internet.address import IPv4Address, UNIXAddress
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.test.requesthelper import DummyRequest

from socktopus_tw.http.proxy import clientAddress


def request(peer, realIp: bytes | None = None) -> DummyRequest:
    r = DummyRequest([b""])
    r.client = peer
    if realIp is not None:
        r.requestHeaders.setRawHeaders(b"x-real-ip", [realIp])
    return r


class ClientAddressTests(SynchronousTestCase):
    def test_directClient(self):
        """
        Without a proxy the peer's own address is the client's.
        """
        self.assertEqual(
            clientAddress(request(IPv4Address("TCP", "203.0.113.9", 5000))), "203.0.113.9"
        )

    def test_localProxyIsBelieved(self):
        """
        Behind nginx on the same machine, reCAPTCHA gets the user's address, not 127.0.0.1.
        """
        self.assertEqual(
            clientAddress(request(IPv4Address("TCP", "127.0.0.1", 5000), b"198.51.100.7")),
            "198.51.100.7",
        )
        self.assertEqual(
            clientAddress(request(UNIXAddress(b"/run/s.sock"), b"198.51.100.7")), "198.51.100.7"
        )

    def test_remoteClientCannotForgeIt(self):
        """
        A client on the internet cannot pretend to be someone else with a header.
        """
        self.assertEqual(
            clientAddress(request(IPv4Address("TCP", "203.0.113.9", 5000), b"10.0.0.1")),
            "203.0.113.9",
        )
