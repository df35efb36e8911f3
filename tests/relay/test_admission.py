"""
Tests for L{socktopus_tw.relay.admission}: L{Gatekeeper} deciding who may
connect, for each row of SPEC §3.2, on a L{Clock}.
"""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from socktopus_tw.apps import Apps
from socktopus_tw.errors import RelayError
from socktopus_tw.relay.admission import Gatekeeper
from socktopus_tw.relay.registry import LocalRegistry
from socktopus_tw.relay.tokens import makeToken
from tests.support.relay import fields

APP = "demo"
SECRET = "demo-secret-0123456789"
OTHER_APP = "other"
OTHER_SECRET = "other-secret-9876543210"

#: A fixed "now" for the clock, in seconds.
NOW = 1_700_000_000.0
NOW_MS = int(NOW * 1000)


class GatekeeperTests(SynchronousTestCase):
    """
    L{Gatekeeper.admit} for each row of SPEC §3.2, on a Clock.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(NOW)
        self.registry = LocalRegistry(self.clock, tokenLifespan=5.0)
        self.apps = Apps({APP: SECRET, OTHER_APP: OTHER_SECRET})
        self.gatekeeper = Gatekeeper(self.apps, self.registry, self.clock, 5.0)

    def assertRefused(self, token: str, status: int, message: str) -> None:
        error = self.assertRaises(RelayError, self.gatekeeper.admit, token)
        self.assertEqual(error.body(), {"code": status, "message": message}, token)
        self.assertEqual(error.status, status)

    def test_validTokenIsAdmitted(self) -> None:
        """A backend's freshly signed token is admitted."""
        token = makeToken(APP, SECRET, "conn-1", NOW_MS)
        self.assertEqual(self.gatekeeper.admit(token), (APP, "conn-1"))

    def test_appNameIsCaseInsensitive(self) -> None:
        """A token naming the app as DeMo is admitted to app demo."""
        token = makeToken("DeMo", SECRET, "conn-1", NOW_MS)
        self.assertEqual(self.gatekeeper.admit(token), (APP, "conn-1"))

    def test_unicodeConnectionIdIsAdmitted(self) -> None:
        """A connection id outside ASCII is admitted as it was signed."""
        token = makeToken(APP, SECRET, "\u00fcser-\u2603", NOW_MS)
        self.assertEqual(self.gatekeeper.admit(token), (APP, "\u00fcser-\u2603"))

    def test_malformedTokens(self) -> None:
        """Every garbled token gets 400 Malformed token."""
        good = makeToken(APP, SECRET, "c1", NOW_MS)
        stamp, app, connectionId, signature = good.split("h")
        cases = [
            "",
            "zz",
            fields(stamp, app, connectionId),
            good + "h00",
            good.upper(),
            # Upper-case hex: the wire format is strictly lower case.
            fields(stamp, app.upper(), connectionId, signature),
            fields(stamp, app, connectionId, signature.upper()),
            fields(b"12ab".hex(), app, connectionId, signature),
            fields(b"-1".hex(), app, connectionId, signature),
            fields(b"".hex(), app, connectionId, signature),
            fields(stamp, "ff", connectionId, signature),
            fields(stamp, app, "c3", signature),
            fields(stamp, app + "0", connectionId, signature),
            fields(stamp, app, connectionId, signature + "g0"),
            fields(stamp, app, connectionId, ""),
            fields(stamp, " " + app, connectionId, signature),
            fields(stamp, app, ("x" * 257).encode().hex(), signature),
        ]
        for token in cases:
            self.assertRefused(token, 400, "Malformed token")

    def test_longestConnectionIdIsAdmitted(self) -> None:
        """A 256-byte connection id, which the spec allows, is admitted."""
        token = makeToken(APP, SECRET, "x" * 256, NOW_MS)
        self.assertEqual(self.gatekeeper.admit(token), (APP, "x" * 256))

    def test_expiredToken(self) -> None:
        """A token older than its lifespan is refused as expired."""
        for age in [5001, 60_000, NOW_MS]:
            token = makeToken(APP, SECRET, "c1", NOW_MS - age)
            self.assertRefused(token, 401, "Token expired")

    def test_tokenAtLifespanIsAdmitted(self) -> None:
        """A token exactly five seconds old is admitted, as the spec says it is valid."""
        token = makeToken(APP, SECRET, "c1", NOW_MS - 5000)
        self.assertEqual(self.gatekeeper.admit(token), (APP, "c1"))

    def test_futureToken(self) -> None:
        """A token stamped past the lifespan in the future is refused (the Go original took it)."""
        for ahead in [5001, 60_000, 10**12]:
            token = makeToken(APP, SECRET, "c1", NOW_MS + ahead)
            self.assertRefused(token, 401, "Token expired")

    def test_clockMovesTokenOutOfLifespan(self) -> None:
        """A token admitted once is refused as expired once the clock passes its lifespan."""
        token = makeToken(APP, SECRET, "c1", NOW_MS)
        self.gatekeeper.admit(token)
        self.clock.advance(5.001)
        self.assertRefused(token, 401, "Token expired")

    def test_unknownApp(self) -> None:
        """A token for an app the daemon does not serve gets 404 Secret not found."""
        token = makeToken("nosuchapp", SECRET, "c1", NOW_MS)
        self.assertRefused(token, 404, "Secret not found")

    def test_expiryIsCheckedBeforeApp(self) -> None:
        """Expiry is checked before the app, in the order of the spec's table."""
        token = makeToken("nosuchapp", SECRET, "c1", NOW_MS - 60_000)
        self.assertRefused(token, 401, "Token expired")

    def test_wrongSignature(self) -> None:
        """A token signed without the secret is refused: Invalid signature."""
        self.assertRefused(makeToken(APP, OTHER_SECRET, "c1", NOW_MS), 401, "Invalid signature")
        self.assertRefused(makeToken(APP, SECRET[:-1], "c1", NOW_MS), 401, "Invalid signature")

    def test_signatureCoversConnectionId(self) -> None:
        """A token whose connection id was swapped is refused: the signature covers it."""
        stamp, app, _, signature = makeToken(APP, SECRET, "c1", NOW_MS).split("h")
        forged = fields(stamp, app, b"c2".hex(), signature)
        self.assertRefused(forged, 401, "Invalid signature")

    def test_signatureCoversStamp(self) -> None:
        """A token whose stamp was edited is refused: the signature covers it."""
        _, app, connectionId, signature = makeToken(APP, SECRET, "c1", NOW_MS - 1).split("h")
        forged = fields(str(NOW_MS).encode().hex(), app, connectionId, signature)
        self.assertRefused(forged, 401, "Invalid signature")

    def test_kickedIdIsRefusedAsExpired(self) -> None:
        """A kicked id's tokens stamped at or before the kick are refused as expired."""
        token = makeToken(APP, SECRET, "c1", NOW_MS)
        self.registry.kick(APP, ["c1"])
        self.assertRefused(token, 401, "Token expired")
        # Tokens stamped before the kick, still within their lifespan.
        self.assertRefused(makeToken(APP, SECRET, "c1", NOW_MS - 1000), 401, "Token expired")

    def test_kickDoesNotAffectOtherIdsOrApps(self) -> None:
        """A kick refuses only that id of that app: other ids and apps are admitted."""
        self.registry.kick(APP, ["c1"])
        self.assertEqual(self.gatekeeper.admit(makeToken(APP, SECRET, "c2", NOW_MS)), (APP, "c2"))
        self.assertEqual(
            self.gatekeeper.admit(makeToken(OTHER_APP, OTHER_SECRET, "c1", NOW_MS)),
            (OTHER_APP, "c1"),
        )

    def test_tokenStampedAfterKickIsAdmitted(self) -> None:
        """A token stamped after the kick is admitted: a kicked user can come back."""
        self.registry.kick(APP, ["c1"])
        self.clock.advance(0.001)
        token = makeToken(APP, SECRET, "c1", NOW_MS + 1)
        self.assertEqual(self.gatekeeper.admit(token), (APP, "c1"))

    def test_kickOfUppercaseAppNameStillRefused(self) -> None:
        """A kicked id stays refused when its token spells the app in upper case."""
        self.registry.kick(APP, ["c1"])
        token = makeToken("DEMO", SECRET, "c1", NOW_MS)
        self.assertRefused(token, 401, "Token expired")
