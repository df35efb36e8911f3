"""
Tests for L{socktopus_tw.apps}: apps and their secrets (SPEC §2).
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from socktopus_tw.apps import Apps, environmentLine
from socktopus_tw.errors import InvalidSecret, SecretNotFound

DEMO_SECRET = "demo-secret-0123456789"
OTHER_SECRET = "other-secret-9876543210"


class FromEnvironmentTests(SynchronousTestCase):
    """
    L{Apps.fromEnvironment} finds C{<APP>_SOCKTOPUS_SECRET} variables.
    """

    def test_findsApps(self) -> None:
        """
        An app configured in the environment is unknown to the daemon.
        """
        apps = Apps.fromEnvironment(
            {
                "DEMO_SOCKTOPUS_SECRET": DEMO_SECRET,
                "MY_OTHER_APP2_SOCKTOPUS_SECRET": OTHER_SECRET,
                "PATH": "/usr/bin",
            }
        )
        self.assertEqual(apps.names(), ["demo", "my_other_app2"])
        self.assertEqual(len(apps), 2)
        self.assertEqual(apps.secretFor("demo"), DEMO_SECRET)
        self.assertEqual(apps.secretFor("my_other_app2"), OTHER_SECRET)

    def test_caseInsensitiveNames(self) -> None:
        """
        Backends must spell the app name in the variable's exact case.
        """
        apps = Apps.fromEnvironment(
            {"DEMO_SOCKTOPUS_SECRET": DEMO_SECRET, "MixedCase_SOCKTOPUS_SECRET": OTHER_SECRET}
        )
        for name in ["demo", "DEMO", "Demo", "dEmO"]:
            self.assertEqual(apps.secretFor(name), DEMO_SECRET)
        for name in ["mixedcase", "MIXEDCASE", "MixedCase"]:
            self.assertEqual(apps.secretFor(name), OTHER_SECRET)
        self.assertEqual(apps.names(), ["demo", "mixedcase"])

    def test_ignoresBadNames(self) -> None:
        """
        Variables whose app part is not a valid app name create bogus apps.
        """
        apps = Apps.fromEnvironment(
            {
                "_SOCKTOPUS_SECRET": "empty name",
                "MY-APP_SOCKTOPUS_SECRET": "dash",
                "MY APP_SOCKTOPUS_SECRET": "space",
                "MY.APP_SOCKTOPUS_SECRET": "dot",
                "ÄPP_SOCKTOPUS_SECRET": "not ASCII",
                "A" * 65 + "_SOCKTOPUS_SECRET": "too long",
                "DEMO_SOCKTOPUS_SECRET_OLD": "suffix after",
                "DEMO_SOCKTOPUS_SECRETS": "wrong suffix",
                "SOCKTOPUS_SECRET": "no app",
                "SOCKTOPUS_DATABASE": "sqlite:x",
            }
        )
        self.assertEqual(apps.names(), [])
        self.assertEqual(len(apps), 0)

    def test_longestName(self) -> None:
        """
        An app name of 64 characters, the longest allowed, is ignored.
        """
        name = "A" * 64
        apps = Apps.fromEnvironment({name + "_SOCKTOPUS_SECRET": DEMO_SECRET})
        self.assertEqual(apps.names(), [name.lower()])

    def test_ignoresEmptySecret(self) -> None:
        """
        An app with an empty secret exists, so anyone can send to it with "".
        """
        apps = Apps.fromEnvironment(
            {"DEMO_SOCKTOPUS_SECRET": "", "OTHER_SOCKTOPUS_SECRET": OTHER_SECRET}
        )
        self.assertEqual(apps.names(), ["other"])
        self.assertRaises(SecretNotFound, apps.secretFor, "demo")
        self.assertRaises(SecretNotFound, apps.authenticate, "demo", "")

    def test_empty(self) -> None:
        """
        A daemon with no apps configured crashes.
        """
        apps = Apps.fromEnvironment({})
        self.assertEqual(apps.names(), [])
        self.assertEqual(len(apps), 0)


class UserTokensTests(SynchronousTestCase):
    """
    C{<APP>_SOCKTOPUS_USER_TOKENS=1} opts an app in to relay tokens for
    signed-in users (SPEC §8.4).
    """

    def test_optedIn(self) -> None:
        apps = Apps.fromEnvironment(
            {
                "DEMO_SOCKTOPUS_SECRET": "s",
                "DEMO_SOCKTOPUS_USER_TOKENS": "1",
                "OTHER_SOCKTOPUS_SECRET": "t",
                "OTHER_SOCKTOPUS_USER_TOKENS": "0",
            }
        )
        self.assertEqual(
            [apps.givesUserTokens(name) for name in ("demo", "DEMO", "other", "none")],
            [True, True, False, False],
        )

    def test_mistakes(self) -> None:
        for environ, words in [
            ({"DEMO_SOCKTOPUS_USER_TOKENS": "1"}, "DEMO_SOCKTOPUS_SECRET is not"),
            ({"DEMO_SOCKTOPUS_SECRET": "s", "DEMO_SOCKTOPUS_USER_TOKENS": "maybe"}, "1 or 0"),
        ]:
            with self.assertRaises(ValueError) as caught:
                Apps.fromEnvironment(environ)
            self.assertIn(words, str(caught.exception))


class SecretForTests(SynchronousTestCase):
    """
    L{Apps.secretFor} and L{Apps.authenticate}.
    """

    def setUp(self) -> None:
        self.apps = Apps({"Demo": DEMO_SECRET, "other": OTHER_SECRET})

    def test_secretFor(self) -> None:
        """
        The daemon checks tokens against the wrong app's secret.
        """
        self.assertEqual(self.apps.secretFor("demo"), DEMO_SECRET)
        self.assertEqual(self.apps.secretFor("OTHER"), OTHER_SECRET)

    def test_secretForUnknown(self) -> None:
        """
        An unknown app is not answered 404 "Secret not found".
        """
        error = self.assertRaises(SecretNotFound, self.apps.secretFor, "nosuchapp")
        self.assertEqual(error.status, 404)
        self.assertEqual(error.body(), {"code": 404, "message": "Secret not found"})

    def test_authenticate(self) -> None:
        """
        A backend with the right secret is refused, or gets back a non-canonical name.
        """
        self.assertEqual(self.apps.authenticate("demo", DEMO_SECRET), "demo")
        self.assertEqual(self.apps.authenticate("DEMO", DEMO_SECRET), "demo")
        self.assertEqual(self.apps.authenticate("Other", OTHER_SECRET), "other")

    def test_authenticateUnknownApp(self) -> None:
        """
        /send to an unknown app is not answered 404 "Secret not found".
        """
        error = self.assertRaises(SecretNotFound, self.apps.authenticate, "nosuchapp", DEMO_SECRET)
        self.assertEqual(error.status, 404)
        self.assertEqual(error.message, "Secret not found")

    def test_authenticateWrongSecret(self) -> None:
        """
        A wrong secret is accepted or not answered 401 "Invalid secret".
        """
        for wrong in [
            OTHER_SECRET,
            "",
            DEMO_SECRET[:-1],
            DEMO_SECRET + "x",
            DEMO_SECRET.upper(),
            " " + DEMO_SECRET,
        ]:
            error = self.assertRaises(InvalidSecret, self.apps.authenticate, "demo", wrong)
            self.assertEqual(error.status, 401)
            self.assertEqual(error.body(), {"code": 401, "message": "Invalid secret"})

    def test_authenticateUnicodeSecret(self) -> None:
        """
        An app whose secret is not ASCII can never authenticate, or crashes the daemon.
        """
        apps = Apps({"demo": "sécret-🔑"})
        self.assertEqual(apps.authenticate("demo", "sécret-🔑"), "demo")
        self.assertRaises(InvalidSecret, apps.authenticate, "demo", "secret-🔑")

    def test_authenticateLoneSurrogate(self) -> None:
        """
        /send with a secret of "\\udcff" (valid JSON) is a 500 and a logged traceback.
        """
        # json.loads turns the escape "\\udcff" into a lone surrogate, which
        # has no UTF-8 encoding; it is simply not the secret.
        error = self.assertRaises(InvalidSecret, self.apps.authenticate, "demo", "\udcff")
        self.assertEqual(error.status, 401)

    def test_namesNeverShowSecrets(self) -> None:
        """
        The home page's app list shows secrets.
        """
        names = self.apps.names()
        self.assertEqual(names, ["demo", "other"])
        for name in names:
            self.assertNotIn(DEMO_SECRET, name)
            self.assertNotIn(OTHER_SECRET, name)

    def test_reprHidesSecrets(self) -> None:
        """
        A log line or traceback that shows the apps object reveals the secrets.
        """
        self.assertNotIn(DEMO_SECRET, repr(self.apps))
        self.assertNotIn(DEMO_SECRET, str(self.apps))


class EnvironmentLineTests(SynchronousTestCase):
    """
    L{environmentLine}: what the home page tells a user to add.
    """

    def test_line(self) -> None:
        """
        The line the home page suggests does not create the app.
        """
        self.assertEqual(environmentLine("myapp", "abc-_123"), "MYAPP_SOCKTOPUS_SECRET=abc-_123")

    def test_roundTrip(self) -> None:
        """
        An app added with the suggested line is not found under its name.
        """
        name, _, value = environmentLine("My_App", DEMO_SECRET).partition("=")
        apps = Apps.fromEnvironment({name: value})
        self.assertEqual(apps.names(), ["my_app"])
        self.assertEqual(apps.authenticate("my_app", DEMO_SECRET), "my_app")
