"""
Tests for L{socktopus_tw.accounts.rules}: what SPEC §4 allows as a user
name, a password and an e-mail address. Every refusal is a 400 with the
accounts service's C{{"Error": "..."}} body.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from socktopus_tw.accounts.rules import checkEmail, checkPassword, checkUserName
from socktopus_tw.errors import BadRequest

SQL_METACHARACTERS = [
    "alice'--",
    "alice' OR '1'='1",
    'alice"',
    "alice;DROP TABLE users",
    "al%ce",
    "alice\\",
    "alice/*",
    "a`b`",
]


class RefusalMixin:
    def assertRefused(self, check, value: str) -> BadRequest:
        """
        C{check(value)} raises L{BadRequest}: a 400 whose body is only an Error message.
        """
        error = self.assertRaises(BadRequest, check, value)
        self.assertEqual(error.status, 400)
        body = error.body()
        self.assertEqual(list(body), ["Error"])
        self.assertIsInstance(body["Error"], str)
        self.assertTrue(body["Error"])
        return error


class UserNameTests(RefusalMixin, SynchronousTestCase):
    """
    User names are 1 to 64 of [A-Za-z0-9_].
    """

    def test_plainNamesAccepted(self):
        """
        Ordinary names of letters, digits and underscores can register.
        """
        for name in ["alice", "Bob", "user_42", "_", "0", "A1_b2_C3"]:
            self.assertEqual(checkUserName(name), name)

    def test_oneCharacterAccepted(self):
        """
        A one-character name is allowed.
        """
        self.assertEqual(checkUserName("x"), "x")

    def test_sixtyFourCharactersAccepted(self):
        """
        A 64-character name, the longest allowed, can register.
        """
        name = "a" * 63 + "Z"
        self.assertEqual(checkUserName(name), name)

    def test_sixtyFiveCharactersRefused(self):
        """
        A 65-character name is refused instead of being cut or overflowing the column.
        """
        self.assertRefused(checkUserName, "a" * 65)

    def test_emptyRefused(self):
        """
        An empty user name is refused.
        """
        self.assertRefused(checkUserName, "")

    def test_unicodeLettersRefused(self):
        """
        Non-ASCII letters and digits are refused (look-alike names are impersonation).
        """
        for name in [
            "jos\u00e9",
            "\u0430lice",
            "\u00fcber",
            "\u0664\u0662",
            "na\u00efve",
            "\uff41lice",
            "\u212a",
        ]:
            self.assertRefused(checkUserName, name)

    def test_sqlMetacharactersRefused(self):
        """
        Quotes, semicolons, comments and wildcards never make it into a user name.
        """
        for name in SQL_METACHARACTERS:
            self.assertRefused(checkUserName, name)

    def test_whitespaceAndPunctuationRefused(self):
        """
        Spaces, dashes, dots, @ and control characters are refused.
        """
        for name in [
            " alice",
            "alice ",
            "al ice",
            "al-ice",
            "al.ice",
            "al@ice",
            "alice\n",
            "\nalice",
            "ali\x00ce",
            "alice\t",
        ]:
            self.assertRefused(checkUserName, name)


class PasswordTests(RefusalMixin, SynchronousTestCase):
    """
    Passwords are at least 8 characters and at most 72 bytes of UTF-8.
    """

    def test_sevenCharactersRefused(self):
        """
        A 7-character password is too short.
        """
        self.assertRefused(checkPassword, "abcdefg")

    def test_emptyRefused(self):
        """
        An empty password is refused.
        """
        self.assertRefused(checkPassword, "")

    def test_eightCharactersAccepted(self):
        """
        An 8-character password, the shortest allowed, is accepted.
        """
        self.assertEqual(checkPassword("abcdefgh"), "abcdefgh")

    def test_eightUnicodeCharactersAccepted(self):
        """
        Eight non-ASCII characters count as eight characters, though more bytes.
        """
        password = "\u00e9\u00e8\u00ea\u00eb\u4e2d\u6587\U0001f600\u00df"
        self.assertEqual(len(password), 8)
        self.assertGreater(len(password.encode("utf-8")), 8)
        self.assertEqual(checkPassword(password), password)

    def test_sevenUnicodeCharactersRefused(self):
        """
        Seven multibyte characters are still only seven characters.
        """
        password = "\U0001f600" * 7
        self.assertGreaterEqual(len(password.encode("utf-8")), 8)
        self.assertRefused(checkPassword, password)

    def test_seventyTwoBytesAccepted(self):
        """
        A password of exactly 72 bytes, bcrypt's whole input, is accepted.
        """
        self.assertEqual(checkPassword("p" * 72), "p" * 72)
        multibyte = "\u00e9" * 36
        self.assertEqual(len(multibyte.encode("utf-8")), 72)
        self.assertEqual(checkPassword(multibyte), multibyte)

    def test_seventyThreeBytesRefused(self):
        """
        A 73-byte password is refused, not silently cut to 72.
        """
        error = self.assertRefused(checkPassword, "p" * 73)
        self.assertIn("72", error.body()["Error"])

    def test_longPasswordNeverCut(self):
        """
        A long password is refused whole; nothing returns it shortened.
        """
        self.assertRefused(checkPassword, "p" * 1000)

    def test_multibyteCharacterCrossingLimitRefused(self):
        """
        A multibyte character straddling byte 72 makes the password too long.
        """
        for tail in ["\u00e9", "\u4e2d", "\U0001f600"]:
            password = "p" * 71 + tail
            self.assertGreater(len(password.encode("utf-8")), 72)
            self.assertRefused(checkPassword, password)

    def test_nulRefused(self):
        """
        A NUL character is refused (bcrypt stops reading at it).
        """
        self.assertRefused(checkPassword, "abcd\x00efgh")
        self.assertRefused(checkPassword, "abcdefgh\x00")

    def test_loneSurrogateRefused(self):
        """
        A lone surrogate (not encodable text) is a 400, not an encoding crash.
        """
        self.assertRefused(checkPassword, "abcdefg\ud800")
        self.assertRefused(checkPassword, "\udfffabcdefgh")

    def test_spacesAndSymbolsAccepted(self):
        """
        Passphrases with spaces and punctuation are allowed.
        """
        password = "correct horse battery staple!'\";--"
        self.assertEqual(checkPassword(password), password)


class EmailTests(RefusalMixin, SynchronousTestCase):
    """
    E-mail addresses: one @, no whitespace or controls, a dot in the domain.
    """

    def test_plainAddressesAccepted(self):
        """
        Ordinary addresses can register.
        """
        for email in [
            "alice@example.com",
            "first.last@mail.example.co.uk",
            "user+tag@example.org",
            "x_y-z@sub-domain.example.net",
            "o'brien@example.ie",
            "1234@123.example",
        ]:
            self.assertEqual(checkEmail(email), email)

    def test_internationalAddressAccepted(self):
        """
        An internationalised address is not refused for being non-ASCII.
        """
        self.assertEqual(
            checkEmail("j\u00f6rg@b\u00fccher.example"), "j\u00f6rg@b\u00fccher.example"
        )

    def test_noAtRefused(self):
        """
        An address without @ is refused.
        """
        self.assertRefused(checkEmail, "alice.example.com")

    def test_twoAtsRefused(self):
        """
        An address with two @ is refused.
        """
        self.assertRefused(checkEmail, "alice@bob@example.com")

    def test_emptyPartsRefused(self):
        """
        An address with nothing before or after the @ is refused.
        """
        for email in ["", "@", "@example.com", "alice@"]:
            self.assertRefused(checkEmail, email)

    def test_spacesRefused(self):
        """
        Spaces anywhere in the address are refused.
        """
        for email in [
            "al ice@example.com",
            "alice@exa mple.com",
            " alice@example.com",
            "alice@example.com ",
            "alice@example.com\t",
        ]:
            self.assertRefused(checkEmail, email)

    def test_headerInjectionRefused(self):
        """
        CR or LF in an address cannot add headers (Bcc:) to the registration mail.
        """
        for email in [
            "alice@example.com\r\nBcc: victim@example.org",
            "alice@example.com\nBcc: victim@example.org",
            "alice@example.com\rBcc: victim@example.org",
            "alice\r\n@example.com",
        ]:
            self.assertRefused(checkEmail, email)

    def test_controlCharactersRefused(self):
        """
        NUL and other control characters are refused.
        """
        for email in ["ali\x00ce@example.com", "alice@exa\x7fmple.com", "al\x1bice@example.com"]:
            self.assertRefused(checkEmail, email)

    def test_noDotInDomainRefused(self):
        """
        A domain without a dot is refused.
        """
        self.assertRefused(checkEmail, "alice@localhost")

    def test_emptyDomainLabelsRefused(self):
        """
        Domains starting, ending or doubling a dot are refused.
        """
        for email in ["alice@.example.com", "alice@example.com.", "alice@example..com"]:
            self.assertRefused(checkEmail, email)

    def test_twoHundredFiftyFourCharactersAccepted(self):
        """
        An address of exactly 254 characters, the longest allowed, is accepted.
        """
        email = "a" * 64 + "@" + ".".join(["b" * 61] * 3) + ".cde"
        self.assertEqual(len(email), 254)
        self.assertEqual(checkEmail(email), email)

    def test_overTwoHundredFiftyFourCharactersRefused(self):
        """
        An address over 254 characters is refused.
        """
        email = "a" * 64 + "@" + ".".join(["b" * 61] * 3) + ".cdef"
        self.assertEqual(len(email), 255)
        self.assertRefused(checkEmail, email)
        self.assertRefused(checkEmail, "a@" + "b" * 1000 + ".com")

    def test_sqlStatementRefused(self):
        """
        An "address" carrying an SQL statement after it is refused.
        """
        self.assertRefused(checkEmail, "alice@example.com'; DROP TABLE users;--")

    def test_loneSurrogateRefused(self):
        """
        A lone surrogate in an address is a 400, not an encoding crash later.
        """
        self.assertRefused(checkEmail, "al\ud800ice@example.com")
