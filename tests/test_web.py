"""
Pieces of the HTTP edge that are pure enough for DummyRequest.
"""

from __future__ import annotations

import json

from twisted.internet.address import IPv4Address, UNIXAddress
from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.test.requesthelper import DummyRequest

from socktopus_tw.http.proxy import clientAddress
from socktopus_tw.http.respond import encodeJson
from tests.support import Daemon


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
        self.assertEqual(clientAddress(request(IPv4Address("TCP", "203.0.113.9", 5000))),
                         "203.0.113.9")

    def test_localProxyIsBelieved(self):
        """
        Behind nginx on the same machine, reCAPTCHA gets the user's address, not 127.0.0.1.
        """
        self.assertEqual(
            clientAddress(request(IPv4Address("TCP", "127.0.0.1", 5000), b"198.51.100.7")),
            "198.51.100.7")
        self.assertEqual(clientAddress(request(UNIXAddress(b"/run/s.sock"), b"198.51.100.7")),
                         "198.51.100.7")

    def test_remoteClientCannotForgeIt(self):
        """
        A client on the internet cannot pretend to be someone else with a header.
        """
        self.assertEqual(
            clientAddress(request(IPv4Address("TCP", "203.0.113.9", 5000), b"10.0.0.1")),
            "203.0.113.9")


class HeadTests(TestCase):
    @inlineCallbacks
    def test_headAnswersLikeGetWithoutBody(self):
        """
        A monitor that checks with HEAD gets the status and headers, and no body.
        """
        daemon = Daemon(self)
        status, body, response = yield daemon.request("HEAD", "/health")
        self.assertEqual((status, body), (200, b""))
        self.assertEqual(response.headers.getRawHeaders(b"content-length"), [b"15"])
        # The connection is still usable afterwards: the head was not left pending.
        self.assertEqual((yield daemon.request("GET", "/health"))[:2], (200, {"status": "ok"}))


class EncodeJsonTests(SynchronousTestCase):
    def test_sameBytesAsTheStandardLibrary(self):
        """
        Answers are the bytes json.dumps(separators=(",", ":"),
        ensure_ascii=False) would write for everything the endpoints answer
        with: control characters, quotes, backslashes, U+2028, astral
        characters, nested lists and objects in their order, booleans,
        null and integers.
        """
        strings = ["", "plain", 'quote " and \\ backslash', "\x00\x01\x1f\x7f\x80\x9f",
                   "\b\f\n\r\t", "/slash </script>", "\u2028\u2029", "é ü 日本",
                   "\U0001f600", "\ufeff", "".join(map(chr, range(0x20)))]
        values = [
            {"succeeded": [{"recipient": s, "content": s} for s in strings], "failed": []},
            {"content": "x", "recipient": "y"},
            {"Secret": "abc", "UserID": 2**53, "Registered": True, "Other": False,
             "Nothing": None, "Negative": -1},
            {"UserIDs": {"alice": 1}, "Errors": {}},
            [],
            {},
        ]
        for value in values:
            self.assertEqual(
                encodeJson(value),
                json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8"))
