"""
L{socktopus_tw.http.fastpath}: plain C{POST /send} and C{POST /kick} served
without twisted.web, everything else handed to it.

Most tests build the daemon's site as L{socktopus_tw.tap.makeService} does
(real apps, registry, L{SendResource} and L{KickResource}) on a L{Clock},
and talk to it over in-memory transports (L{tests.support.fastpath}). Each
answer of the fast path is compared, byte for byte, with what a twisted.web
channel of the same site writes for the same bytes: the module promises they
are the same. The last tests run the real daemon on a free port with real
sockets.
"""

from __future__ import annotations

import json
import tracemalloc
from typing import Any

import txaio
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock, deferLater
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.http import HTTPChannel

from socktopus_tw.http.fastpath import MAX_HEAD, FastPathChannel, FastPathSite, parseUpgrade
from socktopus_tw.relay.api import SendResource
from socktopus_tw.relay.tokens import makeToken
from socktopus_tw.relay.websocket import RelayProtocol
from tests.support.daemon import (
    APP,
    OTHER_SECRET,
    SECRET,
    Daemon,
    RawClient,
    upgradeRequest,
)
from tests.support.fastpath import (
    BIG_BATCH,
    NOW,
    PEER,
    Answer,
    Client,
    Relay,
    bigBatch,
    kickBody,
    request,
    say,
    send,
    sendBody,
    settle,
    splitResponses,
)


class FastPathTestCase(SynchronousTestCase):
    """
    A clock at a realistic time, and helpers comparing the fast path with
    twisted.web.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(NOW)

    def answerBoth(self, *chunks: bytes, **relayArgs: Any) -> tuple[Client, Client, Relay, Relay]:
        """
        Send C{chunks} on a new fast-path connection and on a twisted.web
        connection, each to its own relay on the same clock.
        """
        fastRelay, webRelay = Relay(self.clock, **relayArgs), Relay(self.clock, **relayArgs)
        fast, web = fastRelay.connect(), webRelay.connect(web=True)
        fast.feed(*chunks)
        web.feed(*chunks)
        settle(self.clock)
        return fast, web, fastRelay, webRelay

    def assertSameAnswer(
        self, *chunks: bytes, handedOver: bool = False, **relayArgs: Any
    ) -> list[Answer]:
        """
        The fast path answers C{chunks} with the very bytes twisted.web
        writes, closes when it closes and delivers what it delivers; and
        serves them itself or (C{handedOver}) hands them to twisted.web.
        The fast-path connection is left in C{self.client}.
        """
        fast, web, fastRelay, webRelay = self.answerBoth(*chunks, **relayArgs)
        self.client = fast
        self.assertEqual(fast.value(), web.value())
        self.assertEqual(fast.connected, web.connected, "closed by one and not the other")
        self.assertEqual(fastRelay.delivered(), webRelay.delivered())
        self.assertEqual(
            fast.channel.web is not None,
            handedOver,
            "handed to twisted.web" if not handedOver else "served directly",
        )
        return fast.answers()


class SameBytesTests(FastPathTestCase):
    """
    The fast path's answers are twisted.web's, byte for byte.
    """

    def test_delivered(self) -> None:
        """
        A backend sending to a connected client gets the same 200 either way.
        """
        [answer] = self.assertSameAnswer(send("hello"))
        self.assertEqual(
            (answer.status, answer.json()), (200, {"succeeded": [say("hello")], "failed": []})
        )

    def test_recipientNotConnected(self) -> None:
        """
        A message to a client who is not connected fails the same way either way.
        """
        [answer] = self.assertSameAnswer(request(sendBody([say("hi", to="nobody")])))
        self.assertEqual(answer.json(), {"succeeded": [], "failed": [say("hi", to="nobody")]})

    def test_malformedJson(self) -> None:
        """
        A typo in the backend's JSON gets the relay's 400, not another error.
        """
        [answer] = self.assertSameAnswer(request(b'{"secretName": "demo",'))
        self.assertEqual(
            (answer.status, answer.json()), (400, {"code": 400, "message": "Malformed request"})
        )

    def test_unknownApp(self) -> None:
        """
        An app the daemon does not serve gets 404 Secret not found.
        """
        [answer] = self.assertSameAnswer(request(sendBody([say("x")], app="nosuch")))
        self.assertEqual(
            (answer.status, answer.json()), (404, {"code": 404, "message": "Secret not found"})
        )

    def test_wrongSecret(self) -> None:
        """
        A wrong secret gets 401 Invalid secret and delivers nothing.
        """
        [answer] = self.assertSameAnswer(request(sendBody([say("x")], secret="wrong")))
        self.assertEqual(
            (answer.status, answer.json()), (401, {"code": 401, "message": "Invalid secret"})
        )

    def test_kick(self) -> None:
        """
        A /kick answers which clients were connected, the same either way.
        """
        [answer] = self.assertSameAnswer(request(kickBody(["c1", "c2"]), path=b"/kick"))
        self.assertEqual(
            (answer.status, answer.json()), (200, {"kicked": ["c1"], "notConnected": ["c2"]})
        )

    def test_kickWithOtherAppsSecret(self) -> None:
        """
        A /kick with another app's secret is refused as twisted.web refuses it.
        """
        body = kickBody(["c1"]).replace(SECRET.encode(), OTHER_SECRET.encode())
        [answer] = self.assertSameAnswer(request(body, path=b"/kick"))
        self.assertEqual(answer.status, 401)

    def test_bigBatch(self) -> None:
        """
        A batch delivered over several reactor turns is answered as twisted.web answers it.
        """
        [answer] = self.assertSameAnswer(bigBatch())
        self.assertEqual(len(answer.json()["succeeded"]), BIG_BATCH)

    def test_connectionClose(self) -> None:
        """
        A backend that asks to close after its request gets twisted.web's exact response.
        """
        [answer] = self.assertSameAnswer(send("bye", headers=[b"Connection: close"]))
        self.assertEqual(answer.header(b"connection"), b"close")


class PiecesTests(FastPathTestCase):
    """
    TCP delivers a request in any pieces; every piece boundary gives the same answers.
    """

    def test_oneByteAtATime(self) -> None:
        """
        A request arriving one byte per read is answered once, exactly as in one read.
        """
        data = send("slow")
        whole = Relay(self.clock).connect()
        whole.feed(data)
        relay = Relay(self.clock)
        client = relay.connect()
        client.feed(*(data[i : i + 1] for i in range(len(data))))
        self.assertEqual(client.value(), whole.value())
        self.assertEqual(relay.delivered(), ["DATA:slow"])
        self.assertIsNone(client.channel.web)

    def test_bodyInManyPieces(self) -> None:
        """
        A head in one read and its body in many is answered once the body is whole.
        """
        data = send("x" * 200)
        head = data.index(b"\r\n\r\n") + 4
        relay = Relay(self.clock)
        client = relay.connect()
        client.feed(data[:head])
        pieces = [data[i : i + 7] for i in range(head, len(data), 7)]
        client.feed(*pieces[:-1])
        self.assertEqual(client.value(), b"")
        client.feed(pieces[-1])
        [answer] = client.answers()
        self.assertEqual(answer.json()["succeeded"], [say("x" * 200)])
        self.assertEqual(relay.delivered(), ["DATA:" + "x" * 200])

    def test_pipelinedInOneRead(self) -> None:
        """
        Several requests sent at once are all answered, in order.
        """
        data = send("a") + request(kickBody(["nobody"]), path=b"/kick") + request(b"{") + send("b")
        answers = self.assertSameAnswer(data)
        self.assertEqual([a.status for a in answers], [200, 200, 400, 200])
        self.assertEqual(answers[1].json(), {"kicked": [], "notConnected": ["nobody"]})
        self.assertEqual(answers[3].json()["succeeded"], [say("b")])

    def test_everySplitOfAPipeline(self) -> None:
        """
        However a pipeline of requests is cut into two reads, the answers are the same.
        """
        data = send("a") + request(kickBody(["nobody"]), path=b"/kick") + send("b")
        whole = Relay(self.clock).connect()
        whole.feed(data)
        expected = whole.value()
        self.assertEqual(len(whole.answers()), 3)
        wrong = []
        for cut in range(1, len(data)):
            relay = Relay(self.clock)
            client = relay.connect()
            client.feed(data[:cut], data[cut:])
            if client.value() != expected or relay.delivered() != ["DATA:a", "DATA:b"]:
                wrong.append(cut)
        self.assertEqual(wrong, [], "cut at these offsets, the answers differ")


class TrickledBodyTests(SynchronousTestCase):
    def test_bodyInTinyReadsCostsAboutItsSize(self) -> None:
        """
        A client sends a 100 kB body two bytes per read (a hostile or very
        slow sender): the connection holds about the body's size in memory
        while it waits for the rest, as twisted.web's channel does.
        """
        clock = Clock()
        clock.advance(NOW)
        held = {}
        for web in (True, False):
            client = Relay(clock).connect(web=web)
            data = send("x" * 100000)
            head = data.index(b"\r\n\r\n") + 4
            body = data[head:-1]
            client.feed(data[:head])
            tracemalloc.start()
            try:
                before = tracemalloc.get_traced_memory()[0]
                for i in range(0, len(body), 2):
                    client.feed(body[i : i + 2])
                held[web] = tracemalloc.get_traced_memory()[0] - before
            finally:
                tracemalloc.stop()
            client.feed(data[-1:])
            self.assertEqual([a.status for a in client.answers()], [200])
        self.assertLess(held[True], 2 * len(body))
        self.assertLess(
            held[False], 2 * len(body), f"{held[False]} bytes held for a {len(body)}-byte body"
        )


class HandOverTests(FastPathTestCase):
    """
    From the first request the fast path does not serve, twisted.web answers,
    exactly as it would without the fast path.
    """

    def test_fastThenWebThenFast(self) -> None:
        """
        A /send, a health check and another /send on one connection are all
        answered, in order, and both messages arrive.
        """
        relay = Relay(self.clock)
        client = relay.connect()
        client.feed(send("one"))
        self.assertIsNone(client.channel.web)
        client.feed(request(path=b"/health", method=b"GET", length=False))
        self.assertIsNotNone(client.channel.web)
        client.feed(send("two"))
        answers = client.answers()
        self.assertEqual([a.status for a in answers], [200, 200, 200])
        self.assertEqual(answers[0].json()["succeeded"], [say("one")])
        self.assertEqual(answers[1].json(), {"status": "ok"})
        self.assertEqual(answers[2].json()["succeeded"], [say("two")])
        self.assertEqual(relay.delivered(), ["DATA:one", "DATA:two"])
        self.assertTrue(client.connected)

    def test_allThreeInOneRead(self) -> None:
        """
        The same three requests sent at once are answered as twisted.web answers them.
        """
        data = send("one") + request(path=b"/health", method=b"GET", length=False) + send("two")
        answers = self.assertSameAnswer(data, handedOver=True)
        self.assertEqual([a.status for a in answers], [200, 200, 200])

    def test_chunkedBody(self) -> None:
        """
        A backend whose HTTP library sends the body chunked still gets its messages delivered.
        """
        body = sendBody([say("chunked")])
        chunked = (
            b"".join(
                b"%x\r\n%s\r\n" % (len(body[i : i + 10]), body[i : i + 10])
                for i in range(0, len(body), 10)
            )
            + b"0\r\n\r\n"
        )
        data = request(chunked, headers=[b"Transfer-Encoding: chunked"], length=False)
        [answer] = self.assertSameAnswer(data, handedOver=True)
        self.assertEqual((answer.status, answer.json()["succeeded"]), (200, [say("chunked")]))

    def test_chunkedWithContentLength(self) -> None:
        """
        A body announced both chunked and with a Content-Length is read as
        twisted.web reads it, never by the length alone.
        """
        body = sendBody([say("both")])
        chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
        data = request(chunked, headers=[b"Transfer-Encoding: chunked"])
        self.assertSameAnswer(data + send("next"), handedOver=True)

    def test_expectContinue(self) -> None:
        """
        A client that waits for 100 Continue before sending its body gets it.
        """
        body = sendBody([say("hi")])
        head = request(body, headers=[b"Expect: 100-continue"])[: -len(body)]
        answers = self.assertSameAnswer(head, body, handedOver=True)
        self.assertEqual([a.status for a in answers], [100, 200])

    def test_http10(self) -> None:
        """
        An HTTP/1.0 client is answered and its connection closed, as HTTP/1.0 wants.
        """
        data = request(sendBody([say("old")]), version=b"HTTP/1.0")
        [answer] = self.assertSameAnswer(data, handedOver=True)
        self.assertEqual(answer.json()["succeeded"], [say("old")])
        self.assertFalse(self.client.connected)

    def test_lowerCaseMethod(self) -> None:
        """
        A lower-case method is answered as twisted.web answers it.
        """
        [answer] = self.assertSameAnswer(
            request(sendBody([say("x")]), method=b"post"), handedOver=True
        )
        self.assertEqual(answer.status, 405)

    def test_queryString(self) -> None:
        """
        /send with a query string still sends.
        """
        [answer] = self.assertSameAnswer(
            request(sendBody([say("q")]), path=b"/send?x=1"), handedOver=True
        )
        self.assertEqual((answer.status, answer.json()["succeeded"]), (200, [say("q")]))

    def test_bodyOverLimit(self) -> None:
        """
        A body over the limit gets the relay's JSON 413, and nothing is delivered.
        """
        body = sendBody([say("x" * 1024)])
        [answer] = self.assertSameAnswer(request(body), handedOver=True, maxBodySize=len(body) - 1)
        self.assertEqual(
            (answer.status, answer.json()),
            (413, {"code": 413, "message": "Request body too large"}),
        )

    def test_bodyAtLimit(self) -> None:
        """
        A body exactly as large as the limit is served directly.
        """
        body = sendBody([say("x" * 1024)])
        [answer] = self.assertSameAnswer(request(body), maxBodySize=len(body))
        self.assertEqual(answer.status, 200)

    def test_noContentLength(self) -> None:
        """
        A POST without Content-Length is answered as twisted.web answers it.
        """
        [answer] = self.assertSameAnswer(request(length=False), handedOver=True)
        self.assertEqual((answer.status, answer.json()["message"]), (400, "Malformed request"))

    def test_nonNumericContentLength(self) -> None:
        """
        A Content-Length that is not a number is a 400 and the connection closes.
        """
        answers = self.assertSameAnswer(
            request(b"{}", headers=[b"Content-Length: two"], length=False), handedOver=True
        )
        self.assertEqual([a.status for a in answers], [400])

    def test_twoContentLengths(self) -> None:
        """
        Two Content-Length headers are refused as twisted.web refuses them.
        """
        body = sendBody([say("x")])
        answers = self.assertSameAnswer(
            request(body, headers=[b"Content-Length: %d" % len(body)]), handedOver=True
        )
        self.assertEqual([a.status for a in answers], [400])

    def test_headerWithoutColon(self) -> None:
        """
        A header line without a colon is a 400.
        """
        answers = self.assertSameAnswer(
            request(sendBody([say("x")]), headers=[b"NoColonHere"]), handedOver=True
        )
        self.assertEqual([a.status for a in answers], [400])

    def test_spaceBeforeColon(self) -> None:
        """
        A header name followed by a space is answered as twisted.web answers it.
        """
        answers = self.assertSameAnswer(
            request(sendBody([say("x")]), headers=[b"X-Thing : 1"]), handedOver=True
        )
        self.assertEqual([a.status for a in answers], [400])

    def test_foldedHeader(self) -> None:
        """
        An obsolete folded header line is answered as twisted.web answers it.
        """
        [answer] = self.assertSameAnswer(
            request(sendBody([say("x")]), headers=[b"X-Folded: a", b" b"]), handedOver=True
        )
        self.assertEqual(answer.status, 200)

    def test_headOver16KiBWithoutItsEnd(self) -> None:
        """
        A head that grows past 16 KiB without ending is refused, and the connection closed.
        """
        line = b"X-Pad: " + b"a" * 100 + b"\r\n"
        head = b"POST /send HTTP/1.1\r\n" + line * (MAX_HEAD // 100 + 10)
        pieces = [head[i : i + 1024] for i in range(0, len(head), 1024)]
        fast, web, _, _ = self.answerBoth(*pieces)
        self.assertEqual(fast.value(), web.value())
        self.assertEqual(fast.connected, web.connected)
        self.assertFalse(fast.connected)
        self.assertIsNotNone(fast.channel.web)

    def test_bareLineFeedInHead(self) -> None:
        """
        A bare LF inside the head is answered as twisted.web answers it.
        """
        for data in [
            send("x").replace(b"Host: relay.example\r\n", b"Host: relay.example\n"),
            send("x", headers=[b"X-A: a\nX-B: b"]),
        ]:
            answers = self.assertSameAnswer(data, handedOver=True)
            self.assertEqual([a.status for a in answers], [400])

    def test_getSend(self) -> None:
        """
        GET /send is a JSON 405 saying POST is allowed.
        """
        [answer] = self.assertSameAnswer(
            request(path=b"/send", method=b"GET", length=False), handedOver=True
        )
        self.assertEqual(
            (answer.status, answer.json()), (405, {"code": 405, "message": "Method not allowed"})
        )
        self.assertEqual(answer.header(b"allow"), b"POST")

    def test_upgradeHeader(self) -> None:
        """
        A /send that asks to upgrade the connection is answered as twisted.web answers it.
        """
        [answer] = self.assertSameAnswer(
            send("x", headers=[b"Upgrade: websocket", b"Connection: Upgrade"]), handedOver=True
        )
        self.assertEqual(answer.status, 200)


def upgrade(token: str, headers: list[bytes] | None = None) -> bytes:
    """
    A browser's WebSocket upgrade request to C{/recieve} with C{token}.
    """
    return request(
        path=b"/recieve?token=" + token.encode(),
        method=b"GET",
        length=False,
        headers=[
            b"Upgrade: websocket",
            b"Connection: Upgrade",
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
            b"Sec-WebSocket-Version: 13",
            *(headers or []),
        ],
    )


#: Headers browsers and libraries add to a handshake (upgrade()'s own aside).
BROWSER_HEADERS = [
    [],
    [b"Origin: http://localhost:3000"],
    [b"Origin: https://app.example.com", b"Sec-WebSocket-Extensions: permessage-deflate"],
    [
        b"Origin: http://127.0.0.1",
        b"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits",
    ],
    [b"ORIGIN: HTTPS://APP.EXAMPLE.COM:65535", b"User-Agent: Mozilla/5.0", b"Pragma: no-cache"],
]


def UNPLAIN_HANDSHAKES(token: str) -> list[bytes]:
    """
    Upgrades to C{/recieve} with C{token} that the fast path leaves to
    Autobahn to parse.
    """
    plain = upgrade(token)
    return [
        upgrade(token, headers=[b"Sec-WebSocket-Protocol: chat"]),
        upgrade(token, headers=[b"Origin: http://a.example:70000"]),
        upgrade(token, headers=[b"Origin: ftp://a.example"]),
        upgrade(token, headers=[b"Origin: null"]),
        upgrade(token, headers=[b"Origin: http://a.example", b"Origin: http://b.example"]),
        upgrade(token, headers=[b"Sec-WebSocket-Extensions: x-webkit-deflate-frame"]),
        upgrade(token, headers=[b"Sec-WebSocket-Extensions: permessage-deflate; nonsense=1"]),
        upgrade(token, headers=[b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ=="]),
        upgrade(token, headers=[b"Host: relay.example"]),
        plain.replace(b"Version: 13", b"Version: 8"),
        plain.replace(b"Version: 13", b"Version: 12"),
        plain.replace(b"dGhlIHNhbXBsZSBub25jZQ==", b"dGhlIHNhbXBsZSBub25jZQ"),
        plain.replace(b"dGhlIHNhbXBsZSBub25jZQ==", b"dGhlIHNhbXBsZSBub25j*Q=="),
        plain.replace(b"Connection: Upgrade", b"Connection: keep-alive"),
        plain.replace(b"Host: relay.example", b"Host: relay.example:http"),
        plain.replace(b"Host: relay.example\r\n", b""),
    ]


#: A masked client text frame "PING" (RFC 6455 §5.3, with a zero mask).
MASKED_PING = b"\x81\x84\x00\x00\x00\x00PING"


class UpgradeTests(FastPathTestCase):
    """
    A plain WebSocket upgrade is admitted on the fast path and its bytes
    handed to the relay's protocol; its refusals are twisted.web's bytes.
    """

    def setUp(self) -> None:
        super().setUp()
        # Autobahn's handshake timers run on the test's clock.
        self.patch(txaio.config, "loop", self.clock)

    def token(
        self, connectionId: str = "w1", secret: str = SECRET, app: str = APP, age: float = 0.0
    ) -> str:
        return makeToken(app, secret, connectionId, (NOW - age) * 1000)

    def test_admittedWithoutTwistedWeb(self) -> None:
        """
        A client's upgrade is answered 101 as through twisted.web, and the
        connection is registered, without twisted.web's parser.
        """
        fast, web, fastRelay, webRelay = self.answerBoth(upgrade(self.token()))
        self.assertEqual(fast.value(), web.value())
        self.assertTrue(fast.value().startswith(b"HTTP/1.1 101 Switching Protocols\r\n"))
        self.assertIsNone(fast.channel.web)
        self.assertIsInstance(fastRelay.registry.connection(APP, "w1"), RelayProtocol)
        self.assertIsInstance(webRelay.registry.connection(APP, "w1"), RelayProtocol)

    def test_framesInTheSameRead(self) -> None:
        """
        A client that sends a PING right behind its upgrade, in one packet,
        is answered PONG.
        """
        fast, web, _, _ = self.answerBoth(upgrade(self.token()) + MASKED_PING)
        self.assertTrue(fast.value().endswith(b"\x81\x04PONG"))
        self.assertEqual(fast.value(), web.value())

    def test_refusals(self) -> None:
        """
        Every refusal of SPEC §3.2 is the same JSON on the fast path.
        """
        cases = [
            ("abch", 400, "Malformed token"),
            (self.token(age=60), 401, "Token expired"),
            (self.token(app="nosuch"), 404, "Secret not found"),
            (self.token(secret="wrong"), 401, "Invalid signature"),
        ]
        for token, status, message in cases:
            fast, web, _, _ = self.answerBoth(upgrade(token))
            self.assertEqual(fast.value(), web.value())
            [answer] = fast.answers()
            self.assertEqual(
                (answer.status, answer.json()), (status, {"code": status, "message": message})
            )
            self.assertIsNone(fast.channel.web, token)
            self.assertTrue(fast.connected)

    def test_refusalThenSend(self) -> None:
        """
        After a refused upgrade the connection serves the next request.
        """
        [refused, sent] = self.assertSameAnswer(upgrade(self.token(secret="wrong")) + send("x"))
        self.assertEqual((refused.status, sent.status), (401, 200))

    def test_kickedTokenRefused(self) -> None:
        """
        A token stamped before a kick of its id does not get back in.
        """
        fast, web, fastRelay, webRelay = self.answerBoth()
        for relay in (fastRelay, webRelay):
            relay.registry.kick(APP, ["w1"])
        token = self.token()
        fastClient, webClient = fastRelay.connect(), webRelay.connect(web=True)
        fastClient.feed(upgrade(token))
        webClient.feed(upgrade(token))
        self.assertEqual(fastClient.value(), webClient.value())
        self.assertEqual(fastClient.answers()[0].status, 401)

    def test_browserHandshakesAnsweredFromTheirKey(self) -> None:
        """
        The handshakes browsers and WebSocket libraries send (an origin, a
        compression offer, header names in any case) are answered from the
        key the fast path read, with the bytes Autobahn answers them with.
        """
        for headers in BROWSER_HEADERS:
            chunk = upgrade(self.token(), headers=headers)
            parsed = parseUpgrade(chunk[: chunk.index(b"\r\n\r\n")], {b"/recieve": object()})
            self.assertEqual(parsed[4], b"dGhlIHNhbXBsZSBub25jZQ==", headers)
            fast, web, fastRelay, _ = self.answerBoth(chunk)
            self.assertEqual(fast.value(), web.value(), headers)
            self.assertIsNotNone(fastRelay.registry.connection(APP, "w1"))

    def test_otherHandshakesLeftToAutobahn(self) -> None:
        """
        A handshake with anything in it the key alone does not answer
        (a subprotocol, another version, an odd origin or extension, a
        malformed or repeated header) is parsed by Autobahn, which answers
        or refuses it as through twisted.web.
        """
        statuses = set()
        for chunk in UNPLAIN_HANDSHAKES(self.token()):
            parsed = parseUpgrade(chunk[: chunk.index(b"\r\n\r\n")], {b"/recieve": object()})
            self.assertIsNotNone(parsed, chunk)
            self.assertIsNone(parsed[4], chunk)
            fast, web, _, _ = self.answerBoth(chunk)
            self.assertEqual(fast.value(), web.value(), chunk)
            statuses.add(fast.value()[:12])
        self.assertEqual(statuses, {b"HTTP/1.1 101", b"HTTP/1.1 400"})

    def test_otherRequestsHandedOver(self) -> None:
        """
        What the fast path does not read itself (an escaped token, a body, a
        request that is not an upgrade) goes to twisted.web, as before.
        """
        token = self.token()
        escaped = upgrade(f"%{ord(token[0]):02x}{token[1:]}")
        for chunk in (
            escaped,
            upgrade(token, headers=[b"Content-Length: 0"]),
            request(path=b"/recieve?token=" + token.encode(), method=b"GET", length=False),
            upgrade(token).replace(b"Upgrade: websocket", b"Upgrade: h2c"),
        ):
            fast, web, _, _ = self.answerBoth(chunk)
            self.assertEqual(fast.value(), web.value())
            self.assertIsNotNone(fast.channel.web, chunk)


class TwistedWebRefusalTests(FastPathTestCase):
    """
    Requests twisted.web refuses are refused by the fast path too: it hands
    them over instead of serving them.
    """

    def test_wholeHeadOver16KiB(self) -> None:
        """
        A /send whose head is over twisted.web's 16 KiB limit is refused even
        when the whole head arrives in one read.
        """
        self.assertSameAnswer(
            send("x", headers=[b"X-Pad: " + b"a" * (MAX_HEAD + 10)]), handedOver=True
        )

    def test_over500Headers(self) -> None:
        """
        A /send with more headers than twisted.web accepts (500) is refused.
        """
        self.assertSameAnswer(send("x", headers=[b"X-A: b"] * 501), handedOver=True)

    def test_nulInHeaderValue(self) -> None:
        """
        A header value with a NUL is a 400, as RFC 9110 requires and twisted.web answers.
        """
        self.assertSameAnswer(send("x", headers=[b"X-A: a\x00b"]), handedOver=True)

    def test_carriageReturnInHeaderValue(self) -> None:
        """
        A header value with a bare CR is a 400, as RFC 9110 requires and twisted.web answers.
        """
        answers = self.assertSameAnswer(send("x", headers=[b"X-A: a\rb"]), handedOver=True)
        self.assertEqual([a.status for a in answers], [400])

    def test_contentLengthWithOtherWhitespace(self) -> None:
        """
        A Content-Length padded with a vertical tab or form feed is a 400, as
        twisted.web answers: only spaces and tabs may surround a value.
        """
        body = sendBody([say("x")])
        for pad in (b"\x0b", b"\x0c"):
            self.assertSameAnswer(
                request(body, headers=[b"Content-Length: %d%s" % (len(body), pad)], length=False),
                handedOver=True,
            )

    def test_connectionHeaderReadAsTwistedWebReadsIt(self) -> None:
        """
        Whether the connection stays open after a /send does not depend on
        which path served it.
        """
        self.assertSameAnswer(send("x", headers=[b"Connection: close,te"]))
        self.assertSameAnswer(
            send("x", headers=[b"Connection: keep-alive", b"Connection: close"]), handedOver=True
        )
        self.assertSameAnswer(send("x", headers=[b"Connection: keep-alive close"]))


class ConnectionCloseTests(FastPathTestCase):
    """
    C{Connection: close} on a request the fast path serves.
    """

    def test_answeredThenClosed(self) -> None:
        """
        A backend asking to close gets its answer, marked Connection: close,
        and then the connection closes; what it sent after is not served.
        """
        relay = Relay(self.clock)
        client = relay.connect()
        client.feed(send("last", headers=[b"Connection: close"]) + send("ignored"))
        [answer] = client.answers()
        self.assertEqual((answer.status, answer.header(b"connection")), (200, b"close"))
        self.assertFalse(client.connected)
        written = client.value()
        # Should a read still arrive, the fast path ignores it too.
        client.channel.dataReceived(send("later"))
        self.assertEqual(client.value(), written)
        self.assertEqual(relay.delivered(), ["DATA:last"])


class AsynchronousTests(FastPathTestCase):
    """
    A request answered later (a big batch, delivered a slice per reactor
    turn) with others behind it.
    """

    def test_pipelinedRequestWaits(self) -> None:
        """
        A request sent behind a big batch is answered after it, in order, and
        its message arrives after the batch's.
        """
        relay = Relay(self.clock)
        client = relay.connect()
        client.feed(bigBatch() + send("after"))
        self.assertEqual(client.value(), b"")
        self.assertEqual(client.producerState, "paused")
        settle(self.clock)
        answers = client.answers()
        self.assertEqual([a.status for a in answers], [200, 200])
        self.assertEqual(len(answers[0].json()["succeeded"]), BIG_BATCH)
        self.assertEqual(answers[1].json()["succeeded"], [say("after")])
        self.assertEqual(client.producerState, "producing")
        self.assertEqual(relay.delivered()[-2:], [f"DATA:m{BIG_BATCH - 1}", "DATA:after"])
        self.assertEqual(len(relay.delivered()), BIG_BATCH + 1)

    def test_requestArrivingWhilePaused(self) -> None:
        """
        A request whose bytes arrive while a big batch is in flight is held
        and answered after it.
        """
        relay = Relay(self.clock)
        client = relay.connect()
        client.feed(bigBatch())
        client.feed(send("one"), request(kickBody(["c9"]), path=b"/kick"))
        self.assertEqual(client.value(), b"")
        settle(self.clock)
        answers = client.answers()
        self.assertEqual([a.status for a in answers], [200, 200, 200])
        self.assertEqual(answers[1].json()["succeeded"], [say("one")])
        self.assertEqual(answers[2].json(), {"kicked": [], "notConnected": ["c9"]})
        self.assertEqual(client.producerState, "producing")

    def test_twoBigBatchesInARow(self) -> None:
        """
        Two big batches pipelined are answered in order, each after its delivery.
        """
        relay = Relay(self.clock)
        client = relay.connect()
        client.feed(bigBatch("a") + bigBatch("b") + send("c"))
        settle(self.clock)
        answers = client.answers()
        self.assertEqual([a.status for a in answers], [200, 200, 200])
        self.assertEqual(answers[0].json()["succeeded"][0], say("a0"))
        self.assertEqual(answers[1].json()["succeeded"][0], say("b0"))
        self.assertEqual(relay.delivered()[BIG_BATCH], "DATA:b0")
        self.assertEqual(relay.delivered()[-1], "DATA:c")

    def test_handOverBehindABigBatch(self) -> None:
        """
        A request for twisted.web behind a big batch is answered after it.
        """
        data = bigBatch() + request(path=b"/health", method=b"GET", length=False) + send("z")
        answers = self.assertSameAnswer(data, handedOver=True)
        self.assertEqual([a.status for a in answers], [200, 200, 200])
        self.assertEqual(answers[1].json(), {"status": "ok"})

    def test_clientGoneWhileInFlight(self) -> None:
        """
        A backend that hangs up while its batch is delivered gets nothing
        written after, nothing is logged as an error, and the request behind
        it is not served.
        """
        relay = Relay(self.clock)
        client = relay.connect()
        client.feed(bigBatch() + send("after"))
        client.hangUp()
        settle(self.clock)
        self.assertEqual(client.value(), b"")
        self.assertNotIn("DATA:after", relay.delivered())
        self.assertEqual(relay.site.working, set())
        self.assertEqual(self.successResultOf(relay.site.whenIdle(10)), None)

    def test_shutdownWaitsForIt(self) -> None:
        """
        A shutdown waits until the batch in flight has been answered.
        """
        relay = Relay(self.clock)
        client = relay.connect()
        client.feed(bigBatch())
        idle = relay.site.whenIdle(10)
        self.assertNoResult(idle)
        answeredWhenIdle = []
        idle.addCallback(lambda _: answeredWhenIdle.append(len(client.answers())))
        settle(self.clock)
        self.assertEqual(answeredWhenIdle, [1])

    def test_unknownAppInBigBatch(self) -> None:
        """
        A big batch for an unknown app is refused at once, like a small one.
        """
        data = request(sendBody([say("x")] * BIG_BATCH, app="nosuch")) + send("y")
        answers = self.assertSameAnswer(data)
        self.assertEqual([a.status for a in answers], [404, 200])


class ShutdownDrainTests(SynchronousTestCase):
    """
    C{SIGTERM}: in-flight requests finish before connections are closed.
    """

    # The trap: were FastPathChannel._resume to call site.forget before
    # serving the held pipelined request, drain() would close the connection
    # under it.

    def test_pipelinedBigBatchIsAnsweredBeforeClose(self) -> None:
        """
        Shutdown starts while a big batch is in flight with another pipelined
        behind it: both are delivered and answered before the connection is
        closed, as twisted.web does for the same bytes.
        """
        clock = Clock()
        clock.advance(NOW)
        outcomes = []
        for web in (False, True):
            relay = Relay(clock)
            client = relay.connect(web=web)
            client.feed(bigBatch("a") + bigBatch("b"))
            drained = Deferred.fromCoroutine(relay.site.drain(10))
            for _ in range(300):
                settle(clock)
                clock.advance(0.05)
            self.assertTrue(drained.called)
            outcomes.append(([a.status for a in client.answers()], len(relay.delivered())))
        fast, web = outcomes
        self.assertEqual(web, ([200, 200], 2 * BIG_BATCH))
        self.assertEqual(fast, web)


class SlicedBodyTests(TestCase):
    """
    Bodies over L{SendResource.inlineLimit} are handled a slice at a time
    over turns of the real reactor; the site's time is still a Clock.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(NOW)

    def relay(self) -> Relay:
        return Relay(self.clock, reactor=reactor)

    @inlineCallbacks
    def test_bigBodyThenPipelinedRequest(self):
        """
        A request sent behind a big body is answered after it, in order.
        """
        relay = self.relay()
        client = relay.connect()
        content = "x" * (SendResource.inlineLimit + 1)
        client.feed(request(sendBody([say(content)])) + send("after"))
        self.assertEqual(client.producerState, "paused")
        answers = yield client.whenAnswered(2)
        self.assertEqual([a.status for a in answers], [200, 200])
        self.assertEqual(answers[0].json()["succeeded"], [say(content)])
        self.assertEqual(answers[1].json()["succeeded"], [say("after")])
        self.assertEqual(relay.delivered(), ["DATA:" + content, "DATA:after"])
        self.assertEqual(client.producerState, "producing")

    @inlineCallbacks
    def test_malformedBigBody(self):
        """
        A big body that is not JSON is a 400 and the next request is served.
        """
        client = self.relay().connect()
        client.feed(request(b"[" * (SendResource.inlineLimit + 1)) + send("after"))
        answers = yield client.whenAnswered(2)
        self.assertEqual([a.status for a in answers], [400, 200])

    @inlineCallbacks
    def test_slowAnswerOutlastsIdleTimeout(self):
        """
        A request that takes longer than the idle timeout to answer is still
        answered, as twisted.web answers it: the timeout is for idle clients.
        """
        content = "x" * (SendResource.inlineLimit + 1)
        data = request(sendBody([say(content)]))
        fastRelay, webRelay = self.relay(), self.relay()
        fast, web = fastRelay.connect(), webRelay.connect(web=True)
        fast.feed(data)
        web.feed(data)
        # The body is being handled over reactor turns, which only come
        # once this test yields to the reactor.
        self.clock.advance(fastRelay.site.timeOut + 1)
        yield fastRelay.site.whenIdle(60)
        yield webRelay.site.whenIdle(60)
        self.assertEqual([a.status for a in web.answers()], [200])
        self.assertTrue(web.connected)
        self.assertEqual([a.status for a in fast.answers()], [200])
        self.assertTrue(fast.connected)


class IdleTimeoutTests(FastPathTestCase):
    """
    The site's idle timeout, on the fast path and after a hand-over.
    """

    def test_silentConnectionIsClosed(self) -> None:
        """
        A connection that sends nothing is closed after the idle timeout, not before.
        """
        relay = Relay(self.clock)
        client = relay.connect()
        self.clock.advance(relay.site.timeOut - 1)
        self.assertTrue(client.connected)
        self.clock.advance(1)
        self.assertFalse(client.connected)
        self.assertEqual(client.value(), b"")

    def test_requestRestartsTheTimer(self) -> None:
        """
        A connection is closed the idle timeout after its last request, not its first.
        """
        relay = Relay(self.clock)
        client = relay.connect()
        self.clock.advance(relay.site.timeOut - 1)
        client.feed(send("keep"))
        self.clock.advance(relay.site.timeOut - 1)
        self.assertTrue(client.connected)
        self.clock.advance(1)
        self.assertFalse(client.connected)

    def test_partialRequestRestartsTheTimer(self) -> None:
        """
        A slow client sending its request in pieces is not cut off while it sends.
        """
        relay = Relay(self.clock)
        client = relay.connect()
        data = send("slowly")
        for i in range(len(data)):
            self.clock.advance(relay.site.timeOut / 2)
            client.feed(data[i : i + 1])
        self.assertTrue(client.connected)
        self.assertEqual([a.status for a in client.answers()], [200])

    def test_onlyTwistedWebTimerAfterHandOver(self) -> None:
        """
        A connection handed to twisted.web has twisted.web's idle timer only,
        and is closed by it.
        """
        relay = Relay(self.clock)
        client = relay.connect()
        client.feed(send("one"))
        self.assertEqual(
            {call.func.__self__ for call in self.clock.getDelayedCalls()}, {client.channel}
        )
        client.feed(request(path=b"/health", method=b"GET", length=False))
        web = client.channel.web
        self.assertIsNotNone(web)
        self.assertEqual([call.func.__self__ for call in self.clock.getDelayedCalls()], [web])
        self.clock.advance(relay.site.timeOut)
        self.assertFalse(client.connected)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_handedOverAtOnce(self) -> None:
        """
        A connection whose first request is for twisted.web keeps no fast-path timer.
        """
        relay = Relay(self.clock)
        client = relay.connect()
        client.feed(request(path=b"/health", method=b"GET", length=False))
        self.assertEqual(
            [call.func.__self__ for call in self.clock.getDelayedCalls()], [client.channel.web]
        )


class IdleTimeoutAbortTests(SynchronousTestCase):
    """
    An idle connection that cannot even be closed (its client reads
    nothing, so its last responses never leave) is aborted.
    """

    # TimeoutMixin's plain loseConnection never drops a client that stopped
    # reading: the close has to become an abort, as HTTPChannel's does.

    def test_stuckIdleConnectionIsAborted(self) -> None:
        clock = Clock()
        clock.advance(NOW)
        relay = Relay(clock)
        aborted = []

        class Stuck(StringTransport):
            """
            A connection whose peer reads nothing: closing waits forever.
            """

            def abortConnection(self) -> None:
                aborted.append(True)
                super().abortConnection()

        for channel in (relay.site.buildWebChannel(PEER), relay.site.buildProtocol(PEER)):
            del aborted[:]
            transport = Stuck(peerAddress=PEER)
            channel.makeConnection(transport)
            channel.dataReceived(send("x"))
            clock.advance(relay.site.timeOut)
            self.assertTrue(transport.disconnecting)
            clock.advance(HTTPChannel.abortTimeout)
            self.assertEqual(aborted, [True], type(channel).__name__)


class HttpClient(Protocol):
    """
    A raw HTTP/1.1 client over a real socket: writes the bytes it is given
    and collects whole responses.
    """

    def __init__(self) -> None:
        self.buffer = b""
        self.answers: list[Answer] = []
        self._waiting: list[tuple[int, Deferred[Answer]]] = []
        self.lost: Deferred[None] = Deferred()

    def dataReceived(self, data: bytes) -> None:
        answers, self.buffer = splitResponses(self.buffer + data)
        self.answers.extend(answers)
        ready = [(n, d) for n, d in self._waiting if len(self.answers) >= n]
        self._waiting = [(n, d) for n, d in self._waiting if len(self.answers) < n]
        for n, d in ready:
            d.callback(self.answers[n - 1])

    def connectionLost(self, reason: Failure) -> None:
        for _, d in self._waiting:
            d.errback(reason)
        self._waiting = []
        self.lost.callback(None)

    def ask(self, data: bytes) -> Deferred[Answer]:
        """
        Send one request; fires with its answer.
        """
        d: Deferred[Answer] = Deferred()
        self._waiting.append((len(self.answers) + 1 + len(self._waiting), d))
        self.transport.write(data)
        return d


class RealSocketTests(TestCase):
    """
    The real daemon on a free port, real sockets, real WebSocket clients.
    """

    timeout = 30

    def setUp(self) -> None:
        self.daemon = Daemon(self)
        listener = next(s for s in self.daemon.service if s.name.startswith("listen"))
        self.site = listener.factory

    @inlineCallbacks
    def openHttp(self):
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", self.daemon.port)
        client = yield endpoint.connect(Factory.forProtocol(HttpClient))

        def close():
            client.transport.loseConnection()
            return client.lost

        self.addCleanup(close)
        return client

    def fastChannels(self) -> list[FastPathChannel]:
        """
        The daemon's connections that served a request on the fast path.
        """
        return [c for c in self.site.channels if isinstance(c, FastPathChannel)]

    @inlineCallbacks
    def test_twoHundredSendsOnOneConnection(self):
        """
        A backend sending 200 requests one after the other on one keep-alive
        connection gets 200 answers, and the client all 200 messages in order.
        """
        self.assertIsInstance(self.site, FastPathSite)
        ws = yield self.daemon.connect("c1")
        http = yield self.openHttp()
        for i in range(200):
            answer = yield http.ask(send(f"m{i}"))
            self.assertEqual(
                (answer.status, answer.json()), (200, {"succeeded": [say(f"m{i}")], "failed": []})
            )
        received = yield ws.waitFor(200)
        self.assertEqual(received, [f"DATA:m{i}" for i in range(200)])
        [channel] = self.fastChannels()
        self.assertIsNone(channel.web)

    @inlineCallbacks
    def test_webSocketClientIsHandedOver(self):
        """
        A WebSocket client connects through the fast path's site, receives
        messages, is answered PONG, and is forgotten when it leaves.
        """
        ws = yield self.daemon.connect("c1")
        http = yield self.openHttp()
        answer = yield http.ask(send("through"))
        self.assertEqual(answer.json()["succeeded"], [say("through")])
        ws.sendText("PING")
        self.assertEqual((yield ws.waitFor(2)), ["DATA:through", "PONG"])
        self.assertEqual(self.daemon.registry.count(), 1)
        ws.sendClose()
        yield ws.closed
        yield self.daemon.registry.whenDrained()
        self.assertEqual(self.daemon.registry.count(), 0)

    @inlineCallbacks
    def test_requestLatencyCountedPerEndpoint(self):
        """
        The request-latency metric counts /send and /kick served by the fast
        path under the same endpoint labels as those twisted.web serves.
        """
        http = yield self.openHttp()
        for i in range(3):
            answer = yield http.ask(send(f"m{i}"))
            self.assertEqual(answer.status, 200)
        answer = yield http.ask(request(kickBody(["c1"]), path=b"/kick"))
        self.assertEqual(answer.status, 200)
        [channel] = self.fastChannels()
        self.assertIsNone(channel.web)
        # Handed over: twisted.web serves this one and the rest.
        answer = yield http.ask(request(sendBody([say("web")]), path=b"/send?via=web"))
        self.assertEqual(answer.status, 200)
        answer = yield http.ask(request(kickBody(["c1"]), path=b"/kick"))
        self.assertEqual(answer.status, 200)
        self.assertIsNotNone(channel.web)
        # From now on twisted.web's channel is the one a shutdown closes.
        self.assertEqual(self.fastChannels(), [])

        registry = self.site.metrics.registry
        counts = {
            sample.labels["endpoint"]: sample.value
            for metric in registry.collect()
            if metric.name == "socktopus_request_seconds"
            for sample in metric.samples
            if sample.name.endswith("_count")
        }
        self.assertEqual(counts, {"SendResource": 4, "KickResource": 2})


class RawSocketTests(TestCase):
    """
    The real daemon on a free port, and clients on raw sockets that do what
    no HTTP library does.
    """

    timeout = 60

    @inlineCallbacks
    def test_webSocketAfterSendOnOneConnectionGetsCloseAtShutdown(self):
        """
        nginx's keepalive upstream can carry a backend's /send and then a
        browser's WebSocket upgrade on one connection. At shutdown that
        WebSocket still receives CLOSE from the registry, even if the
        fast-path channel that served the /send is still around: shutdown
        closes only the HTTP channels, and it is not one any more.
        """
        daemon = Daemon(self)
        site = next(s for s in daemon.service if s.name.startswith("listen")).factory
        client = yield self.connectRaw(daemon)
        body = json.dumps(
            {
                "secretName": APP,
                "secret": SECRET,
                "messages": [{"recipient": "nobody", "content": "x"}],
            }
        ).encode()
        client.transport.write(request(body))
        yield client.waitFor(b'"failed":[{')
        kept = [c for c in site.channels if isinstance(c, FastPathChannel)]
        self.assertEqual(len(kept), 1)  # held here, as anything might hold it
        client.transport.write(upgradeRequest(f"/recieve?token={daemon.token('w1')}"))
        yield client.waitFor(b"HTTP/1.1 101")
        while daemon.registry.count() == 0:
            yield deferLater(reactor, 0, lambda: None)
        yield daemon.service.stopService()
        yield client.lost
        self.assertIn(b"\x81\x05CLOSE", client.received)

    @inlineCallbacks
    def connectRaw(self, daemon: Daemon):
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", daemon.port)
        client = yield endpoint.connect(Factory.forProtocol(RawClient))

        def close():
            if client.transport.connected:
                client.transport.abortConnection()
                return client.lost
            return None

        self.addCleanup(close)
        return client

    @inlineCallbacks
    def test_clientThatDoesNotReadDoesNotGrowTheDaemonsMemory(self):
        """
        A backend (or anyone) pipelines requests and reads none of the
        answers: once its answers back up, the daemon stops reading its
        requests instead of buffering every answer (SPEC 3.5: no client grows
        the daemon's memory without bound). twisted.web's HTTPChannel has the
        same hole for answers written while a request is handled, so this is
        not a regression; but the fast path owns its reads and can pause them.
        """
        daemon = Daemon(self)
        site = next(s for s in daemon.service if s.name.startswith("listen")).factory
        client = yield self.connectRaw(daemon)
        client.transport.pauseProducing()
        # Enough answers to outgrow the kernel's buffers many times over.
        content = "x" * 100000
        one = request(sendBody([say(content, to="nobody")]))
        count = 300
        client.transport.write(one * count)

        def served() -> int:
            for family in text_string_to_metric_families(site.metrics.exposition().decode()):
                for sample in family.samples:
                    if sample.name == "socktopus_messages_failed_total":
                        return int(sample.value)
            return 0

        def serverSide() -> Any:
            local = client.transport.getHost().port
            for channel in list(site.channels):
                transport = channel.transport
                if transport is not None and transport.getPeer().port == local:
                    return transport
            return None

        transport = None
        for _ in range(100000):
            transport = serverSide()
            if served() == count:
                break
            if (
                transport is not None
                and transport not in reactor.getReaders()
                and (transport.dataBuffer or transport._tempDataLen)
            ):
                break  # it stopped reading: the answers wait for the client
            yield deferLater(reactor, 0, lambda: None)
        self.assertIsNotNone(transport)
        held = len(transport.dataBuffer) - transport.offset + transport._tempDataLen
        self.assertLess(held, 1024 * 1024, f"{held} bytes of answers held for one client")
