"""
Tests for L{socktopus_tw.cli}: the C{socktopus} console command.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import re
import sys
import time

from twisted.trial.unittest import SynchronousTestCase

from socktopus_tw.apps import Apps
from socktopus_tw.cli import Options, main, printable
from socktopus_tw.relay.tokens import InvalidSignature, parseToken

APP = "demo"
SECRET = "demo-secret-0123456789"


class CommandTestCase(SynchronousTestCase):
    """
    Run L{main} with stdout and stderr captured.
    """

    def command(self, *arguments: str) -> tuple[int, str, str]:
        """
        Return the exit status, stdout and stderr of C{socktopus ARGUMENTS}.
        """
        stdout, stderr = io.StringIO(), io.StringIO()
        self.patch(sys, "stdout", stdout)
        self.patch(sys, "stderr", stderr)
        self.patch(sys, "__stderr__", stderr)
        status = main(list(arguments))
        return status, stdout.getvalue(), stderr.getvalue()


class TokenCommandTests(CommandTestCase):
    """
    C{socktopus token APP SECRET CONNECTION_ID}.
    """

    def token(self, connectionId: str) -> str:
        before = int(time.time() * 1000)
        status, out, err = self.command("token", APP, SECRET, connectionId)
        after = int(time.time() * 1000)
        self.assertEqual((status, err), (0, ""))
        self.assertTrue(out.endswith("\n"), out)
        self.assertEqual(out.count("\n"), 1, out)
        text = out.strip()
        stamp = parseToken(text).milliseconds
        self.assertTrue(before <= stamp <= after, (before, stamp, after))
        return text

    def test_tokenParses(self) -> None:
        """
        The token the command prints is refused by the daemon.
        """
        token = parseToken(self.token("conn-1"))
        self.assertEqual((token.app, token.connectionId), (APP, "conn-1"))
        token.checkSignature(SECRET)

    def test_tokenIsTheSpecHmac(self) -> None:
        """
        The printed token is not signed as SPEC §3.1 says, so other clients reject it.
        """
        text = self.token("conn-1")
        stampHex, appHex, idHex, signatureHex = text.split("h")
        stamp = bytes.fromhex(stampHex).decode("ascii")
        expected = hmac.new(SECRET.encode(), (stamp + "conn-1").encode(), hashlib.sha256)
        self.assertEqual(signatureHex, expected.hexdigest())
        self.assertEqual(appHex, APP.encode().hex())
        self.assertEqual(idHex, b"conn-1".hex())

    def test_tokenFresh(self) -> None:
        """
        The printed token is already expired when the daemon checks it.
        """
        token = parseToken(self.token("conn-1"))
        token.checkAge(time.time() * 1000, 5000)

    def test_unicodeConnectionId(self) -> None:
        """
        A non-ASCII connection id gives a token that does not verify.
        """
        token = parseToken(self.token("ünïcødé-🐙"))
        self.assertEqual(token.connectionId, "ünïcødé-🐙")
        token.checkSignature(SECRET)

    def test_longestConnectionId(self) -> None:
        """
        A 256-byte connection id, the longest allowed, is refused.
        """
        token = parseToken(self.token("é" * 128))
        token.checkSignature(SECRET)

    def test_otherSecretDoesNotVerify(self) -> None:
        """
        A token from the command verifies with any secret.
        """
        token = parseToken(self.token("conn-1"))
        self.assertRaises(InvalidSignature, token.checkSignature, SECRET + "x")


class BadArgumentsTests(CommandTestCase):
    """
    Mistakes on the command line: status 2 and a clear message.
    """

    def assertRefused(self, *arguments: str) -> str:
        """
        The command fails with status 2, prints nothing on stdout, and says
        what is wrong on the first line of stderr; return that line.
        """
        status, out, err = self.command(*arguments)
        self.assertEqual(status, 2, (out, err))
        self.assertEqual(out, "")
        self.assertNotIn("Traceback", err)
        first = err.splitlines()[0] if err else ""
        self.assertTrue(first.startswith("socktopus: ") and len(first) > 15, err)
        return first

    def test_noCommand(self) -> None:
        """
        Running socktopus with no command crashes or exits 0.
        """
        self.assertIn("token", self.assertRefused())

    def test_unknownCommand(self) -> None:
        """
        A misspelt command is silently ignored.
        """
        self.assertIn("tokn", self.assertRefused("tokn", APP, SECRET, "c"))

    def test_missingArguments(self) -> None:
        """
        socktopus token with too few arguments crashes.
        """
        self.assertRefused("token")
        self.assertRefused("token", APP)
        self.assertRefused("token", APP, SECRET)

    def test_tooManyArguments(self) -> None:
        """
        A stray fourth argument is silently dropped.
        """
        self.assertRefused("token", APP, SECRET, "c1", "c2")

    def test_badAppName(self) -> None:
        """
        A token for an app name the daemon can never serve is printed.
        """
        for app in ["my-app", "", "A" * 65, "äpp", "my app"]:
            self.assertIn("APP", self.assertRefused("token", app, SECRET, "c1"))

    def test_badConnectionId(self) -> None:
        """
        A token for a connection id the daemon refuses (empty or over 256 bytes) is printed.
        """
        for connectionId in ["", "a" * 257, "é" * 128 + "a"]:
            self.assertIn("CONNECTION_ID", self.assertRefused("token", APP, SECRET, connectionId))

    def test_badSecretCommandApp(self) -> None:
        """
        socktopus secret with an invalid app name prints an unusable line.
        """
        self.assertRefused("secret", "my-app")

    def test_listenBadArguments(self) -> None:
        """
        socktopus listen with arguments the daemon would refuse, or a URL it
        cannot connect to, tries to connect anyway.
        """
        self.assertIn("APP", self.assertRefused("listen", "my-app", SECRET, "c1"))
        self.assertIn("CONNECTION_ID", self.assertRefused("listen", APP, SECRET, ""))
        self.assertRefused("listen", APP, SECRET)
        self.assertRefused("listen", APP, SECRET, "c1", "c2")
        for url in ["localhost:8080", "ftp://example.com", "ws://", "ws://h:0", "ws://h:x"]:
            self.assertIn("--url", self.assertRefused("listen", "--url", url, APP, SECRET, "c1"))

    def test_oneLine(self) -> None:
        """
        A mistake buries its one-line explanation above the whole usage text.
        """
        # SPEC §1: a user mistake is "one clear line"; the daemon's own
        # options (tap.Options) print exactly one line, and so should this.
        status, out, err = self.command("token", "my-app", SECRET, "c1")
        self.assertEqual(status, 2)
        self.assertEqual(err.count("\n"), 1, err)


class SecretCommandTests(CommandTestCase):
    """
    C{socktopus secret [APP]}.
    """

    pattern = re.compile(r"([A-Z0-9_]+)_SOCKTOPUS_SECRET=([A-Za-z0-9_-]{43,})\n")

    def test_defaultApp(self) -> None:
        """
        socktopus secret does not print a MYAPP_SOCKTOPUS_SECRET line with a strong secret.
        """
        status, out, err = self.command("secret")
        self.assertEqual((status, err), (0, ""))
        match = self.pattern.fullmatch(out)
        self.assertIsNotNone(match, out)
        self.assertEqual(match.group(1), "MYAPP")

    def test_namedApp(self) -> None:
        """
        socktopus secret APP prints a line for some other app.
        """
        status, out, err = self.command("secret", "chat_1")
        self.assertEqual(status, 0)
        match = self.pattern.fullmatch(out)
        self.assertIsNotNone(match, out)
        self.assertEqual(match.group(1), "CHAT_1")

    def test_lineCreatesApp(self) -> None:
        """
        The printed line, added to the environment, does not create the app.
        """
        _, out, _ = self.command("secret", "chat")
        name, _, secret = out.strip().partition("=")
        apps = Apps.fromEnvironment({name: secret})
        self.assertEqual(apps.authenticate("chat", secret), "chat")

    def test_freshEachTime(self) -> None:
        """
        Two runs print the same secret.
        """
        secrets = {self.command("secret")[1] for _ in range(5)}
        self.assertEqual(len(secrets), 5)


class ListenOptionsTests(SynchronousTestCase):
    """
    The options of C{socktopus listen [--url URL] APP SECRET CONNECTION_ID}.
    """

    def parse(self, *arguments: str) -> dict[str, str]:
        options = Options()
        options.parseOptions(["listen", *arguments])
        return dict(options.subOptions)

    def test_defaults(self) -> None:
        """
        Without --url it connects somewhere other than the README's daemon.
        """
        self.assertEqual(
            self.parse(APP, SECRET, "user-42"),
            {
                "url": "ws://localhost:8080",
                "receiveUrl": "ws://localhost:8080/recieve",
                "app": APP,
                "secret": SECRET,
                "connectionId": "user-42",
            },
        )

    def test_urls(self) -> None:
        """
        An http(s):// URL is not mapped to ws(s)://, or a proxy's prefix is lost.
        """
        for url, receive in [
            ("ws://127.0.0.1:9000", "ws://127.0.0.1:9000/recieve"),
            ("wss://relay.example.com", "wss://relay.example.com/recieve"),
            ("http://localhost:8080/", "ws://localhost:8080/recieve"),
            ("HTTPS://example.com/relay/", "wss://example.com/relay/recieve"),
            ("https://example.com/a/b?x=1#top", "wss://example.com/a/b/recieve"),
        ]:
            for option in ["--url", "-u"]:
                parsed = self.parse(option, url, APP, SECRET, "c1")
                self.assertEqual((parsed["url"], parsed["receiveUrl"]), (url, receive))


class PrintableTests(SynchronousTestCase):
    """
    L{printable}: one message, one line of output.
    """

    def test_oneLine(self) -> None:
        """
        A message with line breaks or terminal escapes prints as several
        lines, or drives the terminal.
        """
        self.assertEqual(printable("a\nb\r\nc"), "a\\nb\\r\\nc")
        self.assertEqual(printable("\x1b[2J\x00\x7f\x85"), "\\x1b[2J\\x00\\x7f\\x85")

    def test_restAsItIs(self) -> None:
        """
        Ordinary text, tabs, backslashes and non-ASCII are changed.
        """
        for text in ["hello", "a\tb", "C:\\dir \\n", "ünïcødé 🐙", '{"json": [1]}', ""]:
            self.assertEqual(printable(text), text)
