"""
Tests for L{socktopus_tw.relay.tokens}: the relay client token of SPEC §3.1
and the token rows of the §3.2 table that the pure module decides.

Expected tokens are computed here from the specification with C{hmac},
C{hashlib} and C{bytes.hex()}, never with the module under test.
"""

from __future__ import annotations

import hashlib
import hmac

from twisted.trial.unittest import SynchronousTestCase

from socktopus_tw.relay.tokens import (
    MAX_CONNECTION_ID_BYTES,
    ExpiredToken,
    InvalidSignature,
    MalformedToken,
    Token,
    makeToken,
    parseToken,
    sign,
)

SECRET = "s3cret-0123456789"
OTHER_SECRET = "another-secret-9876543210"
APP = "demo"
CONNECTION_ID = "conn-1"
STAMP = 1700000000000
LIFESPAN = 5000


def hexOf(text: str) -> str:
    """
    Lower-case hex of the UTF-8 bytes of C{text}, as SPEC §3.1 defines hex().
    """
    return text.encode("utf-8").hex()


def expectedSignature(secret: str, stamp: str, connectionId: str) -> bytes:
    """
    HMAC-SHA256 with the secret as key over the stamp followed by the id.
    """
    return hmac.new(
        secret.encode("utf-8"), (stamp + connectionId).encode("utf-8"), hashlib.sha256
    ).digest()


def expectedToken(
    app: str, secret: str, connectionId: str, stamp: int, signWith: str | None = None
) -> str:
    """
    A token built from the specification alone, optionally signed with a
    different secret than the app's.
    """
    text = str(stamp)
    signature = expectedSignature(signWith or secret, text, connectionId)
    return "h".join([hexOf(text), hexOf(app), hexOf(connectionId), signature.hex()])


def rawToken(stampField: str, appField: str, idField: str, signatureField: str) -> str:
    """
    Four already-encoded fields joined the way the wire format joins them.
    """
    return "h".join([stampField, appField, idField, signatureField])


class HexTests(SynchronousTestCase):
    """
    The helper this file checks against is itself right.
    """

    def test_specExample(self) -> None:
        """
        The hex of a stamp differs from the worked example in SPEC §3.1.
        """
        self.assertEqual(hexOf("1700000000000"), "31373030303030303030303030")


class MakeTokenTests(SynchronousTestCase):
    """
    L{makeToken} produces exactly the original's wire format.
    """

    def test_knownVector(self) -> None:
        """
        Existing clients and backends cannot use tokens this daemon builds.
        """
        token = makeToken(APP, SECRET, CONNECTION_ID, STAMP)
        self.assertEqual(token, expectedToken(APP, SECRET, CONNECTION_ID, STAMP))
        self.assertTrue(token.startswith("31373030303030303030303030h64656d6fh"))

    def test_lowerCaseHexOnly(self) -> None:
        """
        Tokens contain upper-case hex or stray characters that the parser refuses.
        """
        token = makeToken(APP, SECRET, CONNECTION_ID, STAMP)
        self.assertEqual(set(token) - set("0123456789abcdefh"), set())
        self.assertEqual(token.count("h"), 3)

    def test_unicodeConnectionId(self) -> None:
        """
        A connection id outside ASCII is encoded differently from the original.
        """
        connectionId = "ünïcødé-🐙-接続"
        self.assertEqual(
            makeToken(APP, SECRET, connectionId, STAMP),
            expectedToken(APP, SECRET, connectionId, STAMP),
        )

    def test_signIsTheSpecHmac(self) -> None:
        """
        Signatures are not HMAC-SHA256(secret, T + CONNECTION_ID) as the spec says.
        """
        self.assertEqual(
            sign(SECRET, str(STAMP), CONNECTION_ID),
            expectedSignature(SECRET, str(STAMP), CONNECTION_ID),
        )

    def test_floatMillisecondsAreWholeMilliseconds(self) -> None:
        """
        A float clock value yields a stamp like "1700000000000.5" clients cannot parse.
        """
        self.assertEqual(
            makeToken(APP, SECRET, CONNECTION_ID, 1700000000000.7),  # type: ignore[arg-type]
            expectedToken(APP, SECRET, CONNECTION_ID, STAMP),
        )


class ParseTokenTests(SynchronousTestCase):
    """
    L{parseToken} decodes good tokens and calls everything else malformed.
    """

    def assertMalformed(self, token: str) -> None:
        """
        C{token} is refused as malformed, with the §3.2 status and body.
        """
        error = self.assertRaises(MalformedToken, parseToken, token)
        self.assertEqual(error.status, 400)
        self.assertEqual(error.body(), {"code": 400, "message": "Malformed token"})

    def goodFields(self) -> list[str]:
        """
        The four fields of a valid token, to spoil one at a time.
        """
        return expectedToken(APP, SECRET, CONNECTION_ID, STAMP).split("h")

    def test_roundTrip(self) -> None:
        """
        A token from a backend is not understood by the daemon.
        """
        token = parseToken(expectedToken(APP, SECRET, CONNECTION_ID, STAMP))
        self.assertEqual(
            token,
            Token(
                str(STAMP),
                APP,
                CONNECTION_ID,
                expectedSignature(SECRET, str(STAMP), CONNECTION_ID),
            ),
        )
        self.assertEqual(token.milliseconds, STAMP)

    def test_unicodeConnectionIdRoundTrip(self) -> None:
        """
        A client with a non-ASCII connection id cannot connect.
        """
        connectionId = "ünïcødé-🐙-接続"
        token = parseToken(expectedToken(APP, SECRET, connectionId, STAMP))
        self.assertEqual(token.connectionId, connectionId)
        token.checkSignature(SECRET)

    def test_unicodeAppName(self) -> None:
        """
        An app field with non-ASCII UTF-8 is refused as malformed instead of as unknown.
        """
        token = parseToken(expectedToken("démo", SECRET, CONNECTION_ID, STAMP))
        self.assertEqual(token.app, "démo")

    def test_tooFewParts(self) -> None:
        """
        A token with three parts is accepted or crashes instead of being malformed.
        """
        self.assertMalformed("h".join(self.goodFields()[:3]))

    def test_tooManyParts(self) -> None:
        """
        A token with a fifth part is accepted or crashes instead of being malformed.
        """
        self.assertMalformed("h".join([*self.goodFields(), "00"]))

    def test_empty(self) -> None:
        """
        An empty token crashes the daemon instead of being malformed.
        """
        self.assertMalformed("")

    def test_onlySeparators(self) -> None:
        """
        A token of three bare separators is accepted or crashes.
        """
        self.assertMalformed("hhh")

    def test_emptyAppField(self) -> None:
        """
        A token with an empty app field is accepted or crashes.
        """
        fields = self.goodFields()
        fields[1] = ""
        self.assertMalformed(rawToken(*fields))

    def test_oddLengthHex(self) -> None:
        """
        A field with an odd number of hex digits is half-decoded instead of refused.
        """
        for index in range(4):
            fields = self.goodFields()
            fields[index] += "0"
            self.assertMalformed(rawToken(*fields))

    def test_upperCaseHex(self) -> None:
        """
        Upper-case hex is accepted although the wire format is lower-case only.
        """
        for index in range(4):
            fields = self.goodFields()
            fields[index] = fields[index].upper()
            if fields[index] != self.goodFields()[index]:
                self.assertMalformed(rawToken(*fields))

    def test_nonHexCharacters(self) -> None:
        """
        Hex fields with stray characters (anywhere in the field) are accepted.
        """
        for bad in ["zz", "0g", "g0", "00 0", " 000", "000 ", "0x00", "+0", "-0", "é0", "0\n"]:
            for index in range(4):
                fields = self.goodFields()
                fields[index] = fields[index][:2] + bad + fields[index][2:]
                self.assertMalformed(rawToken(*fields))

    def test_trailingNewline(self) -> None:
        """
        A token with a trailing newline (copied from a shell) is accepted half-parsed.
        """
        self.assertMalformed(expectedToken(APP, SECRET, CONNECTION_ID, STAMP) + "\n")

    def test_nonNumericTime(self) -> None:
        """
        A token whose time is not a decimal number is accepted or crashes.
        """
        for stamp in [
            "",
            "abc",
            "17000000000x0",
            "-1700000000000",
            "+1700000000000",
            " 1700000000000",
            "1700000000000 ",
            "1.7e12",
            "1700000000000.5",
            "\u0661\u0667\u0660\u0660",
            "0x10",
        ]:
            fields = self.goodFields()
            fields[0] = hexOf(stamp)
            self.assertMalformed(rawToken(*fields))

    def test_hugeTime(self) -> None:
        """
        An absurdly long time field is parsed into a huge integer instead of refused.
        """
        fields = self.goodFields()
        fields[0] = hexOf("9" * 1000)
        self.assertMalformed(rawToken(*fields))

    def test_badUtf8App(self) -> None:
        """
        An app field that is not UTF-8 crashes the daemon instead of being malformed.
        """
        for raw in [b"\xff", b"\xc3", b"de\x80mo", b"\xed\xa0\x80"]:
            fields = self.goodFields()
            fields[1] = raw.hex()
            self.assertMalformed(rawToken(*fields))

    def test_badUtf8ConnectionId(self) -> None:
        """
        A connection id that is not UTF-8 crashes the daemon instead of being malformed.
        """
        for raw in [b"\xff", b"\xc3", b"conn\x80", b"\xed\xa0\x80"]:
            fields = self.goodFields()
            fields[2] = raw.hex()
            self.assertMalformed(rawToken(*fields))

    def test_emptyConnectionId(self) -> None:
        """
        A connection id of 0 bytes is accepted although ids are 1 to 256 bytes.
        """
        fields = self.goodFields()
        fields[2] = ""
        self.assertMalformed(rawToken(*fields))

    def test_connectionIdTooLong(self) -> None:
        """
        A 257-byte connection id is accepted although ids are at most 256 bytes.
        """
        self.assertEqual(MAX_CONNECTION_ID_BYTES, 256)
        for connectionId in ["a" * 257, "é" * 128 + "a", "🐙" * 64 + "a"]:
            self.assertEqual(len(connectionId.encode("utf-8")), 257)
            self.assertMalformed(expectedToken(APP, SECRET, connectionId, STAMP))

    def test_connectionIdLongest(self) -> None:
        """
        A 256-byte connection id, the longest allowed, is refused.
        """
        for connectionId in ["a" * 256, "é" * 128, "🐙" * 64]:
            self.assertEqual(len(connectionId.encode("utf-8")), 256)
            token = parseToken(expectedToken(APP, SECRET, connectionId, STAMP))
            self.assertEqual(token.connectionId, connectionId)
            token.checkSignature(SECRET)

    def test_connectionIdShortest(self) -> None:
        """
        A one-byte connection id, the shortest allowed, is refused.
        """
        token = parseToken(expectedToken(APP, SECRET, "x", STAMP))
        self.assertEqual(token.connectionId, "x")


class CheckAgeTests(SynchronousTestCase):
    """
    L{Token.checkAge}: valid for the lifespan on either side of the stamp.
    """

    def token(self) -> Token:
        return parseToken(expectedToken(APP, SECRET, CONNECTION_ID, STAMP))

    def assertExpired(self, now: float) -> None:
        """
        At C{now} the token is refused as expired, with the §3.2 status and body.
        """
        error = self.assertRaises(ExpiredToken, self.token().checkAge, now, LIFESPAN)
        self.assertEqual(error.status, 401)
        self.assertEqual(error.body(), {"code": 401, "message": "Token expired"})

    def test_fresh(self) -> None:
        """
        A token used the moment it was made is refused.
        """
        self.token().checkAge(STAMP, LIFESPAN)

    def test_withinLifespan(self) -> None:
        """
        A token a few seconds old is refused.
        """
        self.token().checkAge(STAMP + 4999, LIFESPAN)

    def test_exactlyAtExpiry(self) -> None:
        """
        A token exactly the lifespan old is refused although it is still valid.
        """
        self.token().checkAge(STAMP + LIFESPAN, LIFESPAN)

    def test_expired(self) -> None:
        """
        A token one millisecond past its lifespan is accepted.
        """
        self.assertExpired(STAMP + LIFESPAN + 1)

    def test_longExpired(self) -> None:
        """
        A token from yesterday is accepted.
        """
        self.assertExpired(STAMP + 86400 * 1000)

    def test_slightlyInFuture(self) -> None:
        """
        A token from a backend whose clock is a little ahead is refused.
        """
        self.token().checkAge(STAMP - 4999, LIFESPAN)

    def test_exactlyLifespanInFuture(self) -> None:
        """
        A token stamped exactly the margin ahead is refused although it is at the edge.
        """
        self.token().checkAge(STAMP - LIFESPAN, LIFESPAN)

    def test_tooFarInFuture(self) -> None:
        """
        A token stamped beyond the margin in the future is accepted (the original's bug).
        """
        self.assertExpired(STAMP - LIFESPAN - 1)

    def test_farFuture(self) -> None:
        """
        A token stamped years ahead works forever, as it did in the Go original.
        """
        self.assertExpired(STAMP - 10 * 365 * 86400 * 1000)

    def test_configuredLifespan(self) -> None:
        """
        A configured lifespan is not honoured.
        """
        token = self.token()
        token.checkAge(STAMP + 60000, 60000)
        self.assertRaises(ExpiredToken, token.checkAge, STAMP + 60001, 60000)
        self.assertRaises(ExpiredToken, token.checkAge, STAMP + 1001, 1000)


class CheckSignatureTests(SynchronousTestCase):
    """
    L{Token.checkSignature} accepts only the app's own HMAC of T + id.
    """

    def assertInvalid(self, token: str, secret: str = SECRET) -> None:
        """
        C{token} parses but its signature is refused with the §3.2 status and body.
        """
        error = self.assertRaises(InvalidSignature, parseToken(token).checkSignature, secret)
        self.assertEqual(error.status, 401)
        self.assertEqual(error.body(), {"code": 401, "message": "Invalid signature"})

    def test_good(self) -> None:
        """
        A correctly signed token is refused.
        """
        parseToken(expectedToken(APP, SECRET, CONNECTION_ID, STAMP)).checkSignature(SECRET)

    def test_otherSecret(self) -> None:
        """
        A token signed with another app's secret is accepted.
        """
        self.assertInvalid(expectedToken(APP, SECRET, CONNECTION_ID, STAMP, signWith=OTHER_SECRET))

    def test_checkedWithOtherSecret(self) -> None:
        """
        A token is accepted when checked against a secret that did not sign it.
        """
        self.assertInvalid(expectedToken(APP, SECRET, CONNECTION_ID, STAMP), OTHER_SECRET)

    def test_flippedBit(self) -> None:
        """
        A signature with one bit changed is accepted.
        """
        fields = expectedToken(APP, SECRET, CONNECTION_ID, STAMP).split("h")
        signature = bytearray(bytes.fromhex(fields[3]))
        signature[-1] ^= 1
        fields[3] = bytes(signature).hex()
        self.assertInvalid(rawToken(*fields))

    def test_truncatedSignature(self) -> None:
        """
        A signature cut short (or empty of content) is accepted.
        """
        fields = expectedToken(APP, SECRET, CONNECTION_ID, STAMP).split("h")
        fields[3] = fields[3][:32]
        self.assertInvalid(rawToken(*fields))

    def test_timeChanged(self) -> None:
        """
        A client can extend its token by editing the time: the time is not signed.
        """
        fields = expectedToken(APP, SECRET, CONNECTION_ID, STAMP).split("h")
        fields[0] = hexOf(str(STAMP + 60000))
        self.assertInvalid(rawToken(*fields))

    def test_connectionIdChanged(self) -> None:
        """
        A client can take another connection id with its own token.
        """
        fields = expectedToken(APP, SECRET, CONNECTION_ID, STAMP).split("h")
        fields[2] = hexOf("conn-2")
        self.assertInvalid(rawToken(*fields))

    def test_appIsNotSigned(self) -> None:
        """
        Tokens from existing backends fail because the app is wrongly put into the HMAC.
        """
        # SPEC §3.1 signs T + CONNECTION_ID only; the app name selects the secret.
        fields = expectedToken(APP, SECRET, CONNECTION_ID, STAMP).split("h")
        fields[1] = hexOf("DEMO")
        parseToken(rawToken(*fields)).checkSignature(SECRET)

    def test_unicodeSecret(self) -> None:
        """
        An app whose secret is not ASCII cannot sign tokens the daemon accepts.
        """
        secret = "sécret-🔑"
        parseToken(expectedToken(APP, secret, "ïd", STAMP)).checkSignature(secret)
        self.assertInvalid(expectedToken(APP, secret, "ïd", STAMP), "secret-")
