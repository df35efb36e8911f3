"""
Tests for L{socktopus_tw.settings}: the C{.env} parser the daemon's options
build on. (The options themselves, read from the command line, the
environment and C{.env}, are tested in L{tests.test_tap}.)
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from socktopus_tw.settings import EnvironmentFileError, parseDotEnv


class ParseDotEnvTests(SynchronousTestCase):
    """
    L{parseDotEnv}: the C{.env} format.
    """

    def test_simple(self) -> None:
        """
        Plain NAME=VALUE lines in .env are misread.
        """
        self.assertEqual(
            parseDotEnv("A=1\nB_2=two words\n_C=\n"), {"A": "1", "B_2": "two words", "_C": ""}
        )

    def test_commentsAndBlankLines(self) -> None:
        """
        Comments and blank lines in .env are errors or become settings.
        """
        text = "# a comment\n\n   \n  # indented comment\nA=1\n#B=2\n"
        self.assertEqual(parseDotEnv(text), {"A": "1"})

    def test_export(self) -> None:
        """
        A .env written for a shell (export NAME=VALUE) is refused.
        """
        self.assertEqual(parseDotEnv("export A=1\nexport   B=2\n"), {"A": "1", "B": "2"})

    def test_exportAsName(self) -> None:
        """
        A variable literally called "export" is lost.
        """
        self.assertEqual(parseDotEnv("export=1\n"), {"export": "1"})

    def test_quotes(self) -> None:
        """
        Quoted values keep their quotes or lose their inner spaces.
        """
        text = "A=\"two words\"\nB='single # quoted'\nC=\"\"\nD=''\n"
        self.assertEqual(
            parseDotEnv(text), {"A": "two words", "B": "single # quoted", "C": "", "D": ""}
        )

    def test_quotesTakenLiterally(self) -> None:
        """
        Backslashes in quoted values are interpreted, corrupting secrets.
        """
        self.assertEqual(parseDotEnv("A=\"x\\ny\"\nB='\\t'\n"), {"A": "x\\ny", "B": "\\t"})

    def test_mismatchedQuotes(self) -> None:
        """
        A value with unbalanced quotes loses characters.
        """
        self.assertEqual(
            parseDotEnv("A=\"abc'\nB=\"\nC=it's\n"), {"A": "\"abc'", "B": '"', "C": "it's"}
        )

    def test_equalsInValue(self) -> None:
        """
        A URL with = in its query string is cut at the first =.
        """
        self.assertEqual(
            parseDotEnv("SOCKTOPUS_DATABASE=mysql://u:p@h/db?unix_socket=/s\n"),
            {"SOCKTOPUS_DATABASE": "mysql://u:p@h/db?unix_socket=/s"},
        )

    def test_spacesAroundEquals(self) -> None:
        """
        Spaces around = end up in names or values.
        """
        self.assertEqual(parseDotEnv("  A = 1  \n"), {"A": "1"})

    def test_windowsLineEndings(self) -> None:
        """
        A .env saved on Windows has carriage returns in every value.
        """
        self.assertEqual(parseDotEnv("A=1\r\nB='2'\r\n"), {"A": "1", "B": "2"})

    def test_laterWins(self) -> None:
        """
        A value redefined further down .env is not the one used.
        """
        self.assertEqual(parseDotEnv("A=1\nA=2\n"), {"A": "2"})

    def test_malformed(self) -> None:
        """
        A malformed .env line is silently skipped or does not name its line.
        """
        for line in ["NOEQUALS", "=value", "1A=x", "A B=x", "A-B=x", "export", "export =x"]:
            text = f"# first\nOK=1\n{line}\n"
            error = self.assertRaises(EnvironmentFileError, parseDotEnv, text, "/etc/app/.env")
            self.assertIn("/etc/app/.env line 3", str(error), line)

    def test_empty(self) -> None:
        """
        An empty .env is an error.
        """
        self.assertEqual(parseDotEnv(""), {})


class WithoutPasswordTests(SynchronousTestCase):
    """
    A mistyped URL option is quoted in its error without its password.
    """

    def test_urlPasswordsAreHidden(self) -> None:
        from socktopus_tw.settings import withoutPassword

        self.assertEqual(withoutPassword("redis://u:pw@h:x"), "redis://u:***@h:x")
        self.assertEqual(withoutPassword("smtp://:pw@h:25"), "smtp://:***@h:25")
        self.assertEqual(withoutPassword("sqlite:my.db"), "sqlite:my.db")
        self.assertEqual(withoutPassword("redis://h:6379/0"), "redis://h:6379/0")

    def test_aBadRedisUrlIsQuotedWithoutItsPassword(self) -> None:
        from socktopus_tw.settings import ConfigurationError, resolveConfiguration
        from socktopus_tw.tap import SocktopusOptions

        options = SocktopusOptions(environ={})
        options["redis"] = "redis://user:hunter2@127.0.0.1:port"
        with self.assertRaises(ConfigurationError) as caught:
            resolveConfiguration(options, {}, [])
        self.assertIn("--redis", str(caught.exception))
        self.assertNotIn("hunter2", str(caught.exception))
