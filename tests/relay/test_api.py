"""
The relay's backend endpoints (L{socktopus_tw.relay.api}: C{/send} and
C{/kick}) end to end: the real daemon on a free port, real HTTP (treq) and
real WebSocket clients. Every refusal must be the exact JSON body of SPEC
§3, and a refused request must deliver nothing. Also the queue of batches
L{SendResource} delivers in order, driven on a L{Clock} through the site of
L{tests.support.fastpath}.
"""

from __future__ import annotations

from typing import Any

import treq
from twisted.internet.defer import inlineCallbacks, succeed
from twisted.internet.task import Clock, Cooperator
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.iweb import UNKNOWN_LENGTH, IBodyProducer
from zope.interface import implementer

from tests.support.daemon import APP, OTHER_APP, OTHER_SECRET, SECRET, Daemon
from tests.support.fastpath import NOW, Relay, bigBatch, say, send
from tests.support.relay import (
    INVALID_SECRET,
    MALFORMED,
    NOT_FOUND,
    SECRET_NOT_FOUND,
    RelayApiTestCase,
    raw,
)

#: Marks a field to leave out of a request body.
MISSING = object()


def sendBody(**fields: Any) -> dict[str, Any]:
    """
    A good C{/send} body for app demo, with C{fields} replaced (or removed).
    """
    body = {"secretName": APP, "secret": SECRET, "messages": [{"recipient": "c1", "content": "hi"}]}
    body.update(fields)
    return {k: v for k, v in body.items() if v is not MISSING}


def kickBody(**fields: Any) -> dict[str, Any]:
    """
    A good C{/kick} body for app demo, with C{fields} replaced (or removed).
    """
    body = {"secretName": APP, "secret": SECRET, "connections": ["c1"]}
    body.update(fields)
    return {k: v for k, v in body.items() if v is not MISSING}


@implementer(IBodyProducer)
class ChunkedBody:
    """
    A request body of unknown length, so the client sends it chunked and the
    server never sees a Content-Length.
    """

    length = UNKNOWN_LENGTH

    def __init__(self, data: bytes, chunkSize: int = 256) -> None:
        self.data = data
        self.chunkSize = chunkSize

    def startProducing(self, consumer: Any) -> Any:
        for start in range(0, len(self.data), self.chunkSize):
            consumer.write(self.data[start : start + self.chunkSize])
        return succeed(None)

    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass

    def stopProducing(self) -> None:
        pass


class BadBodyTests(RelayApiTestCase):
    """
    Bodies that are not the request the endpoint takes are a 400, exactly.
    """

    def test_sendRejectsBadJson(self):
        """A typo in my backend's JSON gets a JSON 400 Malformed request, not a 500 or a hang."""
        good = raw(sendBody())
        return self.assertMalformed(
            "/send",
            [
                b"",
                b" ",
                b"{",
                b"not json",
                b'{"secretName": "demo",}',
                good[:-1],
                good + b"x",
                good + good,
                b"{'secretName': 'demo'}",
                good.replace(b'"hi"', b"NaN"),
            ],
        )

    def test_kickRejectsBadJson(self):
        """A typo in my backend's /kick JSON gets a clean 400."""
        good = raw(kickBody())
        return self.assertMalformed("/kick", [b"", b"{", b"nope", good[:-1], good + b"]"])

    def test_sendRejectsNonObjects(self):
        """A JSON array, string, number or null posted to /send is a 400, not a request."""
        return self.assertMalformed(
            "/send",
            [
                [],
                [sendBody()],
                "string",
                1,
                1.5,
                None,
                True,
                False,
            ],
        )

    def test_kickRejectsNonObjects(self):
        """A JSON array, string, number or null posted to /kick is a 400, not a request."""
        return self.assertMalformed(
            "/kick",
            [
                [],
                [kickBody()],
                "c1",
                0,
                None,
                True,
            ],
        )

    def test_sendRejectsMissingFields(self):
        """A /send missing a field is a 400, not accepted with a guessed default."""
        return self.assertMalformed(
            "/send",
            [
                sendBody(secretName=MISSING),
                sendBody(secret=MISSING),
                sendBody(messages=MISSING),
                {},
            ],
        )

    def test_kickRejectsMissingFields(self):
        """A /kick missing a field is a 400, not accepted with a guessed default."""
        return self.assertMalformed(
            "/kick",
            [
                kickBody(secretName=MISSING),
                kickBody(secret=MISSING),
                kickBody(connections=MISSING),
                {},
            ],
        )

    @inlineCallbacks
    def test_unknownFieldsAreRejected(self):
        """A misspelt or unknown field is a 400, as in the Go original."""
        yield self.assertMalformed(
            "/send",
            [
                sendBody(extra=1),
                sendBody(message=[]),
                sendBody(Messages=[]),
                sendBody(connections=[]),
                sendBody(secretname=APP),
            ],
        )
        yield self.assertMalformed(
            "/kick",
            [
                kickBody(extra=None),
                kickBody(messages=[]),
                kickBody(Connections=[]),
            ],
        )

    def test_sendRejectsWrongFieldTypes(self):
        """A /send with a value of the wrong type in any field is a 400."""
        return self.assertMalformed(
            "/send",
            [
                sendBody(secretName=1),
                sendBody(secretName=None),
                sendBody(secretName=[APP]),
                sendBody(secretName={"name": APP}),
                sendBody(secretName=True),
                sendBody(secret=123),
                sendBody(secret=None),
                sendBody(secret=[SECRET]),
                sendBody(messages={"recipient": "c1", "content": "hi"}),
                sendBody(messages="hi"),
                sendBody(messages=None),
                sendBody(messages=1),
            ],
        )

    def test_sendRejectsBadMessages(self):
        """One odd message in a batch makes the whole request a 400."""
        good = {"recipient": "c1", "content": "hi"}
        return self.assertMalformed(
            "/send",
            [
                sendBody(messages=["hi"]),
                sendBody(messages=[1]),
                sendBody(messages=[None]),
                sendBody(messages=[["c1", "hi"]]),
                sendBody(messages=[good, "hi"]),
                sendBody(messages=[{"recipient": "c1"}]),
                sendBody(messages=[{"content": "hi"}]),
                sendBody(messages=[{}]),
                sendBody(messages=[{**good, "extra": 1}]),
                sendBody(messages=[{**good, "Recipient": "c1"}]),
                sendBody(messages=[{"recipient": 1, "content": "hi"}]),
                sendBody(messages=[{"recipient": None, "content": "hi"}]),
                sendBody(messages=[{"recipient": ["c1"], "content": "hi"}]),
                sendBody(messages=[{"recipient": {"id": "c1"}, "content": "hi"}]),
                sendBody(messages=[{"recipient": True, "content": "hi"}]),
                sendBody(messages=[{"recipient": "c1", "content": 1}]),
                sendBody(messages=[{"recipient": "c1", "content": None}]),
                sendBody(messages=[{"recipient": "c1", "content": ["hi"]}]),
                sendBody(messages=[{"recipient": "c1", "content": {"a": 1}}]),
                sendBody(messages=[{"recipient": "c1", "content": False}]),
                sendBody(messages=[good, {"recipient": "c1", "content": 2.5}]),
            ],
        )

    def test_kickRejectsWrongFieldTypes(self):
        """A /kick with a value of the wrong type in any field is a 400."""
        return self.assertMalformed(
            "/kick",
            [
                kickBody(secretName=1),
                kickBody(secret=None),
                kickBody(connections="c1"),
                kickBody(connections={"c1": True}),
                kickBody(connections=None),
                kickBody(connections=[1]),
                kickBody(connections=["c1", None]),
                kickBody(connections=[["c1"]]),
                kickBody(connections=[{"id": "c1"}]),
                kickBody(connections=[True]),
            ],
        )

    @inlineCallbacks
    def test_deeplyNestedJsonIsRejected(self):
        """A hostile, deeply nested body is a 400, not a RecursionError."""
        deep = b"[" * 100000
        closed = b"[" * 100000 + b"]" * 100000
        inField = (
            b'{"secretName":"demo","secret":"' + SECRET.encode() + b'","messages":' + closed + b"}"
        )
        yield self.assertMalformed("/send", [deep, closed, b'{"a":' * 50000, inField])
        yield self.assertMalformed("/kick", [deep, closed])

    def test_invalidUtf8IsRejected(self):
        """Bytes that are not UTF-8, anywhere in the body, are a 400."""

        def body(
            secretName: bytes = b"demo",
            recipient: bytes = b"c1",
            content: bytes = b"hi",
            secret: bytes = SECRET.encode(),
        ) -> bytes:
            return (
                b'{"secretName":"'
                + secretName
                + b'","secret":"'
                + secret
                + b'","messages":[{"recipient":"'
                + recipient
                + b'","content":"'
                + content
                + b'"}]}'
            )

        return self.assertMalformed(
            "/send",
            [
                body(content=b"\xff"),
                body(content=b"caf\xe9"),
                body(content=b"\xc0\xaf"),  # overlong "/"
                body(content=b"\xed\xa0\x80"),  # a UTF-8-encoded surrogate
                body(content=b"\xe2\x82"),  # truncated sequence
                body(recipient=b"\xff"),
                body(recipient=b"\xed\xa0\x80"),
                body(secretName=b"dem\xff"),
                body(secret=b"\xff"),
                # UTF-16 is not UTF-8 either, BOM or not.
                raw(sendBody()).decode().encode("utf-16"),
                raw(sendBody()).decode().encode("utf-16-le"),
            ],
        )

    def test_loneSurrogateInContentIsRejected(self):
        """A lone surrogate in content is a 400 and reaches no client."""
        return self.assertMalformed(
            "/send",
            [
                sendBody(messages=[{"recipient": "c1", "content": "\ud800"}]),
                sendBody(messages=[{"recipient": "c1", "content": "ok \udfff ok"}]),
                sendBody(
                    messages=[
                        {"recipient": "c1", "content": "ok"},
                        {"recipient": "c1", "content": "\udbff"},
                    ]
                ),
            ],
        )

    def test_loneSurrogateInRecipientIsRejected(self):
        """A lone surrogate in a recipient is a 400, not a 500."""
        return self.assertMalformed(
            "/send",
            [
                sendBody(messages=[{"recipient": "\ud800", "content": "hi"}]),
            ],
        )

    @inlineCallbacks
    def test_loneSurrogateInSecretIsRejected(self):
        """A lone surrogate in the secret is a 400 on /send and /kick, not a 500."""
        yield self.assertMalformed("/send", [sendBody(secret="\ud800")])
        yield self.assertMalformed("/kick", [kickBody(secret="\ud800")])

    def test_loneSurrogateInKickedIdIsRejected(self):
        """A lone surrogate in a kicked id is a 400 on /kick, not a 500."""
        return self.assertMalformed("/kick", [kickBody(connections=["\ud800"])])

    @inlineCallbacks
    def test_largeMalformedBodiesAreRejected(self):
        """A big malformed request (over 256 KiB, decoded in slices) gets a 400."""
        pad = "x" * (300 * 1024)
        yield self.assertMalformed(
            "/send",
            [
                raw(sendBody(messages=[{"recipient": "c1", "content": pad}, 1])),
                raw(sendBody(messages=[{"recipient": "c1", "content": pad, "x": 1}])),
                raw(sendBody(extra=pad)),
                raw(sendBody(messages=[{"recipient": "c1", "content": pad + "\ud800"}])),
                raw(sendBody())[:-1] + pad.encode(),
                b"[" * (300 * 1024),
            ],
        )
        yield self.assertMalformed(
            "/kick",
            [
                raw(kickBody(connections=[pad, 1])),
                raw(kickBody(extra=pad)),
            ],
        )


class AuthenticationTests(RelayApiTestCase):
    """
    App names and secrets on /send and /kick.
    """

    @inlineCallbacks
    def test_unknownAppIsSecretNotFound(self):
        """A backend with a typo in its app name gets 404 Secret not found."""
        yield self.assertAnswers(
            "/send",
            [
                sendBody(secretName="nosuchapp"),
                sendBody(secretName=""),
                sendBody(secretName="demo "),
                sendBody(secretName="demo' OR '1'='1"),
            ],
            404,
            SECRET_NOT_FOUND,
        )
        yield self.assertAnswers("/kick", [kickBody(secretName="nosuchapp")], 404, SECRET_NOT_FOUND)

    @inlineCallbacks
    def test_wrongSecretIsInvalidSecret(self):
        """A wrong secret, or another app's, gets 401 Invalid secret."""
        yield self.assertAnswers(
            "/send",
            [
                sendBody(secret="wrong"),
                sendBody(secret=""),
                sendBody(secret=SECRET + " "),
                sendBody(secret=SECRET[:-1]),
                sendBody(secret=OTHER_SECRET),
                sendBody(secret=SECRET.upper()),
                sendBody(secret="' OR '1'='1"),
            ],
            401,
            INVALID_SECRET,
        )
        yield self.assertAnswers(
            "/kick",
            [
                kickBody(secret="wrong"),
                kickBody(secretName=OTHER_APP, secret=SECRET),
            ],
            401,
            INVALID_SECRET,
        )

    @inlineCallbacks
    def test_appNameIsCaseInsensitive(self):
        """A backend that writes its app name in capitals reaches its clients."""
        client = yield self.daemon.connect("c1")
        status, answer, _ = yield self.daemon.send(
            [{"recipient": "c1", "content": "hi"}], app="DEMO"
        )
        self.assertEqual(status, 200)
        self.assertEqual(answer["succeeded"], [{"recipient": "c1", "content": "hi"}])
        self.assertEqual((yield client.waitFor(1)), ["DATA:hi"])

    @inlineCallbacks
    def test_refusedRequestsDeliverNothing(self):
        """A malformed or unauthorised request delivers none of its messages and kicks nobody."""
        client = yield self.daemon.connect("c1")
        toC1 = {"recipient": "c1", "content": "bad"}
        refused = [
            raw(sendBody(messages=[toC1], extra=1)),
            raw(sendBody(messages=[toC1, {"recipient": "c1", "content": 1}])),
            raw(sendBody(messages=[toC1, {"recipient": "c1", "content": "\ud800"}])),
            raw(sendBody(messages=[toC1, "hi"])),
            raw(sendBody(messages=[toC1], secret="wrong")),
            raw(sendBody(messages=[toC1], secretName="nosuchapp")),
            raw(sendBody(messages=[toC1], secretName=OTHER_APP, secret=SECRET)),
            raw(sendBody(messages=[toC1]))[:-1],
            raw(kickBody(connections=["c1", 1])),
            raw(kickBody(secret="wrong")),
        ]
        for body in refused:
            path = "/kick" if b"connections" in body else "/send"
            status, _, _ = yield self.daemon.post(path, body)
            self.assertNotEqual(status, 200, body)
        # Another app's c1 is somebody else.
        status, answer, _ = yield self.daemon.send([toC1], app=OTHER_APP, secret=OTHER_SECRET)
        self.assertEqual((status, answer), (200, {"succeeded": [], "failed": [toC1]}))
        status, _, _ = yield self.daemon.send([{"recipient": "c1", "content": "good"}])
        self.assertEqual(status, 200)
        self.assertEqual((yield client.waitFor(1)), ["DATA:good"])
        self.assertIsNotNone(self.daemon.registry.connection(APP, "c1"))

    @inlineCallbacks
    def test_loneSurrogateRecipientInBatchDeliversNothing(self):
        """A batch answered with an error delivered none of its messages; retrying is safe."""
        client = yield self.daemon.connect("c1")
        status, answer, _ = yield self.daemon.post(
            "/send",
            raw(
                sendBody(
                    messages=[
                        {"recipient": "c1", "content": "first"},
                        {"recipient": "\ud800", "content": "second"},
                    ]
                )
            ),
        )
        self.assertEqual((status, answer), (400, MALFORMED))
        status, _, _ = yield self.daemon.send([{"recipient": "c1", "content": "good"}])
        self.assertEqual((yield client.waitFor(1)), ["DATA:good"])

    @inlineCallbacks
    def test_loneSurrogateInKickListKicksNobody(self):
        """A /kick answered with an error kicked nobody."""
        client = yield self.daemon.connect("c1")
        status, answer, _ = yield self.daemon.post(
            "/kick", raw(kickBody(connections=["c1", "\ud800"]))
        )
        self.assertEqual((status, answer), (400, MALFORMED))
        self.assertIsNotNone(self.daemon.registry.connection(APP, "c1"))
        self.assertEqual(client.received, [])


class SendTests(RelayApiTestCase):
    """
    What /send answers for unusual but valid requests.
    """

    @inlineCallbacks
    def test_emptyBatch(self):
        """An empty batch answers two empty lists."""
        status, answer, _ = yield self.daemon.send([])
        self.assertEqual((status, answer), (200, {"succeeded": [], "failed": []}))

    @inlineCallbacks
    def test_responseEchoesMessagesExactly(self):
        """The answer echoes each message exactly, so a backend can match them up."""
        yield self.daemon.connect("c1")
        yield self.daemon.connect("\u00fcser \u2603")
        messages = [
            {"recipient": "c1", "content": "plain"},
            {"recipient": "nobody", "content": "to nobody"},
            {"recipient": "\u00fcser \u2603", "content": "h\u00e9llo \U0001f600 \u4e2d"},
            {"recipient": "c1", "content": ""},
            {"recipient": "c1", "content": 'line\nbreak\ttab "quoted" \\ \u0000 \u2028'},
            {"recipient": "", "content": "empty recipient"},
            {"recipient": "c1", "content": "  padded  "},
        ]
        status, answer, _ = yield self.daemon.send(messages)
        self.assertEqual(status, 200)
        self.assertEqual(answer["succeeded"], [messages[i] for i in (0, 2, 3, 4, 6)])
        self.assertEqual(answer["failed"], [messages[i] for i in (1, 5)])

    @inlineCallbacks
    def test_metacharactersAreDeliveredLiterally(self):
        """Quotes, SQL or HTML in ids and messages are delivered and echoed literally."""
        nasty = 'x\'); DROP TABLE users; -- <script>alert("&amp;")</script> %s {0} ${x}'
        client = yield self.daemon.connect(nasty)
        messages = [
            {"recipient": nasty, "content": nasty},
            {"recipient": "' OR '1'='1", "content": "<b>bold</b>"},
            {"recipient": nasty, "content": "1; SELECT * FROM sessions"},
            {"recipient": 'c1" , "content": "x', "content": "</html>"},
        ]
        status, answer, _ = yield self.daemon.send(messages)
        self.assertEqual(status, 200)
        self.assertEqual(
            answer, {"succeeded": [messages[0], messages[2]], "failed": [messages[1], messages[3]]}
        )
        self.assertEqual(
            (yield client.waitFor(2)), ["DATA:" + nasty, "DATA:1; SELECT * FROM sessions"]
        )

    @inlineCallbacks
    def test_largeMessagesAreDelivered(self):
        """Messages bigger than a WebSocket frame reach the client whole."""
        client = yield self.daemon.connect("c1")
        contents = ["x" * 2000, "y" * (200 * 1024), "z" * (1024 * 1024)]
        status, answer, _ = yield self.daemon.send(
            [{"recipient": "c1", "content": c} for c in contents]
        )
        self.assertEqual(status, 200)
        self.assertEqual(len(answer["succeeded"]), 3)
        self.assertEqual((yield client.waitFor(3)), ["DATA:" + c for c in contents])

    @inlineCallbacks
    def test_kickAnswersKickedAndNotConnected(self):
        """/kick answers which ids were connected and which were not, and kicks only those."""
        c1 = yield self.daemon.connect("c1")
        c2 = yield self.daemon.connect("c2")
        status, answer, _ = yield self.daemon.kick(["c1", "c3", "' OR 1=1 --"])
        self.assertEqual(
            (status, answer), (200, {"kicked": ["c1"], "notConnected": ["c3", "' OR 1=1 --"]})
        )
        yield c1.closed
        self.assertEqual(c1.received, ["CLOSE"])
        status, answer, _ = yield self.daemon.send([{"recipient": "c2", "content": "still"}])
        self.assertEqual(answer["succeeded"], [{"recipient": "c2", "content": "still"}])
        self.assertEqual((yield c2.waitFor(1)), ["DATA:still"])

    @inlineCallbacks
    def test_kickEmptyList(self):
        """Kicking nobody answers two empty lists and kicks nobody."""
        client = yield self.daemon.connect("c1")
        status, answer, _ = yield self.daemon.kick([])
        self.assertEqual((status, answer), (200, {"kicked": [], "notConnected": []}))
        self.assertIsNotNone(self.daemon.registry.connection(APP, "c1"))
        self.assertEqual(client.received, [])


N = 60000


class BatchOrderTests(TestCase):
    @inlineCallbacks
    def test_aLaterBatchIsNotDeliveredInsideAnEarlierOne(self):
        """
        Batch A (N messages) is accepted, then batch B (one message) to
        the same connection. SPEC 3.2: frames arrive in the order /send
        accepted them, so B's message comes after all of A's.
        """
        daemon = Daemon(self)
        client = yield daemon.connect("conn-1")
        first = daemon.send([{"recipient": "conn-1", "content": f"A{i}"} for i in range(N)])
        # B is sent once A is being delivered: A was accepted first.
        yield client.waitFor(1)
        second = daemon.send([{"recipient": "conn-1", "content": "B"}])
        yield first
        yield second
        received = yield client.waitFor(N + 1)
        where = received.index("DATA:B")
        self.assertEqual(where, N, f"B arrived after {where} of A's {N} messages")


class LimitTests(TestCase):
    """
    The body limit and the per-message cap (SPEC §3.5).
    """

    timeout = 60

    @inlineCallbacks
    def test_bodyOverLimitIs413AndDaemonKeepsServing(self):
        """An oversized request gets a JSON 413, delivers nothing, and the daemon keeps serving."""
        daemon = Daemon(self, "--max-body-size", "1KiB")
        client = yield daemon.connect("c1")
        big = raw(sendBody(messages=[{"recipient": "c1", "content": "x" * 2048}]))
        self.assertGreater(len(big), 2048)
        status, answer, response = yield daemon.post("/send", big)
        self.assertEqual(status, 413)
        self.assertEqual(answer, {"code": 413, "message": "Request body too large"})
        self.assertEqual(response.headers.getRawHeaders(b"content-type"), [b"application/json"])
        status, answer, _ = yield daemon.send([{"recipient": "c1", "content": "small"}])
        self.assertEqual(status, 200)
        self.assertEqual(answer["succeeded"], [{"recipient": "c1", "content": "small"}])
        # The refused body was delivered to nobody.
        self.assertEqual((yield client.waitFor(1)), ["DATA:small"])

    @inlineCallbacks
    def test_kickBodyOverLimitIs413(self):
        """An oversized /kick gets a 413."""
        daemon = Daemon(self, "--max-body-size", "1KiB")
        status, answer, _ = yield daemon.post(
            "/kick", raw(kickBody(connections=[f"c{i}" for i in range(400)]))
        )
        self.assertEqual(status, 413)
        self.assertEqual(answer["code"], 413)

    @inlineCallbacks
    def test_bodyAtLimitIsAccepted(self):
        """A body exactly as large as the limit is accepted; one byte more is a 413."""
        daemon = Daemon(self, "--max-body-size", "1KiB")
        empty = raw(sendBody(messages=[{"recipient": "c1", "content": ""}]))
        body = raw(sendBody(messages=[{"recipient": "c1", "content": "x" * (1024 - len(empty))}]))
        self.assertEqual(len(body), 1024)
        status, _, _ = yield daemon.post("/send", body)
        self.assertEqual(status, 200)
        status, _, _ = yield daemon.post("/send", body + b" ")
        self.assertEqual(status, 413)

    @inlineCallbacks
    def test_chunkedBodyOverLimitIs413(self):
        """A chunked body over the limit (no Content-Length) gets a 413; a small one is served."""
        daemon = Daemon(self, "--max-body-size", "1KiB")
        big = raw(sendBody(messages=[{"recipient": "c1", "content": "x" * 2048}]))
        response = yield treq.request(
            "POST", daemon.url + "/send", data=ChunkedBody(big), agent=daemon.agent
        )
        answer = yield response.json()
        self.assertEqual(response.code, 413)
        self.assertEqual(answer, {"code": 413, "message": "Request body too large"})
        # A small chunked body still works, and so does the daemon.
        response = yield treq.request(
            "POST",
            daemon.url + "/send",
            data=ChunkedBody(raw(sendBody()), chunkSize=7),
            agent=daemon.agent,
        )
        answer = yield response.json()
        self.assertEqual(
            (response.code, answer),
            (200, {"succeeded": [], "failed": [{"recipient": "c1", "content": "hi"}]}),
        )

    @inlineCallbacks
    def test_defaultLimitIs16MiB(self):
        """By default a body over 16 MiB gets a 413."""
        daemon = Daemon(self)
        body = b" " * (16 * 1024 * 1024 + 1)
        status, answer, _ = yield daemon.post("/send", body)
        self.assertEqual(status, 413)
        self.assertEqual(answer, {"code": 413, "message": "Request body too large"})
        status, _, _ = yield daemon.send([])
        self.assertEqual(status, 200)

    @inlineCallbacks
    def test_oversizedMessageFailsAndRestOfBatchArrivesInOrder(self):
        """A message over the size cap fails alone; the rest of the batch arrives in order."""
        daemon = Daemon(self, "--max-message-size", "10")
        client = yield daemon.connect("c1")
        messages = [
            {"recipient": "c1", "content": "a" * 10},
            {"recipient": "c1", "content": "b" * 11},
            {"recipient": "c1", "content": "c"},
            {"recipient": "c1", "content": "d" * 1000},
            {"recipient": "c1", "content": "e" * 9},
        ]
        status, answer, _ = yield daemon.send(messages)
        self.assertEqual(status, 200)
        self.assertEqual(
            answer,
            {
                "succeeded": [messages[0], messages[2], messages[4]],
                "failed": [messages[1], messages[3]],
            },
        )
        self.assertEqual(
            (yield client.waitFor(3)), ["DATA:" + "a" * 10, "DATA:c", "DATA:" + "e" * 9]
        )

    @inlineCallbacks
    def test_messageSizeCountsUtf8Bytes(self):
        """The size cap counts a message's UTF-8 bytes, not its characters."""
        daemon = Daemon(self, "--max-message-size", "10")
        client = yield daemon.connect("c1")
        messages = [
            {"recipient": "c1", "content": "\u00e9" * 5},  # 10 bytes
            {"recipient": "c1", "content": "\u00e9" * 6},  # 6 characters, 12 bytes
            {"recipient": "c1", "content": "\u20ac" * 4},  # 4 characters, 12 bytes
            {"recipient": "c1", "content": "\U0001f600" * 3},  # 3 characters, 12 bytes
            {"recipient": "c1", "content": "\U0001f600" * 2 + "ab"},  # 10 bytes
        ]
        status, answer, _ = yield daemon.send(messages)
        self.assertEqual(status, 200)
        self.assertEqual(answer, {"succeeded": [messages[0], messages[4]], "failed": messages[1:4]})
        self.assertEqual(
            (yield client.waitFor(2)), ["DATA:" + "\u00e9" * 5, "DATA:" + "\U0001f600" * 2 + "ab"]
        )


class RoutingTests(RelayApiTestCase):
    """
    Paths nobody serves and methods an endpoint does not take.
    """

    @inlineCallbacks
    def test_unknownPathsAreJson404(self):
        """A mistyped URL gets a JSON 404 a backend can parse."""
        for method, path in [
            ("GET", "/nope"),
            ("POST", "/send/extra"),
            ("GET", "/send/"),
            ("POST", "/kick/x/y"),
            ("GET", "/recieve/x"),
            ("GET", "/nope/deeper"),
            ("POST", "/Send"),
            ("GET", "/index.html"),
        ]:
            status, answer, response = yield self.daemon.request(method, path)
            self.assertEqual((status, answer), (404, NOT_FOUND), (method, path))
            self.assertEqual(
                response.headers.getRawHeaders(b"content-type"),
                [b"application/json"],
                (method, path),
            )

    @inlineCallbacks
    def test_wrongMethodsAreJson405WithAllow(self):
        """A wrong method gets a JSON 405 with an Allow header naming the right one."""
        for method, path, allowed in [
            ("GET", "/send", b"POST"),
            ("PUT", "/kick", b"POST"),
            ("DELETE", "/send", b"POST"),
            ("GET", "/kick", b"POST"),
            ("POST", "/recieve", b"GET"),
            ("POST", "/receive", b"GET"),
            ("DELETE", "/", b"GET"),
            ("POST", "/", b"GET"),
        ]:
            status, answer, response = yield self.daemon.request(method, path)
            self.assertEqual(
                (status, answer),
                (405, {"code": 405, "message": "Method not allowed"}),
                (method, path),
            )
            self.assertEqual(
                response.headers.getRawHeaders(b"content-type"),
                [b"application/json"],
                (method, path),
            )
            allow = response.headers.getRawHeaders(b"allow")
            self.assertIsNotNone(allow, (method, path))
            self.assertIn(
                allowed, [m.strip() for m in b",".join(allow).split(b",")], (method, path)
            )


def oneSlicePerTurn(clock: Clock) -> Cooperator:
    """
    A cooperator that runs one unit of work per turn, a turn being a
    millisecond of C{clock}: what a busy reactor does between socket reads.
    """
    return Cooperator(
        terminationPredicateFactory=lambda: lambda: True,
        scheduler=lambda work: clock.callLater(0.001, work),
    )


class DeliveryQueueTests(SynchronousTestCase):
    """
    L{SendResource}'s queue of batches waiting to be delivered.
    """

    # The trap: accept() is re-entered from a batch's answer while _drain is
    # still looping; starting a second _drain then leaves a batch queued in
    # between never answered.

    def test_batchQueuedBehindTwoPipelinedBigBatchesIsAnswered(self) -> None:
        """
        A backend pipelines two big batches on one connection; while the
        second is being delivered another backend sends one message. Every
        request is answered and every message delivered once.
        """
        clock = Clock()
        clock.advance(NOW)
        relay = Relay(clock)
        relay.send.cooperator = oneSlicePerTurn(clock)
        first, second = relay.connect(), relay.connect()
        first.feed(bigBatch("a") + bigBatch("b"))
        for _ in range(100):
            if first.answers():
                break
            clock.advance(0.001)
        self.assertEqual(len(first.answers()), 1)
        # Batch b is being delivered now; this one waits behind it.
        second.feed(send("c"))
        for _ in range(100):
            clock.advance(0.001)
        self.assertEqual([a.status for a in first.answers()], [200, 200])
        self.assertEqual(
            [(a.status, a.json()["succeeded"]) for a in second.answers()], [(200, [say("c")])]
        )
        self.assertEqual(relay.delivered()[-1], "DATA:c")
        self.assertEqual(relay.site.working, set())
