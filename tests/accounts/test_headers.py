"""
Tests for L{socktopus_tw.accounts.headers}: the Auth Headers of SPEC §4.1.

Expected MACs are computed here with C{hmac} and C{hashlib} from the
specification's words, never with the module under test; the worked example
of the specification is the first test vector.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

from twisted.trial.unittest import SynchronousTestCase
from twisted.web.test.requesthelper import DummyRequest

from socktopus_tw.accounts.headers import WINDOW, ReplayGuard, SignedRequest, sign
from socktopus_tw.errors import NotAuthorized

# The worked example of SPEC §4.1, from the original's documentation.
SECRET = "3ar+0wLwgiltTXNZ/eprJ2NaWE7y5k+0r9ThN4+im8RHWH8ksB1xw4554hOTNF8H9rguMBfUaNRWztNQb+nz7A=="
TIME_SENT = "1472276742"
PATH = "/logout"
EXAMPLE_HMAC = "69aee4c4d9749a6e27c583af898840927975ea861b9d74dc54ef2e3cde14b7c4"
USER_ID = "42"


def expectedMac(secret: str, timeSent: str, path: str) -> bytes:
    """
    HMAC-SHA256 of C{"<Time-Sent>:<Path>"}, keyed with the secret's base64 text.
    """
    message = (timeSent + ":" + path).encode("utf-8")
    return hmac.new(secret.encode("ascii"), message, hashlib.sha256).digest()


def headers(**overrides: bytes | None) -> DummyRequest:
    """
    A request carrying valid Auth Headers for the worked example, with the
    headers named in C{overrides} replaced (or left out when None). Header
    names are written as clients send them; lookups are case-insensitive.
    """
    values: dict[str, bytes | None] = {
        "UserID": USER_ID.encode("ascii"),
        "Path": PATH.encode("ascii"),
        "Time-Sent": TIME_SENT.encode("ascii"),
        "HMAC": EXAMPLE_HMAC.encode("ascii"),
    }
    values.update({name.replace("_", "-"): value for name, value in overrides.items()})
    request = DummyRequest([b"logout"])
    for name, value in values.items():
        if value is not None:
            request.requestHeaders.setRawHeaders(name.encode("ascii"), [value])
    return request


def parse(request: DummyRequest) -> SignedRequest:
    return SignedRequest.fromHeaders(request.getHeader)


class WorkedExampleTests(SynchronousTestCase):
    """
    The specification's example, signed and checked.
    """

    def test_independentComputationMatchesSpecification(self):
        """
        The test's own HMAC recipe reproduces the documented value (else the vectors lie).
        """
        self.assertEqual(expectedMac(SECRET, TIME_SENT, PATH).hex(), EXAMPLE_HMAC)

    def test_signMatchesWorkedExample(self):
        """
        Clients following the documented example get the same HMAC from the server's signer.
        """
        self.assertEqual(sign(SECRET, TIME_SENT, PATH), EXAMPLE_HMAC)

    def test_signHexIsLowerCase(self):
        """
        The default hex encoding is lower case, as the documented example is.
        """
        self.assertEqual(sign(SECRET, TIME_SENT, PATH, "hex"), EXAMPLE_HMAC.lower())

    def test_signBase64(self):
        """
        A client asking for Encoding: base64 gets the standard base64 of the same MAC.
        """
        expected = base64.b64encode(expectedMac(SECRET, TIME_SENT, PATH)).decode("ascii")
        self.assertEqual(sign(SECRET, TIME_SENT, PATH, "base64"), expected)

    def test_workedExampleHeadersParse(self):
        """
        The documented example's headers are read into the right fields.
        """
        signed = parse(headers())
        self.assertEqual(signed.userId, 42)
        self.assertEqual(signed.path, PATH)
        self.assertEqual(signed.timeSent, TIME_SENT)
        self.assertEqual(signed.mac, bytes.fromhex(EXAMPLE_HMAC))

    def test_workedExampleSignatureAccepted(self):
        """
        A client sending the documented example's headers is not refused.
        """
        parse(headers()).checkSignature(SECRET)

    def test_upperCaseHexAccepted(self):
        """
        A client writing the hex HMAC in upper case is not refused.
        """
        parse(headers(HMAC=EXAMPLE_HMAC.upper().encode("ascii"))).checkSignature(SECRET)

    def test_base64EncodingAccepted(self):
        """
        A client sending Encoding: base64 with a base64 HMAC is not refused.
        """
        mac = base64.b64encode(expectedMac(SECRET, TIME_SENT, PATH))
        signed = parse(headers(HMAC=mac, Encoding=b"base64"))
        self.assertEqual(signed.mac, bytes.fromhex(EXAMPLE_HMAC))
        signed.checkSignature(SECRET)

    def test_explicitHexEncodingAccepted(self):
        """
        A client that states the default Encoding: hex is not refused.
        """
        parse(headers(Encoding=b"hex")).checkSignature(SECRET)

    def test_pathWithQueryString(self):
        """
        A signed path with a query string verifies when signed as sent, query included.
        """
        path = "/users/getID?username=a&usernames=b,c"
        mac = expectedMac(SECRET, TIME_SENT, path).hex().encode("ascii")
        signed = parse(headers(Path=path.encode("ascii"), HMAC=mac))
        self.assertEqual(signed.path, path)
        signed.checkSignature(SECRET)

    def test_wrongSecretRefused(self):
        """
        Headers signed with another secret must not pass as this user's.
        """
        otherSecret = base64.b64encode(b"\x01" * 64).decode("ascii")
        self.assertNotAuthorized(lambda: parse(headers()).checkSignature(otherSecret))

    def test_otherPathRefused(self):
        """
        A MAC made for one path must not be accepted for another path.
        """
        self.assertNotAuthorized(
            lambda: parse(headers(Path=b"/changePassword")).checkSignature(SECRET)
        )

    def test_otherTimeSentRefused(self):
        """
        A MAC made for one Time-Sent must not be accepted with another.
        """
        self.assertNotAuthorized(
            lambda: parse(headers(Time_Sent=b"1472276743")).checkSignature(SECRET)
        )

    def test_pathWithSqlMetacharactersNeedsItsOwnSignature(self):
        """
        A Path with SQL metacharacters is just signed text: the logout MAC does not cover it.
        """
        path = "/logout' OR '1'='1; DROP TABLE users;--"
        signed = parse(headers(Path=path.encode("ascii")))
        self.assertEqual(signed.path, path)
        self.assertNotAuthorized(lambda: signed.checkSignature(SECRET))

    def assertNotAuthorized(self, f) -> NotAuthorized:
        error = self.assertRaises(NotAuthorized, f)
        self.assertEqual(error.status, 401)
        self.assertEqual(error.body(), {"Error": "Not Authorized Request"})
        return error


class MalformedHeadersTests(SynchronousTestCase):
    """
    Anything missing or malformed is a 401 with no hint of which.
    """

    def assertRefused(self, **overrides: bytes | None) -> None:
        error = self.assertRaises(NotAuthorized, parse, headers(**overrides))
        self.assertEqual(error.status, 401)
        self.assertEqual(error.body(), {"Error": "Not Authorized Request"})

    def test_noUserIdRefused(self):
        """
        A request without UserID is refused, not crashed on.
        """
        self.assertRefused(UserID=None)

    def test_noPathRefused(self):
        """
        A request without Path is refused, not crashed on.
        """
        self.assertRefused(Path=None)

    def test_noTimeSentRefused(self):
        """
        A request without Time-Sent is refused, not crashed on.
        """
        self.assertRefused(Time_Sent=None)

    def test_noHmacRefused(self):
        """
        A request without HMAC is refused, not crashed on.
        """
        self.assertRefused(HMAC=None)

    def test_noHeadersAtAllRefused(self):
        """
        A request with no Auth Headers at all is refused.
        """
        self.assertRefused(UserID=None, Path=None, Time_Sent=None, HMAC=None)

    def test_emptyUserIdRefused(self):
        """
        An empty UserID is refused.
        """
        self.assertRefused(UserID=b"")

    def test_emptyPathRefused(self):
        """
        An empty Path is refused.
        """
        self.assertRefused(Path=b"")

    def test_emptyTimeSentRefused(self):
        """
        An empty Time-Sent is refused.
        """
        self.assertRefused(Time_Sent=b"")

    def test_emptyHmacRefused(self):
        """
        An empty HMAC is refused, not compared as zero bytes.
        """
        self.assertRefused(HMAC=b"")

    def test_nonNumericUserIdRefused(self):
        """
        A UserID that is not a number is refused.
        """
        for value in [b"alice", b"-1", b"+1", b"1.0", b"1e3", b" 42", b"0x2a", b"42abc"]:
            self.assertRefused(UserID=value)

    def test_nonNumericTimeSentRefused(self):
        """
        A Time-Sent that is not whole seconds is refused.
        """
        for value in [b"now", b"-1472276742", b"1472276742.5", b"1e9", b"0x57c1"]:
            self.assertRefused(Time_Sent=value)

    def test_absurdlyLongTimeSentRefused(self):
        """
        A Time-Sent of hundreds of digits is refused, not turned into a huge integer.
        """
        self.assertRefused(Time_Sent=b"9" * 400)

    def test_userIdBeyondSixtyFourBitsRefused(self):
        """
        A UserID no database can hold is a 401, not a 500 from the database driver.
        """
        self.assertRefused(UserID=str(2**63).encode("ascii"))
        self.assertRefused(UserID=str(2**64).encode("ascii"))

    def test_largestSixtyFourBitUserIdParses(self):
        """
        The largest signed 64-bit UserID is still a well-formed header.
        """
        self.assertEqual(parse(headers(UserID=str(2**63 - 1).encode("ascii"))).userId, 2**63 - 1)

    def test_hugeUserIdRefused(self):
        """
        A UserID of thousands of digits is a 401, not an uncaught ValueError (a 500).
        """
        self.assertRefused(UserID=b"9" * 5000)

    def test_badHexRefused(self):
        """
        An HMAC that is not hex is refused.
        """
        self.assertRefused(HMAC=b"zz" + EXAMPLE_HMAC[2:].encode("ascii"))

    def test_oddLengthHexRefused(self):
        """
        An HMAC with an odd number of hex digits is refused.
        """
        self.assertRefused(HMAC=EXAMPLE_HMAC[:-1].encode("ascii"))

    def test_base64InsteadOfHexRefused(self):
        """
        A base64 HMAC sent without Encoding: base64 is refused.
        """
        self.assertRefused(HMAC=base64.b64encode(bytes.fromhex(EXAMPLE_HMAC)))

    def test_badBase64Refused(self):
        """
        An HMAC with characters outside standard base64 is refused under Encoding: base64.
        """
        good = base64.b64encode(bytes.fromhex(EXAMPLE_HMAC)).decode("ascii")
        self.assertRefused(Encoding=b"base64", HMAC=("*" + good[1:]).encode("ascii"))
        self.assertRefused(Encoding=b"base64", HMAC=good.rstrip("=").encode("ascii"))

    def test_urlSafeBase64Refused(self):
        """
        The URL-safe base64 alphabet is not the standard one the protocol names.
        """
        # The first Time-Sent after the example whose MAC's base64 uses + or /.
        timeSent = next(
            str(t)
            for t in range(int(TIME_SENT), int(TIME_SENT) + 100)
            if set("+/") & set(base64.b64encode(expectedMac(SECRET, str(t), PATH)).decode())
        )
        mac = expectedMac(SECRET, timeSent, PATH)
        urlSafe = base64.urlsafe_b64encode(mac)
        self.assertNotEqual(urlSafe, base64.b64encode(mac))
        self.assertRefused(Encoding=b"base64", Time_Sent=timeSent.encode("ascii"), HMAC=urlSafe)
        parse(
            headers(
                Encoding=b"base64", Time_Sent=timeSent.encode("ascii"), HMAC=base64.b64encode(mac)
            )
        ).checkSignature(SECRET)

    def test_hexUnderBase64EncodingRefused(self):
        """
        A hex HMAC sent with Encoding: base64 is refused, not decoded as some other MAC.
        """
        self.assertRefused(Encoding=b"base64", HMAC=EXAMPLE_HMAC.encode("ascii"))

    def test_shortMacRefused(self):
        """
        A truncated MAC is refused: nobody gets in by guessing a prefix.
        """
        self.assertRefused(HMAC=EXAMPLE_HMAC[:32].encode("ascii"))
        short = base64.b64encode(bytes.fromhex(EXAMPLE_HMAC)[:16])
        self.assertRefused(Encoding=b"base64", HMAC=short)

    def test_longMacRefused(self):
        """
        A MAC longer than SHA-256's 32 bytes is refused.
        """
        self.assertRefused(HMAC=(EXAMPLE_HMAC + "00").encode("ascii"))

    def test_unknownEncodingRefused(self):
        """
        An Encoding other than hex or base64 is refused.
        """
        for value in [b"base32", b"binary", b"utf-8", b"hex64"]:
            self.assertRefused(Encoding=value)

    def test_nonAsciiUserIdRefused(self):
        """
        Non-ASCII bytes in UserID (even Unicode digits) are refused.
        """
        self.assertRefused(UserID="\u0664\u0662".encode())  # Arabic-Indic 42
        self.assertRefused(UserID=b"4\xff2")

    def test_nonAsciiTimeSentRefused(self):
        """
        Non-ASCII bytes in Time-Sent (even Unicode digits) are refused.
        """
        self.assertRefused(Time_Sent="\uff11472276742".encode())  # full-width 1
        self.assertRefused(Time_Sent=b"\xe9" + TIME_SENT.encode("ascii"))

    def test_nonAsciiHmacRefused(self):
        """
        Non-ASCII bytes in HMAC are refused.
        """
        self.assertRefused(HMAC=b"\xff" * 64)
        self.assertRefused(Encoding=b"base64", HMAC=b"\xc3\xa9" * 22)

    def test_nonAsciiEncodingRefused(self):
        """
        Non-ASCII bytes in Encoding are refused.
        """
        self.assertRefused(Encoding="h\u00e9x".encode())

    def test_invalidUtf8PathRefused(self):
        """
        A Path that is not even UTF-8 is refused, not crashed on.
        """
        self.assertRefused(Path=b"/logout\xff\xfe")


class TimeTests(SynchronousTestCase):
    """
    Time-Sent may differ from the server's clock by 10 seconds either way.
    """

    def setUp(self):
        self.signed = parse(headers())
        self.sent = int(TIME_SENT)

    def test_windowIsTenSeconds(self):
        """
        The window is the ten seconds the specification promises.
        """
        self.assertEqual(WINDOW, 10)

    def test_sameSecondAccepted(self):
        """
        A request stamped with the server's own second is accepted.
        """
        self.signed.checkTime(self.sent)

    def test_tenSecondsLateAccepted(self):
        """
        A request arriving exactly 10 s after its Time-Sent is accepted.
        """
        self.signed.checkTime(self.sent + 10)

    def test_tenSecondsEarlyAccepted(self):
        """
        A client clock exactly 10 s ahead of the server is accepted.
        """
        self.signed.checkTime(self.sent - 10)

    def test_elevenSecondsLateRefused(self):
        """
        A request arriving 11 s after its Time-Sent is refused (old headers are replays).
        """
        error = self.assertRaises(NotAuthorized, self.signed.checkTime, self.sent + 11)
        self.assertEqual(error.body(), {"Error": "Not Authorized Request"})

    def test_elevenSecondsEarlyRefused(self):
        """
        Headers stamped 11 s in the future are refused (they could be replayed later).
        """
        self.assertRaises(NotAuthorized, self.signed.checkTime, self.sent - 11)

    def test_fractionPastWindowRefused(self):
        """
        Just over ten seconds on a fractional server clock is refused.
        """
        self.assertRaises(NotAuthorized, self.signed.checkTime, self.sent + 10.5)
        self.signed.checkTime(self.sent + 9.5)


def signedAt(timeSent: int, path: str = PATH, userId: int = 42) -> SignedRequest:
    """
    A signed request as the worked example's client would send it at C{timeSent}.
    """
    return SignedRequest(userId, path, str(timeSent), expectedMac(SECRET, str(timeSent), path))


class ReplayGuardTests(SynchronousTestCase):
    """
    A set of headers is accepted once.
    """

    def setUp(self):
        self.guard = ReplayGuard()
        self.sent = int(TIME_SENT)

    def test_firstUseAccepted(self):
        """
        A fresh set of headers is not mistaken for a replay.
        """
        self.guard.accept(signedAt(self.sent), now=self.sent)
        self.assertEqual(len(self.guard), 1)

    def test_replayRefused(self):
        """
        The same headers sent a second time are refused: a sniffed request cannot be replayed.
        """
        self.guard.accept(signedAt(self.sent), now=self.sent)
        error = self.assertRaises(
            NotAuthorized, self.guard.accept, signedAt(self.sent), now=self.sent + 1
        )
        self.assertEqual(error.body(), {"Error": "Not Authorized Request"})

    def test_replayAtEdgeOfWindowRefused(self):
        """
        A replay at the last second the time check still allows is refused.
        """
        self.guard.accept(signedAt(self.sent), now=self.sent - WINDOW)
        self.assertRaises(
            NotAuthorized, self.guard.accept, signedAt(self.sent), now=self.sent + WINDOW
        )

    def test_replayInOtherEncodingRefused(self):
        """
        Re-sending the same MAC in base64 or upper-case hex is still a replay.
        """
        self.guard.accept(parse(headers()), now=self.sent)
        upper = headers(HMAC=EXAMPLE_HMAC.upper().encode("ascii"))
        self.assertRaises(NotAuthorized, self.guard.accept, parse(upper), now=self.sent)
        asBase64 = headers(Encoding=b"base64", HMAC=base64.b64encode(bytes.fromhex(EXAMPLE_HMAC)))
        self.assertRaises(NotAuthorized, self.guard.accept, parse(asBase64), now=self.sent)

    def test_differentTimeSentAccepted(self):
        """
        Two requests a second apart are both served.
        """
        self.guard.accept(signedAt(self.sent), now=self.sent)
        self.guard.accept(signedAt(self.sent + 1), now=self.sent + 1)
        self.assertEqual(len(self.guard), 2)

    def test_differentMacAccepted(self):
        """
        Two requests in the same second to different paths are both served.
        """
        self.guard.accept(signedAt(self.sent, "/logout"), now=self.sent)
        self.guard.accept(signedAt(self.sent, "/authHeaders"), now=self.sent)
        self.assertEqual(len(self.guard), 2)

    def test_otherUserSameSecondAccepted(self):
        """
        Another user's request is never taken for this user's replay.
        """
        self.guard.accept(signedAt(self.sent, userId=1), now=self.sent)
        self.guard.accept(signedAt(self.sent, userId=2), now=self.sent)
        self.assertEqual(len(self.guard), 2)

    def test_entriesKeptWithinWindow(self):
        """
        Nothing is forgotten while it could still pass the time check.
        """
        self.guard.accept(signedAt(self.sent), now=self.sent)
        self.guard.accept(signedAt(self.sent + 1), now=self.sent + WINDOW)
        self.assertEqual(len(self.guard), 2)

    def test_entriesForgottenAfterWindow(self):
        """
        Old entries are dropped once out of the window, so memory does not grow forever.
        """
        for offset in range(5):
            self.guard.accept(signedAt(self.sent + offset), now=self.sent + offset)
        self.assertEqual(len(self.guard), 5)
        later = self.sent + 4 + WINDOW + 1
        self.guard.accept(signedAt(later), now=later)
        self.assertEqual(len(self.guard), 1)

    def test_partlyForgotten(self):
        """
        Only entries out of the window are dropped; newer ones still block replays.
        """
        self.guard.accept(signedAt(self.sent), now=self.sent)
        self.guard.accept(signedAt(self.sent + 5), now=self.sent + 5)
        now = self.sent + WINDOW + 1
        self.guard.accept(signedAt(now), now=now)
        self.assertEqual(len(self.guard), 2)
        self.assertRaises(NotAuthorized, self.guard.accept, signedAt(self.sent + 5), now=now)
